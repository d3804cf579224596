//! Import: a producer's DLPack tensor wrapped as a buffer without a copy.
//!
//! Every field is checked before anything is taken: on any error the tensor is untouched and
//! still the caller's. On success its memory becomes the buffer's one allocation (foreign, so
//! never parked or pooled), and the producer's deleter runs exactly once, when the buffer drops.

use super::ffi::{
    device_type_name, dtype_name, dtype_of, DLManagedTensor, DLManagedTensorVersioned, DLTensor,
    DLPACK_FLAG_BITMASK_READ_ONLY, DLPACK_VERSION, KDL_CPU, KDL_CUDA_HOST, KDL_ROCM_HOST,
};
use crate::buffer::unified::UnifiedBuffer;
use crate::element::Element;
use crate::error::{byte_len, Error, Result};
use crate::pool::context::ManagerShared;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::Arc;

fn refused(field: &'static str, found: impl Into<String>, expected: impl Into<String>) -> Error {
    Error::DlpackRefused { field, found: found.into(), expected: expected.into() }
}

/// The producer's managed struct and its deleter, called once when the buffer drops.
struct Owner<M> {
    managed: *mut M,
    deleter: Option<unsafe extern "C" fn(*mut M)>,
}

// SAFETY: the struct is only handed back to the producer's deleter, which the import contract
// (`UnifiedBuffer::from_dlpack`) allows to run on whichever thread drops the buffer.
unsafe impl<M> Send for Owner<M> {}

impl<M: 'static> Owner<M> {
    fn release(self) {
        if let Some(deleter) = self.deleter {
            // SAFETY: the import took ownership of `managed` (its contract), and this runs once:
            // `self` is consumed, and the buffer calls its release once.
            unsafe { deleter(self.managed) }
        }
    }

    fn into_release(self) -> Box<dyn FnOnce() + Send> {
        // `self.release()` moves the whole owner into the closure (not just its fields).
        Box::new(move || self.release())
    }
}

/// Wraps a versioned tensor; see `UnifiedBuffer::from_dlpack` for the contract.
///
/// # Safety
///
/// As `UnifiedBuffer::from_dlpack`.
pub(crate) unsafe fn import_versioned<T: Element>(
    mm: &Arc<ManagerShared>,
    managed: *mut DLManagedTensorVersioned,
    location: &'static Location<'static>,
) -> Result<UnifiedBuffer<T>> {
    if managed.is_null() {
        return Err(refused("DLManagedTensorVersioned pointer", "null", "a tensor from the producer"));
    }
    // SAFETY: non-null, and valid for reads (the contract); every major version starts with the
    // version field, so it is read before anything else.
    let version = unsafe { (*managed).version };
    if version.major != DLPACK_VERSION.major {
        return Err(refused(
            "version",
            format!("{}.{}", version.major, version.minor),
            format!(
                "major version {} (the layout this crate reads); ask the producer for that version (max_version in Python)",
                DLPACK_VERSION.major
            ),
        ));
    }
    // SAFETY: a 1.x managed struct (checked), valid for reads (the contract).
    let (flags, deleter, tensor) = unsafe { ((*managed).flags, (*managed).deleter, &(*managed).dl_tensor) };
    if flags & DLPACK_FLAG_BITMASK_READ_ONLY != 0 {
        return Err(refused(
            "flags",
            format!("{flags:#x} (READ_ONLY set)"),
            "writable memory: a buffer hands out mutable access; ask the producer for a writable tensor, or copy the data into a buffer (allocate_from)",
        ));
    }
    // SAFETY: the tensor's shape and strides are valid for reads (the contract).
    let (ptr, len) = unsafe { check_tensor::<T>(mm, tensor) }?;
    let release = Owner { managed, deleter }.into_release();
    Ok(UnifiedBuffer::new_foreign(mm, len, ptr, release, location))
}

/// Wraps a legacy tensor; see `UnifiedBuffer::from_dlpack_legacy` for the contract.
///
/// # Safety
///
/// As `UnifiedBuffer::from_dlpack_legacy`.
pub(crate) unsafe fn import_legacy<T: Element>(
    mm: &Arc<ManagerShared>,
    managed: *mut DLManagedTensor,
    location: &'static Location<'static>,
) -> Result<UnifiedBuffer<T>> {
    if managed.is_null() {
        return Err(refused("DLManagedTensor pointer", "null", "a tensor from the producer"));
    }
    // SAFETY: non-null and valid for reads (the contract).
    let (deleter, tensor) = unsafe { ((*managed).deleter, &(*managed).dl_tensor) };
    // SAFETY: the tensor's shape and strides are valid for reads (the contract).
    let (ptr, len) = unsafe { check_tensor::<T>(mm, tensor) }?;
    let release = Owner { managed, deleter }.into_release();
    Ok(UnifiedBuffer::new_foreign(mm, len, ptr, release, location))
}

/// Checks that `tensor` can be a buffer of `T` on `mm`: host memory, `T`'s dtype, a compact
/// row-major layout of any rank (flattened), an aligned non-null address. Returns the first
/// element's address and the element count.
///
/// # Safety
///
/// `tensor.shape` (and `tensor.strides` unless null) must be valid for reads of `ndim` values.
unsafe fn check_tensor<T: Element>(mm: &ManagerShared, tensor: &DLTensor) -> Result<(NonNull<u8>, usize)> {
    let device = tensor.device;
    let on_host = matches!(device.device_type, KDL_CPU | KDL_CUDA_HOST | KDL_ROCM_HOST);
    let device_text = || format!("{} device {}", device_type_name(device.device_type), device.device_id);
    if !on_host {
        return Err(refused(
            "device",
            device_text(),
            "host memory (kDLCPU, kDLCUDAHost or kDLROCMHost): device tensors are not wrapped; copy the tensor to the host first (torch: .cpu())",
        ));
    }
    if !mm.unified {
        return Err(refused(
            "device",
            device_text(),
            format!(
                "a manager whose backend uses host memory as device memory (cpu); this manager's backend is {}: wrap the tensor with a cpu manager, or copy its data into a buffer (allocate_from)",
                mm.backend().name()
            ),
        ));
    }
    let Some(expected) = dtype_of::<T>() else {
        return Err(refused(
            "dtype",
            dtype_name(tensor.dtype),
            format!("a DLPack type for the buffer's element type {}, which has none (user element types cannot be named in DLPack)", T::TYPE_TAG.name),
        ));
    };
    if tensor.dtype != expected {
        return Err(refused(
            "dtype",
            dtype_name(tensor.dtype),
            format!(
                "{} to match the buffer's element type {}; import into a buffer of the tensor's type",
                dtype_name(expected),
                T::TYPE_TAG.name
            ),
        ));
    }
    let ndim =
        usize::try_from(tensor.ndim).map_err(|_| refused("ndim", tensor.ndim.to_string(), "0 or more dimensions"))?;
    if ndim > 0 && tensor.shape.is_null() {
        return Err(refused("shape", format!("null with ndim {ndim}"), format!("{ndim} extents")));
    }
    let shape: &[i64] = if ndim == 0 {
        &[]
    } else {
        // SAFETY: non-null, `ndim` values valid for reads (the contract).
        unsafe { std::slice::from_raw_parts(tensor.shape, ndim) }
    };
    let len = element_count(shape)?;
    let bytes = byte_len::<T>(len)?;
    if len > 0 && !tensor.strides.is_null() {
        // SAFETY: non-null, `ndim` values valid for reads (the contract).
        let strides = unsafe { std::slice::from_raw_parts(tensor.strides, ndim) };
        check_compact(shape, strides)?;
    }
    if len == 0 {
        // No byte is ever read or written; the buffer keeps its own aligned dangling pointer.
        return Ok((NonNull::<T>::dangling().cast(), 0));
    }
    let Some(data) = NonNull::new(tensor.data.cast::<u8>()) else {
        return Err(refused("data", "null", format!("a pointer to {len} elements ({bytes} bytes)")));
    };
    let offset = usize::try_from(tensor.byte_offset)
        .ok()
        .filter(|&o| o <= isize::MAX as usize - bytes)
        .ok_or_else(|| refused("byte_offset", tensor.byte_offset.to_string(), "an offset within the address space"))?;
    // Within the producer's allocation by the contract; `wrapping_add` keeps its provenance.
    let first = data.as_ptr().wrapping_add(offset);
    let align = std::mem::align_of::<T>();
    if !(first as usize).is_multiple_of(align) {
        return Err(refused(
            "data + byte_offset",
            format!(
                "{:#x} + {offset} = {:#x}, {} bytes past a multiple of {align}",
                data.as_ptr() as usize,
                first as usize,
                first as usize % align
            ),
            format!("an address aligned to {align} bytes for {}", T::TYPE_TAG.name),
        ));
    }
    // Non-null: `data` is, and adding the offset did not wrap (checked above).
    let first = NonNull::new(first).ok_or_else(|| refused("data + byte_offset", "null", "a non-null address"))?;
    Ok((first, len))
}

/// The product of the extents, which must be non-negative and fit in `usize`.
fn element_count(shape: &[i64]) -> Result<usize> {
    let mut len: usize = 1;
    for &extent in shape {
        let extent =
            usize::try_from(extent).map_err(|_| refused("shape", format!("{shape:?}"), "non-negative extents"))?;
        len = len
            .checked_mul(extent)
            .ok_or_else(|| refused("shape", format!("{shape:?}"), "an element count that fits in usize"))?;
    }
    Ok(len)
}

/// Compact row-major strides for `shape`: each the product of the extents after it.
fn compact_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Accepts strides that are compact row-major (a dimension of extent 1 may have any stride);
/// otherwise says whether they leave gaps or are in another order.
fn check_compact(shape: &[i64], strides: &[i64]) -> Result<()> {
    let compact = compact_strides(shape);
    let fits = shape.iter().zip(strides).zip(&compact).all(|((&n, &s), &c)| n == 1 || s == c);
    if fits {
        return Ok(());
    }
    // Row-major with gaps: going inwards over the dimensions that matter, each stride is
    // positive and at least the span of the dimensions inside it.
    let mut inner_span: i64 = 1;
    let mut with_gaps = true;
    for (&n, &s) in shape.iter().zip(strides).rev().filter(|(&n, _)| n != 1) {
        if s < inner_span {
            with_gaps = false;
            break;
        }
        inner_span = s.saturating_mul(n);
    }
    let found = format!("{strides:?} for shape {shape:?}");
    let expected = if with_gaps {
        format!("{compact:?} (compact row-major): these strides leave gaps between elements, as a strided view (a[::2]) does; make the array contiguous first (numpy.ascontiguousarray, torch's .contiguous())")
    } else {
        format!("{compact:?} (compact row-major): these strides are not in row-major order, as a transposed or reversed view's are; make the array contiguous first (numpy.ascontiguousarray, torch's .contiguous())")
    };
    Err(refused("strides", found, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_layouts_of_any_rank_are_accepted() {
        assert!(check_compact(&[5], &[1]).is_ok());
        assert!(check_compact(&[2, 3, 4], &[12, 4, 1]).is_ok());
        // Extent-1 dimensions may carry any stride (producers differ there).
        assert!(check_compact(&[1, 3], &[7, 1]).is_ok());
        assert!(check_compact(&[3, 1], &[1, 99]).is_ok());
        assert_eq!(element_count(&[2, 3, 4]).unwrap(), 24);
        assert_eq!(element_count(&[]).unwrap(), 1);
        assert_eq!(element_count(&[3, 0]).unwrap(), 0);
    }

    #[test]
    fn gaps_and_other_orders_are_told_apart() {
        let message = |shape: &[i64], strides: &[i64]| match check_compact(shape, strides) {
            Err(Error::DlpackRefused { field: "strides", found, expected }) => (found, expected),
            other => panic!("{other:?}"),
        };
        let (found, expected) = message(&[5], &[2]);
        assert_eq!(found, "[2] for shape [5]");
        assert!(expected.starts_with("[1] (compact row-major)") && expected.contains("gaps"), "{expected}");
        let (_, expected) = message(&[3, 2], &[3, 1]);
        assert!(expected.contains("gaps"), "{expected}");
        let (found, expected) = message(&[3, 3], &[1, 3]);
        assert_eq!(found, "[1, 3] for shape [3, 3]");
        assert!(expected.contains("not in row-major order"), "{expected}");
        let (_, expected) = message(&[4], &[-1]);
        assert!(expected.contains("not in row-major order"), "{expected}");
    }

    #[test]
    fn negative_or_overflowing_shapes_are_refused() {
        assert!(matches!(element_count(&[3, -1]), Err(Error::DlpackRefused { field: "shape", .. })));
        assert!(matches!(element_count(&[i64::MAX, i64::MAX]), Err(Error::DlpackRefused { field: "shape", .. })));
    }
}
