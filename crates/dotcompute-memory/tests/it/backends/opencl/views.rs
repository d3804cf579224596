//! The bad inputs of the OpenCL view API: sub-buffers at misaligned offsets, `from_raw` with
//! null, foreign-device or foreign-queue handles, a completion event of another context, and
//! views on backends that have no OpenCL side.

use super::programs::*;
use dotcompute_memory::backend::opencl::OpenClBackend;
use dotcompute_memory::*;
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::{Device, CL_DEVICE_PARTITION_EQUALLY};
use opencl3::event::{create_user_event, set_user_event_status, Event, CL_COMPLETE};
use std::ptr;
use BufferState::*;

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
