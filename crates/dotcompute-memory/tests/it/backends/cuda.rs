//! CUDA backend checks. Without a GPU they verify the clean "unavailable" path (no panic, a
//! reason that says what to do); with one they exercise real device memory, streams and events,
//! and kernels on device views (the tests named `kernel_*`: a saxpy PTX kernel loaded through
//! cudarc, launched on the views' device pointers). `DCMEM_REQUIRE_CUDA=1` turns "unavailable"
//! into a failure.

use crate::support::skip;
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use dotcompute_memory::backend::cuda::CudaBackend;
use dotcompute_memory::*;
use std::sync::Arc;

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
fn peer_copies_between_gpus_or_within_one() {
    let Some(_) = cuda_backend("peer_copies_between_gpus_or_within_one") else { return };
    let devices = backend::open_devices("cuda").unwrap();
    // With one GPU, a second backend on the same device (one primary context) is the pair.
    let (a, b) = match &devices[..] {
        [a, b, ..] => (a.clone(), b.clone()),
        [a] => (a.clone(), backend::open("cuda").unwrap()),
        [] => panic!("open_devices found no CUDA device although the backend opened"),
    };
    let reach = backend::peer_matrix(&[a.clone(), b.clone()]);
    eprintln!("cuda peer copies: {} -> {}, direct: {}", a.device_label(), b.device_label(), reach[1][0]);
    if devices.len() == 1 {
        assert!(reach[1][0] && reach[0][1], "two backends on one device share its context");
    }
    let (mm_a, mm_b) = (
        MemoryManager::with_shared_backend(a, ManagerOptions::default()).unwrap(),
        MemoryManager::with_shared_backend(b, ManagerOptions::default()).unwrap(),
    );
    let data: Vec<u32> = (0..(12 << 20) / 4).collect();
    let mut src = mm_a.allocate_from(&data).unwrap();
    src.mark_device_dirty().unwrap();
    let mut dst = mm_b.allocate::<u32>(data.len()).unwrap();
    dst.copy_from_buffer(&src).unwrap();
    assert_eq!(dst.state(), BufferState::DeviceDirty);
    assert_eq!(mm_b.statistics().device_to_device.count, 1);
    assert_eq!(dst.to_vec().unwrap(), data);
    // Back the other way through a batch, whose report names the route.
    let mut back = mm_a.allocate::<u32>(data.len()).unwrap();
    dst.mark_device_dirty().unwrap();
    let mut batch = TransferBatch::new();
    batch.copy(&dst, &mut back).unwrap();
    let report = mm_a.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
    assert!(report.is_success(), "{report:?}");
    let peer = report.transfers[0].peer.clone().expect("a peer copy");
    eprintln!("cuda peer copy report: {peer:?}, {:.2} GB/s", report.peer_bandwidth[0].bandwidth / 1e9);
    assert_eq!(back.to_vec().unwrap(), data);
}

#[test]
fn expandable_segments_on_the_gpu() {
    let Some(backend) = cuda_backend("expandable_segments_on_the_gpu") else { return };
    let Some(granularity) = backend.virtual_memory_granularity() else {
        eprintln!("expandable_segments_on_the_gpu: the driver has no virtual memory management; skipped");
        return;
    };
    let mm =
        MemoryManager::with_shared_backend(backend, ManagerOptions::default().with_expandable_segments(true)).unwrap();
    let mut live = Vec::new();
    for n in [4096usize, 3 << 20, 100, 40 << 20] {
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        let mut b = mm.allocate_from(&data).unwrap();
        b.mark_device_dirty().unwrap();
        assert_eq!(b.to_vec().unwrap(), data);
        live.push(b);
    }
    let s = mm.memory_snapshot();
    assert_eq!(s.device_reserved_bytes % granularity as u64, 0, "{s}");
    eprintln!("cuda expandable segments: granularity {granularity}, {s}");
    drop(live);
    mm.trim_excess().unwrap();
    assert_eq!(mm.memory_snapshot().device_reserved_bytes, 0);
}

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

// ---- kernels on device views ----

/// `y[i] = a * x[i] + y[i]` for `i < n`; parameters (u32 n, f32 a, f32* x, f32* y).
const SAXPY_PTX: &str = include_str!("../../../examples/saxpy.ptx");

/// Loads the saxpy kernel into `ctx`.
fn saxpy(ctx: &Arc<CudaContext>) -> CudaFunction {
    ctx.load_module(Ptx::from_src(SAXPY_PTX)).unwrap().load_function("saxpy").unwrap()
}

/// The CUDA manager, a cudarc context on its device and the saxpy kernel loaded there, or
/// `None` where CUDA is unavailable. The manager is opened first: it checks for the driver,
/// while `CudaContext::new` panics without one.
fn kernel_setup(test: &str) -> Option<(MemoryManager, Arc<CudaContext>, CudaFunction)> {
    let mm = cuda_manager(test)?;
    let cuda = mm.backend().downcast_ref::<CudaBackend>().expect("the cuda manager's backend is the CUDA backend");
    let ctx = CudaContext::new(cuda.ordinal()).unwrap();
    assert_eq!(ctx.cu_ctx(), cuda.cu_context(), "both use the device's primary context");
    let f = saxpy(&ctx);
    Some((mm, ctx, f))
}

/// Enqueues saxpy over `n > 0` elements at device addresses `x` and `y` on `stream`.
fn launch_saxpy(f: &CudaFunction, stream: &CudaStream, n: usize, a: f32, x: u64, y: u64) {
    let n = u32::try_from(n).unwrap();
    assert!(n > 0, "a launch needs at least one block");
    let mut launch = stream.launch_builder(f);
    launch.arg(&n).arg(&a).arg(&x).arg(&y);
    // SAFETY: the arguments match the kernel's parameters (u32, f32, f32*, f32*), and the
    // callers pass `x` and `y` from live device views of at least `n` f32 each.
    unsafe { launch.launch(LaunchConfig::for_num_elems(n)) }.unwrap();
}

/// The view's stream as a cudarc stream, to launch on.
///
/// # Safety
///
/// `stream` must be a stream of a CUDA backend in `ctx` (its primary context) that outlives
/// the returned wrapper.
unsafe fn view_stream(ctx: &Arc<CudaContext>, stream: sys::CUstream) -> Arc<CudaStream> {
    // SAFETY: forwarded from this function's contract; the wrapper never destroys the stream.
    unsafe { ctx.wrap_borrowed_stream(stream) }
}

/// saxpy on the views' device pointers, on the views' stream: whole buffers, then slices whose
/// pointers include their offsets; contents, states and transfer counts after each.
#[test]
fn kernel_saxpy_on_whole_buffers_and_slices() {
    let Some((mm, ctx, f)) = kernel_setup("kernel_saxpy_on_whole_buffers_and_slices") else { return };
    // Whole numbers below 2^24, so every sum and product is exact in f32 on both sides.
    let n = 100_000;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let y0: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let xb = mm.allocate_from(&x).unwrap();
    let mut yb = mm.allocate_from(&y0).unwrap();
    let mut want = y0.clone();

    let (x_ptr, y_ptr) = {
        let xv = xb.device_view().unwrap();
        let yv = yb.device_view_mut(Access::ReadWrite).unwrap();
        let (xm, ym) = (xv.cuda().expect("a CUDA buffer"), yv.cuda().expect("a CUDA buffer"));
        assert_eq!((xm.byte_len, ym.byte_len), (4 * n, 4 * n));
        assert_ne!(xm.ptr, ym.ptr);
        assert_eq!((xm.ptr % 4, ym.ptr % 4), (0, 0));
        assert_eq!(xm.stream, ym.stream, "views hand out the backend's first stream");
        // SAFETY: the backend's stream in the device's primary context; `mm` outlives `stream`.
        let stream = unsafe { view_stream(&ctx, ym.stream) };
        launch_saxpy(&f, &stream, n, 2.0, xm.ptr, ym.ptr);
        (xm.ptr, ym.ptr)
    };
    want.iter_mut().zip(&x).for_each(|(y, x)| *y += 2.0 * x);
    // Both views uploaded the host data once; the read view changed no state.
    assert_eq!((xb.metrics().host_to_device, yb.metrics().host_to_device), (1, 1));
    assert_eq!(xb.state(), BufferState::Synchronized);
    assert_eq!(yb.state(), BufferState::DeviceDirty);
    assert_eq!(yb.metrics().device_to_host, 0);
    assert_eq!(yb.to_vec().unwrap(), want, "the kernel's results");
    assert_eq!(yb.metrics().device_to_host, 1);
    assert_eq!(xb.to_vec().unwrap(), x, "the read side is unchanged");

    for (start, len) in [(1, 999), (4096, 10_000), (n - 3, 3)] {
        let at = format!("slice [{start}, +{len})");
        let h2d = yb.metrics().host_to_device;
        {
            let xs = xb.slice(start..start + len).unwrap();
            let xv = xs.device_view().unwrap();
            let mut ys = yb.slice_mut(start..start + len).unwrap();
            let yv = ys.device_view_mut(Access::ReadWrite).unwrap();
            let (xm, ym) = (xv.cuda().unwrap(), yv.cuda().unwrap());
            let offset = 4 * start as u64;
            assert_eq!((xm.ptr, ym.ptr), (x_ptr + offset, y_ptr + offset), "{at}: the pointers include the offset");
            assert_eq!((xm.byte_len, ym.byte_len), (4 * len, 4 * len), "{at}");
            // SAFETY: as above.
            let stream = unsafe { view_stream(&ctx, ym.stream) };
            launch_saxpy(&f, &stream, len, -1.0, xm.ptr, ym.ptr);
        }
        want[start..start + len].iter_mut().zip(&x[start..]).for_each(|(y, x)| *y -= x);
        assert_eq!(yb.metrics().host_to_device, h2d, "{at}: the device side was current, nothing uploaded");
        assert_eq!(yb.state(), BufferState::DeviceDirty, "{at}");
        assert_eq!(yb.to_vec().unwrap(), want, "{at}: only the slice changed");
    }
}

/// Kernels launched on the view's stream, many of them so they are still running when the
/// view drops: `to_vec` right after the drop sees all of their results.
#[test]
fn kernel_a_dropped_view_orders_to_vec_after_the_kernel() {
    let Some((mm, ctx, f)) = kernel_setup("kernel_a_dropped_view_orders_to_vec_after_the_kernel") else { return };
    const LAUNCHES: usize = 100;
    let n = 1 << 24;
    let xb = mm.allocate_from(&vec![1f32; n]).unwrap();
    let mut yb = mm.allocate_from(&vec![0f32; n]).unwrap();
    {
        let xv = xb.device_view().unwrap();
        let yv = yb.device_view_mut(Access::ReadWrite).unwrap();
        let (xm, ym) = (xv.cuda().unwrap(), yv.cuda().unwrap());
        // SAFETY: the backend's stream in the device's primary context; `mm` outlives `stream`.
        let stream = unsafe { view_stream(&ctx, ym.stream) };
        for _ in 0..LAUNCHES {
            launch_saxpy(&f, &stream, n, 1.0, xm.ptr, ym.ptr);
        }
    }
    assert_eq!(yb.state(), BufferState::DeviceDirty);
    assert!(yb.to_vec().unwrap().iter().all(|&y| y == LAUNCHES as f32), "to_vec saw a kernel still running");
}

/// The view's marker event completes only after the kernels before it on the view's stream:
/// once it has, a read on the backend's other stream sees their results.
#[test]
fn kernel_the_marker_orders_other_streams_after_the_kernel() {
    let Some((mm, ctx, f)) = kernel_setup("kernel_the_marker_orders_other_streams_after_the_kernel") else {
        return;
    };
    const LAUNCHES: usize = 100;
    let b = mm.backend();
    let cuda = b.downcast_ref::<CudaBackend>().unwrap();
    assert!(b.queue_count() >= 2);
    let n = 1 << 24;
    let bytes = 4 * n;
    let (x, y) = (b.allocate(bytes, 256).unwrap(), b.allocate(bytes, 256).unwrap());
    b.write(&x, 0, bytemuck::cast_slice(&vec![1f32; n])).unwrap();
    b.fill(&y, 0, bytes, 0).unwrap();
    // SAFETY: the backend's stream in the device's primary context; `mm` outlives `stream`.
    let stream = unsafe { view_stream(&ctx, cuda.cu_stream(0)) };
    for _ in 0..LAUNCHES {
        launch_saxpy(
            &f,
            &stream,
            n,
            1.0,
            cuda.device_ptr(&x, 0, bytes).unwrap(),
            cuda.device_ptr(&y, 0, bytes).unwrap(),
        );
    }
    let marker = b.enqueue_marker(0).unwrap().expect("CUDA records a marker");
    marker.wait().unwrap();
    assert!(marker.is_complete().unwrap());
    let mut out = vec![0f32; n];
    // SAFETY: `out` is neither read nor dropped until the event has completed (waited for
    // just below).
    let read = unsafe { b.read_async(1, &y, 0, out.as_mut_ptr().cast(), bytes) }.unwrap();
    read.wait().unwrap();
    assert!(out.iter().all(|&v| v == LAUNCHES as f32), "the marker completed before the kernels");
    b.free(x).unwrap();
    b.free(y).unwrap();
}

/// Kernels on the caller's own stream: `cuda_stream_wait` orders them after the view's memory
/// is ready, `cuda_kernel_done` orders the buffer's next use after them.
#[test]
fn kernel_on_the_callers_stream_is_ordered_by_the_view() {
    let Some((mm, ctx, f)) = kernel_setup("kernel_on_the_callers_stream_is_ordered_by_the_view") else { return };
    const LAUNCHES: usize = 100;
    let n = 1 << 24;
    let stream = ctx.new_stream().unwrap();
    let xb = mm.allocate_from(&vec![1f32; n]).unwrap();
    let mut yb = mm.allocate_from(&vec![0f32; n]).unwrap();
    {
        let xv = xb.device_view().unwrap();
        let yv = yb.device_view_mut(Access::ReadWrite).unwrap();
        let (xm, ym) = (xv.cuda().unwrap(), yv.cuda().unwrap());
        assert_ne!(ym.stream, stream.cu_stream());
        xv.cuda_stream_wait(&stream).unwrap();
        yv.cuda_stream_wait(&stream).unwrap();
        for _ in 0..LAUNCHES {
            launch_saxpy(&f, &stream, n, 1.0, xm.ptr, ym.ptr);
        }
        let done = stream.record_event(None).unwrap();
        xv.cuda_kernel_done(&done).unwrap();
        yv.cuda_kernel_done(&done).unwrap();
    }
    // No synchronisation here: the buffer waits for the caller's kernels through the view.
    assert!(yb.to_vec().unwrap().iter().all(|&y| y == LAUNCHES as f32), "to_vec saw a kernel still running");

    // Views of buffers on other backends have no CUDA memory and refuse the ordering calls.
    let cpu = MemoryManager::cpu();
    let other = cpu.allocate_from(&[1f32, 2.0]).unwrap();
    let view = other.device_view().unwrap();
    assert!(view.cuda().is_none());
    assert!(matches!(view.cuda_stream_wait(&stream), Err(Error::Unsupported { .. })));
    let done = stream.record_event(None).unwrap();
    assert!(matches!(view.cuda_kernel_done(&done), Err(Error::Unsupported { .. })));
}

/// A backend on the test's own stream: views hand out that stream, the caller's kernels there
/// need no ordering calls, no call leaves a context current on a thread that had none, and the
/// stream and context still work after the backend is gone.
#[test]
fn kernel_a_backend_from_the_callers_stream() {
    let Some(probe) = cuda_manager("kernel_a_backend_from_the_callers_stream") else { return };
    let ordinal = probe.backend().downcast_ref::<CudaBackend>().unwrap().ordinal();
    drop(probe);
    let ctx = CudaContext::new(ordinal).unwrap();
    let stream = ctx.new_stream().unwrap();
    let f = saxpy(&ctx);
    let backend = CudaBackend::from_stream(stream.clone()).unwrap();
    assert_eq!((backend.queue_count(), backend.ordinal()), (1, ordinal));
    assert_eq!((backend.cu_stream(0), backend.cu_stream(1)), (stream.cu_stream(), stream.cu_stream()));
    assert_eq!(backend.cu_context(), ctx.cu_ctx());
    let mm = MemoryManager::with_backend(backend, ManagerOptions::default()).unwrap();

    std::thread::scope(|s| {
        s.spawn(|| {
            use cudarc::driver::result::ctx as current;
            assert_eq!(current::get_current().unwrap(), None, "a fresh thread has no current context");
            let mut b = mm.allocate_from(&[1f32, 2.0, 3.0]).unwrap();
            b.device_view_mut(Access::ReadWrite).map(drop).unwrap();
            assert_eq!(b.to_vec().unwrap(), vec![1.0, 2.0, 3.0]);
            drop(b);
            assert_eq!(current::get_current().unwrap(), None, "no call left a context current");
        })
        .join()
        .unwrap();
    });

    let n = 10_000;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xb = mm.allocate_from(&x).unwrap();
    let mut yb = mm.allocate_from(&vec![5f32; n]).unwrap();
    {
        let xv = xb.device_view().unwrap();
        let yv = yb.device_view_mut(Access::ReadWrite).unwrap();
        let (xm, ym) = (xv.cuda().unwrap(), yv.cuda().unwrap());
        assert_eq!(ym.stream, stream.cu_stream(), "the view's stream is the caller's");
        launch_saxpy(&f, &stream, n, 3.0, xm.ptr, ym.ptr);
    }
    let want: Vec<f32> = x.iter().map(|x| 3.0 * x + 5.0).collect();
    assert_eq!(yb.to_vec().unwrap(), want);
    drop((xb, yb, mm));

    // The backend destroyed neither the stream nor the context.
    stream.synchronize().unwrap();
    let d = stream.clone_htod(&[7f32; 4]).unwrap();
    assert_eq!(stream.clone_dtoh(&d).unwrap(), vec![7f32; 4]);
}

/// A view dropped while its stream is being captured into a graph records nothing there (an
/// event recorded in a capture cannot be waited for); the captured kernel runs when the graph
/// is launched, and the buffer's copies on that same stream come after it.
#[test]
fn kernel_views_while_the_stream_is_captured() {
    let Some(probe) = cuda_manager("kernel_views_while_the_stream_is_captured") else { return };
    let ordinal = probe.backend().downcast_ref::<CudaBackend>().unwrap().ordinal();
    drop(probe);
    let ctx = CudaContext::new(ordinal).unwrap();
    let stream = ctx.new_stream().unwrap();
    let f = saxpy(&ctx);
    let mm = MemoryManager::with_backend(CudaBackend::from_stream(stream.clone()).unwrap(), ManagerOptions::default())
        .unwrap();
    let n = 4096;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xb = mm.allocate_from(&x).unwrap();
    let mut yb = mm.allocate_from(&vec![1f32; n]).unwrap();
    let graph = {
        // Made before the capture: making a view may upload.
        let xv = xb.device_view().unwrap();
        let yv = yb.device_view_mut(Access::ReadWrite).unwrap();
        let (xm, ym) = (xv.cuda().unwrap(), yv.cuda().unwrap());
        stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).unwrap();
        launch_saxpy(&f, &stream, n, 2.0, xm.ptr, ym.ptr);
        assert!(mm.backend().enqueue_marker(0).unwrap().is_none(), "no marker on a capturing stream");
        drop((xv, yv));
        stream.end_capture(sys::CUgraphInstantiate_flags(0)).unwrap().expect("the captured kernel")
    };
    assert!(mm.backend().enqueue_marker(0).unwrap().is_some(), "a marker once the capture ended");
    graph.launch().unwrap();
    graph.launch().unwrap();
    let want: Vec<f32> = x.iter().map(|x| 4.0 * x + 1.0).collect();
    assert_eq!(yb.to_vec().unwrap(), want, "both launches of the graph, before the read on the same stream");
}

/// Without CUDA buffers there is no CUDA memory: views on cpu and sim return `None`.
#[test]
fn views_of_other_backends_have_no_cuda_memory() {
    for mm in [MemoryManager::cpu(), MemoryManager::sim(SimOptions::default())] {
        let name = mm.backend().name();
        assert!(mm.backend().downcast_ref::<CudaBackend>().is_none(), "{name}");
        let mut b = mm.allocate_from(&[1f32, 2.0, 3.0]).unwrap();
        assert!(b.device_view().unwrap().cuda().is_none(), "{name}");
        assert!(b.device_view_mut(Access::ReadWrite).unwrap().cuda().is_none(), "{name}");
        assert!(b.slice(1..).unwrap().device_view().unwrap().cuda().is_none(), "{name}");
    }
}
