//! `RawBuffer`: the untyped memory of one buffer, its coherence epochs, and every transfer
//! between its host and device parts.
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

use super::state::{BufferState, Epochs};
use crate::backend::region::DeviceRegion;
use crate::backend::Event;
use crate::error::{Direction, Error, Result};
use crate::host::HostBlock;
use crate::pool::context::ManagerShared;
use std::cell::{Cell, OnceCell};
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Alignment every buffer's host bytes are guaranteed to have.
pub(crate) const HOST_ALIGN: usize = 64;

/// A type with `HOST_ALIGN` alignment, for the dangling pointer of zero-byte buffers.
#[repr(C, align(64))]
struct AlignedEmpty([u8; HOST_ALIGN]);
const _: () = assert!(std::mem::align_of::<AlignedEmpty>() == HOST_ALIGN);

/// The block a buffer was allocated with: what a buffer parked in a magazine keeps.
pub(crate) enum AllocationBlock<'a> {
    /// Unified memory: the one region that is both parts.
    Unified(&'a DeviceRegion),
    /// A discrete buffer's host part.
    Host(&'a HostBlock),
    /// The device part of a discrete buffer without a host part.
    Device(&'a DeviceRegion),
}

enum Parts {
    /// Unified backend, or zero bytes: one allocation serves both parts.
    /// The two flags say which parts are logically present, so the states (including
    /// `DeviceOnly`) match a discrete device's; no copy is ever needed between them.
    Unified { memory: Option<DeviceRegion>, ptr: NonNull<u8>, device_attached: Cell<bool>, host_attached: Cell<bool> },
    /// Discrete backend: a host block and a device allocation, each made when first needed.
    Discrete { host: OnceCell<HostBlock>, device: OnceCell<DeviceRegion> },
}

/// An asynchronous transfer in flight and everything needed to finish it either way.
///
/// A transfer writes only into a part that is stale (and stays stale if the transfer fails) or
/// into a fresh block held here. Nothing about the buffer's coherence changes before the event
/// completes: on success the fresh blocks become the buffer's parts and the epochs move to
/// `epochs_after`; on failure the fresh blocks go back to the pools, the parts taken aside are
/// put back, and the buffer is exactly as it was before the call.
struct Pending {
    event: Event,
    /// The direction counted in the statistics on success (`None`: a marker after a kernel,
    /// which moves no data).
    direction: Option<Direction>,
    bytes: usize,
    started: Instant,
    host: Replacement<HostBlock>,
    device: Replacement<DeviceRegion>,
    epochs_after: Epochs,
}

/// A part being replaced by an asynchronous transfer. While `fresh` is `Some`, the part's cell
/// is empty: it holds `fresh` once the transfer succeeds, `previous` if it fails.
struct Replacement<B> {
    previous: Option<B>,
    fresh: Option<B>,
}

impl<B> Replacement<B> {
    /// The part is written in place (or not at all) and stays in its cell.
    fn none() -> Self {
        Replacement { previous: None, fresh: None }
    }

    /// Puts the winning block in `cell` (empty while the transfer was in flight) and hands the
    /// other one to `release`.
    fn complete(self, cell: &OnceCell<B>, succeeded: bool, release: impl Fn(B)) {
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

#[derive(Default)]
struct TransferCells {
    h2d: Cell<u64>,
    d2h: Cell<u64>,
    d2d: Cell<u64>,
    bytes: Cell<u64>,
    time: Cell<Duration>,
    last_transfer: Cell<Option<Instant>>,
}

/// Per-buffer counters, as returned by `UnifiedBuffer::metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BufferMetrics {
    /// Transfers this buffer made (all directions).
    pub transfer_count: u64,
    /// Host-to-device transfers.
    pub host_to_device: u64,
    /// Device-to-host transfers.
    pub device_to_host: u64,
    /// Device-to-device copies into this buffer.
    pub device_to_device: u64,
    /// Bytes moved by those transfers.
    pub bytes_transferred: u64,
    /// Time spent in them (zero when statistics are disabled).
    pub transfer_time: Duration,
    /// Bytes per second over `transfer_time` (0 when nothing was timed).
    pub average_bandwidth: f64,
    /// Synchronisations that needed no copy because host and device share memory.
    pub skipped_syncs: u64,
    /// Accesses served without a transfer.
    pub cache_hits: u64,
    /// Accesses that needed a transfer first.
    pub cache_misses: u64,
    /// When the buffer last moved data (host accesses are not timestamped: they are the hot
    /// path and a clock read would cost more than the access).
    pub last_access: Option<Instant>,
}

impl BufferMetrics {
    /// `cache_hits / (cache_hits + cache_misses)`, or 0 with no accesses.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.cache_hits + self.cache_misses;
        if total == 0 {
            0.0
        } else {
            self.cache_hits as f64 / total as f64
        }
    }
}

pub(crate) struct RawBuffer {
    mm: Arc<ManagerShared>,
    bytes: usize,
    epochs: Cell<Epochs>,
    parts: Parts,
    /// Boxed: it is rare, and a buffer is moved by value on allocation.
    has_pending: Cell<bool>,
    hits: Cell<u64>,
    misses: Cell<u64>,
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
            }
        } else if mm.unified {
            Self::unified_parts(mm, mm.acquire_device(bytes)?)?
        } else {
            Parts::Discrete { host: OnceCell::from(mm.acquire_host(bytes)?), device: OnceCell::new() }
        };
        mm.stats.buffer_created(bytes);
        // Boxed here, where the fields are written: returning the 128-byte struct by value
        // and boxing it in the caller copied it through the stack.
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

    /// The block made at allocation, which a parked buffer keeps (`None` for a zero-byte
    /// buffer, which is never parked).
    #[inline]
    pub(crate) fn allocation_block(&self) -> Option<AllocationBlock<'_>> {
        match &self.parts {
            Parts::Unified { memory, .. } => memory.as_ref().map(AllocationBlock::Unified),
            Parts::Discrete { host, device } => match (host.get(), device.get()) {
                (Some(host), _) => Some(AllocationBlock::Host(host)),
                (None, Some(region)) => Some(AllocationBlock::Device(region)),
                (None, None) => None,
            },
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
            Some(ptr) if ptr.as_ptr() as usize % HOST_ALIGN == 0 => Ok(Parts::Unified {
                memory: Some(memory),
                ptr,
                device_attached: Cell::new(false),
                host_attached: Cell::new(true),
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

    #[inline]
    fn parts(&self) -> (bool, bool) {
        match &self.parts {
            Parts::Unified { device_attached, host_attached, .. } => (host_attached.get(), device_attached.get()),
            Parts::Discrete { host, device } => (host.get().is_some(), device.get().is_some()),
        }
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

    #[inline]
    fn host_current(&self) -> bool {
        let (h, d) = self.parts();
        self.epochs.get().host_current(h, d)
    }

    fn device_current(&self) -> bool {
        let (h, d) = self.parts();
        self.epochs.get().device_current(h, d)
    }

    /// The host bytes hold the newest data (always true on unified memory).
    pub(crate) fn data_on_host(&self) -> bool {
        matches!(self.parts, Parts::Unified { .. }) || self.host_current()
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
                let new_ptr = block.host_ptr(self.mm.backend()).filter(|p| p.as_ptr() as usize % HOST_ALIGN == 0);
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

    fn device(&self) -> Option<&DeviceRegion> {
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

    /// Runs one transfer, timing it and recording it in the buffer's and manager's counters.
    fn transfer<R>(&self, direction: Direction, bytes: usize, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let (r, elapsed) = timed(self.mm.options.enable_statistics, f);
        if r.is_ok() {
            self.record(direction, bytes, elapsed);
        }
        r
    }

    pub(crate) fn record(&self, direction: Direction, bytes: usize, elapsed: Duration) {
        let m = &self.extra().transfers;
        let counter = match direction {
            Direction::HostToDevice => &m.h2d,
            Direction::DeviceToHost => &m.d2h,
            Direction::DeviceToDevice => &m.d2d,
        };
        counter.set(counter.get() + 1);
        m.bytes.set(m.bytes.get() + bytes as u64);
        m.time.set(m.time.get() + elapsed);
        if self.mm.options.enable_statistics {
            m.last_transfer.set(Some(Instant::now()));
        }
        self.mm.record_transfer(direction, bytes, elapsed);
    }

    #[inline]
    pub(crate) fn count_access(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.set(c.get() + 1);
    }

    fn skipped_sync(&self) {
        let c = &self.extra().skipped_syncs;
        c.set(c.get() + 1);
    }

    pub(crate) fn metrics(&self) -> BufferMetrics {
        let none = Extra::default();
        let extra = self.extra.get().map_or(&none, |e| &**e);
        let m = &extra.transfers;
        let time = m.time.get();
        let bytes = m.bytes.get();
        BufferMetrics {
            transfer_count: m.h2d.get() + m.d2h.get() + m.d2d.get(),
            host_to_device: m.h2d.get(),
            device_to_host: m.d2h.get(),
            device_to_device: m.d2d.get(),
            bytes_transferred: bytes,
            transfer_time: time,
            average_bandwidth: if time.is_zero() { 0.0 } else { bytes as f64 / time.as_secs_f64() },
            skipped_syncs: extra.skipped_syncs.get(),
            cache_hits: self.hits.get(),
            cache_misses: self.misses.get(),
            last_access: m.last_transfer.get(),
        }
    }

    // ---- pending asynchronous work ----

    /// Waits for a pending asynchronous transfer and applies its effect. On error the epochs
    /// stay as they were (the transfer did not happen as far as coherence is concerned).
    #[inline]
    pub(crate) fn settle(&self) -> Result<()> {
        if !self.has_pending.get() {
            return Ok(());
        }
        self.settle_slow()
    }

    #[cold]
    fn settle_slow(&self) -> Result<()> {
        let Some(p) = self.extra.get().and_then(|e| e.pending.take()) else {
            self.has_pending.set(false);
            return Ok(());
        };
        self.has_pending.set(false);
        let r = p.event.wait();
        self.complete(p, r.is_ok());
        r
    }

    /// Ends a pending transfer: on success its blocks become the parts and the epochs move on;
    /// on failure the buffer is put back as it was before the transfer started.
    fn complete(&self, p: Pending, succeeded: bool) {
        if let Parts::Discrete { host, device } = &self.parts {
            p.host.complete(host, succeeded, |b| self.mm.release_host(b));
            p.device.complete(device, succeeded, |d| self.mm.release_device(d));
        }
        if succeeded {
            self.epochs.set(p.epochs_after);
            if let Some(direction) = p.direction {
                self.record(direction, p.bytes, p.started.elapsed());
            }
        }
    }

    /// Polls a pending transfer without blocking.
    pub(crate) fn poll_settle(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if !self.has_pending.get() {
            return Poll::Ready(Ok(()));
        }
        let Some(p) = self.extra.get().and_then(|e| e.pending.take()) else {
            self.has_pending.set(false);
            return Poll::Ready(Ok(()));
        };
        match p.event.is_complete() {
            Ok(true) => {
                self.has_pending.set(false);
                self.complete(p, true);
                Poll::Ready(Ok(()))
            }
            Ok(false) => {
                p.event.on_complete(cx.waker().clone());
                self.extra().pending.set(Some(p));
                Poll::Pending
            }
            Err(e) => {
                self.has_pending.set(false);
                self.complete(p, false);
                Poll::Ready(Err(e))
            }
        }
    }

    fn set_pending(&self, pending: Pending) {
        self.extra().pending.set(Some(pending));
        self.has_pending.set(true);
    }

    // ---- coherence transitions ----

    /// Makes the host part current (D2H when the device part is newer) and counts the access
    /// as a hit (no transfer needed) or a miss. Works through `&self`; see the module's
    /// aliasing invariant.
    #[inline]
    pub(crate) fn pull(&self) -> Result<()> {
        self.settle()?;
        if self.host_current() {
            self.count_access(true);
            return Ok(());
        }
        self.count_access(false);
        self.pull_slow()
    }

    #[cold]
    fn pull_slow(&self) -> Result<()> {
        let (host, device) = match &self.parts {
            Parts::Discrete { host, device } => (host, device),
            Parts::Unified { host_attached, .. } => {
                // Unified: the bytes are already there.
                host_attached.set(true);
                self.epochs.set(self.epochs.get().host_caught_up());
                self.skipped_sync();
                return Ok(());
            }
        };
        let device = device.get().ok_or_else(|| internal("pull: neither part is current"))?;
        let backend = self.mm.backend();
        match host.get() {
            None => {
                // Fill a new block first and install it only on success, so a failure leaves
                // the buffer DeviceOnly as it was.
                let mut block = self.mm.acquire_host(self.bytes)?;
                let r = self.transfer(Direction::DeviceToHost, self.bytes, || {
                    device.read(backend, 0, &mut block.bytes_mut()[..self.bytes])
                });
                if let Err(e) = r {
                    self.mm.release_host(block);
                    return Err(e);
                }
                let _ = host.set(block);
            }
            Some(block) => {
                // SAFETY: the host part is stale here, so by the module invariant no reference
                // into these bytes is alive; the block is live and has at least `bytes` bytes.
                let dst = unsafe { std::slice::from_raw_parts_mut(block.as_ptr(), self.bytes) };
                self.transfer(Direction::DeviceToHost, self.bytes, || device.read(backend, 0, dst))?;
            }
        }
        self.epochs.set(self.epochs.get().host_caught_up());
        Ok(())
    }

    /// Makes the device part current (H2D when the host part is newer). Without a device part
    /// the upload fills a fresh block that becomes the device part only on success. Works
    /// through `&self`: it changes no host bytes.
    pub(crate) fn push(&self) -> Result<()> {
        self.settle()?;
        if self.device_current() {
            return Ok(());
        }
        let bytes = self.bytes;
        match &self.parts {
            Parts::Unified { device_attached, .. } => {
                device_attached.set(true);
                self.skipped_sync();
            }
            Parts::Discrete { host, device } => {
                let src = host.get().map(|b| &b.bytes()[..bytes]).ok_or_else(|| internal("push: no host part"))?;
                let backend = self.mm.backend();
                match device.get() {
                    Some(stale) => self.transfer(Direction::HostToDevice, bytes, || stale.write(backend, 0, src))?,
                    None => {
                        let block = self.mm.acquire_device(bytes)?;
                        if let Err(e) = self.transfer(Direction::HostToDevice, bytes, || block.write(backend, 0, src)) {
                            self.mm.release_device(block);
                            return Err(e);
                        }
                        let _ = device.set(block);
                    }
                }
            }
        }
        self.epochs.set(self.epochs.get().device_caught_up());
        Ok(())
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

    fn drop_device_part(&mut self) {
        match &mut self.parts {
            Parts::Unified { device_attached, .. } => device_attached.set(false),
            Parts::Discrete { device, .. } => {
                if let Some(d) = device.take() {
                    self.mm.release_device(d);
                }
            }
        }
    }

    pub(crate) fn host_written(&mut self) {
        if let Parts::Unified { host_attached, .. } = &self.parts {
            host_attached.set(true);
        }
        self.epochs.set(self.epochs.get().host_written());
    }

    pub(crate) fn device_written(&mut self) {
        self.epochs.set(self.epochs.get().device_written());
    }

    /// Fails when the host part has writes the device part has not seen.
    pub(crate) fn check_no_host_writes(&self, operation: &'static str) -> Result<()> {
        let (h, d) = self.parts();
        let e = self.epochs.get();
        if h && d && e.host > e.device {
            return Err(Error::ConcurrentModification { operation, host_epoch: e.host, device_epoch: e.device });
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at `offset` from whichever part is current, without changing
    /// state (a device read goes straight into `out`).
    pub(crate) fn read_current(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.settle()?;
        if out.is_empty() {
            // Nothing to read, so no transfer (a zero-byte read is an error on some drivers,
            // e.g. OpenCL's CL_INVALID_VALUE).
            return Ok(());
        }
        if self.data_on_host() {
            crate::ops::copy_into(out, &self.host()[offset..offset + out.len()]);
            self.count_access(true);
            return Ok(());
        }
        let device = self.device().ok_or_else(|| internal("read: neither part is current"))?;
        let backend = self.mm.backend();
        self.transfer(Direction::DeviceToHost, out.len(), || device.read(backend, offset, out))?;
        self.count_access(false);
        Ok(())
    }

    /// Device-side copy of `len` bytes from `src` at `src_offset` to `dst_offset`: D2D when the
    /// source's device part is current, else H2D from its host part. The destination ends
    /// device-current; a partial copy first brings the rest of the device part up to date.
    pub(crate) fn device_write_from(
        &mut self,
        dst_offset: usize,
        src: &RawBuffer,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.settle()?;
        src.settle()?;
        if matches!(self.parts, Parts::Unified { .. }) && len == 0 {
            // An empty (zero-byte) buffer: nothing to read from the source, which may not even
            // have a host part; only the state changes.
            self.ensure_device_part()?;
            self.device_written();
            return Ok(());
        }
        if matches!(self.parts, Parts::Unified { .. }) {
            // One memory: a plain copy, then the same state change as on a discrete device.
            let data = &src.host()[src_offset..src_offset + len];
            let enabled = self.mm.options.enable_statistics;
            let dst = &mut self.host_mut()[dst_offset..dst_offset + len];
            let ((), elapsed) = timed(enabled, || crate::ops::copy_into(dst, data));
            self.record(Direction::DeviceToDevice, len, elapsed);
            self.ensure_device_part()?;
            self.device_written();
            return Ok(());
        }
        let covers_all = dst_offset == 0 && len == self.bytes;
        if covers_all && (self.device().is_none() || self.device_current()) {
            // The current device data must survive a failed copy: fill a fresh block and
            // install it only on success.
            let block = self.mm.acquire_device(self.bytes)?;
            let backend = self.mm.backend();
            let r = if src.device_current() {
                let from = src.device().ok_or_else(|| internal("copy: source has no device part"));
                from.and_then(|from| {
                    self.transfer(Direction::DeviceToDevice, len, || block.copy_from(backend, 0, from, src_offset, len))
                })
            } else {
                let data = &src.host()[src_offset..src_offset + len];
                self.transfer(Direction::HostToDevice, len, || block.write(backend, 0, data))
            };
            if let Err(e) = r {
                self.mm.release_device(block);
                return Err(e);
            }
            return self.install_device_block(block);
        }
        // A failed copy must leave the buffer as it was, including a device part or epochs
        // that the preparatory upload of a partial copy changed. (A stale device part is
        // written in place: it stays stale if the copy fails.)
        let saved = self.epochs.get();
        let had_device = self.device().is_some();
        if covers_all {
            self.ensure_device_part()?;
        } else {
            self.push()?;
        }
        let backend = self.mm.backend();
        let dst = self.device().ok_or_else(|| internal("copy: no device part"))?;
        let r = if src.device_current() {
            let from = src.device().ok_or_else(|| internal("copy: source has no device part"))?;
            self.transfer(Direction::DeviceToDevice, len, || dst.copy_from(backend, dst_offset, from, src_offset, len))
        } else {
            let data = &src.host()[src_offset..src_offset + len];
            self.transfer(Direction::HostToDevice, len, || dst.write(backend, dst_offset, data))
        };
        if let Err(e) = r {
            if !had_device {
                self.drop_device_part();
            }
            self.epochs.set(saved);
            return Err(e);
        }
        self.device_written();
        Ok(())
    }

    /// Writes `data` (exactly `bytes` long) straight into a fresh device block that replaces the
    /// device part once the write succeeded: one copy, and a failure leaves the buffer as it
    /// was. The device part ends current (host part stale). On unified memory it is a host write
    /// followed by marking the device side written.
    pub(crate) fn upload(&mut self, data: &[u8]) -> Result<()> {
        self.settle()?;
        if data.len() != self.bytes {
            return Err(internal("upload: wrong byte count"));
        }
        if self.bytes == 0 {
            return Ok(());
        }
        if matches!(self.parts, Parts::Unified { .. }) {
            // Like `copy_from`: the one memory is written, no host/device transfer happens.
            crate::ops::copy_into(self.host_mut(), data);
            self.ensure_device_part()?;
            self.device_written();
            return Ok(());
        }
        let block = self.mm.acquire_device(self.bytes)?;
        let backend = self.mm.backend();
        if let Err(e) = self.transfer(Direction::HostToDevice, data.len(), || block.write(backend, 0, data)) {
            self.mm.release_device(block);
            return Err(e);
        }
        self.install_device_block(block)
    }

    /// Frees the device part after making the host part current (-> HostOnly).
    pub(crate) fn release_device_part(&mut self) -> Result<()> {
        self.pull()?;
        self.drop_device_part();
        self.epochs.set(self.epochs.get().device_caught_up());
        Ok(())
    }

    // ---- device views (kernels on the buffer's device memory) ----

    /// Makes the device part hold the data a kernel will see: uploads when the host part is
    /// newer, except for a kernel that overwrites the whole buffer (`upload` false), which only
    /// needs the device part to exist.
    pub(crate) fn prepare_device(&self, upload: bool) -> Result<()> {
        if upload {
            return self.push();
        }
        self.settle()?;
        self.ensure_device_part().map(drop)
    }

    /// Host address of the device part's first byte, where the host can address device memory
    /// (unified memory, the simulator); `None` on a real discrete device or without a device
    /// part. Valid while the device part is not replaced or freed.
    pub(crate) fn device_ptr_on_host(&self) -> Option<NonNull<u8>> {
        match &self.parts {
            Parts::Unified { ptr, .. } => Some(*ptr),
            Parts::Discrete { device, .. } => device.get()?.device_ptr_on_host(),
        }
    }

    /// The device allocation holding the device part and the part's offset in it (`None`
    /// without a device part, or for a zero-byte buffer).
    pub(crate) fn device_location(&self) -> Option<(&crate::backend::DeviceMemory, usize)> {
        let region = match &self.parts {
            Parts::Unified { memory, .. } => memory.as_ref(),
            Parts::Discrete { device, .. } => device.get(),
        }?;
        Some((region.memory(), region.offset()))
    }

    /// A kernel on `queue` wrote the device part: the device part becomes the newest, and the
    /// buffer waits for the queue's work, and for `completions` (events of kernels the user ran
    /// elsewhere on this memory), before its next use of this memory.
    pub(crate) fn end_device_write(&mut self, queue: usize, completions: Vec<Event>) {
        self.device_written();
        self.order_after_kernel(queue, completions);
    }

    /// A kernel on `queue` read the device part: no state changes, but the buffer waits for
    /// the queue's work, and for `completions`, before its memory is written or reused.
    pub(crate) fn end_device_read(&self, queue: usize, completions: Vec<Event>) {
        self.order_after_kernel(queue, completions);
    }

    fn order_after_kernel(&self, queue: usize, mut completions: Vec<Event>) {
        let backend = self.mm.backend();
        match backend.enqueue_marker(queue) {
            Ok(None) => {}
            Ok(Some(event)) => completions.push(event),
            // Without a marker, wait for everything the device has queued.
            Err(_) => {
                let _ = backend.synchronize();
            }
        }
        let Some(event) = crate::backend::all_of(completions) else { return };
        // An earlier view's marker or completion events may still be pending (several read
        // views can end one after the other); settle them so their outcome is not lost.
        let _ = self.settle();
        self.set_pending(Pending {
            event,
            direction: None,
            bytes: 0,
            started: Instant::now(),
            host: Replacement::none(),
            device: Replacement::none(),
            epochs_after: self.epochs.get(),
        });
    }

    // ---- asynchronous transfers ----

    /// Takes the host part, and the device part if `device`, out of a discrete buffer's
    /// cells, to be held by a pending transfer that replaces them.
    fn take_parts(&mut self, device: bool) -> (Option<HostBlock>, Option<DeviceRegion>) {
        match &mut self.parts {
            Parts::Discrete { host, device: d } => (host.take(), if device { d.take() } else { None }),
            Parts::Unified { .. } => (None, None),
        }
    }

    /// Starts bringing the device part up to date; completion is awaited through `settle` or
    /// `poll_settle`. A stale device part is written in place; without one, the upload fills
    /// a fresh block that becomes the device part only on success.
    pub(crate) fn start_upload(&mut self, queue: usize) -> Result<()> {
        self.settle()?;
        if self.device_current() {
            return Ok(());
        }
        if matches!(self.parts, Parts::Unified { .. }) {
            return self.push();
        }
        let Parts::Discrete { host, device } = &self.parts else {
            return Err(internal("upload: unified parts on the discrete path"));
        };
        let src = host.get().ok_or_else(|| internal("upload: no host part"))?.as_ptr();
        let fresh = match device.get() {
            Some(_) => None,
            None => Some(self.mm.acquire_device(self.bytes)?),
        };
        let target = fresh.as_ref().or(device.get()).ok_or_else(|| internal("upload: no device part"))?;
        let started = Instant::now();
        // SAFETY: the host block is owned by self and is neither written nor freed until the
        // event is settled: every method that writes or frees host memory settles pending work
        // first, and Drop does too. It holds at least `bytes` bytes.
        match unsafe { target.write_async(self.mm.backend(), queue, 0, src, self.bytes) } {
            Ok(event) => {
                self.set_pending(Pending {
                    event,
                    direction: Some(Direction::HostToDevice),
                    bytes: self.bytes,
                    started,
                    host: Replacement::none(),
                    device: Replacement { previous: None, fresh },
                    epochs_after: self.epochs.get().device_caught_up(),
                });
                Ok(())
            }
            Err(e) => {
                if let Some(block) = fresh {
                    self.mm.release_device(block);
                }
                Err(e)
            }
        }
    }

    /// Replaces the whole contents with `data` (exactly `bytes` long) and starts uploading
    /// them, for `copy_from_async`. On a discrete device `data` goes into a staging block that
    /// becomes the host part only once the upload has completed; the upload goes into the
    /// device part only if that part is stale, else into a fresh block. So a failure at any
    /// point, enqueue or completion, leaves contents, state and epochs as they were.
    pub(crate) fn start_replace(&mut self, queue: usize, data: &[u8]) -> Result<()> {
        self.settle()?;
        let bytes = self.bytes;
        if data.len() != bytes {
            return Err(internal("replace: wrong byte count"));
        }
        if matches!(self.parts, Parts::Unified { .. }) {
            // One memory: the write cannot fail and the upload is a no-op.
            crate::ops::copy_into(self.host_mut(), data);
            self.host_written();
            return self.start_upload(queue);
        }
        let mut staging = self.mm.acquire_host(bytes)?;
        crate::ops::copy_into(&mut staging.bytes_mut()[..bytes], data);
        let in_place = self.device().is_some() && !self.device_current();
        let fresh_device = if in_place {
            None
        } else {
            match self.mm.acquire_device(bytes) {
                Ok(block) => Some(block),
                Err(e) => {
                    self.mm.release_host(staging);
                    return Err(e);
                }
            }
        };
        let Some(target) = fresh_device.as_ref().or(self.device()) else {
            return Err(internal("replace: no device part"));
        };
        let started = Instant::now();
        // SAFETY: `staging` holds at least `bytes` bytes and is kept in the pending record
        // (moving a HostBlock does not move its heap memory), unwritten and alive until the
        // event is settled: only `complete` takes it out of the record. On failure nothing
        // was enqueued.
        let r = unsafe { target.write_async(self.mm.backend(), queue, 0, staging.as_ptr(), bytes) };
        match r {
            Ok(event) => {
                let epochs_after = self.epochs.get().host_written().device_caught_up();
                let (previous_host, previous_device) = self.take_parts(fresh_device.is_some());
                let host = Replacement { previous: previous_host, fresh: Some(staging) };
                let device = match fresh_device {
                    Some(fresh) => Replacement { previous: previous_device, fresh: Some(fresh) },
                    None => Replacement::none(),
                };
                self.set_pending(Pending {
                    event,
                    direction: Some(Direction::HostToDevice),
                    bytes,
                    started,
                    host,
                    device,
                    epochs_after,
                });
                Ok(())
            }
            Err(e) => {
                self.mm.release_host(staging);
                if let Some(block) = fresh_device {
                    self.mm.release_device(block);
                }
                Err(e)
            }
        }
    }

    /// Starts bringing the host part up to date. A stale host part is written in place;
    /// without one, the download fills a fresh block that becomes the host part only on
    /// success.
    pub(crate) fn start_download(&mut self, queue: usize) -> Result<()> {
        self.settle()?;
        if self.host_current() {
            return Ok(());
        }
        if matches!(self.parts, Parts::Unified { .. }) {
            return self.pull();
        }
        let Parts::Discrete { host, device } = &self.parts else {
            return Err(internal("download: unified parts on the discrete path"));
        };
        let device = device.get().ok_or_else(|| internal("download: no device part"))?;
        let bytes = self.bytes;
        let started = Instant::now();
        let fresh = match host.get() {
            Some(_) => None,
            None => Some(self.mm.acquire_host(bytes)?),
        };
        let dst = match (&fresh, host.get()) {
            (Some(block), _) | (None, Some(block)) => block.as_ptr(),
            (None, None) => return Err(internal("download: no host part")),
        };
        // SAFETY: `dst` is either a fresh block owned by the pending record, or the stale host
        // part, to which no reference is alive (module invariant); either stays alive and
        // untouched until the event is settled, because every accessor settles pending work
        // first, and Drop does too. Both hold at least `bytes` bytes.
        match unsafe { device.read_async(self.mm.backend(), queue, 0, dst, bytes) } {
            Ok(event) => {
                self.set_pending(Pending {
                    event,
                    direction: Some(Direction::DeviceToHost),
                    bytes,
                    started,
                    host: Replacement { previous: None, fresh },
                    device: Replacement::none(),
                    epochs_after: self.epochs.get().host_caught_up(),
                });
                Ok(())
            }
            Err(e) => {
                if let Some(block) = fresh {
                    self.mm.release_host(block);
                }
                Err(e)
            }
        }
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

/// Time a closure, returning its result and the elapsed time (zero when statistics are off).
pub(crate) fn timed<R>(enabled: bool, f: impl FnOnce() -> R) -> (R, Duration) {
    if enabled {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    } else {
        (f(), Duration::ZERO)
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
        assert_eq!(std::mem::size_of::<crate::UnifiedBuffer<f64>>(), std::mem::size_of::<usize>());
    }
}
