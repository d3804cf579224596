//! The transfer engine under injected faults (the simulator fails the n-th backend call,
//! transient or permanent, at enqueue or at completion): retries, split batches, and failed
//! transfers that leave their buffers as they were.

use crate::support::data::words;
use dotcompute_memory::*;

fn sim(faults: FaultPlan) -> MemoryManager {
    MemoryManager::sim(SimOptions::default().with_faults(faults))
}

#[test]
fn transient_faults_are_retried_and_reported() {
    // Operation 1 allocates the device pool's segment; 2.. are the chunk writes.
    let mm = sim(FaultPlan::default().with_fail_nth(Some(4)).with_transient(true));
    let data = words(100_000, 2);
    let mut a = mm.allocate::<u32>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    let opts = TransferOptions::default().with_chunk_size(64 << 10).with_staging(StagingPolicy::Always);
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
    let mm = sim(FaultPlan::default().with_fail_nth(Some(3)).with_transient(false));
    let old = words(50_000, 3);
    let mut a = mm.allocate_from(&old).unwrap();
    a.ensure_on_device().unwrap(); // ops 1 (alloc) + 2 (write)
    let mut b = mm.allocate::<u32>(50_000).unwrap();
    let new_a = words(50_000, 4);
    let new_b = words(50_000, 5);
    let mut batch = TransferBatch::new();
    batch.upload(&new_a, &mut a).unwrap();
    batch.upload(&new_b, &mut b).unwrap();
    let opts = TransferOptions::default().with_max_concurrency(1).with_pipelining(false);
    let report = mm.transfer_engine().execute(batch, opts).unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let failed: Vec<_> = report.failures().map(|t| t.index).collect();
    assert_eq!(failed.len(), 1);
    let err = report.failures().next().unwrap().error.clone().unwrap().message().to_owned();
    assert!(err.contains("injected permanent fault"), "{err}");
    // The failed one keeps its old contents and state; the other one has its new data.
    let (failed_buf, failed_old, ok_buf, ok_new) =
        if failed[0] == 0 { (&a, &old, &b, &new_b) } else { (&b, &vec![0; 50_000], &a, &new_a) };
    assert_eq!(&failed_buf.to_vec().unwrap(), failed_old);
    assert_eq!(&ok_buf.to_vec().unwrap(), ok_new);
    assert_eq!(a.state() == BufferState::Synchronized, failed[0] == 0);
}

#[test]
fn a_permanently_failed_batch_is_split_into_individual_transfers() {
    // Op 1: the device segment; op 2: the batch submission, which fails permanently. The batch
    // is then split: each member is sent alone (ops 3..6), so one bad submission cannot fail
    // transfers that would have worked.
    let sim = std::sync::Arc::new(SimBackend::new(
        SimOptions::default().with_faults(FaultPlan::default().with_fail_nth(Some(2)).with_transient(false)),
    ));
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
    let sim = std::sync::Arc::new(SimBackend::new(
        SimOptions::default().with_faults(FaultPlan::default().with_fail_nth(Some(2)).with_transient(true)),
    ));
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
fn a_chunk_retried_after_a_completion_failure_resends_its_own_data() {
    // Op 1 allocates the segment; op 2 (chunk 0's write) fails when it completes.
    let sim = std::sync::Arc::new(SimBackend::new(
        SimOptions::default()
            .with_faults(FaultPlan::default().with_fail_nth(Some(2)).with_transient(true).with_on_completion(true)),
    ));
    let mm = MemoryManager::with_shared_backend(sim, ManagerOptions::default()).unwrap();
    let data: Vec<u8> = (0..4096).map(|i| (i / 1024 + 1) as u8).collect();
    let mut a = mm.allocate::<u8>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    let opts = TransferOptions::default()
        .with_chunk_size(1024)
        .with_staging_buffers(2)
        .with_batch_small_below(Some(0))
        .with_staging(StagingPolicy::Always);
    let report = mm.transfer_engine().execute(batch, opts).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.retries, 1);
    assert_eq!(a.to_vec().unwrap(), data, "every chunk holds its own bytes");
}

#[test]
fn a_download_failing_at_completion_leaves_the_buffer_as_it_was() {
    // Op 1: the device segment; op 2: the upload; op 3: the async download, failing at completion.
    let sim = std::sync::Arc::new(SimBackend::new(
        SimOptions::default()
            .with_faults(FaultPlan::default().with_fail_nth(Some(3)).with_transient(false).with_on_completion(true)),
    ));
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
fn failed_direct_transfers_leave_their_destinations_unchanged() {
    // Op 1 allocates the device segment, op 2 uploads `a`, op 3 is the engine's direct write of
    // `a`'s new contents (its target is carved from the same segment): it fails permanently.
    let sim = std::sync::Arc::new(SimBackend::new(
        SimOptions::default().with_faults(FaultPlan::default().with_fail_nth(Some(3)).with_transient(false)),
    ));
    let mm = MemoryManager::with_shared_backend(sim.clone(), ManagerOptions::default()).unwrap();
    let old = words(50_000, 11);
    let mut a = mm.allocate_from(&old).unwrap();
    a.ensure_on_device().unwrap();
    let state = a.state();
    let mut b = mm.allocate::<u32>(50_000).unwrap();
    let (new_a, new_b) = (words(50_000, 12), words(50_000, 13));
    let mut batch = TransferBatch::new();
    batch.upload(&new_a, &mut a).unwrap();
    batch.upload(&new_b, &mut b).unwrap();
    let o = TransferOptions::default().with_staging(StagingPolicy::Never).with_max_concurrency(1);
    let r = mm.transfer_engine().execute(batch, o).unwrap();
    assert_eq!(r.failed, 1, "{r:?}");
    let failed = r.failures().next().unwrap();
    assert_eq!(failed.index, 0);
    assert!(!failed.staged);
    assert!(failed.error.as_ref().unwrap().message().contains("injected permanent fault"), "{failed:?}");
    assert_eq!(a.state(), state, "the failed upload changed nothing");
    assert_eq!(a.to_vec().unwrap(), old);
    assert_eq!(b.to_vec().unwrap(), new_b, "the other transfer completed");

    // A direct batch whose one submission fails permanently is split; each member is then sent
    // on its own from the caller's slice, and all arrive.
    let sim = std::sync::Arc::new(SimBackend::new(
        SimOptions::default().with_faults(FaultPlan::default().with_fail_nth(Some(2)).with_transient(false)),
    ));
    let mm = MemoryManager::with_shared_backend(sim.clone(), ManagerOptions::default()).unwrap();
    let mut bufs: Vec<_> = (0..5).map(|_| mm.allocate_from(&[0u8; 100]).unwrap()).collect();
    let datas: Vec<Vec<u8>> = (1..=5).map(|i| vec![i as u8; 100]).collect();
    let mut batch = TransferBatch::new();
    for (b, d) in bufs.iter_mut().zip(&datas) {
        batch.upload(d, b).unwrap();
    }
    let o = TransferOptions::default().with_staging(StagingPolicy::Never);
    let r = mm.transfer_engine().execute(batch, o).unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(sim.submissions(), 6, "one failed batch, then five single writes");
    assert!(r.transfers.iter().all(|t| t.batched && !t.staged), "{r:?}");
    for (b, d) in bufs.iter().zip(&datas) {
        assert_eq!(&b.to_vec().unwrap(), d);
    }

    // A direct download failing at completion leaves its source buffer as it was.
    let sim = std::sync::Arc::new(SimBackend::new(
        SimOptions::default()
            .with_faults(FaultPlan::default().with_fail_nth(Some(3)).with_transient(false).with_on_completion(true)),
    ));
    let mm = MemoryManager::with_shared_backend(sim, ManagerOptions::default()).unwrap();
    let data = words(50_000, 14);
    let mut a = mm.allocate::<u32>(50_000).unwrap();
    a.upload(&data).unwrap(); // ops 1 (segment) and 2 (write)
    let state = a.state();
    let mut out = vec![0u32; 50_000];
    let mut batch = TransferBatch::new();
    batch.download(&a, &mut out).unwrap();
    let o = TransferOptions::default().with_staging(StagingPolicy::Never);
    let r = mm.transfer_engine().execute(batch, o).unwrap();
    assert_eq!(r.failed, 1, "{r:?}");
    assert!(!r.transfers[0].staged);
    assert_eq!(a.state(), state);
    assert_eq!(a.to_vec().unwrap(), data);
}
