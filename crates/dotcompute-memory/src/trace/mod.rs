//! Allocation traces: what a manager records of its buffers' allocations and frees
//! ([`crate::ManagerOptions::trace`]), the events as values and as JSON Lines, and reading
//! traces back, ours and RMM's logging CSV, for replay (`crate::replay`).
//!
//! - `recorder`: the bounded ring a manager records into, with per-thread batches in front of
//!   it (crate-internal).
//! - `parse`: reading JSON Lines and RMM's CSV into [`TraceEvent`]s.
//!
//! ```
//! use dotcompute_memory::{ManagerOptions, MemoryManager, TraceOp, TraceOptions};
//!
//! # fn main() -> dotcompute_memory::Result<()> {
//! let options = ManagerOptions::default().with_trace(Some(TraceOptions::default()));
//! let mm = MemoryManager::with_backend_name("cpu", options)?;
//! drop(mm.allocate::<f32>(1024)?);
//! let trace = mm.diagnostics().trace().expect("the manager records");
//! let ops: Vec<(TraceOp, u64)> = trace.events.iter().map(|e| (e.op, e.bytes)).collect();
//! assert_eq!(ops, [(TraceOp::Alloc, 4096), (TraceOp::Free, 4096)]);
//! assert!(trace.to_json_lines().starts_with(r#"{"t_ns":"#));
//!
//! // The same events, read back.
//! let parsed = dotcompute_memory::trace::parse(&trace.to_json_lines())?;
//! assert_eq!(parsed.events, trace.events);
//! # Ok(())
//! # }
//! ```

mod parse;
pub(crate) mod recorder;

pub use parse::{parse, read, ParsedTrace, TraceFormat};

use std::path::PathBuf;

/// How a manager records its allocation trace ([`crate::ManagerOptions::trace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOptions {
    /// Events kept (default 1 048 576, about 32 MiB); past it the oldest are dropped and
    /// counted in [`Trace::dropped`].
    pub capacity: usize,
    /// Where the trace is written as JSON Lines when the manager's last handle is dropped
    /// (default `None`: nowhere). A write that fails prints one line to stderr naming the file
    /// and the OS error; it never panics.
    pub file: Option<PathBuf>,
}

crate::setters::with_setters!(TraceOptions {
    with_capacity => capacity: usize,
    with_file => file: Option<PathBuf>,
});

impl TraceOptions {
    /// The capacity `DCMEM_TRACE` records with.
    pub const DEFAULT_CAPACITY: usize = 1 << 20;
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions { capacity: Self::DEFAULT_CAPACITY, file: None }
    }
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceOp {
    /// A buffer was allocated.
    Alloc,
    /// A buffer was dropped.
    Free,
}

/// One allocation or free. As JSON, one object per line:
/// `{"t_ns":..,"thread":..,"op":"alloc"|"free","id":..,"bytes":..,"device":".."}`, with
/// `"site":"file:line"` when the allocation site is known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceEvent {
    /// Nanoseconds since the manager started (for a parsed RMM log: since its first event).
    /// A recording thread reads the clock at every 64th event and the times of the events
    /// between are interpolated: one clock read costs several times the rest of recording an
    /// event.
    pub t_ns: u64,
    /// A small number per thread (1, 2, ... in the order threads first recorded; 0 for events
    /// recorded while a thread was exiting).
    pub thread: u64,
    /// Allocation or free.
    pub op: TraceOp,
    /// Names the buffer: unique among the buffers alive at the time, and reused after a free,
    /// like the pointers of RMM's log (a recording manager uses the address of the buffer's
    /// state).
    pub id: u64,
    /// The buffer's size in bytes.
    pub bytes: u64,
    /// The device, as its backend labels it (`Backend::device_label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Where the buffer was allocated (`file:line`), recorded while the manager tracks
    /// allocation sites (`ManagerOptions::track_allocations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// A manager's recorded trace (`Diagnostics::trace`): the newest events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    /// The events kept, ordered by time (each thread's in the order it recorded them).
    pub events: Vec<TraceEvent>,
    /// Events recorded but no longer kept: the ring holds [`TraceOptions::capacity`] events
    /// and drops the oldest first.
    pub dropped: u64,
    /// The ring's capacity.
    pub capacity: usize,
}

impl Trace {
    /// The events as JSON Lines: one object per line, each line ending in `\n`.
    pub fn to_json_lines(&self) -> String {
        let mut out = Vec::with_capacity(self.events.len() * 96);
        // Writing into a Vec cannot fail, and every event serialises.
        let _ = self.write_json_lines(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Writes the events as JSON Lines to `out`.
    pub fn write_json_lines(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        for event in &self.events {
            serde_json::to_writer(&mut out, event)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Writes the events as JSON Lines to the file at `path` (created or truncated).
    pub fn write_to_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        self.write_json_lines(&mut file)?;
        std::io::Write::flush(&mut file)
    }
}
