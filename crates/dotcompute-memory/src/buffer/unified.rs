//! `UnifiedBuffer<T>`: a typed array with a host part and a device part kept coherent.

use super::boxed::BoxedBuffer;
use super::future::TransferFuture;
use super::raw::HOST_ALIGN;
use super::slice::{AsBufferView, BufferSlice, BufferSliceMut};
use super::state::BufferState;
use super::view::{Access, DeviceView, DeviceViewMut};
use crate::element::Element;
use crate::error::{check_len, check_range, Error, Result};
use crate::pool::context::ManagerShared;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::panic::Location;
use std::sync::Arc;

pub use super::raw::BufferMetrics;

/// A buffer of `len` elements of `T` whose data lives on the host, on the device, or both, with
/// its coherence state tracked (see [`BufferState`], whose documentation has the table).
///
/// Made by [`MemoryManager::allocate`](crate::MemoryManager::allocate) and its siblings;
/// dropping it returns its memory to the manager's pool (after any in-flight transfer has
/// finished). Each method that changes the state says which state it leaves.
///
/// ```
/// use dotcompute_memory::*;
///
/// let mm = MemoryManager::cpu();
/// let mut buf = mm.allocate::<u32>(4)?;
/// assert_eq!(buf.state(), BufferState::HostOnly);
///
/// buf.copy_from(&[1, 2, 3, 4])?; // a host write
/// buf.ensure_on_device()?; // both parts now hold the data
/// assert_eq!(buf.state(), BufferState::Synchronized);
///
/// buf.as_mut_slice()?[0] = 10; // the host part is newer
/// assert_eq!(buf.state(), BufferState::HostDirty);
///
/// buf.upload(&[5, 6, 7, 8])?; // straight to the device: the device part is newer
/// assert_eq!(buf.state(), BufferState::DeviceDirty);
/// assert_eq!(buf.to_vec()?, [5, 6, 7, 8]); // reads whichever part is current
///
/// buf.release_device_part()?; // downloads, then frees the device part
/// assert_eq!(buf.state(), BufferState::HostOnly);
/// assert_eq!(buf.as_slice()?, [5, 6, 7, 8]);
/// # Ok::<(), Error>(())
/// ```
///
/// # Threads
///
/// `UnifiedBuffer` is `Send` but not `Sync`. Reading through `&self` may refresh a stale host
/// copy (`as_slice` pulls device data, like a cache fill), which is interior mutability; two
/// threads doing that at once would race. Share a buffer between threads behind a `Mutex`, or
/// hand out the `&[T]` from `as_slice` (which is `Sync`) or split the `&mut [T]` from
/// `as_mut_slice` (`chunks_mut`, `split_at_mut`) across scoped threads.
pub struct UnifiedBuffer<T: Element> {
    /// The buffer's state on the heap (a buffer is one pointer; see `buffer::boxed`). The
    /// length is `raw.bytes() / size_of::<T>()`.
    pub(crate) raw: BoxedBuffer,
    _element: PhantomData<T>,
}

impl<T: Element> std::fmt::Debug for UnifiedBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnifiedBuffer")
            .field("element", &T::TYPE_TAG.name)
            .field("len", &self.len())
            .field("state", &self.state())
            .field("backend", &self.raw.manager().backend().name())
            .finish()
    }
}

/// The parts a new buffer is made with.
#[derive(Clone, Copy)]
enum Placement {
    /// The host part only (`allocate`): the device part is made when first needed.
    Host,
    /// The device part only (`allocate_device`).
    Device,
    /// Both parts (`allocate_on_device`).
    Both,
}

fn size<T>() -> usize {
    std::mem::size_of::<T>()
}

impl<T: Element> UnifiedBuffer<T> {
    #[inline(always)]
    pub(crate) fn new(
        mm: &Arc<ManagerShared>,
        len: usize,
        bytes: usize,
        location: &'static Location<'static>,
    ) -> Result<Self> {
        Self::make(mm, len, bytes, location, Placement::Host)
    }

    pub(crate) fn new_device_only(
        mm: &Arc<ManagerShared>,
        len: usize,
        bytes: usize,
        location: &'static Location<'static>,
    ) -> Result<Self> {
        Self::make(mm, len, bytes, location, Placement::Device)
    }

    pub(crate) fn new_on_device(
        mm: &Arc<ManagerShared>,
        len: usize,
        bytes: usize,
        location: &'static Location<'static>,
    ) -> Result<Self> {
        Self::make(mm, len, bytes, location, Placement::Both)
    }

    #[inline(always)]
    fn make(
        mm: &Arc<ManagerShared>,
        len: usize,
        bytes: usize,
        location: &'static Location<'static>,
        placement: Placement,
    ) -> Result<Self> {
        if std::mem::size_of::<T>() == 0 {
            return Err(Error::InvalidArgument {
                option: "element type",
                value: format!("{} (size 0)", T::TYPE_TAG.name),
                reason: "zero-sized elements carry no data; use a buffer of u8 or a unit count instead",
            });
        }
        if std::mem::align_of::<T>() > HOST_ALIGN {
            return Err(Error::InvalidArgument {
                option: "element type",
                value: format!("{} (alignment {})", T::TYPE_TAG.name, std::mem::align_of::<T>()),
                reason: "element alignment above 64 bytes is not supported",
            });
        }
        let id = mm.diagnostics.register(len, bytes, T::TYPE_TAG.name, location);
        let boxed = match placement {
            Placement::Host => BoxedBuffer::new(mm, bytes, id),
            Placement::Device => BoxedBuffer::new_device_only(mm, bytes, id),
            Placement::Both => BoxedBuffer::new_on_device(mm, bytes, id),
        };
        match boxed {
            Ok(raw) => {
                if let Some(trace) = &mm.trace {
                    super::boxed::trace_alloc(trace, &mm.diagnostics, &raw, bytes, location);
                }
                Ok(UnifiedBuffer { raw, _element: PhantomData })
            }
            Err(e) => {
                mm.diagnostics.unregister(id);
                Err(e)
            }
        }
    }

    /// A buffer over `len` elements of foreign memory at `ptr` that `release` gives back to its
    /// owner when the buffer drops (see `RawBuffer::new_foreign`, whose contract the caller
    /// keeps; the element type's size and alignment are the caller's to check).
    #[cfg(feature = "dlpack")]
    pub(crate) fn new_foreign(
        mm: &Arc<ManagerShared>,
        len: usize,
        ptr: std::ptr::NonNull<u8>,
        release: Box<dyn FnOnce() + Send>,
        location: &'static Location<'static>,
    ) -> Self {
        let bytes = len * size::<T>();
        let id = mm.diagnostics.register(len, bytes, T::TYPE_TAG.name, location);
        UnifiedBuffer::from_boxed(BoxedBuffer::new_foreign(mm, ptr, bytes, release, id))
    }

    /// The buffer around `raw`, whose byte size is a multiple of `size_of::<T>()`.
    #[cfg(feature = "dlpack")]
    pub(crate) fn from_boxed(raw: BoxedBuffer) -> Self {
        UnifiedBuffer { raw, _element: PhantomData }
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw.bytes() / size::<T>()
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes (`len * size_of::<T>()`).
    pub fn size_in_bytes(&self) -> usize {
        self.raw.bytes()
    }

    /// Where the current data lives. If an asynchronous transfer is still in flight (its
    /// future was dropped before it resolved), waits for it first; a failed one leaves the state
    /// as it was before that transfer.
    pub fn state(&self) -> BufferState {
        self.raw.state()
    }

    /// The host and device modification epochs (see `buffer::state`).
    ///
    /// Unstable, for tests: hidden from the documentation, and may change without notice.
    #[doc(hidden)]
    pub fn epochs(&self) -> (u64, u64) {
        self.raw.epochs()
    }

    /// Id of the manager this buffer came from.
    pub fn manager_id(&self) -> u64 {
        self.raw.manager().id
    }

    /// Per-buffer transfer counters.
    pub fn metrics(&self) -> BufferMetrics {
        self.raw.metrics()
    }

    // ---- host access ----

    /// Copies `src` into the buffer's host part (a host write; no transfer). `src.len()` must
    /// equal `len()`.
    ///
    /// After this call the state is `HostDirty`, or `HostOnly` when the buffer has no device
    /// part.
    pub fn copy_from(&mut self, src: &[T]) -> Result<()> {
        check_len("copy_from", self.len(), src.len())?;
        self.write_range(0, src)
    }

    /// Host-to-device in one copy: writes `data` straight into device memory (through a fresh
    /// block that replaces the device part only on success). Use it instead of `copy_from` +
    /// `ensure_on_device` when the host copy is not needed.
    ///
    /// After this call the state is `DeviceDirty`, or `DeviceOnly` when the buffer has no host
    /// part (a zero-length buffer is left as it was). The device part holds the new data and
    /// the host part does not: keeping a host copy as well would cost the second copy this
    /// method exists to avoid, so the host part is stale, and `DeviceDirty` says exactly that
    /// (the next host access downloads), whether a kernel or an upload wrote the device part.
    pub fn upload(&mut self, data: &[T]) -> Result<()> {
        check_len("upload", self.len(), data.len())?;
        self.raw.upload(bytemuck::cast_slice(data))
    }

    /// Copies the buffer into `out`, reading whichever part is current.
    ///
    /// The state does not change.
    pub fn copy_to(&self, out: &mut [T]) -> Result<()> {
        check_len("copy_to", self.len(), out.len())?;
        self.read_range(0, out)
    }

    /// The buffer's contents as a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); self.len()];
        self.copy_to(&mut v)?;
        Ok(v)
    }

    /// Zero-copy host view; pulls from the device first when the device part is newer.
    ///
    /// After this call the state is as after [`UnifiedBuffer::ensure_on_host`].
    #[inline]
    pub fn as_slice(&self) -> Result<&[T]> {
        self.host_range(0, self.len())
    }

    /// Zero-copy mutable host view; pulls first when needed and marks the host part written.
    ///
    /// After this call the state is `HostDirty`, or `HostOnly` when the buffer has no device
    /// part.
    pub fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        self.host_range_mut(0, self.len())
    }

    /// Sets every element to `value` (a host write covering the whole buffer: no pull).
    ///
    /// After this call the state is `HostDirty`, or `HostOnly` when the buffer has no device
    /// part.
    pub fn fill(&mut self, value: T) -> Result<()> {
        self.fill_range(0, self.len(), value)
    }

    // ---- coherence ----

    /// Makes host and device parts equal, copying only the stale side, once. A buffer with no
    /// device part gets one (H2D), a buffer with no host part gets one (D2H).
    ///
    /// After this call the state is `Synchronized`.
    pub fn synchronize(&mut self) -> Result<()> {
        self.raw.settle()?;
        match self.state() {
            BufferState::Synchronized => Ok(()),
            BufferState::HostOnly | BufferState::HostDirty => self.raw.push(),
            BufferState::DeviceOnly | BufferState::DeviceDirty => self.raw.pull(),
        }
    }

    /// Makes the device part current (allocating it if needed): an upload when the host part
    /// is newer.
    ///
    /// After this call the state is `Synchronized`, or unchanged (`DeviceOnly`,
    /// `DeviceDirty`) when the device part already held the newest data.
    pub fn ensure_on_device(&mut self) -> Result<()> {
        self.raw.push()
    }

    /// Makes the host part current (allocating it if needed): a download when the device part
    /// is newer.
    ///
    /// After this call the state is `Synchronized`, or unchanged (`HostOnly`, `HostDirty`,
    /// `Synchronized`) when the host part already held the newest data.
    pub fn ensure_on_host(&self) -> Result<()> {
        self.raw.pull()
    }

    /// Declares that device memory was written (by a kernel). A buffer with no device part is
    /// uploaded first. Fails with [`Error::ConcurrentModification`], changing nothing, when the
    /// host part has writes the device has not seen.
    ///
    /// After this call the state is `DeviceDirty`, or `DeviceOnly` when the buffer has no host
    /// part.
    pub fn mark_device_dirty(&mut self) -> Result<()> {
        self.raw.settle()?;
        self.raw.check_no_host_writes("mark_device_dirty")?;
        self.raw.push()?;
        self.raw.device_written();
        Ok(())
    }

    /// Frees the device part after bringing the host part up to date (a download when the
    /// device part is newer), so the buffer holds host memory only.
    ///
    /// After this call the state is `HostOnly`.
    pub fn release_device_part(&mut self) -> Result<()> {
        self.raw.release_device_part()
    }

    /// Frees the device part; see [`UnifiedBuffer::release_device_part`].
    #[deprecated(note = "renamed to `release_device_part`: it frees the device part, it does not compact anything")]
    pub fn compact(&mut self) -> Result<()> {
        self.release_device_part()
    }

    /// Device-to-device copy of all of `src` (a buffer or a view of equal length) into this
    /// buffer (H2D from `src`'s host part when that is its current one).
    ///
    /// `src` may belong to another manager, on another device: the copy is then a peer copy,
    /// direct where this device can reach the other ([`Backend::can_copy_from_peer`]: CUDA peer
    /// access, simulated devices of one group), else staged through host memory in pipelined
    /// chunks. Either way it counts as a device-to-device transfer of this buffer's manager.
    /// Between two unified (cpu) managers it is a plain copy. Each buffer keeps its device and
    /// its pool alive, so the copy works the same after either manager's handles are dropped.
    ///
    /// After this call the state is `DeviceDirty`, or `DeviceOnly` when the buffer has no host
    /// part. On error (lengths differ, a device fault or a lost device) this buffer's contents
    /// and state are as they were.
    ///
    /// ```
    /// use dotcompute_memory::*;
    /// use std::sync::Arc;
    ///
    /// # fn main() -> Result<()> {
    /// let mut devices = SimBackend::group(2, SimOptions::default());
    /// let (b, a) = (devices.pop().unwrap(), devices.pop().unwrap());
    /// let options = ManagerOptions::default().with_maintenance_interval(None);
    /// let (mm0, mm1) = (MemoryManager::with_backend(a, options.clone())?, MemoryManager::with_backend(b, options)?);
    ///
    /// let mut src = mm0.allocate_from(&[1u32, 2, 3, 4])?;
    /// src.ensure_on_device()?;                          // current on device 0
    /// let mut dst = mm1.allocate::<u32>(4)?;
    /// dst.copy_from_buffer(&src)?;                      // device 0 -> device 1, direct
    /// assert_eq!(dst.to_vec()?, [1, 2, 3, 4]);
    /// assert_eq!(mm1.statistics().device_to_device.count, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`Backend::can_copy_from_peer`]: crate::backend::Backend::can_copy_from_peer
    pub fn copy_from_buffer<S: AsBufferView<T> + ?Sized>(&mut self, src: &S) -> Result<()> {
        let view = src.view();
        self.copy_range_from(0, self.len(), &view)
    }

    /// A new buffer from the same manager with the same contents, copied on the device (see
    /// [`UnifiedBuffer::copy_from_buffer`]). This buffer's state does not change; the clone's
    /// is `DeviceDirty`.
    pub fn try_clone(&self) -> Result<Self> {
        let mut out = UnifiedBuffer::new(self.raw.manager(), self.len(), self.raw.bytes(), Location::caller())?;
        out.copy_from_buffer(self)?;
        Ok(out)
    }

    // ---- views ----

    /// A read-only view of `range`, sharing this buffer's memory.
    ///
    /// The state does not change (reads through the view change it as their buffer methods
    /// do: [`BufferSlice::as_slice`] as [`UnifiedBuffer::as_slice`]).
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<BufferSlice<'_, T>> {
        let (start, end) = check_range(range, self.len())?;
        Ok(BufferSlice::new(self, start, end - start))
    }

    /// A mutable view of `range`, sharing this buffer's memory.
    ///
    /// The state does not change (writes through the view do, as each of its methods says).
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> Result<BufferSliceMut<'_, T>> {
        let (start, end) = check_range(range, self.len())?;
        Ok(BufferSliceMut::new(self, start, end - start))
    }

    // ---- device views ----

    /// Read access to the buffer's device memory for a kernel; uploads first when the host
    /// part is newer. See [`DeviceView`].
    ///
    /// After this call the state is as after [`UnifiedBuffer::ensure_on_device`]; ending the
    /// view does not change it.
    pub fn device_view(&self) -> Result<DeviceView<'_, T>> {
        self.device_view_range(0, self.len())
    }

    /// Access to the buffer's device memory for a kernel. `Read` and `ReadWrite` upload first
    /// when the host part is newer; `Overwrite` never uploads. See [`DeviceViewMut`].
    ///
    /// After the view ends the state is `DeviceDirty`, or `DeviceOnly` when the buffer has no
    /// host part, for `ReadWrite` and `Overwrite`; for `Read` it is as after
    /// [`UnifiedBuffer::ensure_on_device`].
    pub fn device_view_mut(&mut self, access: Access) -> Result<DeviceViewMut<'_, T>> {
        let len = self.len();
        self.device_view_mut_range(0, len, access)
    }

    /// Runs `kernel` on a [`DeviceViewMut`] of the whole buffer and ends the view when it
    /// returns, so the view cannot be dropped before the kernel is enqueued.
    ///
    /// After this call the state is as after the view of [`UnifiedBuffer::device_view_mut`]
    /// ends.
    ///
    /// ```
    /// use dotcompute_memory::*;
    /// let mm = MemoryManager::sim(SimOptions::default());
    /// let mut buf = mm.allocate_from(&[1.0f32, 2.0, 3.0])?;
    /// buf.with_device_mut(Access::ReadWrite, |view| {
    ///     // On cpu and sim a kernel can be a closure over the device memory.
    ///     for x in view.device_slice_mut().expect("sim memory is host-addressable") {
    ///         *x *= 2.0;
    ///     }
    /// })?;
    /// assert_eq!(buf.state(), BufferState::DeviceDirty);
    /// assert_eq!(buf.to_vec()?, [2.0, 4.0, 6.0]);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_device_mut<R>(
        &mut self,
        access: Access,
        kernel: impl FnOnce(&mut DeviceViewMut<'_, T>) -> R,
    ) -> Result<R> {
        let mut view = self.device_view_mut(access)?;
        Ok(kernel(&mut view))
    }

    pub(crate) fn device_view_range(&self, start: usize, len: usize) -> Result<DeviceView<'_, T>> {
        self.raw.prepare_device(true)?;
        Ok(DeviceView::new(&self.raw, start, len))
    }

    pub(crate) fn device_view_mut_range(
        &mut self,
        start: usize,
        len: usize,
        access: Access,
    ) -> Result<DeviceViewMut<'_, T>> {
        // Only a kernel that overwrites the whole buffer can skip the upload: a partial one
        // leaves the rest of the device part as the buffer's data.
        let covers_all = start == 0 && len == self.len();
        self.raw.prepare_device(!(access == Access::Overwrite && covers_all))?;
        Ok(DeviceViewMut::new(&mut self.raw, start, len, access))
    }

    // ---- casts ----

    /// Reinterprets the buffer as elements of `U` (bytemuck rules). Fails, dropping the buffer,
    /// when the byte size is not a multiple of `size_of::<U>()`; use [`UnifiedBuffer::try_cast`]
    /// to get the buffer back on failure.
    pub fn cast<U: Element>(self) -> Result<UnifiedBuffer<U>> {
        self.try_cast().map_err(|(_, e)| e)
    }

    /// Like [`UnifiedBuffer::cast`], but returns the buffer with the error.
    #[allow(clippy::result_large_err)] // returned by value on purpose: the caller gets the buffer back
    pub fn try_cast<U: Element>(self) -> std::result::Result<UnifiedBuffer<U>, (Self, Error)> {
        let bytes = self.raw.bytes();
        let fail = |reason| Error::CastMismatch {
            len: self.len(),
            from: T::TYPE_TAG.name,
            from_size: size::<T>(),
            to: U::TYPE_TAG.name,
            to_size: size::<U>(),
            reason,
        };
        if size::<U>() == 0 {
            let e = fail("the target type has size 0");
            return Err((self, e));
        }
        if !bytes.is_multiple_of(size::<U>()) {
            let e = fail("the byte size is not a multiple of the target size");
            return Err((self, e));
        }
        if std::mem::align_of::<U>() > HOST_ALIGN {
            let e = fail("the target alignment exceeds the 64-byte buffer alignment");
            return Err((self, e));
        }
        if self.raw.foreign_ptr().is_some_and(|p| !(p.as_ptr() as usize).is_multiple_of(std::mem::align_of::<U>())) {
            let e = fail("the buffer wraps foreign memory that is not aligned for the target type");
            return Err((self, e));
        }
        Ok(UnifiedBuffer { raw: self.raw, _element: PhantomData })
    }

    // ---- asynchronous forms ----
    //
    // Every asynchronous method is all-or-nothing: if it fails, whether when the transfer is
    // enqueued or when it completes, the buffer's contents, `state()` and `epochs()` are as
    // they were before the call. Until the transfer completes, the buffer keeps its old parts;
    // the new ones are installed only on success.

    /// Copies `data` into the buffer's own staging memory now (so `data` need not outlive the
    /// call), then uploads it; the future resolves when both parts hold it. If the upload
    /// fails, when it is started or when it completes, the buffer keeps its old contents, state
    /// and epochs.
    ///
    /// After the future resolves the state is `Synchronized`: exactly what `copy_from`
    /// followed by `ensure_on_device` gives (same contents, state and epochs), as one
    /// asynchronous step.
    pub fn copy_from_async(&mut self, data: &[T]) -> TransferFuture<'_, T> {
        let r = check_len("copy_from_async", self.len(), data.len())
            .and_then(|()| self.raw.start_replace(0, bytemuck::cast_slice(data)));
        TransferFuture::new(self, None, r.err())
    }

    /// Brings the host part up to date without blocking, then copies it into `out`. On failure
    /// the buffer is unchanged (`out` may hold part of the data).
    ///
    /// After the future resolves the state is as after [`UnifiedBuffer::ensure_on_host`].
    pub fn copy_to_async<'a>(&'a mut self, out: &'a mut [T]) -> TransferFuture<'a, T> {
        let r = check_len("copy_to_async", self.len(), out.len()).and_then(|()| self.raw.start_download(0));
        TransferFuture::new(self, Some(out), r.err())
    }

    /// Starts bringing the device part up to date and returns at once (CUDA's
    /// `cudaMemPrefetchAsync`, for a buffer a kernel will use soon): the upload runs while the
    /// caller does other work, and the next access to the buffer waits only if it has not
    /// finished. Nothing to do when the device part is current already.
    ///
    /// A prefetch is a hint: an error when it is started is returned here and changes nothing;
    /// a failure when it completes leaves the buffer as it was and is not reported by the next
    /// access, which makes its own transfer (and reports that one's result).
    ///
    /// After the transfer completes the state is as after [`UnifiedBuffer::ensure_on_device`].
    ///
    /// ```
    /// use dotcompute_memory::*;
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<()> {
    /// let mm = MemoryManager::sim(SimOptions::default().with_latency(Duration::from_millis(2)));
    /// let mut input = mm.allocate_from(&[1.0f32; 1024])?;
    /// input.prefetch_to_device()?;        // returns before the 2 ms upload is done
    /// let other_work: f32 = (0..1000).map(|i| i as f32).sum();
    /// let view = input.device_view()?;     // waits only for what is left of the upload
    /// assert_eq!(view.len(), 1024);
    /// drop(view);
    /// assert_eq!(input.state(), BufferState::Synchronized);
    /// # let _ = other_work;
    /// # Ok(())
    /// # }
    /// ```
    pub fn prefetch_to_device(&mut self) -> Result<()> {
        self.raw.prefetch(true)
    }

    /// Starts bringing the host part up to date and returns at once: the download runs while
    /// the caller does other work, and the next access waits only if it has not finished. A
    /// hint, as [`UnifiedBuffer::prefetch_to_device`]. After the transfer completes the state is
    /// as after [`UnifiedBuffer::ensure_on_host`].
    pub fn prefetch_to_host(&mut self) -> Result<()> {
        self.raw.prefetch(false)
    }

    /// `synchronize` without blocking. On failure the buffer is unchanged: a part is marked
    /// current only once the transfer that fills it has completed.
    ///
    /// After the future resolves the state is `Synchronized`.
    pub fn synchronize_async(&mut self) -> TransferFuture<'_, T> {
        let r = self.raw.settle().and_then(|()| match self.state() {
            BufferState::Synchronized => Ok(()),
            BufferState::HostOnly | BufferState::HostDirty => self.raw.start_upload(0),
            BufferState::DeviceOnly | BufferState::DeviceDirty => self.raw.start_download(0),
        });
        TransferFuture::new(self, None, r.err())
    }

    // ---- ranged operations shared with views (ranges already validated) ----

    pub(crate) fn write_range(&mut self, start: usize, src: &[T]) -> Result<()> {
        self.raw.settle()?;
        if src.is_empty() && !self.is_empty() {
            return Ok(());
        }
        if start == 0 && src.len() == self.len() {
            self.raw.ensure_host_part()?;
        } else {
            self.raw.pull()?;
        }
        let host: &mut [T] = bytemuck::cast_slice_mut(self.raw.host_mut());
        crate::ops::copy_into_typed(&mut host[start..start + src.len()], src);
        self.raw.host_written();
        Ok(())
    }

    pub(crate) fn fill_range(&mut self, start: usize, len: usize, value: T) -> Result<()> {
        self.raw.settle()?;
        if len == 0 && !self.is_empty() {
            return Ok(());
        }
        if start == 0 && len == self.len() {
            self.raw.ensure_host_part()?;
        } else {
            self.raw.pull()?;
        }
        let host: &mut [T] = bytemuck::cast_slice_mut(self.raw.host_mut());
        host[start..start + len].fill(value);
        self.raw.host_written();
        Ok(())
    }

    pub(crate) fn read_range(&self, start: usize, out: &mut [T]) -> Result<()> {
        self.raw.read_current(start * size::<T>(), bytemuck::cast_slice_mut(out))
    }

    #[inline]
    pub(crate) fn host_range(&self, start: usize, len: usize) -> Result<&[T]> {
        self.raw.pull()?;
        let host: &[T] = bytemuck::cast_slice(self.raw.host());
        Ok(&host[start..start + len])
    }

    pub(crate) fn host_range_mut(&mut self, start: usize, len: usize) -> Result<&mut [T]> {
        self.raw.pull()?;
        self.raw.host_written();
        let host: &mut [T] = bytemuck::cast_slice_mut(self.raw.host_mut());
        Ok(&mut host[start..start + len])
    }

    pub(crate) fn copy_range_from(&mut self, start: usize, len: usize, src: &BufferSlice<'_, T>) -> Result<()> {
        check_len("copy_from_buffer", len, src.len())?;
        if len == 0 && !self.is_empty() {
            // An empty range of a non-empty buffer: nothing to copy, no state change. (A whole
            // empty buffer still takes the device write's state change, like any other size.)
            return Ok(());
        }
        let sz = size::<T>();
        self.raw.device_write_from(start * sz, &src.buffer().raw, src.offset() * sz, len * sz)
    }
}

impl<T: Element> AsBufferView<T> for UnifiedBuffer<T> {
    fn view(&self) -> BufferSlice<'_, T> {
        BufferSlice::new(self, 0, self.len())
    }
}
