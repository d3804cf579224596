//! The pool's core protocol without thread slots or hooks, for the loom model in
//! `tests/loom_pool.rs` (compiled under `--cfg loom` only).

use std::time::Duration;

/// The shared state of one pool.
pub struct Core<T>(super::reserve::Shared<T>);
/// One thread's stack; each model thread owns one.
pub struct Local<T>(super::reserve::Local<T>);

impl<T> Core<T> {
    /// A pool with `prewarm.len()` idle objects.
    pub fn new(max_size: usize, thread_cache: usize, idle_time: Option<Duration>, prewarm: Vec<T>) -> Self {
        Core(super::reserve::Shared::new(max_size, thread_cache, idle_time, prewarm.into_iter()))
    }
    /// An empty stack for one thread.
    pub fn local(&self) -> Local<T> {
        Local(super::reserve::Local::new())
    }
    /// The owner's get (without creating).
    pub fn take(&self, local: &mut Local<T>, victims: &mut Vec<T>) -> Option<T> {
        self.0.owner_take(&mut local.0, victims)
    }
    /// The owner's return.
    pub fn put(&self, local: &mut Local<T>, obj: T, victims: &mut Vec<T>) -> Result<(), T> {
        self.0.owner_put(&mut local.0, obj, victims)
    }
    /// Shared-tier-only get.
    pub fn take_direct(&self) -> Option<T> {
        self.0.take_direct()
    }
    /// Shared-tier-only return.
    pub fn put_direct(&self, obj: T) -> Result<(), T> {
        self.0.put_direct(obj, 0)
    }
    /// A maintenance pass.
    pub fn maintain(&self, thread_cached: usize) -> Vec<T> {
        self.0.maintain(thread_cached)
    }
    /// Moves a stack to the shared tier.
    pub fn flush(&self, local: &mut Local<T>) {
        self.0.flush(&mut local.0)
    }
    /// Free reservations.
    pub fn budget(&self) -> usize {
        self.0.budget.load(super::sync::Ordering::Relaxed)
    }
    /// Objects in the shared tier.
    pub fn global_len(&self) -> usize {
        self.0.global.len()
    }
    /// Empties the shared tier.
    pub fn drain_global(&self) -> Vec<T> {
        std::iter::from_fn(|| self.0.global.pop()).flatten().map(|idle| idle.obj).collect()
    }
}

impl<T> Local<T> {
    /// Reservations held.
    pub fn quota(&self) -> usize {
        self.0.quota
    }
    /// Objects held.
    pub fn len(&self) -> usize {
        self.0.items.len()
    }
    /// True when the stack holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.items.is_empty()
    }
    /// Empties the stack (without touching reservations).
    pub fn drain(&mut self) -> Vec<T> {
        self.0.items.drain(..).map(|idle| idle.obj).collect()
    }
}
