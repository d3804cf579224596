//! CUDA backend checks. Without a GPU they verify the clean "unavailable" path (no panic, a
//! reason that says what to do); with one they exercise real device memory, streams and events.
//! `DCMEM_REQUIRE_CUDA=1` turns "unavailable" into a failure.
#![cfg(feature = "cuda")]

use dotcompute_memory::*;

mod skip;

fn cuda_manager(test: &str) -> Option<MemoryManager> {
    match MemoryManager::with_backend_name("cuda", ManagerOptions::default()) {
        Ok(mm) => Some(mm),
        Err(e) => {
            assert!(matches!(e, Error::BackendUnavailable { .. }), "unexpected error kind: {e}");
            let msg = e.to_string();
            assert!(msg.contains("cuda"), "{msg}");
            skip::unavailable("cuda", test, &msg);
            None
        }
    }
}

#[test]
fn unavailable_is_a_clean_error_and_other_backends_still_work() {
    let cuda = cuda_manager("unavailable_is_a_clean_error_and_other_backends_still_work");
    // Whatever CUDA did, the other backends are unaffected.
    let mm = MemoryManager::cpu();
    let b = mm.allocate_from(&[1u8, 2, 3]).unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![1, 2, 3]);
    if cuda.is_none() {
        let err = backend::open("cuda").err().expect("unavailable");
        assert!(
            err.to_string().contains("libcuda")
                || err.to_string().contains("cuInit")
                || err.to_string().contains("no CUDA"),
            "{err}"
        );
    }
}

#[test]
fn round_trip_coherence_and_async_on_a_real_gpu() {
    let Some(mm) = cuda_manager("round_trip_coherence_and_async_on_a_real_gpu") else { return };
    let data: Vec<f32> = (0..1_000_000).map(|i| i as f32).collect();
    let mut a = mm.allocate_from(&data).unwrap();
    a.ensure_on_device().unwrap();
    assert_eq!(a.state(), BufferState::Synchronized);
    let mut b = mm.allocate::<f32>(data.len()).unwrap();
    b.copy_from_buffer(&a).unwrap();
    // `allocate` made a host part, which the device copy leaves stale.
    assert_eq!(b.state(), BufferState::DeviceDirty);
    assert_eq!(b.to_vec().unwrap(), data);
    b.slice_mut(10..20).unwrap().copy_from_buffer(&a.slice(0..10).unwrap()).unwrap();
    assert_eq!(&b.as_slice().unwrap()[10..20], &data[0..10]);
    let mut out = vec![0f32; data.len()];
    a.mark_device_dirty().unwrap();
    pollster::block_on(a.copy_to_async(&mut out)).unwrap();
    assert_eq!(out, data);
    pollster::block_on(a.copy_from_async(&data)).unwrap();
    assert_eq!(a.state(), BufferState::Synchronized);
    let s = mm.statistics();
    assert!(s.host_to_device.count >= 2 && s.device_to_host.count >= 1);
}

#[test]
fn oversize_allocation_reports_numbers() {
    let Some(mm) = cuda_manager("oversize_allocation_reports_numbers") else { return };
    let total = mm.backend().memory_info().total;
    // `allocate_device` allocates device memory at once (`allocate` would make only the host
    // part, and fail on the host side or not at all).
    let err = mm.allocate_device::<u8>((total as usize).saturating_mul(2)).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { backend: "cuda", .. }), "{err}");
    // The manager still works afterwards.
    assert_eq!(mm.allocate_from(&[5u8; 16]).unwrap().to_vec().unwrap(), vec![5u8; 16]);
}

#[test]
fn transfer_engine_pipelines_on_the_gpu() {
    let Some(mm) = cuda_manager("transfer_engine_pipelines_on_the_gpu") else { return };
    let data: Vec<u8> = (0..(32 << 20)).map(|i| (i % 253) as u8).collect();
    let mut a = mm.allocate::<u8>(data.len()).unwrap();
    let mut batch = TransferBatch::new();
    batch.upload(&data, &mut a).unwrap();
    let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.transfers[0].chunks, 32);
    assert_eq!(a.to_vec().unwrap(), data);
}

/// The backend itself (not a manager), or `None` where CUDA is unavailable.
fn cuda_backend(test: &str) -> Option<std::sync::Arc<dyn Backend>> {
    cuda_manager(test)?;
    Some(backend::open("cuda").unwrap())
}

/// Every call makes the backend's context current only for its duration: a thread with no
/// current context has none afterwards.
#[test]
fn the_calling_threads_current_context_is_restored() {
    use cudarc::driver::result::ctx;
    std::thread::spawn(|| {
        let Some(b) = cuda_backend("the_calling_threads_current_context_is_restored") else { return };
        assert_eq!(ctx::get_current().unwrap(), None, "a fresh thread has no current context");
        let mem = b.allocate(1 << 20, 256).unwrap();
        b.write(&mem, 0, &[1u8; 4096]).unwrap();
        assert_eq!(ctx::get_current().unwrap(), None, "allocate and write leave no context current");
        b.free(mem).unwrap();
        drop(b);
        assert_eq!(ctx::get_current().unwrap(), None);
    })
    .join()
    .unwrap();
}

/// An event and a pinned buffer keep the context and streams alive after their backend drops:
/// the copy finishes, the event waits, and `on_complete` wakes.
#[test]
fn events_and_pinned_buffers_outlive_their_backend() {
    use std::sync::mpsc;
    use std::task::{Wake, Waker};
    struct Notify(std::sync::Mutex<mpsc::Sender<()>>);
    impl Wake for Notify {
        fn wake(self: std::sync::Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }
    let Some(b) = cuda_backend("events_and_pinned_buffers_outlive_their_backend") else { return };
    let len = 64 << 20;
    let mem = b.allocate(len, 256).unwrap();
    let mut pinned = b.allocate_pinned(len).unwrap();
    pinned.bytes_mut().fill(0x5a);
    // SAFETY: `pinned` is neither written nor dropped until the event has completed below.
    let event = unsafe { b.write_async(0, &mem, 0, pinned.bytes().as_ptr(), len) }.unwrap();
    let second = b.copy_async(0, &mem, 0, &mem, len / 2, len / 2).unwrap();
    drop(b); // `mem` is never freed: it goes with the context, after the last event
    let (tx, rx) = mpsc::channel();
    second.on_complete(Waker::from(std::sync::Arc::new(Notify(std::sync::Mutex::new(tx)))));
    event.wait().unwrap();
    assert!(event.is_complete().unwrap());
    rx.recv_timeout(std::time::Duration::from_secs(30)).expect("on_complete wakes after the backend dropped");
    second.wait().unwrap();
    drop(event);
    drop(second);
    assert!(pinned.bytes().iter().all(|&x| x == 0x5a));
}

/// `free` is stream-ordered: freeing memory that a queued copy still uses waits for the copy.
#[test]
fn free_waits_for_queued_copies() {
    let Some(b) = cuda_backend("free_waits_for_queued_copies") else { return };
    let len = 64 << 20;
    let src = b.allocate(len, 256).unwrap();
    let dst = b.allocate(len, 256).unwrap();
    b.fill(&src, 0, len, 7).unwrap();
    let event = b.copy_async(0, &src, 0, &dst, 0, len).unwrap();
    b.free(src).unwrap();
    assert!(event.is_complete().unwrap(), "free returned only after the copy that reads it");
    let mut out = vec![0u8; 4096];
    b.read(&dst, len - 4096, &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 7));
    b.free(dst).unwrap();
}
