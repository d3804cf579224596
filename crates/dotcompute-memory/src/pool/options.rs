//! `ManagerOptions`: how a manager's pools, statistics and maintenance are configured. Defined
//! with the pool context, which is built from them; re-exported as `manager::ManagerOptions`.

use crate::error::{Error, Result};
use crate::trace::TraceOptions;
use std::time::Duration;

/// How a [`MemoryManager`](crate::MemoryManager) pools memory, keeps statistics and runs
/// maintenance.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerOptions {
    /// Cache freed blocks for reuse (default true). Off: every buffer allocates fresh memory.
    pub enable_pooling: bool,
    /// Upper bound on bytes kept in each cache (host and device) (default 1 GiB). Besides,
    /// each thread keeps the blocks of up to 8 small buffers per size class that it dropped
    /// (at most `min(2 MiB, max_pool_bytes / 16)` per thread) for its own next allocations; see
    /// [`MemoryManager::trim_excess`](crate::MemoryManager::trim_excess) for how those are reclaimed.
    pub max_pool_bytes: u64,
    /// Bytes the maintenance pass and `trim_excess` leave cached (default 0).
    pub min_pool_bytes: u64,
    /// Interval of the background maintenance pass that releases blocks idle for a whole
    /// interval, down to `min_pool_bytes` (default 60 s; `None` disables the thread).
    pub maintenance_interval: Option<Duration>,
    /// Time transfers for statistics and buffer metrics (default true).
    pub enable_statistics: bool,
    /// Record where each live buffer was allocated, for leak reports (default false: it costs a
    /// lock per allocation).
    pub track_allocations: bool,
    /// At most this many bytes of device memory held from the backend, cached blocks included
    /// (default `None`: as much as the backend gives). An allocation that would go beyond it
    /// first releases cached memory and retries, then fails with
    /// [`Error::MemoryLimitExceeded`]. What RMM's `limiting_resource_adaptor` and PyTorch's
    /// `set_per_process_memory_fraction` do: one manager cannot starve others sharing a
    /// device. On unified backends (cpu) device memory is the buffers' memory. A limited
    /// manager keeps no per-thread magazines (see `max_pool_bytes`): what a thread parks there
    /// cannot be released for another thread's allocation, so dropped memory would count
    /// against the limit for as long as that thread stays idle.
    pub device_memory_limit: Option<u64>,
    /// Expandable segments (default false), PyTorch's `expandable_segments`: device memory comes
    /// from one reserved address range that grows by mapping memory (2 MiB granules on cpu and
    /// sim, the driver's granularity on CUDA) under the blocks handed out, instead of from fixed
    /// segments. Blocks are cut to the request (in 512-byte steps, with no size-class rounding)
    /// by a two-level segregated fit in constant time, and any free range can serve any request,
    /// so a large request after many frees needs no new segment and memory held but unusable
    /// (fragmentation) stays low. Freed granules stay mapped, as cached memory, until
    /// `trim_excess`, the maintenance pass (once they stayed idle through an interval) or an
    /// out-of-memory retry unmaps them, or the cache passes `max_pool_bytes` (without pooling
    /// they are unmapped at once). The price: a map
    /// call per new granule, blocks that share a granule keep it mapped, and every allocation
    /// takes the pool's lock (there is no lock-free per-size-class front cache).
    /// Needs a backend with virtual memory
    /// ([`Backend::virtual_memory_granularity`](crate::backend::Backend::virtual_memory_granularity):
    /// cpu, sim, CUDA); on others the manager is not made (an error naming the backend).
    pub expandable_segments: bool,
    /// Record every buffer allocation and free in a bounded ring (default `None`: nothing is
    /// recorded, and the hot paths test one field). Read it with
    /// [`Diagnostics::trace`](crate::Diagnostics::trace); replay it with `dcmem replay`.
    /// Recording costs a few nanoseconds per event (each thread batches its events); see
    /// [`crate::trace`].
    pub trace: Option<TraceOptions>,
}

crate::setters::with_setters!(ManagerOptions {
    with_enable_pooling => enable_pooling: bool,
    with_max_pool_bytes => max_pool_bytes: u64,
    with_min_pool_bytes => min_pool_bytes: u64,
    with_maintenance_interval => maintenance_interval: Option<Duration>,
    with_enable_statistics => enable_statistics: bool,
    with_track_allocations => track_allocations: bool,
    with_device_memory_limit => device_memory_limit: Option<u64>,
    with_expandable_segments => expandable_segments: bool,
    with_trace => trace: Option<TraceOptions>,
});

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            enable_pooling: true,
            max_pool_bytes: 1 << 30,
            min_pool_bytes: 0,
            maintenance_interval: Some(Duration::from_secs(60)),
            enable_statistics: true,
            track_allocations: false,
            device_memory_limit: None,
            expandable_segments: false,
            trace: None,
        }
    }
}

impl ManagerOptions {
    /// Fails with [`Error::InvalidArgument`] naming the first option that contradicts another.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.min_pool_bytes > self.max_pool_bytes {
            return Err(Error::InvalidArgument {
                option: "ManagerOptions::min_pool_bytes",
                value: format!("{} (max_pool_bytes is {})", self.min_pool_bytes, self.max_pool_bytes),
                reason: "min_pool_bytes must not exceed max_pool_bytes",
            });
        }
        if self.device_memory_limit == Some(0) {
            return Err(Error::InvalidArgument {
                option: "ManagerOptions::device_memory_limit",
                value: "Some(0)".into(),
                reason: "a limit of 0 bytes allows no buffer with data; use None for no limit",
            });
        }
        if self.maintenance_interval == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument {
                option: "ManagerOptions::maintenance_interval",
                value: "0s".into(),
                reason: "use None to disable maintenance, or a positive interval",
            });
        }
        if self.trace.as_ref().is_some_and(|t| t.capacity == 0) {
            return Err(Error::InvalidArgument {
                option: "ManagerOptions::trace",
                value: "a capacity of 0 events".into(),
                reason: "a trace keeps at least one event; use None to record nothing",
            });
        }
        Ok(())
    }
}
