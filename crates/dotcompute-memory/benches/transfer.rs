//! The transfer engine against the one-by-one and unpipelined ways of doing the same work,
//! baseline beside ours in each group. `cargo bench -p dotcompute-memory --bench transfer`
//! (add `--features opencl` for the OpenCL groups where a platform is installed).
//!
//! - `batched_10000x4KiB_<backend>`: 10,000 uploads of 4 KiB. `raw_write_each` is what a user
//!   writes without the engine: one blocking `Backend::write` (write + wait) per transfer, into
//!   one device allocation at consecutive offsets; `engine_execute_each` is one
//!   `TransferEngine::execute` per transfer; `engine_one_batch` is one `execute` of all 10,000.
//!   `sim` is the simulator as configured by default (no latency: a write costs a memcpy and a
//!   lock); `sim_latency10us` adds 10 µs per operation (submission and completion of one copy
//!   to a PCIe GPU take about that), to both sides alike.
//! - `pipelined_64MiB_sim_4GBps`: a 64 MiB pageable upload on a simulator capped at 4 GB/s:
//!   staged in one piece then sent (`unpipelined_staged`), pipelined through the staging ring
//!   (`pipelined_staged`), and with the default options (`default_adaptive`).
//! - `engine_10MB_<backend>`: the 10 MB upload and download, raw backend call vs engine
//!   with default options (adaptive staging).

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use dotcompute_memory::{
    ManagerOptions, MemoryManager, SimOptions, StagingPolicy, TransferBatch, TransferOptions, TransferReport,
    UnifiedBuffer,
};
use std::hint::black_box;
use std::time::Duration;

const COUNT: usize = 10_000;
const SMALL: usize = 4 << 10;

fn opts() -> ManagerOptions {
    ManagerOptions::default().with_maintenance_interval(None)
}

fn managers() -> Vec<(&'static str, MemoryManager)> {
    let mut v = vec![
        ("cpu", MemoryManager::with_backend_name("cpu", opts()).expect("cpu backend")),
        ("sim", MemoryManager::sim(SimOptions::default())),
        ("sim_latency10us", MemoryManager::sim(SimOptions::default().with_latency(Duration::from_micros(10)))),
    ];
    if cfg!(feature = "opencl") {
        match MemoryManager::with_backend_name("opencl", opts()) {
            Ok(mm) => v.push(("opencl", mm)),
            Err(e) => eprintln!("transfer bench: skipping opencl: {e}"),
        }
    }
    v
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn ok(r: TransferReport) {
    assert!(r.is_success(), "a transfer failed: {:?}", r.failures().next());
}

fn slow(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3)).sample_size(10);
}

fn batched(c: &mut Criterion) {
    let sources: Vec<Vec<u8>> = (0..COUNT).map(|i| pattern(SMALL, i as u8)).collect();
    for (name, mm) in managers() {
        let backend = mm.backend();
        let engine = mm.transfer_engine();
        let mem = backend.allocate(COUNT * SMALL, 4096).expect("allocate");
        let mut each: Vec<_> = (0..COUNT).map(|_| mm.allocate::<u8>(SMALL).expect("allocate")).collect();
        let mut ours: Vec<_> = (0..COUNT).map(|_| mm.allocate::<u8>(SMALL).expect("allocate")).collect();
        let raw_write_each = || {
            for (i, s) in sources.iter().enumerate() {
                backend.write(&mem, i * SMALL, black_box(s)).expect("write");
            }
        };
        let engine_execute_each = |bufs: &mut [UnifiedBuffer<u8>]| {
            for (s, d) in sources.iter().zip(bufs.iter_mut()) {
                let mut batch = TransferBatch::new();
                batch.upload(s, d).expect("upload");
                ok(engine.execute(batch, TransferOptions::default()).expect("execute"));
            }
        };
        let engine_one_batch = |bufs: &mut [UnifiedBuffer<u8>]| {
            let mut batch = TransferBatch::with_capacity(bufs.len());
            for (s, d) in sources.iter().zip(bufs.iter_mut()) {
                batch.upload(s, d).expect("upload");
            }
            ok(engine.execute(batch, TransferOptions::default()).expect("execute"));
        };
        // Each way once, checked, before it is timed.
        raw_write_each();
        engine_execute_each(&mut each);
        engine_one_batch(&mut ours);
        let mut back = vec![0u8; COUNT * SMALL];
        backend.read(&mem, 0, &mut back).expect("read");
        assert!(back.chunks(SMALL).zip(&sources).all(|(a, b)| a == &b[..]), "{name}: raw writes");
        for (s, (a, b)) in sources.iter().zip(each.iter().zip(&ours)) {
            assert!(a.as_slice().expect("read") == &s[..], "{name}: engine_execute_each");
            assert!(b.as_slice().expect("read") == &s[..], "{name}: engine_one_batch");
        }
        let mut group = c.benchmark_group(format!("batched_10000x4KiB_{name}"));
        group.throughput(Throughput::Bytes((COUNT * SMALL) as u64));
        slow(&mut group);
        group.bench_function("raw_write_each", |b| b.iter(raw_write_each));
        group.bench_function("engine_execute_each", |b| b.iter(|| engine_execute_each(&mut each)));
        group.bench_function("engine_one_batch", |b| b.iter(|| engine_one_batch(&mut ours)));
        group.finish();
        backend.free(mem).expect("free");
    }
}

fn pipelined(c: &mut Criterion) {
    let n = 64 << 20;
    let mm = MemoryManager::sim(SimOptions::default().with_bandwidth(Some(4e9)));
    let engine = mm.transfer_engine();
    let src = pattern(n, 7);
    let mut dst = mm.allocate::<u8>(n).expect("allocate");
    let mut group = c.benchmark_group("pipelined_64MiB_sim_4GBps");
    group.throughput(Throughput::Bytes(n as u64));
    slow(&mut group);
    let cases = [
        ("unpipelined_staged", TransferOptions::default().with_pipelining(false).with_staging(StagingPolicy::Always)),
        ("pipelined_staged", TransferOptions::default().with_staging(StagingPolicy::Always)),
        ("default_adaptive", TransferOptions::default()),
    ];
    for (name, options) in cases {
        let mut upload = || {
            let mut batch = TransferBatch::new();
            batch.upload(&src, &mut dst).expect("upload");
            ok(engine.execute(batch, options.clone()).expect("execute"));
        };
        upload();
        group.bench_function(name, |b| b.iter(&mut upload));
        assert!(dst.as_slice().expect("read") == &src[..], "{name}");
    }
    group.finish();
}

fn engine_10mb(c: &mut Criterion) {
    let n = 10_000_000;
    let src = pattern(n, 3);
    for (name, mm) in managers() {
        if name == "sim_latency10us" {
            continue;
        }
        let backend = mm.backend();
        let engine = mm.transfer_engine();
        let mem = backend.allocate(n, 4096).expect("allocate");
        let mut buf = mm.allocate::<u8>(n).expect("allocate");
        let mut out = vec![0u8; n];
        let mut group = c.benchmark_group(format!("engine_10MB_{name}"));
        group.throughput(Throughput::Bytes(n as u64));
        group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
        let mut upload = || {
            let mut batch = TransferBatch::new();
            batch.upload(&src, &mut buf).expect("upload");
            ok(engine.execute(batch, TransferOptions::default()).expect("execute"));
        };
        upload();
        group.bench_function("raw_write", |b| b.iter(|| backend.write(&mem, 0, black_box(&src)).expect("write")));
        group.bench_function("engine_upload", |b| b.iter(&mut upload));
        let download = |out: &mut [u8]| {
            let mut batch = TransferBatch::new();
            batch.download(&buf, out).expect("download");
            ok(engine.execute(batch, TransferOptions::default()).expect("execute"));
        };
        download(&mut out);
        assert!(out == src, "{name}: engine download");
        let mut raw_out = vec![0u8; n];
        group.bench_function("raw_read", |b| b.iter(|| backend.read(&mem, 0, black_box(&mut raw_out)).expect("read")));
        group.bench_function("engine_download", |b| b.iter(|| download(&mut out)));
        group.finish();
        backend.free(mem).expect("free");
    }
}

criterion_group!(benches, batched, pipelined, engine_10mb);
criterion_main!(benches);
