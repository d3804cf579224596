//! A buffer's memory parts: a host block and a device region made when first needed, or one
//! unified allocation serving both (which may be foreign memory, never returned to a pool); and
//! the replacement of a part by an asynchronous transfer.

#[cfg(feature = "dlpack")]
use super::AlignedEmpty;
use super::{internal, RawBuffer, HOST_ALIGN};
use crate::backend::region::DeviceRegion;
use crate::error::Result;
use crate::host::HostBlock;
#[cfg(feature = "dlpack")]
use crate::pool::context::ManagerShared;
use std::cell::{Cell, OnceCell};
use std::ptr::NonNull;
#[cfg(feature = "dlpack")]
use std::sync::Arc;

/// The block a buffer was allocated with: what a buffer parked in a magazine keeps.
pub(crate) enum AllocationBlock<'a> {
    /// Unified memory: the one region that is both parts.
    Unified(&'a DeviceRegion),
    /// A discrete buffer's host part.
    Host(&'a HostBlock),
    /// The device part of a discrete buffer without a host part.
    Device(&'a DeviceRegion),
}

/// Where a buffer's bytes live.
pub(super) enum Parts {
    /// Unified backend, or zero bytes: one allocation serves both parts.
    /// The two flags say which parts are logically present, so the states (including
    /// `DeviceOnly`) match a discrete device's; no copy is ever needed between them.
    /// With `foreign`, `ptr` is memory someone else owns (`memory` is `None` until a transfer
    /// installs a pool block): such a buffer is never parked, and its release runs when it drops.
    Unified {
        memory: Option<DeviceRegion>,
        ptr: NonNull<u8>,
        device_attached: Cell<bool>,
        host_attached: Cell<bool>,
        foreign: Option<Box<ForeignHost>>,
    },
    /// Discrete backend: a host block and a device allocation, each made when first needed.
    Discrete { host: OnceCell<HostBlock>, device: OnceCell<DeviceRegion> },
}

/// Foreign memory serving as a buffer's one allocation: its owner's release runs exactly once,
/// when the buffer is dropped (after any transfer on it has settled), and it never enters a pool.
pub(crate) struct ForeignHost {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for ForeignHost {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// A part being replaced by an asynchronous transfer. While `fresh` is `Some`, the part's cell
/// is empty: it holds `fresh` once the transfer succeeds, `previous` if it fails.
pub(super) struct Replacement<B> {
    pub(super) previous: Option<B>,
    pub(super) fresh: Option<B>,
}

impl<B> Replacement<B> {
    /// The part is written in place (or not at all) and stays in its cell.
    pub(super) fn none() -> Self {
        Replacement { previous: None, fresh: None }
    }

    /// Puts the winning block in `cell` (empty while the transfer was in flight) and hands the
    /// other one to `release`.
    pub(super) fn complete(self, cell: &OnceCell<B>, succeeded: bool, release: impl Fn(B)) {
        let Some(fresh) = self.fresh else { return };
        let (keep, discard) = if succeeded { (Some(fresh), self.previous) } else { (self.previous, Some(fresh)) };
        if let Some(block) = discard {
            release(block);
        }
        if let Some(block) = keep {
            if let Err(block) = cell.set(block) {
                release(block);
            }
        }
    }
}

impl RawBuffer {
    /// A buffer over `bytes` bytes of foreign memory at `ptr`, on a unified backend (the caller
    /// checks): the memory is both parts, as a unified allocation is, and `release` runs
    /// exactly once, when the buffer drops. The state is `HostOnly`. A zero-byte buffer keeps
    /// the aligned dangling pointer of every empty buffer (its release still runs once).
    ///
    /// The caller guarantees that `ptr` is valid for reads and writes of `bytes` bytes, that
    /// nothing else accesses them while the buffer lives, and that they stay valid until
    /// `release` runs (the safety contract of `UnifiedBuffer::from_dlpack`).
    #[cfg(feature = "dlpack")]
    pub(crate) fn new_foreign(
        mm: &Arc<ManagerShared>,
        ptr: NonNull<u8>,
        bytes: usize,
        release: Box<dyn FnOnce() + Send>,
        registry_id: u64,
    ) -> Box<Self> {
        let ptr = if bytes == 0 { NonNull::<AlignedEmpty>::dangling().cast() } else { ptr };
        let parts = Parts::Unified {
            memory: None,
            ptr,
            device_attached: Cell::new(false),
            host_attached: Cell::new(true),
            foreign: Some(Box::new(ForeignHost { release: Some(release) })),
        };
        mm.stats.buffer_created(bytes);
        Box::new(Self::with_parts(mm.clone(), bytes, parts, registry_id))
    }

    /// The foreign memory's address while it is the buffer's memory (`None` for memory of our
    /// own, or once a transfer installed a pool block in its place). Foreign memory is only
    /// as aligned as its element type needs, not `HOST_ALIGN`.
    pub(crate) fn foreign_ptr(&self) -> Option<NonNull<u8>> {
        match &self.parts {
            Parts::Unified { memory: None, ptr, foreign: Some(_), .. } => Some(*ptr),
            _ => None,
        }
    }

    /// The block made at allocation, which a parked buffer keeps (`None` for a zero-byte
    /// buffer or one over foreign memory, which are never parked).
    #[inline]
    pub(crate) fn allocation_block(&self) -> Option<AllocationBlock<'_>> {
        match &self.parts {
            Parts::Unified { foreign: Some(_), .. } => None,
            Parts::Unified { memory, .. } => memory.as_ref().map(AllocationBlock::Unified),
            Parts::Discrete { host, device } => match (host.get(), device.get()) {
                (Some(host), _) => Some(AllocationBlock::Host(host)),
                (None, Some(region)) => Some(AllocationBlock::Device(region)),
                (None, None) => None,
            },
        }
    }

    /// True for a discrete buffer that has both a host and a device part (a parked buffer keeps
    /// only the part made at allocation, so the other one is released first).
    #[inline]
    pub(crate) fn holds_second_part(&self) -> bool {
        matches!(&self.parts, Parts::Discrete { host, device } if host.get().is_some() && device.get().is_some())
    }

    /// Releases the device part of a discrete buffer allocated with its host part, so that only
    /// the block made at allocation is left (for parking).
    pub(crate) fn release_second_part(&mut self) {
        if let Parts::Discrete { host, device } = &mut self.parts {
            if host.get().is_some() {
                if let Some(d) = device.take() {
                    self.mm.release_device(d);
                }
            }
        }
    }

    #[inline]
    pub(super) fn parts(&self) -> (bool, bool) {
        match &self.parts {
            Parts::Unified { device_attached, host_attached, .. } => (host_attached.get(), device_attached.get()),
            Parts::Discrete { host, device } => (host.get().is_some(), device.get().is_some()),
        }
    }

    #[inline]
    pub(super) fn host_current(&self) -> bool {
        let (h, d) = self.parts();
        self.epochs.get().host_current(h, d)
    }

    pub(super) fn device_current(&self) -> bool {
        let (h, d) = self.parts();
        self.epochs.get().device_current(h, d)
    }

    /// True when the buffer is one allocation that host and device share.
    #[inline]
    pub(crate) fn is_unified(&self) -> bool {
        matches!(self.parts, Parts::Unified { .. })
    }

    /// The host bytes hold the newest data (always true on unified memory).
    pub(crate) fn data_on_host(&self) -> bool {
        self.is_unified() || self.host_current()
    }

    /// The device part when it holds the newest data (the source for device-side reads).
    pub(crate) fn current_device(&self) -> Option<&DeviceRegion> {
        if self.device_current() {
            self.device()
        } else {
            None
        }
    }

    /// Replaces the device part with `block`, which the caller has filled completely with the
    /// buffer's new contents (-> device-current). On unified memory the block becomes the
    /// buffer's single allocation. The old device part goes back to the pool.
    pub(crate) fn install_device_block(&mut self, block: DeviceRegion) -> Result<()> {
        if let Err(e) = self.settle() {
            self.mm.release_device(block);
            return Err(e);
        }
        match &mut self.parts {
            Parts::Unified { memory, ptr, device_attached, .. } => {
                let new_ptr =
                    block.host_ptr(self.mm.backend()).filter(|p| (p.as_ptr() as usize).is_multiple_of(HOST_ALIGN));
                let Some(new_ptr) = new_ptr else {
                    self.mm.release_device(block);
                    return Err(internal("install: unified block without an aligned host pointer"));
                };
                if let Some(old) = memory.replace(block) {
                    self.mm.release_device(old);
                }
                *ptr = new_ptr;
                device_attached.set(true);
            }
            Parts::Discrete { device, .. } => {
                if let Some(old) = device.take() {
                    self.mm.release_device(old);
                }
                let _ = device.set(block);
            }
        }
        self.device_written();
        Ok(())
    }

    pub(super) fn device(&self) -> Option<&DeviceRegion> {
        match &self.parts {
            Parts::Discrete { device, .. } => device.get(),
            Parts::Unified { .. } => None,
        }
    }

    /// The host bytes. Callers make the host part current first (`pull`); on a stale host part
    /// this returns old data, never unsound data.
    #[inline]
    pub(crate) fn host(&self) -> &[u8] {
        match &self.parts {
            // SAFETY: `ptr` addresses a live allocation of at least `bytes` initialised bytes
            // (the backend's unified allocation in `memory`, freed only in Drop; or a dangling
            // aligned pointer with bytes == 0). Mutation needs &mut self or follows the module
            // invariant.
            Parts::Unified { ptr, .. } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), self.bytes) },
            Parts::Discrete { host, .. } => host.get().map(|b| &b.bytes()[..self.bytes]).unwrap_or(&[]),
        }
    }

    /// The host bytes, mutably; the host part must exist (`ensure_host_part` or `pull`).
    pub(crate) fn host_mut(&mut self) -> &mut [u8] {
        let bytes = self.bytes;
        match &mut self.parts {
            // SAFETY: as in `host`, and &mut self excludes every other reference.
            Parts::Unified { ptr, .. } => unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), bytes) },
            Parts::Discrete { host, .. } => host.get_mut().map(|b| &mut b.bytes_mut()[..bytes]).unwrap_or(&mut []),
        }
    }

    /// Allocates the host part without filling it, for writes that cover the whole buffer.
    pub(crate) fn ensure_host_part(&mut self) -> Result<()> {
        match &mut self.parts {
            Parts::Discrete { host, .. } => {
                if host.get().is_none() {
                    let _ = host.set(self.mm.acquire_host(self.bytes)?);
                }
            }
            Parts::Unified { host_attached, .. } => host_attached.set(true),
        }
        Ok(())
    }

    /// Allocates (or, on unified memory, attaches) the device part without filling it.
    /// Returns true when it was just made.
    pub(crate) fn ensure_device_part(&self) -> Result<bool> {
        match &self.parts {
            Parts::Unified { device_attached, .. } => Ok(!device_attached.replace(true)),
            Parts::Discrete { device, .. } => {
                if device.get().is_some() {
                    return Ok(false);
                }
                let _ = device.set(self.mm.acquire_device(self.bytes)?);
                Ok(true)
            }
        }
    }

    pub(super) fn drop_device_part(&mut self) {
        match &mut self.parts {
            Parts::Unified { device_attached, .. } => device_attached.set(false),
            Parts::Discrete { device, .. } => {
                if let Some(d) = device.take() {
                    self.mm.release_device(d);
                }
            }
        }
    }

    /// Takes the host part, and the device part if `device`, out of a discrete buffer's
    /// cells, to be held by a pending transfer that replaces them.
    pub(super) fn take_parts(&mut self, device: bool) -> (Option<HostBlock>, Option<DeviceRegion>) {
        match &mut self.parts {
            Parts::Discrete { host, device: d } => (host.take(), if device { d.take() } else { None }),
            Parts::Unified { .. } => (None, None),
        }
    }
}
