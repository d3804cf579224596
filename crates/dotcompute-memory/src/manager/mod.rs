//! `MemoryManager`: the facade over one pool context. It opens a backend, allocates buffers,
//! reports statistics, runs maintenance, and hands out transfer engines.
//!
//! - `allocate`: the allocation methods (buffers, named shared buffers, host buffers).
//! - `maintenance`: the background maintenance thread and the end of the last handle.
//! - `dlpack` (feature `dlpack`): `UnifiedBuffer::from_dlpack`, which needs the manager.
//!
//! The state buffers and transfer engines share lives below, in the pool context
//! (`pool::context::ManagerShared`); nothing below this module refers to the facade.

mod allocate;
#[cfg(feature = "dlpack")]
mod dlpack;
mod maintenance;
#[cfg(test)]
mod staged_copy_tests;

use crate::backend::{cpu::CpuBackend, sim::SimBackend, sim::SimOptions, Backend};
use crate::buffer::magazine;
use crate::diagnostics::Diagnostics;
use crate::error::{Error, Result};
use crate::pool::context::ManagerShared;
use crate::pool::snapshot::MemorySnapshot;
use crate::stats::MemoryStatistics;
use crate::trace::TraceOptions;
use crate::transfer::TransferEngine;
use maintenance::{LastHandle, Maintenance};
use std::sync::Arc;

pub use crate::pool::options::ManagerOptions;
pub use allocate::AccessHint;

/// The entry point: allocates buffers on one backend and keeps their pools and statistics.
///
/// Cheap to clone (all clones share one pool). Buffers keep what they need alive, so they may
/// outlive the manager handle; the maintenance thread stops when the last handle is dropped.
///
/// ```
/// use dotcompute_memory::*;
///
/// let mm = MemoryManager::with_backend(
///     CpuBackend::new(),
///     ManagerOptions::default().with_maintenance_interval(None),
/// )?;
/// let buf = mm.allocate_from(&[1.0f64, 2.0, 3.0])?;
/// assert_eq!(mm.statistics().active_allocations, 1);
///
/// // A dropped buffer's memory stays cached for the next allocation of its size class ...
/// drop(buf);
/// let again = mm.allocate::<f64>(3)?;
/// assert_eq!(mm.statistics().pool_hits, 1);
/// drop(again);
///
/// // ... until the caches are trimmed (down to `min_pool_bytes`).
/// mm.trim_excess()?;
/// assert_eq!(mm.statistics().cached_bytes, 0);
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone)]
pub struct MemoryManager {
    shared: Arc<ManagerShared>,
    _maintenance: Option<Arc<Maintenance>>,
    _handles: Arc<LastHandle>,
}

impl std::fmt::Debug for MemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryManager")
            .field("id", &self.shared.id)
            .field("backend", &self.shared.backend.name())
            .field("options", &self.shared.options)
            .finish()
    }
}

impl MemoryManager {
    /// A manager on the embedded CPU backend with default options. Never fails.
    pub fn cpu() -> Self {
        Self::with_backend(CpuBackend::new(), ManagerOptions::default()).expect("default options are valid")
    }

    /// A manager on a simulated discrete device.
    pub fn sim(options: SimOptions) -> Self {
        Self::with_backend(SimBackend::new(options), ManagerOptions::default()).expect("default options are valid")
    }

    /// A manager on `backend`. Fails if the options contradict each other.
    pub fn with_backend(backend: impl Backend, options: ManagerOptions) -> Result<Self> {
        Self::with_shared_backend(Arc::new(backend), options)
    }

    /// A manager on an already shared backend (several managers may share one device).
    pub fn with_shared_backend(backend: Arc<dyn Backend>, options: ManagerOptions) -> Result<Self> {
        options.validate()?;
        if options.expandable_segments && backend.virtual_memory_granularity().is_none() {
            return Err(Error::InvalidArgument {
                option: "ManagerOptions::expandable_segments",
                value: format!("true, on backend `{}`", backend.name()),
                reason: "this backend cannot reserve address space and map memory into it (OpenCL has no such API); \
                         leave expandable_segments off there, or use cpu, sim or cuda",
            });
        }
        let shared = ManagerShared::new(backend, options, magazine::flush_current);
        let maintenance = shared.options.maintenance_interval.map(|interval| Maintenance::start(&shared, interval));
        Ok(MemoryManager { _handles: Arc::new(LastHandle(shared.clone())), shared, _maintenance: maintenance })
    }

    /// A manager on the backend named by the `DCMEM_BACKEND` environment variable
    /// (`cpu`, `sim`, `opencl`, `cuda`, `metal`; unset or empty means `cpu`), with
    /// [`ManagerOptions::device_memory_limit`] from `DCMEM_DEVICE_MEMORY_LIMIT` when it is set
    /// (a byte count as [`crate::units::parse_byte_count`] reads it: `1073741824`, `512MiB`,
    /// `2GiB`, `64K`), and, when `DCMEM_TRACE` names a file, an allocation trace
    /// ([`ManagerOptions::trace`], [`TraceOptions::DEFAULT_CAPACITY`] events) written to that
    /// file as JSON Lines when the manager's last handle is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the variable when either is not valid UTF-8 or the
    /// limit is not a byte count; [`Error::UnknownBackend`] or [`Error::BackendUnavailable`]
    /// for a backend name this build cannot open.
    pub fn from_env() -> Result<Self> {
        const LIMIT: &str = "DCMEM_DEVICE_MEMORY_LIMIT";
        const LIMIT_EXPECTED: &str = "expected a byte count of at least 1 such as 1073741824, 512MiB, 2GiB or 64K \
                                      (K/KiB, M/MiB, G/GiB, T/TiB binary; kB, MB, GB, TB decimal), or unset it";
        let name = crate::environment::var(
            "DCMEM_BACKEND",
            "expected a backend name (cpu, sim, opencl, cuda or metal), or unset it for cpu",
        )?
        .unwrap_or_else(|| "cpu".to_string());
        let limit = match crate::environment::var(LIMIT, LIMIT_EXPECTED)? {
            Some(text) => Some(crate::units::parse_byte_count(&text).map_err(|_| Error::InvalidArgument {
                option: LIMIT,
                value: text,
                reason: LIMIT_EXPECTED,
            })?),
            None => None,
        };
        let trace = crate::environment::var(
            "DCMEM_TRACE",
            "expected the name of the file to write the allocation trace to, or unset it",
        )?
        .map(|file| TraceOptions::default().with_file(Some(file.into())));
        Self::with_backend_name(
            &name,
            ManagerOptions { device_memory_limit: limit, trace, ..ManagerOptions::default() },
        )
    }

    /// A manager on the backend called `name` (as in `DCMEM_BACKEND`).
    pub fn with_backend_name(name: &str, options: ManagerOptions) -> Result<Self> {
        Self::with_shared_backend(crate::backend::open(name)?, options)
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.shared.backend()
    }

    /// The options the manager was made with.
    pub fn options(&self) -> &ManagerOptions {
        &self.shared.options
    }

    /// This manager's id (buffers of different managers cannot be mixed).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// A snapshot of the counters.
    pub fn statistics(&self) -> MemoryStatistics {
        self.shared.statistics()
    }

    /// The device pool's segments and blocks now, with totals and a fragmentation measure
    /// (PyTorch's `memory_snapshot`): where device memory goes, and why a request may need a
    /// new segment although `cached_bytes` looks large.
    pub fn memory_snapshot(&self) -> MemorySnapshot {
        self.shared.memory_snapshot()
    }

    /// A text table of where memory is, like `torch.cuda.memory_summary()`: allocated memory
    /// (the live buffers' bytes, host and device), then active (device blocks handed out),
    /// reserved (device segments) and cached (segments less active) memory split into the
    /// small pool (requests up to 1 MiB) and the large pool, each with current, peak and
    /// total figures (as [`PoolUsage`](crate::PoolUsage) holds them); what the other caches
    /// hold; buffer and segment counts; out-of-memory errors and retries; and one line per
    /// segment with its fragmentation. `dcmem stats` prints it.
    ///
    /// ```
    /// use dotcompute_memory::{MemoryManager, SimOptions};
    ///
    /// # fn main() -> dotcompute_memory::Result<()> {
    /// let mm = MemoryManager::sim(SimOptions::default());
    /// let mut small = mm.allocate::<u8>(4096)?;
    /// small.ensure_on_device()?;
    /// let summary = mm.memory_summary();
    /// assert!(summary.contains("| Reserved device memory (segments)"));
    /// assert!(summary.contains("|     from small pool"));
    /// println!("{summary}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn memory_summary(&self) -> String {
        crate::pool::summary::render(&self.statistics(), &self.memory_snapshot(), &self.shared.backend.device_label())
    }

    /// Starts a new peak: `peak_bytes` becomes the bytes of the buffers alive now (and
    /// `peak_reserved_bytes` the bytes reserved now). Returns the peak of live bytes it
    /// replaces. (PyTorch's `reset_peak_memory_stats`, for measuring one phase of a program.)
    pub fn reset_peak_bytes(&self) -> u64 {
        self.shared.stats.reset_peak()
    }

    /// Releases cached blocks down to `min_pool_bytes`; returns the bytes released.
    ///
    /// Blocks parked in the calling thread's magazine (the small blocks a thread keeps for its
    /// own next allocations) are released too. Other threads' magazines cannot be reached
    /// without making every allocation synchronise, so they are recalled instead: each hands
    /// its blocks back the next time it drops a buffer of this manager, or when it exits. At
    /// most `min(2 MiB, max_pool_bytes / 16)` bytes per thread wait that way.
    pub fn trim_excess(&self) -> Result<u64> {
        Ok(self.shared.trim() as u64)
    }

    /// Runs one maintenance pass now (what the background thread does each interval):
    /// releases blocks that stayed cached through the whole previous interval.
    pub fn run_maintenance(&self) -> u64 {
        self.shared.maintain() as u64
    }

    /// The live-buffer registry.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.shared.diagnostics
    }

    /// The transfer engine of this manager.
    pub fn transfer_engine(&self) -> TransferEngine {
        TransferEngine::new(self.shared.clone())
    }
}
