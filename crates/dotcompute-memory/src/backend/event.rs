//! Completion of enqueued work: the `DeviceEvent` trait, the always-complete `ReadyEvent`, and
//! a set of events that completes when all of them have.

use crate::error::Result;
use std::task::Waker;

/// Completion of enqueued work.
pub trait DeviceEvent: Send + Sync {
    /// True once the work has finished; an error if it failed.
    fn is_complete(&self) -> Result<bool>;
    /// Blocks until the work has finished.
    fn wait(&self) -> Result<()>;
    /// Arranges for `waker` to be woken once the work has finished (possibly immediately).
    fn on_complete(&self, waker: Waker);
}

/// A boxed event as returned by the `*_async` methods.
pub type Event = Box<dyn DeviceEvent>;

/// An event that is complete from the start, for backends whose copies finish inline.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadyEvent;

impl DeviceEvent for ReadyEvent {
    fn is_complete(&self) -> Result<bool> {
        Ok(true)
    }
    fn wait(&self) -> Result<()> {
        Ok(())
    }
    fn on_complete(&self, waker: Waker) {
        waker.wake();
    }
}

/// Waits for every event, returning the first error among them.
pub(crate) fn wait_all(events: &[Event]) -> Result<()> {
    let mut first = Ok(());
    for event in events {
        if let Err(e) = event.wait() {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Several events as one: complete when all are, failed with the first failure (reported only
/// once every event has finished, so a caller that sees the error may reuse the memory). Used
/// for the copies of one batch and for a kernel's marker together with the completion events
/// a user handed over; the events may be of different queues.
struct EventSet(Vec<Event>);

/// `events` as one event (see `EventSet`); `None` when there are none.
pub(crate) fn all_of(mut events: Vec<Event>) -> Option<Event> {
    match events.len() {
        0 => None,
        1 => events.pop(),
        _ => Some(Box::new(EventSet(events))),
    }
}

impl DeviceEvent for EventSet {
    fn is_complete(&self) -> Result<bool> {
        let mut first = Ok(true);
        for event in &self.0 {
            match event.is_complete() {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => {
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }

    fn wait(&self) -> Result<()> {
        wait_all(&self.0)
    }

    fn on_complete(&self, waker: Waker) {
        // Registered with the first event still running: when it wakes the task, polling asks
        // again and registers with the next one, so no ordering between the events is assumed
        // (on one in-order queue the first running event is usually the only one left).
        match self.0.iter().find(|e| !matches!(e.is_complete(), Ok(true))) {
            Some(event) => event.on_complete(waker),
            None => waker.wake(),
        }
    }
}
