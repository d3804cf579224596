//! Real OpenCL kernels (compiled by the driver, PoCL in CI) on device views of our buffers:
//! saxpy at element offsets, fill and an in-place scale, on whole buffers and slices, pooled
//! and fresh, on a backend this crate opened and on one made from the test's own context with
//! `OpenClBackend::from_raw`; the ordering a view's end gives; and the bad inputs of the OpenCL
//! view API.
//!
//! Each test skips with a printed reason when no OpenCL platform is present, unless
//! `DCMEM_REQUIRE_OPENCL=1`, which turns the absence into a failure.

#![cfg(feature = "opencl")]

use dotcompute_memory::backend::opencl::{OpenClBackend, OpenClOptions};
use dotcompute_memory::*;
use opencl3::command_queue::{
    enqueue_nd_range_kernel, CommandQueue, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, CL_QUEUE_PROFILING_ENABLE,
};
use opencl3::context::Context;
use opencl3::device::{Device, CL_DEVICE_PARTITION_EQUALLY};
use opencl3::event::{
    create_user_event, set_user_event_status, Event, CL_COMMAND_BARRIER, CL_COMMAND_MARKER, CL_COMPLETE,
};
use opencl3::kernel::Kernel;
use opencl3::program::Program;
use opencl3::types::{cl_command_queue, cl_event, cl_mem};
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};
use BufferState::*;

mod skip;

const SOURCE: &str = r#"
__kernel void saxpy(__global const float* x, ulong x_off, __global float* y, ulong y_off, float a, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[y_off + i] = a * x[x_off + i] + y[y_off + i];
}
__kernel void fill(__global float* y, ulong off, float v, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[off + i] = v;
}
__kernel void scale(__global float* y, ulong off, float a, ulong n) {
    size_t i = get_global_id(0);
    if (i < n) y[off + i] *= a;
}
"#;

/// The test's kernels, built for one context.
struct Kernels {
    saxpy: Kernel,
    fill: Kernel,
    scale: Kernel,
    _program: Program,
}

fn build(context: &Context) -> Kernels {
    let program = Program::create_and_build_from_source(context, SOURCE, "")
        .unwrap_or_else(|log| panic!("building the test kernels failed: {log}"));
    let kernel = |name| Kernel::create(&program, name).unwrap_or_else(|e| panic!("kernel {name}: {e}"));
    Kernels { saxpy: kernel("saxpy"), fill: kernel("fill"), scale: kernel("scale"), _program: program }
}

/// One kernel argument.
enum Arg {
    Mem(cl_mem),
    U64(u64),
    F32(f32),
}

/// Enqueues `kernel` over `n` work items on `queue` after `wait`; `None` for `n == 0` (nothing
/// to run).
fn launch(kernel: &Kernel, queue: cl_command_queue, n: usize, args: &[Arg], wait: &[cl_event]) -> Option<Event> {
    if n == 0 {
        return None;
    }
    for (i, arg) in args.iter().enumerate() {
        let i = i as u32;
        // SAFETY: each argument has the size and type of the kernel's parameter `i` (cl_mem for
        // __global pointers, u64 for ulong, f32 for float).
        let set = unsafe {
            match arg {
                Arg::Mem(m) => kernel.set_arg(i, m),
                Arg::U64(v) => kernel.set_arg(i, v),
                Arg::F32(v) => kernel.set_arg(i, v),
            }
        };
        set.unwrap_or_else(|e| panic!("argument {i}: {e}"));
    }
    let global = [n];
    let list = if wait.is_empty() { ptr::null() } else { wait.as_ptr() };
    // SAFETY: all arguments are set; the buffers are live views' memory; `global` and the wait
    // list outlive the call.
    let ev = unsafe {
        enqueue_nd_range_kernel(
            queue,
            kernel.get(),
            1,
            ptr::null(),
            global.as_ptr(),
            ptr::null(),
            wait.len() as u32,
            list,
        )
    }
    .unwrap_or_else(|code| panic!("clEnqueueNDRangeKernel failed: {code}"));
    Some(Event::new(ev))
}

/// `y = a*x + y` over the views' elements, on `queue`.
fn saxpy(
    k: &Kernels,
    x: &OpenClMemory,
    y: &OpenClMemory,
    a: f32,
    queue: cl_command_queue,
    wait: &[cl_event],
) -> Option<Event> {
    let n = y.byte_len / 4;
    let args = [
        Arg::Mem(x.mem),
        Arg::U64(x.element_offset::<f32>().unwrap() as u64),
        Arg::Mem(y.mem),
        Arg::U64(y.element_offset::<f32>().unwrap() as u64),
        Arg::F32(a),
        Arg::U64(n as u64),
    ];
    launch(&k.saxpy, queue, n, &args, wait)
}

fn fill(k: &Kernels, y: &OpenClMemory, v: f32) -> Option<Event> {
    let n = y.byte_len / 4;
    let args = [Arg::Mem(y.mem), Arg::U64(y.element_offset::<f32>().unwrap() as u64), Arg::F32(v), Arg::U64(n as u64)];
    launch(&k.fill, y.queue, n, &args, &[])
}

fn scale(k: &Kernels, y: &OpenClMemory, a: f32, wait: &[cl_event]) -> Option<Event> {
    let n = y.byte_len / 4;
    let args = [Arg::Mem(y.mem), Arg::U64(y.element_offset::<f32>().unwrap() as u64), Arg::F32(a), Arg::U64(n as u64)];
    launch(&k.scale, y.queue, n, &args, wait)
}

fn ramp(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| i as f32 * k + 1.0).collect()
}

fn transfers(b: &UnifiedBuffer<f32>) -> (u64, u64) {
    let m = b.metrics();
    (m.host_to_device, m.device_to_host)
}

fn ours() -> Option<OpenClBackend> {
    match OpenClBackend::with_options(OpenClOptions::default()) {
        Ok(b) => Some(b),
        Err(e @ Error::BackendUnavailable { .. }) => {
            skip::unavailable("opencl", "this OpenCL kernel case", &e);
            None
        }
        Err(e) => panic!("opening the OpenCL backend failed: {e}"),
    }
}

/// The backend's context as an `opencl3` `Context` holding a reference of its own, so the
/// test can build programs on it and drop it in any order with the backend.
fn context_of(b: &OpenClBackend) -> Context {
    // SAFETY: the backend's context is live; the new reference is the wrapper's, released
    // when it drops.
    unsafe { opencl3::context::context::retain_context(b.context()) }.unwrap();
    Context::new(b.context(), &[b.device_id()])
}

/// A context and an in-order queue of the test's own, on the device `ours()` picks.
fn own_context(properties: u64) -> Option<(Context, CommandQueue)> {
    let b = ours()?;
    let context = Context::from_device(&Device::new(b.device_id())).unwrap();
    // SAFETY: the context's own device; `properties` are valid queue properties.
    let queue = unsafe { CommandQueue::create_with_properties(&context, b.device_id(), properties, 0) }.unwrap();
    Some((context, queue))
}

fn pooled(backend: OpenClBackend) -> MemoryManager {
    MemoryManager::with_backend(backend, ManagerOptions::default()).unwrap()
}

fn fresh(backend: OpenClBackend) -> MemoryManager {
    MemoryManager::with_backend(backend, ManagerOptions { enable_pooling: false, ..ManagerOptions::default() }).unwrap()
}

/// The saxpy / fill / scale matrix on `mm`, whose backend's context is `context`.
fn kernels_on_buffers(mm: &MemoryManager, k: &Kernels, at: &str) {
    let n = 4096;
    let x = ramp(n, 0.25);
    let y0 = ramp(n, -0.5);
    for round in 0..2 {
        let at = format!("{at} round {round}");
        let xb = mm.allocate_from(&x).unwrap();
        let mut yb = mm.allocate_from(&y0).unwrap();

        // Whole buffers: x read, y read-write; both upload (HostOnly), the view's end makes y
        // DeviceDirty, and to_vec reads the kernel's results with one download.
        {
            let xv = xb.device_view().unwrap();
            let mut yv = yb.device_view_mut(Access::ReadWrite).unwrap();
            let (xm, ym) = (xv.opencl().unwrap(), yv.opencl().unwrap());
            assert_eq!((xm.byte_len, ym.byte_len, xm.queue), (4 * n, 4 * n, ym.queue), "{at}");
            assert_eq!((xm.byte_offset, ym.byte_offset), (xv.byte_offset(), yv.byte_offset()), "{at}");
            saxpy(k, &xm, &ym, 2.0, ym.queue, &[]).unwrap();
            assert!(yv.device_slice_mut().is_none(), "{at}: OpenCL memory is not host-addressable");
        }
        assert_eq!((xb.state(), yb.state()), (Synchronized, DeviceDirty), "{at}");
        assert_eq!((transfers(&xb), transfers(&yb)), ((1, 0), (1, 0)), "{at}: one upload each");
        let mut want: Vec<f32> = y0.iter().zip(&x).map(|(y, x)| 2.0 * x + y).collect();
        assert_eq!(yb.to_vec().unwrap(), want, "{at}: saxpy on whole buffers");
        assert_eq!(transfers(&yb), (1, 1), "{at}: to_vec downloads once");
        assert_eq!(xb.to_vec().unwrap(), x, "{at}: the read side is unchanged");
        assert_eq!(transfers(&xb), (1, 0), "{at}: x was Synchronized, read from the host");

        // Slices at element offsets: the kernel adds the element offset derived from
        // byte_offset. y is DeviceDirty, so nothing uploads; the rest of y stays as it was.
        for (start, len) in [(1, n - 1), (100, 333), (n - 7, 7), (5, 0)] {
            let at = format!("{at} slice [{start}, +{len})");
            let before = transfers(&yb);
            let xs = xb.slice(start..start + len).unwrap();
            let xv = xs.device_view().unwrap();
            let mut ys = yb.slice_mut(start..start + len).unwrap();
            let yv = ys.device_view_mut(Access::ReadWrite).unwrap();
            let (xm, ym) = (xv.opencl().unwrap(), yv.opencl().unwrap());
            assert_eq!(ym.byte_offset, yv.byte_offset(), "{at}");
            assert_eq!(ym.element_offset::<f32>(), Some(ym.byte_offset / 4), "{at}");
            saxpy(k, &xm, &ym, -1.0, ym.queue, &[]);
            drop((xv, yv));
            assert_eq!(yb.state(), DeviceDirty, "{at}");
            assert_eq!(transfers(&yb), before, "{at}: a DeviceDirty buffer uploads nothing");
            for i in start..start + len {
                want[i] -= x[i];
            }
            assert_eq!(yb.to_vec().unwrap(), want, "{at}");
        }

        // Scale in place on a slice with with_device_mut, from Synchronized (as_slice pulled).
        assert_eq!(yb.as_slice().unwrap(), &want[..], "{at}");
        assert_eq!(yb.state(), Synchronized, "{at}");
        let before = transfers(&yb);
        yb.slice_mut(10..1010)
            .unwrap()
            .with_device_mut(Access::ReadWrite, |v| scale(k, &v.opencl().unwrap(), 0.5, &[]))
            .unwrap();
        for w in &mut want[10..1010] {
            *w *= 0.5;
        }
        assert_eq!(yb.state(), DeviceDirty, "{at}");
        assert_eq!(transfers(&yb), before, "{at}: Synchronized: no upload");
        assert_eq!(yb.as_slice().unwrap(), &want[..], "{at}: scale on a slice");
        assert_eq!(transfers(&yb), (before.0, before.1 + 1), "{at}");

        // Fill with Overwrite of the whole buffer after a host write: nothing uploads.
        yb.as_mut_slice().unwrap()[0] = 99.0;
        assert_eq!(yb.state(), HostDirty, "{at}");
        let before = transfers(&yb);
        yb.with_device_mut(Access::Overwrite, |v| fill(k, &v.opencl().unwrap(), 7.0)).unwrap();
        assert_eq!(yb.state(), DeviceDirty, "{at}");
        assert_eq!(transfers(&yb), before, "{at}: Overwrite of the whole buffer never uploads");
        assert_eq!(yb.to_vec().unwrap(), vec![7.0; n], "{at}: fill");

        // Fill of a device-only buffer: stays DeviceOnly.
        let mut d = mm.allocate_device::<f32>(n).unwrap();
        d.with_device_mut(Access::Overwrite, |v| fill(k, &v.opencl().unwrap(), -3.0)).unwrap();
        assert_eq!(d.state(), DeviceOnly, "{at}");
        assert_eq!(d.to_vec().unwrap(), vec![-3.0; n], "{at}: fill of a device-only buffer");
        assert_eq!(transfers(&d), (0, 1), "{at}");
    }
}

#[test]
fn kernels_on_pooled_and_fresh_buffers_of_our_backend() {
    let Some(b) = ours() else { return };
    let context = context_of(&b);
    let k = build(&context);
    let mm = pooled(b);
    kernels_on_buffers(&mm, &k, "ours, pooled");
    assert!(mm.statistics().pool_hits > 0, "the second round reuses pooled memory");
    // Two pooled buffers share a segment: one cl_mem, different offsets.
    let a = mm.allocate_from(&[1.0f32; 64]).unwrap();
    let c = mm.allocate_from(&[2.0f32; 64]).unwrap();
    let (am, cm) = (a.device_view().unwrap().opencl().unwrap(), c.device_view().unwrap().opencl().unwrap());
    assert_eq!(am.mem, cm.mem, "small pooled buffers come from one segment");
    assert_ne!(am.byte_offset, cm.byte_offset);

    let Some(b) = ours() else { return };
    let context = context_of(&b);
    let k = build(&context);
    let mm = fresh(b);
    kernels_on_buffers(&mm, &k, "ours, fresh");
    assert_eq!(mm.statistics().pool_hits, 0, "no pooling");
}

#[test]
fn kernels_on_a_backend_from_the_users_context() {
    let Some((context, queue)) = own_context(0) else { return };
    let k = build(&context);
    // SAFETY: live objects of the test's, held for the call.
    let b = unsafe { OpenClBackend::from_raw(context.get(), context.default_device(), queue.get()) }.unwrap();
    assert_eq!(
        (b.context(), b.device_id(), b.queue(0), b.queue(1)),
        (context.get(), context.default_device(), Some(queue.get()), None)
    );
    assert_eq!(b.queue_count(), 1);
    assert!(!b.is_out_of_order(0));
    let mm = pooled(b);
    // The test's queue wrapper goes before the manager: the backend holds a reference of its own.
    let q = queue.get();
    drop(queue);
    kernels_on_buffers(&mm, &k, "from_raw, pooled");
    let v = mm.allocate_from(&[1.0f32; 16]).unwrap();
    assert_eq!(v.device_view().unwrap().opencl().unwrap().queue, q, "views hand out the user's queue");
    drop(v);
    // So do the context and the program.
    drop((k, context));
    let mut b = mm.allocate_from(&ramp(256, 1.0)).unwrap();
    b.with_device_mut(Access::ReadWrite, |_| {}).unwrap();
    assert_eq!(b.to_vec().unwrap(), ramp(256, 1.0), "the manager works after the user's objects are dropped");
    drop(b);
    drop(mm);

    // And the other order: the manager goes first, then the user's objects, still usable.
    let Some((context, queue)) = own_context(0) else { return };
    // SAFETY: as above.
    let b = unsafe { OpenClBackend::from_raw(context.get(), context.default_device(), queue.get()) }.unwrap();
    let mm = fresh(b);
    let k = build(&context);
    kernels_on_buffers(&mm, &k, "from_raw, fresh");
    drop(mm);
    queue.finish().expect("the user's queue outlives the manager");
    drop((k, queue, context));
}

#[test]
fn to_vec_right_after_the_view_waits_for_the_kernel() {
    let Some(b) = ours() else { return };
    let context = context_of(&b);
    let k = build(&context);
    let mm = pooled(b);
    let data = ramp(1 << 16, 1.0);
    let mut buf = mm.allocate_from(&data).unwrap();
    // The kernel waits for a user event that another thread completes 200 ms later, so it is
    // still queued when the view ends and to_vec starts.
    let gate = Event::new(create_user_event(context.get()).unwrap());
    {
        let v = buf.device_view_mut(Access::ReadWrite).unwrap();
        scale(&k, &v.opencl().unwrap(), 3.0, &[gate.get()]).unwrap();
    }
    let start = Instant::now();
    let raw_gate = gate.get() as usize;
    let opener = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        set_user_event_status(raw_gate as cl_event, CL_COMPLETE).unwrap();
    });
    let got = buf.to_vec().unwrap();
    let waited = start.elapsed();
    opener.join().unwrap();
    assert_eq!(got, data.iter().map(|x| x * 3.0).collect::<Vec<_>>(), "to_vec sees the kernel's results");
    assert!(waited >= Duration::from_millis(150), "to_vec returned after {waited:?}, before the kernel could run");
    assert_eq!(buf.state(), DeviceDirty);
    assert_eq!(transfers(&buf), (1, 1));
}

#[test]
fn a_kernel_on_the_users_own_queue_is_ordered_by_its_completion_event() {
    let Some(b) = ours() else { return };
    let context = context_of(&b);
    let k = build(&context);
    // A second queue of the test's, in the backend's context.
    // SAFETY: the context's own device.
    let user_queue = unsafe { CommandQueue::create_with_properties(&context, context.default_device(), 0, 0) }.unwrap();
    let mm = pooled(b);
    let x = ramp(5000, 0.5);
    let y = ramp(5000, 2.0);
    let xb = mm.allocate_from(&x).unwrap();
    let mut yb = mm.allocate_from(&y).unwrap();
    let gate = Event::new(create_user_event(context.get()).unwrap());
    {
        let xv = xb.device_view().unwrap();
        let mut ys = yb.slice_mut(64..4064).unwrap();
        let mut yv = ys.device_view_mut(Access::ReadWrite).unwrap();
        let xs_ready = xv.opencl_ready_event().unwrap();
        let ys_ready = yv.opencl_ready_event().unwrap();
        assert_eq!(xs_ready.command_type().unwrap(), CL_COMMAND_MARKER);
        let wait = [xs_ready.as_raw(), ys_ready.as_raw(), gate.get()];
        let mut xm = xv.opencl().unwrap();
        // x over the same range as the y slice.
        xm.byte_offset += 64 * 4;
        let done = saxpy(&k, &xm, &yv.opencl().unwrap(), 10.0, user_queue.get(), &wait).unwrap();
        yv.opencl_completed_by(&done).unwrap();
    }
    let raw_gate = gate.get() as usize;
    let start = Instant::now();
    let opener = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        set_user_event_status(raw_gate as cl_event, CL_COMPLETE).unwrap();
    });
    let got = yb.to_vec().unwrap();
    let waited = start.elapsed();
    opener.join().unwrap();
    let mut want = y.clone();
    for i in 64..4064 {
        want[i] += 10.0 * x[i];
    }
    assert_eq!(got, want, "to_vec waited for the user's kernel");
    assert!(waited >= Duration::from_millis(150), "returned after {waited:?}");
    assert_eq!(yb.state(), DeviceDirty);
}

#[test]
fn the_marker_is_a_barrier_on_an_out_of_order_queue() {
    let Some((context, queue)) = own_context(CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE | CL_QUEUE_PROFILING_ENABLE) else {
        return;
    };
    // SAFETY: live objects of the test's.
    let b = unsafe { OpenClBackend::from_raw(context.get(), context.default_device(), queue.get()) }.unwrap();
    assert!(b.is_out_of_order(0));
    assert_eq!(b.marker(0).unwrap().command_type().unwrap(), CL_COMMAND_BARRIER);
    let Some(ours) = ours() else { return };
    assert!(!ours.is_out_of_order(0));
    assert_eq!(ours.marker(1).unwrap().command_type().unwrap(), CL_COMMAND_MARKER);

    // Overlapping copies within one allocation go through a temporary, the second copy waiting
    // for the first through its wait list: memmove's result on an out-of-order queue too.
    let src: Vec<u8> = (0..=255).collect();
    let m = b.allocate(256, 64).unwrap();
    b.write(&m, 0, &src).unwrap();
    b.copy(&m, 0, &m, 8, 200).unwrap();
    let mut out = vec![0u8; 256];
    b.read(&m, 0, &mut out).unwrap();
    let mut want = src.clone();
    want.copy_within(0..200, 8);
    assert_eq!(out, want, "overlapping copy on an out-of-order queue");
    b.free(m).unwrap();

    let k = build(&context);
    let mm = pooled(b);
    let data = ramp(1 << 15, 1.0);
    let mut buf = mm.allocate_from(&data).unwrap();
    let gate = Event::new(create_user_event(context.get()).unwrap());
    {
        let v = buf.device_view_mut(Access::ReadWrite).unwrap();
        scale(&k, &v.opencl().unwrap(), -2.0, &[gate.get()]).unwrap();
    }
    let raw_gate = gate.get() as usize;
    let opener = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        set_user_event_status(raw_gate as cl_event, CL_COMPLETE).unwrap();
    });
    let got = buf.to_vec().unwrap();
    opener.join().unwrap();
    assert_eq!(
        got,
        data.iter().map(|x| x * -2.0).collect::<Vec<_>>(),
        "to_vec after a kernel on an out-of-order queue"
    );
    kernels_on_buffers(&mm, &k, "from_raw, out-of-order queue");
}

#[test]
fn sub_buffers_at_aligned_offsets_and_errors_at_misaligned_ones() {
    let Some(b) = ours() else { return };
    let align = b.base_address_alignment() as usize;
    assert!(align >= 4, "CL_DEVICE_MEM_BASE_ADDR_ALIGN {align} bytes");
    let context = context_of(&b);
    let k = build(&context);
    let mm = pooled(b);
    let data = ramp(4096, 1.0);
    let mut buf = mm.allocate_from(&data).unwrap();
    let _neighbour = mm.allocate_from(&[0.0f32; 100]).unwrap();
    let aligned = align / 4;

    // An aligned slice: a sub-buffer of exactly the slice, scaled with offset 0.
    {
        let mut s = buf.slice_mut(aligned..aligned + 1000).unwrap();
        let v = s.device_view_mut(Access::ReadWrite).unwrap();
        let sub = v.opencl_sub_buffer().unwrap();
        assert_eq!((sub.origin(), sub.byte_len()), (v.byte_offset(), 4000));
        let m = OpenClMemory { mem: sub.as_raw(), byte_offset: 0, ..v.opencl().unwrap() };
        scale(&k, &m, 4.0, &[]).unwrap();
    }
    let mut want = data.clone();
    for w in &mut want[aligned..aligned + 1000] {
        *w *= 4.0;
    }
    assert_eq!(buf.to_vec().unwrap(), want, "kernel through a sub-buffer");

    // A misaligned one: the error names the offset and the alignment; the buffer is unchanged.
    let (state, epochs, metrics) = (buf.state(), buf.epochs(), transfers(&buf));
    {
        let mut s = buf.slice_mut(1..1001).unwrap();
        let v = s.device_view_mut(Access::Read).unwrap();
        let at = v.byte_offset();
        match v.opencl_sub_buffer() {
            Err(e @ Error::MisalignedSubBuffer { byte_offset, alignment, alignment_bits }) => {
                assert_eq!((byte_offset, alignment, alignment_bits), (at, align, align as u64 * 8));
                let msg = e.to_string();
                assert!(msg.contains(&at.to_string()) && msg.contains(&format!("{align} bytes")), "{msg}");
            }
            other => panic!("expected MisalignedSubBuffer, got {other:?}"),
        }
        let empty = empty_sub_buffer_error(&v);
        assert!(matches!(empty, Error::InvalidArgument { .. }), "{empty:?}");
    }
    assert_eq!((buf.state(), buf.epochs(), transfers(&buf)), (state, epochs, metrics));
    assert_eq!(buf.to_vec().unwrap(), want);
}

/// The error of a sub-buffer of zero bytes at `v`'s offset (OpenCL has no empty buffers).
fn empty_sub_buffer_error(v: &DeviceViewMut<'_, f32>) -> Error {
    let m = v.opencl().unwrap();
    // SAFETY: `m` is from the live view `v`; the sub-buffer (none: the call fails) would not
    // outlive it.
    match unsafe { OpenClMemory { byte_len: 0, ..m }.sub_buffer() } {
        Err(e) => e,
        Ok(s) => panic!("an empty sub-buffer was made: {s:?}"),
    }
}

#[test]
fn from_raw_rejects_null_handles_foreign_devices_and_foreign_queues() {
    let Some((context, queue)) = own_context(0) else { return };
    let (c, d, q) = (context.get(), context.default_device(), queue.get());
    let null = ptr::null_mut();
    for (args, what) in
        [((null, d, q), "cl_context"), ((c, null, q), "cl_device_id"), ((c, d, null), "cl_command_queue")]
    {
        // SAFETY: null handles are checked before any use; the others are live.
        match unsafe { OpenClBackend::from_raw(args.0, args.1, args.2) } {
            Err(Error::NullHandle { backend: "opencl", what: w }) => assert_eq!(w, what),
            other => panic!("expected NullHandle for {what}, got {other:?}"),
        }
    }

    // A sub-device is a device, but not one of this context's.
    let parts = Device::new(d).create_sub_devices(&[CL_DEVICE_PARTITION_EQUALLY, 1, 0]);
    match parts.as_deref() {
        Ok([sub, ..]) => {
            // SAFETY: live objects.
            match unsafe { OpenClBackend::from_raw(c, sub.id(), q) } {
                Err(e @ Error::DeviceNotInContext { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{:p}", sub.id())) && msg.contains(&format!("{d:p}")), "{msg}");
                }
                other => panic!("expected DeviceNotInContext, got {other:?}"),
            }
        }
        // Devices that cannot be partitioned have no device outside the context to try.
        other => eprintln!("note: no sub-device to try ({other:?})"),
    }

    // A queue of another context on the same device.
    let other = Context::from_device(&Device::new(d)).unwrap();
    // SAFETY: the other context's own device.
    let other_queue = unsafe { CommandQueue::create_with_properties(&other, d, 0, 0) }.unwrap();
    // SAFETY: live objects.
    match unsafe { OpenClBackend::from_raw(c, d, other_queue.get()) } {
        Err(Error::ForeignContext { what: "command queue", expected, found, .. }) => {
            assert_eq!((expected, found), (format!("{c:p}"), format!("{:p}", other.get())));
        }
        other => panic!("expected ForeignContext, got {other:?}"),
    }
    // The failures took no references: the test's objects drop cleanly (opencl3 panics if a
    // release fails).
    drop((other_queue, other, queue, context));
}

#[test]
fn a_completion_event_of_another_context_is_refused_and_changes_nothing() {
    let Some(b) = ours() else { return };
    let mm = pooled(b);
    let Some((other, _queue)) = own_context(0) else { return };
    let foreign = Event::new(create_user_event(other.get()).unwrap());
    let data = ramp(1000, 1.0);
    let mut buf = mm.allocate_from(&data).unwrap();
    buf.ensure_on_device().unwrap();
    let (state, epochs, metrics) = (buf.state(), buf.epochs(), transfers(&buf));
    {
        let mut v = buf.device_view_mut(Access::Read).unwrap();
        match v.opencl_completed_by(&foreign) {
            Err(Error::ForeignContext { what: "completion event", found, .. }) => {
                assert_eq!(found, format!("{:p}", other.get()));
            }
            other => panic!("expected ForeignContext, got {other:?}"),
        }
        // SAFETY: null is checked first.
        let null = unsafe { v.opencl_completed_by_raw(ptr::null_mut()) };
        assert!(matches!(null, Err(Error::NullHandle { what: "cl_event", .. })), "{null:?}");
    }
    // The refused event is not waited for: it never completes, and this returns at once.
    assert_eq!((buf.state(), buf.epochs(), transfers(&buf)), (state, epochs, metrics));
    assert_eq!(buf.to_vec().unwrap(), data);
    set_user_event_status(foreign.get(), CL_COMPLETE).unwrap();
}

#[test]
fn views_on_other_backends_have_no_opencl_side() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut buf = mm.allocate_from(&[1.0f32; 100]).unwrap();
    let v = buf.device_view().unwrap();
    assert!(v.opencl().is_none());
    assert!(matches!(v.opencl_sub_buffer(), Err(Error::Unsupported { .. })));
    assert!(matches!(v.opencl_ready_event(), Err(Error::Unsupported { .. })));
    drop(v);
    let mut v = buf.device_view_mut(Access::ReadWrite).unwrap();
    // SAFETY: the event is never looked at: a view of a sim buffer is refused first.
    let r = unsafe { v.opencl_completed_by_raw(ptr::null_mut()) };
    assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    drop(v);
    assert_eq!(buf.state(), DeviceDirty);
    // A zero-byte OpenCL buffer has no device allocation, so no OpenCL side either.
    let Some(b) = ours() else { return };
    let mm = pooled(b);
    let empty = mm.allocate::<f32>(0).unwrap();
    let v = empty.device_view().unwrap();
    assert!(v.opencl().is_none());
    assert!(matches!(v.opencl_sub_buffer(), Err(Error::InvalidArgument { .. })));
}
