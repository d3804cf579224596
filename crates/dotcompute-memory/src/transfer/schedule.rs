//! Scheduling policy: priorities, retry backoff, and the adaptive batching threshold.
#![deny(unsafe_code)]

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Priority class of a transfer. Higher classes start first; within a class, submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Priority {
    /// Started after everything else.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Started before queued normal and low transfers.
    High,
}

/// Upper bound on any one backoff the policy accepts (one hour).
const MAX_BACKOFF_SECS: u64 = 3600;

/// Retry with exponential backoff for transient errors (`Error::is_transient`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per chunk in total, including the first (default 4; 1 = no retries).
    pub max_attempts: u32,
    /// Wait before the first retry (default 1 ms).
    pub initial_backoff: Duration,
    /// Factor applied to the wait after each retry (default 2.0).
    pub multiplier: f64,
    /// Upper bound on one wait (default 100 ms).
    pub max_backoff: Duration,
    /// Randomise each wait in [50 %, 100 %] so retries from many transfers spread out (default on).
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(100),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::InvalidArgument {
                option: "RetryPolicy::max_attempts",
                value: "0".into(),
                reason: "at least one attempt is needed (1 means no retries)",
            });
        }
        let limit = Duration::from_secs(MAX_BACKOFF_SECS);
        if self.initial_backoff > limit || self.max_backoff > limit {
            return Err(Error::InvalidArgument {
                option: "RetryPolicy::initial_backoff / max_backoff",
                value: format!("{:?} / {:?}", self.initial_backoff, self.max_backoff),
                reason: "backoffs above one hour are not accepted",
            });
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(Error::InvalidArgument {
                option: "RetryPolicy::multiplier",
                value: self.multiplier.to_string(),
                reason: "must be a finite number >= 1.0",
            });
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial_backoff.as_secs_f64() * exp;
        let capped = base.min(self.max_backoff.as_secs_f64());
        let factor = if self.jitter { 0.5 + 0.5 * unit_random() } else { 1.0 };
        Duration::try_from_secs_f64(capped * factor).unwrap_or(Duration::MAX).min(Duration::from_secs(MAX_BACKOFF_SECS))
    }
}

/// A process-wide xorshift generator for jitter (quality is irrelevant; spread is the point).
fn unit_random() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether host memory goes through staging blocks on its way to or from the device.
///
/// Staging costs one host copy per byte; it pays where the device moves page-locked memory
/// faster than pageable memory and the copy of chunk N+1 overlaps the transfer of chunk N (a
/// discrete GPU's DMA engine). On host-backed devices (the simulator, a CPU OpenCL device) the
/// "transfer" is itself a host copy and staging only adds one. Asynchronous execution always
/// stages, whatever the policy: a leaked future must not leave the device reading or writing
/// user memory that safe code may free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum StagingPolicy {
    /// Decide per transfer in synchronous execution (the default): a transfer of one chunk goes
    /// direct (staging it could overlap nothing); multi-chunk transfers and batches of small
    /// uploads use whichever of staged and direct has measured faster on this manager (each is
    /// tried first, and the slower one is re-measured now and then). The decision is recorded
    /// per transfer ([`crate::TransferOutcome::staged`]).
    #[default]
    Adaptive,
    /// Always stage pageable host memory (the classic pipelined path).
    Always,
    /// Never stage in synchronous execution: the device reads and writes the caller's slices,
    /// which are borrowed for the call.
    Never,
}

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
        let explore = n % EXPLORE_EVERY == 0 || (n.is_power_of_two() && n > 1 && n < EXPLORE_EVERY);
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
/// measurements of [`StagingPolicy::Adaptive`].
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
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { jitter: false, ..Default::default() };
        assert_eq!(p.backoff(1), Duration::from_millis(1));
        assert_eq!(p.backoff(2), Duration::from_millis(2));
        assert_eq!(p.backoff(3), Duration::from_millis(4));
        assert_eq!(p.backoff(30), Duration::from_millis(100));
        let j = RetryPolicy::default();
        for a in 1..10 {
            let d = j.backoff(a);
            let full = p.backoff(a);
            assert!(d <= full && d >= full / 2, "{d:?} vs {full:?}");
        }
    }

    #[test]
    fn bad_policies_are_rejected() {
        assert!(RetryPolicy { max_attempts: 0, ..Default::default() }.validate().is_err());
        assert!(RetryPolicy { multiplier: 0.5, ..Default::default() }.validate().is_err());
        assert!(RetryPolicy { multiplier: f64::NAN, ..Default::default() }.validate().is_err());
        assert!(RetryPolicy { max_backoff: Duration::MAX, ..Default::default() }.validate().is_err());
        assert!(RetryPolicy { initial_backoff: Duration::MAX, ..Default::default() }.validate().is_err());
        // Unvalidated extreme values still do not panic.
        let wild = RetryPolicy { initial_backoff: Duration::MAX, max_backoff: Duration::MAX, ..Default::default() };
        assert!(wild.backoff(3) <= Duration::from_secs(MAX_BACKOFF_SECS));
    }

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
