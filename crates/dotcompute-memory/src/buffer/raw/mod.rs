//! `RawBuffer`: the untyped memory of one buffer, its coherence epochs, and every transfer
//! between its host and device parts.
//!
//! - `parts`: where the bytes live (host part, device part, or one unified allocation).
//! - `coherence`: the blocking transitions between the parts, and writes that change state.
//! - `peer`: device copies from any source: this device, a peer device, or staged through host.
//! - `pending`: asynchronous transfers in flight, and how they complete or are abandoned.
//! - `views`: the hooks of device views (kernels on the device part).
//! - `metrics`: per-buffer transfer counters (`BufferMetrics`).
//!
//! # The aliasing invariant
//!
//! Reading through `&UnifiedBuffer` may refresh a stale host part (`as_slice` pulls from the
//! device), so the host bytes are written through a raw pointer while only `&self` is held.
//! That is sound because of one invariant kept by this module:
//!
//! > A reference into the host bytes is handed out only while the host part is current, and
//! > the host part only becomes stale inside a `&mut self` method.
//!
//! So whenever the host part is stale, every earlier `&[u8]` into it has ended (it borrowed
//! `&self`, and a `&mut self` call happened since), and writing it cannot alias a live reference.
//! Asynchronous transfers keep the memory they use alive and untouched by recording a pending
//! event; every method that reads, writes or frees memory settles that event first (`Drop` too).
//!
//! # Failed transfers
//!
//! A transfer, blocking or asynchronous, writes only into a part that is stale (and stays
//! stale if the transfer fails) or into a fresh block that becomes a part only once the
//! transfer has succeeded. So no failure, at enqueue or at completion, leaves a part marked
//! current that does not hold the data. The one exception is a ranged device write into a
//! current device part (a slice's `copy_from_buffer`): it is written in place, which is exact
//! on backends whose failed copies write nothing (sim, cpu) and leaves the range undefined on
//! a driver that fails part-way.

mod coherence;
mod metrics;
mod parts;
mod peer;
mod pending;
mod views;

use super::state::{BufferState, Epochs};
use crate::backend::region::DeviceRegion;
use crate::error::{Error, Result};
use crate::pool::context::ManagerShared;
use metrics::TransferCells;
use parts::Parts;
use pending::Pending;
use std::cell::{Cell, OnceCell};
use std::ptr::NonNull;
use std::sync::Arc;

pub use metrics::BufferMetrics;
pub(crate) use parts::AllocationBlock;
pub(crate) use peer::PeerRoute;
#[cfg(test)]
pub(crate) use peer::PEER_CHUNK;

/// Alignment every buffer's host bytes are guaranteed to have.
pub(crate) const HOST_ALIGN: usize = 64;

/// A type with `HOST_ALIGN` alignment, for the dangling pointer of zero-byte buffers.
#[repr(C, align(64))]
struct AlignedEmpty([u8; HOST_ALIGN]);
const _: () = assert!(std::mem::align_of::<AlignedEmpty>() == HOST_ALIGN);

/// What a buffer needs only once it transfers or is tracked: boxed and made on first use, so a
/// buffer stays within 128 bytes (most small buffers never transfer, a buffer is moved by value
/// on allocation, and moves up to 128 bytes are a few register moves, not a `memcpy` call).
#[derive(Default)]
struct Extra {
    transfers: TransferCells,
    skipped_syncs: Cell<u64>,
    /// The asynchronous transfer in flight, if any (`has_pending` says so without the box).
    pending: Cell<Option<Pending>>,
    /// Id in the manager's live-buffer registry (0: not tracked).
    registry_id: u64,
}

/// The untyped state of one buffer: its memory parts, coherence epochs, counters and pending
/// transfer.
pub(crate) struct RawBuffer {
    mm: Arc<ManagerShared>,
    bytes: usize,
    epochs: Cell<Epochs>,
    parts: Parts,
    /// An asynchronous transfer is in flight (kept here so that the common check reads no box).
    has_pending: Cell<bool>,
    hits: Cell<u64>,
    misses: Cell<u64>,
    /// Boxed: it is rare, and a buffer is moved by value on allocation.
    extra: OnceCell<Box<Extra>>,
}

// SAFETY: a RawBuffer owns its memory (host block, device allocation, or the unified
// allocation `ptr` points into) exclusively; nothing else holds `ptr`. Moving the buffer to
// another thread moves that ownership. It is deliberately not Sync (Cells).
unsafe impl Send for RawBuffer {}

impl RawBuffer {
    /// A buffer of `bytes` bytes with memory from the manager's shared caches or the backend
    /// (a buffer parked in this thread's magazine is reused by `BoxedBuffer::new` before this).
    pub(crate) fn new(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<Box<Self>> {
        let parts = if bytes == 0 {
            // A dangling pointer aligned like real host memory (`[u8; N]` is only 1-aligned),
            // so empty `&[T]` views of any element type are well aligned.
            Parts::Unified {
                memory: None,
                ptr: NonNull::<AlignedEmpty>::dangling().cast(),
                device_attached: Cell::new(false),
                host_attached: Cell::new(true),
                foreign: None,
            }
        } else if mm.unified {
            Self::unified_parts(mm, mm.acquire_device(bytes)?)?
        } else {
            Parts::Discrete { host: OnceCell::from(mm.acquire_host(bytes)?), device: OnceCell::new() }
        };
        mm.stats.buffer_created(bytes);
        // Boxed here, where the fields are written: returning the 128-byte struct by value
        // and boxing it in the caller would copy it through the stack.
        Ok(Box::new(Self::with_parts(mm.clone(), bytes, parts, registry_id)))
    }

    /// Makes a retired buffer (parked in a magazine) a new buffer of `bytes` bytes in the
    /// same size class: fresh epochs and counters, host part current.
    #[inline]
    pub(crate) fn reuse(&mut self, bytes: usize, registry_id: u64) {
        self.bytes = bytes;
        self.epochs.set(Epochs::default());
        self.hits.set(0);
        self.misses.set(0);
        self.extra = Self::extra_for(registry_id);
        if let Parts::Unified { device_attached, host_attached, .. } = &mut self.parts {
            device_attached.set(false);
            host_attached.set(true);
        }
    }

    /// True when retiring the buffer has work beyond parking or releasing it: a pending
    /// transfer to settle, or a registry entry to remove ([`RawBuffer::wind_down`]).
    #[inline]
    pub(crate) fn needs_wind_down(&self) -> bool {
        self.has_pending.get() || self.extra.get().is_some()
    }

    /// Settles pending work and removes the buffer from the live-buffer registry, before it is
    /// parked or released.
    pub(crate) fn wind_down(&self) {
        if self.has_pending.get() {
            let _ = self.settle_slow();
        }
        if let Some(extra) = self.extra.get() {
            self.mm.diagnostics.unregister(extra.registry_id);
        }
    }

    #[inline]
    fn with_parts(mm: Arc<ManagerShared>, bytes: usize, parts: Parts, registry_id: u64) -> Self {
        RawBuffer {
            mm,
            bytes,
            epochs: Cell::new(Epochs::default()),
            parts,
            has_pending: Cell::new(false),
            hits: Cell::new(0),
            misses: Cell::new(0),
            extra: Self::extra_for(registry_id),
        }
    }

    /// The parts of a buffer on unified memory, with `memory` as its one allocation.
    #[inline]
    fn unified_parts(mm: &ManagerShared, memory: DeviceRegion) -> Result<Parts> {
        match memory.host_ptr(mm.backend()) {
            Some(ptr) if (ptr.as_ptr() as usize).is_multiple_of(HOST_ALIGN) => Ok(Parts::Unified {
                memory: Some(memory),
                ptr,
                device_attached: Cell::new(false),
                host_attached: Cell::new(true),
                foreign: None,
            }),
            other => {
                mm.release_device(memory);
                Err(Error::InvalidHandle {
                    backend: mm.backend().name(),
                    reason: format!("backend reports unified memory but gave host pointer {other:?}, which is null or not {HOST_ALIGN}-byte aligned"),
                })
            }
        }
    }

    /// A buffer with only a device part (`DeviceOnly`) on a discrete backend; the host part is
    /// made when first needed. (On unified memory, `BoxedBuffer::new_device_only` makes a buffer and
    /// [`RawBuffer::detach_host_unified`] flips its flags.)
    pub(crate) fn new_device_only(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<Box<Self>> {
        let device = mm.acquire_device(bytes)?;
        mm.stats.buffer_created(bytes);
        let parts = Parts::Discrete { host: OnceCell::new(), device: OnceCell::from(device) };
        Ok(Box::new(Self::with_parts(mm.clone(), bytes, parts, registry_id)))
    }

    /// A buffer with both parts made now on a discrete backend, the device part first (the
    /// allocation that fails when the device is full); a failure releases what was taken and
    /// counts no buffer. Both parts count as current (`Synchronized`): like any new buffer's,
    /// their contents are unspecified until written, so nothing is copied between them.
    pub(crate) fn new_on_device(mm: &Arc<ManagerShared>, bytes: usize, registry_id: u64) -> Result<Box<Self>> {
        let device = mm.acquire_device(bytes)?;
        let host = match mm.acquire_host(bytes) {
            Ok(host) => host,
            Err(e) => {
                mm.release_device(device);
                return Err(e);
            }
        };
        mm.stats.buffer_created(bytes);
        let parts = Parts::Discrete { host: OnceCell::from(host), device: OnceCell::from(device) };
        Ok(Box::new(Self::with_parts(mm.clone(), bytes, parts, registry_id)))
    }

    /// On unified memory (or a zero-length buffer): marks the one allocation as holding only
    /// device data (`DeviceOnly`); no memory changes.
    pub(crate) fn detach_host_unified(&mut self) {
        if let Parts::Unified { device_attached, host_attached, .. } = &mut self.parts {
            if self.bytes != 0 {
                device_attached.set(true);
                host_attached.set(false);
            }
        }
    }

    #[inline]
    fn extra_for(registry_id: u64) -> OnceCell<Box<Extra>> {
        if registry_id == 0 {
            OnceCell::new()
        } else {
            OnceCell::from(Box::new(Extra { registry_id, ..Extra::default() }))
        }
    }

    fn extra(&self) -> &Extra {
        self.extra.get_or_init(Box::default)
    }

    pub(crate) fn manager(&self) -> &Arc<ManagerShared> {
        &self.mm
    }

    #[inline]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The coherence state, once any asynchronous transfer still in flight has ended (a
    /// failed one leaves the state as it was before that transfer).
    pub(crate) fn state(&self) -> BufferState {
        let _ = self.settle();
        let (h, d) = self.parts();
        self.epochs.get().state(h, d)
    }

    pub(crate) fn epochs(&self) -> (u64, u64) {
        let _ = self.settle();
        let e = self.epochs.get();
        (e.host, e.device)
    }
}

/// Releases the buffer's memory to the pools. Statistics and the registry were updated by
/// `buffer::boxed` when the buffer was retired; a buffer dropped from a magazine was retired
/// when it was parked.
impl Drop for RawBuffer {
    fn drop(&mut self) {
        // In-flight transfers must finish before their memory is reused.
        if self.has_pending.get() {
            let _ = self.settle_slow();
        }
        match &mut self.parts {
            Parts::Unified { memory, .. } => {
                if let Some(m) = memory.take() {
                    self.mm.release_device(m);
                }
            }
            Parts::Discrete { host, device } => {
                if let Some(h) = host.take() {
                    self.mm.release_host(h);
                }
                if let Some(d) = device.take() {
                    self.mm.release_device(d);
                }
            }
        }
    }
}

fn internal(what: &str) -> Error {
    Error::InvalidHandle { backend: "buffer", reason: format!("internal inconsistency ({what}); please report this") }
}

#[cfg(test)]
mod size {
    /// A buffer is one pointer to its box (moving it right after it was built copies 8
    /// bytes, not a struct whose fields were just written one by one, which stalls store
    /// forwarding); the box stays within two cache lines.
    #[test]
    fn a_buffer_is_one_pointer_and_its_box_two_cache_lines() {
        assert!(std::mem::size_of::<super::RawBuffer>() <= 128);
        assert_eq!(std::mem::size_of::<crate::buffer::UnifiedBuffer<f64>>(), std::mem::size_of::<usize>());
    }
}
