//! Buffers dropped and allocated on threads at exit: thread-locals of the user destroyed before
//! or after the magazine's exit flush, a magazine started while thread-local destructors run,
//! the `thread_local` crate's thread id given back before a buffer is dropped or allocated, and
//! a thread that panics. Scenarios whose failure mode is an abort run in a child process.

use super::trim_and_check_all_released;
use crate::support::child::{in_child, test_name};
use crate::support::managers::quiet;
use dotcompute_memory::*;
use std::cell::RefCell;
use std::sync::Arc;

/// A buffer kept in a thread-local (a per-thread scratch buffer) and created lazily inside the
/// thread-local's first access is dropped by that thread-local's destructor at thread exit.
/// Its key registered its destructor before the statistics' thread-id guard (`thread_local`
/// crate), so the guard is destroyed first; a drop that then asked for the thread's statistics
/// shard would make `thread_local` take a new thread id and touch its destroyed guard, a panic
/// inside a TLS destructor: an abort. Run in a child process, so an abort fails this test
/// instead of killing the test binary.
#[test]
fn a_buffer_in_a_thread_local_can_be_dropped_at_thread_exit() {
    in_child(test_name!(a_buffer_in_a_thread_local_can_be_dropped_at_thread_exit), || {
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

/// A thread that never used the crate itself keeps a buffer (made by another thread) in a
/// thread-local, and takes its `thread_local`-crate thread id later, through an `ObjectPool`.
/// At exit the id's guard (registered after the thread-local) is destroyed first, so the
/// buffer's drop happens after the id was given back: the statistics must not look up a shard
/// then (a new id would be taken and the destroyed guard touched: a panic inside a TLS
/// destructor, which aborts the process).
#[test]
fn a_buffer_dropped_after_the_thread_id_was_given_back_does_not_abort() {
    in_child(test_name!(a_buffer_dropped_after_the_thread_id_was_given_back_does_not_abort), || {
        thread_local! {
            static HELD: RefCell<Option<UnifiedBuffer<u32>>> = const { RefCell::new(None) };
        }
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
        let pool = Arc::new(ObjectPool::builder(|| vec![0u8; 16]).build().unwrap());
        let mut b = mm.allocate::<u32>(256).unwrap();
        b.fill(3).unwrap();
        let worker = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                HELD.with(|h| *h.borrow_mut() = Some(b)); // registered first: destroyed last
                drop(pool.get()); // takes the thread id: its guard is destroyed before HELD
            })
        };
        worker.join().unwrap();
        let s = mm.statistics();
        assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
        assert_eq!(s.buffers_freed, 1, "{s:#?}");
        trim_and_check_all_released(mm, &sim);
    });
}

/// As above, but the late thread-local destructor allocates: a thread that never allocated
/// must take a `thread_local`-crate id then, after that crate gave its id back. The crate
/// panics doing so; the panic must not escape the destructor (that aborts the process): the
/// allocation succeeds, counted on the shared counters, and everything is released.
#[test]
fn an_allocation_after_the_thread_id_was_given_back_does_not_abort() {
    in_child(test_name!(an_allocation_after_the_thread_id_was_given_back_does_not_abort), || {
        struct AllocatesOnDrop(MemoryManager);
        impl Drop for AllocatesOnDrop {
            fn drop(&mut self) {
                let mut b = self.0.allocate::<u32>(1000).expect("allocation in a late destructor");
                b.fill(9).unwrap();
                assert!(b.as_slice().unwrap().iter().all(|&x| x == 9));
            }
        }
        thread_local! {
            static LATE: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
        }
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
        let pool = Arc::new(ObjectPool::builder(|| vec![0u8; 16]).build().unwrap());
        let worker = {
            let (pool, mm) = (pool.clone(), mm.clone());
            std::thread::spawn(move || {
                LATE.with(|l| *l.borrow_mut() = Some(AllocatesOnDrop(mm))); // destroyed last
                drop(pool.get()); // takes the thread id: its guard is destroyed before LATE
            })
        };
        worker.join().unwrap();
        let s = mm.statistics();
        assert_eq!((s.buffers_allocated, s.buffers_freed), (1, 1), "{s:#?}");
        assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
        trim_and_check_all_released(mm, &sim);
    });
}

/// A thread that allocated (its statistics are ready) but never dropped a buffer keeps buffers
/// in a thread-local registered after that: the thread-local is destroyed first, its drops
/// start a magazine (and register the exit flush) while thread-local destructors are running.
/// The flush must still run: nothing may stay parked in a dead thread's magazine.
#[test]
fn a_magazine_started_by_a_thread_local_destructor_is_handed_back() {
    in_child(test_name!(a_magazine_started_by_a_thread_local_destructor_is_handed_back), || {
        thread_local! {
            static HELD: RefCell<Vec<UnifiedBuffer<u8>>> = const { RefCell::new(Vec::new()) };
        }
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
        let worker = {
            let mm = mm.clone();
            std::thread::spawn(move || {
                let bufs: Vec<_> =
                    [100usize, 4096, 4096, 70_000].iter().map(|&n| mm.allocate::<u8>(n).unwrap()).collect();
                HELD.with(|h| *h.borrow_mut() = bufs);
                assert_eq!(mm.statistics().cached_bytes, 0, "nothing dropped yet, nothing parked");
            })
        };
        worker.join().unwrap();
        let s = mm.statistics();
        assert_eq!((s.active_allocations, s.active_bytes, s.buffers_freed), (0, 0, 4), "{s:#?}");
        assert_eq!(s.cached_bytes, s.reserved_bytes, "{s:#?}");
        trim_and_check_all_released(mm, &sim);
    });
}

/// A thread-local registered between the thread's statistics guard and the exit flush (the
/// thread allocated, then filled the thread-local, then dropped a buffer) is destroyed after
/// the flush: its buffers must not be parked in the emptied magazine (nothing would hand them
/// back), but released, and counted once.
#[test]
fn a_thread_local_dropped_after_the_exit_flush_is_not_parked() {
    in_child(test_name!(a_thread_local_dropped_after_the_exit_flush_is_not_parked), || {
        thread_local! {
            static HELD: RefCell<Vec<UnifiedBuffer<u8>>> = const { RefCell::new(Vec::new()) };
        }
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
        let worker = {
            let mm = mm.clone();
            std::thread::spawn(move || {
                let first = mm.allocate::<u8>(512).unwrap(); // statistics ready here
                let bufs: Vec<_> = (0..3).map(|_| mm.allocate::<u8>(2048).unwrap()).collect();
                HELD.with(|h| *h.borrow_mut() = bufs);
                drop(first); // the first park registers the exit flush, after HELD
                assert!(mm.statistics().cached_bytes >= 512);
            })
        };
        worker.join().unwrap();
        let s = mm.statistics();
        assert_eq!((s.active_allocations, s.active_bytes, s.buffers_freed), (0, 0, 4), "{s:#?}");
        assert_eq!(s.total_bytes_freed, 512 + 3 * 2048, "{s:#?}");
        assert_eq!(s.cached_bytes, s.reserved_bytes, "{s:#?}");
        trim_and_check_all_released(mm, &sim);
    });
}

/// A thread that never used the crate drops, from a thread-local destructor, buffers made by
/// another thread: its statistics, thread id and exit flush are all set up while destructors
/// run, and everything is still handed back and counted.
#[test]
fn a_fresh_thread_dropping_from_a_thread_local_at_exit_hands_everything_back() {
    in_child(test_name!(a_fresh_thread_dropping_from_a_thread_local_at_exit_hands_everything_back), || {
        thread_local! {
            static HELD: RefCell<Vec<UnifiedBuffer<f32>>> = const { RefCell::new(Vec::new()) };
        }
        let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
        let bufs: Vec<_> = [10usize, 300, 300, 5000].iter().map(|&n| mm.allocate::<f32>(n).unwrap()).collect();
        std::thread::spawn(move || HELD.with(|h| *h.borrow_mut() = bufs)).join().unwrap();
        let s = mm.statistics();
        assert_eq!((s.active_allocations, s.active_bytes, s.buffers_freed), (0, 0, 4), "{s:#?}");
        let cached = s.cached_bytes;
        // Nothing is left in the dead thread's magazine: trimming from here releases it all.
        assert!(mm.trim_excess().unwrap() >= cached.min(1), "{s:#?}");
        let s = mm.statistics();
        assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    });
}

/// A thread that panics with blocks parked still hands them back (thread-local destructors
/// run after unwinding).
#[test]
fn a_panicking_thread_hands_its_magazine_back() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            for n in [64usize, 5000, 300_000] {
                drop(mm.allocate::<u8>(n).unwrap());
            }
            assert!(mm.statistics().cached_bytes > 0);
            panic!("worker gives up (expected by the test)");
        })
    };
    assert!(worker.join().is_err());
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    trim_and_check_all_released(mm, &sim);
}
