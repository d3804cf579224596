//! Host copies of 10 MB: ours (`upload`, `copy_from` + `ensure_on_device`, `mark_device_dirty` +
//! `copy_to`) vs `copy_from_slice` into a `Vec`, baseline beside ours in each group.
//!
//! On the CPU backend the device side is the host memory, so these measure the overhead our
//! API adds to one `memcpy`. The `sim_` group does the same on the discrete simulator, against
//! a raw `Backend::write` into a device allocation. `cargo bench -p dotcompute-memory --bench copy`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dotcompute_memory::{ManagerOptions, MemoryManager, SimOptions};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 10_000_000;

fn copy(c: &mut Criterion) {
    let mm = MemoryManager::with_backend_name("cpu", ManagerOptions::default().with_maintenance_interval(None))
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
    group.bench_function("ours_upload", |b| b.iter(|| buf.upload(black_box(&src)).expect("upload")));
    group.finish();

    // A discrete device: one copy (`upload`, the raw write) vs two (through the host part).
    let sim = MemoryManager::sim(SimOptions::default());
    let backend = sim.backend();
    let mem = backend.allocate(N, 4096).expect("sim allocate");
    let mut sbuf = sim.allocate::<u8>(N).expect("allocate");
    let mut group = c.benchmark_group("sim_host_to_device_10MB");
    group.throughput(Throughput::Bytes(N as u64));
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    group.bench_function("raw_backend_write", |b| b.iter(|| backend.write(&mem, 0, black_box(&src)).expect("write")));
    group.bench_function("ours_upload", |b| b.iter(|| sbuf.upload(black_box(&src)).expect("upload")));
    group.bench_function("ours_copy_from", |b| {
        b.iter(|| {
            sbuf.copy_from(black_box(&src)).expect("copy_from");
            sbuf.ensure_on_device().expect("ensure_on_device");
        })
    });
    group.finish();
    if sbuf.as_slice().expect("read back") != &src[..] {
        panic!("sim upload produced wrong data");
    }
    drop(sbuf);
    backend.free(mem).expect("sim free");

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
