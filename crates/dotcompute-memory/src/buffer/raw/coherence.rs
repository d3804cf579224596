//! The blocking coherence transitions (pull, push), the writes that change a buffer's state, and
//! reads and device copies served from whichever part is current.

use super::metrics::timed;
use super::parts::Parts;
use super::{internal, RawBuffer};
use crate::error::{Direction, Error, Result};

impl RawBuffer {
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
    /// source's device part is current (on this device, a peer device, or staged through host
    /// memory when `src` is on a device this one cannot reach), else H2D from its host part. The
    /// destination ends device-current; a partial copy first brings the rest of the device part
    /// up to date.
    pub(crate) fn device_write_from(
        &mut self,
        dst_offset: usize,
        src: &RawBuffer,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.settle()?;
        src.settle()?;
        if self.is_unified() && len == 0 {
            // An empty (zero-byte) buffer: nothing to read from the source, which may not even
            // have a host part; only the state changes.
            self.ensure_device_part()?;
            self.device_written();
            return Ok(());
        }
        if self.is_unified() {
            if src.data_on_host() {
                // One memory: a plain copy, then the same state change as on a discrete device.
                let data = &src.host()[src_offset..src_offset + len];
                let enabled = self.mm.options.enable_statistics;
                let dst = &mut self.host_mut()[dst_offset..dst_offset + len];
                let ((), elapsed) = timed(enabled, || crate::ops::copy_into(dst, data));
                self.record(Direction::DeviceToDevice, len, elapsed);
            } else {
                // The source is current on another (discrete) device: read straight into this
                // memory, which stays as it was if the read fails.
                self.read_peer_into_unified(dst_offset, src, src_offset, len)?;
            }
            self.ensure_device_part()?;
            self.device_written();
            return Ok(());
        }
        let covers_all = dst_offset == 0 && len == self.bytes;
        if covers_all && (self.device().is_none() || self.device_current()) {
            // The current device data must survive a failed copy: fill a fresh block and
            // install it only on success.
            let block = self.mm.acquire_device(self.bytes)?;
            if let Err(e) = self.write_region_from(&block, 0, src, src_offset, len, true) {
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
        let dst = self.device().ok_or_else(|| internal("copy: no device part"))?;
        if let Err(e) = self.write_region_from(dst, dst_offset, src, src_offset, len, covers_all) {
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
        if self.is_unified() {
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
}
