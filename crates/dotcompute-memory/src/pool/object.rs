//! `ObjectPool<T>`: reusable objects behind a guard, with per-thread caches in front of a shared
//! lock-free queue.
//!
//! ```text
//!   thread A                    thread B                 maintenance (thread or maintain())
//!  ┌───────────────┐          ┌───────────────┐         evicts idle objects from the shared
//!  │ LIFO stack    │          │ LIFO stack    │         tier, publishes a tick that owners
//!  │ ≤ cap objects │          │ ≤ cap objects │         use to trim their own stacks
//!  └──────┬────────┘          └──────┬────────┘
//!         │ whole batches of cap/2 (refill when empty, spill when full)
//!  ┌──────┴──────────────────────────┴────────┐
//!  │ shared tier: SegQueue of batches (FIFO)  │  + budget: free reservations (≤ max_size)
//!  └──────────────────────────────────────────┘
//! ```
//!
//! # Algorithm
//!
//! The per-thread tier is a *magazine* layer (Bonwick & Adams, "Magazines and Vmem", USENIX
//! 2001): each thread keeps a small LIFO stack of idle objects in memory only that thread
//! touches (a [`thread_local::ThreadLocal`] slot owned by the pool), and moves objects to and
//! from the shared tier (the "depot", a `crossbeam_queue::SegQueue` of full magazines) in
//! batches of half its capacity, one queue operation per batch. A get/return pair that stays
//! within the thread's stack performs no atomic read-modify-write, takes no timestamp and bumps
//! no shared counter: statistics live in per-thread counters written only by their thread (a
//! relaxed load and store, not a `fetch_add`) and summed when a snapshot is taken.
//!
//! # The `max_size` bound: reservations
//!
//! `max_size` bounds the idle objects of the whole pool, thread stacks included, exactly. The
//! pool keeps a budget of free *reservations*; a thread stack may hold as many objects as it has
//! reserved (its quota, at most its capacity), and takes reservations from the budget in batches,
//! with one compare-and-swap. Objects in the shared tier carry their reservation with them. The
//! invariant, checked by the loom model in `tests/loom_pool.rs`, is
//!
//! `budget + Σ thread quotas + shared tier length == max_size`, and `objects ≤ quota` per thread,
//!
//! so idle objects never exceed `max_size`. An object returned when no reservation is left is
//! dropped and counted in `dropped_full`. Reservations a thread holds but does not fill (about
//! 1.5 × batch at most, and none after a maintenance pass) are not usable by other threads:
//! with several threads and a tiny `max_size`, set a small `thread_cache` (0 disables the
//! per-thread tier).
//!
//! # Eviction without timestamps
//!
//! Returned objects are stamped with the pool's *tick*, a counter that each maintenance pass
//! increments (one atomic load per get or return, no clock read). A pass remembers when each
//! tick began; an object stamped `s` was returned before tick `s + 1` began, so once that start
//! is at least `idle_time` in the past the object has certainly been idle that long. A pass
//! evicts such objects from the shared tier (least recently returned first) and publishes the
//! cut-off tick; each thread trims its own stack the next time it uses the pool. Eviction never
//! takes the pool below `min_size` idle objects (counted at the time of the pass). Precision is
//! one maintenance interval: an object idle for `idle_time + interval` is evicted at the next
//! pass, one idle for less than `idle_time` never is.
//!
//! # Threads that exit, pools that drop
//!
//! Every object the pool creates is dropped exactly once: by its holder (after
//! [`Pooled::detach`]), by the pool when it is dropped (thread stacks and shared tier alike; the
//! thread slots are owned by the pool, not by the threads), or by eviction or validation. A
//! thread that exits leaves its stack (at most `thread_cache` objects) in its slot; the next
//! thread that gets the same slot uses them, and the pool drops them at the latest when it is
//! dropped. Call [`ObjectPool::flush_thread_cache`] before a worker thread exits to hand its
//! objects to the other threads instead.

use self::sync::{AtomicU64, AtomicUsize, Ordering, Queue};
use crate::error::{Error, Result};
use crate::thread_exit;
use crossbeam_utils::CachePadded;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicU64 as CounterCell;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// Atomics and the shared queue, swapped for loom's under `--cfg loom`.
mod sync {
    #[cfg(loom)]
    pub(super) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    #[cfg(not(loom))]
    pub(super) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// The shared tier: an unbounded MPMC FIFO queue (the reservation budget bounds it).
    #[cfg(not(loom))]
    pub(super) struct Queue<T>(crossbeam_queue::SegQueue<T>);

    #[cfg(not(loom))]
    impl<T> Queue<T> {
        pub(super) fn new() -> Self {
            Queue(crossbeam_queue::SegQueue::new())
        }
        #[inline]
        pub(super) fn push(&self, value: T) {
            self.0.push(value)
        }
        #[inline]
        pub(super) fn pop(&self) -> Option<T> {
            self.0.pop()
        }
        pub(super) fn len(&self) -> usize {
            self.0.len()
        }
    }

    /// Loom cannot see inside crossbeam, so the model uses a loom mutex around a deque: the
    /// model checks our protocol (reservations, hand-off, eviction), not crossbeam's queue.
    #[cfg(loom)]
    pub(super) struct Queue<T>(loom::sync::Mutex<std::collections::VecDeque<T>>);

    #[cfg(loom)]
    impl<T> Queue<T> {
        pub(super) fn new() -> Self {
            Queue(loom::sync::Mutex::new(std::collections::VecDeque::new()))
        }
        pub(super) fn push(&self, value: T) {
            self.0.lock().unwrap().push_back(value)
        }
        pub(super) fn pop(&self) -> Option<T> {
            self.0.lock().unwrap().pop_front()
        }
        pub(super) fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }
}

/// Default `max_size`.
pub const DEFAULT_MAX_SIZE: usize = 1024;
/// Default per-thread cache capacity.
pub const DEFAULT_THREAD_CACHE: usize = 16;
/// Largest per-thread cache capacity: a larger [`ObjectPoolBuilder::thread_cache`] is clamped
/// to it. A thread's stack moves objects to and from the shared tier in batches of half its
/// capacity, so a larger stack would only hold more reservations away from other threads.
pub const MAX_THREAD_CACHE: usize = 1024;

/// When idle objects are dropped by maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EvictionPolicy {
    /// Idle objects stay until the pool is dropped (or `max_size` is reached on return).
    #[default]
    None,
    /// Objects idle for at least this long are dropped by maintenance, least recently returned
    /// first, down to `min_size`.
    IdleTime(Duration),
}

/// An idle object and the tick it was returned in.
struct Idle<T> {
    obj: T,
    stamp: u64,
}

/// The shared tier: batches of idle objects (each object carrying its reservation) in an MPMC
/// queue, so a spill or refill of a whole batch is one queue operation; plus their total count.
struct Tier<T> {
    batches: Queue<Vec<Idle<T>>>,
    len: CachePadded<AtomicUsize>,
}

impl<T> Tier<T> {
    fn new() -> Self {
        Tier { batches: Queue::new(), len: CachePadded::new(AtomicUsize::new(0)) }
    }

    fn push(&self, batch: Vec<Idle<T>>) {
        if !batch.is_empty() {
            // Counted before it becomes visible, so a popper never subtracts first.
            self.len.fetch_add(batch.len(), Ordering::Relaxed);
            self.batches.push(batch);
        }
    }

    fn pop(&self) -> Option<Vec<Idle<T>>> {
        let batch = self.batches.pop()?;
        self.len.fetch_sub(batch.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// Objects in the tier.
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// One thread's stack. Only its owner thread touches it.
struct Local<T> {
    items: Vec<Idle<T>>,
    /// An empty vector kept for the next spill.
    spare: Vec<Idle<T>>,
    /// Reservations held: `items.len() <= quota <= cap`.
    quota: usize,
    /// The last maintenance tick this thread acted on.
    seen_tick: u64,
}

impl<T> Local<T> {
    /// An empty stack. Its vectors grow on use (to at most the thread-cache capacity), so a
    /// thread that caches little allocates little.
    fn new() -> Self {
        Local { items: Vec::new(), spare: Vec::new(), quota: 0, seen_tick: 0 }
    }
}

/// Maintenance state read by every thread: its own cache lines, written once per pass.
struct Clock {
    tick: AtomicU64,
    /// Objects stamped before this tick are evictable.
    cut: AtomicU64,
    /// How many more objects threads may evict from their stacks this pass (keeps `min_size`).
    allowance: AtomicUsize,
}

/// When each tick began, for the ticks an eviction decision may still need.
struct History {
    last: u64,
    starts: VecDeque<(u64, Instant)>,
}

/// The protocol shared by all threads (everything except the thread slots and user hooks).
struct Shared<T> {
    global: Tier<T>,
    budget: CachePadded<AtomicUsize>,
    clock: CachePadded<Clock>,
    cap: usize,
    batch: usize,
    /// More than this many unfilled reservations after a get are given back.
    shed_at: usize,
    max_size: usize,
    min_size: usize,
    idle_time: Option<Duration>,
    history: Mutex<History>,
    registry: Mutex<Vec<Arc<CachePadded<Counters>>>>,
    /// Counters of threads that cannot have a slot (exiting: see `crate::thread_exit`),
    /// updated with read-modify-writes since several threads may use them. In `registry`.
    unslotted: Arc<CachePadded<Counters>>,
    prewarmed: u64,
    evicted: CachePadded<CounterCell>,
}

fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    // A panic in a user hook cannot leave these plain data structures inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T> Shared<T> {
    /// The shared state of a pool whose idle objects start as `prewarm` (their number is the
    /// pool's `min_size`). Nothing is allocated in proportion to `max_size` or `thread_cache`:
    /// the thread-cache capacity is clamped to [`MAX_THREAD_CACHE`], and the prewarmed objects
    /// are moved into batches as they come.
    fn new(
        max_size: usize,
        thread_cache: usize,
        idle_time: Option<Duration>,
        prewarm: impl Iterator<Item = T>,
    ) -> Self {
        let cap = thread_cache.min(max_size).min(MAX_THREAD_CACHE);
        let batch = (cap / 2).max(1);
        let global = Tier::new();
        let mut min_size = 0;
        let mut next = Vec::new();
        for obj in prewarm {
            if next.is_empty() {
                next.reserve_exact(batch);
            }
            next.push(Idle { obj, stamp: 0 });
            min_size += 1;
            if next.len() == batch {
                global.push(std::mem::take(&mut next));
            }
        }
        global.push(next);
        let unslotted = Arc::new(CachePadded::new(Counters::default()));
        Shared {
            global,
            budget: CachePadded::new(AtomicUsize::new(max_size - min_size)),
            clock: CachePadded::new(Clock {
                tick: AtomicU64::new(0),
                cut: AtomicU64::new(0),
                allowance: AtomicUsize::new(0),
            }),
            cap,
            batch,
            shed_at: batch + batch / 2,
            max_size,
            min_size,
            idle_time,
            history: Mutex::new(History { last: 0, starts: VecDeque::from([(0, Instant::now())]) }),
            registry: Mutex::new(vec![unslotted.clone()]),
            unslotted,
            prewarmed: min_size as u64,
            evicted: CachePadded::new(CounterCell::new(0)),
        }
    }

    /// Takes up to `want` reservations from the budget; returns how many it got.
    fn reserve(&self, want: usize) -> usize {
        let mut current = self.budget.load(Ordering::Relaxed);
        loop {
            let take = current.min(want);
            if take == 0 {
                return 0;
            }
            match self.budget.compare_exchange_weak(current, current - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => current = now,
            }
        }
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.budget.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Takes up to `want` from this pass's thread-eviction allowance.
    fn take_allowance(&self, want: usize) -> usize {
        let allowance = &self.clock.allowance;
        let mut current = allowance.load(Ordering::Relaxed);
        loop {
            let take = current.min(want);
            if take == 0 {
                return 0;
            }
            match allowance.compare_exchange_weak(current, current - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => current = now,
            }
        }
    }

    /// The common get: the tick is unchanged and the stack has an object whose removal leaves
    /// few enough spare reservations. `None` means "take the general path", not "empty".
    #[inline]
    fn take_fast(&self, local: &mut Local<T>) -> Option<T> {
        if self.clock.tick.load(Ordering::Acquire) != local.seen_tick || local.quota - local.items.len() >= self.shed_at
        {
            return None;
        }
        local.items.pop().map(|idle| idle.obj)
    }

    /// The common return: the tick is unchanged and a reservation is free.
    #[inline]
    fn put_fast(&self, local: &mut Local<T>, obj: T) -> Result<(), T> {
        let tick = self.clock.tick.load(Ordering::Acquire);
        if tick != local.seen_tick || local.items.len() >= local.quota {
            return Err(obj);
        }
        local.items.push(Idle { obj, stamp: tick });
        Ok(())
    }

    /// An idle object for the owner of `local`, or `None` (the caller creates one).
    /// Stale objects the owner evicts on the way are pushed to `victims`.
    fn owner_take(&self, local: &mut Local<T>, victims: &mut Vec<T>) -> Option<T> {
        let tick = self.clock.tick.load(Ordering::Acquire);
        if tick != local.seen_tick {
            self.sync_tick(local, tick, victims);
        }
        match local.items.pop() {
            Some(idle) => {
                if local.quota - local.items.len() > self.shed_at {
                    self.shed(local);
                }
                Some(idle.obj)
            }
            None => self.refill(local),
        }
    }

    /// Offers `obj` to the owner's stack; gives it back when the pool already holds `max_size`.
    fn owner_put(&self, local: &mut Local<T>, obj: T, victims: &mut Vec<T>) -> Result<(), T> {
        let tick = self.clock.tick.load(Ordering::Acquire);
        if tick != local.seen_tick {
            self.sync_tick(local, tick, victims);
        }
        if local.items.len() < local.quota {
            local.items.push(Idle { obj, stamp: tick });
            return Ok(());
        }
        self.put_slow(local, obj, tick)
    }

    /// Keeps at most `batch` unfilled reservations.
    #[cold]
    fn shed(&self, local: &mut Local<T>) {
        let spare = local.quota - local.items.len();
        let give = spare - self.batch;
        local.quota -= give;
        self.release(give);
    }

    /// The stack is empty: move a batch from the shared tier (with its reservations).
    #[cold]
    fn refill(&self, local: &mut Local<T>) -> Option<T> {
        if self.cap == 0 {
            return self.take_direct();
        }
        let mut batch = self.global.pop()?;
        // Batches hold at most `cap` objects; give back unfilled reservations that would take
        // the stack past its capacity.
        let over = (local.quota + batch.len()).saturating_sub(self.cap);
        local.quota -= over;
        self.release(over);
        local.quota += batch.len();
        local.items.append(&mut batch);
        if local.spare.capacity() == 0 {
            local.spare = batch;
        }
        local.items.pop().map(|idle| idle.obj)
    }

    #[cold]
    fn put_slow(&self, local: &mut Local<T>, obj: T, stamp: u64) -> Result<(), T> {
        if self.cap == 0 {
            return self.put_direct(obj, stamp);
        }
        if local.items.len() >= self.cap {
            // Full: spill the oldest batch to the shared tier; their reservations go with them.
            let n = self.batch.min(local.items.len());
            let mut out = std::mem::take(&mut local.spare);
            out.extend(local.items.drain(..n));
            local.quota -= n;
            self.global.push(out);
        }
        if local.items.len() >= local.quota {
            local.quota += self.reserve((self.cap - local.quota).min(self.batch));
        }
        if local.items.len() < local.quota {
            local.items.push(Idle { obj, stamp });
            Ok(())
        } else {
            Err(obj)
        }
    }

    /// Shared tier only (no thread cache, or the thread's slot is busy).
    fn take_direct(&self) -> Option<T> {
        let mut batch = self.global.pop()?;
        let idle = batch.pop();
        self.global.push(batch);
        let idle = idle?;
        self.release(1);
        Some(idle.obj)
    }

    fn put_direct(&self, obj: T, stamp: u64) -> Result<(), T> {
        if self.reserve(1) == 1 {
            self.global.push(vec![Idle { obj, stamp }]);
            Ok(())
        } else {
            Err(obj)
        }
    }

    /// The owner's side of a maintenance pass: give back unfilled reservations and evict stale
    /// objects from its own stack (within the pass's allowance).
    #[cold]
    fn sync_tick(&self, local: &mut Local<T>, tick: u64, victims: &mut Vec<T>) {
        local.seen_tick = tick;
        let spare = local.quota - local.items.len();
        local.quota -= spare;
        self.release(spare);
        if self.idle_time.is_none() {
            return;
        }
        let cut = self.clock.cut.load(Ordering::Relaxed);
        let stale = local.items.iter().filter(|idle| idle.stamp < cut).count();
        if stale == 0 {
            return;
        }
        let mut evict = self.take_allowance(stale);
        let taken = evict;
        // Oldest first: the bottom of the stack.
        let mut i = 0;
        while evict > 0 && i < local.items.len() {
            if local.items[i].stamp < cut {
                victims.push(local.items.remove(i).obj);
                evict -= 1;
            } else {
                i += 1;
            }
        }
        local.quota -= taken;
        self.release(taken);
    }

    /// Moves every object of `local` to the shared tier and gives back its spare reservations.
    fn flush(&self, local: &mut Local<T>) {
        let spare = local.quota - local.items.len();
        let mut out = std::mem::take(&mut local.spare);
        out.append(&mut local.items);
        local.quota = 0;
        self.global.push(out);
        self.release(spare);
    }

    /// One maintenance pass; `thread_cached` is the number of objects in thread stacks. Returns
    /// the objects evicted from the shared tier, for the caller to drop.
    fn maintain(&self, thread_cached: usize) -> Vec<T> {
        let mut history = lock(&self.history);
        let now = Instant::now();
        let tick = history.last + 1;
        history.last = tick;
        let mut cut = 0;
        if let Some(idle) = self.idle_time {
            history.starts.push_back((tick, now));
            if let Some(limit) = now.checked_sub(idle) {
                // The newest tick that began at least `idle` ago; older entries are not needed.
                if let Some(p) = history.starts.iter().rposition(|&(_, start)| start <= limit) {
                    cut = history.starts[p].0;
                    history.starts.drain(..p);
                }
            }
        }
        let mut allowed = (self.global.len() + thread_cached).saturating_sub(self.min_size);
        let mut victims = Vec::new();
        if cut > 0 {
            // Each batch present now is looked at once (oldest first); stale objects go, within
            // the allowance, and the rest of the batch goes back.
            for _ in 0..self.global.batches.len() {
                if allowed == 0 {
                    break;
                }
                let Some(mut batch) = self.global.pop() else { break };
                let mut i = 0;
                while allowed > 0 && i < batch.len() {
                    if batch[i].stamp < cut {
                        victims.push(batch.remove(i).obj);
                        allowed -= 1;
                    } else {
                        i += 1;
                    }
                }
                self.global.push(batch);
            }
        }
        self.release(victims.len());
        self.clock.cut.store(cut, Ordering::Relaxed);
        self.clock.allowance.store(if cut > 0 { allowed } else { 0 }, Ordering::Relaxed);
        self.clock.tick.store(tick, Ordering::Release);
        victims
    }

    fn thread_cached(&self) -> usize {
        lock(&self.registry).iter().map(|c| c.cached.load(std::sync::atomic::Ordering::Relaxed) as usize).sum()
    }
}

/// Per-thread counters. Each is written only by the thread that owns the slot (a relaxed load
/// and store: no read-modify-write) and read by `statistics()` from any thread.
#[derive(Default)]
struct Counters {
    gets: CounterCell,
    misses: CounterCell,
    returned: CounterCell,
    dropped_invalid: CounterCell,
    dropped_full: CounterCell,
    detached: CounterCell,
    evicted: CounterCell,
    /// Objects in this slot's stack now.
    cached: CounterCell,
}

#[inline]
fn bump(c: &CounterCell, n: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A counter several threads may update (the unslotted counters).
fn add(c: &CounterCell, n: u64) {
    c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

#[inline]
fn set(c: &CounterCell, v: usize) {
    c.store(v as u64, std::sync::atomic::Ordering::Relaxed);
}

fn read(c: &CounterCell) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

struct Slot<T> {
    local: RefCell<Local<T>>,
    counters: Arc<CachePadded<Counters>>,
}

type CreateFn<T> = Box<dyn Fn() -> T + Send + Sync>;
type ResetFn<T> = Box<dyn Fn(&mut T) + Send + Sync>;
type ValidateFn<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// Builder for [`ObjectPool`]; see [`ObjectPool::builder`].
pub struct ObjectPoolBuilder<T> {
    create: CreateFn<T>,
    reset: Option<ResetFn<T>>,
    validate: Option<ValidateFn<T>>,
    max_size: usize,
    min_size: usize,
    eviction: EvictionPolicy,
    maintenance_interval: Option<Duration>,
    metrics: bool,
    thread_cache: usize,
}

impl<T> fmt::Debug for ObjectPoolBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectPoolBuilder")
            .field("max_size", &self.max_size)
            .field("min_size", &self.min_size)
            .field("eviction", &self.eviction)
            .field("maintenance_interval", &self.maintenance_interval)
            .field("metrics", &self.metrics)
            .field("thread_cache", &self.thread_cache)
            .field("reset", &self.reset.is_some())
            .field("validate", &self.validate.is_some())
            .finish()
    }
}

impl<T: Send + 'static> ObjectPoolBuilder<T> {
    /// Called on every object coming back, after `validate` accepted it.
    pub fn reset(mut self, reset: impl Fn(&mut T) + Send + Sync + 'static) -> Self {
        self.reset = Some(Box::new(reset));
        self
    }

    /// Called on every object coming back; `false` drops it (counted in `dropped_invalid`).
    pub fn validate(mut self, validate: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.validate = Some(Box::new(validate));
        self
    }

    /// The most idle objects the pool keeps, thread caches included (default
    /// [`DEFAULT_MAX_SIZE`]); must be at least 1. Objects returned beyond it are dropped. Any
    /// value up to `usize::MAX` is valid: it is a bound, not a size to allocate (the shared tier
    /// grows as objects come back).
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// Objects created by `build()` (pre-warmed), and the floor eviction keeps (default 0).
    /// `build()` calls the pool's `create` this many times.
    pub fn min_size(mut self, min_size: usize) -> Self {
        self.min_size = min_size;
        self
    }

    /// When maintenance drops idle objects (default [`EvictionPolicy::None`]).
    pub fn eviction(mut self, policy: EvictionPolicy) -> Self {
        self.eviction = policy;
        self
    }

    /// Runs [`ObjectPool::maintain`] on a background thread at this interval; the thread stops
    /// when the pool is dropped. Without it, call `maintain()` yourself.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = Some(interval);
        self
    }

    /// Whether to count gets, hits, returns, … (default on; the counters are per-thread and
    /// cost about a nanosecond per get/return pair). Off, statistics report only sizes and
    /// evictions.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Objects each thread caches privately (default [`DEFAULT_THREAD_CACHE`], clamped to
    /// `max_size` and to [`MAX_THREAD_CACHE`]). 0 sends every get and return through the shared
    /// queue, where every idle object is visible to all threads and to maintenance, at several
    /// atomic operations and an allocation per pair (roughly ten times the cost of a cached
    /// pair).
    pub fn thread_cache(mut self, objects: usize) -> Self {
        self.thread_cache = objects;
        self
    }

    /// Validates the options, creates `min_size` objects and starts the maintenance thread.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `max_size` is 0, `min_size > max_size`, or the
    /// maintenance interval is zero; [`Error::ThreadSpawn`] when the maintenance thread cannot
    /// be started.
    pub fn build(self) -> Result<ObjectPool<T>> {
        if self.max_size == 0 {
            return Err(Error::InvalidArgument {
                option: "max_size",
                value: "0".into(),
                reason: "a pool must be able to keep at least one object",
            });
        }
        if self.min_size > self.max_size {
            return Err(Error::InvalidArgument {
                option: "min_size",
                value: format!("{} (max_size is {})", self.min_size, self.max_size),
                reason: "min_size must not exceed max_size",
            });
        }
        if self.maintenance_interval == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument {
                option: "maintenance_interval",
                value: "0s".into(),
                reason: "the interval must be positive",
            });
        }
        let idle_time = match self.eviction {
            EvictionPolicy::None => None,
            EvictionPolicy::IdleTime(d) => Some(d),
        };
        let prewarm = (0..self.min_size).map(|_| (self.create)());
        let shared = Arc::new(Shared::new(self.max_size, self.thread_cache, idle_time, prewarm));
        let maintainer = match self.maintenance_interval {
            Some(interval) => Some(Maintainer::start(Arc::downgrade(&shared), interval)?),
            None => None,
        };
        Ok(ObjectPool {
            shared,
            slots: ThreadLocal::new(),
            create: self.create,
            reset: self.reset,
            validate: self.validate,
            metrics: self.metrics,
            maintainer,
        })
    }
}

/// The background maintenance thread; dropping the sender stops it.
struct Maintainer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Maintainer {
    const NAME: &'static str = "dcmem-pool-maintenance";

    fn start<T: Send + 'static>(shared: Weak<Shared<T>>, interval: Duration) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(Self::NAME.into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let Some(shared) = shared.upgrade() else { return };
                let victims = shared.maintain(shared.thread_cached());
                shared.evicted.fetch_add(victims.len() as u64, std::sync::atomic::Ordering::Relaxed);
                drop(victims);
            })
            .map_err(|e| Error::ThreadSpawn { thread: Self::NAME, message: e.to_string() })?;
        Ok(Maintainer { stop: Some(stop), handle: Some(handle) })
    }
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            // A panic on that thread (a panicking Drop of T) has already been reported.
            let _ = handle.join();
        }
    }
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaintenanceReport {
    /// Objects dropped by this pass (shared tier, plus the calling thread's own cache).
    pub evicted: u64,
    /// Idle objects left in the pool.
    pub current_size: u64,
}

/// A snapshot of an [`ObjectPool`]'s counters.
///
/// Counts are exact when no get or return is in flight; taken while other threads work, each
/// counter is a recent value and identities may be off by the operations in flight.
/// At rest: `hits + misses == gets`, `created == misses + min_size`, `in_use == gets - returned
/// - detached`, and `current_size == created - in_use - detached - dropped_invalid -
///   dropped_full - evicted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectPoolStatistics {
    /// Calls to `get()`.
    pub gets: u64,
    /// Gets served by an idle object (counted as `gets - misses`: the hit path bumps one
    /// counter, not two).
    pub hits: u64,
    /// Gets that had to create an object.
    pub misses: u64,
    /// Objects created: pre-warmed ones plus one per miss.
    pub created: u64,
    /// Guards dropped (objects offered back), whether or not the pool kept them.
    pub returned: u64,
    /// Returned objects that failed `validate` and were dropped.
    pub dropped_invalid: u64,
    /// Returned objects dropped because the pool already held `max_size`.
    pub dropped_full: u64,
    /// Objects taken out of the pool with [`Pooled::detach`].
    pub detached: u64,
    /// Idle objects dropped by maintenance.
    pub evicted: u64,
    /// Idle objects in the pool now (shared tier and thread caches).
    pub current_size: u64,
    /// Objects handed out and not yet returned or detached.
    pub in_use: u64,
    /// The pool's `max_size`.
    pub max_size: u64,
    /// The pool's `min_size`.
    pub min_size: u64,
    /// `hits / gets` (0 when there were no gets).
    pub hit_rate: f64,
    /// Share of gets that did not create an object, pre-warming counted as creation:
    /// `(gets - created) / gets`, at least 0.
    pub allocation_reduction: f64,
}

/// A pool of reusable objects; see the [module docs](self) for how it works.
///
/// `ObjectPool<T>` is `Send + Sync` for `T: Send`: share it by reference (scoped threads) or in
/// an `Arc`.
///
/// ```
/// use dotcompute_memory::*;
/// # fn main() -> Result<()> {
/// let pool = ObjectPool::builder(|| Vec::<u8>::with_capacity(4096))
///     .reset(|v| v.clear())
///     .validate(|v| v.capacity() <= 1 << 20)
///     .max_size(64)
///     .min_size(4)
///     .build()?;
/// {
///     let mut buf = pool.get();          // Pooled<Vec<u8>>, a pre-warmed object
///     buf.extend_from_slice(b"hello");
/// }                                      // back in the pool, cleared
/// assert!(pool.get().is_empty());
/// let s = pool.statistics();
/// assert_eq!((s.gets, s.hits, s.misses), (2, 2, 0));
/// # Ok(())
/// # }
/// ```
pub struct ObjectPool<T: Send + 'static> {
    /// First field, so it is dropped (and its thread joined) before anything else.
    maintainer: Option<Maintainer>,
    shared: Arc<Shared<T>>,
    slots: ThreadLocal<CachePadded<Slot<T>>>,
    create: CreateFn<T>,
    reset: Option<ResetFn<T>>,
    validate: Option<ValidateFn<T>>,
    metrics: bool,
}

impl<T: Send + 'static> fmt::Debug for ObjectPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectPool")
            .field("max_size", &self.shared.max_size)
            .field("min_size", &self.shared.min_size)
            .field("thread_cache", &self.shared.cap)
            .field("idle_time", &self.shared.idle_time)
            .field("background_maintenance", &self.maintainer.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ObjectPool<T> {
    /// Starts a builder whose pool creates objects with `create`.
    pub fn builder(create: impl Fn() -> T + Send + Sync + 'static) -> ObjectPoolBuilder<T> {
        ObjectPoolBuilder {
            create: Box::new(create),
            reset: None,
            validate: None,
            max_size: DEFAULT_MAX_SIZE,
            min_size: 0,
            eviction: EvictionPolicy::None,
            maintenance_interval: None,
            metrics: true,
            thread_cache: DEFAULT_THREAD_CACHE,
        }
    }

    /// This thread's slot; `None` while the thread is exiting (a guard kept in a thread-local
    /// is returned in a thread-local destructor, when the slots' thread id may be gone: see
    /// `crate::thread_exit`), and then the shared tier serves alone.
    #[inline]
    fn slot(&self) -> Option<&Slot<T>> {
        // `get` never takes an id (so it cannot panic): once the id is gone it finds nothing.
        match self.slots.get() {
            Some(slot) => Some(slot),
            None => self.first_slot(),
        }
    }

    /// This thread's first use of the pool (or a use after its id was given back).
    #[cold]
    #[inline(never)]
    fn first_slot(&self) -> Option<&Slot<T>> {
        // While the thread is ready the id's guard is alive (see `crate::thread_exit`).
        thread_exit::when_ready(|| &**self.slots.get_or(|| self.new_slot()))
    }

    #[cold]
    fn new_slot(&self) -> CachePadded<Slot<T>> {
        let counters = Arc::new(CachePadded::new(Counters::default()));
        lock(&self.shared.registry).push(counters.clone());
        CachePadded::new(Slot { local: RefCell::new(Local::new()), counters })
    }

    /// An object from the pool, or a new one when none is idle. The guard gives it back when
    /// dropped. Never fails; `create` runs on the calling thread.
    #[inline]
    pub fn get(&self) -> Pooled<'_, T> {
        let Some(slot) = self.slot() else { return self.get_unslotted() };
        if let Ok(mut local) = slot.local.try_borrow_mut() {
            if let Some(obj) = self.shared.take_fast(&mut local) {
                set(&slot.counters.cached, local.items.len());
                drop(local);
                if self.metrics {
                    bump(&slot.counters.gets, 1);
                }
                return Pooled { obj: Some(obj), pool: self };
            }
        }
        self.get_slow(slot)
    }

    #[cold]
    #[inline(never)]
    fn get_slow(&self, slot: &Slot<T>) -> Pooled<'_, T> {
        let mut victims = Vec::new();
        let taken = match slot.local.try_borrow_mut() {
            Ok(mut local) => {
                let taken = self.shared.owner_take(&mut local, &mut victims);
                set(&slot.counters.cached, local.items.len());
                taken
            }
            // Only reachable if a hook re-entered the pool mid-operation: use the shared tier.
            Err(_) => self.shared.take_direct(),
        };
        self.evicted_by_owner(slot, victims);
        let c = &slot.counters;
        let obj = match taken {
            Some(obj) => obj,
            None => {
                let obj = (self.create)();
                if self.metrics {
                    bump(&c.misses, 1);
                }
                obj
            }
        };
        if self.metrics {
            bump(&c.gets, 1);
        }
        Pooled { obj: Some(obj), pool: self }
    }

    /// `get` on a thread without a slot: the shared tier, else a new object.
    #[cold]
    #[inline(never)]
    fn get_unslotted(&self) -> Pooled<'_, T> {
        let c = &self.shared.unslotted;
        let obj = match self.shared.take_direct() {
            Some(obj) => obj,
            None => {
                if self.metrics {
                    add(&c.misses, 1);
                }
                (self.create)()
            }
        };
        if self.metrics {
            add(&c.gets, 1);
        }
        Pooled { obj: Some(obj), pool: self }
    }

    /// The return path on a thread without a slot: validate, reset, then the shared tier.
    #[cold]
    #[inline(never)]
    fn give_back_unslotted(&self, obj: T) {
        let c = &self.shared.unslotted;
        let Some(obj) = self.accept_return(obj, c, add) else { return };
        let stamp = self.shared.clock.tick.load(Ordering::Relaxed);
        if let Err(obj) = self.shared.put_direct(obj, stamp) {
            if self.metrics {
                add(&c.dropped_full, 1);
            }
            drop(obj);
        }
    }

    /// A returned object counted in `c` (with `count`: a plain store for a slot's own
    /// counters, a read-modify-write for shared ones), validated and reset; `None` when
    /// validation rejected it (it is dropped).
    #[inline(always)]
    fn accept_return(&self, mut obj: T, c: &Counters, count: fn(&CounterCell, u64)) -> Option<T> {
        if self.metrics {
            count(&c.returned, 1);
        }
        if let Some(validate) = &self.validate {
            if !validate(&obj) {
                if self.metrics {
                    count(&c.dropped_invalid, 1);
                }
                return None;
            }
        }
        if let Some(reset) = &self.reset {
            reset(&mut obj);
        }
        Some(obj)
    }

    fn evicted_by_owner(&self, slot: &Slot<T>, victims: Vec<T>) {
        if !victims.is_empty() {
            bump(&slot.counters.evicted, victims.len() as u64);
            drop(victims);
        }
    }

    /// The return path of [`Pooled`]: validate, reset, cache or drop. Out of line on purpose:
    /// the guard's drop glue then stays small enough to be inlined where the guard dies, which
    /// measured 8.8–9.4 → 7.1–7.3 ns per get + return in `dcmem bench` (inlined whole, the glue
    /// itself stayed out of line).
    #[inline(never)]
    fn give_back(&self, obj: T) {
        let Some(slot) = self.slot() else { return self.give_back_unslotted(obj) };
        let c = &slot.counters;
        let Some(mut obj) = self.accept_return(obj, c, bump) else { return };
        if let Ok(mut local) = slot.local.try_borrow_mut() {
            match self.shared.put_fast(&mut local, obj) {
                Ok(()) => {
                    set(&c.cached, local.items.len());
                    return;
                }
                Err(back) => obj = back,
            }
        }
        self.give_back_slow(slot, obj)
    }

    #[cold]
    #[inline(never)]
    fn give_back_slow(&self, slot: &Slot<T>, obj: T) {
        let c = &slot.counters;
        let mut victims = Vec::new();
        let kept = match slot.local.try_borrow_mut() {
            Ok(mut local) => {
                let kept = self.shared.owner_put(&mut local, obj, &mut victims);
                set(&c.cached, local.items.len());
                kept
            }
            Err(_) => {
                let stamp = self.shared.clock.tick.load(Ordering::Relaxed);
                self.shared.put_direct(obj, stamp)
            }
        };
        self.evicted_by_owner(slot, victims);
        if let Err(obj) = kept {
            if self.metrics {
                bump(&c.dropped_full, 1);
            }
            drop(obj);
        }
    }

    /// Runs one maintenance pass now: evicts objects idle longer than the policy allows from
    /// the shared tier and from this thread's cache (other threads trim theirs on their next
    /// get or return), never going below `min_size`, and gives back unused reservations.
    pub fn maintain(&self) -> MaintenanceReport {
        let victims = self.shared.maintain(self.shared.thread_cached());
        let mut evicted = victims.len() as u64;
        self.shared.evicted.fetch_add(evicted, std::sync::atomic::Ordering::Relaxed);
        drop(victims);
        if let Some(slot) = self.slot() {
            let mut own = Vec::new();
            if let Ok(mut local) = slot.local.try_borrow_mut() {
                let tick = self.shared.clock.tick.load(Ordering::Acquire);
                if tick != local.seen_tick {
                    self.shared.sync_tick(&mut local, tick, &mut own);
                }
                set(&slot.counters.cached, local.items.len());
            }
            evicted += own.len() as u64;
            self.evicted_by_owner(slot, own);
        }
        MaintenanceReport { evicted, current_size: self.current_size() }
    }

    /// Moves this thread's cached objects to the shared tier, where every thread (and
    /// maintenance) can reach them. Worth calling before a worker thread exits.
    pub fn flush_thread_cache(&self) {
        let Some(slot) = self.slot() else { return };
        if let Ok(mut local) = slot.local.try_borrow_mut() {
            self.shared.flush(&mut local);
            set(&slot.counters.cached, 0);
        }
    }

    fn current_size(&self) -> u64 {
        (self.shared.global.len() + self.shared.thread_cached()) as u64
    }

    /// A snapshot of the counters (see [`ObjectPoolStatistics`] for the identities).
    pub fn statistics(&self) -> ObjectPoolStatistics {
        let mut s = ObjectPoolStatistics {
            max_size: self.shared.max_size as u64,
            min_size: self.shared.min_size as u64,
            created: self.shared.prewarmed,
            evicted: read(&self.shared.evicted),
            current_size: self.shared.global.len() as u64,
            ..Default::default()
        };
        for c in lock(&self.shared.registry).iter() {
            s.gets += read(&c.gets);
            s.misses += read(&c.misses);
            s.returned += read(&c.returned);
            s.dropped_invalid += read(&c.dropped_invalid);
            s.dropped_full += read(&c.dropped_full);
            s.detached += read(&c.detached);
            s.evicted += read(&c.evicted);
            s.current_size += read(&c.cached);
        }
        s.created += s.misses;
        s.hits = s.gets.saturating_sub(s.misses);
        s.in_use = s.gets.saturating_sub(s.returned).saturating_sub(s.detached);
        if s.gets > 0 {
            s.hit_rate = s.hits as f64 / s.gets as f64;
            s.allocation_reduction = s.gets.saturating_sub(s.created) as f64 / s.gets as f64;
        }
        s
    }

    /// The pool's `max_size`.
    pub fn max_size(&self) -> usize {
        self.shared.max_size
    }

    /// The pool's `min_size`.
    pub fn min_size(&self) -> usize {
        self.shared.min_size
    }

    /// Objects each thread may cache: the builder's `thread_cache`, clamped to `max_size` and
    /// to [`MAX_THREAD_CACHE`].
    pub fn thread_cache(&self) -> usize {
        self.shared.cap
    }
}

/// An object on loan from an [`ObjectPool`]; it goes back (validated and reset) when the guard
/// is dropped. Dereferences to `T`.
pub struct Pooled<'a, T: Send + 'static> {
    obj: Option<T>,
    pool: &'a ObjectPool<T>,
}

impl<T: Send + 'static> Pooled<'_, T> {
    /// Keeps the object: it leaves the pool for good (counted in `detached`).
    ///
    /// An associated function (`Pooled::detach(guard)`) so it cannot shadow a method of `T`.
    pub fn detach(mut this: Self) -> T {
        let obj = this.obj.take();
        if this.pool.metrics {
            match this.pool.slot() {
                Some(slot) => bump(&slot.counters.detached, 1),
                None => add(&this.pool.shared.unslotted.detached, 1),
            }
        }
        match obj {
            Some(obj) => obj,
            None => unreachable!("a Pooled guard always holds its object until it is consumed"),
        }
    }
}

impl<T: Send + 'static> Deref for Pooled<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        match &self.obj {
            Some(obj) => obj,
            None => unreachable!("a Pooled guard always holds its object until it is consumed"),
        }
    }
}

impl<T: Send + 'static> DerefMut for Pooled<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.obj {
            Some(obj) => obj,
            None => unreachable!("a Pooled guard always holds its object until it is consumed"),
        }
    }
}

impl<T: Send + 'static> Drop for Pooled<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            self.pool.give_back(obj);
        }
    }
}

impl<T: Send + fmt::Debug + 'static> fmt::Debug for Pooled<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pooled").field(&**self).finish()
    }
}

/// The core protocol without thread slots or hooks, for the loom model (`--cfg loom` only).
#[cfg(loom)]
#[doc(hidden)]
pub mod model {
    use std::time::Duration;

    /// The shared state of one pool.
    pub struct Core<T>(super::Shared<T>);
    /// One thread's stack; each model thread owns one.
    pub struct Local<T>(super::Local<T>);

    impl<T> Core<T> {
        /// A pool with `prewarm.len()` idle objects.
        pub fn new(max_size: usize, thread_cache: usize, idle_time: Option<Duration>, prewarm: Vec<T>) -> Self {
            Core(super::Shared::new(max_size, thread_cache, idle_time, prewarm.into_iter()))
        }
        /// An empty stack for one thread.
        pub fn local(&self) -> Local<T> {
            Local(super::Local::new())
        }
        /// The owner's get (without creating).
        pub fn take(&self, local: &mut Local<T>, victims: &mut Vec<T>) -> Option<T> {
            self.0.owner_take(&mut local.0, victims)
        }
        /// The owner's return.
        pub fn put(&self, local: &mut Local<T>, obj: T, victims: &mut Vec<T>) -> Result<(), T> {
            self.0.owner_put(&mut local.0, obj, victims)
        }
        /// Shared-tier-only get.
        pub fn take_direct(&self) -> Option<T> {
            self.0.take_direct()
        }
        /// Shared-tier-only return.
        pub fn put_direct(&self, obj: T) -> Result<(), T> {
            self.0.put_direct(obj, 0)
        }
        /// A maintenance pass.
        pub fn maintain(&self, thread_cached: usize) -> Vec<T> {
            self.0.maintain(thread_cached)
        }
        /// Moves a stack to the shared tier.
        pub fn flush(&self, local: &mut Local<T>) {
            self.0.flush(&mut local.0)
        }
        /// Free reservations.
        pub fn budget(&self) -> usize {
            self.0.budget.load(super::Ordering::Relaxed)
        }
        /// Objects in the shared tier.
        pub fn global_len(&self) -> usize {
            self.0.global.len()
        }
        /// Empties the shared tier.
        pub fn drain_global(&self) -> Vec<T> {
            std::iter::from_fn(|| self.0.global.pop()).flatten().map(|idle| idle.obj).collect()
        }
    }

    impl<T> Local<T> {
        /// Reservations held.
        pub fn quota(&self) -> usize {
            self.0.quota
        }
        /// Objects held.
        pub fn len(&self) -> usize {
            self.0.items.len()
        }
        /// True when the stack holds nothing.
        pub fn is_empty(&self) -> bool {
            self.0.items.is_empty()
        }
        /// Empties the stack (without touching reservations).
        pub fn drain(&mut self) -> Vec<T> {
            self.0.items.drain(..).map(|idle| idle.obj).collect()
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn assert_send_sync<X: Send + Sync>() {}

    fn assert_send<X: Send>() {}

    #[test]
    fn pool_is_send_and_sync_and_guards_can_move() {
        assert_send_sync::<ObjectPool<Vec<u8>>>();
        assert_send_sync::<ObjectPool<std::cell::Cell<u8>>>();
        assert_send::<Pooled<'static, Vec<u8>>>();
    }

    /// budget + quota + shared == max_size, after any single-threaded sequence.
    #[test]
    fn reservations_balance() {
        let shared = Shared::<u32>::new(10, 4, Some(Duration::ZERO), [1, 2, 3].into_iter());
        let mut local = Local::new();
        let mut victims = Vec::new();
        let check = |s: &Shared<u32>, l: &Local<u32>| {
            assert_eq!(s.budget.load(Ordering::Relaxed) + l.quota + s.global.len(), 10);
            assert!(l.items.len() <= l.quota && l.quota <= s.cap);
        };
        let mut held = Vec::new();
        for i in 0..8 {
            held.push(shared.owner_take(&mut local, &mut victims).unwrap_or(100 + i));
            check(&shared, &local);
        }
        let mut dropped = 0;
        for obj in held.drain(..) {
            if shared.owner_put(&mut local, obj, &mut victims).is_err() {
                dropped += 1;
            }
            check(&shared, &local);
        }
        assert_eq!(dropped, 0, "8 objects fit in max_size 10");
        assert_eq!(local.items.len() + shared.global.len(), 8);
        // Idle time zero: the first pass may evict everything returned before it, down to
        // min_size (3): from the shared tier now, from the stack at the owner's next call.
        let mut evicted = shared.maintain(local.items.len()).len();
        check(&shared, &local);
        let got = shared.owner_take(&mut local, &mut victims);
        evicted += victims.len();
        check(&shared, &local);
        assert_eq!(evicted, 5);
        assert_eq!(local.items.len() + shared.global.len() + usize::from(got.is_some()), 3);
    }
}
