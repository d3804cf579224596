//! `CudaEvent`: completion of work on a stream, and the host function that wakes its wakers.

use super::*;

/// A recorded CUDA event, the stream it was recorded on, and the context both belong to.
pub(super) struct CudaEvent {
    pub(super) event: sys::CUevent,
    pub(super) stream: sys::CUstream,
    pub(super) context: Arc<Context>,
}

// SAFETY: CUDA events and streams may be queried, synchronised and destroyed from any thread;
// the stream and context stay alive while `context` is held.
unsafe impl Send for CudaEvent {}
// SAFETY: as above; all methods take &self and the driver serialises internally.
unsafe impl Sync for CudaEvent {}

/// Host function run by the stream after the copy: wakes the boxed waker.
unsafe extern "C" fn wake_boxed(arg: *mut c_void) {
    // SAFETY: `arg` is the Box<Waker> leaked in `on_complete`, handed to exactly one call.
    let waker = unsafe { Box::from_raw(arg as *mut Waker) };
    waker.wake();
}

impl DeviceEvent for CudaEvent {
    fn is_complete(&self) -> Result<bool> {
        let _bound = self.context.bind()?;
        // SAFETY: our live event.
        match unsafe { cu::event::query(self.event) } {
            Ok(()) => Ok(true),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            Err(e) => Err(driver("cuEventQuery", e)),
        }
    }

    fn wait(&self) -> Result<()> {
        let _bound = self.context.bind()?;
        // SAFETY: our live event.
        unsafe { cu::event::synchronize(self.event) }.map_err(|e| driver("cuEventSynchronize", e))
    }

    fn on_complete(&self, waker: Waker) {
        if let Ok(true) = self.is_complete() {
            waker.wake();
            return;
        }
        // Without the context, wake now: the poller's `is_complete` then reports the error.
        let Ok(_bound) = self.context.bind() else {
            waker.wake();
            return;
        };
        let arg = Box::into_raw(Box::new(waker)) as *mut c_void;
        // SAFETY: the stream is alive while `self.context` is (its last owner waits for the
        // stream before destroying it, so the host function runs); the host function runs once,
        // after all work enqueued so far on the stream (including this event's copy), and takes
        // ownership of `arg`.
        if unsafe { cu::stream::launch_host_function(self.stream, wake_boxed, arg) }.is_err() {
            // SAFETY: the launch failed, so the box was not handed over; take it back.
            let waker = unsafe { Box::from_raw(arg as *mut Waker) };
            waker.wake();
        }
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        let _bound = self.context.bind();
        // SAFETY: our event, destroyed once; destroying an incomplete event releases it once it
        // completes. The context outlives this call (`self.context` drops afterwards).
        let _ = unsafe { cu::event::destroy(self.event) };
    }
}
