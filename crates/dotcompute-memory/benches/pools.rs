//! The pools against their baselines, baseline beside ours in each group.
//!
//! - `object_pool`: get + use + return of a `Box<[u64; 8]>` (64-byte heap object), one thread:
//!   `box_new` (a fresh object each time), `array_queue` (a `crossbeam_queue::ArrayQueue` free
//!   list), `mutex_vec` (a `Mutex<Vec<_>>` free list), `lockfree_object_pool` (the crate's
//!   `LinearObjectPool`), and ours, `object_pool` (`ObjectPool::get` + drop; also
//!   `object_pool_no_metrics`, built with `metrics(false)`, to show what the counters cost).
//! - `object_pool_2_threads`: the same, two threads on one shared instance; the time is per pair
//!   of the total throughput (wall time / pairs of both threads), thread start-up included.
//! - `array_pool`: `vec![0u8; n]` + drop against `ArrayPool::<u8>::rent(n)` + drop (default
//!   options: the reused array is not zeroed) at 1 KiB, 64 KiB and 1 MiB.
//! - `random_allocations`: an RMM-style workload (1000 allocations, log-uniform 1 KiB..4 MiB, at
//!   most 128 MiB live, 73 % allocate / 27 % free a random live buffer, the rest freed in random
//!   order) on the CPU backend: `fresh` through a manager with `enable_pooling: false`, `pooled`
//!   through the default pooled manager; each allocation writes one byte per 4 KiB page. Time is
//!   per round of 1000 allocations.
//!
//! `dcmem bench` measures the same pairs with ratios (and pool hit rates); run this for
//! criterion's statistics: `cargo bench -p dotcompute-memory --bench pools`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use crossbeam_queue::ArrayQueue;
use dotcompute_memory::{ArrayPool, ArrayPoolOptions, CpuBackend, ManagerOptions, MemoryManager, ObjectPool};
use lockfree_object_pool::LinearObjectPool;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Item = Box<[u64; 8]>;

fn new_item() -> Item {
    Box::new([0; 8])
}

#[inline(always)]
fn use_item(item: &mut [u64; 8]) {
    item[0] = item[0].wrapping_add(1);
    black_box(item);
}

/// The five ways of getting an object, each as one get + use + return.
fn box_new() {
    let mut b = new_item();
    use_item(&mut b);
}

fn array_queue(q: &ArrayQueue<Item>) {
    let mut b = q.pop().unwrap_or_else(new_item);
    use_item(&mut b);
    let _ = q.push(b);
}

fn mutex_vec(m: &Mutex<Vec<Item>>) {
    let taken = m.lock().unwrap().pop();
    let mut b = taken.unwrap_or_else(new_item);
    use_item(&mut b);
    m.lock().unwrap().push(b);
}

fn linear(p: &LinearObjectPool<Item>) {
    let mut r = p.pull();
    use_item(&mut r);
}

fn ours(p: &ObjectPool<Item>) {
    let mut o = p.get();
    use_item(&mut o);
}

/// Per pair of total throughput: two threads each run `iters` pairs of `f`.
fn two_threads(iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..iters {
                    f();
                }
            });
        }
    });
    start.elapsed() / 2
}

fn object_pool(c: &mut Criterion) {
    let queue = ArrayQueue::new(1024);
    let mutex = Mutex::new(Vec::new());
    let lockfree = LinearObjectPool::new(new_item, |_| {});
    let pool = ObjectPool::builder(new_item).build().expect("default options are valid");
    let quiet = ObjectPool::builder(new_item).metrics(false).build().expect("valid options");

    let mut group = c.benchmark_group("object_pool");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(30);
    group.bench_function("box_new", |b| b.iter(box_new));
    group.bench_function("array_queue", |b| b.iter(|| array_queue(&queue)));
    group.bench_function("mutex_vec", |b| b.iter(|| mutex_vec(&mutex)));
    group.bench_function("lockfree_object_pool", |b| b.iter(|| linear(&lockfree)));
    group.bench_function("object_pool", |b| b.iter(|| ours(&pool)));
    group.bench_function("object_pool_no_metrics", |b| b.iter(|| ours(&quiet)));
    group.finish();

    let mut group = c.benchmark_group("object_pool_2_threads");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    group.bench_function("box_new", |b| b.iter_custom(|n| two_threads(n, &box_new)));
    group.bench_function("array_queue", |b| b.iter_custom(|n| two_threads(n, &|| array_queue(&queue))));
    group.bench_function("mutex_vec", |b| b.iter_custom(|n| two_threads(n, &|| mutex_vec(&mutex))));
    group.bench_function("lockfree_object_pool", |b| b.iter_custom(|n| two_threads(n, &|| linear(&lockfree))));
    group.bench_function("object_pool", |b| b.iter_custom(|n| two_threads(n, &|| ours(&pool))));
    group.finish();
}

fn array_pool(c: &mut Criterion) {
    let pool = ArrayPool::<u8>::new(ArrayPoolOptions::default());
    let mut group = c.benchmark_group("array_pool");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(30);
    for (label, n) in [("1KiB", 1usize << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        group.bench_function(BenchmarkId::new("vec_zeroed", label), |b| {
            b.iter(|| {
                let mut v = vec![0u8; black_box(n)];
                v[0] = v[0].wrapping_add(1);
                black_box(v.as_ptr());
            })
        });
        group.bench_function(BenchmarkId::new("rent", label), |b| {
            b.iter(|| {
                let mut a = pool.rent(black_box(n)).expect("rent");
                a[0] = a[0].wrapping_add(1);
                black_box(a.as_ptr());
            })
        });
    }
    group.finish();
}

/// One step of the random-allocations workload: allocate `n` bytes, or free the `i`-th live
/// buffer (`Vec::swap_remove` order).
enum Step {
    Alloc(usize),
    Free(usize),
}

/// SplitMix64 with a fixed seed, so every run replays the same workload.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn workload(count: usize, min: usize, max: usize, live_cap: usize) -> Vec<Step> {
    let mut state = 0x5EED;
    let mut unit = || (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
    let (lo, hi) = ((min as f64).ln(), (max as f64).ln());
    let (mut steps, mut live, mut live_bytes, mut made) = (Vec::new(), Vec::<usize>::new(), 0usize, 0usize);
    let mut next = 0;
    while made < count || !live.is_empty() {
        if next == 0 && made < count {
            next = ((lo + unit() * (hi - lo)).exp().round() as usize).clamp(min, max);
        }
        let free = made == count || live_bytes + next > live_cap || unit() >= 0.73;
        if free && !live.is_empty() {
            let i = ((unit() * live.len() as f64) as usize).min(live.len() - 1);
            live_bytes -= live.swap_remove(i);
            steps.push(Step::Free(i));
        } else {
            steps.push(Step::Alloc(next));
            live.push(next);
            live_bytes += next;
            made += 1;
            next = 0;
        }
    }
    steps
}

fn random_allocations(c: &mut Criterion) {
    let opts = |pooling| ManagerOptions::default().with_enable_pooling(pooling).with_maintenance_interval(None);
    let pooled = MemoryManager::with_backend(CpuBackend::new(), opts(true)).expect("valid options");
    let fresh = MemoryManager::with_backend(CpuBackend::new(), opts(false)).expect("valid options");
    let steps = workload(1000, 1 << 10, 4 << 20, 128 << 20);
    let round = |mm: &MemoryManager| {
        let mut live = Vec::new();
        for step in &steps {
            match *step {
                Step::Alloc(n) => {
                    let mut b = mm.allocate::<u8>(n).expect("allocate");
                    let bytes = b.as_mut_slice().expect("host view");
                    for i in (0..n).step_by(4096) {
                        bytes[i] = bytes[i].wrapping_add(1);
                    }
                    live.push(b);
                }
                Step::Free(i) => drop(live.swap_remove(i)),
            }
        }
        assert!(live.is_empty());
    };
    let mut group = c.benchmark_group("random_allocations");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3)).sample_size(10);
    group.bench_function("fresh", |b| b.iter(|| round(&fresh)));
    group.bench_function("pooled", |b| b.iter(|| round(&pooled)));
    group.finish();
}

criterion_group!(benches, object_pool, array_pool, random_allocations);
criterion_main!(benches);
