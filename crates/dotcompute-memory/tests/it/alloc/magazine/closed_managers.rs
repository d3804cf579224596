//! Closed managers and switching managers: a manager whose last handle is gone is released once
//! the threads that parked blocks for it use any manager again, switch managers, or exit; and a
//! thread switching between managers keeps both managers' statistics exact.

use crate::support::managers::quiet;
use dotcompute_memory::*;
use std::sync::mpsc::channel;
use std::sync::Arc;

/// After the last handle, the manager (and its backend memory) is released once its buffers are
/// gone, except for blocks parked in magazines of other threads that are still running, which
/// go back when those threads next use any manager or exit (`pool::magazine`). Here the other
/// thread goes on using managers (it drops the closed manager's last buffer, then allocates and
/// drops on a manager without pooling, which has no magazine): that use must hand the stale
/// magazine back even on those paths, so the closed manager's device memory is released.
#[test]
fn a_thread_that_keeps_running_releases_a_closed_manager_when_it_next_uses_one() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let (to_worker, from_main) = channel::<()>();
    let (to_main, from_worker) = channel::<usize>();
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            // One buffer with device memory is dropped (its host block is parked here, with a
            // manager reference); another stays alive past the last handle.
            let mut parked = mm.allocate::<u8>(4096).unwrap();
            parked.ensure_on_device().unwrap();
            let mut live = mm.allocate::<u8>(4096).unwrap();
            live.ensure_on_device().unwrap();
            drop(parked);
            drop(mm);
            to_main.send(0).unwrap();
            from_main.recv().unwrap();
            // The last handle is gone. This thread now drops the manager's last buffer ...
            drop(live);
            // ... and uses another manager (pooling off, like a scratch manager).
            let other = MemoryManager::with_backend(CpuBackend::new(), quiet().with_enable_pooling(false)).unwrap();
            drop(other.allocate::<u8>(4096).unwrap());
            drop(other.allocate::<u8>(8 << 20).unwrap());
            to_main.send(sim.used()).unwrap();
            from_main.recv().unwrap();
        })
    };
    from_worker.recv().unwrap();
    drop(mm); // the last handle, on this thread
    to_worker.send(()).unwrap();
    let used = from_worker.recv().unwrap();
    to_worker.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(used, 0, "no handle and no buffer left, and the worker has used managers since, yet the closed manager still holds {used} device bytes");
}

/// Switching managers on one thread hands the first manager's magazine back: its blocks are
/// counted once (as cached), the other manager's statistics do not see them, and trimming
/// frees everything.
#[test]
fn switching_managers_on_one_thread_keeps_both_statistics_exact() {
    let a = MemoryManager::sim(SimOptions::default());
    let b = MemoryManager::sim(SimOptions::default());
    for n in [100usize, 3000, 70_000] {
        drop(a.allocate::<u8>(n).unwrap());
    }
    let sa = a.statistics();
    assert_eq!((sa.active_allocations, sa.active_bytes), (0, 0), "{sa:#?}");
    assert_eq!(sa.cached_bytes, sa.reserved_bytes, "{sa:#?}");
    let parked = sa.cached_bytes;
    drop(b.allocate::<u8>(100).unwrap()); // restocks for b: a's blocks go to a's caches
    let sa = a.statistics();
    assert_eq!(sa.cached_bytes, parked, "moved from the magazine to the cache, counted once: {sa:#?}");
    let sb = b.statistics();
    assert_eq!(sb.cached_bytes, sb.reserved_bytes, "{sb:#?}");
    // Alternate: each switch is a restock; nothing is lost or counted twice.
    for i in 0..20 {
        let m = if i % 2 == 0 { &a } else { &b };
        let x = m.allocate::<u32>(50 + i).unwrap();
        let y = m.allocate::<u32>(50 + i).unwrap();
        drop(x);
        drop(y);
    }
    for m in [&a, &b] {
        let s = m.statistics();
        assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
        assert_eq!(s.buffers_allocated, s.buffers_freed, "{s:#?}");
        assert_eq!(s.cached_bytes, s.reserved_bytes, "{s:#?}");
        m.trim_excess().unwrap();
        let s = m.statistics();
        assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
        assert_eq!(s.backend_frees, s.backend_allocations, "{s:#?}");
    }
}

/// The last handle goes while another thread still holds parked blocks; that thread then
/// exits without using any manager again. Its exit flush drops the last references: the
/// manager and all its device memory are released.
#[test]
fn an_exiting_thread_releases_a_closed_manager_it_parked_blocks_for() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let (to_worker, from_main) = channel::<()>();
    let (to_main, from_worker) = channel::<()>();
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            for n in [64usize, 1000, 1000, 60_000] {
                let mut b = mm.allocate::<u8>(n).unwrap();
                b.ensure_on_device().unwrap();
            }
            drop(mm);
            to_main.send(()).unwrap();
            from_main.recv().unwrap();
        })
    };
    from_worker.recv().unwrap();
    drop(mm);
    assert!(sim.used() > 0, "the worker's magazine keeps the closed manager alive while it runs");
    to_worker.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(sim.used(), 0, "the exit flush dropped the closed manager's last references");
}

/// Switching to another manager restocks the magazine: the blocks of the first manager go back
/// at once, and when that manager is closed they are its last references, so it is released
/// during the restock, before the thread exits.
#[test]
fn switching_away_from_a_closed_manager_releases_it_at_once() {
    let sim_a = Arc::new(SimBackend::new(SimOptions::default()));
    let a = MemoryManager::with_shared_backend(sim_a.clone(), quiet()).unwrap();
    let b = MemoryManager::sim(SimOptions::default());
    let (to_worker, from_main) = channel::<()>();
    let (to_main, from_worker) = channel::<usize>();
    let worker = {
        let a = a.clone();
        let b = b.clone();
        std::thread::spawn(move || {
            let mut x = a.allocate::<u8>(4096).unwrap();
            x.ensure_on_device().unwrap();
            drop(x);
            drop(a);
            to_main.send(0).unwrap();
            from_main.recv().unwrap();
            // A drop of b's buffer: the fast path misses (stale owner), the restock hands a's
            // node back, the last reference to a goes.
            drop(b.allocate::<u8>(4096).unwrap());
            to_main.send(sim_a.used()).unwrap();
            from_main.recv().unwrap();
        })
    };
    from_worker.recv().unwrap();
    drop(a);
    to_worker.send(()).unwrap();
    let used = from_worker.recv().unwrap();
    let s = b.statistics();
    assert_eq!((s.active_allocations, s.buffers_freed), (0, 1), "{s:#?}");
    assert_eq!(s.cached_bytes, s.reserved_bytes, "b's block is parked, counted once: {s:#?}");
    to_worker.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(used, 0, "the closed manager still held {used} device bytes after the restock");
}
