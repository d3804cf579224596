//! `MemoryManager`: ties a backend, the block caches, statistics, diagnostics and maintenance.

use crate::backend::region::DeviceRegion;
use crate::backend::{cpu::CpuBackend, sim::SimBackend, sim::SimOptions, Backend};
use crate::buffer::UnifiedBuffer;
use crate::diagnostics::Diagnostics;
use crate::element::Element;
use crate::error::{byte_len, Direction, Error, Result};
use crate::host::HostBlock;
use crate::pool::cache::BlockCache;
use crate::pool::device::DevicePool;
use crate::pool::magazine;
use crate::pool::size_class::class_of;
use crate::stats::{MemoryStatistics, StatCounters};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Manager configuration; mirrors the seed's `MemoryManagerOptions`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerOptions {
    /// Cache freed blocks for reuse (default true). Off: every buffer allocates fresh memory.
    pub enable_pooling: bool,
    /// Upper bound on bytes kept in each cache (host and device) (default 1 GiB). Besides,
    /// each thread keeps the blocks of up to 8 small buffers per size class that it dropped
    /// (at most `min(2 MiB, max_pool_bytes / 16)` per thread) for its own next allocations; see
    /// [`MemoryManager::trim_excess`] for how those are reclaimed.
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
}

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
        }
    }
}

impl ManagerOptions {
    fn validate(&self) -> Result<()> {
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
        Ok(())
    }
}

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
    /// Coarse clock advanced by each maintenance pass; cached blocks are stamped with it.
    tick: AtomicU64,
    /// Pinned staging blocks, by size class.
    pinned_cache: BlockCache<Box<dyn crate::backend::PinnedHost>>,
    /// Set once the backend has refused pinned memory, so later staging does not ask again.
    pinned_unavailable: std::sync::atomic::AtomicBool,
    /// Measured transfer overhead and bandwidth, for the engine's batching threshold.
    pub(crate) transfer_tuning: crate::tuning::Tuning,
    /// Bumped when threads should hand their magazines back; [`magazine::CLOSED`] once the
    /// last handle is gone (see `pool::magazine`).
    pub(crate) recycle_epoch: AtomicU64,
    /// Bytes a thread's magazine may hold for this manager (0: no magazines).
    pub(crate) magazine_cap: usize,
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
    fn recall_magazines(&self) -> bool {
        let _ = self.recycle_epoch.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
            (e != magazine::CLOSED).then_some(e.wrapping_add(1) % magazine::CLOSED)
        });
        magazine::flush_current(self)
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
    pub(crate) fn acquire_staging(&self, bytes: usize, pinned: bool) -> Result<crate::pool::staging::StagingSlot> {
        use crate::pool::staging::StagingSlot;
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

    pub(crate) fn release_staging(&self, slot: crate::pool::staging::StagingSlot) {
        use crate::pool::staging::StagingSlot;
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

    /// One maintenance pass: blocks idle since before the previous pass go, down to the minimum.
    fn maintain(&self) -> usize {
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

/// Stops and joins the maintenance thread when the last manager handle goes.
struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Closes the manager's recycle epoch when the last handle is dropped (see `pool::magazine`):
/// buffers dropped from then on return their memory to the shared caches, so the manager is
/// released with its last buffer.
struct LastHandle(Arc<ManagerShared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.recycle_epoch.store(magazine::CLOSED, Ordering::Relaxed);
        magazine::flush_current(&self.0);
    }
}

/// The entry point: allocates buffers on one backend and keeps their pools and statistics.
///
/// Cheap to clone (all clones share one pool). Buffers keep what they need alive, so they may
/// outlive the manager handle; the maintenance thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct MemoryManager {
    pub(crate) shared: Arc<ManagerShared>,
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
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let stats = Arc::new(StatCounters::new());
        let live_stats = stats.clone();
        let max = usize::try_from(options.max_pool_bytes).unwrap_or(usize::MAX);
        let shared = Arc::new(ManagerShared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            unified: backend.is_unified(),
            device_pool: DevicePool::new(
                backend.clone(),
                stats.clone(),
                options.enable_pooling,
                max,
                options.device_memory_limit,
            ),
            backend,
            host_cache: BlockCache::new(max),
            diagnostics: Diagnostics::new(options.track_allocations, Box::new(move || live_stats.active())),
            stats,
            tick: AtomicU64::new(0),
            transfer_tuning: Default::default(),
            pinned_cache: BlockCache::new(max),
            pinned_unavailable: Default::default(),
            recycle_epoch: AtomicU64::new(0),
            // Under a device memory limit, no magazines: blocks parked in another thread's
            // magazine count against the limit but cannot be released to make room.
            magazine_cap: if options.enable_pooling && options.device_memory_limit.is_none() {
                magazine::MAX_THREAD_BYTES.min(max / 16)
            } else {
                0
            },
            options,
        });
        let maintenance = shared.options.maintenance_interval.map(|interval| {
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let weak = Arc::downgrade(&shared);
            let stop2 = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dcmem-maintenance-{}", shared.id))
                .spawn(move || loop {
                    let (lock, cvar) = &*stop2;
                    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (guard, _) = cvar
                        .wait_timeout_while(guard, interval, |stopped| !*stopped)
                        .unwrap_or_else(|p| p.into_inner());
                    if *guard {
                        return;
                    }
                    drop(guard);
                    match weak.upgrade() {
                        Some(shared) => {
                            shared.maintain();
                        }
                        None => return,
                    }
                })
                .ok();
            Arc::new(Maintenance { stop, thread })
        });
        Ok(MemoryManager { _handles: Arc::new(LastHandle(shared.clone())), shared, _maintenance: maintenance })
    }

    /// A manager on the backend named by the `DCMEM_BACKEND` environment variable
    /// (`cpu`, `sim`, `opencl`, `cuda`, `metal`; unset or empty means `cpu`), with
    /// [`ManagerOptions::device_memory_limit`] from `DCMEM_DEVICE_MEMORY_LIMIT` when it is set
    /// (a byte count as [`crate::units::parse_byte_count`] reads it: `1073741824`, `512MiB`,
    /// `2GiB`, `64K`).
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
        Self::with_backend_name(&name, ManagerOptions { device_memory_limit: limit, ..ManagerOptions::default() })
    }

    /// A manager on the backend called `name` (as in `DCMEM_BACKEND`).
    pub fn with_backend_name(name: &str, options: ManagerOptions) -> Result<Self> {
        Self::with_shared_backend(crate::backend::open(name)?, options)
    }

    /// Allocates a buffer of `len` elements. Its contents are unspecified (zero when the memory
    /// is fresh, earlier data when it comes from the pool; use [`MemoryManager::allocate_zeroed`]
    /// or [`UnifiedBuffer::fill`]). Length 0 is a valid empty buffer.
    // Always inlined: a program calls it from many places, and left to the compiler it then
    // stays out of line, which made a small pooled allocate + drop ~0.5 ns (4 %) slower here.
    #[track_caller]
    #[inline(always)]
    pub fn allocate<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        UnifiedBuffer::new(&self.shared, len, bytes, location)
    }

    /// Allocates a buffer that exists only on the device (`DeviceOnly`), for scratch data that
    /// kernels fill; its host part is made on first host access. Contents are unspecified.
    #[track_caller]
    pub fn allocate_device<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let location = std::panic::Location::caller();
        let bytes = byte_len::<T>(len)?;
        UnifiedBuffer::new_device_only(&self.shared, len, bytes, location)
    }

    /// Allocates a buffer of `len` zeroed elements.
    #[track_caller]
    pub fn allocate_zeroed<T: Element>(&self, len: usize) -> Result<UnifiedBuffer<T>> {
        let mut buf = self.allocate::<T>(len)?;
        buf.fill(T::zeroed())?;
        Ok(buf)
    }

    /// Allocates a buffer and copies `data` into it.
    #[track_caller]
    pub fn allocate_from<T: Element>(&self, data: &[T]) -> Result<UnifiedBuffer<T>> {
        let mut buf = self.allocate::<T>(data.len())?;
        buf.copy_from(data)?;
        Ok(buf)
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
        self.shared.stats.snapshot(
            self.shared.backend.name(),
            self.shared.cached_bytes() as u64,
            self.shared.device_pool.segment_count() as u64,
        )
    }

    /// The device pool's segments and blocks now, with totals and a fragmentation measure
    /// (PyTorch's `memory_snapshot`): where device memory goes, and why a request may need a
    /// new segment although `cached_bytes` looks large.
    pub fn memory_snapshot(&self) -> crate::MemorySnapshot {
        self.shared.device_pool.snapshot(self.shared.stats.magazine_bytes())
    }

    /// Starts a new peak: `peak_bytes` becomes the bytes of the buffers alive now. Returns the
    /// peak it replaces. (PyTorch's `reset_peak_memory_stats`, for measuring one phase of a
    /// program.)
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
        self.shared.recall_magazines();
        let keep = self.shared.options.min_pool_bytes as usize;
        Ok((self.shared.release_device_cache(keep, u64::MAX) + self.shared.release_host_cache(keep, u64::MAX)) as u64)
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
}

/// Time a closure, returning its result and the elapsed time (zero when statistics are off).
pub(crate) fn timed<R>(enabled: bool, f: impl FnOnce() -> R) -> (R, Duration) {
    if enabled {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    } else {
        (f(), Duration::ZERO)
    }
}

/// Named cross-process buffers (see [`crate::host::SharedBuffer`]).
impl MemoryManager {
    /// Creates a named buffer of `len` zeroed elements in POSIX shared memory (mode 0600,
    /// created exclusively), which other processes open with [`MemoryManager::open_shared`].
    /// The name is removed when the returned handle drops (unless it is
    /// [`persist`](crate::host::SharedBuffer::persist)ed). Counted in this manager's
    /// statistics while it lives.
    ///
    /// ```
    /// # use dotcompute_memory::*;
    /// # fn main() -> Result<()> {
    /// # if cfg!(miri) || !cfg!(unix) { return Ok(()); }
    /// let mm = MemoryManager::cpu();
    /// let name = format!("dcmem-doc-{}", std::process::id());
    /// let mut shared = mm.allocate_shared::<f32>(&name, 4)?;
    /// shared[0] = 1.5;
    /// // Another process opens it with `mm.open_shared::<f32>(&name)?`. This one has it open
    /// // already, and a second handle would alias `shared`'s `&mut` access:
    /// assert!(matches!(mm.open_shared::<f32>(&name), Err(Error::SharedAlreadyOpen { .. })));
    /// assert!(matches!(mm.open_shared::<u32>(&name), Err(Error::SharedTypeMismatch { .. })));
    /// shared.persist(); // closes the handle, keeps the name
    /// let other = mm.open_shared::<f32>(&name)?;
    /// assert_eq!(other[0], 1.5);
    /// # drop(other);
    /// # SharedBuffer::remove(&name)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Errors: [`Error::SharedName`] (empty, `/`, too long), [`Error::SharedExists`],
    /// [`Error::LengthOverflow`], [`Error::Os`], [`Error::Unsupported`].
    pub fn allocate_shared<T: Element>(&self, name: &str, len: usize) -> Result<crate::host::SharedBuffer<T>> {
        Ok(crate::host::SharedBuffer::<T>::create(name, len)?.with_stats(self.shared.stats.clone()))
    }

    /// Opens the named buffer `name` created by [`MemoryManager::allocate_shared`] (in any
    /// process), after validating its header. A process holds at most one handle to a segment.
    ///
    /// Errors: [`Error::SharedName`], [`Error::SharedNotFound`],
    /// [`Error::SharedTypeMismatch`] (element type or size differ), [`Error::SharedCorrupt`]
    /// (not our header, damaged, or truncated), [`Error::SharedAlreadyOpen`] (this process
    /// has a handle to it: the creator's or an earlier open's), [`Error::Os`],
    /// [`Error::Unsupported`].
    pub fn open_shared<T: Element>(&self, name: &str) -> Result<crate::host::SharedBuffer<T>> {
        Ok(crate::host::SharedBuffer::<T>::open(name)?.with_stats(self.shared.stats.clone()))
    }
}

/// Host buffers with chosen alignment, pages and NUMA node (see [`crate::host::HostAlloc`]).
impl MemoryManager {
    /// Allocates `len` zeroed elements as `alloc` says, counted in this manager's statistics
    /// (active allocations and bytes, peak) until the buffer drops.
    ///
    /// ```
    /// # use dotcompute_memory::*;
    /// # fn main() -> Result<()> {
    /// let mm = MemoryManager::cpu();
    /// let buf = mm.allocate_host::<f32>(&HostAlloc::new().alignment(4096).huge_pages(true), 1 << 20)?;
    /// assert_eq!(mm.statistics().active_allocations, 1);
    /// # drop(buf);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Errors: as [`crate::host::HostAlloc::allocate`].
    pub fn allocate_host<T: Element>(
        &self,
        alloc: &crate::host::HostAlloc,
        len: usize,
    ) -> Result<crate::host::HostBuffer<T>> {
        Ok(alloc.allocate::<T>(len)?.with_stats(self.shared.stats.clone()))
    }
}
