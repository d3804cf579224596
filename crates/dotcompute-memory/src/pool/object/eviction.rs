//! Eviction of idle objects: the [`EvictionPolicy`], the maintenance pass over the shared tier
//! (and each owner's trim of its own stack), and the optional background maintenance thread.

use super::reserve::{Local, Shared};
use super::sync::{lock, Ordering};
use crate::error::{Error, Result};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When idle objects are dropped by maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EvictionPolicy {
    /// Idle objects stay until the pool is dropped (or `max_size` is reached on return).
    #[default]
    None,
    /// Objects idle for at least this long are dropped by maintenance, least recently returned
    /// first, down to `min_size`.
    ///
    /// Gets and returns read no clock: an object is stamped with the number of the last pass,
    /// so a pass knows only that it came back before the *next* pass began. An object is
    /// therefore evicted by the first pass that runs at least this long after the first pass
    /// following its return. Calling [`ObjectPool::maintain`](super::ObjectPool::maintain) by
    /// hand, that takes two passes: return, wait, `maintain()` evicts nothing (it starts the
    /// clock), and a `maintain()` at least this long after that one evicts. With a
    /// [`maintenance_interval`](super::ObjectPoolBuilder::maintenance_interval) `i`, an object
    /// idle for this long plus `i` is evicted by the next pass.
    IdleTime(Duration),
}

impl<T> Shared<T> {
    /// Takes up to `want` from this pass's thread-eviction allowance.
    fn take_allowance(&self, want: usize) -> usize {
        let allowance = &self.clock.allowance;
        let mut current = allowance.load(Ordering::Relaxed);
        loop {
            let take = current.min(want);
            if take == 0 {
                return 0;
            }
            match allowance.compare_exchange_weak(current, current - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => current = now,
            }
        }
    }

    /// The owner's side of a maintenance pass: give back unfilled reservations and evict stale
    /// objects from its own stack (within the pass's allowance).
    #[cold]
    pub(super) fn sync_tick(&self, local: &mut Local<T>, tick: u64, victims: &mut Vec<T>) {
        local.seen_tick = tick;
        let spare = local.quota - local.items.len();
        local.quota -= spare;
        self.release(spare);
        if self.idle_time.is_none() {
            return;
        }
        let cut = self.clock.cut.load(Ordering::Relaxed);
        let stale = local.items.iter().filter(|idle| idle.stamp < cut).count();
        if stale == 0 {
            return;
        }
        let mut evict = self.take_allowance(stale);
        let taken = evict;
        // Oldest first: the bottom of the stack.
        let mut i = 0;
        while evict > 0 && i < local.items.len() {
            if local.items[i].stamp < cut {
                victims.push(local.items.remove(i).obj);
                evict -= 1;
            } else {
                i += 1;
            }
        }
        local.quota -= taken;
        self.release(taken);
    }

    /// One maintenance pass; `thread_cached` is the number of objects in thread stacks. Returns
    /// the objects evicted from the shared tier, for the caller to drop.
    pub(super) fn maintain(&self, thread_cached: usize) -> Vec<T> {
        let mut history = lock(&self.history);
        let now = Instant::now();
        let tick = history.last + 1;
        history.last = tick;
        let mut cut = 0;
        if let Some(idle) = self.idle_time {
            history.starts.push_back((tick, now));
            if let Some(limit) = now.checked_sub(idle) {
                // The newest tick that began at least `idle` ago; older entries are not needed.
                if let Some(p) = history.starts.iter().rposition(|&(_, start)| start <= limit) {
                    cut = history.starts[p].0;
                    history.starts.drain(..p);
                }
            }
        }
        let mut allowed = (self.global.len() + thread_cached).saturating_sub(self.min_size);
        let mut victims = Vec::new();
        if cut > 0 {
            // Each batch present now is looked at once (oldest first); stale objects go, within
            // the allowance, and the rest of the batch goes back.
            for _ in 0..self.global.batches.len() {
                if allowed == 0 {
                    break;
                }
                let Some(mut batch) = self.global.pop() else { break };
                let mut i = 0;
                while allowed > 0 && i < batch.len() {
                    if batch[i].stamp < cut {
                        victims.push(batch.remove(i).obj);
                        allowed -= 1;
                    } else {
                        i += 1;
                    }
                }
                self.global.push(batch);
            }
        }
        self.release(victims.len());
        self.clock.cut.store(cut, Ordering::Relaxed);
        self.clock.allowance.store(if cut > 0 { allowed } else { 0 }, Ordering::Relaxed);
        self.clock.tick.store(tick, Ordering::Release);
        victims
    }
}

/// The background maintenance thread; dropping the sender stops it.
pub(super) struct Maintainer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Maintainer {
    const NAME: &'static str = "dcmem-pool-maintenance";

    pub(super) fn start<T: Send + 'static>(shared: Weak<Shared<T>>, interval: Duration) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(Self::NAME.into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                let Some(shared) = shared.upgrade() else { return };
                let victims = shared.maintain(shared.thread_cached());
                shared.evicted.fetch_add(victims.len() as u64, std::sync::atomic::Ordering::Relaxed);
                drop(victims);
            })
            .map_err(|e| Error::ThreadSpawn { thread: Self::NAME, message: e.to_string() })?;
        Ok(Maintainer { stop: Some(stop), handle: Some(handle) })
    }
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            // A panic on that thread (a panicking Drop of T) has already been reported.
            let _ = handle.join();
        }
    }
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaintenanceReport {
    /// Objects dropped by this pass (shared tier, plus the calling thread's own cache).
    pub evicted: u64,
    /// Idle objects left in the pool.
    pub current_size: u64,
}
