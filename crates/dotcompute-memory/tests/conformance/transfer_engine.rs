//! The transfer engine on every backend: pipelined uploads, downloads and device copies, sync
//! and async, from sources in every state.

use crate::support::{bytes, in_state, same, Ctx, STATES};
use dotcompute_memory::*;

fn chunked() -> TransferOptions {
    TransferOptions::default().with_chunk_size(64 << 10)
}

pub fn engine_round_trips_from_every_state(ctx: &Ctx) {
    let n = 300_001; // odd, several chunks
    let data = bytes(n, 11);
    let fresh = bytes(n, 12);
    for from in STATES {
        let at = format!("{} from {from:?}", ctx.at());
        let mut a = in_state(&ctx.mm, &data, from);
        let mut b = in_state(&ctx.mm, &data, from);
        // Download what is there, whatever side holds it.
        let mut out = vec![0u8; n];
        let mut batch = TransferBatch::new();
        batch.download(&a, &mut out).unwrap();
        let report = ctx.mm.transfer_engine().execute(batch, chunked()).unwrap();
        assert!(report.is_success(), "{at}: {report:?}");
        same(&at, &out, &data);
        assert_eq!(a.state(), from, "{at}: a download changes nothing");
        // Upload new contents, and copy them on the device into the other buffer.
        let mut batch = TransferBatch::new();
        batch.upload(&fresh, &mut a).unwrap();
        ctx.mm.transfer_engine().execute(batch, chunked()).unwrap();
        assert!(matches!(a.state(), BufferState::DeviceDirty | BufferState::DeviceOnly), "{at}: {:?}", a.state());
        let mut batch = TransferBatch::new();
        batch.copy(&a, &mut b).unwrap();
        let report = ctx.mm.transfer_engine().execute(batch, chunked()).unwrap();
        assert_eq!(report.total_bytes, n as u64, "{at}");
        same(&at, &b.to_vec().unwrap(), &fresh);
        same(&at, &a.to_vec().unwrap(), &fresh);
    }
}

pub fn engine_async_and_concurrent(ctx: &Ctx) {
    let datas: Vec<Vec<u8>> = (0..6).map(|i| bytes(100_000 + i * 7, i as u8)).collect();
    let mut bufs: Vec<_> = datas.iter().map(|d| ctx.mm.allocate::<u8>(d.len()).unwrap()).collect();
    let mut batch = TransferBatch::new();
    for (b, d) in bufs.iter_mut().zip(&datas) {
        batch.upload(d, b).unwrap();
    }
    let opts = chunked().with_max_concurrency(3).with_batch_small_below(Some(0));
    let report = pollster::block_on(ctx.mm.transfer_engine().execute_async(batch, opts)).unwrap();
    assert!(report.is_success(), "{}: {report:?}", ctx.at());
    assert_eq!(report.transfers.len(), 6);
    for (b, d) in bufs.iter().zip(&datas) {
        same(&ctx.at(), &b.to_vec().unwrap(), d);
    }
    let s = ctx.mm.statistics();
    assert!(s.host_to_device.bytes >= datas.iter().map(|d| d.len() as u64).sum::<u64>() || ctx.unified());
}

pub fn engine_stages_through_pinned_memory_when_the_backend_has_it(ctx: &Ctx) {
    let has_pinned = ctx.mm.backend().allocate_pinned(4096).is_ok();
    let data = bytes(3 << 20, 21);
    let mut a = ctx.mm.allocate::<u8>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    let always = chunked().with_staging(StagingPolicy::Always);
    let report = ctx.mm.transfer_engine().execute(batch, always.clone()).unwrap();
    assert!(report.is_success(), "{}: {report:?}", ctx.at());
    // Unified memory never stages; a discrete device stages through pinned memory if it has any.
    assert_eq!(report.transfers[0].pinned_staging, has_pinned && !ctx.unified(), "{}", ctx.at());
    same(&ctx.at(), &a.to_vec().unwrap(), &data);
    // Without use_pinned, pageable staging is used.
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    let report = ctx.mm.transfer_engine().execute(batch, always.with_use_pinned(false)).unwrap();
    assert!(!report.transfers[0].pinned_staging, "{}", ctx.at());
}
