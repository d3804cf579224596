//! Reuse through the magazine: a small buffer dropped and allocated again on one thread gets the
//! same block back without the shared caches; parked blocks count as cached, are released by
//! `trim_excess` (from this thread, or recalled from another), and go back when their manager's
//! last handle goes or the thread that parked them exits.

use crate::support::managers::quiet;
use dotcompute_memory::*;
use std::sync::Arc;

#[test]
fn same_thread_reuse_is_counted_and_trimmed() {
    let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
    let mut b = mm.allocate::<u8>(4096).unwrap();
    b.fill(7).unwrap();
    let first = b.as_slice().unwrap().as_ptr();
    drop(b);
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    assert_eq!(s.reserved_bytes, s.cached_bytes, "the parked block counts as cached: {s:#?}");
    let hits = s.pool_hits;

    // Same size class (4000 rounds to the 4 KiB class): the parked block comes back.
    let b = mm.allocate::<u8>(4000).unwrap();
    assert_eq!(b.as_slice().unwrap().as_ptr(), first);
    let s = mm.statistics();
    assert_eq!(s.pool_hits, hits + 1, "{s:#?}");
    assert_eq!((s.active_allocations, s.active_bytes, s.peak_bytes), (1, 4000, 4096), "{s:#?}");
    drop(b);

    let released = mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert!(released > 0);
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "trim empties this thread's magazine too: {s:#?}");
    assert_eq!(s.backend_frees, s.backend_allocations, "{s:#?}");
}

#[test]
fn discrete_host_blocks_are_reused_and_contents_are_not_trusted() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let mut a = mm.allocate::<u32>(1000).unwrap();
    a.fill(0xAB).unwrap();
    a.ensure_on_device().unwrap();
    drop(a);
    // The host block is reused; the buffer is still a new buffer (HostOnly, newest on host).
    let mut b = mm.allocate::<u32>(1000).unwrap();
    assert_eq!(b.state(), BufferState::HostOnly);
    b.copy_from(&(0..1000).collect::<Vec<u32>>()).unwrap();
    b.ensure_on_device().unwrap();
    b.mark_device_dirty().unwrap();
    b.synchronize().unwrap();
    assert_eq!(b.to_vec().unwrap(), (0..1000).collect::<Vec<u32>>());
    drop(b);
    mm.trim_excess().unwrap();
    assert_eq!(sim.used(), 0);
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
}

#[test]
fn dropping_the_last_handle_releases_everything_on_this_thread() {
    // Buffer dropped before the manager: its block is parked, then handed back when the last
    // handle goes.
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let mut b = mm.allocate::<u8>(64 << 10).unwrap();
    b.ensure_on_device().unwrap();
    drop(b);
    assert!(sim.used() > 0, "the device pool caches the region");
    drop(mm);
    assert_eq!(sim.used(), 0, "manager and pools are gone");

    // Buffer outliving the manager handle: dropped after it, nothing is parked.
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let mut b = mm.allocate::<u8>(64 << 10).unwrap();
    b.ensure_on_device().unwrap();
    drop(mm);
    assert!(sim.used() > 0, "the buffer keeps its memory");
    drop(b);
    assert_eq!(sim.used(), 0);
}

#[test]
fn blocks_parked_by_another_thread_go_back_when_it_exits() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            for n in [100usize, 5000, 70_000] {
                let mut b = mm.allocate::<f32>(n).unwrap();
                b.fill(1.5).unwrap();
                b.ensure_on_device().unwrap();
            }
            let s = mm.statistics();
            assert_eq!(s.active_allocations, 0);
            assert!(s.cached_bytes >= (100 + 5000 + 70_000) * 4, "{s:#?}");
        })
    };
    worker.join().unwrap();
    // The worker's magazine was handed back at thread exit: trimming from here frees it all.
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    drop(mm);
    assert_eq!(sim.used(), 0);
}

#[test]
fn trim_from_another_thread_recalls_magazines_on_their_next_drop() {
    // On sim, host blocks are allocations of their own (no segments), so cached bytes are
    // exactly the parked and cached blocks.
    let mm = MemoryManager::sim(SimOptions::default());
    let (to_worker, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_worker) = std::sync::mpsc::channel::<()>();
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            drop(mm.allocate::<u8>(8192).unwrap()); // parked here
            to_main.send(()).unwrap();
            from_main.recv().unwrap();
            // The epoch moved on: this drop hands the old magazine back and parks only this block.
            drop(mm.allocate::<u8>(512).unwrap());
            to_main.send(()).unwrap();
            from_main.recv().unwrap();
        })
    };
    from_worker.recv().unwrap();
    let parked = mm.statistics().cached_bytes;
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert!(s.cached_bytes >= 8192, "another thread's magazine is out of reach until it runs: {s:#?}");
    assert!(s.cached_bytes <= parked, "{s:#?}");
    to_worker.send(()).unwrap();
    from_worker.recv().unwrap();
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert_eq!(s.cached_bytes, 512, "the 8 KiB block was handed back and trimmed; 512 B stay parked: {s:#?}");
    to_worker.send(()).unwrap();
    worker.join().unwrap();
    mm.trim_excess().unwrap();
    assert_eq!(mm.statistics().reserved_bytes, 0);
}

#[test]
fn without_pooling_nothing_is_parked() {
    let options = quiet().with_enable_pooling(false);
    let mm = MemoryManager::with_backend(CpuBackend::new(), options).unwrap();
    for _ in 0..3 {
        drop(mm.allocate::<u8>(1000).unwrap());
    }
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes, s.pool_hits), (0, 0, 0), "{s:#?}");
    assert_eq!(s.backend_allocations, 3);
}

#[test]
fn buffers_moved_across_threads_keep_statistics_exact() {
    let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
    let buffers: Vec<_> = (0..50).map(|i| mm.allocate::<u8>(1000 + i).unwrap()).collect();
    let total: u64 = (0..50).map(|i| 1000 + i).sum();
    assert_eq!(mm.statistics().active_bytes, total);
    // Dropped on another thread: its share of active bytes goes negative, the sum stays right.
    std::thread::spawn(move || drop(buffers)).join().unwrap();
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes, s.peak_bytes), (0, 0, total), "{s:#?}");
    assert_eq!(s.total_bytes_freed, total);
}

#[test]
fn device_only_buffers_are_parked_with_their_device_part() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let mut a = mm.allocate_device::<u32>(1000).unwrap();
    assert_eq!(a.state(), BufferState::DeviceOnly);
    a.copy_from(&[9; 1000]).unwrap();
    drop(a);
    let (used, hits) = (sim.used(), mm.statistics().pool_hits);
    let mut b = mm.allocate_device::<u32>(900).unwrap();
    assert_eq!(b.state(), BufferState::DeviceOnly, "a reused node starts as a new device-only buffer");
    assert_eq!(sim.used(), used, "the parked device part is reused, nothing new on the device");
    assert_eq!(mm.statistics().pool_hits, hits + 1);
    b.copy_from(&(0..900).collect::<Vec<u32>>()).unwrap();
    b.ensure_on_device().unwrap();
    b.mark_device_dirty().unwrap();
    assert_eq!(b.to_vec().unwrap(), (0..900).collect::<Vec<u32>>());
    // It now has a host part: that is what is parked; the device part goes back to the pool.
    drop(b);
    let c = mm.allocate::<u32>(900).unwrap();
    assert_eq!(c.state(), BufferState::HostOnly);
    drop(c);
    mm.trim_excess().unwrap();
    assert_eq!(sim.used(), 0);
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.cached_bytes, s.reserved_bytes), (0, 0, 0), "{s:#?}");
}

/// A thread-local destroyed before the magazine's exit flush (it was first used after the
/// thread parked something) drops its buffer into the still-live magazine; the flush then hands
/// it back with the rest.
#[test]
fn a_thread_local_dropped_before_the_exit_flush_parks_and_is_handed_back() {
    thread_local! {
        static LATE: std::cell::RefCell<Option<UnifiedBuffer<u32>>> = const { std::cell::RefCell::new(None) };
    }
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            drop(mm.allocate::<u32>(64).unwrap());
            assert!(mm.statistics().cached_bytes > 0, "the first drop parks");
            let mut late = mm.allocate::<u32>(1000).unwrap();
            late.fill(7).unwrap();
            LATE.with(|l| *l.borrow_mut() = Some(late));
        })
    };
    worker.join().unwrap();
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    drop(mm);
    assert_eq!(sim.used(), 0);
}
