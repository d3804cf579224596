//! `from_dlpack` / `from_dlpack_legacy`: a producer's tensor wrapped in place, its deleter run
//! once when the buffer drops, its memory never pooled, and every bad tensor refused with the
//! field and values named and nothing consumed.

use crate::support::dlpack::{bytes_of, produce, produce_legacy, Spec};
use crate::support::managers;
use dotcompute_memory::dlpack::{
    DLPACK_FLAG_BITMASK_IS_COPIED, DLPACK_FLAG_BITMASK_READ_ONLY, KDL_CUDA, KDL_CUDA_HOST, KDL_FLOAT, KDL_OPENCL,
};
use dotcompute_memory::*;

#[test]
fn a_compact_tensor_of_any_rank_is_wrapped_in_place_and_flattened() {
    let mm = managers::cpu();
    let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let layouts = [
        (vec![2, 3, 2], Some(vec![6, 2, 1])),
        (vec![2, 3, 2], None),
        (vec![12, 1], Some(vec![1, 5])),
        (vec![1, 12], Some(vec![99, 1])),
    ];
    for (shape, strides) in layouts {
        let spec = Spec { shape: shape.clone(), strides: strides.clone(), byte_offset: 8, ..Spec::f32(0) };
        let produced = produce(&bytes_of(&values), &spec);
        // SAFETY: a live tensor from the producer, handed over.
        let mut buf = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, produced.managed) }.unwrap();
        assert_eq!(buf.state(), BufferState::HostOnly);
        assert_eq!(buf.to_vec().unwrap(), values, "{shape:?} {strides:?}");
        assert_eq!(buf.as_slice().unwrap().as_ptr().cast(), produced.base.wrapping_add(8).cast_const(), "no copy");
        // Writes land in the producer's memory.
        buf.as_mut_slice().unwrap()[11] = -1.0;
        // SAFETY: the producer's memory is alive until its deleter runs, and no slice of the
        // buffer is borrowed now.
        assert_eq!(unsafe { *produced.base.add(8).cast::<f32>().add(11) }, -1.0);
        assert_eq!(produced.deletions(), 0);
        drop(buf);
        assert_eq!(produced.deletions(), 1);
    }
    // Legacy tensors too; and pinned host memory (kDLCUDAHost) is host memory.
    let spec = Spec { device: DLDevice { device_type: KDL_CUDA_HOST, device_id: 0 }, ..Spec::f32(12) };
    let produced = produce_legacy(&bytes_of(&values), &spec);
    // SAFETY: a live legacy tensor, handed over.
    let buf = unsafe { UnifiedBuffer::<f32>::from_dlpack_legacy(&mm, produced.managed) }.unwrap();
    assert_eq!(buf.to_vec().unwrap(), values);
    drop(buf);
    assert_eq!(produced.deletions(), 1);
    assert_eq!(mm.diagnostics().live_count(), 0);
}

#[test]
fn the_deleter_runs_exactly_once_where_the_buffer_drops() {
    let mm = managers::cpu();
    let produced = produce(&bytes_of(&[1.0f32, 2.0]), &Spec::f32(2));
    // SAFETY: a live tensor, handed over.
    let buf = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, produced.managed) }.unwrap();
    let moved = std::thread::spawn(move || {
        let sum: f32 = buf.as_slice().unwrap().iter().sum();
        drop(buf);
        sum
    });
    assert_eq!(moved.join().unwrap(), 3.0);
    assert_eq!(produced.deletions(), 1);
    assert_eq!(mm.diagnostics().live_count(), 0);
}

#[test]
fn a_copied_flag_is_accepted_and_a_zero_length_tensor_needs_no_data() {
    let mm = managers::cpu();
    let produced = produce(&bytes_of(&[4i32]), &Spec { flags: DLPACK_FLAG_BITMASK_IS_COPIED, ..int32(1) });
    // SAFETY: a live tensor, handed over.
    let buf = unsafe { UnifiedBuffer::<i32>::from_dlpack(&mm, produced.managed) }.unwrap();
    assert_eq!(buf.to_vec().unwrap(), [4]);
    drop(buf);
    assert_eq!(produced.deletions(), 1);

    let produced = produce(&[], &Spec { null_data: true, shape: vec![0, 3], strides: Some(vec![3, 1]), ..int32(0) });
    // SAFETY: as above.
    let buf = unsafe { UnifiedBuffer::<i32>::from_dlpack(&mm, produced.managed) }.unwrap();
    assert!(buf.is_empty());
    assert_eq!(buf.as_slice().unwrap(), &[] as &[i32]);
    drop(buf);
    assert_eq!(produced.deletions(), 1);
}

fn int32(len: i64) -> Spec {
    Spec { dtype: DLDataType { code: dlpack::KDL_INT, bits: 32, lanes: 1 }, ..Spec::f32(len) }
}

#[test]
fn foreign_memory_never_enters_the_pool() {
    let mm = managers::cpu();
    let n = 4096usize;
    let values = vec![2.0f32; n];
    let before = (mm.statistics(), mm.memory_snapshot());
    let produced = produce(&bytes_of(&values), &Spec::f32(n as i64));
    // SAFETY: a live tensor, handed over.
    let buf = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, produced.managed) }.unwrap();
    let foreign = buf.as_slice().unwrap().as_ptr();
    assert_eq!(mm.statistics().active_allocations, 1, "counted as a live buffer");
    drop(buf);
    assert_eq!(produced.deletions(), 1);

    let (stats, snapshot) = (mm.statistics(), mm.memory_snapshot());
    assert_eq!(stats.cached_bytes, before.0.cached_bytes, "no pooled bytes from the foreign memory");
    assert_eq!(stats.reserved_bytes, before.0.reserved_bytes);
    assert_eq!((stats.backend_allocations, stats.pool_hits), (before.0.backend_allocations, before.0.pool_hits));
    assert_eq!(snapshot.device_reserved_bytes, before.1.device_reserved_bytes);
    assert_eq!(snapshot.magazine_bytes, 0, "not parked in this thread's magazine either");
    assert_eq!(stats.active_allocations, 0);
    // The next buffer of that size gets memory of the pool's own.
    let next = mm.allocate::<f32>(n).unwrap();
    assert_ne!(next.as_slice().unwrap().as_ptr(), foreign);
    assert_eq!(mm.statistics().pool_hits, before.0.pool_hits);
}

#[test]
fn a_cast_of_foreign_memory_checks_its_alignment() {
    let mm = managers::cpu();
    // Four f32 at an address that is 4 past a multiple of 8: not aligned for f64.
    let produced = produce(&bytes_of(&[1.0f32, 2.0, 3.0, 4.0]), &Spec { byte_offset: 4, ..Spec::f32(4) });
    // SAFETY: a live tensor, handed over.
    let buf = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, produced.managed) }.unwrap();
    let (buf, err) = buf.try_cast::<f64>().unwrap_err();
    assert!(matches!(err, Error::CastMismatch { to: "f64", .. }), "{err}");
    assert!(err.to_string().contains("foreign memory"), "{err}");
    // To a type it is aligned for, the cast works.
    let words = buf.try_cast::<u32>().map_err(|(_, e)| e).unwrap();
    assert_eq!(words.to_vec().unwrap()[0], 1.0f32.to_bits());
    drop(words);
    assert_eq!(produced.deletions(), 1);
}

/// One bad tensor: what is changed from a valid 4-element f32 tensor, the field the error
/// names, and text its message must hold.
struct Case {
    name: &'static str,
    spec: Spec,
    field: &'static str,
    says: &'static [&'static str],
}

fn bad_tensors() -> Vec<Case> {
    let ok = Spec::f32(4);
    let dtype = |code, bits, lanes| DLDataType { code, bits, lanes };
    let device = |device_type, device_id| DLDevice { device_type, device_id };
    vec![
        Case {
            name: "strides with gaps (a[::2])",
            spec: Spec { strides: Some(vec![2]), ..ok.clone() },
            field: "strides",
            says: &["[2] for shape [4]", "gaps", "[1] (compact row-major)"],
        },
        Case {
            name: "transposed strides (a.T)",
            spec: Spec { shape: vec![2, 2], strides: Some(vec![1, 2]), ..ok.clone() },
            field: "strides",
            says: &["[1, 2] for shape [2, 2]", "not in row-major order", "[2, 1]"],
        },
        Case {
            name: "reversed strides (a[::-1])",
            spec: Spec { strides: Some(vec![-1]), ..ok.clone() },
            field: "strides",
            says: &["[-1]", "not in row-major order"],
        },
        Case {
            name: "another dtype",
            spec: Spec { dtype: dtype(KDL_FLOAT, 64, 1), shape: vec![2], ..ok.clone() },
            field: "dtype",
            says: &["kDLFloat 64", "kDLFloat 32", "f32"],
        },
        Case {
            name: "vector lanes",
            spec: Spec { dtype: dtype(KDL_FLOAT, 32, 4), shape: vec![1], ..ok.clone() },
            field: "dtype",
            says: &["kDLFloat 32x4"],
        },
        Case { name: "negative ndim", spec: Spec { ndim: Some(-1), ..ok.clone() }, field: "ndim", says: &["-1"] },
        Case {
            name: "negative extent",
            spec: Spec { shape: vec![4, -2], strides: None, ..ok.clone() },
            field: "shape",
            says: &["[4, -2]", "non-negative"],
        },
        Case {
            name: "null shape",
            spec: Spec { null_shape: true, ..ok.clone() },
            field: "shape",
            says: &["null with ndim 1"],
        },
        Case {
            name: "CUDA device memory",
            spec: Spec { device: device(KDL_CUDA, 1), ..ok.clone() },
            field: "device",
            says: &["kDLCUDA (2) device 1", ".cpu()"],
        },
        Case {
            name: "OpenCL memory",
            spec: Spec { device: device(KDL_OPENCL, 0), ..ok.clone() },
            field: "device",
            says: &["kDLOpenCL (4)"],
        },
        Case {
            name: "an unknown device type",
            spec: Spec { device: device(77, 0), ..ok.clone() },
            field: "device",
            says: &["unknown device type (77)"],
        },
        Case {
            name: "null data",
            spec: Spec { null_data: true, ..ok.clone() },
            field: "data",
            says: &["null", "4 elements"],
        },
        Case {
            name: "a misaligned byte_offset",
            spec: Spec { byte_offset: 2, ..ok.clone() },
            field: "data + byte_offset",
            says: &["+ 2 =", "aligned to 4 bytes for f32"],
        },
        Case {
            name: "the read-only flag",
            spec: Spec { flags: DLPACK_FLAG_BITMASK_READ_ONLY, ..ok.clone() },
            field: "flags",
            says: &["0x1 (READ_ONLY set)", "allocate_from"],
        },
        Case {
            name: "major version 2",
            spec: Spec { version: DLPackVersion { major: 2, minor: 0 }, ..ok.clone() },
            field: "version",
            says: &["2.0", "major version 1"],
        },
        Case {
            name: "a shape that overflows",
            spec: Spec { shape: vec![i64::MAX, 4], strides: None, ..ok.clone() },
            field: "shape",
            says: &["fits in usize"],
        },
    ]
}

#[test]
fn every_bad_tensor_is_refused_naming_its_values_and_consuming_nothing() {
    let mm = managers::cpu();
    let data = bytes_of(&[1.0f32, 2.0, 3.0, 4.0]);
    let cases = bad_tensors();
    assert!(cases.len() >= 15);
    for case in cases {
        let produced = produce(&data, &case.spec);
        // SAFETY: a live tensor from the producer; refused, so still ours afterwards.
        let err = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, produced.managed) }.unwrap_err();
        match &err {
            Error::DlpackRefused { field, .. } => assert_eq!(*field, case.field, "{}: {err}", case.name),
            other => panic!("{}: expected DlpackRefused, got {other:?}", case.name),
        }
        let message = err.to_string();
        for text in case.says {
            assert!(message.contains(text), "{}: {message:?} lacks {text:?}", case.name);
        }
        assert!(message.contains("not consumed"), "{message}");
        assert_eq!(produced.deletions(), 0, "{}: a refused tensor is not consumed", case.name);
        produced.give_back();
        assert_eq!(produced.deletions(), 1);

        // The legacy entry checks the same fields (it has no version or flags).
        if !matches!(case.field, "version" | "flags") {
            let produced = produce_legacy(&data, &case.spec);
            // SAFETY: as above.
            let err = unsafe { UnifiedBuffer::<f32>::from_dlpack_legacy(&mm, produced.managed) }.unwrap_err();
            assert!(matches!(err, Error::DlpackRefused { field, .. } if field == case.field), "{}: {err}", case.name);
            assert_eq!(produced.deletions(), 0);
            produced.give_back();
        }
    }
    assert_eq!(mm.diagnostics().live_count(), 0);
    assert_eq!(mm.statistics().buffers_allocated, 0, "no buffer was made for a refused tensor");
}

#[test]
fn null_pointers_and_non_unified_managers_are_refused() {
    let mm = managers::cpu();
    // SAFETY: null is refused before anything is read.
    let err = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, std::ptr::null_mut()) }.unwrap_err();
    assert!(matches!(err, Error::DlpackRefused { field: "DLManagedTensorVersioned pointer", .. }), "{err}");
    // SAFETY: as above.
    let err = unsafe { UnifiedBuffer::<f32>::from_dlpack_legacy(&mm, std::ptr::null_mut()) }.unwrap_err();
    assert!(matches!(err, Error::DlpackRefused { field: "DLManagedTensor pointer", .. }), "{err}");

    let sim = managers::sim();
    let produced = produce(&bytes_of(&[1.0f32; 4]), &Spec::f32(4));
    // SAFETY: a live tensor; refused, so still ours.
    let err = unsafe { UnifiedBuffer::<f32>::from_dlpack(&sim, produced.managed) }.unwrap_err();
    assert!(matches!(err, Error::DlpackRefused { field: "device", .. }), "{err}");
    assert!(err.to_string().contains("backend is sim"), "{err}");
    assert_eq!(produced.deletions(), 0);
    // The same tensor is then wrapped by a cpu manager.
    // SAFETY: still live and ours; handed over now.
    let buf = unsafe { UnifiedBuffer::<f32>::from_dlpack(&mm, produced.managed) }.unwrap();
    assert_eq!(buf.to_vec().unwrap(), [1.0; 4]);
    drop(buf);
    assert_eq!(produced.deletions(), 1);
}
