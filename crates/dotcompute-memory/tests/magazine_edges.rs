//! Edge cases of the per-thread magazines (`pool::magazine`) and the sharded statistics, found
//! in review: peaks with buffers freed on other threads, closed managers on threads that keep
//! running, buffers held in thread-locals at thread exit, manager switching, odd element sizes
//! crossing threads, tiny pool bounds.

use dotcompute_memory::*;
use std::sync::mpsc::channel;
use std::sync::Arc;

mod child;
use child::in_child;

fn quiet() -> ManagerOptions {
    ManagerOptions { maintenance_interval: None, ..Default::default() }
}

/// `peak_bytes` is documented as "Highest `active_bytes` seen". Here at most 10 MiB are ever
/// live, yet the allocating thread still carries the +10 MiB it never folded (below the 16 MiB
/// batch) while the consumer thread's -10 MiB sits unfolded in its own shard, so the next
/// 1 MiB allocation computes 0 + 11 MiB and records a peak that never happened.
#[test]
fn peak_is_not_overstated_when_another_thread_frees() {
    let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
    let buffers: Vec<_> = (0..10).map(|_| mm.allocate::<u8>(1 << 20).unwrap()).collect();
    assert_eq!(mm.statistics().peak_bytes, 10 << 20);
    std::thread::spawn(move || drop(buffers)).join().unwrap();
    assert_eq!(mm.statistics().active_bytes, 0);
    let _b = mm.allocate::<u8>(1 << 20).unwrap();
    let s = mm.statistics();
    assert_eq!(s.active_bytes, 1 << 20, "{s:#?}");
    assert!(s.peak_bytes <= 10 << 20, "never more than 10 MiB were live, peak says {}: {s:#?}", s.peak_bytes);
}

/// `pool::magazine` docs: after the last handle, "the manager (and its backend memory) is
/// released once its buffers are gone, except for blocks parked in magazines of other threads
/// that are still running, which go back when those threads next use any manager or exit".
/// Here the other thread goes on using managers (it drops the closed manager's last buffer, and
/// allocates and drops on another manager) but its magazine keeps the closed manager (and
/// its device memory) alive: `recycle` returns early for a closed epoch or a manager without
/// magazines, before it ever looks at the stale magazine.
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
            let other =
                MemoryManager::with_backend(CpuBackend::new(), ManagerOptions { enable_pooling: false, ..quiet() })
                    .unwrap();
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
/// frees everything. (Checked: passes.)
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

/// A buffer allocated from one thread's magazine, moved to another thread and dropped there,
/// goes back with the manager reference it took over (that thread never allocated, so it parks
/// nothing: its drops go to the shared caches, see `crate::thread_exit`): statistics stay
/// exact, and everything is released once both threads are done. Includes zero-length,
/// DeviceOnly and odd-sized element buffers.
/// (Checked: passes.)
#[test]
fn buffers_crossing_threads_with_odd_shapes_release_everything() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Rgb([u8; 3]);
    impl Element for Rgb {
        const TYPE_TAG: TypeTag = TypeTag { id: 4001, name: "Rgb" };
    }
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    // Park a block here, then take it back for a buffer that leaves the thread.
    drop(mm.allocate::<u8>(999).unwrap());
    let mut moved = mm.allocate::<Rgb>(333).unwrap(); // 999 bytes: same class, from the magazine
    assert_eq!(moved.len(), 333);
    moved.fill(Rgb([1, 2, 3])).unwrap();
    let dev = mm.allocate_device::<u16>(700).unwrap();
    let empty = mm.allocate::<f64>(0).unwrap();
    let cast = mm.allocate_from(&[7u8; 12]).unwrap().cast::<Rgb>().unwrap();
    assert_eq!(cast.len(), 4);
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            assert_eq!(moved.to_vec().unwrap()[332].0, [1, 2, 3]);
            drop((moved, dev, empty, cast));
            let s = mm.statistics();
            assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
            assert_eq!(s.cached_bytes, s.reserved_bytes, "{s:#?}");
        })
    };
    worker.join().unwrap();
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    assert_eq!(s.cached_bytes, s.reserved_bytes, "the worker's magazine went back at exit: {s:#?}");
    drop(mm);
    assert_eq!(sim.used(), 0);
}

/// With a pool bound so small that the per-thread cap is below the smallest block, nothing is
/// parked and statistics match the no-magazine behaviour. (Checked: passes.)
#[test]
fn a_tiny_pool_bound_parks_nothing_it_cannot_hold() {
    let options = ManagerOptions { max_pool_bytes: 256, ..quiet() }; // cap 16 bytes
    let mm = MemoryManager::with_backend(CpuBackend::new(), options).unwrap();
    for _ in 0..4 {
        drop(mm.allocate::<u8>(64).unwrap());
    }
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    assert!(s.cached_bytes <= 256, "the pool holds more than max_pool_bytes: {s:#?}");
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
}

/// A buffer kept in a thread-local (a per-thread scratch buffer) and created lazily inside the
/// thread-local's first access is dropped by that thread-local's destructor at thread exit.
/// Its key registered its destructor before the statistics' thread-id guard (`thread_local`
/// crate), so the guard is destroyed first; the buffer's drop then asks for the thread's
/// statistics shard, `thread_local` allocates a new thread id and touches its destroyed guard,
/// which panics inside a TLS destructor: the process aborts. Run in a child process so the
/// abort is observed instead of killing this test binary.
#[test]
fn a_buffer_in_a_thread_local_can_be_dropped_at_thread_exit() {
    in_child("a_buffer_in_a_thread_local_can_be_dropped_at_thread_exit", || {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Option<UnifiedBuffer<f32>>> = const { std::cell::RefCell::new(None) };
        }
        let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
        std::thread::spawn(move || {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let b = s.get_or_insert_with(|| mm.allocate::<f32>(256).unwrap());
                b.fill(1.0).unwrap();
            });
        })
        .join()
        .unwrap();
    });
}
