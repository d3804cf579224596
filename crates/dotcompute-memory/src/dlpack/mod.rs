//! DLPack hand-off (feature `dlpack`): buffers exported to, and tensors imported from, other
//! array libraries (NumPy, PyTorch, JAX, CuPy, C code) without a copy.
//!
//! ```text
//!   export  buf.to_dlpack(Access, stream) ──► DlpackTensor<T> ──into_raw──► consumer
//!           (owns the buffer)                                   ... consumer calls deleter
//!                                                               ──► buffer dropped, memory to the pool
//!   import  producer's DLManagedTensorVersioned* ──unsafe UnifiedBuffer::from_dlpack──► UnifiedBuffer<T>
//!           (its memory, never pooled)            ... buffer dropped ──► producer's deleter, once
//! ```
//!
//! - [`ffi`]: the `#[repr(C)]` structs of `dlpack.h` and its constants, ours rather than a
//!   crate's: the ABI is five small structs, and this keeps Python bindings (pyo3) and the
//!   crates' changing APIs out of the library.
//! - `export`: [`UnifiedBuffer::to_dlpack`](crate::UnifiedBuffer::to_dlpack) and
//!   [`to_dlpack_legacy`](crate::UnifiedBuffer::to_dlpack_legacy), [`DlpackTensor`],
//!   [`DlpackTensorLegacy`], [`DlpackExportError`].
//! - `import`: the checks behind
//!   [`UnifiedBuffer::from_dlpack`](crate::UnifiedBuffer::from_dlpack): host memory (on a
//!   manager whose backend is unified: cpu), the element type's dtype, compact row-major
//!   strides of any rank (flattened to one dimension), an aligned non-null address, and for a
//!   versioned tensor major version 1 without the read-only flag.
//!
//! In Python, an object whose `__dlpack__(stream=None, max_version=None, dl_device=None,
//! copy=None)` returns a capsule named `dltensor_versioned` (or `dltensor` when `max_version`
//! is `None`) around the pointer from `into_raw`, and whose `__dlpack_device__()` returns
//! `(device_type, device_id)`, is what `numpy.from_dlpack` and `torch.from_dlpack` take; the
//! repository's `tests/python/test_dlpack.py` builds one with ctypes.

pub mod ffi;

mod export;
mod import;

pub use export::{DlpackExportError, DlpackTensor, DlpackTensorLegacy};
pub use ffi::{
    dtype_of, DLDataType, DLDevice, DLManagedTensor, DLManagedTensorVersioned, DLPackVersion, DLTensor,
    DLPACK_FLAG_BITMASK_IS_COPIED, DLPACK_FLAG_BITMASK_READ_ONLY, DLPACK_VERSION, KDL_BFLOAT, KDL_BOOL, KDL_COMPLEX,
    KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED, KDL_FLOAT, KDL_INT, KDL_METAL, KDL_OPENCL, KDL_ROCM,
    KDL_ROCM_HOST, KDL_UINT, KDL_VULKAN,
};
pub(crate) use import::{import_legacy, import_versioned};

#[cfg(test)]
mod tests;
