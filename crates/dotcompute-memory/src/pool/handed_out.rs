//! The device memory the pool has handed out (to buffers, and parked with them in thread
//! magazines) and the memory it holds cached, per pool, with their peaks: the figures of
//! `memory_summary` that change on the lock-free path.
//!
//! Each pool keeps two running totals, bytes handed out and bytes given back, so a hand-out or
//! a return costs one read-modify-write (a current count would need a second for the totals).
//! The current figure is their difference, read right after the update; the peaks compare it
//! then. The totals are updated and read in one order for all threads (`SeqCst`, which costs
//! no more than relaxed order for these operations on x86), so the other total is read no
//! older than the update: a hand-out's figure is never above the bytes really handed out at
//! once, and a return's cached figure never above the bytes really cached. On one thread every
//! figure is exact; with several, a peak may miss a moment between two threads' updates.

use super::snapshot::{PoolUsage, Usage};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

/// The counters of one pool (small or large).
#[derive(Default)]
struct PoolCounters {
    /// Bytes handed out since the pool was made.
    taken: AtomicU64,
    /// Bytes given back since the pool was made.
    returned: AtomicU64,
    /// Highest bytes handed out at once.
    active_peak: AtomicU64,
    /// Bytes of the pool's segments now (written under the pool's lock when they change).
    reserved: AtomicU64,
    /// Highest bytes of segments not handed out.
    cached_peak: AtomicU64,
}

impl PoolCounters {
    fn active(&self) -> u64 {
        self.taken.load(SeqCst).saturating_sub(self.returned.load(SeqCst))
    }

    fn cached(&self, active: u64) -> u64 {
        self.reserved.load(SeqCst).saturating_sub(active)
    }
}

/// Raises `peak` to `value` if it is higher (a load first: a peak is rarely beaten).
fn raise(peak: &AtomicU64, value: u64) {
    if value > peak.load(Relaxed) {
        peak.fetch_max(value, Relaxed);
    }
}

/// Handed-out and cached device memory of a pool's small and large pools; see the module docs.
#[derive(Default)]
pub(crate) struct HandedOut {
    /// Indexed by `small as usize`.
    pools: [CachePadded<PoolCounters>; 2],
    active_peak: AtomicU64,
    cached_peak: AtomicU64,
    /// Every hand-out and return is made under the pool's lock (expandable segments), so a
    /// load and a store stand in for the read-modify-write.
    locked: bool,
    /// The pool keeps what comes back; without pooling a returned block is released at once
    /// and never counts as cached.
    caching: bool,
}

impl HandedOut {
    /// Counters for a pool that hands out and takes back blocks under its lock only
    /// (`locked`), or on its lock-free path too, and that caches what comes back (`caching`).
    pub(crate) fn new(locked: bool, caching: bool) -> Self {
        HandedOut { locked, caching, ..HandedOut::default() }
    }

    /// Adds `n` to `total` and returns the new total.
    fn add(&self, total: &AtomicU64, n: u64) -> u64 {
        if self.locked {
            let now = total.load(Relaxed).wrapping_add(n);
            total.store(now, Relaxed);
            now
        } else {
            total.fetch_add(n, SeqCst).wrapping_add(n)
        }
    }

    /// `bytes` of a segment of the small (`small`) or large pool are handed out.
    pub(crate) fn taken(&self, small: bool, bytes: usize) {
        let (own, other) = (&self.pools[small as usize], &self.pools[!small as usize]);
        // Saturating: other threads' hand-outs and returns can come between the add and the load.
        let active = self.add(&own.taken, bytes as u64).saturating_sub(own.returned.load(SeqCst));
        let other_active = other.active();
        raise(&own.active_peak, active);
        raise(&self.active_peak, active.wrapping_add(other_active));
        // A block cut from a segment just added leaves the rest of it cached.
        let cached = own.cached(active);
        raise(&own.cached_peak, cached);
        raise(&self.cached_peak, cached.saturating_add(other.cached(other_active)));
    }

    /// `bytes` handed out earlier come back to the pool (to be cached or released).
    pub(crate) fn returned(&self, small: bool, bytes: usize) {
        let (own, other) = (&self.pools[small as usize], &self.pools[!small as usize]);
        let returned = self.add(&own.returned, bytes as u64);
        if !self.caching {
            return;
        }
        let cached = own.cached(own.taken.load(SeqCst).saturating_sub(returned));
        raise(&own.cached_peak, cached);
        raise(&self.cached_peak, cached.saturating_add(other.cached(other.active())));
    }

    /// The pools' segments now hold `usage.small_bytes` and `usage.large_bytes` (called under
    /// the pool's lock after each change; the block a new segment is added for is handed out
    /// next, which checks the cached peak).
    pub(crate) fn reserved(&self, usage: &PoolUsage) {
        self.pools[0].reserved.store(usage.large_bytes.current, SeqCst);
        self.pools[1].reserved.store(usage.small_bytes.current, SeqCst);
    }

    /// `usage` (the segments' figures) with the handed-out and cached figures filled in.
    pub(crate) fn fill(&self, usage: &mut PoolUsage) {
        let pools = [
            (&mut usage.large_active_bytes, &mut usage.large_cached_bytes, &usage.large_bytes),
            (&mut usage.small_active_bytes, &mut usage.small_cached_bytes, &usage.small_bytes),
        ];
        let (mut active_all, mut cached_all) = (Usage::default(), Usage::default());
        for ((active, cached, reserved), counters) in pools.into_iter().zip(&self.pools) {
            let (taken, returned) = (counters.taken.load(SeqCst), counters.returned.load(SeqCst));
            *active = Usage {
                current: taken.saturating_sub(returned),
                peak: counters.active_peak.load(Relaxed).max(taken.saturating_sub(returned)),
                allocated: taken,
                freed: returned,
            };
            // Cached memory grows as segments are added and blocks come back, and shrinks as
            // segments are released and blocks are handed out.
            *cached = Usage {
                current: reserved.current.saturating_sub(active.current),
                peak: counters.cached_peak.load(Relaxed).max(reserved.current.saturating_sub(active.current)),
                allocated: reserved.allocated.saturating_add(returned),
                freed: reserved.freed.saturating_add(taken),
            };
            for (all, one) in [(&mut active_all, *active), (&mut cached_all, *cached)] {
                all.current += one.current;
                all.allocated = all.allocated.saturating_add(one.allocated);
                all.freed = all.freed.saturating_add(one.freed);
            }
        }
        active_all.peak = self.active_peak.load(Relaxed).max(active_all.current);
        cached_all.peak = self.cached_peak.load(Relaxed).max(cached_all.current);
        usage.active_bytes = active_all;
        usage.cached_bytes = cached_all;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(h: &HandedOut, usage: &mut PoolUsage, small: bool, bytes: u64) {
        usage.segment_added(small, bytes);
        h.reserved(usage);
    }

    #[test]
    fn figures_follow_hand_outs_returns_and_segments() {
        for locked in [false, true] {
            figures_follow(HandedOut::new(locked, true));
        }
    }

    fn figures_follow(h: HandedOut) {
        let mut usage = PoolUsage::default();
        reserve(&h, &mut usage, false, 20 << 20);
        h.taken(false, 8 << 20);
        reserve(&h, &mut usage, true, 2 << 20);
        h.taken(true, 4096);
        h.returned(false, 8 << 20);
        h.taken(false, 4 << 20);
        h.fill(&mut usage);
        let large = usage.large_active_bytes;
        assert_eq!((large.current, large.peak, large.allocated, large.freed), (4 << 20, 8 << 20, 12 << 20, 8 << 20));
        assert_eq!(usage.small_active_bytes.current, 4096);
        assert_eq!(usage.active_bytes.current, (4 << 20) + 4096);
        assert_eq!(usage.active_bytes.peak, (8 << 20) + 4096, "both pools at once");
        let cached = usage.large_cached_bytes;
        assert_eq!((cached.current, cached.peak), (16 << 20, 20 << 20), "all of the segment once the block came back");
        assert_eq!(cached.allocated - cached.freed, cached.current);
        assert_eq!(usage.small_cached_bytes.current, (2 << 20) - 4096);
        assert_eq!(usage.cached_bytes.peak, (20 << 20) + (2 << 20) - 4096);
        assert_eq!(usage.cached_bytes.current + usage.active_bytes.current, usage.bytes.current);
    }

    #[test]
    fn a_new_segment_counts_as_cached_less_the_block_it_was_added_for() {
        let (h, mut usage) = (HandedOut::new(false, true), PoolUsage::default());
        reserve(&h, &mut usage, false, 20 << 20);
        h.taken(false, 8 << 20);
        h.fill(&mut usage);
        assert_eq!((usage.cached_bytes.current, usage.cached_bytes.peak), (12 << 20, 12 << 20));
        assert_eq!(usage.large_cached_bytes.peak, 12 << 20);
    }

    #[test]
    fn without_pooling_a_returned_block_is_never_cached() {
        let (h, mut usage) = (HandedOut::new(false, false), PoolUsage::default());
        reserve(&h, &mut usage, false, 4 << 20);
        h.taken(false, 4 << 20);
        h.returned(false, 4 << 20);
        usage.segment_removed(false, 4 << 20);
        h.reserved(&usage);
        h.fill(&mut usage);
        assert_eq!((usage.cached_bytes.current, usage.cached_bytes.peak), (0, 0));
        assert_eq!(usage.active_bytes.peak, 4 << 20);
    }

    /// Threads handing out and returning blocks of two sizes at once: no figure runs below
    /// zero into a huge peak, and the peaks stay within what the threads held together.
    #[test]
    fn peaks_under_concurrent_hand_outs_stay_within_what_was_held() {
        let h = HandedOut::new(false, true);
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        std::thread::scope(|scope| {
            for bytes in [512, 1 << 20, 512] {
                let h = &h;
                scope.spawn(move || {
                    for _ in 0..rounds {
                        h.taken(true, bytes);
                        h.returned(true, bytes);
                    }
                });
            }
        });
        let mut usage = PoolUsage::default();
        h.fill(&mut usage);
        let most = (1 << 20) + 2 * 512;
        assert!(usage.small_active_bytes.peak <= most, "{:?}", usage.small_active_bytes);
        assert!(usage.active_bytes.peak <= most, "{:?}", usage.active_bytes);
        assert_eq!(usage.active_bytes.current, 0);
    }
}
