//! Rows for the pools: [`ObjectPool`] get+return against the usual ways of getting a small
//! object (one thread and two), [`ArrayPool`] rent+return against `vec![0; n]`, and an
//! RMM-style random-allocations workload through the pooled manager against an unpooled one.
//!
//! Operations of a few nanoseconds are timed in loops of many pairs per measured call (the
//! harness's call goes through a `dyn FnMut`; the loop inside is monomorphic), and the times
//! are divided back to one pair. Two-thread rows run two persistent worker threads that start
//! together on a barrier; their time is the wall time of both, divided by the pairs of both,
//! so it is the inverse of the total throughput.

use super::{row, touch_pages, wrong_data, Ctx, Row};
use crate::measure::{compare, Pair, Plan};
use crate::{units, CliResult};
use crossbeam_queue::ArrayQueue;
use dotcompute_memory::{ArrayPool, ArrayPoolOptions, MemoryManager, MemoryStatistics, ObjectPool, UnifiedBuffer};
use lockfree_object_pool::LinearObjectPool;
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Barrier, Mutex};

/// The pooled object: a heap-allocated 64-byte record, what `Box::new` creates fresh.
type Item = Box<[u64; 8]>;

const ITEM_BYTES: usize = std::mem::size_of::<[u64; 8]>();

fn new_item() -> Item {
    Box::new([0; 8])
}

/// What every side does with the object it got: one write, kept observable.
#[inline(always)]
fn use_item(item: &mut [u64; 8]) {
    item[0] = item[0].wrapping_add(1);
    black_box(item);
}

/// One way of getting an object and giving it back.
trait Source: Sync {
    /// Gets an object, uses it, gives it back.
    fn pair(&self);
}

/// `Box::new` + drop: a fresh object every time (the allocator's thread cache).
struct Fresh;

impl Source for Fresh {
    #[inline]
    fn pair(&self) {
        let mut b = new_item();
        use_item(&mut b);
        drop(b);
    }
}

/// A free list in a `crossbeam_queue::ArrayQueue` (bounded lock-free MPMC queue).
struct QueueList(ArrayQueue<Item>);

impl Source for QueueList {
    #[inline]
    fn pair(&self) {
        let mut b = self.0.pop().unwrap_or_else(new_item);
        use_item(&mut b);
        // Full: the object is dropped, as a bounded pool would.
        let _ = self.0.push(b);
    }
}

/// A free list in a `Mutex<Vec<_>>`.
struct MutexList(Mutex<Vec<Item>>);

impl MutexList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Item>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Source for MutexList {
    #[inline]
    fn pair(&self) {
        let taken = self.lock().pop();
        let mut b = taken.unwrap_or_else(new_item);
        use_item(&mut b);
        self.lock().push(b);
    }
}

/// The `lockfree-object-pool` crate's `LinearObjectPool` (guard returns on drop).
struct Linear(LinearObjectPool<Item>);

impl Source for Linear {
    #[inline]
    fn pair(&self) {
        let mut r = self.0.pull();
        use_item(&mut r);
    }
}

/// Ours: `ObjectPool::get` + drop of the guard.
struct Ours(ObjectPool<Item>);

impl Source for Ours {
    #[inline]
    fn pair(&self) {
        let mut o = self.0.get();
        use_item(&mut o);
    }
}

#[inline(never)]
fn pairs<S: Source>(source: &S, n: usize) {
    for _ in 0..n {
        source.pair();
    }
}

/// Object-safe view of a [`Source`], for the list of baselines and the worker threads; the
/// timed loop inside stays monomorphic.
trait DynSource: Sync {
    fn pairs(&self, n: usize);
}

impl<S: Source> DynSource for S {
    fn pairs(&self, n: usize) {
        pairs(self, n)
    }
}

/// Every baseline of the object-pool rows with its description, each new (empty).
fn baselines() -> Vec<(&'static str, Box<dyn DynSource>)> {
    vec![
        ("Box::new + drop (a fresh object each time)", Box::new(Fresh)),
        ("crossbeam_queue::ArrayQueue free list (capacity 1024)", Box::new(QueueList(ArrayQueue::new(1024)))),
        ("Mutex<Vec> free list", Box::new(MutexList(Mutex::new(Vec::new())))),
        (
            "lockfree-object-pool 0.1 LinearObjectPool::pull + drop",
            Box::new(Linear(LinearObjectPool::new(new_item, |_| {}))),
        ),
    ]
}

/// Per-pair times from per-call times of `n` pairs.
fn per_pair(pair: Pair, n: usize) -> Pair {
    Pair { baseline_ns: pair.baseline_ns / n as f64, ours_ns: pair.ours_ns / n as f64, samples: pair.samples }
}

fn mops(ns_per_pair: f64) -> f64 {
    1e3 / ns_per_pair
}

/// `baseline` and `ours` on two worker threads at once; ns per call of `per_thread` pairs on
/// each thread (wall time).
fn two_threads(plan: &Plan, per_thread: usize, baseline: &dyn DynSource, ours: &dyn DynSource) -> CliResult<Pair> {
    const BASELINE: u8 = 0;
    const OURS: u8 = 1;
    const STOP: u8 = 2;
    let start = Barrier::new(3);
    let done = Barrier::new(3);
    let job = AtomicU8::new(STOP);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                start.wait();
                match job.load(Ordering::Acquire) {
                    BASELINE => baseline.pairs(per_thread),
                    OURS => ours.pairs(per_thread),
                    _ => return,
                }
                done.wait();
            });
        }
        let run = |which: u8| -> CliResult {
            job.store(which, Ordering::Release);
            start.wait();
            done.wait();
            Ok(())
        };
        let result = compare(plan, &mut || run(BASELINE), &mut || run(OURS));
        job.store(STOP, Ordering::Release);
        start.wait();
        result
    })
}

fn object_pool() -> CliResult<Ours> {
    Ok(Ours(ObjectPool::builder(new_item).build()?))
}

/// Checks the pool served (almost) every get from idle objects and lent nothing out for good.
fn check_pool(pool: &Ours, threads: u64) -> CliResult<String> {
    let s = pool.0.statistics();
    // Each thread creates at most what its cache and the shared tier ever held.
    if s.gets == 0 || s.in_use != 0 || s.misses > 4 * threads {
        return Err(wrong_data(&format!("ObjectPool (gets {}, misses {}, in use {})", s.gets, s.misses, s.in_use)));
    }
    Ok(format!("{:.4}% hits over {} gets, {} objects created", s.hit_rate * 100.0, s.gets, s.created))
}

/// The row that sets ours against the fastest baseline of the rows just measured.
fn best_of(rows: &[Row], operation: &str) -> Option<Row> {
    let best = rows.iter().min_by(|a, b| a.baseline_ns.total_cmp(&b.baseline_ns))?;
    Some(Row {
        operation: operation.to_string(),
        baseline: format!("fastest baseline of this run: {}", best.baseline),
        ..best.clone()
    })
}

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
pub(super) struct Workload {
    steps: Vec<Step>,
    count: usize,
    min: usize,
    max: usize,
    live_cap: usize,
    total_bytes: u64,
    max_live: usize,
}

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
    pub(super) fn random(count: usize, min: usize, max: usize, live_cap: usize, seed: u64) -> Self {
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

impl Ctx {
    /// Single-thread get+return against each baseline, then against the fastest of them.
    pub(super) fn object_pool_one_thread(&self, n: usize) -> CliResult<Vec<Row>> {
        let ours = object_pool()?;
        let mut rows = Vec::new();
        for (label, base) in baselines() {
            let pair = compare(
                &self.plan,
                &mut || {
                    base.pairs(n);
                    Ok(())
                },
                &mut || {
                    ours.pairs(n);
                    Ok(())
                },
            )?;
            let what = format!("ObjectPool::get + drop, 1 thread ({})", check_pool(&ours, 1)?);
            let op = format!("Object pool get+return (vs {})", short(label));
            rows.push(row(&op, ITEM_BYTES, label.to_string(), what, per_pair(pair, n)));
        }
        rows.extend(best_of(&rows, "Object pool get+return"));
        Ok(rows)
    }

    /// Two threads on one shared pool against each baseline shared the same way, then against
    /// the fastest; times are ns per pair of total throughput.
    pub(super) fn object_pool_two_threads(&self, per_thread: usize) -> CliResult<Vec<Row>> {
        let ours = object_pool()?;
        let mut rows = Vec::new();
        for (label, base) in baselines() {
            let pair = two_threads(&self.plan, per_thread, &*base, &ours)?;
            let pair = per_pair(pair, 2 * per_thread);
            let what = format!(
                "ObjectPool::get + drop, 2 threads on one pool: {:.0} Mops/s total ({})",
                mops(pair.ours_ns),
                check_pool(&ours, 2)?
            );
            let baseline = format!("{label}, 2 threads on one instance: {:.0} Mops/s total", mops(pair.baseline_ns));
            let op = format!("Object pool get+return, 2 threads (vs {})", short(label));
            rows.push(row(&op, ITEM_BYTES, baseline, what, pair));
        }
        rows.extend(best_of(&rows, "Object pool get+return, 2 threads"));
        Ok(rows)
    }

    /// `ArrayPool<u8>::rent(n)` + drop against `vec![0u8; n]` + drop, with default options and
    /// with `clear_on_return`.
    pub(super) fn array_pool(&self, n: usize) -> CliResult<Vec<Row>> {
        let mut rows = Vec::new();
        for clear in [false, true] {
            let pool = ArrayPool::<u8>::new(ArrayPoolOptions { clear_on_return: clear, ..Default::default() });
            let pair = compare(
                &self.plan,
                &mut || {
                    let mut v = vec![0u8; black_box(n)];
                    v[0] = v[0].wrapping_add(1);
                    black_box(v.as_ptr());
                    drop(v);
                    Ok(())
                },
                &mut || {
                    let mut a = pool.rent(black_box(n))?;
                    a[0] = a[0].wrapping_add(1);
                    black_box(a.as_ptr());
                    drop(a);
                    Ok(())
                },
            )?;
            let s = pool.statistics();
            if s.rents == 0 || s.misses > 1 || s.hits + s.misses != s.rents {
                return Err(wrong_data(&format!(
                    "ArrayPool (rents {}, hits {}, misses {})",
                    s.rents, s.hits, s.misses
                )));
            }
            let (op, what) = if clear {
                (
                    "Array pool rent+return (clear_on_return)",
                    "ArrayPool::<u8>::rent(n) + drop, clear_on_return: true (returned arrays zeroed, like vec![0; n])",
                )
            } else {
                (
                    "Array pool rent+return",
                    "ArrayPool::<u8>::rent(n) + drop, default options (reused array, not zeroed)",
                )
            };
            let what = format!("{what}; {:.2}% hits over {} rents", s.hit_rate * 100.0, s.rents);
            rows.push(row(op, n, "vec![0u8; n] + drop (calloc + free), first byte written".into(), what, pair));
        }
        Ok(rows)
    }

    /// The random-allocations workload through a pooled manager against an unpooled one on the
    /// same backend: `allocate` + touch pages + drop, and on discrete backends also
    /// `allocate_device` + drop (the device caching allocator).
    pub(super) fn random_allocations(&self, w: &Workload) -> CliResult<Vec<Row>> {
        let mut rows = Vec::new();
        let modes: &[bool] = if self.unified() { &[false] } else { &[false, true] };
        for &device in modes {
            // Managers of their own, so the statistics are this workload's alone.
            let pooled = super::manager(&self.backend, true)?;
            let fresh = super::manager(&self.backend, false)?;
            let (mut live_p, mut live_f) = (Vec::new(), Vec::new());
            // The first (cold) round fills the pool; the timed rounds are the steady state.
            w.round(&pooled, device, &mut live_p)?;
            let cold = pooled.statistics();
            let pair = compare(&self.plan, &mut || w.round(&fresh, device, &mut live_f), &mut || {
                w.round(&pooled, device, &mut live_p)
            })?;
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
            rows.push(row(op, mean, baseline, what, per_pair(pair, w.count)));
        }
        Ok(rows)
    }
}

/// A baseline's name for the row's operation.
fn short(label: &str) -> &str {
    match label {
        l if l.starts_with("Box::new") => "Box::new",
        l if l.starts_with("crossbeam_queue") => "ArrayQueue",
        l if l.starts_with("Mutex") => "Mutex<Vec>",
        l if l.starts_with("lockfree-object-pool") => "lockfree-object-pool",
        l => l,
    }
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

    #[test]
    fn every_source_reuses_or_creates_and_uses_the_object() {
        let ours = object_pool().unwrap();
        pairs(&ours, 100);
        let s = ours.0.statistics();
        assert_eq!((s.gets, s.misses, s.in_use), (100, 1, 0));
        let q = QueueList(ArrayQueue::new(4));
        pairs(&q, 10);
        assert_eq!(q.0.pop().map(|b| b[0]), Some(10), "one object reused ten times");
        let m = MutexList(Mutex::new(Vec::new()));
        pairs(&m, 10);
        assert_eq!(m.lock().iter().map(|b| b[0]).collect::<Vec<_>>(), [10]);
        let l = Linear(LinearObjectPool::new(new_item, |_| {}));
        pairs(&l, 10);
        assert_eq!(l.0.pull()[0], 10);
        assert_eq!(baselines().len(), 4);
    }

    #[test]
    fn best_of_copies_the_fastest_baseline_row() {
        let mk = |op: &str, b: f64, o: f64| Row {
            operation: op.into(),
            size_bytes: 64,
            baseline: op.into(),
            ours: "ours".into(),
            baseline_ns: b,
            ours_ns: o,
            ratio: b / o,
            samples: 3,
        };
        let rows = [mk("a", 9.0, 3.0), mk("b", 4.0, 5.0), mk("c", 6.0, 2.0)];
        let best = best_of(&rows, "best").unwrap();
        assert_eq!(best.operation, "best");
        assert_eq!((best.baseline_ns, best.ours_ns, best.ratio), (4.0, 5.0, 0.8));
        assert!(best.baseline.ends_with(": b"), "{}", best.baseline);
        assert!(best_of(&[], "x").is_none());
    }
}
