//! What a failed call must leave as it was: a buffer's length, state, epochs, contents and
//! metrics, and a manager's counters (the pool and backend counters too, unless the case says the
//! call got as far as taking memory).

use dotcompute_memory::*;
use std::fmt::Debug;

/// Everything observable about a buffer's data that a failed call must not change.
#[derive(Debug, PartialEq)]
pub struct Snapshot<T> {
    pub len: usize,
    pub state: BufferState,
    pub epochs: (u64, u64),
    pub contents: Vec<T>,
}

pub fn snapshot<T: Element + PartialEq>(buf: &UnifiedBuffer<T>) -> Snapshot<T> {
    let (state, epochs) = (buf.state(), buf.epochs());
    let contents = buf.to_vec().expect("reading a buffer");
    assert_eq!((buf.state(), buf.epochs()), (state, epochs), "to_vec must not change the state");
    Snapshot { len: buf.len(), state, epochs, contents }
}

/// A buffer before a bad call: its snapshot and its metrics. Reading the contents moves the
/// metrics (a cache hit, or a device read), so `watch` reads first and then takes the metrics,
/// and `check` takes the metrics first and then reads.
pub struct Before<T> {
    pub snap: Snapshot<T>,
    pub metrics: BufferMetrics,
}

pub fn watch<T: Element + PartialEq>(buf: &UnifiedBuffer<T>) -> Before<T> {
    let snap = snapshot(buf);
    Before { snap, metrics: buf.metrics() }
}

impl<T: Element + PartialEq + Debug> Before<T> {
    #[track_caller]
    pub fn check(&self, buf: &UnifiedBuffer<T>, at: &str) {
        assert_eq!(buf.metrics(), self.metrics, "{at}: the buffer's metrics moved");
        assert_eq!((buf.state(), buf.epochs()), (self.snap.state, self.snap.epochs), "{at}: state or epochs moved");
        assert_eq!(snapshot(buf), self.snap, "{at}: the buffer changed");
    }
}

/// A manager's counters (`statistics()` less the clock-dependent rates).
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    pub buffers_allocated: u64,
    pub buffers_freed: u64,
    pub active_allocations: u64,
    pub total_bytes_allocated: u64,
    pub total_bytes_freed: u64,
    pub active_bytes: u64,
    pub peak_bytes: u64,
    /// (count, bytes) of host-to-device, device-to-host and device-to-device transfers.
    pub transfers: [(u64, u64); 3],
    pub pool: PoolCounters,
}

/// Memory taken from the pools and the backend: unchanged by a call refused before it asks
/// for memory; a call that fails later (out of memory, a failed stream) may move it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolCounters {
    pub block_requests: u64,
    pub pool_hits: u64,
    pub backend_allocations: u64,
    pub backend_frees: u64,
    pub evictions: u64,
    pub cached_bytes: u64,
    pub reserved_bytes: u64,
    pub device_segments: u64,
}

pub fn counters(mm: &MemoryManager) -> Counters {
    let s = mm.statistics();
    let t = |t: &TransferStatistics| (t.count, t.bytes);
    Counters {
        buffers_allocated: s.buffers_allocated,
        buffers_freed: s.buffers_freed,
        active_allocations: s.active_allocations,
        total_bytes_allocated: s.total_bytes_allocated,
        total_bytes_freed: s.total_bytes_freed,
        active_bytes: s.active_bytes,
        peak_bytes: s.peak_bytes,
        transfers: [t(&s.host_to_device), t(&s.device_to_host), t(&s.device_to_device)],
        pool: PoolCounters {
            block_requests: s.block_requests,
            pool_hits: s.pool_hits,
            backend_allocations: s.backend_allocations,
            backend_frees: s.backend_frees,
            evictions: s.evictions,
            cached_bytes: s.cached_bytes,
            reserved_bytes: s.reserved_bytes,
            device_segments: s.device_segments,
        },
    }
}

/// What the runner checks after a case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// Every counter, the buffer and the bystanders.
    Everything,
    /// As `Everything`, but the pool counters may move: the call took (and gave back) memory
    /// before it failed.
    PoolsMayMove,
    /// The case builds its own buffers and checks them itself (only bystanders are checked).
    InCase,
}

#[track_caller]
pub fn check_counters(mm: &MemoryManager, before: &Counters, check: Check, at: &str) {
    let now = counters(mm);
    match check {
        Check::Everything => assert_eq!(now, *before, "{at}: the manager's statistics moved"),
        Check::PoolsMayMove => {
            assert_eq!(Counters { pool: before.pool.clone(), ..now }, *before, "{at}: the manager's statistics moved")
        }
        Check::InCase => {}
    }
}
