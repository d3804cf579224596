//! The random-allocations rows: an RMM-style workload of allocations and frees in random
//! order through the pooled manager against an unpooled one on the same backend.

use super::ctx::Ctx;
use super::data::{touch_pages, wrong_data};
use super::pools::per_pair;
use crate::report::Row;
use crate::{units, CliResult};
use dotcompute_memory::{MemoryManager, MemoryStatistics, UnifiedBuffer};

/// Steps of the random-allocations workload; `Free(i)` frees the `i`-th live allocation
/// (`Vec::swap_remove` order), so a round replays exactly.
#[derive(Debug, Clone, Copy)]
enum Step {
    Alloc(usize),
    Free(usize),
}

/// RMM's `random_allocations` benchmark (`benchmarks/random_allocations`), shaped for a host:
/// `count` allocations of sizes drawn log-uniformly from `min..=max` (RMM draws uniformly; most
/// host workloads have many more small buffers than large ones), each step allocating with
/// RMM's probability of 73 % or else, and always when the next allocation would take the live
/// bytes past `live_cap`, freeing a uniformly chosen live allocation; whatever is left is freed
/// in random order at the end.
struct Workload {
    steps: Vec<Step>,
    count: usize,
    min: usize,
    max: usize,
    live_cap: usize,
    total_bytes: u64,
    max_live: usize,
}

/// The workload's seed: every run replays the same steps.
const SEED: u64 = 0x5EED;

/// RMM's chance that a step allocates (when it may).
const ALLOCATE_PROBABILITY: f64 = 0.73;

/// SplitMix64 (Steele, Lea & Flood 2014): a fixed seed gives the same workload every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

impl Workload {
    fn random(count: usize, min: usize, max: usize, live_cap: usize, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let (lo, hi) = ((min as f64).ln(), (max as f64).ln());
        let mut steps = Vec::with_capacity(2 * count);
        let mut live: Vec<usize> = Vec::new();
        let (mut live_bytes, mut max_live, mut total_bytes, mut made) = (0usize, 0usize, 0u64, 0usize);
        let mut next = 0usize;
        while made < count {
            if next == 0 {
                next = ((lo + rng.unit() * (hi - lo)).exp().round() as usize).clamp(min, max);
            }
            let must_free = live_bytes + next > live_cap;
            if !live.is_empty() && (must_free || rng.unit() >= ALLOCATE_PROBABILITY) {
                let i = rng.below(live.len());
                live_bytes -= live.swap_remove(i);
                steps.push(Step::Free(i));
            } else {
                steps.push(Step::Alloc(next));
                live.push(next);
                live_bytes += next;
                max_live = max_live.max(live_bytes);
                total_bytes += next as u64;
                made += 1;
                next = 0;
            }
        }
        while !live.is_empty() {
            let i = rng.below(live.len());
            live.swap_remove(i);
            steps.push(Step::Free(i));
        }
        Workload { steps, count, min, max, live_cap, total_bytes, max_live }
    }

    fn describe(&self) -> String {
        format!(
            "{} allocations, log-uniform {}..{}, at most {} live (peak {}), freed in random order",
            self.count,
            units::bytes(self.min as u64),
            units::bytes(self.max as u64),
            units::bytes(self.live_cap as u64),
            units::bytes(self.max_live as u64)
        )
    }

    /// Runs one round on `mm`; `device` uses `allocate_device` (no host part, nothing touched),
    /// otherwise `allocate` and a write to every page.
    fn round(&self, mm: &MemoryManager, device: bool, live: &mut Vec<UnifiedBuffer<u8>>) -> CliResult {
        for step in &self.steps {
            match *step {
                Step::Alloc(n) => {
                    let b = if device {
                        mm.allocate_device::<u8>(n)?
                    } else {
                        let mut b = mm.allocate::<u8>(n)?;
                        touch_pages(b.as_mut_slice()?);
                        b
                    };
                    live.push(b);
                }
                Step::Free(i) => drop(live.swap_remove(i)),
            }
        }
        Ok(())
    }
}

/// Pool counters between two snapshots.
fn pool_delta(before: &MemoryStatistics, after: &MemoryStatistics) -> (u64, u64, u64) {
    (
        after.block_requests - before.block_requests,
        after.pool_hits - before.pool_hits,
        after.backend_allocations - before.backend_allocations,
    )
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The random-allocations workload through a pooled manager against an unpooled one on the
/// same backend: `allocate` + touch pages + drop, and on discrete backends also
/// `allocate_device` + drop (the device caching allocator).
pub(super) fn random_allocations(ctx: &Ctx) -> CliResult<Vec<Row>> {
    let (count, min, max, live_cap) = ctx.sizes().random;
    let w = &Workload::random(count, min, max, live_cap, SEED);
    let mut rows = Vec::new();
    let modes: &[bool] = if ctx.unified() { &[false] } else { &[false, true] };
    for &device in modes {
        // Managers of their own, so the statistics are this workload's alone.
        let pooled = ctx.new_manager(true)?;
        let fresh = ctx.new_manager(false)?;
        let (mut live_p, mut live_f) = (Vec::new(), Vec::new());
        // The first (cold) round fills the pool; the timed rounds are the steady state.
        w.round(&pooled, device, &mut live_p)?;
        let cold = pooled.statistics();
        let pair =
            ctx.compare(&mut || w.round(&fresh, device, &mut live_f), &mut || w.round(&pooled, device, &mut live_p))?;
        let end = pooled.statistics();
        let (requests, hits, allocations) = pool_delta(&cold, &end);
        if requests == 0 || end.active_allocations != 0 {
            return Err(wrong_data("the random-allocations workload"));
        }
        let (op, call, base) = if device {
            (
                "Random allocations (device)",
                "allocate_device + drop",
                "allocate_device + drop; nothing touched (device-only memory)",
            )
        } else {
            ("Random allocations", "allocate + touch pages + drop", "allocate + touch pages + drop")
        };
        let what = format!(
            "pooled manager, {call}: steady state (timed rounds) {:.2}% pool hits, {:.2}% allocation \
             reduction ({requests} block requests, {allocations} backend allocations); with the cold first \
             round {:.2}% hits; {}",
            percent(hits, requests),
            100.0 - percent(allocations, requests),
            end.pool_hit_rate * 100.0,
            w.describe()
        );
        let baseline =
            format!("the same workload on an unpooled manager (enable_pooling: false), {base}; per allocation");
        let mean = (w.total_bytes / w.count as u64).max(1) as usize;
        rows.push(Row::new(op, mean, baseline, what, per_pair(pair, w.count)));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic_balanced_and_capped() {
        let w = Workload::random(500, 1 << 10, 4 << 20, 32 << 20, 7);
        let again = Workload::random(500, 1 << 10, 4 << 20, 32 << 20, 7);
        assert_eq!(format!("{:?}", w.steps), format!("{:?}", again.steps));
        let mut live: Vec<usize> = Vec::new();
        let (mut bytes, mut allocs) = (0usize, 0usize);
        for s in &w.steps {
            match *s {
                Step::Alloc(n) => {
                    assert!((1 << 10..=4 << 20).contains(&n), "{n}");
                    live.push(n);
                    bytes += n;
                    allocs += 1;
                    assert!(bytes <= 32 << 20, "{bytes}");
                }
                Step::Free(i) => bytes -= live.swap_remove(i),
            }
        }
        assert!(live.is_empty());
        assert_eq!(allocs, 500);
        assert_eq!(w.count, 500);
        // Log-uniform: about as many below the geometric middle (64 KiB) as above.
        let small = w.steps.iter().filter(|s| matches!(s, Step::Alloc(n) if *n < 64 << 10)).count();
        assert!((150..350).contains(&small), "{small} of 500 below 64 KiB");
        // Allocations outnumber frees (73 %), so the live bytes reach the cap.
        assert!(w.max_live <= 32 << 20 && w.max_live > 24 << 20, "peak {}", w.max_live);
    }
}
