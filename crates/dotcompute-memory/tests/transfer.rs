//! The transfer engine on the simulated device (with latency and injected faults) and the CPU.

use dotcompute_memory::*;
use std::time::Duration;

mod skip;

fn pattern(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(seed)).collect()
}

fn sim(faults: FaultPlan) -> MemoryManager {
    MemoryManager::sim(SimOptions { faults, ..Default::default() })
}

#[test]
fn upload_download_copy_round_trip_on_sim_and_cpu() {
    for mm in [MemoryManager::sim(SimOptions::default()), MemoryManager::cpu()] {
        let data = pattern(300_000, 1); // 1.2 MB: several 256 KiB chunks
        let mut a = mm.allocate::<u32>(data.len()).unwrap();
        let mut b = mm.allocate::<u32>(data.len()).unwrap();
        let opts = TransferOptions { chunk_size: 256 << 10, staging: StagingPolicy::Always, ..Default::default() };
        let mut batch = TransferBatch::new();
        batch.upload(&data, &mut a).unwrap();
        let report = mm.transfer_engine().execute(batch, opts.clone()).unwrap();
        assert!(report.is_success(), "{report:?}");
        assert_eq!(report.total_bytes, 1_200_000);
        // Unified memory copies inline, in one piece; the sim sends 5 chunks.
        let unified = mm.backend().is_unified();
        assert_eq!(report.transfers[0].chunks, if unified { 1 } else { 5 });
        assert_eq!(a.state(), BufferState::DeviceDirty, "{}", mm.backend().name());

        let mut batch = TransferBatch::new();
        batch.copy(&a, &mut b).unwrap();
        let report = mm.transfer_engine().execute(batch, opts.clone()).unwrap();
        assert!(report.is_success());
        assert_eq!(report.transfers[0].direction, Direction::DeviceToDevice);

        let mut out = vec![0u32; data.len()];
        let mut batch = TransferBatch::new();
        batch.download(&b, &mut out).unwrap();
        let report = mm.transfer_engine().execute(batch, opts).unwrap();
        assert!(report.is_success());
        assert_eq!(out, data);
        assert_eq!(b.to_vec().unwrap(), data);
        assert_eq!(a.as_slice().unwrap(), &data[..]);
    }
}

#[test]
fn transient_faults_are_retried_and_reported() {
    // Operation 1 allocates the device pool's segment; 2.. are the chunk writes.
    let mm = sim(FaultPlan { fail_nth: Some(4), transient: true, ..Default::default() });
    let data = pattern(100_000, 2);
    let mut a = mm.allocate::<u32>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    let opts = TransferOptions { chunk_size: 64 << 10, staging: StagingPolicy::Always, ..Default::default() };
    let report = mm.transfer_engine().execute(batch, opts).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.retries, 1);
    assert_eq!(report.transfers[0].attempts, 2);
    assert_eq!(a.to_vec().unwrap(), data);
}

#[test]
fn a_permanent_fault_fails_one_transfer_and_leaves_its_destination_unchanged() {
    // Op 1 allocates the device pool's segment, op 2 uploads `a`; the engine's targets are
    // carved from that segment, so op 3 is the first transfer's write.
    let mm = sim(FaultPlan { fail_nth: Some(3), transient: false, ..Default::default() });
    let old = pattern(50_000, 3);
    let mut a = mm.allocate_from(&old).unwrap();
    a.ensure_on_device().unwrap(); // ops 1 (alloc) + 2 (write)
    let mut b = mm.allocate::<u32>(50_000).unwrap();
    let new_a = pattern(50_000, 4);
    let new_b = pattern(50_000, 5);
    let mut batch = TransferBatch::new();
    batch.upload(&new_a, &mut a).unwrap();
    batch.upload(&new_b, &mut b).unwrap();
    let opts = TransferOptions { max_concurrency: 1, pipelining: false, ..Default::default() };
    let report = mm.transfer_engine().execute(batch, opts).unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let failed: Vec<_> = report.failures().map(|t| t.index).collect();
    assert_eq!(failed.len(), 1);
    let err = report.failures().next().unwrap().error.clone().unwrap();
    assert!(err.contains("injected permanent fault"), "{err}");
    // The failed one keeps its old contents and state; the other one has its new data.
    let (failed_buf, failed_old, ok_buf, ok_new) =
        if failed[0] == 0 { (&a, &old, &b, &new_b) } else { (&b, &vec![0; 50_000], &a, &new_a) };
    assert_eq!(&failed_buf.to_vec().unwrap(), failed_old);
    assert_eq!(&ok_buf.to_vec().unwrap(), ok_new);
    assert_eq!(a.state() == BufferState::Synchronized, failed[0] == 0);
}

#[test]
fn priorities_start_first_without_dropping_the_rest() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut bufs: Vec<_> = (0..4).map(|_| mm.allocate::<u8>(100_000).unwrap()).collect();
    let data = vec![7u8; 100_000];
    let mut batch = TransferBatch::new();
    let mut it = bufs.iter_mut();
    batch.upload(&data, it.next().unwrap()).unwrap().with_priority(Priority::Low);
    batch.upload(&data, it.next().unwrap()).unwrap();
    batch.upload(&data, it.next().unwrap()).unwrap().with_priority(Priority::High);
    batch.upload(&data, it.next().unwrap()).unwrap();
    let opts = TransferOptions { max_concurrency: 1, batch_small_below: Some(0), ..Default::default() };
    let report = mm.transfer_engine().execute(batch, opts).unwrap();
    let order: Vec<usize> = report.transfers.iter().map(|t| t.start_order).collect();
    assert_eq!(order, vec![3, 1, 0, 2]);
    assert!(report.is_success());
    for b in &bufs {
        assert_eq!(b.to_vec().unwrap(), data);
    }
}

#[test]
fn small_uploads_are_batched() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut bufs: Vec<_> = (0..20).map(|_| mm.allocate::<u16>(100).unwrap()).collect();
    let datas: Vec<Vec<u16>> = (0..20).map(|i| vec![i as u16; 100]).collect();
    let mut batch = TransferBatch::new();
    for (b, d) in bufs.iter_mut().zip(&datas) {
        batch.upload(d, b).unwrap();
    }
    let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success());
    assert_eq!(report.batched, 20);
    assert!(report.transfers.iter().all(|t| t.batched));
    for (b, d) in bufs.iter().zip(&datas) {
        assert_eq!(&b.to_vec().unwrap(), d);
    }
}

#[test]
fn async_execute_with_latency() {
    let mm = MemoryManager::sim(SimOptions { latency: Duration::from_millis(2), ..Default::default() });
    let data = pattern(10_000, 6);
    let mut a = mm.allocate::<u32>(data.len()).unwrap();
    let mut out = vec![0u32; data.len()];
    {
        let mut batch = TransferBatch::new();
        batch.upload(&data, &mut a).unwrap();
        let report = pollster::block_on(mm.transfer_engine().execute_async(batch, TransferOptions::default())).unwrap();
        assert!(report.is_success());
    }
    let mut batch = TransferBatch::new();
    batch.download(&a, &mut out).unwrap();
    let report = pollster::block_on(mm.transfer_engine().execute_async(batch, TransferOptions::default())).unwrap();
    assert!(report.is_success());
    assert_eq!(out, data);
}

#[test]
fn streaming_fills_a_buffer_with_progress() {
    let mm = MemoryManager::sim(SimOptions::default());
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut buf = mm.allocate::<u8>(data.len()).unwrap();
    let mut seen = Vec::new();
    let opts = TransferOptions { chunk_size: 300_000, ..Default::default() };
    let report = mm
        .transfer_engine()
        .stream_to_device(&mut std::io::Cursor::new(&data), &mut buf, opts.clone(), &mut |d, t| seen.push((d, t)))
        .unwrap();
    assert!(report.is_success());
    assert_eq!(seen.last(), Some(&(1_000_000, 1_000_000)));
    assert_eq!(seen.len(), 4);
    assert_eq!(buf.to_vec().unwrap(), data);

    // A short stream fails and leaves the buffer as it was.
    let err = mm
        .transfer_engine()
        .stream_to_device(&mut std::io::Cursor::new(&data[..10]), &mut buf, opts, &mut |_, _| {})
        .unwrap_err();
    assert!(
        matches!(err, Error::ReaderLengthMismatch { expected: 1_000_000, actual: 10, at_least: false, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("exactly the buffer's size"), "{err}");
    assert_eq!(buf.to_vec().unwrap(), data);
}

/// A reader that hands out `data` at most `step` bytes per call, then `tail` more bytes of 0xEE
/// (`usize::MAX`: endlessly), optionally claiming one byte more than the buffer it was given.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
    tail: usize,
    overclaim: bool,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = if !self.data.is_empty() {
            let n = self.step.min(self.data.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            n
        } else {
            let n = self.step.min(self.tail).min(buf.len());
            buf[..n].fill(0xEE);
            self.tail = self.tail.saturating_sub(n);
            n
        };
        Ok(if self.overclaim && n > 0 { n + 1 } else { n })
    }
}

/// `stream_to_device` takes exactly the buffer's size from the reader: a reader with bytes to
/// spare, or too few, is a `ReaderLengthMismatch` naming both sizes, and the buffer keeps its
/// contents, state and epochs (nothing installed, no device memory left allocated). A reader of
/// exactly the right length succeeds however it cuts its reads.
#[test]
fn streaming_a_reader_of_the_wrong_length_fails_and_changes_nothing() {
    const BYTES: usize = 1_000_000;
    for mm in [MemoryManager::sim(SimOptions::default()), MemoryManager::cpu()] {
        let backend = mm.backend().name();
        let old = pattern(BYTES / 4, 7);
        let new: Vec<u8> = (0..BYTES).map(|i| (i % 253) as u8).collect();
        let mut buf = mm.allocate_from(&old).unwrap();
        buf.ensure_on_device().unwrap();
        let opts = TransferOptions { chunk_size: 300_000, ..Default::default() };
        let trickle = |data, step, tail, overclaim| Trickle { data, step, tail, overclaim };
        let cases: Vec<(&str, Trickle<'_>, u64, bool)> = vec![
            ("one byte more", trickle(&new, BYTES, 1, false), BYTES as u64 + 1, true),
            ("endless", trickle(&new, 4096, usize::MAX, false), BYTES as u64 + 1, true),
            ("more, in 7-byte reads", trickle(&new, 7, 100, false), BYTES as u64 + 1, true),
            ("claims more than it was given", trickle(&new, 5000, 0, true), BYTES as u64 + 1, true),
            ("one byte short", trickle(&new[..BYTES - 1], 65536, 0, false), BYTES as u64 - 1, false),
            ("short of the last chunk", trickle(&new[..600_000], 65536, 0, false), 600_000, false),
            ("empty", trickle(&[], 1, 0, false), 0, false),
        ];
        for (case, mut reader, read, longer) in cases {
            let before = (buf.to_vec().unwrap(), buf.state(), buf.epochs());
            // Device bytes handed to buffers (in use, less whole regions cached for reuse).
            let live = |mm: &MemoryManager| {
                let s = mm.memory_snapshot();
                s.in_use_bytes - s.front_cached_bytes
            };
            let live_before = live(&mm);
            let err =
                mm.transfer_engine().stream_to_device(&mut reader, &mut buf, opts.clone(), &mut |_, _| {}).unwrap_err();
            assert!(
                matches!(err, Error::ReaderLengthMismatch { operation: "stream_to_device", expected, actual, at_least }
                    if expected == BYTES as u64 && actual == read && at_least == longer),
                "{backend}, {case}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(&BYTES.to_string()) && text.contains(&read.to_string()), "{text}");
            assert_eq!((buf.to_vec().unwrap(), buf.state(), buf.epochs()), before, "{backend}, {case}: buffer changed");
            assert_eq!(live(&mm), live_before, "{backend}, {case}: the target was not released");
        }
        // Exactly the size, in uneven reads: installed.
        let report = mm
            .transfer_engine()
            .stream_to_device(&mut trickle(&new, 7777, 0, false), &mut buf, opts.clone(), &mut |_, _| {})
            .unwrap();
        assert!(report.is_success(), "{backend}: {report:?}");
        assert_eq!(bytemuck::cast_slice::<u32, u8>(&buf.to_vec().unwrap()), &new[..], "{backend}");

        // An empty buffer takes an empty reader, and refuses one with bytes.
        let mut empty = mm.allocate::<u32>(0).unwrap();
        let before = (empty.state(), empty.epochs());
        let err = mm
            .transfer_engine()
            .stream_to_device(&mut trickle(&[], 1, 3, false), &mut empty, opts.clone(), &mut |_, _| {})
            .unwrap_err();
        assert!(
            matches!(err, Error::ReaderLengthMismatch { expected: 0, actual: 1, at_least: true, .. }),
            "{backend}: {err:?}"
        );
        assert_eq!((empty.state(), empty.epochs()), before, "{backend}");
        let report =
            mm.transfer_engine().stream_to_device(&mut std::io::empty(), &mut empty, opts, &mut |_, _| {}).unwrap();
        assert!(report.is_success(), "{backend}: {report:?}");
    }
}

/// `TransferBatch::with_capacity` treats its argument as a hint: no panic or abort for sizes
/// that cannot be reserved, and the batch works.
#[test]
fn batch_capacity_hints_beyond_memory_are_ignored() {
    let mm = MemoryManager::sim(SimOptions::default());
    let data = pattern(64, 3);
    let mut a = mm.allocate::<u32>(64).unwrap();
    for hint in [usize::MAX, 1 << 50, 0] {
        let mut batch = TransferBatch::with_capacity(hint);
        assert!(batch.is_empty());
        batch.upload(&data, &mut a).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap().is_success());
    }
    assert_eq!(a.to_vec().unwrap(), data);
}

#[test]
fn bad_input_is_rejected_before_anything_moves() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut a = mm.allocate::<u32>(10).unwrap();
    {
        let mut batch = TransferBatch::new();
        assert!(matches!(batch.upload(&[1u32; 9], &mut a), Err(Error::LengthMismatch { expected: 10, actual: 9, .. })));
    }
    let other = MemoryManager::sim(SimOptions::default());
    let foreign = other.allocate::<u32>(10).unwrap();
    {
        let mut batch = TransferBatch::new();
        assert!(matches!(batch.copy(&foreign, &mut a), Err(Error::ManagerMismatch { .. })));
    }
    let data = [1u32; 10];
    for opts in [
        TransferOptions { max_concurrency: 0, ..Default::default() },
        TransferOptions { chunk_size: 0, ..Default::default() },
        TransferOptions { staging_buffers: 1, ..Default::default() },
        TransferOptions { retry: RetryPolicy { max_attempts: 0, ..Default::default() }, ..Default::default() },
    ] {
        let mut batch = TransferBatch::new();
        batch.upload(&data, &mut a).unwrap();
        assert!(matches!(mm.transfer_engine().execute(batch, opts), Err(Error::InvalidArgument { .. })));
    }
    assert_eq!(a.state(), BufferState::HostOnly);
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    assert!(matches!(
        other.transfer_engine().execute(batch, TransferOptions::default()),
        Err(Error::ManagerMismatch { .. })
    ));
    assert_eq!(a.state(), BufferState::HostOnly);
}

#[test]
fn statistics_and_metrics_see_engine_transfers() {
    let mm = MemoryManager::sim(SimOptions::default());
    let data = pattern(1000, 7);
    let mut a = mm.allocate::<u32>(1000).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    mm.transfer_engine().execute(batch, TransferOptions { batch_small_below: Some(0), ..Default::default() }).unwrap();
    assert_eq!(mm.statistics().host_to_device.bytes, 4000);
    assert_eq!(a.metrics().host_to_device, 1);
}

#[test]
fn batching_uses_fewer_submissions_than_transfers() {
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), ManagerOptions::default()).unwrap();
    let mut bufs: Vec<_> = (0..100).map(|_| mm.allocate::<u8>(4096).unwrap()).collect();
    let datas: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; 4096]).collect();
    let before = sim.submissions();
    let mut batch = TransferBatch::new();
    for (b, d) in bufs.iter_mut().zip(&datas) {
        batch.upload(d, b).unwrap();
    }
    let opts = TransferOptions { batch_small_below: Some(8192), chunk_size: 1 << 20, ..Default::default() };
    let report = mm.transfer_engine().execute(batch, opts).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.batched, 100);
    // 100 x 4 KiB fit one 1 MiB chunk, but a batch holds at most 64 members (so the device
    // targets in flight stay within the pool's front cache): two submissions.
    assert_eq!(sim.submissions() - before, 2);
    for (b, d) in bufs.iter().zip(&datas) {
        assert_eq!(&b.to_vec().unwrap(), d);
    }
    // Unbatched, the same work is 100 submissions.
    let before = sim.submissions();
    let mut batch = TransferBatch::new();
    for (b, d) in bufs.iter_mut().zip(&datas) {
        batch.upload(d, b).unwrap();
    }
    mm.transfer_engine().execute(batch, TransferOptions { batch_small_below: Some(0), ..Default::default() }).unwrap();
    assert_eq!(sim.submissions() - before, 100);
}

#[test]
fn a_permanently_failed_batch_is_split_into_individual_transfers() {
    // Op 1: the device segment; op 2: the batch submission, which fails permanently. The batch
    // is then split: each member is sent alone (ops 3..6), so one bad submission cannot fail
    // transfers that would have worked.
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(2), transient: false, ..Default::default() },
        ..Default::default()
    }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), ManagerOptions::default()).unwrap();
    let mut bufs: Vec<_> = (0..4).map(|_| mm.allocate_from(&[0u8; 100]).unwrap()).collect();
    let datas: Vec<Vec<u8>> = (1..=4).map(|i| vec![i as u8; 100]).collect();
    let mut batch = TransferBatch::new();
    for (b, d) in bufs.iter_mut().zip(&datas) {
        batch.upload(d, b).unwrap();
    }
    let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success(), "after the split every member succeeds on its own: {report:?}");
    assert_eq!(sim.submissions(), 5, "one failed batch, then four single writes");
    assert!(report.transfers.iter().all(|t| t.batched));
    for (b, d) in bufs.iter().zip(&datas) {
        assert_eq!(&b.to_vec().unwrap(), d);
    }
}

#[test]
fn transient_batch_failures_are_retried_as_one_submission() {
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(2), transient: true, ..Default::default() },
        ..Default::default()
    }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), ManagerOptions::default()).unwrap();
    let mut bufs: Vec<_> = (0..10).map(|_| mm.allocate::<u8>(1000).unwrap()).collect();
    let data = vec![9u8; 1000];
    let mut batch = TransferBatch::new();
    for b in bufs.iter_mut() {
        batch.upload(&data, b).unwrap();
    }
    let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success());
    assert_eq!(report.retries, 1);
    assert_eq!(sim.submissions(), 2, "the failed submission and its retry");
    assert!(bufs.iter().all(|b| b.to_vec().unwrap() == data));
}

#[test]
fn concurrent_batches_from_several_threads() {
    let mm = MemoryManager::sim(SimOptions { latency: Duration::from_micros(200), ..Default::default() });
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let mm = mm.clone();
            s.spawn(move || {
                for round in 0..5u32 {
                    let datas: Vec<Vec<u32>> = (0..8).map(|i| pattern(5000 + i, t * 100 + round)).collect();
                    let mut bufs: Vec<_> = datas.iter().map(|d| mm.allocate::<u32>(d.len()).unwrap()).collect();
                    let mut batch = TransferBatch::new();
                    for (b, d) in bufs.iter_mut().zip(&datas) {
                        batch.upload(d, b).unwrap();
                    }
                    let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
                    assert!(report.is_success());
                    for (b, d) in bufs.iter().zip(&datas) {
                        assert_eq!(&b.to_vec().unwrap(), d);
                    }
                }
            });
        }
    });
    assert_eq!(mm.statistics().active_allocations, 0);
}

#[test]
fn transfer_statistics_report_efficiency_against_the_best_stream() {
    // A bandwidth cap makes every large transfer run at about the same speed.
    let mm = MemoryManager::sim(SimOptions { bandwidth: Some(2e9), ..Default::default() });
    let mut a = mm.allocate::<u8>(1 << 20).unwrap();
    for _ in 0..3 {
        a.upload(&vec![1u8; 1 << 20]).unwrap();
    }
    let h2d = mm.statistics().host_to_device;
    assert_eq!(h2d.count, 3);
    assert!(h2d.peak_bandwidth_bytes_per_sec > 0.0);
    assert!(h2d.peak_bandwidth_bytes_per_sec <= 2.1e9, "{h2d:?}");
    assert!(h2d.efficiency > 0.0 && h2d.efficiency <= 1.0, "{h2d:?}");
    assert!(h2d.bandwidth_bytes_per_sec <= h2d.peak_bandwidth_bytes_per_sec * 1.0001);
}

#[test]
fn pinned_sources_skip_staging() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut src = dotcompute_memory::host::pinned::PinnedBuffer::<u32>::new(300_000).unwrap();
    for (i, x) in src.iter_mut().enumerate() {
        *x = i as u32 * 7;
    }
    let mut a = mm.allocate::<u32>(300_000).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload_pinned(&src, &mut a).unwrap();
    let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert!(!report.transfers[0].pinned_staging, "no staging at all");
    assert_eq!(report.transfers[0].chunks, 2, "1.2 MB in 1 MiB chunks, straight from the pinned source");
    assert_eq!(a.to_vec().unwrap(), src.to_vec());
    // Length mismatches are refused up front.
    let small = dotcompute_memory::host::pinned::PinnedBuffer::<u32>::new(10).unwrap();
    let mut batch = TransferBatch::new();
    assert!(matches!(
        batch.upload_pinned(&small, &mut a),
        Err(Error::LengthMismatch { operation: "upload_pinned", .. })
    ));
}

#[test]
fn a_chunk_retried_after_a_completion_failure_resends_its_own_data() {
    // Op 1 allocates the segment; op 2 (chunk 0's write) fails when it completes.
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(2), transient: true, on_completion: true, ..Default::default() },
        ..Default::default()
    }));
    let mm = MemoryManager::with_shared_backend(sim, ManagerOptions::default()).unwrap();
    let data: Vec<u8> = (0..4096).map(|i| (i / 1024 + 1) as u8).collect();
    let mut a = mm.allocate::<u8>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    let opts = TransferOptions {
        chunk_size: 1024,
        staging_buffers: 2,
        batch_small_below: Some(0),
        staging: StagingPolicy::Always,
        ..Default::default()
    };
    let report = mm.transfer_engine().execute(batch, opts).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.retries, 1);
    assert_eq!(a.to_vec().unwrap(), data, "every chunk holds its own bytes");
}

#[test]
fn a_download_failing_at_completion_leaves_the_buffer_as_it_was() {
    // Op 1: the device segment; op 2: the upload; op 3: the async download, failing at completion.
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(3), transient: false, on_completion: true, ..Default::default() },
        ..Default::default()
    }));
    let mm = MemoryManager::with_shared_backend(sim, ManagerOptions::default()).unwrap();
    let mut src = mm.allocate_from(&[7u32; 64]).unwrap();
    let mut b = mm.allocate_device::<u32>(64).unwrap();
    b.upload(src.as_slice().unwrap()).unwrap();
    assert_eq!(b.state(), BufferState::DeviceOnly);
    let mut out = vec![0u32; 64];
    let epochs = b.epochs();
    let r = pollster::block_on(b.copy_to_async(&mut out));
    assert!(
        matches!(r, Err(Error::Backend { backend: "sim", transient: false, ref message, .. }) if message.contains("injected")),
        "{r:?}"
    );
    assert_eq!(b.state(), BufferState::DeviceOnly, "the unfilled host block was not installed");
    assert_eq!(b.epochs(), epochs);
    assert_eq!(b.to_vec().unwrap(), vec![7u32; 64]);
    src.fill(0).unwrap();
}

#[test]
fn sim_bandwidth_can_differ_per_direction() {
    let mm =
        MemoryManager::sim(SimOptions { bandwidth: None, bandwidth_device_to_host: Some(2e8), ..Default::default() });
    let mut a = mm.allocate::<u8>(1 << 20).unwrap();
    a.upload(&vec![1u8; 1 << 20]).unwrap();
    let mut out = vec![0u8; 1 << 20];
    a.copy_to(&mut out).unwrap();
    let s = mm.statistics();
    // The device-to-host cap bounds read-back (a lower bound on its time, so exact); that
    // uploads are uncapped is checked on the simulator's delays, not on measured times.
    assert_eq!(s.device_to_host.count, 1, "{s:#?}");
    assert!(s.device_to_host.peak_bandwidth_bytes_per_sec <= 2e8 * 1.0001, "{s:#?}");
    assert_eq!(out, vec![1u8; 1 << 20]);
}

// ---- staged or direct (StagingPolicy) ----

/// The discrete backends to run a case on: the simulator, and OpenCL where the feature is on and
/// a platform answers (required, so its absence fails, when `DCMEM_REQUIRE_OPENCL=1`).
fn discrete_managers() -> Vec<MemoryManager> {
    let mut v = vec![MemoryManager::sim(SimOptions::default())];
    if cfg!(feature = "opencl") {
        match MemoryManager::with_backend_name("opencl", ManagerOptions::default()) {
            Ok(mm) => v.push(mm),
            Err(e) => skip::unavailable("opencl", "the staged-or-direct cases", &e),
        }
    }
    v
}

fn upload_report(mm: &MemoryManager, src: &[u32], dst: &mut UnifiedBuffer<u32>, o: &TransferOptions) -> TransferReport {
    let mut batch = TransferBatch::new();
    batch.upload(src, dst).unwrap();
    let r = mm.transfer_engine().execute(batch, o.clone()).unwrap();
    assert!(r.is_success(), "{}: {r:?}", mm.backend().name());
    r
}

#[test]
fn adaptive_staging_tries_staged_then_direct_then_decides_and_reports_it() {
    for mm in discrete_managers() {
        let name = mm.backend().name();
        let opts = TransferOptions { chunk_size: 64 << 10, ..Default::default() };
        let mut a = mm.allocate::<u32>(100_000).unwrap(); // 400 KB: 7 chunks when staged
        let mut seen = Vec::new();
        for round in 0..6u32 {
            let data = pattern(100_000, 40 + round);
            let r = upload_report(&mm, &data, &mut a, &opts);
            let t = &r.transfers[0];
            seen.push((t.staged, t.staging_measured));
            assert_eq!(t.chunks, if t.staged { 7 } else { 1 }, "{name}: direct transfers go in one piece");
            assert_eq!(r.staged, usize::from(t.staged));
            assert!(!t.pinned_staging || t.staged, "{name}: pinned staging implies staging");
            assert_eq!(a.to_vec().unwrap(), data, "{name} round {round}");
        }
        assert_eq!(seen[0], (true, false), "{name}: a fresh manager tries staging first");
        assert_eq!(seen[1], (false, false), "{name}: then direct");
        assert!(seen[2..].iter().all(|&(_, measured)| measured), "{name}: then decides from measurements: {seen:?}");
        // Downloads have their own measurements, in the same order.
        let expect = a.to_vec().unwrap();
        let mut decisions = Vec::new();
        for _ in 0..3 {
            let mut out = vec![0u32; expect.len()];
            a.mark_device_dirty().unwrap(); // the data must come from the device
            let mut batch = TransferBatch::new();
            batch.download(&a, &mut out).unwrap();
            let r = mm.transfer_engine().execute(batch, opts.clone()).unwrap();
            assert!(r.is_success(), "{name}: {r:?}");
            assert_eq!(out, expect, "{name}");
            decisions.push((r.transfers[0].staged, r.transfers[0].staging_measured));
        }
        assert_eq!(decisions[..2], [(true, false), (false, false)], "{name}");
        assert!(decisions[2].1, "{name}");
    }
}

#[test]
fn one_chunk_transfers_go_direct_and_policies_are_obeyed() {
    for mm in discrete_managers() {
        let name = mm.backend().name();
        let mut a = mm.allocate::<u32>(50_000).unwrap();
        // One chunk (200 KB under the default 1 MiB): staging could overlap nothing.
        let data = pattern(50_000, 7);
        let r =
            upload_report(&mm, &data, &mut a, &TransferOptions { batch_small_below: Some(0), ..Default::default() });
        assert!(!r.transfers[0].staged && !r.transfers[0].staging_measured, "{name}: {r:?}");
        assert_eq!(a.to_vec().unwrap(), data, "{name}");
        // Always stages, in chunks; Never sends the caller's memory in one piece.
        for (policy, staged, chunks) in [(StagingPolicy::Always, true, 4), (StagingPolicy::Never, false, 1)] {
            let data = pattern(50_000, 8 + chunks);
            let o = TransferOptions {
                staging: policy,
                chunk_size: 64 << 10,
                batch_small_below: Some(0),
                ..Default::default()
            };
            let r = upload_report(&mm, &data, &mut a, &o);
            assert_eq!((r.transfers[0].staged, r.transfers[0].chunks), (staged, chunks), "{name} {policy:?}");
            assert!(!r.transfers[0].staging_measured);
            assert_eq!(a.to_vec().unwrap(), data, "{name} {policy:?}");
            a.mark_device_dirty().unwrap();
            let mut out = vec![0u32; data.len()];
            let mut batch = TransferBatch::new();
            batch.download(&a, &mut out).unwrap();
            let r = mm.transfer_engine().execute(batch, o).unwrap();
            assert!(r.is_success() && r.transfers[0].staged == staged, "{name} {policy:?}: {r:?}");
            assert_eq!(out, data, "{name} {policy:?}");
        }
    }
}

#[test]
fn asynchronous_execution_stages_whatever_the_policy() {
    for mm in discrete_managers() {
        let name = mm.backend().name();
        let data = pattern(100_000, 9);
        let mut a = mm.allocate::<u32>(data.len()).unwrap();
        let o = TransferOptions { staging: StagingPolicy::Never, chunk_size: 64 << 10, ..Default::default() };
        let mut batch = TransferBatch::new();
        batch.upload(&data, &mut a).unwrap();
        let r = pollster::block_on(mm.transfer_engine().execute_async(batch, o.clone())).unwrap();
        assert!(r.is_success() && r.transfers[0].staged, "{name}: {r:?}");
        a.mark_device_dirty().unwrap();
        let mut out = vec![0u32; data.len()];
        let mut batch = TransferBatch::new();
        batch.download(&a, &mut out).unwrap();
        let r = pollster::block_on(mm.transfer_engine().execute_async(batch, o)).unwrap();
        assert!(r.is_success() && r.transfers[0].staged, "{name}: {r:?}");
        assert_eq!(out, data, "{name}");
        // Small uploads too: the batch is filled into staging, never read from the caller.
        let smalls: Vec<Vec<u32>> = (0..10).map(|i| pattern(100, i)).collect();
        let mut bufs: Vec<_> = (0..10).map(|_| mm.allocate::<u32>(100).unwrap()).collect();
        let mut batch = TransferBatch::new();
        for (s, b) in smalls.iter().zip(bufs.iter_mut()) {
            batch.upload(s, b).unwrap();
        }
        let o = TransferOptions { staging: StagingPolicy::Never, ..Default::default() };
        let r = pollster::block_on(mm.transfer_engine().execute_async(batch, o)).unwrap();
        assert!(r.is_success(), "{name}: {r:?}");
        assert_eq!((r.batched, r.staged), (10, 10), "{name}");
        for (s, b) in smalls.iter().zip(&bufs) {
            assert_eq!(&b.to_vec().unwrap(), s, "{name}");
        }
    }
}

#[test]
fn batches_of_small_uploads_are_staged_or_direct_and_say_which() {
    for mm in discrete_managers() {
        let name = mm.backend().name();
        let mut bufs: Vec<_> = (0..150).map(|_| mm.allocate::<u32>(1000).unwrap()).collect();
        let mut decisions = Vec::new();
        for round in 0..4u32 {
            let datas: Vec<Vec<u32>> = (0..150).map(|i| pattern(1000, i + 1000 * round)).collect();
            let mut batch = TransferBatch::new();
            for (d, b) in datas.iter().zip(bufs.iter_mut()) {
                batch.upload(d, b).unwrap();
            }
            let r = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
            assert!(r.is_success(), "{name}: {r:?}");
            assert_eq!(r.batched, 150, "{name}");
            // One decision for the whole execution, recorded on every member.
            let staged = r.transfers[0].staged;
            assert!(r.transfers.iter().all(|t| t.batched && t.staged == staged), "{name}");
            assert_eq!(r.staged, if staged { 150 } else { 0 });
            // 150 members: at most 64 per batch, so three batches, started in order.
            let batches: std::collections::BTreeSet<usize> = r.transfers.iter().map(|t| t.start_order).collect();
            assert_eq!(batches.len(), 3, "{name}");
            decisions.push((staged, r.transfers[0].staging_measured));
            for (d, b) in datas.iter().zip(&bufs) {
                assert_eq!(&b.to_vec().unwrap(), d, "{name} round {round}");
            }
        }
        assert_eq!(decisions[..2], [(true, false), (false, false)], "{name}");
        assert!(decisions[2..].iter().all(|d| d.1), "{name}: {decisions:?}");
    }
}

#[test]
fn failed_direct_transfers_leave_their_destinations_unchanged() {
    // Op 1 allocates the device segment, op 2 uploads `a`, op 3 is the engine's direct write of
    // `a`'s new contents (its target is carved from the same segment): it fails permanently.
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(3), transient: false, ..Default::default() },
        ..Default::default()
    }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), ManagerOptions::default()).unwrap();
    let old = pattern(50_000, 11);
    let mut a = mm.allocate_from(&old).unwrap();
    a.ensure_on_device().unwrap();
    let state = a.state();
    let mut b = mm.allocate::<u32>(50_000).unwrap();
    let (new_a, new_b) = (pattern(50_000, 12), pattern(50_000, 13));
    let mut batch = TransferBatch::new();
    batch.upload(&new_a, &mut a).unwrap();
    batch.upload(&new_b, &mut b).unwrap();
    let o = TransferOptions { staging: StagingPolicy::Never, max_concurrency: 1, ..Default::default() };
    let r = mm.transfer_engine().execute(batch, o).unwrap();
    assert_eq!(r.failed, 1, "{r:?}");
    let failed = r.failures().next().unwrap();
    assert_eq!(failed.index, 0);
    assert!(!failed.staged);
    assert!(failed.error.as_ref().unwrap().contains("injected permanent fault"), "{failed:?}");
    assert_eq!(a.state(), state, "the failed upload changed nothing");
    assert_eq!(a.to_vec().unwrap(), old);
    assert_eq!(b.to_vec().unwrap(), new_b, "the other transfer completed");

    // A direct batch whose one submission fails permanently is split; each member is then sent
    // on its own from the caller's slice, and all arrive.
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(2), transient: false, ..Default::default() },
        ..Default::default()
    }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), ManagerOptions::default()).unwrap();
    let mut bufs: Vec<_> = (0..5).map(|_| mm.allocate_from(&[0u8; 100]).unwrap()).collect();
    let datas: Vec<Vec<u8>> = (1..=5).map(|i| vec![i as u8; 100]).collect();
    let mut batch = TransferBatch::new();
    for (b, d) in bufs.iter_mut().zip(&datas) {
        batch.upload(d, b).unwrap();
    }
    let o = TransferOptions { staging: StagingPolicy::Never, ..Default::default() };
    let r = mm.transfer_engine().execute(batch, o).unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(sim.submissions(), 6, "one failed batch, then five single writes");
    assert!(r.transfers.iter().all(|t| t.batched && !t.staged), "{r:?}");
    for (b, d) in bufs.iter().zip(&datas) {
        assert_eq!(&b.to_vec().unwrap(), d);
    }

    // A direct download failing at completion leaves its source buffer as it was.
    let sim = std::sync::Arc::new(SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(3), transient: false, on_completion: true, ..Default::default() },
        ..Default::default()
    }));
    let mm = MemoryManager::with_shared_backend(sim, ManagerOptions::default()).unwrap();
    let data = pattern(50_000, 14);
    let mut a = mm.allocate::<u32>(50_000).unwrap();
    a.upload(&data).unwrap(); // ops 1 (segment) and 2 (write)
    let state = a.state();
    let mut out = vec![0u32; 50_000];
    let mut batch = TransferBatch::new();
    batch.download(&a, &mut out).unwrap();
    let o = TransferOptions { staging: StagingPolicy::Never, ..Default::default() };
    let r = mm.transfer_engine().execute(batch, o).unwrap();
    assert_eq!(r.failed, 1, "{r:?}");
    assert!(!r.transfers[0].staged);
    assert_eq!(a.state(), state);
    assert_eq!(a.to_vec().unwrap(), data);
}

#[test]
fn unified_memory_copies_inline_and_groups_small_uploads() {
    let mm = MemoryManager::cpu();
    let datas: Vec<Vec<u32>> = (0..20).map(|i| pattern(100, i)).collect();
    let mut bufs: Vec<_> = (0..20).map(|_| mm.allocate::<u32>(100).unwrap()).collect();
    let big = pattern(400_000, 99);
    let mut a = mm.allocate::<u32>(big.len()).unwrap();
    let mut b = mm.allocate::<u32>(big.len()).unwrap();
    let mut batch = TransferBatch::new();
    for (d, buf) in datas.iter().zip(bufs.iter_mut()) {
        batch.upload(d, buf).unwrap();
    }
    batch.upload(&big, &mut a).unwrap();
    let r = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!((r.batched, r.staged), (20, 0));
    assert!(r.transfers[..20].iter().all(|t| t.batched && t.start_order == r.transfers[0].start_order));
    assert!(!r.transfers[20].batched && r.transfers[20].chunks == 1);
    for (d, buf) in datas.iter().zip(&bufs) {
        assert_eq!(&buf.to_vec().unwrap(), d);
    }
    assert_eq!(a.state(), BufferState::DeviceDirty);
    let mut out = vec![0u32; big.len()];
    let mut batch = TransferBatch::new();
    batch.copy(&a, &mut b).unwrap();
    let r = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(r.is_success() && r.transfers[0].direction == Direction::DeviceToDevice, "{r:?}");
    let mut batch = TransferBatch::new();
    batch.download(&b, &mut out).unwrap();
    let r = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(out, big);
    assert_eq!(a.to_vec().unwrap(), big);
}
