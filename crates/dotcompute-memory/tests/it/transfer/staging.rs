//! Staged or direct (`StagingPolicy`): the adaptive choice (staged, then direct, then decided
//! from measurements), one-chunk transfers, asynchronous execution, batches of small uploads,
//! and pinned sources that need no staging. On the simulator and on OpenCL where available.

use crate::support::data::words;
use crate::support::managers;
use dotcompute_memory::*;

/// The discrete backends to run a case on: the simulator, and OpenCL where the feature is on and
/// a platform answers (required, so its absence fails, when `DCMEM_REQUIRE_OPENCL=1`).
fn discrete_managers() -> Vec<MemoryManager> {
    let mut v = vec![MemoryManager::sim(SimOptions::default())];
    v.extend(managers::opencl("the staged-or-direct cases", ManagerOptions::default()));
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
        let opts = TransferOptions::default().with_chunk_size(64 << 10);
        let mut a = mm.allocate::<u32>(100_000).unwrap(); // 400 KB: 7 chunks when staged
        let mut seen = Vec::new();
        for round in 0..6u32 {
            let data = words(100_000, 40 + round);
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
        let data = words(50_000, 7);
        let r = upload_report(&mm, &data, &mut a, &TransferOptions::default().with_batch_small_below(Some(0)));
        assert!(!r.transfers[0].staged && !r.transfers[0].staging_measured, "{name}: {r:?}");
        assert_eq!(a.to_vec().unwrap(), data, "{name}");
        // Always stages, in chunks; Never sends the caller's memory in one piece.
        for (policy, staged, chunks) in [(StagingPolicy::Always, true, 4), (StagingPolicy::Never, false, 1)] {
            let data = words(50_000, 8 + chunks);
            let o = TransferOptions::default()
                .with_staging(policy)
                .with_chunk_size(64 << 10)
                .with_batch_small_below(Some(0));
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
        let data = words(100_000, 9);
        let mut a = mm.allocate::<u32>(data.len()).unwrap();
        let o = TransferOptions::default().with_staging(StagingPolicy::Never).with_chunk_size(64 << 10);
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
        let smalls: Vec<Vec<u32>> = (0..10).map(|i| words(100, i)).collect();
        let mut bufs: Vec<_> = (0..10).map(|_| mm.allocate::<u32>(100).unwrap()).collect();
        let mut batch = TransferBatch::new();
        for (s, b) in smalls.iter().zip(bufs.iter_mut()) {
            batch.upload(s, b).unwrap();
        }
        let o = TransferOptions::default().with_staging(StagingPolicy::Never);
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
            let datas: Vec<Vec<u32>> = (0..150).map(|i| words(1000, i + 1000 * round)).collect();
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
