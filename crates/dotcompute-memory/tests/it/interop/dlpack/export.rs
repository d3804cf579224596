//! `to_dlpack` / `to_dlpack_legacy`: what the tensor says, which part it exports, the state it
//! leaves, and that the buffer stays alive and out of the pool until the deleter runs.

use crate::support::managers;
use dotcompute_memory::dlpack::{DLPACK_FLAG_BITMASK_READ_ONLY, DLPACK_VERSION, KDL_CPU, KDL_FLOAT, KDL_INT, KDL_UINT};
use dotcompute_memory::*;

/// Runs the deleter of a handed-over versioned tensor, as a consumer does when done.
fn consumer_done(raw: *mut DLManagedTensorVersioned) {
    // SAFETY: `raw` came from `into_raw` and its deleter has not run.
    unsafe { ((*raw).deleter.expect("our exports have a deleter"))(raw) }
}

/// Runs the deleter of a handed-over legacy tensor.
fn consumer_done_legacy(raw: *mut DLManagedTensor) {
    // SAFETY: `raw` came from `into_raw` and its deleter has not run.
    unsafe { ((*raw).deleter.expect("our exports have a deleter"))(raw) }
}

/// The tensor's one extent and one stride.
fn shape_and_strides(t: &DLTensor) -> (i32, i64, i64) {
    // SAFETY: an export's shape and strides point to one value each, live with the export.
    unsafe { (t.ndim, *t.shape, *t.strides) }
}

#[test]
fn the_tensor_describes_the_buffer_for_every_built_in_element_type() {
    let mm = managers::cpu();
    macro_rules! check {
        ($($t:ty => $code:expr),* $(,)?) => {$({
            let buf = mm.allocate_from(&[<$t>::default(); 5]).unwrap();
            let host = buf.as_slice().unwrap().as_ptr();
            let tensor = buf.to_dlpack(Access::ReadWrite, None).unwrap();
            let t = tensor.tensor();
            let bits = (std::mem::size_of::<$t>() * 8) as u8;
            assert_eq!(t.dtype, DLDataType { code: $code, bits, lanes: 1 }, "{}", stringify!($t));
            assert_eq!(shape_and_strides(t), (1, 5, 1));
            assert_eq!((t.device, t.byte_offset), (DLDevice { device_type: KDL_CPU, device_id: 0 }, 0));
            assert_eq!(t.data.cast_const(), host.cast(), "no copy: the buffer's own memory");
            assert_eq!((tensor.len(), tensor.version()), (5, DLPACK_VERSION));
        })*};
    }
    check! {
        f32 => KDL_FLOAT, f64 => KDL_FLOAT,
        i8 => KDL_INT, i16 => KDL_INT, i32 => KDL_INT, i64 => KDL_INT, i128 => KDL_INT,
        u8 => KDL_UINT, u16 => KDL_UINT, u32 => KDL_UINT, u64 => KDL_UINT, u128 => KDL_UINT, usize => KDL_UINT,
    }
    assert_eq!(mm.diagnostics().live_count(), 0, "dropped exports release their buffers");
}

#[test]
fn read_access_sets_the_read_only_flag_and_writing_accesses_do_not() {
    let mm = managers::cpu();
    for (access, flags) in
        [(Access::Read, DLPACK_FLAG_BITMASK_READ_ONLY), (Access::ReadWrite, 0), (Access::Overwrite, 0)]
    {
        let tensor = mm.allocate_from(&[1u8, 2, 3]).unwrap().to_dlpack(access, None).unwrap();
        assert_eq!(tensor.flags(), flags, "{access:?}");
    }
}

#[test]
fn the_buffer_stays_alive_and_out_of_the_pool_until_the_consumer_calls_the_deleter() {
    let mm = managers::cpu();
    let buf = mm.allocate_from(&vec![3.5f64; 512]).unwrap();
    let exported_at = buf.as_slice().unwrap().as_ptr();
    let raw = buf.to_dlpack(Access::Read, None).unwrap().into_raw();
    assert_eq!(mm.diagnostics().live_count(), 1);

    // While the consumer holds it, a buffer of the same size gets other memory.
    let other = mm.allocate::<f64>(512).unwrap();
    assert_ne!(other.as_slice().unwrap().as_ptr(), exported_at);

    // SAFETY: a live export of 512 f64.
    let seen = unsafe { std::slice::from_raw_parts((*raw).dl_tensor.data.cast::<f64>(), 512) };
    assert!(seen.iter().all(|&x| x == 3.5));
    consumer_done(raw);
    assert_eq!(mm.diagnostics().live_count(), 1, "only `other` is left");
    // Now the memory is the pool's again: the next buffer of that size reuses it.
    let next = mm.allocate::<f64>(512).unwrap();
    assert_eq!(next.as_slice().unwrap().as_ptr(), exported_at);
    drop((other, next));
    assert_eq!(mm.statistics().active_allocations, 0);
}

#[test]
fn the_deleter_may_run_on_another_thread() {
    let mm = managers::cpu();
    let raw = mm.allocate_from(&[1i32, 2, 3]).unwrap().to_dlpack(Access::Read, None).unwrap().into_raw();
    let address = raw as usize;
    std::thread::spawn(move || consumer_done(address as *mut DLManagedTensorVersioned)).join().unwrap();
    assert_eq!(mm.diagnostics().live_count(), 0);
}

#[test]
fn an_export_imported_back_is_the_same_memory_and_each_side_is_released_once() {
    let mm = managers::cpu();
    let buf = mm.allocate_from(&[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let raw = buf.to_dlpack(Access::ReadWrite, None).unwrap().into_raw();
    // SAFETY: a live export handed over to the import.
    let mut back = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, raw) }.unwrap();
    // SAFETY: still alive: `back` owns it now.
    assert_eq!(back.as_slice().unwrap().as_ptr().cast(), unsafe { (*raw).dl_tensor.data.cast_const() });
    back.as_mut_slice().unwrap()[0] = 10.0;
    assert_eq!(back.to_vec().unwrap(), [10.0, 2.0, 3.0, 4.0]);
    assert_eq!(mm.diagnostics().live_count(), 2, "the exported buffer and the one wrapping it");
    drop(back);
    assert_eq!(mm.diagnostics().live_count(), 0, "dropping the import ran the export's deleter");

    let legacy = mm.allocate_from(&[5u16, 6]).unwrap().to_dlpack_legacy(Access::ReadWrite, None).unwrap();
    assert_eq!(shape_and_strides(legacy.tensor()), (1, 2, 1));
    let raw = legacy.into_raw();
    // SAFETY: a live legacy export handed over to the import.
    let back = unsafe { UnifiedBuffer::<u16>::from_dlpack_legacy(&mm, raw) }.unwrap();
    assert_eq!(back.to_vec().unwrap(), [5, 6]);
    drop(back);
    assert_eq!(mm.diagnostics().live_count(), 0);
}

#[test]
fn a_legacy_export_is_released_by_its_deleter_and_refuses_read_access() {
    let mm = managers::cpu();
    let raw = mm.allocate_from(&[1u32, 2]).unwrap().to_dlpack_legacy(Access::Overwrite, None).unwrap().into_raw();
    assert_eq!(mm.diagnostics().live_count(), 1);
    consumer_done_legacy(raw);
    assert_eq!(mm.diagnostics().live_count(), 0);

    let buf = mm.allocate_from(&[7u32, 8]).unwrap();
    let err = buf.to_dlpack_legacy(Access::Read, None).unwrap_err();
    assert!(matches!(err.error(), Error::DlpackExport { side: "host", element: "u32", .. }), "{err}");
    assert!(err.to_string().contains("read-only flag"), "{err}");
    let buf = err.into_buffer();
    assert_eq!((buf.to_vec().unwrap(), buf.state()), (vec![7, 8], BufferState::HostOnly));
}

#[test]
fn a_zero_length_buffer_exports_shape_zero_with_an_aligned_non_null_pointer() {
    let mm = managers::cpu();
    for access in [Access::Read, Access::ReadWrite] {
        let tensor = mm.allocate::<f64>(0).unwrap().to_dlpack(access, None).unwrap();
        let t = tensor.tensor();
        assert_eq!(shape_and_strides(t), (1, 0, 1));
        assert!(!t.data.is_null() && (t.data as usize).is_multiple_of(std::mem::align_of::<f64>()));
        assert!(tensor.is_empty());
        consumer_done(tensor.into_raw());
    }
    let sim = managers::sim();
    let tensor = sim.allocate::<u8>(0).unwrap().to_dlpack(Access::Read, None).unwrap();
    assert_eq!(tensor.tensor().device.device_type, KDL_CPU, "an empty buffer has only host memory");
    assert_eq!(mm.diagnostics().live_count(), 0);
}

#[test]
fn sim_exports_its_host_part_and_refuses_data_that_is_only_on_the_device() {
    let mm = managers::sim();
    // HostOnly, HostDirty and Synchronized buffers export their host part.
    let host_only = mm.allocate_from(&[1.0f32, 2.0]).unwrap();
    let mut synchronized = mm.allocate_from(&[1.0f32, 2.0]).unwrap();
    synchronized.ensure_on_device().unwrap();
    for buf in [host_only, synchronized] {
        let tensor = buf.to_dlpack(Access::Read, None).unwrap();
        assert_eq!(tensor.tensor().device, DLDevice { device_type: KDL_CPU, device_id: 0 });
    }

    // DeviceDirty and DeviceOnly: refused, with the buffer back as it was.
    let mut device_dirty = mm.allocate_from(&[1.0f32, 2.0]).unwrap();
    device_dirty.upload(&[3.0, 4.0]).unwrap();
    let mut device_only = mm.allocate_device::<f32>(2).unwrap();
    device_only.upload(&[5.0, 6.0]).unwrap();
    for (buf, contents) in [(device_dirty, [3.0, 4.0]), (device_only, [5.0, 6.0])] {
        let (state, epochs) = (buf.state(), buf.epochs());
        let err = buf.to_dlpack(Access::Read, None).unwrap_err();
        assert!(matches!(err.error(), Error::DlpackExport { backend: "sim", side: "device", element: "f32", .. }));
        assert!(err.to_string().contains("ensure_on_host()"), "{err}");
        let buf = err.into_buffer();
        assert_eq!((buf.state(), buf.epochs()), (state, epochs));
        assert_eq!(buf.to_vec().unwrap(), contents);
        // Brought to the host, it exports.
        buf.ensure_on_host().unwrap();
        let tensor = buf.to_dlpack(Access::Read, None).unwrap();
        // SAFETY: a live export of 2 f32.
        let seen = unsafe { std::slice::from_raw_parts(tensor.tensor().data.cast::<f32>(), 2) };
        assert_eq!(seen, contents);
    }
}

#[test]
fn an_export_leaves_the_state_a_device_view_of_the_same_access_would() {
    let mm = managers::sim();
    let synchronized = || {
        let mut b = mm.allocate_from(&[1i64, 2, 3]).unwrap();
        b.ensure_on_device().unwrap();
        b
    };
    // Read: the exported (host) part is brought up to date and nothing is marked written.
    let back = synchronized().to_dlpack(Access::Read, None).unwrap().into_buffer();
    assert_eq!(back.state(), BufferState::Synchronized);
    // ReadWrite and Overwrite: the exported part is the newer one.
    for access in [Access::ReadWrite, Access::Overwrite] {
        let tensor = synchronized().to_dlpack(access, None).unwrap();
        // SAFETY: a live, writable export of 3 i64, owned here.
        unsafe { *tensor.tensor().data.cast::<i64>().add(2) = 30 };
        let back = tensor.into_buffer();
        assert_eq!(back.state(), BufferState::HostDirty, "{access:?}");
        assert_eq!(back.to_vec().unwrap(), [1, 2, 30]);
    }
    // On the cpu backend a buffer whose device side is newer exports the same memory.
    let cpu = managers::cpu();
    let mut buf = cpu.allocate_from(&[1u8, 2]).unwrap();
    buf.upload(&[3, 4]).unwrap();
    assert_eq!(buf.state(), BufferState::DeviceDirty);
    let back = buf.to_dlpack(Access::Read, None).unwrap().into_buffer();
    assert_eq!((back.state(), back.to_vec().unwrap()), (BufferState::Synchronized, vec![3, 4]));
}

#[test]
fn a_user_element_type_is_refused_with_its_name() {
    #[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Pair {
        a: f32,
        b: f32,
    }
    impl Element for Pair {
        const TYPE_TAG: TypeTag = TypeTag { id: 2048, name: "Pair" };
    }
    let mm = managers::cpu();
    let err = mm.allocate_from(&[Pair::default(); 2]).unwrap().to_dlpack(Access::Read, None).unwrap_err();
    assert!(matches!(err.error(), Error::DlpackExport { element: "Pair", .. }));
    let message = err.to_string();
    assert!(message.contains("Pair") && message.contains("2048"), "{message}");
}

#[test]
fn an_export_error_converts_into_the_crate_error() {
    fn export(buf: UnifiedBuffer<f32>) -> Result<DlpackTensor<f32>> {
        Ok(buf.to_dlpack(Access::Read, None)?)
    }
    let mm = managers::sim();
    let mut buf = mm.allocate_from(&[1.0f32]).unwrap();
    buf.upload(&[2.0]).unwrap();
    assert!(matches!(export(buf), Err(Error::DlpackExport { .. })));
    assert_eq!(mm.diagnostics().live_count(), 0, "the conversion drops the buffer");
}

#[cfg(feature = "opencl")]
#[test]
fn an_opencl_device_part_exports_its_cl_mem_and_offset() {
    let Some(mm) = managers::opencl("DLPack export on OpenCL", managers::quiet()) else { return };
    // Two buffers, so the second one may sit at an offset in a shared segment.
    let _first = mm.allocate_from(&[0u8; 100]).unwrap();
    let mut buf = mm.allocate_from(&[0.0f32; 4]).unwrap();
    buf.upload(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    let (mem, byte_offset) = {
        let view = buf.device_view().unwrap();
        let m = view.opencl().expect("an OpenCL buffer");
        (m.mem, m.byte_offset)
    };
    let tensor = buf.to_dlpack(Access::Read, None).unwrap();
    let t = tensor.tensor();
    assert_eq!(t.device, DLDevice { device_type: dlpack::KDL_OPENCL, device_id: 0 });
    assert_eq!((t.data, t.byte_offset), (mem, byte_offset as u64));
    assert_eq!(shape_and_strides(t), (1, 4, 1));
    let buf = tensor.into_buffer();
    assert_eq!((buf.state(), buf.to_vec().unwrap()), (BufferState::DeviceDirty, vec![1.0, 2.0, 3.0, 4.0]));

    // A buffer whose newest data is on the host exports its host part.
    let host = mm.allocate_from(&[5.0f32]).unwrap().to_dlpack(Access::Read, None).unwrap();
    assert_eq!(host.tensor().device.device_type, KDL_CPU);
}
