//! Manager-wide counters and their serde snapshot, `MemoryStatistics`.
//!
//! Counters are relaxed atomics, each on its own cache line so threads allocating at once do
//! not bounce one line between cores. Derived figures (active allocations, bytes freed, rates,
//! hit rate) are computed when a snapshot is taken, not maintained on the hot path.
//!
//! The counters every buffer allocation and drop touches (buffers allocated and freed, bytes
//! allocated, pool hits, active bytes) are sharded per thread: each thread writes only its own
//! shard (a `ThreadLocal` slot the counters own), with a plain load and store rather than a
//! read-modify-write (one costs ~8.5 ns on these machines, a third of a `malloc`), and a
//! snapshot sums the shards.
//!
//! Active bytes need a shared total for `peak_bytes`, so a thread keeps its net change
//! (allocated minus freed) in its shard and folds it into the shared counter only when it passes
//! ±`ACTIVE_BATCH` (16 MiB) (Linux's `percpu_counter` scheme). The peak is checked on every
//! allocation against the shared counter plus the thread's own net change: exact when one
//! thread allocates and frees; with several threads it can be off by what the other threads
//! have not folded in yet, at most `ACTIVE_BATCH` each.

use crate::error::Direction;
use crate::thread_exit::{self, READY};
use crate::units::format_bytes_short;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

#[derive(Default)]
struct Counter(CachePadded<AtomicU64>);

impl Counter {
    #[inline]
    fn add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Relaxed)
    }
    #[inline]
    fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Relaxed);
    }
    #[inline]
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One thread's share of the hot counters. Only the owning thread writes it, so an increment
/// is a load and a store; other threads only read it. Shared (`Arc`) so that a thread's
/// magazine can keep its shard at hand instead of looking it up on every allocation.
#[derive(Default)]
pub(crate) struct Shard {
    buffers_allocated: AtomicU64,
    buffers_freed: AtomicU64,
    bytes_allocated: AtomicU64,
    pool_hits: AtomicU64,
    /// Buffers created other than from a magazine: the magazine's own creations are pool hits,
    /// counted as `buffers_allocated - created_outside_magazine` so its hot path bumps one
    /// counter fewer.
    created_outside_magazine: AtomicU64,
    /// Bytes parked in this thread's magazine for this manager (see `buffer::magazine`; written
    /// by the magazine, which keeps the shard, so also when it is emptied at thread exit).
    pub(crate) magazine_bytes: AtomicU64,
    /// This thread's net active bytes not yet folded into `StatCounters::active_bytes` (an
    /// `i64` stored as its bits).
    unflushed_active: AtomicU64,
}

// Thread exit: see `crate::thread_exit`. Only allocations make a thread ready; a drop on a
// thread that is not ready counts in the shared counters and parks nothing (a drop that made
// the thread ready in a late thread-local destructor would print the `thread_local` crate's
// panic, which `thread_exit::become_ready` catches). The magazine registers its exit flush
// after the thread is ready (see `buffer::magazine::restock`), so it is flushed while the
// thread's id is still valid.

/// Net bytes a thread allocates (or frees) before folding them into the shared active count.
const ACTIVE_BATCH: i64 = 16 << 20;

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

#[derive(Default)]
struct TransferCounters {
    count: Counter,
    bytes: Counter,
    nanos: Counter,
    /// Best bandwidth of one transfer of at least `PEAK_MIN_BYTES`, bytes per second.
    peak: Counter,
}

/// Transfers smaller than this are dominated by fixed overhead and do not set the peak.
const PEAK_MIN_BYTES: usize = 64 << 10;

/// The live counters of one manager.
pub(crate) struct StatCounters {
    started: Instant,
    shards: ThreadLocal<Arc<CachePadded<Shard>>>,
    /// The hot counters of threads that are exiting, or drop before they ever allocated (see
    /// `crate::thread_exit`), updated with read-modify-writes since several threads may use them.
    exiting: CachePadded<Shard>,
    active_bytes: Counter,
    peak_bytes: Counter,
    pool_misses: Counter,
    backend_frees: Counter,
    backend_bytes: Counter,
    /// Highest `backend_bytes` seen (checked where it grows: backend allocations only).
    peak_backend_bytes: Counter,
    evictions: Counter,
    transfers: [TransferCounters; 3],
}

impl StatCounters {
    pub(crate) fn new() -> Self {
        StatCounters {
            started: Instant::now(),
            shards: ThreadLocal::new(),
            exiting: CachePadded::new(Shard::default()),
            active_bytes: Counter::default(),
            peak_bytes: Counter::default(),
            pool_misses: Counter::default(),
            backend_frees: Counter::default(),
            backend_bytes: Counter::default(),
            peak_backend_bytes: Counter::default(),
            evictions: Counter::default(),
            transfers: Default::default(),
        }
    }

    /// This thread's shard; `None` once the thread is exiting (see `crate::thread_exit`).
    #[inline]
    fn shard(&self) -> Option<&Shard> {
        thread_exit::when_ready(|| &***self.shards.get_or_default())
    }

    /// This thread's shard if the thread is ready (see `crate::thread_exit`: drops never make it so).
    #[inline]
    fn ready_shard(&self) -> Option<&Shard> {
        match thread_exit::state() {
            READY => Some(self.shards.get_or_default()),
            _ => None,
        }
    }

    /// This thread's shard, to keep (see `buffer::magazine`); `None` unless the thread is ready
    /// (a drop asks for it, see `crate::thread_exit`).
    pub(crate) fn thread_shard(&self) -> Option<Arc<CachePadded<Shard>>> {
        self.ready_shard()?;
        self.shards.get().cloned()
    }

    /// Sums `field` over all shards, exiting threads' included.
    fn total(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        let threads = self.shards.iter().map(|s| field(s).load(Relaxed)).fold(0, u64::wrapping_add);
        threads.wrapping_add(field(&self.exiting).load(Relaxed))
    }

    #[inline]
    pub(crate) fn buffer_created(&self, bytes: usize) {
        match self.shard() {
            Some(shard) => {
                bump(&shard.created_outside_magazine, 1);
                self.created(shard, bytes);
            }
            None => {
                self.exiting.created_outside_magazine.fetch_add(1, Relaxed);
                self.exiting.buffers_allocated.fetch_add(1, Relaxed);
                self.exiting.bytes_allocated.fetch_add(bytes as u64, Relaxed);
                let active = self.active_bytes.add(bytes as u64).wrapping_add(bytes as u64);
                self.peak_bytes.0.fetch_max(active, Relaxed);
            }
        }
    }

    #[inline]
    fn created(&self, shard: &Shard, bytes: usize) {
        bump(&shard.buffers_allocated, 1);
        bump(&shard.bytes_allocated, bytes as u64);
        let local = (shard.unflushed_active.load(Relaxed) as i64).wrapping_add(bytes as i64);
        let active = if local > ACTIVE_BATCH {
            shard.unflushed_active.store(0, Relaxed);
            self.active_bytes.add(local as u64).wrapping_add(local as u64)
        } else {
            shard.unflushed_active.store(local as u64, Relaxed);
            self.active_bytes.get().wrapping_add(local as u64)
        };
        // Compared as signed: the shared count runs below zero while a thread that freed what
        // others allocated has folded its share in and they have not yet folded theirs.
        if active as i64 > self.peak_bytes.get() as i64 {
            self.peak_bytes.0.fetch_max(active, Relaxed);
        }
    }

    #[inline]
    pub(crate) fn buffer_dropped(&self, bytes: usize) {
        match self.ready_shard() {
            Some(shard) => self.dropped(shard, bytes),
            None => {
                self.exiting.buffers_freed.fetch_add(1, Relaxed);
                self.active_bytes.sub(bytes as u64);
            }
        }
    }

    #[inline]
    fn dropped(&self, shard: &Shard, bytes: usize) {
        bump(&shard.buffers_freed, 1);
        let local = (shard.unflushed_active.load(Relaxed) as i64).wrapping_sub(bytes as i64);
        // Folded as soon as it is negative (this thread freed what others allocated): a
        // negative share would make other threads' peaks come out above the truth.
        if local < 0 {
            shard.unflushed_active.store(0, Relaxed);
            self.active_bytes.add(local as u64);
        } else {
            shard.unflushed_active.store(local as u64, Relaxed);
        }
    }

    /// Sets the peak to the bytes of live buffers now, and the reserved peak to the bytes
    /// reserved now; returns the previous peak of live bytes.
    pub(crate) fn reset_peak(&self) -> u64 {
        self.peak_backend_bytes.0.store(self.backend_bytes.get(), Relaxed);
        self.peak_bytes.0.swap(self.active_bytes(), Relaxed)
    }

    /// Bytes of live buffers: the shared count plus what threads have not folded in yet.
    fn active_bytes(&self) -> u64 {
        let total = self.active_bytes.get().wrapping_add(self.total(|s| &s.unflushed_active));
        (total as i64).max(0) as u64
    }

    #[inline]
    pub(crate) fn pool_hit(&self) {
        match self.shard() {
            Some(shard) => bump(&shard.pool_hits, 1),
            None => {
                self.exiting.pool_hits.fetch_add(1, Relaxed);
            }
        }
    }

    /// A buffer of `bytes` made from a block out of this thread's magazine, which now holds
    /// `parked` bytes; `shard` is this thread's.
    #[inline]
    pub(crate) fn buffer_created_from_magazine(&self, shard: &Shard, bytes: usize, parked: usize) {
        shard.magazine_bytes.store(parked as u64, Relaxed);
        self.created(shard, bytes);
    }

    /// A buffer of `bytes` dropped, its block parked in this thread's magazine, which now holds
    /// `parked` bytes; `shard` is this thread's.
    #[inline]
    pub(crate) fn buffer_dropped_into_magazine(&self, shard: &Shard, bytes: usize, parked: usize) {
        shard.magazine_bytes.store(parked as u64, Relaxed);
        self.dropped(shard, bytes);
    }

    /// Bytes parked in per-thread magazines now.
    pub(crate) fn magazine_bytes(&self) -> u64 {
        self.total(|s| &s.magazine_bytes)
    }

    pub(crate) fn backend_allocated(&self, bytes: usize) {
        self.pool_misses.add(1);
        let reserved = self.backend_bytes.add(bytes as u64).wrapping_add(bytes as u64);
        self.peak_backend_bytes.0.fetch_max(reserved, Relaxed);
    }

    pub(crate) fn backend_freed(&self, bytes: usize) {
        self.backend_frees.add(1);
        self.backend_bytes.sub(bytes as u64);
    }

    pub(crate) fn active(&self) -> (u64, u64) {
        let freed = self.total(|s| &s.buffers_freed);
        (self.total(|s| &s.buffers_allocated).saturating_sub(freed), self.active_bytes())
    }

    /// Cached memory handed back to the backend by trimming, maintenance or an OOM retry.
    pub(crate) fn evicted(&self) {
        self.evictions.add(1);
    }

    pub(crate) fn transfer(&self, direction: Direction, bytes: usize, elapsed: Duration) {
        let t = &self.transfers[direction as usize];
        t.count.add(1);
        t.bytes.add(bytes as u64);
        t.nanos.add(elapsed.as_nanos() as u64);
        let nanos = elapsed.as_nanos();
        if bytes >= PEAK_MIN_BYTES && nanos > 0 {
            let bw = (bytes as u128 * 1_000_000_000 / nanos) as u64;
            t.peak.0.fetch_max(bw, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, backend: &str, cached_bytes: u64, device_segments: u64) -> MemoryStatistics {
        let uptime = self.started.elapsed().as_secs_f64().max(1e-9);
        let allocated = self.total(|s| &s.buffers_allocated);
        let freed = self.total(|s| &s.buffers_freed);
        // Relaxed reads of counters bumped one after the other: saturating, since a creation
        // may be half counted while we read.
        let from_magazines = allocated.saturating_sub(self.total(|s| &s.created_outside_magazine));
        let hits = self.total(|s| &s.pool_hits) + from_magazines;
        let misses = self.pool_misses.get();
        let requests = hits + misses;
        let bytes_allocated = self.total(|s| &s.bytes_allocated);
        let active_bytes = self.active_bytes();
        let transfer = |d: Direction| {
            let t = &self.transfers[d as usize];
            TransferStatistics::from_totals(t.count.get(), t.bytes.get(), t.nanos.get(), t.peak.get())
        };
        MemoryStatistics {
            backend: backend.to_string(),
            buffers_allocated: allocated,
            buffers_freed: freed,
            active_allocations: allocated.saturating_sub(freed),
            total_bytes_allocated: bytes_allocated,
            total_bytes_freed: bytes_allocated.saturating_sub(active_bytes),
            active_bytes,
            peak_bytes: self.peak_bytes.get(),
            block_requests: requests,
            pool_hits: hits,
            backend_allocations: misses,
            backend_frees: self.backend_frees.get(),
            evictions: self.evictions.get(),
            pool_hit_rate: if requests == 0 { 0.0 } else { hits as f64 / requests as f64 },
            allocation_reduction: if requests == 0 { 0.0 } else { 1.0 - misses as f64 / requests as f64 },
            cached_bytes,
            device_segments,
            reserved_bytes: self.backend_bytes.get(),
            peak_reserved_bytes: self.peak_backend_bytes.get(),
            host_to_device: transfer(Direction::HostToDevice),
            device_to_host: transfer(Direction::DeviceToHost),
            device_to_device: transfer(Direction::DeviceToDevice),
            uptime_secs: uptime,
            allocation_rate: allocated as f64 / uptime,
            free_rate: freed as f64 / uptime,
        }
    }
}

/// Totals for one transfer direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferStatistics {
    /// Transfers completed.
    pub count: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Time spent, in nanoseconds.
    pub total_time_ns: u64,
    /// Mean time per transfer, in nanoseconds.
    pub average_time_ns: f64,
    /// Bytes per second over the time spent transferring.
    pub bandwidth_bytes_per_sec: f64,
    /// Best bandwidth a single transfer of 64 KiB or more reached (bytes per second).
    pub peak_bandwidth_bytes_per_sec: f64,
    /// `bandwidth / peak`: how close transfers came, on average, to the best single-stream
    /// bandwidth seen (1.0 = every transfer as fast as the best; 0 when there is no peak).
    pub efficiency: f64,
}

impl TransferStatistics {
    fn from_totals(count: u64, bytes: u64, nanos: u64, peak: u64) -> Self {
        let bandwidth = if nanos == 0 { 0.0 } else { bytes as f64 * 1e9 / nanos as f64 };
        TransferStatistics {
            peak_bandwidth_bytes_per_sec: peak as f64,
            efficiency: if peak == 0 { 0.0 } else { (bandwidth / peak as f64).min(1.0) },
            count,
            bytes,
            total_time_ns: nanos,
            average_time_ns: if count == 0 { 0.0 } else { nanos as f64 / count as f64 },
            bandwidth_bytes_per_sec: bandwidth,
        }
    }
}

/// A snapshot of a manager's counters (`MemoryManager::statistics`).
///
/// "Buffers" are what users allocated; "blocks" are the memory the pool hands out for them
/// (one per buffer on unified backends; a host block plus, once used on the device, a device
/// block on discrete ones). `allocation_reduction = 1 - backend_allocations / block_requests`:
/// the share of block requests the pool served without calling the backend.
///
/// ```
/// use dotcompute_memory::MemoryManager;
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let mm = MemoryManager::cpu();
/// drop(mm.allocate::<f32>(1024)?);
/// let again = mm.allocate::<f32>(1024)?; // served from the pool
/// let stats = mm.statistics();
/// assert_eq!((stats.buffers_allocated, stats.pool_hits, stats.active_allocations), (2, 1, 1));
/// println!("{stats}"); // buffers, pool, then one line per transfer direction used
/// # drop(again);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryStatistics {
    /// Backend name.
    pub backend: String,
    /// Buffers allocated since the manager was created.
    pub buffers_allocated: u64,
    /// Buffers dropped since the manager was created.
    pub buffers_freed: u64,
    /// Buffers alive now (`buffers_allocated - buffers_freed`).
    pub active_allocations: u64,
    /// Sum of the sizes of all buffers allocated (bytes).
    pub total_bytes_allocated: u64,
    /// Sum of the sizes of all buffers dropped (bytes).
    pub total_bytes_freed: u64,
    /// Bytes of buffers alive now.
    pub active_bytes: u64,
    /// Highest `active_bytes` seen. Exact when one thread allocates and frees; with several
    /// threads it may miss by what other threads had not yet folded into the shared count (at
    /// most 16 MiB of net change per thread), the price of allocations that take no atomic
    /// read-modify-write.
    pub peak_bytes: u64,
    /// Memory blocks requested from the pool.
    pub block_requests: u64,
    /// Requests served from cached blocks.
    pub pool_hits: u64,
    /// Requests that called the backend (or the host allocator).
    pub backend_allocations: u64,
    /// Blocks released to the backend.
    pub backend_frees: u64,
    /// Cached blocks or segments released by `trim_excess`, the maintenance pass, or an
    /// out-of-memory retry (a subset of `backend_frees`).
    pub evictions: u64,
    /// `pool_hits / block_requests` (0 when there were none).
    pub pool_hit_rate: f64,
    /// `1 - backend_allocations / block_requests` (0 when there were none).
    pub allocation_reduction: f64,
    /// Bytes held in the pool's free lists and threads' magazines.
    pub cached_bytes: u64,
    /// Bytes currently obtained from the backend and host allocator (in use plus cached).
    pub reserved_bytes: u64,
    /// Highest `reserved_bytes` seen (since the manager was made or
    /// [`reset_peak_bytes`](crate::MemoryManager::reset_peak_bytes)): with `peak_bytes`, how
    /// much memory the pool's caching and rounding cost at the worst moment.
    #[serde(default)]
    pub peak_reserved_bytes: u64,
    /// Backend allocations (segments) the device pool holds; buffers are carved from them.
    pub device_segments: u64,
    /// Host-to-device transfers.
    pub host_to_device: TransferStatistics,
    /// Device-to-host transfers.
    pub device_to_host: TransferStatistics,
    /// Device-to-device transfers.
    pub device_to_device: TransferStatistics,
    /// Seconds since the manager was created.
    pub uptime_secs: f64,
    /// Buffers allocated per second of uptime.
    pub allocation_rate: f64,
    /// Buffers freed per second of uptime.
    pub free_rate: f64,
}

impl std::fmt::Display for MemoryStatistics {
    /// Buffers and bytes, the pool, then one line per transfer direction that moved anything.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = format_bytes_short;
        write!(
            f,
            "{}: {} buffer(s) alive ({}, peak {}); {} allocated, {} freed",
            self.backend,
            self.active_allocations,
            b(self.active_bytes),
            b(self.peak_bytes),
            self.buffers_allocated,
            self.buffers_freed,
        )?;
        write!(
            f,
            "\npool: {} of {} block request(s) served from cache ({:.1}%), {} backend allocation(s), {} free(s), {} eviction(s); {} cached, {} reserved (host and device), {} device segment(s)",
            self.pool_hits,
            self.block_requests,
            self.pool_hit_rate * 100.0,
            self.backend_allocations,
            self.backend_frees,
            self.evictions,
            b(self.cached_bytes),
            b(self.reserved_bytes),
            self.device_segments,
        )?;
        let directions = [
            (Direction::HostToDevice, &self.host_to_device),
            (Direction::DeviceToHost, &self.device_to_host),
            (Direction::DeviceToDevice, &self.device_to_device),
        ];
        for (direction, t) in directions.into_iter().filter(|(_, t)| t.count > 0) {
            write!(
                f,
                "\n{direction}: {} transfer(s), {}, {:.2} GB/s (peak {:.2} GB/s)",
                t.count,
                b(t.bytes),
                t.bandwidth_bytes_per_sec / 1e9,
                t.peak_bandwidth_bytes_per_sec / 1e9,
            )?;
        }
        Ok(())
    }
}
