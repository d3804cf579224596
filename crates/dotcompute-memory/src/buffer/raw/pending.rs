//! Asynchronous transfers in flight: starting them, and settling them, which installs their
//! blocks on success or puts the buffer back as it was on failure.

use super::parts::{Parts, Replacement};
use super::{internal, RawBuffer};
use crate::backend::region::DeviceRegion;
use crate::backend::Event;
use crate::buffer::state::Epochs;
use crate::error::{Direction, Result};
use crate::host::HostBlock;
use std::task::{Context, Poll};
use std::time::Instant;

/// An asynchronous transfer in flight and everything needed to finish it either way.
///
/// A transfer writes only into a part that is stale (and stays stale if the transfer fails) or
/// into a fresh block held here. Nothing about the buffer's coherence changes before the event
/// completes: on success the fresh blocks become the buffer's parts and the epochs move to
/// `epochs_after`; on failure the fresh blocks go back to the pools, the parts taken aside are
/// put back, and the buffer is exactly as it was before the call.
pub(super) struct Pending {
    pub(super) event: Event,
    /// The direction counted in the statistics on success (`None`: a marker after a kernel,
    /// which moves no data).
    pub(super) direction: Option<Direction>,
    pub(super) bytes: usize,
    pub(super) started: Instant,
    pub(super) host: Replacement<HostBlock>,
    pub(super) device: Replacement<DeviceRegion>,
    pub(super) epochs_after: Epochs,
    /// Started by a prefetch: a hint, whose failure the next access does not report (the
    /// buffer is as before it, and the access makes its own transfer).
    pub(super) hint: bool,
}

impl RawBuffer {
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
    pub(super) fn settle_slow(&self) -> Result<()> {
        let Some(p) = self.extra.get().and_then(|e| e.pending.take()) else {
            self.has_pending.set(false);
            return Ok(());
        };
        self.has_pending.set(false);
        let r = p.event.wait();
        let hint = p.hint;
        self.complete(p, r.is_ok());
        if hint {
            return Ok(());
        }
        r
    }

    /// Starts the transfer that makes the device part (`to_device`) or the host part current,
    /// as a prefetch: it returns once the transfer is enqueued, the next access waits for it if
    /// it has not finished, and a failure at completion is not reported there (that access
    /// transfers again and reports its own result).
    pub(crate) fn prefetch(&mut self, to_device: bool) -> Result<()> {
        if to_device {
            self.start_upload(0)?;
        } else {
            self.start_download(0)?;
        }
        if let Some(mut p) = self.extra.get().and_then(|e| e.pending.take()) {
            p.hint = true;
            self.extra().pending.set(Some(p));
        }
        Ok(())
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
                let hint = p.hint;
                self.complete(p, false);
                Poll::Ready(if hint { Ok(()) } else { Err(e) })
            }
        }
    }

    pub(super) fn set_pending(&self, pending: Pending) {
        self.extra().pending.set(Some(pending));
        self.has_pending.set(true);
    }

    /// Starts bringing the device part up to date; completion is awaited through `settle` or
    /// `poll_settle`. A stale device part is written in place; without one, the upload fills
    /// a fresh block that becomes the device part only on success.
    pub(crate) fn start_upload(&mut self, queue: usize) -> Result<()> {
        self.settle()?;
        if self.device_current() {
            return Ok(());
        }
        if self.is_unified() {
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
                    hint: false,
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
        if self.is_unified() {
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
                    hint: false,
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
        if self.is_unified() {
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
                    hint: false,
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
