//! Live-buffer registry and leak reports.
//!
//! Counts and bytes of live buffers are always known (from the statistics counters). Where each
//! live buffer was allocated is recorded only with `ManagerOptions::track_allocations`, because
//! that costs a lock per allocation; the call site itself is free (`#[track_caller]`).

use crate::trace::recorder::Recorder;
use crate::trace::Trace;
use crate::units::{format_bytes, format_bytes_short};
use std::collections::HashMap;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One live buffer, as recorded by the registry.
#[derive(Debug, Clone)]
pub struct LiveBuffer {
    /// Buffer id, unique within the manager.
    pub id: u64,
    /// Element count.
    pub len: usize,
    /// Size in bytes.
    pub bytes: usize,
    /// Element type name.
    pub element: &'static str,
    /// Source location of the `allocate` call.
    pub location: &'static Location<'static>,
    /// How long ago it was allocated.
    pub age: Duration,
}

struct Record {
    len: usize,
    bytes: usize,
    element: &'static str,
    location: &'static Location<'static>,
    at: Instant,
}

/// The manager's diagnostics (`MemoryManager::diagnostics`).
///
/// ```
/// use dotcompute_memory::MemoryManager;
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let mm = MemoryManager::cpu();
/// mm.diagnostics().set_tracking(true); // or ManagerOptions::track_allocations
/// let buf = mm.allocate::<f64>(512)?;
/// let live = mm.diagnostics().live_buffers();
/// assert_eq!((live.len(), live[0].bytes, live[0].element), (1, 4096, "f64"));
/// assert!(mm.diagnostics().leak_report().starts_with("1 live buffers, 4096 bytes (4.0 KiB)"));
/// drop(buf);
/// assert_eq!(mm.diagnostics().live_count(), 0);
/// # Ok(())
/// # }
/// ```
pub struct Diagnostics {
    tracking: AtomicBool,
    next_id: AtomicU64,
    records: Mutex<HashMap<u64, Record>>,
    live: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
    trace: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diagnostics")
            .field("tracking", &self.is_tracking())
            .field("live_count", &self.live_count())
            .finish()
    }
}

impl Diagnostics {
    pub(crate) fn new(
        tracking: bool,
        live: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
        trace: Option<Arc<Recorder>>,
    ) -> Self {
        Diagnostics {
            tracking: AtomicBool::new(tracking),
            next_id: AtomicU64::new(1),
            records: Mutex::new(HashMap::new()),
            live,
            trace,
        }
    }

    /// The allocation trace recorded so far (`None` unless the manager was made with
    /// [`ManagerOptions::trace`](crate::ManagerOptions::trace)): every allocation and free of
    /// its buffers, oldest first, up to the trace's capacity, including the events other
    /// threads are still batching. [`Trace::to_json_lines`] gives the JSON Lines form that
    /// `dcmem replay` reads. Sites (`file:line`) are recorded while allocation sites are
    /// tracked ([`Diagnostics::set_tracking`]).
    pub fn trace(&self) -> Option<Trace> {
        self.trace.as_ref().map(|t| t.snapshot())
    }

    /// True when allocation sites are recorded.
    #[inline]
    pub fn is_tracking(&self) -> bool {
        self.tracking.load(Ordering::Relaxed)
    }

    /// Starts or stops recording allocation sites (buffers allocated while off are not listed).
    pub fn set_tracking(&self, on: bool) {
        self.tracking.store(on, Ordering::Relaxed);
    }

    /// Number of buffers alive now.
    pub fn live_count(&self) -> u64 {
        (self.live)().0
    }

    /// Bytes of buffers alive now.
    pub fn live_bytes(&self) -> u64 {
        (self.live)().1
    }

    /// The recorded live buffers, oldest first (empty unless tracking is on).
    pub fn live_buffers(&self) -> Vec<LiveBuffer> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<LiveBuffer> = records
            .iter()
            .map(|(&id, r)| LiveBuffer {
                id,
                len: r.len,
                bytes: r.bytes,
                element: r.element,
                location: r.location,
                age: r.at.elapsed(),
            })
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.age));
        out
    }

    /// A human-readable list of live buffers and where they were allocated.
    pub fn leak_report(&self) -> String {
        let buffers = self.live_buffers();
        let mut s = format!("{} live buffers, {}", self.live_count(), format_bytes(self.live_bytes()));
        if !self.is_tracking() && buffers.is_empty() {
            s.push_str(" (allocation sites not recorded: set ManagerOptions::track_allocations)");
        }
        for b in buffers {
            s.push_str(&format!(
                "\n  #{} {} x {} ({}) allocated at {} {:.1?} ago",
                b.id,
                b.len,
                b.element,
                format_bytes_short(b.bytes as u64),
                b.location,
                b.age
            ));
        }
        s
    }

    /// Registers a new buffer; returns its id (0 when not tracking).
    #[inline]
    pub(crate) fn register(
        &self,
        len: usize,
        bytes: usize,
        element: &'static str,
        location: &'static Location<'static>,
    ) -> u64 {
        if !self.is_tracking() {
            return 0;
        }
        self.record(len, bytes, element, location)
    }

    // Out of line: the lock and map stay out of the allocation fast path's stack frame.
    #[cold]
    #[inline(never)]
    fn record(&self, len: usize, bytes: usize, element: &'static str, location: &'static Location<'static>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let record = Record { len, bytes, element, location, at: Instant::now() };
        self.records.lock().unwrap_or_else(|p| p.into_inner()).insert(id, record);
        id
    }

    #[inline]
    pub(crate) fn unregister(&self, id: u64) {
        if id != 0 {
            self.forget(id);
        }
    }

    #[cold]
    #[inline(never)]
    fn forget(&self, id: u64) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}
