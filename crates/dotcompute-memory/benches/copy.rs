//! Host copies of 10 MB: ours (`copy_from` + `ensure_on_device`, `mark_device_dirty` +
//! `copy_to`) vs `copy_from_slice` into a `Vec`, baseline beside ours in each group.
//!
//! On the CPU backend the device side is the host memory, so these measure the overhead our
//! API adds to one `memcpy`. `cargo bench -p dotcompute-memory --bench copy`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dotcompute_memory::{ManagerOptions, MemoryManager};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 10_000_000;

fn copy(c: &mut Criterion) {
    let mm =
        MemoryManager::with_backend_name("cpu", ManagerOptions { maintenance_interval: None, ..Default::default() })
            .expect("cpu backend");
    let src: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0u8; N];
    let mut buf = mm.allocate::<u8>(N).expect("allocate");
    buf.copy_from(&src).expect("copy_from");
    buf.ensure_on_device().expect("ensure_on_device");

    let mut group = c.benchmark_group("host_to_device_10MB");
    group.throughput(Throughput::Bytes(N as u64));
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    group.bench_function("copy_from_slice", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(dst.as_ptr());
        })
    });
    group.bench_function("ours_copy_from", |b| {
        b.iter(|| {
            buf.copy_from(black_box(&src)).expect("copy_from");
            buf.ensure_on_device().expect("ensure_on_device");
        })
    });
    group.finish();

    let mut group = c.benchmark_group("device_to_host_10MB");
    group.throughput(Throughput::Bytes(N as u64));
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    group.bench_function("copy_from_slice", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(dst.as_ptr());
        })
    });
    group.bench_function("ours_copy_to", |b| {
        b.iter(|| {
            buf.mark_device_dirty().expect("mark_device_dirty");
            buf.copy_to(&mut dst).expect("copy_to");
            black_box(dst.as_ptr());
        })
    });
    group.finish();
}

criterion_group!(benches, copy);
criterion_main!(benches);
