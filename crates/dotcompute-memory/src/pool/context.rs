//! `ManagerShared`: the pool context one manager shares with its buffers and transfer engines:
//! the backend, the device pool, the host and pinned block caches, statistics, diagnostics,
//! transfer measurements, and the recycle epoch of the per-thread magazines.

use super::cache::BlockCache;
use super::device::DevicePool;
use super::options::ManagerOptions;
use super::size_class::class_of;
use super::snapshot::MemorySnapshot;
use super::staging::StagingSlot;
use super::tuning::Tuning;
use crate::backend::region::DeviceRegion;
use crate::backend::{Backend, PinnedHost};
use crate::diagnostics::Diagnostics;
use crate::error::{Direction, Error, Result};
use crate::host::HostBlock;
use crate::stats::{MemoryStatistics, StatCounters};
use crate::trace::recorder::Recorder;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A closed recycle epoch: the manager has no handle left, so nothing more is parked for it.
pub(crate) const CLOSED: u64 = u64::MAX;
/// Upper bound of what one thread's magazine holds for a manager, in bytes.
pub(crate) const MAX_THREAD_BYTES: usize = 2 << 20;

/// Empties the calling thread's magazine if it holds blocks of the given manager; true if it
/// held any. The buffer layer's magazine provides it (the magazine parks whole buffers, which
/// this layer knows nothing of), and the manager facade passes it in.
pub(crate) type FlushParked = fn(&ManagerShared) -> bool;

/// State shared by a manager and every buffer it allocated.
pub(crate) struct ManagerShared {
    pub(crate) id: u64,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) unified: bool,
    pub(crate) options: ManagerOptions,
    device_pool: DevicePool,
    host_cache: BlockCache<HostBlock>,
    pub(crate) stats: Arc<StatCounters>,
    pub(crate) diagnostics: Diagnostics,
    /// The allocation trace, when `ManagerOptions::trace` asks for one (the buffers' hot paths
    /// test this field and nothing else when it is `None`).
    pub(crate) trace: Option<Arc<Recorder>>,
    /// Coarse clock advanced by each maintenance pass; cached blocks are stamped with it.
    tick: AtomicU64,
    /// Pinned staging blocks, by size class.
    pinned_cache: BlockCache<Box<dyn PinnedHost>>,
    /// Set once the backend has refused pinned memory, so later staging does not ask again.
    pinned_unavailable: AtomicBool,
    /// Measured transfer overhead and bandwidth, for the engine's batching threshold.
    pub(crate) transfer_tuning: Tuning,
    /// Bumped when threads should hand their magazines back; [`CLOSED`] once the last handle
    /// is gone (see `buffer::magazine`).
    pub(crate) recycle_epoch: AtomicU64,
    /// Bytes a thread's magazine may hold for this manager (0: no magazines).
    pub(crate) magazine_cap: usize,
    /// Empties the calling thread's magazine of this manager's blocks.
    flush_parked: FlushParked,
}

/// Alignment of host and device blocks: a cache line for small blocks, a page from 64 KiB.
fn block_align(size: usize) -> usize {
    if size >= 64 << 10 {
        4096
    } else {
        64
    }
}

impl ManagerShared {
    /// The context of a new manager on `backend`, with `options` already validated.
    pub(crate) fn new(backend: Arc<dyn Backend>, options: ManagerOptions, flush_parked: FlushParked) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let stats = Arc::new(StatCounters::new());
        let live_stats = stats.clone();
        let max = usize::try_from(options.max_pool_bytes).unwrap_or(usize::MAX);
        let trace = options.trace.as_ref().map(|t| Arc::new(Recorder::new(t.capacity, backend.device_label())));
        Arc::new(ManagerShared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            unified: backend.is_unified(),
            device_pool: DevicePool::new(
                backend.clone(),
                stats.clone(),
                options.enable_pooling,
                max,
                options.device_memory_limit,
                if options.expandable_segments { backend.virtual_memory_granularity() } else { None },
            ),
            backend,
            host_cache: BlockCache::new(max),
            diagnostics: Diagnostics::new(
                options.track_allocations,
                Box::new(move || live_stats.active()),
                trace.clone(),
            ),
            trace,
            stats,
            tick: AtomicU64::new(0),
            transfer_tuning: Default::default(),
            pinned_cache: BlockCache::new(max),
            pinned_unavailable: Default::default(),
            recycle_epoch: AtomicU64::new(0),
            // Under a device memory limit, no magazines: blocks parked in another thread's
            // magazine count against the limit but cannot be released to make room.
            // Expandable segments cut blocks to the request, not to its size class, so a parked
            // block could be too small for the next request of its class: no magazines either.
            magazine_cap: if options.enable_pooling
                && options.device_memory_limit.is_none()
                && !options.expandable_segments
            {
                MAX_THREAD_BYTES.min(max / 16)
            } else {
                0
            },
            options,
            flush_parked,
        })
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// A device region of at least `bytes` bytes from the caching allocator (see
    /// `pool::device`): cached regions first, then segments, then the backend; on out-of-memory
    /// the cache is released and the allocation retried once.
    pub(crate) fn acquire_device(&self, bytes: usize) -> Result<DeviceRegion> {
        match self.device_pool.acquire(bytes, self.tick.load(Ordering::Relaxed)) {
            // Blocks parked in this thread's magazine may be what the pool needs; other
            // threads hand theirs back on their next drop. (A limited manager keeps no
            // magazines, so `MemoryLimitExceeded` has nothing to recall.)
            Err(Error::OutOfMemory { .. }) if self.recall_magazines() => {
                self.device_pool.acquire(bytes, self.tick.load(Ordering::Relaxed))
            }
            other => other,
        }
    }

    /// Makes every thread hand its magazine back when it next drops a buffer of this manager,
    /// and empties the calling thread's magazine now; true if that held blocks of this manager.
    pub(crate) fn recall_magazines(&self) -> bool {
        let _ = self.recycle_epoch.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
            (e != CLOSED).then_some(e.wrapping_add(1) % CLOSED)
        });
        (self.flush_parked)(self)
    }

    /// Closes the recycle epoch (the last manager handle is gone): buffers dropped from then on
    /// return their memory to the shared caches, and the calling thread's magazine is emptied.
    pub(crate) fn close(&self) {
        self.recycle_epoch.store(CLOSED, Ordering::Relaxed);
        (self.flush_parked)(self);
    }

    pub(crate) fn release_device(&self, region: DeviceRegion) {
        self.device_pool.release(region, self.tick.load(Ordering::Relaxed));
    }

    /// A zero-initialised-when-fresh host block of at least `bytes` bytes.
    pub(crate) fn acquire_host(&self, bytes: usize) -> Result<HostBlock> {
        let (index, size) = self.round(bytes)?;
        if self.options.enable_pooling {
            if let Some(block) = self.host_cache.take(index) {
                self.stats.pool_hit();
                return Ok(block);
            }
        }
        let block = HostBlock::allocate_zeroed(size, block_align(size))?;
        self.stats.backend_allocated(size);
        Ok(block)
    }

    pub(crate) fn release_host(&self, block: HostBlock) {
        let size = block.size();
        self.cache_or_free(&self.host_cache, size, block);
    }

    /// Keeps `block` (of `size` bytes) in `cache` when pooling is on, its size is a class size
    /// and the cache has room; otherwise it is dropped here (freeing it) and counted as freed.
    fn cache_or_free<B>(&self, cache: &BlockCache<B>, size: usize, block: B) {
        if self.options.enable_pooling {
            if let Some((index, class)) = class_of(size).filter(|&(_, c)| c == size) {
                if cache.put(index, class, block, self.tick.load(Ordering::Relaxed)).is_ok() {
                    return;
                }
            }
        }
        self.stats.backend_freed(size);
    }

    /// A staging block of at least `bytes` bytes: pinned memory from the backend when `pinned`
    /// is asked and the backend has it (cached by size class), pageable host memory otherwise.
    pub(crate) fn acquire_staging(&self, bytes: usize, pinned: bool) -> Result<StagingSlot> {
        if pinned && !self.pinned_unavailable.load(Ordering::Relaxed) {
            let (index, size) = self.round(bytes)?;
            if let Some(p) = self.pinned_cache.take(index) {
                self.stats.pool_hit();
                return Ok(StagingSlot::Pinned(p));
            }
            match self.backend.allocate_pinned(size) {
                Ok(p) => {
                    self.stats.backend_allocated(size);
                    return Ok(StagingSlot::Pinned(p));
                }
                Err(Error::Unsupported { .. }) => self.pinned_unavailable.store(true, Ordering::Relaxed),
                // Out of lockable memory: stage through pageable memory this time.
                Err(_) => {}
            }
        }
        self.acquire_host(bytes).map(StagingSlot::Host)
    }

    pub(crate) fn release_staging(&self, slot: StagingSlot) {
        match slot {
            StagingSlot::Host(b) => self.release_host(b),
            StagingSlot::Pinned(p) => {
                let size = p.bytes().len();
                self.cache_or_free(&self.pinned_cache, size, p);
            }
        }
    }

    fn round(&self, bytes: usize) -> Result<(usize, usize)> {
        // A rounded size above isize::MAX cannot be allocated by anything (Rust's `Layout`
        // rejects it); report it as the overflow it is, not as a bad alignment.
        class_of(bytes).filter(|&(_, size)| size <= isize::MAX as usize).ok_or(Error::LengthOverflow {
            len: bytes,
            element_size: 1,
            type_name: "u8 (rounded to a pool size class)",
        })
    }

    pub(crate) fn record_transfer(&self, direction: Direction, bytes: usize, elapsed: Duration) {
        self.stats.transfer(direction, bytes, elapsed);
    }

    fn release_device_cache(&self, keep: usize, idle_before: u64) -> usize {
        self.device_pool.release_cached(keep, idle_before)
    }

    fn release_host_cache(&self, keep: usize, idle_before: u64) -> usize {
        let blocks = self.host_cache.evict(keep, idle_before);
        let mut released = 0;
        for block in blocks {
            released += block.size();
            self.stats.backend_freed(block.size());
            self.stats.evicted();
        }
        for pinned in self.pinned_cache.evict(keep, idle_before) {
            released += pinned.bytes().len();
            self.stats.backend_freed(pinned.bytes().len());
            self.stats.evicted();
        }
        released
    }

    pub(crate) fn cached_bytes(&self) -> usize {
        self.device_pool.cached_bytes()
            + self.host_cache.cached_bytes()
            + self.pinned_cache.cached_bytes()
            + self.stats.magazine_bytes() as usize
    }

    /// A snapshot of the counters, with the cache and segment figures only this context knows.
    pub(crate) fn statistics(&self) -> MemoryStatistics {
        self.stats.snapshot(self.backend.name(), self.cached_bytes() as u64, self.device_pool.segment_count() as u64)
    }

    /// The device pool's segments and blocks now.
    pub(crate) fn memory_snapshot(&self) -> MemorySnapshot {
        self.device_pool.snapshot(self.stats.magazine_bytes())
    }

    /// Releases every cached block beyond `min_pool_bytes`, however recently cached, after
    /// recalling the magazines; returns the bytes released.
    pub(crate) fn trim(&self) -> usize {
        self.recall_magazines();
        let keep = self.options.min_pool_bytes as usize;
        self.release_device_cache(keep, u64::MAX) + self.release_host_cache(keep, u64::MAX)
    }

    /// One maintenance pass: blocks idle since before the previous pass go, down to the minimum.
    pub(crate) fn maintain(&self) -> usize {
        self.recall_magazines();
        let now = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        let keep = self.options.min_pool_bytes as usize;
        let idle_before = now.saturating_sub(1);
        self.release_device_cache(keep, idle_before) + self.release_host_cache(keep, idle_before)
    }
}

impl Drop for ManagerShared {
    fn drop(&mut self) {
        // The device pool returns its segments when it drops.
        self.release_host_cache(0, u64::MAX);
    }
}
