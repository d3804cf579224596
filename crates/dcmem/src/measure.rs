//! The timing harness: warm-up, calibration, interleaved samples, median.
//!
//! Each row times two closures, the baseline and ours, in the same run. Both are warmed up,
//! then each is given a batch size (calls per sample) so one sample lasts about
//! `Plan::sample_target`; samples of the two alternate (baseline first on even samples, ours
//! first on odd ones) so drift on a noisy machine hits both alike. The reported time is the
//! median over samples of (sample time / calls). Only one clock read pair is taken per sample,
//! so operations of a few nanoseconds are timed over many calls, not one.

use crate::CliResult;
use std::time::{Duration, Instant};

/// How long and how often to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Minimum warm-up time per closure (at least two calls are always made).
    pub warmup: Duration,
    /// Samples per closure; the median is reported.
    pub samples: usize,
    /// Aimed-for duration of one sample.
    pub sample_target: Duration,
}

impl Plan {
    /// The default run: ~20 ms samples, 21 of them.
    pub const FULL: Plan =
        Plan { warmup: Duration::from_millis(60), samples: 21, sample_target: Duration::from_millis(20) };
    /// `--quick`: ~5 ms samples, 7 of them.
    pub const QUICK: Plan =
        Plan { warmup: Duration::from_millis(10), samples: 7, sample_target: Duration::from_millis(5) };
    /// `--smoke`: just enough to exercise the code.
    pub const SMOKE: Plan = Plan { warmup: Duration::ZERO, samples: 3, sample_target: Duration::from_micros(100) };
}

/// Median per-call times, in nanoseconds, of a baseline and ours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Baseline median ns per call.
    pub baseline_ns: f64,
    /// Ours median ns per call.
    pub ours_ns: f64,
    /// Samples taken per side.
    pub samples: usize,
}

/// Something to time: one call of the operation. Errors stop the measurement.
pub type Op<'a> = &'a mut dyn FnMut() -> CliResult;

/// Times one batch of `calls` calls; returns ns per call.
fn batch(op: &mut dyn FnMut() -> CliResult, calls: u64) -> CliResult<f64> {
    let start = Instant::now();
    for _ in 0..calls {
        op()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / calls as f64)
}

/// Warms `op` up and returns the calls per sample that make a sample last about `target`.
fn calibrate(op: &mut dyn FnMut() -> CliResult, plan: &Plan) -> CliResult<u64> {
    let start = Instant::now();
    let mut calls = 0u64;
    let mut chunk = 1u64;
    // Warm up in growing chunks so cheap ops do not pay a clock read per call.
    while calls < 2 || start.elapsed() < plan.warmup {
        for _ in 0..chunk {
            op()?;
        }
        calls += chunk;
        if chunk < 1 << 20 {
            chunk *= 2;
        }
    }
    // Estimate the per-call time from a batch long enough for the clock.
    let mut n = 1u64;
    let per_call = loop {
        let t = Instant::now();
        for _ in 0..n {
            op()?;
        }
        let elapsed = t.elapsed();
        if elapsed >= plan.sample_target / 10 || elapsed >= Duration::from_micros(200) || n >= 1 << 30 {
            break elapsed.as_nanos() as f64 / n as f64;
        }
        n *= 4;
    };
    let calls = (plan.sample_target.as_nanos() as f64 / per_call.max(0.01)).round();
    Ok((calls as u64).clamp(1, 1 << 32))
}

/// Median of a non-empty list (mean of the middle two for even lengths).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Measures `baseline` and `ours` under `plan`; see the module docs.
pub fn compare(plan: &Plan, baseline: Op<'_>, ours: Op<'_>) -> CliResult<Pair> {
    let calls_b = calibrate(baseline, plan)?;
    let calls_o = calibrate(ours, plan)?;
    let samples = plan.samples.max(1);
    let mut tb = Vec::with_capacity(samples);
    let mut to = Vec::with_capacity(samples);
    for s in 0..samples {
        if s % 2 == 0 {
            tb.push(batch(baseline, calls_b)?);
            to.push(batch(ours, calls_o)?);
        } else {
            to.push(batch(ours, calls_o)?);
            tb.push(batch(baseline, calls_b)?);
        }
    }
    Ok(Pair { baseline_ns: median(&mut tb), ours_ns: median(&mut to), samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn compare_counts_calls_and_propagates_errors() {
        let mut a = 0u64;
        let mut b = 0u64;
        let pair = compare(
            &Plan::SMOKE,
            &mut || {
                a += 1;
                Ok(())
            },
            &mut || {
                b += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(pair.samples, 3);
        assert!(pair.baseline_ns >= 0.0 && pair.ours_ns >= 0.0);
        // Warm-up makes at least 2 calls, each of the 3 samples at least 1.
        assert!(a >= 5 && b >= 5, "a={a} b={b}");

        let mut n = 0;
        let err = compare(&Plan::SMOKE, &mut || Ok(()), &mut || {
            n += 1;
            if n == 3 {
                Err(crate::CliError::Other("boom".into()))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }
}
