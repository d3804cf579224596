//! Export: a buffer handed to a DLPack consumer, owned by the tensor until its deleter runs.
//!
//! ```text
//!   Box<Export<M>>  (M = DLManagedTensorVersioned or DLManagedTensor; manager_ctx = the box)
//!   ┌──────────────────────────┬───────────┬─────────────┬──────────────────┬──────────┐
//!   │ managed: M               │ shape [n] │ strides [1] │ sync_on_release  │ buffer   │
//!   │  dl_tensor.shape ────────┼──►        │             │ (CUDA only)      │ (owned)  │
//!   │  dl_tensor.strides ──────┼───────────┼──►          │                  │          │
//!   │  deleter = delete::<M>   │           │             │                  │          │
//!   └──────────────────────────┴───────────┴─────────────┴──────────────────┴──────────┘
//! ```
//!
//! The deleter frees the box, which drops the buffer: its memory goes back to the pool only
//! then. Until the export is handed over (`into_raw`), the Rust value owns the box and its drop
//! runs the same deleter.

use super::ffi::{
    dtype_of, DLDataType, DLDevice, DLManagedTensor, DLManagedTensorVersioned, DLPackVersion, DLTensor,
    DLPACK_FLAG_BITMASK_READ_ONLY, DLPACK_VERSION, KDL_CPU,
};
use crate::buffer::boxed::BoxedBuffer;
use crate::buffer::unified::UnifiedBuffer;
use crate::buffer::view::Access;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::pool::context::ManagerShared;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{addr_of_mut, NonNull};
use std::sync::Arc;

/// A managed-tensor struct of either DLPack ABI, as the export fills it in.
pub(crate) trait Managed: Sized {
    /// The struct for `tensor` with `flags` (dropped by the legacy ABI, which has none), its
    /// deleter [`delete`], and a null context (set once the export is boxed).
    fn new(tensor: DLTensor, flags: u64) -> Self;

    /// The `dl_tensor` field of `*this`.
    ///
    /// # Safety
    ///
    /// `this` must point to a live struct.
    unsafe fn tensor_ptr(this: *mut Self) -> *mut DLTensor;

    /// The `manager_ctx` field of `*this`.
    ///
    /// # Safety
    ///
    /// `this` must point to a live struct.
    unsafe fn ctx_ptr(this: *mut Self) -> *mut *mut c_void;
}

impl Managed for DLManagedTensorVersioned {
    fn new(dl_tensor: DLTensor, flags: u64) -> Self {
        DLManagedTensorVersioned {
            version: DLPACK_VERSION,
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(delete::<Self>),
            flags,
            dl_tensor,
        }
    }

    unsafe fn tensor_ptr(this: *mut Self) -> *mut DLTensor {
        // SAFETY: `this` points to a live struct (the contract); no reference is made.
        unsafe { addr_of_mut!((*this).dl_tensor) }
    }

    unsafe fn ctx_ptr(this: *mut Self) -> *mut *mut c_void {
        // SAFETY: as above.
        unsafe { addr_of_mut!((*this).manager_ctx) }
    }
}

impl Managed for DLManagedTensor {
    fn new(dl_tensor: DLTensor, _flags: u64) -> Self {
        DLManagedTensor { dl_tensor, manager_ctx: std::ptr::null_mut(), deleter: Some(delete::<Self>) }
    }

    unsafe fn tensor_ptr(this: *mut Self) -> *mut DLTensor {
        // SAFETY: `this` points to a live struct (the contract); no reference is made.
        unsafe { addr_of_mut!((*this).dl_tensor) }
    }

    unsafe fn ctx_ptr(this: *mut Self) -> *mut *mut c_void {
        // SAFETY: as above.
        unsafe { addr_of_mut!((*this).manager_ctx) }
    }
}

/// Synchronises the backend before the buffer after it is released (fields drop in order):
/// a consumer's CUDA stream may still be using the memory when it calls the deleter.
struct SyncOnRelease(Option<Arc<ManagerShared>>);

impl Drop for SyncOnRelease {
    fn drop(&mut self) {
        if let Some(mm) = self.0.take() {
            let _ = mm.backend().synchronize();
        }
    }
}

/// What `manager_ctx` points to: the managed struct first, so a pointer to the export is a
/// pointer to it (`repr(C)`), then what the tensor's pointers address and what it keeps alive.
#[repr(C)]
struct Export<M> {
    managed: M,
    shape: [i64; 1],
    strides: [i64; 1],
    sync_on_release: SyncOnRelease,
    buffer: BoxedBuffer,
}

/// The deleter of every export: frees the export, and with it the buffer.
///
/// # Safety
///
/// `managed` is null (nothing happens) or a managed struct made by [`Owned::new`] whose
/// deleter has not run yet; it runs once.
unsafe extern "C" fn delete<M: Managed>(managed: *mut M) {
    if managed.is_null() {
        return;
    }
    // SAFETY: made by `Owned::new`, so `manager_ctx` is the export's `Box::into_raw` pointer,
    // still live (the deleter runs once), and nothing else uses the export any more.
    drop(unsafe { Box::from_raw((*M::ctx_ptr(managed)).cast::<Export<M>>()) });
}

/// Where the exported memory is, and what its release needs.
pub(crate) struct Placement {
    pub(crate) data: *mut c_void,
    pub(crate) byte_offset: u64,
    pub(crate) device: DLDevice,
    /// For memory a consumer's stream may still use when it calls the deleter (CUDA).
    pub(crate) sync_on_release: bool,
}

/// An export owned on the Rust side: the boxed [`Export`], freed by [`delete`] on drop.
struct Owned<M: Managed> {
    export: NonNull<Export<M>>,
}

impl<M: Managed> Owned<M> {
    fn new(buffer: BoxedBuffer, len: usize, dtype: DLDataType, placement: Placement, flags: u64) -> Self {
        let tensor = DLTensor {
            data: placement.data,
            device: placement.device,
            ndim: 1,
            dtype,
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            byte_offset: placement.byte_offset,
        };
        let sync = SyncOnRelease(placement.sync_on_release.then(|| buffer.manager().clone()));
        let export = Box::new(Export {
            managed: M::new(tensor, flags),
            // A buffer holds at most isize::MAX bytes, so its length fits in i64.
            shape: [len as i64],
            strides: [1],
            sync_on_release: sync,
            buffer,
        });
        let p = Box::into_raw(export);
        // SAFETY: `p` comes from `Box::into_raw`: live and not aliased. The tensor's pointers
        // and the context are written through raw places derived from `p`, so they stay valid
        // for as long as the allocation does (until `delete`).
        unsafe {
            let managed = addr_of_mut!((*p).managed);
            let tensor = M::tensor_ptr(managed);
            (*tensor).shape = addr_of_mut!((*p).shape).cast::<i64>();
            (*tensor).strides = addr_of_mut!((*p).strides).cast::<i64>();
            *M::ctx_ptr(managed) = p.cast::<c_void>();
            Owned { export: NonNull::new_unchecked(p) }
        }
    }

    fn managed(&self) -> &M {
        // SAFETY: the export is live while `self` owns it, and only read through `&self`.
        unsafe { &(*self.export.as_ptr()).managed }
    }

    fn tensor(&self) -> &DLTensor {
        // SAFETY: as in `managed`.
        unsafe { &*M::tensor_ptr(addr_of_mut!((*self.export.as_ptr()).managed)) }
    }

    fn into_raw(self) -> *mut M {
        let p = self.export.as_ptr().cast::<M>();
        std::mem::forget(self);
        p
    }

    fn into_buffer(self) -> BoxedBuffer {
        let p = self.export.as_ptr();
        std::mem::forget(self);
        // SAFETY: the export was owned by `self`, which is forgotten, so this is its only owner.
        let Export { mut sync_on_release, buffer, .. } = *unsafe { Box::from_raw(p) };
        // Taken back, not released: no consumer has used the memory.
        sync_on_release.0 = None;
        buffer
    }
}

impl<M: Managed> Drop for Owned<M> {
    fn drop(&mut self) {
        // SAFETY: the export is still owned here (`into_raw` and `into_buffer` forget `self`),
        // so its deleter has not run.
        unsafe { delete::<M>(self.export.as_ptr().cast::<M>()) }
    }
}

/// A buffer exported as a DLPack 1.x `DLManagedTensorVersioned`, from
/// [`UnifiedBuffer::to_dlpack`]. It owns the buffer: the memory stays allocated, and out of the
/// pool, until the tensor's deleter runs.
///
/// Hand it to a consumer with [`into_raw`](Self::into_raw) (the consumer then calls the deleter
/// once, when it is done). Dropped without being handed over, it runs the deleter itself;
/// [`into_buffer`](Self::into_buffer) takes the buffer back instead.
pub struct DlpackTensor<T: Element> {
    owned: Owned<DLManagedTensorVersioned>,
    _element: PhantomData<T>,
}

/// A buffer exported as a legacy (pre-1.0) `DLManagedTensor`, from
/// [`UnifiedBuffer::to_dlpack_legacy`]: as [`DlpackTensor`], for consumers that only take the
/// legacy struct. It has no flags, so it cannot say that the memory is read-only.
pub struct DlpackTensorLegacy<T: Element> {
    owned: Owned<DLManagedTensor>,
    _element: PhantomData<T>,
}

// SAFETY: the export's raw pointers address its own allocation, which the value owns alone, and
// the buffer it holds is `Send`; the deleter may run on any thread.
unsafe impl<T: Element> Send for DlpackTensor<T> {}
// SAFETY: as above.
unsafe impl<T: Element> Send for DlpackTensorLegacy<T> {}

impl<T: Element> DlpackTensor<T> {
    /// The tensor: data pointer, device, dtype, shape `[len]`, strides `[1]`, byte offset.
    pub fn tensor(&self) -> &DLTensor {
        self.owned.tensor()
    }

    /// The managed struct's flags ([`DLPACK_FLAG_BITMASK_READ_ONLY`] for [`Access::Read`]).
    pub fn flags(&self) -> u64 {
        self.owned.managed().flags
    }

    /// The DLPack version the tensor declares ([`DLPACK_VERSION`]).
    pub fn version(&self) -> DLPackVersion {
        self.owned.managed().version
    }

    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.owned.export_len()
    }

    /// True for a zero-length tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands the tensor over: the returned pointer is the consumer's, which must call its
    /// `deleter` exactly once when done with the memory (that releases the buffer).
    pub fn into_raw(self) -> *mut DLManagedTensorVersioned {
        self.owned.into_raw()
    }

    /// Takes the buffer back without handing the tensor over. Its state is as the export left
    /// it (see [`UnifiedBuffer::to_dlpack`]).
    pub fn into_buffer(self) -> UnifiedBuffer<T> {
        UnifiedBuffer::from_boxed(self.owned.into_buffer())
    }
}

impl<T: Element> DlpackTensorLegacy<T> {
    /// The tensor: data pointer, device, dtype, shape `[len]`, strides `[1]`, byte offset.
    pub fn tensor(&self) -> &DLTensor {
        self.owned.tensor()
    }

    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.owned.export_len()
    }

    /// True for a zero-length tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands the tensor over: the returned pointer is the consumer's, which must call its
    /// `deleter` exactly once when done with the memory (that releases the buffer).
    pub fn into_raw(self) -> *mut DLManagedTensor {
        self.owned.into_raw()
    }

    /// Takes the buffer back without handing the tensor over. Its state is as the export left
    /// it (see [`UnifiedBuffer::to_dlpack`]).
    pub fn into_buffer(self) -> UnifiedBuffer<T> {
        UnifiedBuffer::from_boxed(self.owned.into_buffer())
    }
}

impl<M: Managed> Owned<M> {
    fn export_len(&self) -> usize {
        // SAFETY: as in `managed`.
        let shape = unsafe { (*self.export.as_ptr()).shape };
        shape[0] as usize
    }
}

fn describe(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    element: &str,
    tensor: &DLTensor,
    flags: Option<u64>,
) -> fmt::Result {
    let mut s = f.debug_struct(name);
    s.field("element", &element)
        .field(
            "len",
            &(!tensor.shape.is_null()).then(|| {
                // SAFETY: a non-null shape of an export points to its one extent, live with it.
                unsafe { *tensor.shape }
            }),
        )
        .field("device", &tensor.device)
        .field("dtype", &tensor.dtype)
        .field("data", &tensor.data)
        .field("byte_offset", &tensor.byte_offset);
    if let Some(flags) = flags {
        s.field("flags", &flags);
    }
    s.finish()
}

impl<T: Element> fmt::Debug for DlpackTensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        describe(f, "DlpackTensor", T::TYPE_TAG.name, self.tensor(), Some(self.flags()))
    }
}

impl<T: Element> fmt::Debug for DlpackTensorLegacy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        describe(f, "DlpackTensorLegacy", T::TYPE_TAG.name, self.tensor(), None)
    }
}

/// A failed export: the error and the buffer, handed back unchanged (contents and state as
/// before the call, except that a transfer that completed before a later step failed leaves
/// both parts current). Converts into [`Error`], dropping the buffer, so `?` works in functions
/// that return [`crate::Result`].
pub struct DlpackExportError<T: Element> {
    error: Error,
    buffer: UnifiedBuffer<T>,
}

impl<T: Element> DlpackExportError<T> {
    /// Why the export failed.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The buffer, back to its caller.
    pub fn into_buffer(self) -> UnifiedBuffer<T> {
        self.buffer
    }

    /// The error and the buffer.
    pub fn into_parts(self) -> (Error, UnifiedBuffer<T>) {
        (self.error, self.buffer)
    }
}

impl<T: Element> fmt::Debug for DlpackExportError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T: Element> fmt::Display for DlpackExportError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T: Element> std::error::Error for DlpackExportError<T> {}

impl<T: Element> From<DlpackExportError<T>> for Error {
    fn from(e: DlpackExportError<T>) -> Error {
        e.error
    }
}

/// DLPack export (feature `dlpack`).
impl<T: Element> UnifiedBuffer<T> {
    /// Exports the buffer as a DLPack 1.x tensor for a consumer (NumPy's `from_dlpack`,
    /// PyTorch's, a C library), without a copy. The tensor owns the buffer until its deleter
    /// runs, so the memory is neither freed nor reused by the pool before the consumer is done.
    ///
    /// Which memory: the device part when it holds the newest data and the backend can hand it
    /// out (CUDA: `kDLCUDA` with the device pointer; OpenCL: `kDLOpenCL` with `data` the
    /// `cl_mem` and `byte_offset` the buffer's place in it), else the host part (`kDLCPU`,
    /// device 0; on the cpu backend the one memory is host memory). A buffer whose data is only
    /// in a simulated (sim) device part is refused: consumers cannot address it (call
    /// [`UnifiedBuffer::ensure_on_host`] first). A zero-length buffer exports shape `[0]` with
    /// an aligned, non-null dangling `kDLCPU` pointer. The tensor is 1-D: shape `[len]`,
    /// strides `[1]`, dtype from the element type (`f32` is `kDLFloat 32`, `i32` `kDLInt 32`,
    /// `u8` `kDLUInt 8`, ...; user element types are refused).
    ///
    /// `access` is what the consumer does, as for a device view: [`Access::Read`] brings the
    /// exported part up to date and sets `DLPACK_FLAG_BITMASK_READ_ONLY`; [`Access::ReadWrite`]
    /// brings it up to date and marks it as the newer part; [`Access::Overwrite`] skips the
    /// transfer and marks it as the newer part. That state is what
    /// [`DlpackTensor::into_buffer`] gives back.
    ///
    /// `stream` is the consumer's stream, as Python's `__dlpack__(stream=...)`: on a CUDA
    /// device part the consumer's stream waits for the buffer's last work (`None` or 1: the
    /// legacy default stream, 2: the per-thread default stream, -1: no synchronisation, any
    /// other value a `CUstream`; 0 is refused as ambiguous), and the deleter synchronises the
    /// context before the memory goes back to the pool. Host memory needs nothing (the data is
    /// in place when this returns) and OpenCL has no stream convention (the backend's queues
    /// are finished first), so `stream` is ignored there.
    ///
    /// ```
    /// use dotcompute_memory::*;
    /// let mm = MemoryManager::cpu();
    /// let buf = mm.allocate_from(&[1.0f32, 2.0, 3.0])?;
    /// let tensor = buf.to_dlpack(Access::Read, None)?;
    /// assert_eq!(tensor.tensor().dtype, DLDataType { code: dlpack::KDL_FLOAT, bits: 32, lanes: 1 });
    /// assert_eq!(tensor.flags(), dlpack::DLPACK_FLAG_BITMASK_READ_ONLY);
    /// let raw: *mut DLManagedTensorVersioned = tensor.into_raw(); // the consumer's now
    /// // ... the consumer reads 3 floats at (*raw).dl_tensor.data, then calls the deleter:
    /// // SAFETY: `raw` came from `into_raw`, and its deleter runs once.
    /// unsafe { ((*raw).deleter.unwrap())(raw) };
    /// assert_eq!(mm.diagnostics().live_count(), 0);
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The buffer comes back in the [`DlpackExportError`] with: [`Error::DlpackExport`] for an
    /// element type DLPack cannot name, a sim device part, or stream 0; the transfer's error
    /// when bringing the part up to date fails; [`Error::Backend`] when a CUDA stream wait
    /// fails.
    #[allow(clippy::result_large_err)] // the buffer comes back with the error, by value on purpose
    pub fn to_dlpack(
        mut self,
        access: Access,
        stream: Option<isize>,
    ) -> std::result::Result<DlpackTensor<T>, DlpackExportError<T>> {
        match prepare(&mut self, access, stream, false) {
            Ok((dtype, placement)) => {
                let flags = if access == Access::Read { DLPACK_FLAG_BITMASK_READ_ONLY } else { 0 };
                let len = self.len();
                Ok(DlpackTensor { owned: Owned::new(self.raw, len, dtype, placement, flags), _element: PhantomData })
            }
            Err(error) => Err(DlpackExportError { error, buffer: self }),
        }
    }

    /// [`UnifiedBuffer::to_dlpack`] as a legacy `DLManagedTensor`, for consumers that take only
    /// that (Python's `__dlpack__` called without `max_version`).
    ///
    /// The legacy struct has no flags, so it cannot tell the consumer not to write:
    /// [`Access::Read`] is refused ([`Error::DlpackExport`], as NumPy refuses to export a
    /// read-only array this way); export with [`Access::ReadWrite`], or use `to_dlpack`.
    #[allow(clippy::result_large_err)] // the buffer comes back with the error, by value on purpose
    pub fn to_dlpack_legacy(
        mut self,
        access: Access,
        stream: Option<isize>,
    ) -> std::result::Result<DlpackTensorLegacy<T>, DlpackExportError<T>> {
        match prepare(&mut self, access, stream, true) {
            Ok((dtype, placement)) => {
                let len = self.len();
                Ok(DlpackTensorLegacy { owned: Owned::new(self.raw, len, dtype, placement, 0), _element: PhantomData })
            }
            Err(error) => Err(DlpackExportError { error, buffer: self }),
        }
    }
}

/// Which part a buffer exports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Host,
    Device,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Host => "host",
            Side::Device => "device",
        }
    }
}

/// Validates the export, brings the exported part up to date (or makes it, for `Overwrite`)
/// and marks a written part newer; returns the dtype and where the memory is. Every check comes
/// before the first change.
fn prepare<T: Element>(
    buf: &mut UnifiedBuffer<T>,
    access: Access,
    stream: Option<isize>,
    legacy: bool,
) -> Result<(DLDataType, Placement)> {
    let raw = &mut *buf.raw;
    raw.settle()?;
    let mm = raw.manager().clone();
    let backend = mm.backend();
    let side = if raw.current_device().is_some() && device::exportable(backend) {
        Side::Device
    } else if raw.data_on_host() {
        Side::Host
    } else {
        Side::Device
    };
    let refuse = |reason: String| Error::DlpackExport {
        backend: backend.name(),
        side: side.name(),
        element: T::TYPE_TAG.name,
        reason,
    };
    let Some(dtype) = dtype_of::<T>() else {
        return Err(refuse(format!(
            "DLPack has no data type for the element type {} (type tag {}); export a buffer of a built-in numeric type (cast it with UnifiedBuffer::cast)",
            T::TYPE_TAG.name,
            T::TYPE_TAG.id
        )));
    };
    if side == Side::Device && !device::exportable(backend) {
        return Err(refuse(format!(
            "the newest data is only in the device part, and {} device memory cannot be addressed by a DLPack consumer (only CUDA and OpenCL device memory, and host memory, can be); call ensure_on_host() first to export the host part",
            backend.name()
        )));
    }
    if legacy && access == Access::Read {
        return Err(refuse(
            "Access::Read needs the read-only flag, which the legacy DLManagedTensor does not have; export with Access::ReadWrite, or use to_dlpack (DLPack 1.x)".into(),
        ));
    }
    if side == Side::Host {
        return Ok((dtype, host_placement(raw, access)?));
    }
    let order = device::Ordering::for_stream(backend, stream).map_err(refuse)?;
    raw.prepare_device(access != Access::Overwrite)?;
    let placement = device::placement(raw, &order)?;
    if access.writes() {
        raw.device_written();
    }
    Ok((dtype, placement))
}

/// The host part, current for `Read`/`ReadWrite` (made without a transfer for `Overwrite`), as a
/// `kDLCPU` tensor; a writing access marks it newer.
fn host_placement(raw: &mut crate::buffer::raw::RawBuffer, access: Access) -> Result<Placement> {
    if access == Access::Overwrite {
        raw.ensure_host_part()?;
    } else {
        raw.pull()?;
    }
    // Derived from a mutable borrow, so the consumer may write through it (for ReadWrite);
    // the host bytes are a separate allocation from the buffer's box, which the export moves.
    let data = raw.host_mut().as_mut_ptr().cast::<c_void>();
    if access.writes() {
        raw.host_written();
    }
    Ok(Placement {
        data,
        byte_offset: 0,
        device: DLDevice { device_type: KDL_CPU, device_id: 0 },
        sync_on_release: false,
    })
}

/// Device parts: which backends can export them, and how.
mod device {
    use super::Placement;
    use crate::backend::Backend;
    use crate::buffer::raw::RawBuffer;
    use crate::error::{Error, Result};

    /// True for a backend whose device memory a DLPack consumer can address.
    pub(super) fn exportable(backend: &dyn Backend) -> bool {
        #[cfg(feature = "cuda")]
        if backend.downcast_ref::<crate::backend::cuda::CudaBackend>().is_some() {
            return true;
        }
        #[cfg(feature = "opencl")]
        if backend.downcast_ref::<crate::backend::opencl::OpenClBackend>().is_some() {
            return true;
        }
        let _ = backend;
        false
    }

    /// How the consumer's work is ordered after ours.
    pub(super) struct Ordering {
        /// The consumer's stream to make wait (CUDA); `None` for stream -1.
        #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
        stream: Option<usize>,
    }

    impl Ordering {
        /// The Python protocol's stream values on CUDA: `None` and 1 the legacy default stream,
        /// 2 the per-thread default stream, -1 none, other positive values a stream handle.
        /// Other backends take no stream: it is ignored there.
        pub(super) fn for_stream(backend: &dyn Backend, stream: Option<isize>) -> std::result::Result<Self, String> {
            #[cfg(feature = "cuda")]
            let cuda = backend.downcast_ref::<crate::backend::cuda::CudaBackend>().is_some();
            #[cfg(not(feature = "cuda"))]
            let cuda = {
                let _ = backend;
                false
            };
            if !cuda {
                return Ok(Ordering { stream: None });
            }
            match stream {
                None => Ok(Ordering { stream: Some(1) }),
                Some(-1) => Ok(Ordering { stream: None }),
                Some(s) if s > 0 => Ok(Ordering { stream: Some(s as usize) }),
                Some(s) => Err(format!(
                    "stream {s} is not a consumer stream: pass None or 1 (legacy default stream), 2 (per-thread default stream), -1 (no synchronisation) or a stream handle; 0 is ambiguous and refused"
                )),
            }
        }
    }

    /// The current device part of `raw` (already brought up to date) as the backend's tensor.
    pub(super) fn placement(raw: &RawBuffer, order: &Ordering) -> Result<Placement> {
        let backend = raw.manager().backend();
        let internal = || Error::InvalidHandle {
            backend: backend.name(),
            reason: "DLPack export: a current device part without a device allocation; please report this".into(),
        };
        #[cfg(feature = "cuda")]
        if let Some(cuda) = backend.downcast_ref::<crate::backend::cuda::CudaBackend>() {
            let (memory, offset) = raw.device_location().ok_or_else(internal)?;
            let ptr = cuda.device_ptr(memory, offset, raw.bytes())?;
            if let Some(stream) = order.stream {
                let stream = std::ptr::without_provenance_mut(stream);
                // SAFETY: the caller passed a live stream or a special handle (the Python
                // protocol's contract for `stream`), for the duration of the export.
                unsafe { cuda.raw_stream_wait_for_queue(stream, crate::buffer::view::VIEW_QUEUE) }?;
            }
            return Ok(Placement {
                data: std::ptr::without_provenance_mut(ptr as usize),
                byte_offset: 0,
                device: super::DLDevice { device_type: super::super::ffi::KDL_CUDA, device_id: cuda.ordinal() as i32 },
                sync_on_release: true,
            });
        }
        #[cfg(feature = "opencl")]
        if let Some(opencl) = backend.downcast_ref::<crate::backend::opencl::OpenClBackend>() {
            let (memory, offset) = raw.device_location().ok_or_else(internal)?;
            let mem = opencl.cl_mem(memory)?;
            // Everything the backend enqueued on this memory has finished before the consumer
            // gets it: OpenCL has no DLPack stream convention to order it otherwise.
            backend.synchronize()?;
            return Ok(Placement {
                data: mem,
                byte_offset: offset as u64,
                device: super::DLDevice { device_type: super::super::ffi::KDL_OPENCL, device_id: 0 },
                sync_on_release: false,
            });
        }
        let _ = order;
        Err(internal())
    }
}
