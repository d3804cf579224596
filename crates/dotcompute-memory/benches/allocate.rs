//! Pooled allocation vs fresh allocation, baseline beside ours in each group.
//!
//! - `fresh`: a manager with `enable_pooling: false` on the CPU backend; each iteration
//!   allocates (the backend's aligned `alloc_zeroed`), writes one byte per 4 KiB page so lazily
//!   mapped memory is faulted in, and drops (the backend frees).
//! - `pooled`: the default pooled manager; allocate + drop from a warm pool (memory resident).
//! - `malloc` (4 KiB only): `Vec::<u8>::with_capacity` + drop, untouched.
//!
//! `dcmem bench` measures the same pairs with ratios; run this for criterion's statistics:
//! `cargo bench -p dotcompute-memory --bench allocate`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dotcompute_memory::{CpuBackend, ManagerOptions, MemoryManager};
use std::hint::black_box;
use std::time::Duration;

fn touch_pages(bytes: &mut [u8]) {
    for i in (0..bytes.len()).step_by(4096) {
        bytes[i] = bytes[i].wrapping_add(1);
    }
    black_box(bytes.as_ptr());
}

fn allocate(c: &mut Criterion) {
    let opts = |pooling| ManagerOptions { enable_pooling: pooling, maintenance_interval: None, ..Default::default() };
    let pooled = MemoryManager::with_backend(CpuBackend::new(), opts(true)).expect("valid options");
    let fresh = MemoryManager::with_backend(CpuBackend::new(), opts(false)).expect("valid options");

    let mut group = c.benchmark_group("allocate");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    for (label, n) in [("4KiB", 4usize << 10), ("1MiB", 1 << 20), ("16MiB", 16 << 20)] {
        group.bench_function(BenchmarkId::new("fresh", label), |b| {
            b.iter(|| {
                let mut buf = fresh.allocate::<u8>(black_box(n)).expect("allocate");
                touch_pages(buf.as_mut_slice().expect("host view"));
                drop(buf);
            })
        });
        group.bench_function(BenchmarkId::new("pooled", label), |b| {
            b.iter(|| {
                let buf = pooled.allocate::<u8>(black_box(n)).expect("allocate");
                black_box(&buf);
                drop(buf);
            })
        });
    }
    group.bench_function(BenchmarkId::new("malloc", "4KiB"), |b| {
        b.iter(|| {
            let v: Vec<u8> = Vec::with_capacity(black_box(4 << 10));
            black_box(v.as_ptr());
            drop(v);
        })
    });
    group.finish();
}

criterion_group!(benches, allocate);
criterion_main!(benches);
