//! Copies between CUDA devices: peer access (`cuDeviceCanAccessPeer`, enabled once per pair with
//! `cuCtxEnablePeerAccess`) and `cuMemcpyPeerAsync`. Two backends on one context (the same
//! device) always reach each other.

use super::{driver, CudaBackend};
use crate::backend::{Backend, DeviceMemory};
use crate::error::{Error, Result};
use cudarc::driver::sys;

impl CudaBackend {
    /// Number of CUDA devices the driver reports; [`Error::BackendUnavailable`] without a driver
    /// or a GPU, as [`CudaBackend::new`].
    pub fn device_count() -> Result<usize> {
        // SAFETY: only tries to dlopen the driver library by its usual names.
        if !unsafe { sys::is_culib_present() } {
            return Err(super::unavailable(
                "the NVIDIA driver library (libcuda.so) was not found: install the NVIDIA driver on a machine with an NVIDIA GPU",
            ));
        }
        cudarc::driver::result::init().map_err(|e| {
            super::unavailable(format!("cuInit failed ({e:?}): the driver is present but no usable GPU was found"))
        })?;
        let count = cudarc::driver::result::device::get_count().map_err(|e| driver("cuDeviceGetCount", e))?;
        Ok(count.max(0) as usize)
    }

    /// True when this device can copy directly from `peer`'s memory: one context, or peer access
    /// that the driver allows and that is now enabled from this context. Asked of the driver once
    /// per pair; a driver error counts as no.
    pub(super) fn reaches(&self, peer: &CudaBackend) -> bool {
        if peer.context.ctx == self.context.ctx {
            return true;
        }
        let key = peer.context.device;
        let mut known = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&reachable) = known.get(&key) {
            return reachable;
        }
        let reachable = self.enable_peer_access(peer).unwrap_or(false);
        known.insert(key, reachable);
        reachable
    }

    fn enable_peer_access(&self, peer: &CudaBackend) -> Result<bool> {
        let mut can = 0;
        // SAFETY: both devices came from cuDeviceGet; `can` is a valid place for the answer.
        unsafe { sys::cuDeviceCanAccessPeer(&mut can, self.context.device, peer.context.device) }
            .result()
            .map_err(|e| driver("cuDeviceCanAccessPeer", e))?;
        if can == 0 {
            return Ok(false);
        }
        let _bound = self.context.bind()?;
        // SAFETY: `peer`'s context is live while `peer` is borrowed; access is enabled from the
        // context bound above (ours), which the guard restores afterwards.
        let r = unsafe { sys::cuCtxEnablePeerAccess(peer.context.ctx, 0) };
        Ok(matches!(r, sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED))
    }

    /// `Backend::copy_from_peer`: waits for the source device's queued work, then copies on this
    /// device's first stream and waits for it.
    pub(super) fn copy_from_peer_device(
        &self,
        src_backend: &dyn Backend,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let peer =
            src_backend.downcast_ref::<CudaBackend>().filter(|peer| self.reaches(peer)).ok_or(Error::Unsupported {
                operation: "CudaBackend::copy_from_peer",
                reason: "the source is not a CUDA device this one can reach (no peer access); copy through host memory",
            })?;
        let s = peer.device_ptr(src, src_offset, len)?;
        let d = self.device_ptr(dst, dst_offset, len)?;
        peer.synchronize()?;
        let (dst_ctx, src_ctx) = (self.context.ctx, peer.context.ctx);
        self.on_first_stream("cuMemcpyPeerAsync", |q| {
            // SAFETY: both ranges lie inside live allocations of their backends (checked above),
            // which the borrowed handles keep alive until `on_first_stream` has waited for the
            // copy; both contexts are live while their backends are borrowed.
            unsafe { sys::cuMemcpyPeerAsync(d, dst_ctx, s, src_ctx, len, q) }.result()
        })
    }
}
