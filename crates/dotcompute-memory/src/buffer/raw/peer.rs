//! Device copies into a buffer's device part from any source: the same device, a peer device it
//! can reach directly, or one it cannot, through host staging blocks.

use super::metrics::timed;
use super::RawBuffer;
use crate::backend::region::DeviceRegion;
use crate::backend::{Backend, Event};
use crate::error::{Direction, Result};

/// Bytes per staging block of a pipelined copy between devices that cannot reach each other:
/// large enough that per-chunk latency is small, small enough that a ring of them overlaps well.
/// (4 KiB under Miri, so that its tests reach every path of the ring in reasonable time.)
pub(crate) const PEER_CHUNK: usize = if cfg!(miri) { 4 << 10 } else { 4 << 20 };

/// Staging blocks are page-locked where the backend has such memory; not under Miri, which
/// cannot make the system call.
const PINNED_STAGING: bool = !cfg!(miri);

/// How a copy between two devices goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRoute {
    /// The destination device reads the source device's memory.
    Direct,
    /// Through host staging blocks: the source device writes them, the destination reads them.
    Staged,
}

impl RawBuffer {
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
    /// (page-locked where the destination has them). `pipelined`: in chunks through a ring of
    /// blocks, the source's reads running ahead of the destination's writes, so both devices'
    /// links are busy at once; a failure part-way leaves part of `dst` written. Otherwise
    /// through one block holding the whole range, written with one call.
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
            let mut slot = self.mm.acquire_staging(len, PINNED_STAGING)?;
            let r = from
                .read(src_backend, src_offset, &mut slot.bytes_mut()[..len])
                .and_then(|()| dst.write(backend, dst_offset, &slot.bytes()[..len]));
            self.mm.release_staging(slot);
            return r;
        }
        let chunks = len.div_ceil(PEER_CHUNK);
        let mut ring = Vec::with_capacity(PEER_RING.min(chunks));
        for _ in 0..PEER_RING.min(chunks) {
            match self.mm.acquire_staging(PEER_CHUNK, PINNED_STAGING) {
                Ok(slot) => ring.push(StagedBlock { slot, read: None, write: None }),
                Err(e) => {
                    ring.into_iter().for_each(|b| self.mm.release_staging(b.slot));
                    return Err(e);
                }
            }
        }
        let result = pump(&mut ring, chunks, |stage, chunk, block| {
            let at = chunk * PEER_CHUNK;
            let n = PEER_CHUNK.min(len - at);
            let ptr = block.slot.bytes_mut()[..n].as_mut_ptr();
            match stage {
                Stage::Read => {
                    // SAFETY: the block is neither read nor written until this event has been
                    // waited for (`pump` waits for it before the write that reads the block, and
                    // for every event before the ring is released).
                    unsafe { from.read_async(src_backend, 0, src_offset + at, ptr, n) }
                }
                Stage::Write => {
                    // SAFETY: the block is not written again until this event has been waited
                    // for (before the block's next read, or before the ring is released).
                    unsafe { dst.write_async(backend, 0, dst_offset + at, ptr, n) }
                }
            }
        });
        ring.into_iter().for_each(|b| self.mm.release_staging(b.slot));
        result
    }
}

/// Staging blocks in the ring of a pipelined copy between devices.
const PEER_RING: usize = 4;

/// One block of the ring and the transfers using it.
struct StagedBlock {
    slot: crate::pool::staging::StagingSlot,
    /// The read filling it.
    read: Option<Event>,
    /// The write draining it.
    write: Option<Event>,
}

/// Which half of a chunk's trip `pump` asks for.
#[derive(Clone, Copy)]
enum Stage {
    Read,
    Write,
}

/// Moves `chunks` chunks through `ring`: at each step the next chunk's read is queued (into its
/// block once that block's last write has completed), then the previous chunk's write once its
/// read has completed; so the source always has a read queued while the destination writes.
/// Returns with no transfer in flight, and the first error.
fn pump(
    ring: &mut [StagedBlock],
    chunks: usize,
    mut start: impl FnMut(Stage, usize, &mut StagedBlock) -> Result<Event>,
) -> Result<()> {
    let k = ring.len();
    let mut step = |chunk: usize| -> Result<()> {
        if chunk < chunks {
            let block = &mut ring[chunk % k];
            if let Some(write) = block.write.take() {
                write.wait()?;
            }
            block.read = Some(start(Stage::Read, chunk, block)?);
        }
        if let Some(previous) = chunk.checked_sub(1) {
            let block = &mut ring[previous % k];
            if let Some(read) = block.read.take() {
                read.wait()?;
            }
            block.write = Some(start(Stage::Write, previous, block)?);
        }
        Ok(())
    };
    let mut result = (0..=chunks).try_for_each(&mut step);
    for block in ring.iter_mut() {
        for event in block.read.take().into_iter().chain(block.write.take()) {
            let waited = event.wait();
            if result.is_ok() {
                result = waited;
            }
        }
    }
    result
}
