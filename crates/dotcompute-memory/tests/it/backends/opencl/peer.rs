//! Copies between OpenCL backends: two backends on one context (the user's, through `from_raw`)
//! copy directly with one `clEnqueueCopyBuffer`; a backend on its own context is reached through
//! host memory.

use super::programs::{ours, own_context};
use dotcompute_memory::backend::opencl::OpenClBackend;
use dotcompute_memory::*;
use std::sync::Arc;

#[test]
fn backends_on_one_context_copy_directly_and_others_through_host_memory() {
    let Some((context, queue)) = own_context(0) else { return };
    // SAFETY: live objects of the test's, held for the calls.
    let a = unsafe { OpenClBackend::from_raw(context.get(), context.default_device(), queue.get()) }.unwrap();
    // SAFETY: as above.
    let b = unsafe { OpenClBackend::from_raw(context.get(), context.default_device(), queue.get()) }.unwrap();
    let Some(own) = ours() else { return };
    assert!(a.can_copy_from_peer(&b) && b.can_copy_from_peer(&a), "one context");
    assert!(!own.can_copy_from_peer(&a) && !a.can_copy_from_peer(&own), "two contexts");
    let options = ManagerOptions::default().with_maintenance_interval(None);
    let managers: Vec<MemoryManager> = [a, b, own]
        .into_iter()
        .map(|backend| MemoryManager::with_shared_backend(Arc::new(backend), options.clone()).unwrap())
        .collect();
    let data: Vec<f32> = (0..50_000).map(|i| i as f32 * 0.5).collect();
    let mut src = managers[0].allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut same_context = managers[1].allocate::<f32>(data.len()).unwrap();
    let mut other_context = managers[2].allocate::<f32>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.copy(&src, &mut same_context).unwrap();
    let report = managers[1].transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.transfers[0].peer.as_ref().map(|p| p.direct), Some(true));
    let mut batch = TransferBatch::new();
    batch.copy(&src, &mut other_context).unwrap();
    let report = managers[2].transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.transfers[0].peer.as_ref().map(|p| p.direct), Some(false));
    for (dst, at) in [(&same_context, "one context"), (&other_context, "two contexts")] {
        assert_eq!(dst.state(), BufferState::DeviceDirty, "{at}");
        assert_eq!(dst.to_vec().unwrap(), data, "{at}");
    }
    // A range into a range, directly.
    same_context.slice_mut(0..10).unwrap().copy_from_buffer(&src.slice(100..110).unwrap()).unwrap();
    assert_eq!(&same_context.to_vec().unwrap()[..10], &data[100..110]);
    drop(queue);
}
