//! `SimEvent`: completion of a simulated transfer at a fixed instant (its modelled time), and
//! the precise wait it uses.

use super::hold::Gate;
use crate::backend::DeviceEvent;
use crate::error::{Error, Result};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// Waits until `deadline`: sleeps through most of a long wait and spins (yielding) through the
/// last stretch, because a thread sleep overshoots by the timer slack (~50 µs on Linux), which
/// would turn a modelled 10 µs latency into 60 µs.
pub(super) fn wait_until(deadline: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::thread::yield_now();
        }
    }
}

/// Completes at a fixed instant, modelling transfer time.
pub(super) struct SimEvent {
    pub(super) done_at: Instant,
    /// An injected failure, reported once the event is due.
    pub(super) error: Option<Error>,
    pub(super) gate: Arc<Gate>,
}

impl SimEvent {
    fn outcome(&self) -> Result<()> {
        match &self.error {
            None => Ok(()),
            Some(Error::Backend { operation, code, message, transient, .. }) => Err(Error::Backend {
                backend: "sim",
                operation,
                code: *code,
                message: message.clone(),
                transient: *transient,
            }),
            Some(other) => Err(Error::Backend {
                backend: "sim",
                operation: "event",
                code: -3,
                message: other.to_string(),
                transient: false,
            }),
        }
    }
}

impl DeviceEvent for SimEvent {
    fn is_complete(&self) -> Result<bool> {
        if self.gate.held() || Instant::now() < self.done_at {
            return Ok(false);
        }
        self.outcome().map(|()| true)
    }

    fn wait(&self) -> Result<()> {
        self.gate.wait_open();
        wait_until(self.done_at);
        self.outcome()
    }

    fn on_complete(&self, waker: Waker) {
        let Some(waker) = self.gate.defer(waker) else { return };
        let now = Instant::now();
        if now >= self.done_at {
            waker.wake();
        } else {
            let delay = self.done_at - now;
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                waker.wake();
            });
        }
    }
}
