//! The synchronisation the object pool uses: atomics and the shared queue, swapped for loom's
//! under `--cfg loom` so the model in `tests/loom_pool.rs` checks the protocol.

#[cfg(loom)]
pub(super) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(super) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The shared tier: an unbounded MPMC FIFO queue (the reservation budget bounds it).
#[cfg(not(loom))]
pub(super) struct Queue<T>(crossbeam_queue::SegQueue<T>);

#[cfg(not(loom))]
impl<T> Queue<T> {
    pub(super) fn new() -> Self {
        Queue(crossbeam_queue::SegQueue::new())
    }
    #[inline]
    pub(super) fn push(&self, value: T) {
        self.0.push(value)
    }
    #[inline]
    pub(super) fn pop(&self) -> Option<T> {
        self.0.pop()
    }
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Loom cannot see inside crossbeam, so the model uses a loom mutex around a deque: the
/// model checks our protocol (reservations, hand-off, eviction), not crossbeam's queue.
#[cfg(loom)]
pub(super) struct Queue<T>(loom::sync::Mutex<std::collections::VecDeque<T>>);

#[cfg(loom)]
impl<T> Queue<T> {
    pub(super) fn new() -> Self {
        Queue(loom::sync::Mutex::new(std::collections::VecDeque::new()))
    }
    pub(super) fn push(&self, value: T) {
        self.0.lock().unwrap().push_back(value)
    }
    pub(super) fn pop(&self) -> Option<T> {
        self.0.lock().unwrap().pop_front()
    }
    pub(super) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Locks a mutex of the pool's bookkeeping (registry, tick history).
pub(super) fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    // A panic in a user hook cannot leave these plain data structures inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
