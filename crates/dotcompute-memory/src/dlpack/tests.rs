//! The export and import paths through their raw pointers, as a C consumer and producer use
//! them (these run under Miri: `cargo +nightly miri test --lib --features dlpack dlpack::`).

use super::*;
use crate::backend::cpu::CpuBackend;
use crate::backend::sim::{SimBackend, SimOptions};
use crate::backend::Backend;
use crate::buffer::magazine::flush_current;
use crate::buffer::unified::UnifiedBuffer;
use crate::buffer::view::Access;
use crate::error::Error;
use crate::pool::context::ManagerShared;
use crate::pool::options::ManagerOptions;
use std::panic::Location;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn manager(backend: impl Backend) -> Arc<ManagerShared> {
    ManagerShared::new(Arc::new(backend), ManagerOptions::default(), flush_current)
}

fn buffer_from(mm: &Arc<ManagerShared>, data: &[f32]) -> UnifiedBuffer<f32> {
    let mut buf = UnifiedBuffer::new(mm, data.len(), std::mem::size_of_val(data), Location::caller()).unwrap();
    buf.copy_from(data).unwrap();
    buf
}

/// A C-style producer: a boxed managed tensor over a `Vec`, whose deleter counts its runs.
#[repr(C)]
struct Producer {
    managed: DLManagedTensorVersioned,
    shape: Vec<i64>,
    strides: Vec<i64>,
    data: Vec<f32>,
    deleted: Arc<AtomicUsize>,
}

unsafe extern "C" fn producer_delete(managed: *mut DLManagedTensorVersioned) {
    // SAFETY: made by `produce`, whose box the context is; the deleter runs once.
    let producer = unsafe { Box::from_raw((*managed).manager_ctx.cast::<Producer>()) };
    producer.deleted.fetch_add(1, Ordering::SeqCst);
}

fn produce(
    data: Vec<f32>,
    shape: &[i64],
    strides: Option<&[i64]>,
) -> (*mut DLManagedTensorVersioned, Arc<AtomicUsize>) {
    let deleted = Arc::new(AtomicUsize::new(0));
    let producer = Box::new(Producer {
        managed: DLManagedTensorVersioned {
            version: DLPACK_VERSION,
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(producer_delete),
            flags: 0,
            dl_tensor: DLTensor {
                data: std::ptr::null_mut(),
                device: DLDevice { device_type: KDL_CPU, device_id: 0 },
                ndim: shape.len() as i32,
                dtype: DLDataType { code: KDL_FLOAT, bits: 32, lanes: 1 },
                shape: std::ptr::null_mut(),
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            },
        },
        shape: shape.to_vec(),
        strides: strides.map(<[i64]>::to_vec).unwrap_or_default(),
        data,
        deleted: deleted.clone(),
    });
    let p = Box::into_raw(producer);
    // SAFETY: `p` is live and only reached through raw pointers from here on.
    unsafe {
        (*p).managed.manager_ctx = p.cast();
        (*p).managed.dl_tensor.data = (*p).data.as_mut_ptr().cast();
        (*p).managed.dl_tensor.shape = (*p).shape.as_mut_ptr();
        if strides.is_some() {
            (*p).managed.dl_tensor.strides = (*p).strides.as_mut_ptr();
        }
        (&raw mut (*p).managed, deleted)
    }
}

/// Runs a producer's deleter, as the owner of a tensor that was not consumed must.
fn give_back(managed: *mut DLManagedTensorVersioned) {
    // SAFETY: a live tensor from `produce` that nothing consumed.
    unsafe { ((*managed).deleter.unwrap())(managed) }
}

#[test]
fn an_export_is_read_and_written_through_its_pointer_and_freed_by_its_deleter() {
    let mm = manager(CpuBackend::new());
    let tensor = buffer_from(&mm, &[1.0, 2.0, 3.0]).to_dlpack(Access::ReadWrite, None).unwrap();
    assert_eq!((tensor.len(), tensor.flags(), tensor.version()), (3, 0, DLPACK_VERSION));
    let raw = tensor.into_raw();
    // SAFETY: a live export: 1-D, 3 f32 at `data`, writable (ReadWrite); its deleter runs once.
    unsafe {
        let t = &(*raw).dl_tensor;
        assert_eq!((t.ndim, *t.shape, *t.strides, t.byte_offset), (1, 3, 1, 0));
        assert_eq!(t.device, DLDevice { device_type: KDL_CPU, device_id: 0 });
        let data = std::slice::from_raw_parts_mut(t.data.cast::<f32>(), 3);
        assert_eq!(data, [1.0, 2.0, 3.0]);
        data[1] = 20.0;
        assert_eq!(mm.diagnostics.live_count(), 1);
        ((*raw).deleter.unwrap())(raw);
    }
    assert_eq!(mm.diagnostics.live_count(), 0, "the deleter releases the buffer");
}

#[test]
fn a_taken_back_export_keeps_the_consumers_writes_and_a_dropped_one_releases_the_buffer() {
    let mm = manager(CpuBackend::new());
    let tensor = buffer_from(&mm, &[1.0, 2.0]).to_dlpack(Access::Overwrite, None).unwrap();
    // SAFETY: the export is live and writable, and owned here.
    unsafe { *tensor.tensor().data.cast::<f32>() = 7.0 };
    let buf = tensor.into_buffer();
    assert_eq!(buf.to_vec().unwrap(), [7.0, 2.0]);
    let legacy = buf.to_dlpack_legacy(Access::ReadWrite, None).unwrap();
    assert_eq!(mm.diagnostics.live_count(), 1);
    drop(legacy);
    assert_eq!(mm.diagnostics.live_count(), 0);
}

#[test]
fn a_zero_length_export_has_an_aligned_non_null_pointer() {
    let mm = manager(CpuBackend::new());
    let tensor = buffer_from(&mm, &[]).to_dlpack(Access::Read, None).unwrap();
    let t = tensor.tensor();
    assert!(!t.data.is_null());
    assert!((t.data as usize).is_multiple_of(std::mem::align_of::<f32>()));
    // SAFETY: the export's shape points to its one extent.
    assert_eq!(unsafe { *t.shape }, 0);
}

#[test]
fn a_sim_device_part_is_refused_and_the_buffer_comes_back() {
    let mm = manager(SimBackend::new(SimOptions::default()));
    let mut buf = buffer_from(&mm, &[1.0, 2.0]);
    buf.upload(&[3.0, 4.0]).unwrap();
    let err = buf.to_dlpack(Access::Read, None).unwrap_err();
    assert!(matches!(err.error(), Error::DlpackExport { backend: "sim", side: "device", .. }), "{err}");
    let buf = err.into_buffer();
    assert_eq!(buf.to_vec().unwrap(), [3.0, 4.0]);
}

#[test]
fn an_import_wraps_the_producers_memory_and_runs_its_deleter_once() {
    let mm = manager(CpuBackend::new());
    let (managed, deleted) = produce(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], Some(&[3, 1]));
    // SAFETY: a live tensor from `produce`, handed over.
    let mut buf = unsafe { import_versioned::<f32>(&mm, managed, Location::caller()) }.unwrap();
    // SAFETY: still alive: the buffer owns it.
    let data_ptr = unsafe { (*managed).dl_tensor.data };
    assert_eq!(buf.as_slice().unwrap().as_ptr().cast(), data_ptr, "no copy");
    buf.as_mut_slice().unwrap()[5] = 60.0;
    assert_eq!(buf.to_vec().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 60.0]);
    assert_eq!(deleted.load(Ordering::SeqCst), 0);
    drop(buf);
    assert_eq!(deleted.load(Ordering::SeqCst), 1);
    assert_eq!(mm.diagnostics.live_count(), 0);
}

#[test]
fn a_refused_import_leaves_the_tensor_to_its_owner() {
    let mm = manager(CpuBackend::new());
    let (managed, deleted) = produce(vec![0.0; 6], &[6], Some(&[2]));
    // SAFETY: a live tensor from `produce`.
    let err = unsafe { import_versioned::<f32>(&mm, managed, Location::caller()) }.unwrap_err();
    assert!(matches!(err, Error::DlpackRefused { field: "strides", .. }), "{err}");
    // SAFETY: as above.
    let err = unsafe { import_versioned::<i32>(&mm, managed, Location::caller()) }.unwrap_err();
    assert!(matches!(err, Error::DlpackRefused { field: "dtype", .. }), "{err}");
    assert_eq!(deleted.load(Ordering::SeqCst), 0, "refusing consumes nothing");
    give_back(managed);
    assert_eq!(deleted.load(Ordering::SeqCst), 1);
    assert_eq!(mm.diagnostics.live_count(), 0);
}
