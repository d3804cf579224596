//! `OpenClEvent`: completion of one enqueued command, learnt through `clSetEventCallback`, and
//! the blocking wait the synchronous calls use.

use super::error::cl_error;
use super::handles::{Mem, RawEvent};
use crate::backend::DeviceEvent;
use crate::error::Result;
use opencl3::command_queue::flush;
use opencl3::event::{
    get_event_data, set_event_callback, wait_for_events, CL_COMPLETE, CL_EVENT_COMMAND_EXECUTION_STATUS,
    CL_EVENT_COMMAND_TYPE,
};
use opencl3::types::{cl_command_queue, cl_event, cl_int};
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// Waits for `event`; a failed command reports its own status under `operation`.
pub(super) fn wait_raw(event: &RawEvent, operation: &'static str) -> Result<()> {
    let waited = wait_for_events(&[event.0]);
    match event_status(event.0) {
        Ok(s) if s < 0 => Err(cl_error(operation, s)),
        Ok(_) => waited.map_err(|code| cl_error("clWaitForEvents", code)),
        Err(code) => Err(cl_error("clGetEventInfo", code)),
    }
}

fn event_status(event: cl_event) -> std::result::Result<cl_int, cl_int> {
    let b = get_event_data(event, CL_EVENT_COMMAND_EXECUTION_STATUS)?;
    Ok(b.get(..4).and_then(|b| b.try_into().ok()).map(cl_int::from_ne_bytes).unwrap_or(CL_COMPLETE))
}

#[derive(Default)]
struct CompletionState {
    /// The status the driver reported to the callback (`CL_COMPLETE` or a negative error).
    status: Option<cl_int>,
    wakers: Vec<Waker>,
}

/// Shared between an [`OpenClEvent`] and its driver callback.
#[derive(Default)]
struct Completion {
    state: Mutex<CompletionState>,
}

impl Completion {
    fn lock(&self) -> std::sync::MutexGuard<'_, CompletionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, status: cl_int) {
        let wakers = {
            let mut s = self.lock();
            s.status.get_or_insert(status);
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Called by the driver, on its own thread, once the command has completed or failed.
extern "C" fn completion_callback(_event: cl_event, status: cl_int, user_data: *mut c_void) {
    // SAFETY: `user_data` is the pointer `Arc::into_raw` made in `OpenClEvent::new` for this one
    // registration; the driver calls the callback exactly once, so the reference is taken back
    // exactly once.
    let completion = unsafe { Arc::from_raw(user_data.cast_const().cast::<Completion>()) };
    // A panicking waker must not unwind into the driver.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| completion.complete(status)));
}

/// Completion of one enqueued OpenCL command.
///
/// `is_complete` asks the driver for the event's execution status; `wait` is
/// `clWaitForEvents`; `on_complete` registers a waker that the `clSetEventCallback` callback
/// wakes on the driver's thread. The event keeps the buffers its command uses alive until it
/// is dropped.
pub struct OpenClEvent {
    raw: RawEvent,
    operation: &'static str,
    completion: Arc<Completion>,
    _keep: Vec<Arc<Mem>>,
}

impl std::fmt::Debug for OpenClEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClEvent").field("operation", &self.operation).finish()
    }
}

impl OpenClEvent {
    /// Wraps `raw`, flushes `queue` so the command starts, and registers the completion
    /// callback. If registration fails the command is waited for here (it is already enqueued,
    /// so returning an error would let the caller release memory the command still uses).
    pub(super) fn new(raw: RawEvent, operation: &'static str, queue: cl_command_queue, keep: Vec<Arc<Mem>>) -> Self {
        let _ = flush(queue);
        Self::registered(raw, operation, keep)
    }

    /// Wraps `raw` (an event of a command this backend did not enqueue) and registers the
    /// completion callback, as `new` does, without flushing any queue.
    pub(super) fn adopt(raw: RawEvent, operation: &'static str) -> Self {
        Self::registered(raw, operation, Vec::new())
    }

    fn registered(raw: RawEvent, operation: &'static str, keep: Vec<Arc<Mem>>) -> Self {
        let completion = Arc::new(Completion::default());
        let user = Arc::into_raw(completion.clone()).cast_mut().cast::<c_void>();
        if set_event_callback(raw.0, CL_COMPLETE, completion_callback, user).is_err() {
            // SAFETY: the registration failed, so the driver will never call back with `user`;
            // take the reference back here instead.
            drop(unsafe { Arc::from_raw(user.cast_const().cast::<Completion>()) });
            let _ = wait_for_events(&[raw.0]);
            completion.complete(event_status(raw.0).unwrap_or(CL_COMPLETE));
        }
        OpenClEvent { raw, operation, completion, _keep: keep }
    }

    /// The `cl_event`, valid while `self` lives (take a reference with `clRetainEvent` to keep
    /// it longer).
    pub fn as_raw(&self) -> cl_event {
        self.raw.0
    }

    /// The event as a one-entry wait list, for an enqueue call of the caller's
    /// (`event_wait_list` / `num_events_in_wait_list`, or opencl3's `set_event_wait_list`).
    pub fn wait_list(&self) -> &[cl_event] {
        std::slice::from_ref(&self.raw.0)
    }

    /// `CL_EVENT_COMMAND_TYPE`: e.g. `CL_COMMAND_MARKER` or `CL_COMMAND_BARRIER` for
    /// [`OpenClBackend::marker`](super::OpenClBackend::marker)'s events.
    pub fn command_type(&self) -> Result<u32> {
        let b = get_event_data(self.raw.0, CL_EVENT_COMMAND_TYPE).map_err(|code| cl_error("clGetEventInfo", code))?;
        Ok(b.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes).unwrap_or(0))
    }
}

impl DeviceEvent for OpenClEvent {
    fn is_complete(&self) -> Result<bool> {
        match event_status(self.raw.0) {
            Ok(CL_COMPLETE) => Ok(true),
            Ok(s) if s < 0 => Err(cl_error(self.operation, s)),
            Ok(_) => Ok(false),
            Err(code) => Err(cl_error("clGetEventInfo", code)),
        }
    }

    fn wait(&self) -> Result<()> {
        wait_raw(&self.raw, self.operation)
    }

    fn on_complete(&self, waker: Waker) {
        let mut s = self.completion.lock();
        if s.status.is_some() {
            drop(s);
            waker.wake();
        } else if !s.wakers.iter().any(|w| w.will_wake(&waker)) {
            s.wakers.push(waker);
        }
    }
}
