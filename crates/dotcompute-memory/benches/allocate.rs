//! Pooled allocation vs fresh allocation, baseline beside ours in each group; within a group
//! both sides do the same work.
//!
//! - `allocate`: allocate + drop, no page touched. `fresh`: a manager with
//!   `enable_pooling: false` on the CPU backend (each allocation is a fresh zeroed block: the
//!   backend's aligned `alloc_zeroed` below 1 MiB, an anonymous `mmap` from 1 MiB, freed on
//!   drop); `pooled`: the default pooled manager, warm pool. `malloc` (4 KiB only):
//!   `Vec::<u8>::with_capacity` + drop, untouched. `pooled_traced` (4 KiB only): the pooled
//!   manager recording its allocation trace (`ManagerOptions::trace`), against `pooled`.
//! - `allocate_touch`: the same two managers, allocate + write one byte per 4 KiB page + drop:
//!   the fresh side pays the page faults of lazily mapped memory, the pooled side finds its
//!   pages resident.
//!
//! `dcmem bench` measures the same pairs with ratios; run this for criterion's statistics:
//! `cargo bench -p dotcompute-memory --bench allocate`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dotcompute_memory::{CpuBackend, ManagerOptions, MemoryManager, TraceOptions};
use std::hint::black_box;
use std::time::Duration;

/// Writes one byte in every 4 KiB page (a store, no load).
fn touch_pages(bytes: &mut [u8]) {
    for i in (0..bytes.len()).step_by(4096) {
        bytes[i] = 1;
    }
    black_box(bytes);
}

const SIZES: [(&str, usize); 3] = [("4KiB", 4 << 10), ("1MiB", 1 << 20), ("16MiB", 16 << 20)];

fn allocate(c: &mut Criterion) {
    let opts = |pooling| ManagerOptions::default().with_enable_pooling(pooling).with_maintenance_interval(None);
    let pooled = MemoryManager::with_backend(CpuBackend::new(), opts(true)).expect("valid options");
    let fresh = MemoryManager::with_backend(CpuBackend::new(), opts(false)).expect("valid options");

    let mut group = c.benchmark_group("allocate");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    for (label, n) in SIZES {
        for (side, mm) in [("fresh", &fresh), ("pooled", &pooled)] {
            group.bench_function(BenchmarkId::new(side, label), |b| {
                b.iter(|| {
                    let buf = mm.allocate::<u8>(black_box(n)).expect("allocate");
                    black_box(&buf);
                    drop(buf);
                })
            });
        }
    }
    let traced = MemoryManager::with_backend(CpuBackend::new(), opts(true).with_trace(Some(TraceOptions::default())))
        .expect("valid options");
    group.bench_function(BenchmarkId::new("pooled_traced", "4KiB"), |b| {
        b.iter(|| {
            let buf = traced.allocate::<u8>(black_box(4 << 10)).expect("allocate");
            black_box(&buf);
            drop(buf);
        })
    });
    group.bench_function(BenchmarkId::new("malloc", "4KiB"), |b| {
        b.iter(|| {
            let v: Vec<u8> = Vec::with_capacity(black_box(4 << 10));
            black_box(v.as_ptr());
            drop(v);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("allocate_touch");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    for (label, n) in SIZES {
        for (side, mm) in [("fresh", &fresh), ("pooled", &pooled)] {
            group.bench_function(BenchmarkId::new(side, label), |b| {
                b.iter(|| {
                    let mut buf = mm.allocate::<u8>(black_box(n)).expect("allocate");
                    touch_pages(buf.as_mut_slice().expect("host view"));
                    drop(buf);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, allocate);
criterion_main!(benches);
