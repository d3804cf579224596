//! Device copies into a buffer's device part from any source: the same device, a peer device it
//! can reach directly, or one it cannot, through host staging blocks.

use super::metrics::timed;
use super::RawBuffer;
use crate::backend::region::DeviceRegion;
use crate::backend::{Backend, Event};
use crate::error::{Direction, Result};

/// Bytes per staging block of a pipelined copy between devices that cannot reach each other:
/// large enough that per-chunk latency is small, small enough that two blocks overlap well.
pub(crate) const PEER_CHUNK: usize = 4 << 20;

/// How a copy between two devices goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRoute {
    /// The destination device reads the source device's memory.
    Direct,
    /// Through host staging blocks: the source device writes them, the destination reads them.
    Staged,
}

impl RawBuffer {
    /// True when the buffer is one allocation that host and device share.
    pub(crate) fn is_unified(&self) -> bool {
        matches!(self.parts, super::parts::Parts::Unified { .. })
    }

    /// How a copy from `src` into this buffer crosses devices, or `None` when it does not (same
    /// device, a unified source, or an upload from a source whose host part is current and
    /// whose device this one cannot reach). Decides as [`RawBuffer::device_write_from`] does.
    pub(crate) fn peer_route(&self, src: &RawBuffer) -> Option<PeerRoute> {
        let (backend, src_backend) = (self.mm.backend(), src.mm.backend());
        if src.is_unified() || backend.id() == src_backend.id() || src.current_device().is_none() {
            return None;
        }
        if self.is_unified() {
            return (!src.data_on_host()).then_some(PeerRoute::Direct);
        }
        if backend.can_copy_from_peer(src_backend) {
            Some(PeerRoute::Direct)
        } else {
            (!src.data_on_host()).then_some(PeerRoute::Staged)
        }
    }

    /// Writes `len` bytes of `src`'s current data at `src_offset` into `dst` (this buffer's device
    /// part or a block that will become it) at `dst_offset`: a device copy when `src`'s device
    /// part is current (on this device, a reachable peer, or staged through host memory when
    /// `pipelined` allows chunks, else through one block), an upload from its host part
    /// otherwise. Counted as device-to-device or host-to-device.
    pub(super) fn write_region_from(
        &self,
        dst: &DeviceRegion,
        dst_offset: usize,
        src: &RawBuffer,
        src_offset: usize,
        len: usize,
        pipelined: bool,
    ) -> Result<()> {
        let backend = self.mm.backend();
        let src_backend = src.mm.backend();
        let from = src.current_device().filter(|_| !src.is_unified());
        match from {
            Some(from) if src_backend.id() == backend.id() => self
                .transfer(Direction::DeviceToDevice, len, || dst.copy_from(backend, dst_offset, from, src_offset, len)),
            Some(from) if backend.can_copy_from_peer(src_backend) => {
                self.transfer(Direction::DeviceToDevice, len, || {
                    dst.copy_from_peer(backend, dst_offset, src_backend, from, src_offset, len)
                })
            }
            Some(from) if !src.data_on_host() => self.transfer(Direction::DeviceToDevice, len, || {
                self.staged_copy(dst, dst_offset, src_backend, from, src_offset, len, pipelined)
            }),
            _ => {
                let data = &src.host()[src_offset..src_offset + len];
                self.transfer(Direction::HostToDevice, len, || dst.write(backend, dst_offset, data))
            }
        }
    }

    /// Reads `src`'s current device data (on another device) straight into this buffer's unified
    /// memory at `dst_offset`; counted as device-to-device.
    pub(super) fn read_peer_into_unified(
        &mut self,
        dst_offset: usize,
        src: &RawBuffer,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        let from = src.device().ok_or_else(|| super::internal("copy: source has no device part"))?;
        let src_backend = src.mm.backend();
        let enabled = self.mm.options.enable_statistics;
        let out = &mut self.host_mut()[dst_offset..dst_offset + len];
        let (r, elapsed) = timed(enabled, || from.read(src_backend, src_offset, out));
        r?;
        self.record(Direction::DeviceToDevice, len, elapsed);
        Ok(())
    }

    /// A copy between devices that cannot reach each other, through host staging blocks
    /// (page-locked where the destination has them). `pipelined`: in chunks through two blocks,
    /// so the source's read of one chunk overlaps the destination's write of the one before;
    /// a failure part-way leaves part of `dst` written. Otherwise through one block holding
    /// the whole range, written with one call.
    #[allow(clippy::too_many_arguments)]
    fn staged_copy(
        &self,
        dst: &DeviceRegion,
        dst_offset: usize,
        src_backend: &dyn Backend,
        from: &DeviceRegion,
        src_offset: usize,
        len: usize,
        pipelined: bool,
    ) -> Result<()> {
        let backend = self.mm.backend();
        if !pipelined || len <= PEER_CHUNK {
            let mut slot = self.mm.acquire_staging(len, true)?;
            let r = from
                .read(src_backend, src_offset, &mut slot.bytes_mut()[..len])
                .and_then(|()| dst.write(backend, dst_offset, &slot.bytes()[..len]));
            self.mm.release_staging(slot);
            return r;
        }
        let mut slots = Vec::with_capacity(2);
        for _ in 0..2 {
            match self.mm.acquire_staging(PEER_CHUNK, true) {
                Ok(slot) => slots.push(slot),
                Err(e) => {
                    slots.into_iter().for_each(|s| self.mm.release_staging(s));
                    return Err(e);
                }
            }
        }
        let mut in_flight: [Option<Event>; 2] = [None, None];
        let mut result = Ok(());
        for (i, start) in (0..len).step_by(PEER_CHUNK).enumerate() {
            let n = PEER_CHUNK.min(len - start);
            let k = i % 2;
            if let Some(event) = in_flight[k].take() {
                if let Err(e) = event.wait() {
                    result = Err(e);
                    break;
                }
            }
            if let Err(e) = from.read(src_backend, src_offset + start, &mut slots[k].bytes_mut()[..n]) {
                result = Err(e);
                break;
            }
            let chunk = slots[k].bytes()[..n].as_ptr();
            // SAFETY: block `k` is neither written nor released until this event has been waited
            // for: before the block's next use in this loop, or after the loop, below.
            match unsafe { dst.write_async(backend, 0, dst_offset + start, chunk, n) } {
                Ok(event) => in_flight[k] = Some(event),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        for event in in_flight.into_iter().flatten() {
            let waited = event.wait();
            if result.is_ok() {
                result = waited;
            }
        }
        slots.into_iter().for_each(|s| self.mm.release_staging(s));
        result
    }
}
