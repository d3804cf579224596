//! Holding back completions: while a `CompletionHold` is alive, no transfer of its simulated
//! device completes, so tests can see work in flight without depending on timing.

use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;

/// Holds back every transfer completion of one simulated device while any
/// [`CompletionHold`] is alive, so tests can observe work in flight without timing.
#[derive(Default)]
pub(super) struct Gate {
    /// Live holds, and the wakers of events that became due while held.
    state: Mutex<(usize, Vec<Waker>)>,
    opened: Condvar,
}

impl Gate {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Vec<Waker>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn held(&self) -> bool {
        self.lock().0 > 0
    }

    pub(super) fn wait_open(&self) {
        let mut state = self.lock();
        while state.0 > 0 {
            state = self.opened.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Keeps `waker` for the release while held; hands it back otherwise.
    pub(super) fn defer(&self, waker: Waker) -> Option<Waker> {
        let mut state = self.lock();
        if state.0 > 0 {
            state.1.push(waker);
            None
        } else {
            Some(waker)
        }
    }
}

/// While alive, no transfer of the [`SimBackend`](super::SimBackend) that made it completes:
/// events report "not complete", `wait` blocks and wake-ups are deferred. Dropping the last
/// hold lets every transfer complete at its simulated time and wakes the tasks that waited
/// meanwhile.
#[must_use = "completions are held only while the hold is alive"]
pub struct CompletionHold {
    pub(super) gate: Arc<Gate>,
}

impl std::fmt::Debug for CompletionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionHold").finish_non_exhaustive()
    }
}

impl Drop for CompletionHold {
    fn drop(&mut self) {
        let wakers = {
            let mut state = self.gate.lock();
            state.0 -= 1;
            if state.0 > 0 {
                return;
            }
            std::mem::take(&mut state.1)
        };
        self.gate.opened.notify_all();
        for waker in wakers {
            // An event may still be before its simulated time: its task re-polls and
            // registers again.
            waker.wake();
        }
    }
}
