//! The transfer engine on the simulated device and the CPU: round trips, priorities, batches of
//! small uploads, asynchronous execution, streaming from a reader, concurrent batches, and the
//! statistics and bandwidth figures transfers leave.

use crate::support::data::words;
use dotcompute_memory::*;
use std::time::Duration;

#[test]
fn upload_download_copy_round_trip_on_sim_and_cpu() {
    for mm in [MemoryManager::sim(SimOptions::default()), MemoryManager::cpu()] {
        let data = words(300_000, 1); // 1.2 MB: several 256 KiB chunks
        let mut a = mm.allocate::<u32>(data.len()).unwrap();
        let mut b = mm.allocate::<u32>(data.len()).unwrap();
        let opts = TransferOptions::default().with_chunk_size(256 << 10).with_staging(StagingPolicy::Always);
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
    let opts = TransferOptions::default().with_max_concurrency(1).with_batch_small_below(Some(0));
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
    let opts = TransferOptions::default().with_batch_small_below(Some(8192)).with_chunk_size(1 << 20);
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
    mm.transfer_engine().execute(batch, TransferOptions::default().with_batch_small_below(Some(0))).unwrap();
    assert_eq!(sim.submissions() - before, 100);
}

#[test]
fn async_execute_with_latency() {
    let mm = MemoryManager::sim(SimOptions::default().with_latency(Duration::from_millis(2)));
    let data = words(10_000, 6);
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
fn concurrent_batches_from_several_threads() {
    let mm = MemoryManager::sim(SimOptions::default().with_latency(Duration::from_micros(200)));
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let mm = mm.clone();
            s.spawn(move || {
                for round in 0..5u32 {
                    let datas: Vec<Vec<u32>> = (0..8).map(|i| words(5000 + i, t * 100 + round)).collect();
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
fn streaming_fills_a_buffer_with_progress() {
    let mm = MemoryManager::sim(SimOptions::default());
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut buf = mm.allocate::<u8>(data.len()).unwrap();
    let mut seen = Vec::new();
    let opts = TransferOptions::default().with_chunk_size(300_000);
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

#[test]
fn statistics_and_metrics_see_engine_transfers() {
    let mm = MemoryManager::sim(SimOptions::default());
    let data = words(1000, 7);
    let mut a = mm.allocate::<u32>(1000).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    mm.transfer_engine().execute(batch, TransferOptions::default().with_batch_small_below(Some(0))).unwrap();
    assert_eq!(mm.statistics().host_to_device.bytes, 4000);
    assert_eq!(a.metrics().host_to_device, 1);
}

#[test]
fn transfer_statistics_report_efficiency_against_the_best_stream() {
    // A bandwidth cap makes every large transfer run at about the same speed.
    let mm = MemoryManager::sim(SimOptions::default().with_bandwidth(Some(2e9)));
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
fn sim_bandwidth_can_differ_per_direction() {
    let mm = MemoryManager::sim(SimOptions::default().with_bandwidth(None).with_bandwidth_device_to_host(Some(2e8)));
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

#[test]
fn unified_memory_copies_inline_and_groups_small_uploads() {
    let mm = MemoryManager::cpu();
    let datas: Vec<Vec<u32>> = (0..20).map(|i| words(100, i)).collect();
    let mut bufs: Vec<_> = (0..20).map(|_| mm.allocate::<u32>(100).unwrap()).collect();
    let big = words(400_000, 99);
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
