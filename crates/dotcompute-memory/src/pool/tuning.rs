//! Per-manager transfer measurements: the adaptive small-transfer threshold and the
//! staged-or-direct costs behind `StagingPolicy::Adaptive`, kept by the pool context and read
//! and updated by the transfer engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which kind of transfer a staged-or-direct measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Multi-chunk host-to-device transfers.
    Upload,
    /// Multi-chunk device-to-host transfers.
    Download,
    /// Batches of small uploads (one submission each).
    Batch,
}

/// Re-measure the slower alternative once every this many measured decisions (and, early on,
/// at decisions 2, 4, 8, 16 and 32, so one unlucky first sample is soon corrected).
const EXPLORE_EVERY: u64 = 64;

/// Transfers are measured in size buckets (factors of 4 from 1 MiB): whether a staged copy
/// pays can depend on whether the data fits the caches.
const SIZE_BUCKETS: usize = 6;

fn bucket(bytes: usize) -> usize {
    let mib = (bytes >> 20).max(1);
    ((mib.ilog2() / 2) as usize).min(SIZE_BUCKETS - 1)
}

/// Running cost per byte of staged and of direct transfers of one [`Lane`] and size bucket.
#[derive(Debug, Default)]
pub(crate) struct Choice {
    /// Picoseconds per byte; 0 = not measured yet. A moving average that falls fast (weight
    /// 1/2) and rises slowly (weight 1/8): a page-fault storm or a preempted sample on a busy
    /// machine should not condemn an alternative for long.
    staged_ps: AtomicU64,
    direct_ps: AtomicU64,
    decisions: AtomicU64,
}

impl Choice {
    /// (stage?, decided from measurements?). Unmeasured alternatives are tried first, staged
    /// before direct; then the cheaper one, except at exploration decisions (see
    /// [`EXPLORE_EVERY`]), which re-measure the other so a change (another load) is noticed.
    pub(crate) fn choose(&self) -> (bool, bool) {
        let s = self.staged_ps.load(Ordering::Relaxed);
        let d = self.direct_ps.load(Ordering::Relaxed);
        if s == 0 {
            return (true, false);
        }
        if d == 0 {
            return (false, false);
        }
        let n = self.decisions.fetch_add(1, Ordering::Relaxed) + 1;
        let explore = n.is_multiple_of(EXPLORE_EVERY) || (n.is_power_of_two() && n > 1 && n < EXPLORE_EVERY);
        let staged_wins = s <= d;
        (if explore { !staged_wins } else { staged_wins }, true)
    }

    /// Folds in one successful transfer of `bytes` that took `elapsed`.
    pub(crate) fn observe(&self, staged: bool, bytes: usize, elapsed: Duration) {
        if bytes == 0 {
            return;
        }
        let ps = (elapsed.as_nanos().saturating_mul(1000) / bytes as u128).clamp(1, u64::MAX as u128) as u64;
        let a = if staged { &self.staged_ps } else { &self.direct_ps };
        let old = a.load(Ordering::Relaxed);
        let new = if old == 0 {
            ps
        } else if ps < old {
            old - (old - ps) / 2
        } else {
            old + (ps - old) / 8
        };
        a.store(new.max(1), Ordering::Relaxed);
    }
}

/// Running estimates of per-transfer overhead and bandwidth, from which the size below which
/// transfers are batched is derived: a transfer is "small" when its fixed overhead costs more
/// than moving its bytes, i.e. below `overhead * bandwidth`. Also the staged-or-direct
/// measurements of [`StagingPolicy::Adaptive`](crate::transfer::StagingPolicy::Adaptive).
#[derive(Debug, Default)]
pub(crate) struct Tuning {
    overhead_ns: AtomicU64,
    bandwidth_bps: AtomicU64,
    upload: [Choice; SIZE_BUCKETS],
    download: [Choice; SIZE_BUCKETS],
    batch: Choice,
}

/// Bounds of the adaptive threshold.
pub(crate) const MIN_BATCH_THRESHOLD: usize = 4 << 10;
pub(crate) const MAX_BATCH_THRESHOLD: usize = 1 << 20;
const DEFAULT_BATCH_THRESHOLD: usize = 64 << 10;

impl Tuning {
    /// Folds in one observed transfer (exponential moving average, weight 1/8).
    pub(crate) fn observe(&self, bytes: usize, elapsed: Duration) {
        let ns = elapsed.as_nanos().max(1) as u64;
        let ewma = |a: &AtomicU64, v: u64| {
            let old = a.load(Ordering::Relaxed);
            a.store(if old == 0 { v } else { old - old / 8 + v / 8 }, Ordering::Relaxed);
        };
        if bytes <= MIN_BATCH_THRESHOLD {
            ewma(&self.overhead_ns, ns);
        } else {
            ewma(&self.bandwidth_bps, (bytes as u128 * 1_000_000_000 / ns as u128) as u64);
        }
    }

    /// The staged-or-direct measurements of one lane, for transfers of `bytes` (batches are
    /// measured as a whole, in one bucket).
    pub(crate) fn lane(&self, lane: Lane, bytes: usize) -> &Choice {
        match lane {
            Lane::Upload => &self.upload[bucket(bytes)],
            Lane::Download => &self.download[bucket(bytes)],
            Lane::Batch => &self.batch,
        }
    }

    /// The current threshold in bytes, and whether it was measured (false: default).
    pub(crate) fn threshold(&self) -> (usize, bool) {
        let (o, b) = (self.overhead_ns.load(Ordering::Relaxed), self.bandwidth_bps.load(Ordering::Relaxed));
        if o == 0 || b == 0 {
            return (DEFAULT_BATCH_THRESHOLD, false);
        }
        let t = (o as u128 * b as u128 / 1_000_000_000) as usize;
        (t.clamp(MIN_BATCH_THRESHOLD, MAX_BATCH_THRESHOLD), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_choice_tries_both_then_takes_the_cheaper_and_re_measures() {
        let c = Choice::default();
        assert_eq!(c.choose(), (true, false), "staged is tried first");
        c.observe(true, 1000, Duration::from_micros(2));
        assert_eq!(c.choose(), (false, false), "then direct");
        c.observe(false, 1000, Duration::from_micros(1));
        let picks: Vec<bool> = (0..2 * EXPLORE_EVERY)
            .map(|_| c.choose())
            .map(|(staged, measured)| {
                assert!(measured);
                staged
            })
            .collect();
        let explored: Vec<u64> = (0..picks.len()).filter(|&i| picks[i]).map(|i| i as u64 + 1).collect();
        assert_eq!(explored, [2, 4, 8, 16, 32, 64, 128], "early, then every {EXPLORE_EVERY}th decision");
        // Direct gets much slower: staged wins from then on.
        for _ in 0..40 {
            c.observe(false, 1000, Duration::from_micros(50));
        }
        assert_eq!(c.choose(), (true, true));
        // One fast sample counts for half; one slow spike for an eighth.
        let c = Choice::default();
        c.observe(true, 1000, Duration::from_micros(8));
        c.observe(true, 1000, Duration::from_micros(4));
        assert_eq!(c.staged_ps.load(Ordering::Relaxed), 6000);
        c.observe(true, 1000, Duration::from_micros(86));
        assert_eq!(c.staged_ps.load(Ordering::Relaxed), 16000);
    }

    #[test]
    fn sizes_fall_in_buckets_of_factors_of_four() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(3 << 20), 0);
        assert_eq!(bucket(10_000_000), 1);
        assert_eq!(bucket(64 << 20), 3);
        assert_eq!(bucket(usize::MAX), SIZE_BUCKETS - 1);
    }

    #[test]
    fn threshold_follows_measurements() {
        let t = Tuning::default();
        assert_eq!(t.threshold(), (DEFAULT_BATCH_THRESHOLD, false));
        // 20 us per tiny transfer, 10 GB/s: overhead worth 200 KB.
        t.observe(64, Duration::from_micros(20));
        t.observe(10_000_000, Duration::from_millis(1));
        let (bytes, measured) = t.threshold();
        assert!(measured);
        assert_eq!(bytes, 200_000);
        // Tiny overhead clamps to the minimum.
        let t = Tuning::default();
        t.observe(64, Duration::from_nanos(10));
        t.observe(10_000_000, Duration::from_millis(1));
        assert_eq!(t.threshold().0, MIN_BATCH_THRESHOLD);
    }
}
