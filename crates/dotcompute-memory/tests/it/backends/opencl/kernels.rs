//! Real OpenCL kernels on device views of our buffers: saxpy at element offsets, fill and an
//! in-place scale, on whole buffers and slices, pooled and fresh, on a backend this crate opened
//! and on one made from the test's own context with `OpenClBackend::from_raw`; and the ordering
//! a view's end gives (to_vec after a view, the caller's own queue, the marker as a barrier).

use super::programs::*;
use dotcompute_memory::backend::opencl::OpenClBackend;
use dotcompute_memory::*;
use opencl3::command_queue::{CommandQueue, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, CL_QUEUE_PROFILING_ENABLE};
use opencl3::event::{
    create_user_event, set_user_event_status, Event, CL_COMMAND_BARRIER, CL_COMMAND_MARKER, CL_COMPLETE,
};
use opencl3::types::cl_event;
use std::thread;
use std::time::{Duration, Instant};
use BufferState::*;

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
