//! The object pool's counters: per-thread cells written without read-modify-writes, and the
//! [`ObjectPoolStatistics`] snapshot summed from them.

pub(super) use std::sync::atomic::AtomicU64 as CounterCell;
use std::sync::atomic::Ordering::Relaxed;

/// Per-thread counters. Each is written only by the thread that owns the slot (a relaxed load
/// and store: no read-modify-write) and read by `statistics()` from any thread.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) gets: CounterCell,
    pub(super) misses: CounterCell,
    pub(super) returned: CounterCell,
    pub(super) dropped_invalid: CounterCell,
    pub(super) dropped_full: CounterCell,
    pub(super) detached: CounterCell,
    pub(super) evicted: CounterCell,
    /// Objects in this slot's stack now.
    pub(super) cached: CounterCell,
}

/// Adds `n` to a counter only its owner thread writes.
#[inline]
pub(super) fn bump(c: &CounterCell, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// A counter several threads may update (the unslotted counters).
pub(super) fn add(c: &CounterCell, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Sets a gauge only its owner thread writes.
#[inline]
pub(super) fn set(c: &CounterCell, v: usize) {
    c.store(v as u64, Relaxed);
}

/// A counter's current value.
pub(super) fn read(c: &CounterCell) -> u64 {
    c.load(Relaxed)
}

/// A snapshot of an [`ObjectPool`](super::ObjectPool)'s counters.
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
    /// Objects taken out of the pool with [`Pooled::detach`](super::Pooled::detach).
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

impl ObjectPoolStatistics {
    /// Adds one slot's counters (its cached objects count in `current_size`).
    pub(super) fn add_slot(&mut self, c: &Counters) {
        self.gets += read(&c.gets);
        self.misses += read(&c.misses);
        self.returned += read(&c.returned);
        self.dropped_invalid += read(&c.dropped_invalid);
        self.dropped_full += read(&c.dropped_full);
        self.detached += read(&c.detached);
        self.evicted += read(&c.evicted);
        self.current_size += read(&c.cached);
    }

    /// Fills in the derived fields once every slot is added: hits and `in_use` from the
    /// counts, `created` from the misses, and the rates.
    pub(super) fn derive(mut self) -> Self {
        self.created += self.misses;
        self.hits = self.gets.saturating_sub(self.misses);
        self.in_use = self.gets.saturating_sub(self.returned).saturating_sub(self.detached);
        if self.gets > 0 {
            self.hit_rate = self.hits as f64 / self.gets as f64;
            self.allocation_reduction = self.gets.saturating_sub(self.created) as f64 / self.gets as f64;
        }
        self
    }
}
