//! `DevicePool`: the caching allocator for backend memory.
//!
//! Two levels, as in PyTorch's CUDA caching allocator with a lock-free front:
//! 1. a lock-free per-size-class cache of whole regions (`BlockCache`): the common hit, a
//!    region freed and asked for again at the same size, takes no lock;
//! 2. behind a mutex, an [`Arena`] that carves regions out of backend segments: requests up to
//!    1 MiB from 2 MiB segments, up to 64 MiB best-fit from 20 MiB (or larger) segments with
//!    splitting and coalescing, and oversize requests in segments of their own that are never
//!    split. Before a new segment, a front-cache region of a class up to twice the request's
//!    size is taken whole.
//!
//! With expandable segments both levels give way to one reserved address range whose blocks a
//! [`SegregatedFit`] cuts to the request, with memory mapped under them granule by granule.
//!
//! On backend out-of-memory the pool empties its front cache into the arena, returns every
//! entirely free segment to the backend and retries once; a second failure reports the request,
//! the device's free memory, what is still cached and the largest free block.

use super::arena::Arena;
use super::cache::BlockCache;
use super::expandable::Expandable;
use super::handed_out::HandedOut;
use super::size_class::{class_of, CLASSES_PER_DOUBLING};
use super::snapshot::{MemorySnapshot, PoolUsage};
use crate::backend::region::{DeviceRegion, Segment};
use crate::backend::{Backend, DeviceMemory};
use crate::error::{Error, Result};
use crate::stats::StatCounters;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Offsets and sizes of regions are multiples of this (CUDA's allocation granularity).
const GRANULE: usize = 256;
/// Requests up to this size are "small" and come from [`SMALL_SEGMENT`]s.
const SMALL_LIMIT: usize = 1 << 20;
const SMALL_SEGMENT: usize = 2 << 20;
/// Requests between 1 MiB and 10 MiB share 20 MiB segments.
const MEDIUM_LIMIT: usize = 10 << 20;
const LARGE_SEGMENT: usize = 20 << 20;
/// Requests above this get a segment of their own that is never split.
const OVERSIZE: usize = 64 << 20;
/// A free remainder is split off only if at least this large.
const MIN_SPLIT_SMALL: usize = 512;
const MIN_SPLIT_LARGE: usize = 1 << 20;

struct ArenaState {
    arena: Arena,
    segments: std::collections::HashMap<u64, Arc<Segment>>,
    next_id: u64,
    /// Bytes of all segments (what this pool holds from the backend).
    held: u64,
    /// Segments by pool, with peaks and totals.
    pools: PoolUsage,
    /// The ids of the small pool's segments.
    small: std::collections::HashSet<u64>,
    /// Expandable mode: the one reserved range the arena carves, and its mapped granules.
    expandable: Option<Expandable>,
}

impl ArenaState {
    /// Bytes free for reuse without asking the backend: free blocks of fixed segments, or in
    /// expandable mode the mapped bytes no block uses.
    fn free_cached(&self) -> usize {
        match &self.expandable {
            Some(x) => (self.held as usize).saturating_sub(x.fit.size() - x.fit.free_bytes()),
            None => self.arena.free_bytes(),
        }
    }

    /// The largest free block served without new memory: in expandable mode, the largest free
    /// stretch of mapped memory (a walk over the blocks, for errors and snapshots only).
    fn largest_free(&self) -> usize {
        match &self.expandable {
            Some(x) => x.largest_free(),
            None => self.arena.largest_free(),
        }
    }
}

/// The caching allocator of one manager. See the module docs.
pub(crate) struct DevicePool {
    backend: Arc<dyn Backend>,
    stats: Arc<StatCounters>,
    pooling: bool,
    max_cached: usize,
    front: BlockCache<DeviceRegion>,
    state: Mutex<ArenaState>,
    /// `ManagerOptions::device_memory_limit`.
    limit: Option<u64>,
    /// Requests refused for lack of memory, and segment allocations retried after releasing
    /// the cache (both only on the slow path).
    out_of_memory_errors: AtomicU64,
    segment_retries: AtomicU64,
    /// Bytes handed out and cached per pool, with peaks (updated on the lock-free path too).
    handed_out: HandedOut,
    /// `ManagerOptions::expandable_segments` (the backend's granularity, checked to exist when
    /// the manager was made).
    expandable: Option<usize>,
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    n.checked_add(to - 1).map(|v| v / to * to)
}

impl DevicePool {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        stats: Arc<StatCounters>,
        pooling: bool,
        max_cached: usize,
        limit: Option<u64>,
        expandable: Option<usize>,
    ) -> Self {
        DevicePool {
            backend,
            stats,
            pooling,
            max_cached,
            front: BlockCache::new(max_cached),
            state: Mutex::new(ArenaState {
                arena: Arena::default(),
                segments: Default::default(),
                next_id: 1,
                held: 0,
                pools: PoolUsage::default(),
                small: Default::default(),
                expandable: None,
            }),
            limit,
            out_of_memory_errors: AtomicU64::new(0),
            segment_retries: AtomicU64::new(0),
            handed_out: HandedOut::new(expandable.is_some(), pooling),
            expandable,
        }
    }

    /// A new segment of `size` bytes from the backend, within the manager's limit (checked
    /// under the arena lock, which every segment allocation and release holds), for a request
    /// of `requested` bytes (which the limit error reports beside `size`).
    fn allocate_segment(&self, st: &ArenaState, size: usize, requested: usize) -> Result<DeviceMemory> {
        if let Some(limit) = self.limit {
            if st.held.saturating_add(size as u64) > limit {
                return Err(Error::MemoryLimitExceeded {
                    backend: self.backend.name(),
                    requested: requested as u64,
                    rounded: size as u64,
                    limit,
                    held: st.held,
                    cached: (self.front.cached_bytes() + st.free_cached()) as u64,
                });
            }
        }
        self.backend.allocate(size, 4096)
    }

    fn lock(&self) -> MutexGuard<'_, ArenaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes cached: whole regions in the front cache plus free blocks in segments.
    pub(crate) fn cached_bytes(&self) -> usize {
        self.front.cached_bytes() + self.lock().free_cached()
    }

    /// A region of at least `bytes` bytes.
    pub(crate) fn acquire(&self, bytes: usize, tick: u64) -> Result<DeviceRegion> {
        let r = self.acquire_region(bytes, tick);
        match &r {
            // With expandable segments the block was counted under the lock.
            Ok(region) if self.expandable.is_none() => self.handed_out.taken(region.segment.small_pool, region.size),
            Ok(_) => {}
            Err(Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. }) => {
                self.out_of_memory_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        r
    }

    fn acquire_region(&self, bytes: usize, tick: u64) -> Result<DeviceRegion> {
        let overflow =
            || Error::LengthOverflow { len: bytes, element_size: 1, type_name: "u8 (rounded to a pool size class)" };
        let (class, class_size) = class_of(bytes).ok_or_else(overflow)?;
        if let Some(granularity) = self.expandable {
            // One range for every size: blocks are cut to the request (in 512-byte steps) and
            // split down to that, with no per-class cache, so no size class rounds them up.
            let size =
                round_up(bytes.max(1), MIN_SPLIT_SMALL).filter(|&s| s <= isize::MAX as usize).ok_or_else(overflow)?;
            let mut st = self.lock();
            return self.acquire_expandable(&mut st, bytes, size, granularity);
        }
        let size = round_up(class_size, GRANULE).filter(|&s| s <= isize::MAX as usize).ok_or_else(overflow)?;
        if self.pooling {
            if let Some(region) = self.front.take(class) {
                self.stats.pool_hit();
                return Ok(region);
            }
        }
        let mut st = self.lock();
        let min_split = if size <= SMALL_LIMIT { MIN_SPLIT_SMALL } else { MIN_SPLIT_LARGE };
        if self.pooling {
            if let Some((seg, off)) = st.arena.alloc(size, min_split) {
                self.stats.pool_hit();
                return Ok(Self::region(&st, seg, off, size, class));
            }
            // Before the pool grows: a cached region of a class up to twice this one's size,
            // idle memory that would otherwise stay parked beside a new segment.
            for c in class + 1..=class + CLASSES_PER_DOUBLING {
                if let Some(region) = self.front.take(c) {
                    self.stats.pool_hit();
                    return Ok(region);
                }
            }
        }
        let (segment_size, mut splittable) = if !self.pooling || self.max_cached < LARGE_SEGMENT {
            // Without pooling, or with a cache bound below a segment (whose free remainder the
            // bound could not cover), every region is a backend allocation of its own.
            (size, false)
        } else if size <= SMALL_LIMIT {
            (SMALL_SEGMENT, true)
        } else if size <= MEDIUM_LIMIT {
            (LARGE_SEGMENT, true)
        } else if size <= OVERSIZE {
            (round_up(size, SMALL_SEGMENT).ok_or_else(overflow)?, true)
        } else {
            (round_up(size, SMALL_SEGMENT).ok_or_else(overflow)?, false)
        };
        let memory = match self.allocate_segment(&st, segment_size, bytes) {
            Ok(m) => m,
            Err(Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. }) => {
                self.segment_retries.fetch_add(1, Ordering::Relaxed);
                drop(st);
                self.release_cached(0, u64::MAX);
                st = self.lock();
                // Releasing the front cache coalesced regions in the arena: one may fit now.
                if self.pooling {
                    if let Some((seg, off)) = st.arena.alloc(size, min_split) {
                        self.stats.pool_hit();
                        return Ok(Self::region(&st, seg, off, size, class));
                    }
                }
                // A device too small for a whole segment may still fit the request itself.
                let retry = match self.allocate_segment(&st, segment_size, bytes) {
                    Err(Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. }) if segment_size > size => {
                        splittable = false;
                        self.allocate_segment(&st, size, bytes)
                    }
                    other => other,
                };
                match retry {
                    Ok(m) => m,
                    Err(Error::OutOfMemory { backend, free, .. }) => {
                        return Err(Error::OutOfMemory {
                            backend,
                            requested: bytes as u64,
                            rounded: size as u64,
                            free,
                            cached: (self.front.cached_bytes() + st.free_cached()) as u64,
                            largest_free_block: st.largest_free() as u64,
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        self.stats.backend_allocated(memory.size());
        let id = st.next_id;
        st.next_id += 1;
        let seg_size = memory.size();
        st.held += seg_size as u64;
        let small = size <= SMALL_LIMIT && splittable;
        st.pools.segment_added(small, seg_size as u64);
        if small {
            st.small.insert(id);
        }
        self.handed_out.reserved(&st.pools);
        let device_on_host = self.backend.device_ptr_on_host(&memory);
        st.segments.insert(id, Arc::new(Segment { memory, id, device_on_host, small_pool: small }));
        st.arena.add_segment(id, seg_size, splittable, tick);
        let (seg, off) = st.arena.alloc(size, min_split).ok_or_else(|| Error::InvalidHandle {
            backend: "pool",
            reason: format!("internal inconsistency: a fresh segment of {seg_size} bytes did not fit {size}"),
        })?;
        Ok(Self::region(&st, seg, off, size, class))
    }

    /// Expandable mode: a block of the reservation (made on first use), with memory mapped
    /// under it; on out of memory, the mapped memory no block uses is unmapped and the request
    /// retried once. (This mode keeps no front cache: blocks are cut to the request, not to a
    /// size class.)
    fn acquire_expandable(
        &self,
        st: &mut ArenaState,
        bytes: usize,
        size: usize,
        granularity: usize,
    ) -> Result<DeviceRegion> {
        if st.expandable.is_none() {
            self.reserve(st, granularity)?;
        }
        let mut retried = false;
        loop {
            let fit = st.expandable.as_mut().and_then(|x| x.fit.alloc(size));
            let r = match fit {
                Some((slot, offset)) => match self.map_under(st, offset, size) {
                    Ok(()) => {
                        self.handed_out.taken(false, size);
                        let x = st.expandable.as_ref().expect("reserved above");
                        return Ok(DeviceRegion { segment: x.segment.clone(), offset, size, class: slot as usize });
                    }
                    Err(e) => {
                        if let Some(x) = st.expandable.as_mut() {
                            x.fit.free(slot);
                        }
                        Err(e)
                    }
                },
                // No free stretch of the reserved range holds the request.
                None => Err(Error::OutOfMemory {
                    backend: self.backend.name(),
                    requested: bytes as u64,
                    rounded: size as u64,
                    free: self.backend.memory_info().free,
                    cached: (self.front.cached_bytes() + st.free_cached()) as u64,
                    largest_free_block: st.expandable.as_ref().map_or(0, |x| x.fit.largest_free()) as u64,
                }),
            };
            match r {
                Err(Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. }) if !retried => {
                    retried = true;
                    self.segment_retries.fetch_add(1, Ordering::Relaxed);
                    self.unmap_unused(st, 0, u64::MAX);
                }
                other => return other,
            }
        }
    }

    /// Reserves the address range expandable segments grow in: the device's memory (the
    /// manager's limit applies to what is mapped).
    fn reserve(&self, st: &mut ArenaState, granularity: usize) -> Result<()> {
        const MAX_RESERVATION: u64 = 1 << 40;
        let total = self.backend.memory_info().total.min(MAX_RESERVATION);
        let size = round_up((total as usize).max(granularity), granularity).ok_or(Error::LengthOverflow {
            len: total as usize,
            element_size: 1,
            type_name: "u8 (device memory rounded to the mapping granularity)",
        })?;
        let memory = self.backend.reserve_address_space(size)?;
        let size = memory.size();
        let id = st.next_id;
        st.next_id += 1;
        let device_on_host = self.backend.device_ptr_on_host(&memory);
        let segment = Arc::new(Segment { memory, id, device_on_host, small_pool: false });
        st.expandable = Some(Expandable::new(segment, size, granularity, MIN_SPLIT_SMALL));
        Ok(())
    }

    /// Maps memory under `offset..offset + len` of the reservation where none is, within the
    /// manager's limit, and counts the block as a user of each granule. On failure nothing
    /// stays mapped that this call mapped.
    fn map_under(&self, st: &mut ArenaState, offset: usize, len: usize) -> Result<()> {
        let cached = (self.front.cached_bytes() + st.free_cached()) as u64;
        let ArenaState { expandable, held, pools, .. } = st;
        let Some(x) = expandable.as_mut() else { return Ok(()) };
        let g = x.granularity;
        let (first, last) = (offset / g, (offset + len.max(1) - 1) / g);
        // Granules that are mapped and unused come out of the idle cache.
        let reused = (first..=last).filter(|&k| x.mapped[k] && x.users[k] == 0).count();
        if x.mapped[first..=last].iter().all(|&m| m) {
            x.idle = x.idle.saturating_sub(reused * g);
            x.users[first..=last].iter_mut().for_each(|u| *u += 1);
            return Ok(());
        }
        let segment = x.segment.clone();
        let memory = &segment.memory;
        let mut mapped_now = Vec::new();
        let mut k = first;
        let mut failed = None;
        while k <= last {
            if x.mapped[k] {
                k += 1;
                continue;
            }
            let start = k;
            while k <= last && !x.mapped[k] {
                k += 1;
            }
            let run = (k - start) * g;
            if let Some(limit) = self.limit {
                if held.saturating_add(run as u64) > limit {
                    failed = Some(Error::MemoryLimitExceeded {
                        backend: self.backend.name(),
                        requested: len as u64,
                        rounded: run as u64,
                        limit,
                        held: *held,
                        cached,
                    });
                    break;
                }
            }
            if let Err(e) = self.backend.map_memory(memory, start * g, run) {
                failed = Some(e);
                break;
            }
            mapped_now.push((start, k));
            x.mapped[start..k].fill(true);
            *held += run as u64;
            self.stats.backend_allocated(run);
            for _ in start..k {
                pools.segment_added(false, g as u64);
            }
            self.handed_out.reserved(pools);
        }
        if let Some(e) = failed {
            for (a, b) in mapped_now {
                self.unmap_granules(x, memory, held, pools, a, b);
            }
            return Err(e);
        }
        x.idle = x.idle.saturating_sub(reused * g);
        x.users[first..=last].iter_mut().for_each(|u| *u += 1);
        Ok(())
    }

    /// Unmaps granules `a..b` of the reservation and takes them off the books (held bytes,
    /// statistics, pool usage); false, with nothing changed, when the backend refuses.
    fn unmap_granules(
        &self,
        x: &mut Expandable,
        memory: &DeviceMemory,
        held: &mut u64,
        pools: &mut PoolUsage,
        a: usize,
        b: usize,
    ) -> bool {
        let g = x.granularity;
        if self.backend.unmap_memory(memory, a * g, (b - a) * g).is_err() {
            return false;
        }
        x.mapped[a..b].fill(false);
        *held -= ((b - a) * g) as u64;
        self.stats.backend_freed((b - a) * g);
        for _ in a..b {
            pools.segment_removed(false, g as u64);
        }
        self.handed_out.reserved(pools);
        true
    }

    /// Unmaps granules of the reservation that no block uses and that were freed before the
    /// tick `idle_before`, until at most `keep` bytes stay cached; returns the bytes unmapped.
    fn unmap_unused(&self, st: &mut ArenaState, keep: usize, idle_before: u64) -> usize {
        let mut cached = self.front.cached_bytes() + st.free_cached();
        let ArenaState { expandable, held, pools, .. } = st;
        let Some(x) = expandable.as_mut() else { return 0 };
        let segment = x.segment.clone();
        let memory = &segment.memory;
        let g = x.granularity;
        let mut released = 0;
        for k in 0..x.mapped.len() {
            // `idle` is the bytes of mapped granules no block uses: none left, nothing to find.
            if cached <= keep || x.idle == 0 {
                break;
            }
            let idle = x.mapped[k] && x.users[k] == 0 && x.freed_at[k] < idle_before;
            if idle && self.unmap_granules(x, memory, held, pools, k, k + 1) {
                x.idle = x.idle.saturating_sub(g);
                cached = cached.saturating_sub(g);
                released += g;
                if self.pooling {
                    self.stats.evicted();
                }
            }
        }
        released
    }

    fn region(st: &ArenaState, seg: u64, offset: usize, size: usize, class: usize) -> DeviceRegion {
        let segment = st.segments[&seg].clone();
        let size = st.arena.block_size(seg, offset).unwrap_or(size);
        DeviceRegion { segment, offset, size, class }
    }

    /// Takes a region back: into the front cache when pooling and under the bound, else into
    /// the arena (coalescing), returning empty segments when over the bound or not pooling.
    pub(crate) fn release(&self, region: DeviceRegion, tick: u64) {
        // Expandable segments count the return under the lock, in `free_into_arena`.
        if self.expandable.is_none() {
            self.handed_out.returned(region.segment.small_pool, region.size);
        }
        let region = if self.pooling && self.expandable.is_none() {
            match self.front.put(region.class, region.size, region, tick) {
                Ok(()) => return,
                Err(r) => r,
            }
        } else {
            region
        };
        let mut st = self.lock();
        self.free_into_arena(&mut st, region, tick);
        let over = !self.pooling || self.front.cached_bytes() + st.free_cached() > self.max_cached;
        if over {
            self.release_empty_segments(&mut st, if self.pooling { self.max_cached } else { 0 }, u64::MAX);
        }
    }

    fn free_into_arena(&self, st: &mut ArenaState, region: DeviceRegion, tick: u64) {
        let (seg, off) = (region.segment.id, region.offset);
        let ArenaState { expandable, arena, held, pools, .. } = st;
        let Some(x) = expandable.as_mut().filter(|x| x.segment.id == seg) else {
            drop(region);
            // A region not known to the arena would be a bug; it is dropped rather than panicking.
            let _ = arena.free(seg, off, tick);
            return;
        };
        // Every hand-out and return of this mode is counted under the lock.
        self.handed_out.returned(false, region.size);
        let slot = region.class as u32;
        // A block not known to the range would be a bug; it is dropped rather than panicking.
        let Some((_, len)) = x.fit.block(slot).filter(|&(o, _)| o == off) else { return };
        drop(region);
        x.fit.free(slot);
        let g = x.granularity;
        let (first, last) = (off / g, (off + len.max(1) - 1) / g);
        x.users[first..=last].iter_mut().for_each(|u| *u = u.saturating_sub(1));
        for k in first..=last {
            if x.users[k] > 0 || !x.mapped[k] {
                continue;
            }
            // Without pooling nothing is cached: the granule is unmapped at once.
            if !self.pooling {
                let segment = x.segment.clone();
                if self.unmap_granules(x, &segment.memory, held, pools, k, k + 1) {
                    continue;
                }
            }
            x.idle += g;
            x.freed_at[k] = tick;
        }
    }

    /// Returns entirely free segments idle since before `idle_before` to the backend until at
    /// most `keep` bytes stay cached. Returns the bytes released.
    fn release_empty_segments(&self, st: &mut ArenaState, keep: usize, idle_before: u64) -> usize {
        let mut released = self.unmap_unused(st, keep, idle_before);
        for (id, _) in st.arena.empty_segments(idle_before) {
            if self.front.cached_bytes() + st.free_cached() <= keep {
                break;
            }
            let Some(segment) = st.segments.remove(&id) else { continue };
            match Arc::try_unwrap(segment) {
                Ok(segment) => {
                    st.arena.remove_segment(id);
                    let memory: DeviceMemory = segment.memory;
                    released += memory.size();
                    st.held -= memory.size() as u64;
                    let small = st.small.remove(&id);
                    st.pools.segment_removed(small, memory.size() as u64);
                    self.handed_out.reserved(&st.pools);
                    self.stats.backend_freed(memory.size());
                    if self.pooling {
                        self.stats.evicted();
                    }
                    let _ = self.backend.free(memory);
                }
                // Still referenced (cannot happen for an empty segment): keep it.
                Err(segment) => {
                    st.segments.insert(id, segment);
                }
            }
        }
        released
    }

    /// Moves front-cache regions idle since before `idle_before` into the arena, then returns
    /// empty segments to the backend, until at most `keep` bytes stay cached.
    pub(crate) fn release_cached(&self, keep: usize, idle_before: u64) -> usize {
        let regions = self.front.evict(0, idle_before);
        let mut st = self.lock();
        for r in regions {
            // Idle since before `idle_before`, so stamp them as such.
            self.free_into_arena(&mut st, r, idle_before.saturating_sub(1));
        }
        self.release_empty_segments(&mut st, keep, idle_before)
    }

    /// The segments and their blocks, with the totals of [`MemorySnapshot`] (`magazine_bytes`:
    /// what the manager's magazines hold).
    pub(crate) fn snapshot(&self, magazine_bytes: u64) -> MemorySnapshot {
        let st = self.lock();
        let mut segments = st.arena.snapshot();
        for s in &mut segments {
            s.small_pool = st.small.contains(&s.id);
        }
        if let Some(x) = &st.expandable {
            segments.extend(x.mapped_stretches());
            segments.sort_by_key(|s| std::cmp::Reverse(s.size));
        }
        let free = st.free_cached() as u64;
        #[allow(deprecated)] // `reserved_bytes` is filled until it is removed
        MemorySnapshot {
            backend: self.backend.name().to_string(),
            device_reserved_bytes: st.held,
            reserved_bytes: st.held,
            in_use_bytes: st.held - free,
            free_bytes: free,
            front_cached_bytes: self.front.cached_bytes() as u64,
            magazine_bytes,
            largest_free_block: st.largest_free() as u64,
            pools: {
                let mut pools = st.pools;
                self.handed_out.fill(&mut pools);
                pools
            },
            out_of_memory_errors: self.out_of_memory_errors.load(Ordering::Relaxed),
            segment_retries: self.segment_retries.load(Ordering::Relaxed),
            segments,
        }
    }

    /// Segments currently held (for diagnostics).
    pub(crate) fn segment_count(&self) -> usize {
        let st = self.lock();
        st.arena.segment_count() + usize::from(st.expandable.is_some())
    }
}

impl Drop for DevicePool {
    fn drop(&mut self) {
        self.release_cached(0, u64::MAX);
        // Every block is back (no region outlives the pool), so the reservation is unused.
        let mut st = self.lock();
        if let Some(x) = st.expandable.take() {
            if let Ok(segment) = Arc::try_unwrap(x.segment) {
                let _ = self.backend.free(segment.memory);
            }
        }
    }
}
