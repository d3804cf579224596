//! Scheduling policy: priorities, retry backoff, and whether host memory is staged (the
//! measurements behind the adaptive choices are in `pool::tuning`).
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

crate::setters::with_setters!(RetryPolicy {
    with_max_attempts => max_attempts: u32,
    with_initial_backoff => initial_backoff: Duration,
    with_multiplier => multiplier: f64,
    with_max_backoff => max_backoff: Duration,
    with_jitter => jitter: bool,
});

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
}
