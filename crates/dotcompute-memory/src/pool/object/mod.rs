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
//! pass, one idle for less than `idle_time` never is. Passes made by hand therefore evict an
//! object at the second pass after its return, not the first (see
//! [`EvictionPolicy::IdleTime`]).
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

mod builder;
mod eviction;
#[cfg(loom)]
#[doc(hidden)]
pub mod model;
mod reserve;
mod statistics;
mod sync;

pub use self::builder::{ObjectPoolBuilder, DEFAULT_MAX_SIZE, DEFAULT_THREAD_CACHE};
pub use self::eviction::{EvictionPolicy, MaintenanceReport};
pub use self::reserve::MAX_THREAD_CACHE;
pub use self::statistics::ObjectPoolStatistics;

use self::builder::{CreateFn, ResetFn, ValidateFn};
use self::eviction::Maintainer;
use self::reserve::{Local, Shared};
use self::statistics::{add, bump, read, set, CounterCell, Counters};
use self::sync::{lock, Ordering};
use crate::thread_exit;
use crossbeam_utils::CachePadded;
use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use thread_local::ThreadLocal;

/// One thread's use of a pool: its stack and its counters.
struct Slot<T> {
    local: RefCell<Local<T>>,
    counters: Arc<CachePadded<Counters>>,
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
        ObjectPoolBuilder::new(Box::new(create))
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

    /// The return path of [`Pooled`]: validate, reset, cache or drop. Out of line so that the
    /// guard's drop glue stays small enough to be inlined where the guard dies; with this body
    /// inlined into it, the glue itself goes out of line and a get + return pair is slower.
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
            s.add_slot(c);
        }
        s.derive()
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
}
