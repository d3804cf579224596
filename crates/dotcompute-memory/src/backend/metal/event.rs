//! `MetalEvent`: completion of a committed command buffer, learnt from its completed handler
//! (a block Metal calls on its own thread), which wakes the registered wakers and the threads
//! blocked in `wait`, so nobody polls.

use super::handles::BACKEND;
use crate::backend::DeviceEvent;
use crate::error::{Error, Result};
use block2::RcBlock;
use objc2::runtime::ProtocolObject;
use objc2_metal::{MTLCommandBuffer, MTLCommandBufferError, MTLCommandBufferStatus};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

/// Why a command buffer failed: the `NSError`'s code and description.
#[derive(Debug, Clone)]
struct Failure {
    code: i64,
    message: String,
}

#[derive(Default)]
struct State {
    outcome: Option<std::result::Result<(), Failure>>,
    wakers: Vec<Waker>,
}

/// Shared between a [`MetalEvent`] and its command buffer's completed handler.
#[derive(Default)]
struct Completion {
    state: Mutex<State>,
    done: Condvar,
}

impl Completion {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome (the first one, if called twice) and wakes everyone waiting.
    fn finish(&self, outcome: std::result::Result<(), Failure>) {
        let wakers = {
            let mut s = self.lock();
            s.outcome.get_or_insert(outcome);
            std::mem::take(&mut s.wakers)
        };
        self.done.notify_all();
        for w in wakers {
            w.wake();
        }
    }
}

/// What a completed command buffer reports: its `error` when its status is
/// `MTLCommandBufferStatusError`.
fn outcome_of(command_buffer: &ProtocolObject<dyn MTLCommandBuffer>) -> std::result::Result<(), Failure> {
    if command_buffer.status() != MTLCommandBufferStatus::Error {
        return Ok(());
    }
    Err(match command_buffer.error() {
        Some(e) => Failure { code: e.code() as i64, message: e.localizedDescription().to_string() },
        None => Failure { code: -1, message: "the command buffer failed without an error object".into() },
    })
}

/// Work run in the completed handler once the command buffer succeeded, before the event
/// completes (a read's copy out of its staging buffer).
pub(super) type Then = Box<dyn FnOnce() + Send>;

/// Completion of one committed Metal command buffer.
///
/// `is_complete` and `wait` read what the command buffer's completed handler recorded;
/// `on_complete` registers a waker that the handler wakes on Metal's thread. The command
/// buffer itself holds the buffers its commands use until it has completed.
pub struct MetalEvent {
    operation: &'static str,
    completion: Arc<Completion>,
}

impl std::fmt::Debug for MetalEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetalEvent").field("operation", &self.operation).finish()
    }
}

impl MetalEvent {
    /// Adds the completed handler to `command_buffer` (running `then` first when it succeeds)
    /// and commits it. Metal requires handlers to be added before `commit`.
    pub(super) fn commit(
        command_buffer: &ProtocolObject<dyn MTLCommandBuffer>,
        operation: &'static str,
        then: Option<Then>,
    ) -> Self {
        let completion = Arc::new(Completion::default());
        let handler_completion = Arc::clone(&completion);
        let then = Mutex::new(then);
        let handler = RcBlock::new(move |done: NonNull<ProtocolObject<dyn MTLCommandBuffer>>| {
            let run = || {
                // SAFETY: Metal passes the command buffer that completed, alive for the call.
                let outcome = outcome_of(unsafe { done.as_ref() });
                if outcome.is_ok() {
                    if let Some(then) = then.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        then();
                    }
                }
                handler_completion.finish(outcome);
            };
            // A panic must not unwind into Metal; the event then reports it as a failure.
            if catch_unwind(AssertUnwindSafe(run)).is_err() {
                handler_completion.finish(Err(Failure { code: -2, message: "the completion handler panicked".into() }));
            }
        });
        // SAFETY: `handler` is a live heap block with the handler's signature; Metal copies the
        // block it stores (the Objective-C convention for blocks kept past a call), so dropping
        // ours afterwards is fine. The handler only touches what it owns.
        unsafe { command_buffer.addCompletedHandler(RcBlock::as_ptr(&handler)) };
        command_buffer.commit();
        MetalEvent { operation, completion }
    }

    fn error(&self, failure: &Failure) -> Error {
        let transient = failure.code == MTLCommandBufferError::OutOfMemory.0 as i64
            || failure.code == MTLCommandBufferError::Timeout.0 as i64;
        Error::Backend {
            backend: BACKEND,
            operation: self.operation,
            code: failure.code,
            message: failure.message.clone(),
            transient,
        }
    }
}

impl DeviceEvent for MetalEvent {
    fn is_complete(&self) -> Result<bool> {
        match &self.completion.lock().outcome {
            None => Ok(false),
            Some(Ok(())) => Ok(true),
            Some(Err(f)) => Err(self.error(f)),
        }
    }

    fn wait(&self) -> Result<()> {
        let mut s = self.completion.lock();
        loop {
            match &s.outcome {
                Some(Ok(())) => return Ok(()),
                Some(Err(f)) => return Err(self.error(f)),
                None => s = self.completion.done.wait(s).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    fn on_complete(&self, waker: Waker) {
        let mut s = self.completion.lock();
        if s.outcome.is_some() {
            drop(s);
            waker.wake();
        } else if !s.wakers.iter().any(|w| w.will_wake(&waker)) {
            s.wakers.push(waker);
        }
    }
}
