//! `BoxedBuffer`: a buffer's `RawBuffer` on the heap, so that a buffer is one pointer, and the
//! end of a buffer: its box parked in this thread's magazine (small buffers) or released.
//!
//! Allocating a buffer returns it by value, through a `Result`, often twice. A pointer moves
//! for free, where a 128-byte struct would be copied right after its fields were written one by
//! one, which stalls store forwarding. The box also makes the per-thread magazine cheap: a
//! dropped small buffer's whole box, with its block and manager reference, is parked there and
//! reset for the next allocation of its size class (see `buffer::magazine`). A buffer over
//! foreign memory has no allocation block, so it is never parked: retiring it releases it.

use super::magazine::{self, Kind};
use super::raw::{AllocationBlock, RawBuffer};
use crate::diagnostics::Diagnostics;
use crate::error::Result;
use crate::pool::context::ManagerShared;
use crate::pool::size_class::class_of;
use crate::trace::recorder::Recorder;
use crate::trace::TraceOp;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
#[cfg(feature = "dlpack")]
use std::ptr::NonNull;
use std::sync::Arc;

/// A buffer's state on the heap. Dropping it retires the buffer ([`retire`]).
pub(crate) struct BoxedBuffer(ManuallyDrop<Box<RawBuffer>>);

impl BoxedBuffer {
    /// A buffer of `bytes` bytes: a box from this thread's magazine when it has one of this
    /// size class, else a new one with memory from the pools.
    // Always inlined (its pool path is out of line in `from_pool`): left to the compiler, it
    // stays out of line in callers, a large share of a small allocate + drop.
    #[inline(always)]
    pub(crate) fn new(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<BoxedBuffer> {
        let kind = if mm.unified { Kind::Unified } else { Kind::Host };
        if let Some(boxed) = Self::parked(mm, kind, bytes, registry_id) {
            return Ok(boxed);
        }
        Self::from_pool(mm, bytes, registry_id)
    }

    /// A new box with memory from the pools (out of line: keeps `new`'s frame small).
    #[inline(never)]
    fn from_pool(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<BoxedBuffer> {
        magazine::flush_if_owner_closed();
        RawBuffer::new(mm, bytes, registry_id).map(Self::from_box)
    }

    /// A box of `kind` from this thread's magazine, reset for a buffer of `bytes` bytes.
    #[inline(always)]
    fn parked(mm: &ManagerShared, kind: Kind, bytes: usize, registry_id: u64) -> Option<BoxedBuffer> {
        if bytes == 0 || bytes > magazine::MAX_BLOCK {
            return None;
        }
        let (class, _) = class_of(bytes)?;
        let mut raw = magazine::take(mm, kind, class, bytes)?;
        raw.reuse(bytes, registry_id);
        Some(Self::from_box(raw))
    }

    /// A buffer with only a device part (`DeviceOnly`); see `RawBuffer::new_device_only`.
    pub(crate) fn new_device_only(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<BoxedBuffer> {
        if bytes == 0 || mm.unified {
            let mut boxed = BoxedBuffer::new(mm, bytes, registry_id)?;
            boxed.detach_host_unified();
            return Ok(boxed);
        }
        if let Some(boxed) = Self::parked(mm, Kind::Device, bytes, registry_id) {
            return Ok(boxed);
        }
        RawBuffer::new_device_only(mm, bytes, registry_id).map(Self::from_box)
    }

    /// A buffer with both parts made now (`Synchronized`; see `RawBuffer::new_on_device`). On
    /// unified memory the one allocation already is device memory: only its flag changes.
    pub(crate) fn new_on_device(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<BoxedBuffer> {
        if bytes == 0 || mm.unified {
            let boxed = BoxedBuffer::new(mm, bytes, registry_id)?;
            boxed.ensure_device_part()?;
            return Ok(boxed);
        }
        magazine::flush_if_owner_closed();
        RawBuffer::new_on_device(mm, bytes, registry_id).map(Self::from_box)
    }

    /// A buffer over foreign memory (see `RawBuffer::new_foreign`, whose contract the caller
    /// keeps). It is never parked: retiring it drops it, which runs its release.
    #[cfg(feature = "dlpack")]
    pub(crate) fn new_foreign(
        mm: &Arc<ManagerShared>,
        ptr: NonNull<u8>,
        bytes: usize,
        release: Box<dyn FnOnce() + Send>,
        registry_id: u64,
    ) -> BoxedBuffer {
        Self::from_box(RawBuffer::new_foreign(mm, ptr, bytes, release, registry_id))
    }

    #[inline(always)]
    fn from_box(raw: Box<RawBuffer>) -> BoxedBuffer {
        BoxedBuffer(ManuallyDrop::new(raw))
    }
}

/// Records the new buffer `raw` of `bytes` bytes in `trace`, with `location` as its site while
/// `diagnostics` tracks sites. Cold and out of line, and given what the caller has at hand: a
/// manager without a trace pays one test of its `trace` field, and its allocation path keeps
/// the size and shape that let callers inline it.
#[cold]
#[inline(never)]
pub(crate) fn trace_alloc(
    trace: &Recorder,
    diagnostics: &Diagnostics,
    raw: &RawBuffer,
    bytes: usize,
    location: &'static Location<'static>,
) {
    let site = if diagnostics.is_tracking() { trace.site(location) } else { 0 };
    trace.record(TraceOp::Alloc, trace_id(raw), bytes, site);
}

/// A buffer's id in traces: the address of its state, which is unique among live buffers and
/// stays the same from allocation to drop (a box parked in a magazine is reused, like a freed
/// pointer in RMM's logs).
#[inline]
fn trace_id(raw: &RawBuffer) -> u64 {
    std::ptr::from_ref(raw).addr() as u64
}

impl Deref for BoxedBuffer {
    type Target = RawBuffer;

    #[inline]
    fn deref(&self) -> &RawBuffer {
        &self.0
    }
}

impl DerefMut for BoxedBuffer {
    #[inline]
    fn deref_mut(&mut self) -> &mut RawBuffer {
        &mut self.0
    }
}

impl Drop for BoxedBuffer {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the box is taken exactly once, here, and `self.0` is not used afterwards.
        let raw = unsafe { ManuallyDrop::take(&mut self.0) };
        retire(raw);
    }
}

/// Where `raw` would be parked: `(slot, block size)` of the block made at allocation (see
/// `buffer::magazine`), `None` when it may not be.
#[inline]
fn park_slot(raw: &RawBuffer) -> Option<(usize, usize)> {
    match raw.allocation_block()? {
        AllocationBlock::Unified(region) => magazine::slot_of_region(Kind::Unified, region),
        AllocationBlock::Host(host) => magazine::slot_of_host(host),
        AllocationBlock::Device(region) => magazine::slot_of_region(Kind::Device, region),
    }
}

/// The end of a buffer: pending work settled, registry and statistics updated, then the box
/// parked in this thread's magazine (small buffers) or dropped, which releases its memory to
/// the pools.
///
/// The common case (nothing pending, not tracked, parked) stays inline and everything else
/// is out of line, so that a caller that does not inline this keeps a small frame.
#[inline]
fn retire(raw: Box<RawBuffer>) {
    if let Some(trace) = &raw.manager().trace {
        trace_free(trace, &raw);
    }
    if raw.needs_wind_down() {
        return retire_slow(raw);
    }
    // The common case, parked into the current magazine, calls nothing; every other case
    // is one (tail) call, so the caller needs no stack frame for this path.
    if let (Some((slot, size)), false) = (park_slot(&raw), raw.holds_second_part()) {
        let bytes = raw.bytes();
        if let Err((raw, _)) = magazine::try_park(raw, slot, size, bytes) {
            park_or_release(raw);
        }
        return;
    }
    park_or_release(raw);
}

/// Records the end of `raw` in `trace` (cold and out of line, as [`trace_alloc`]).
#[cold]
#[inline(never)]
fn trace_free(trace: &Recorder, raw: &RawBuffer) {
    trace.record(TraceOp::Free, trace_id(raw), raw.bytes(), 0);
}

#[inline(never)]
fn retire_slow(raw: Box<RawBuffer>) {
    raw.wind_down();
    park_or_release(raw);
}

#[inline(never)]
fn park_or_release(mut raw: Box<RawBuffer>) {
    let bytes = raw.bytes();
    let Some((slot, size)) = park_slot(&raw) else { return release(raw, bytes) };
    // A parked box keeps only the block made at allocation (the host part, or the device
    // part of a device-only buffer).
    raw.release_second_part();
    if let Some(back) = magazine::park(raw, slot, size, bytes) {
        release(back, bytes);
    }
}

/// A retired buffer that is not parked: counted as dropped, its memory released (and its box
/// freed: the box is the point, hence the allow).
#[inline(never)]
#[allow(clippy::boxed_local)]
fn release(raw: Box<RawBuffer>, bytes: usize) {
    magazine::flush_if_owner_closed();
    raw.manager().stats.buffer_dropped(bytes);
}
