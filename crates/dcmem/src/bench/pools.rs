//! Rows for the pools: [`ObjectPool`] get+return against the usual ways of getting a small
//! object (one thread and two), and [`ArrayPool`] rent+return against `vec![0; n]`.
//!
//! Operations of a few nanoseconds are timed in loops of many pairs per measured call (the
//! harness's call goes through a `dyn FnMut`; the loop inside is monomorphic), and the times
//! are divided back to one pair. Two-thread rows run two persistent worker threads that start
//! together on a barrier; their time is the wall time of both, divided by the pairs of both,
//! so it is the inverse of the total throughput.

use super::ctx::Ctx;
use super::data::wrong_data;
use crate::measure::{compare, Pair, Plan};
use crate::report::Row;
use crate::CliResult;
use crossbeam_queue::ArrayQueue;
use dotcompute_memory::{ArrayPool, ArrayPoolOptions, ObjectPool};
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
pub(super) fn per_pair(pair: Pair, n: usize) -> Pair {
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

/// Single-thread get+return against each baseline, then against the fastest of them.
pub(super) fn object_pool_one_thread(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let ours = object_pool()?;
    let mut rows = Vec::new();
    for (label, base) in baselines() {
        let pair = ctx.compare(
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
        rows.push(Row::new(&op, ITEM_BYTES, label.to_string(), what, per_pair(pair, n)));
    }
    rows.extend(best_of(&rows, "Object pool get+return"));
    Ok(rows)
}

/// Two threads on one shared pool against each baseline shared the same way, then against
/// the fastest; times are ns per pair of total throughput.
pub(super) fn object_pool_two_threads(ctx: &Ctx, per_thread: usize) -> CliResult<Vec<Row>> {
    let ours = object_pool()?;
    let mut rows = Vec::new();
    for (label, base) in baselines() {
        let pair = two_threads(ctx.plan(), per_thread, &*base, &ours)?;
        let pair = per_pair(pair, 2 * per_thread);
        let what = format!(
            "ObjectPool::get + drop, 2 threads on one pool: {:.0} Mops/s total ({})",
            mops(pair.ours_ns),
            check_pool(&ours, 2)?
        );
        let baseline = format!("{label}, 2 threads on one instance: {:.0} Mops/s total", mops(pair.baseline_ns));
        let op = format!("Object pool get+return, 2 threads (vs {})", short(label));
        rows.push(Row::new(&op, ITEM_BYTES, baseline, what, pair));
    }
    rows.extend(best_of(&rows, "Object pool get+return, 2 threads"));
    Ok(rows)
}

/// `ArrayPool<u8>::rent(n)` + drop against `vec![0u8; n]` + drop, with default options and
/// with `clear_on_return`.
pub(super) fn array_pool(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let mut rows = Vec::new();
    for clear in [false, true] {
        let pool = ArrayPool::<u8>::new(ArrayPoolOptions::default().with_clear_on_return(clear));
        let pair = ctx.compare(
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
            return Err(wrong_data(&format!("ArrayPool (rents {}, hits {}, misses {})", s.rents, s.hits, s.misses)));
        }
        let (op, what) = if clear {
            (
                "Array pool rent+return (clear_on_return)",
                "ArrayPool::<u8>::rent(n) + drop, clear_on_return: true (returned arrays zeroed, like vec![0; n])",
            )
        } else {
            ("Array pool rent+return", "ArrayPool::<u8>::rent(n) + drop, default options (reused array, not zeroed)")
        };
        let what = format!("{what}; {:.2}% hits over {} rents", s.hit_rate * 100.0, s.rents);
        rows.push(Row::new(op, n, "vec![0u8; n] + drop (calloc + free), first byte written".into(), what, pair));
    }
    Ok(rows)
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
