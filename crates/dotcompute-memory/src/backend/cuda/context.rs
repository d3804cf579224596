//! The device's retained primary context and the backend's streams, and the guard that keeps a
//! context current on the calling thread for one driver call.

use super::*;

/// The retained primary context of a device and the backend's streams on it, shared by the
/// backend and everything it made that uses them; the last owner to drop tears them down,
/// unless they are the caller's (`caller`).
pub(super) struct Context {
    pub(super) device: sys::CUdevice,
    pub(super) ctx: sys::CUcontext,
    pub(super) streams: Vec<sys::CUstream>,
    /// For a backend made by `CudaBackend::from_stream`: the caller's stream, whose `Arc` keeps
    /// it and its context alive as long as this `Context` lives. Then `streams` is that one
    /// stream, `ctx` its context, and neither is destroyed or released here.
    pub(super) caller: Option<Arc<CudaStream>>,
}

// SAFETY: CUDA driver handles may be used from any thread (the driver API is thread-safe);
// every call makes the context current on the calling thread first (`bind`).
unsafe impl Send for Context {}
// SAFETY: as above; the handles are never changed after construction, only passed to the driver.
unsafe impl Sync for Context {}

impl Context {
    /// Makes this context current on the calling thread until the returned guard drops.
    pub(super) fn bind(&self) -> Result<Bound> {
        let current = cu::ctx::get_current().map_err(|e| driver("cuCtxGetCurrent", e))?;
        if current == Some(self.ctx) {
            return Ok(Bound { previous: None });
        }
        // SAFETY: `ctx` is the primary context retained in `CudaBackend::new` and released only
        // when this `Context` drops, or the context of the caller's stream that `caller` keeps
        // alive; either way it is live here.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| driver("cuCtxSetCurrent", e))?;
        Ok(Bound { previous: Some(current.unwrap_or(std::ptr::null_mut())) })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if self.caller.is_some() {
            // The caller's stream and context: dropping `caller` (after this) only gives back
            // our reference.
            return;
        }
        if let Ok(_bound) = self.bind() {
            for &s in &self.streams {
                // SAFETY: our streams, destroyed only here. Waiting first means no copy or host
                // function enqueued on a stream is left when it is destroyed.
                unsafe {
                    let _ = cu::stream::synchronize(s);
                    let _ = cu::stream::destroy(s);
                }
            }
        }
        // SAFETY: balanced with the retain in `CudaBackend::new`; this was the context's last
        // owner, so nothing uses it any more.
        let _ = unsafe { cu::primary_ctx::release(self.device) };
    }
}

/// Keeps a context current on the calling thread; on drop the thread's previous context (or
/// none) is current again. Not `Send`: it restores the state of the thread that made it.
pub(super) struct Bound {
    /// What to make current again (null: no context), or `None` when nothing was changed.
    pub(super) previous: Option<sys::CUcontext>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // SAFETY: `previous` was current on this thread when the guard was made (null
            // unbinds); only this module's driver calls on its own context ran since.
            let _ = unsafe { cu::ctx::set_current(previous) };
        }
    }
}
