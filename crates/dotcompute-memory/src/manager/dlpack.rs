//! DLPack import (feature `dlpack`): the entry points that take the manager, forwarding to
//! `crate::dlpack`, where the checks and the unsafe code are.

use super::MemoryManager;
use crate::buffer::UnifiedBuffer;
use crate::dlpack::{import_legacy, import_versioned, DLManagedTensor, DLManagedTensorVersioned};
use crate::element::Element;
use crate::error::Result;

/// DLPack import (feature `dlpack`).
impl<T: Element> UnifiedBuffer<T> {
    /// Wraps a producer's DLPack 1.x tensor (NumPy's `arr.__dlpack__(max_version=(1, 0))`
    /// capsule pointer, a C library's) as a buffer of `manager`, without a copy.
    ///
    /// The tensor's memory becomes the buffer's memory: on the cpu backend (and any unified
    /// one) it is both parts, as every allocation there is. It never enters the manager's pools
    /// (no pooled or cached bytes come from it); the producer's deleter runs exactly once, when
    /// the buffer is dropped. A tensor of any rank is accepted when its layout is compact
    /// row-major (strides null, or those of a C-contiguous array; an extent-1 dimension may
    /// have any stride), and becomes a 1-D buffer of all its elements in that order.
    ///
    /// The state is `HostOnly`.
    ///
    /// # Errors
    ///
    /// [`Error::DlpackRefused`](crate::Error::DlpackRefused), naming the field and its values,
    /// for: a null pointer; a major version other than 1; the read-only flag (a buffer hands
    /// out `&mut [T]`); device memory (only `kDLCPU`, `kDLCUDAHost` and `kDLROCMHost` are
    /// wrapped), or a manager whose backend is not unified; a dtype other than `T`'s (or a `T`
    /// DLPack cannot name); a negative `ndim` or extent, or a null shape; strides with gaps
    /// (`a[::2]`) or in another order (`a.T`); a null `data` with elements; `data +
    /// byte_offset` not aligned for `T`. [`Error::LengthOverflow`](crate::Error::LengthOverflow)
    /// when the size does not fit. On every error nothing was consumed: the tensor, and the
    /// duty to call its deleter, are still the caller's (in Python, leave the capsule's name
    /// as it is and its destructor calls the deleter).
    ///
    /// # Safety
    ///
    /// 1. `tensor` is null or points to a live `DLManagedTensorVersioned` that the caller
    ///    owns (it was not consumed or handed to anyone else), valid for reads, with `shape`
    ///    (and `strides`, unless null) valid for reads of `ndim` values.
    /// 2. On success the tensor belongs to the buffer: the caller must not use it or call its
    ///    deleter (in Python, rename the capsule `used_dltensor_versioned`). The buffer calls the
    ///    deleter once, from whichever thread drops it, so the deleter must allow that.
    /// 3. The elements at `data + byte_offset` are valid for reads and writes, initialised, and
    ///    stay valid until the deleter runs; nothing else (the producer included) accesses them
    ///    while a slice or view borrowed from the buffer, or a transfer on it, is alive.
    #[track_caller]
    pub unsafe fn from_dlpack(manager: &MemoryManager, tensor: *mut DLManagedTensorVersioned) -> Result<Self> {
        // SAFETY: the caller's contract, forwarded unchanged.
        unsafe { import_versioned(&manager.shared, tensor, std::panic::Location::caller()) }
    }

    /// [`UnifiedBuffer::from_dlpack`] for a legacy (pre-1.0) `DLManagedTensor` (a Python
    /// capsule named `dltensor`). It has no version and no flags, so neither is checked; every
    /// other check, and the error behaviour, are the same.
    ///
    /// # Safety
    ///
    /// As [`UnifiedBuffer::from_dlpack`], for a `DLManagedTensor` (the capsule to rename is
    /// `used_dltensor`).
    #[track_caller]
    pub unsafe fn from_dlpack_legacy(manager: &MemoryManager, tensor: *mut DLManagedTensor) -> Result<Self> {
        // SAFETY: the caller's contract, forwarded unchanged.
        unsafe { import_legacy(&manager.shared, tensor, std::panic::Location::caller()) }
    }
}
