//! The object pool's storage: the shared tier of idle batches, each thread's stack, and the
//! reservation budget that bounds them (see the [module docs](super) for the protocol).

use super::statistics::{CounterCell, Counters};
use super::sync::{lock, AtomicU64, AtomicUsize, Ordering, Queue};
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest per-thread cache capacity: a larger
/// [`ObjectPoolBuilder::thread_cache`](super::ObjectPoolBuilder::thread_cache) is clamped to it.
/// A thread's stack moves objects to and from the shared tier in batches of half its capacity,
/// so a larger stack would only hold more reservations away from other threads.
pub const MAX_THREAD_CACHE: usize = 1024;

/// An idle object and the tick it was returned in.
pub(super) struct Idle<T> {
    pub(super) obj: T,
    pub(super) stamp: u64,
}

/// The shared tier: batches of idle objects (each object carrying its reservation) in an MPMC
/// queue, so a spill or refill of a whole batch is one queue operation; plus their total count.
pub(super) struct Tier<T> {
    pub(super) batches: Queue<Vec<Idle<T>>>,
    pub(super) len: CachePadded<AtomicUsize>,
}

impl<T> Tier<T> {
    pub(super) fn new() -> Self {
        Tier { batches: Queue::new(), len: CachePadded::new(AtomicUsize::new(0)) }
    }

    pub(super) fn push(&self, batch: Vec<Idle<T>>) {
        if !batch.is_empty() {
            // Counted before it becomes visible, so a popper never subtracts first.
            self.len.fetch_add(batch.len(), Ordering::Relaxed);
            self.batches.push(batch);
        }
    }

    pub(super) fn pop(&self) -> Option<Vec<Idle<T>>> {
        let batch = self.batches.pop()?;
        self.len.fetch_sub(batch.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// Objects in the tier.
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// One thread's stack. Only its owner thread touches it.
pub(super) struct Local<T> {
    pub(super) items: Vec<Idle<T>>,
    /// An empty vector kept for the next spill.
    pub(super) spare: Vec<Idle<T>>,
    /// Reservations held: `items.len() <= quota <= cap`.
    pub(super) quota: usize,
    /// The last maintenance tick this thread acted on.
    pub(super) seen_tick: u64,
}

impl<T> Local<T> {
    /// An empty stack. Its vectors grow on use (to at most the thread-cache capacity), so a
    /// thread that caches little allocates little.
    pub(super) fn new() -> Self {
        Local { items: Vec::new(), spare: Vec::new(), quota: 0, seen_tick: 0 }
    }
}

/// Maintenance state read by every thread: its own cache lines, written once per pass.
pub(super) struct Clock {
    pub(super) tick: AtomicU64,
    /// Objects stamped before this tick are evictable.
    pub(super) cut: AtomicU64,
    /// How many more objects threads may evict from their stacks this pass (keeps `min_size`).
    pub(super) allowance: AtomicUsize,
}

/// When each tick began, for the ticks an eviction decision may still need.
pub(super) struct History {
    pub(super) last: u64,
    pub(super) starts: VecDeque<(u64, Instant)>,
}

/// The protocol shared by all threads (everything except the thread slots and user hooks).
pub(super) struct Shared<T> {
    pub(super) global: Tier<T>,
    pub(super) budget: CachePadded<AtomicUsize>,
    pub(super) clock: CachePadded<Clock>,
    pub(super) cap: usize,
    pub(super) batch: usize,
    /// More than this many unfilled reservations after a get are given back.
    pub(super) shed_at: usize,
    pub(super) max_size: usize,
    pub(super) min_size: usize,
    pub(super) idle_time: Option<Duration>,
    pub(super) history: Mutex<History>,
    pub(super) registry: Mutex<Vec<Arc<CachePadded<Counters>>>>,
    /// Counters of threads that cannot have a slot (exiting: see `crate::thread_exit`),
    /// updated with read-modify-writes since several threads may use them. In `registry`.
    pub(super) unslotted: Arc<CachePadded<Counters>>,
    pub(super) prewarmed: u64,
    pub(super) evicted: CachePadded<CounterCell>,
}

impl<T> Shared<T> {
    /// The shared state of a pool whose idle objects start as `prewarm` (their number is the
    /// pool's `min_size`). Nothing is allocated in proportion to `max_size` or `thread_cache`:
    /// the thread-cache capacity is clamped to [`MAX_THREAD_CACHE`], and the prewarmed objects
    /// are moved into batches as they come.
    pub(super) fn new(
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
    pub(super) fn reserve(&self, want: usize) -> usize {
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

    pub(super) fn release(&self, n: usize) {
        if n > 0 {
            self.budget.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The common get: the tick is unchanged and the stack has an object whose removal leaves
    /// few enough spare reservations. `None` means "take the general path", not "empty".
    #[inline]
    pub(super) fn take_fast(&self, local: &mut Local<T>) -> Option<T> {
        if self.clock.tick.load(Ordering::Acquire) != local.seen_tick || local.quota - local.items.len() >= self.shed_at
        {
            return None;
        }
        local.items.pop().map(|idle| idle.obj)
    }

    /// The common return: the tick is unchanged and a reservation is free.
    #[inline]
    pub(super) fn put_fast(&self, local: &mut Local<T>, obj: T) -> Result<(), T> {
        let tick = self.clock.tick.load(Ordering::Acquire);
        if tick != local.seen_tick || local.items.len() >= local.quota {
            return Err(obj);
        }
        local.items.push(Idle { obj, stamp: tick });
        Ok(())
    }

    /// An idle object for the owner of `local`, or `None` (the caller creates one).
    /// Stale objects the owner evicts on the way are pushed to `victims`.
    pub(super) fn owner_take(&self, local: &mut Local<T>, victims: &mut Vec<T>) -> Option<T> {
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
    pub(super) fn owner_put(&self, local: &mut Local<T>, obj: T, victims: &mut Vec<T>) -> Result<(), T> {
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
    pub(super) fn shed(&self, local: &mut Local<T>) {
        let spare = local.quota - local.items.len();
        let give = spare - self.batch;
        local.quota -= give;
        self.release(give);
    }

    /// The stack is empty: move a batch from the shared tier (with its reservations).
    #[cold]
    pub(super) fn refill(&self, local: &mut Local<T>) -> Option<T> {
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
    pub(super) fn put_slow(&self, local: &mut Local<T>, obj: T, stamp: u64) -> Result<(), T> {
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
    pub(super) fn take_direct(&self) -> Option<T> {
        let mut batch = self.global.pop()?;
        let idle = batch.pop();
        self.global.push(batch);
        let idle = idle?;
        self.release(1);
        Some(idle.obj)
    }

    pub(super) fn put_direct(&self, obj: T, stamp: u64) -> Result<(), T> {
        if self.reserve(1) == 1 {
            self.global.push(vec![Idle { obj, stamp }]);
            Ok(())
        } else {
            Err(obj)
        }
    }

    /// Moves every object of `local` to the shared tier and gives back its spare reservations.
    pub(super) fn flush(&self, local: &mut Local<T>) {
        let spare = local.quota - local.items.len();
        let mut out = std::mem::take(&mut local.spare);
        out.append(&mut local.items);
        local.quota = 0;
        self.global.push(out);
        self.release(spare);
    }

    pub(super) fn thread_cached(&self) -> usize {
        lock(&self.registry).iter().map(|c| c.cached.load(std::sync::atomic::Ordering::Relaxed) as usize).sum()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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
