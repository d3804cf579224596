//! Review of the per-thread magazine without drop glue (`pool::magazine`): thread-exit orders
//! (thread-locals of the user destroyed before or after the exit flush, a magazine restocked
//! while thread-local destructors run, the `thread_local` crate's thread id given back before a
//! buffer is dropped), closed managers, bounds, manager switching, discrete buffers with a
//! device part or a transfer in flight at drop, and statistics checked against a model.

use dotcompute_memory::*;
use std::cell::RefCell;
use std::sync::mpsc::channel;
use std::sync::Arc;

mod child;
use child::in_child;

fn quiet() -> ManagerOptions {
    ManagerOptions { maintenance_interval: None, ..Default::default() }
}

/// After `trim_excess` nothing stays cached or reserved, and once the manager is gone the
/// device holds nothing: no block was left in a magazine or lost.
fn trim_and_check_all_released(mm: MemoryManager, sim: &SimBackend) {
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    drop(mm);
    assert_eq!(sim.used(), 0);
}

/// A thread that never used the crate itself keeps a buffer (made by another thread) in a
/// thread-local, and takes its `thread_local`-crate thread id later, through an `ObjectPool`.
/// At exit the id's guard (registered after the thread-local) is destroyed first, so the
/// buffer's drop happens after the id was given back: the statistics must not look up a shard
/// then (a new id would be taken and the destroyed guard touched: a panic inside a TLS
/// destructor, which aborts the process).
#[test]
fn a_buffer_dropped_after_the_thread_id_was_given_back_does_not_abort() {
    in_child("a_buffer_dropped_after_the_thread_id_was_given_back_does_not_abort", || {
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
    in_child("an_allocation_after_the_thread_id_was_given_back_does_not_abort", || {
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
    in_child("a_magazine_started_by_a_thread_local_destructor_is_handed_back", || {
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
    in_child("a_thread_local_dropped_after_the_exit_flush_is_not_parked", || {
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
    in_child("a_fresh_thread_dropping_from_a_thread_local_at_exit_hands_everything_back", || {
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

/// Runs `trim_excess` on another thread: the shared caches are released but not this thread's
/// magazine (`trim_excess` empties only its caller's), so what stays cached afterwards is
/// exactly what this thread has parked. (It also recalls this thread's magazine: its next
/// allocations do not take from it, its next drop hands it back.)
fn trim_elsewhere(mm: &MemoryManager) {
    let mm = mm.clone();
    std::thread::spawn(move || {
        mm.trim_excess().unwrap();
    })
    .join()
    .unwrap();
}

/// At most 8 nodes per size class are parked; the rest of a burst of drops goes to the shared
/// cache, counted once. Includes discrete buffers with a device part at drop (released to the
/// device pool before parking, or with the node when it is not parked).
#[test]
fn a_full_slot_hands_the_rest_to_the_shared_cache() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let bufs: Vec<_> = (0..10)
        .map(|i| {
            let mut b = mm.allocate::<u8>(1000).unwrap(); // 1 KiB class
            if i % 2 == 0 {
                b.ensure_on_device().unwrap();
            }
            b
        })
        .collect();
    let allocated = mm.statistics().backend_allocations;
    drop(bufs);
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes, s.buffers_freed), (0, 0, 10), "{s:#?}");
    assert_eq!(s.cached_bytes, s.reserved_bytes, "{s:#?}");
    // All ten come back without the backend (8 from the magazine, 2 from the shared cache).
    let again: Vec<_> = (0..10).map(|_| mm.allocate::<u8>(900).unwrap()).collect();
    let s = mm.statistics();
    assert_eq!(s.backend_allocations, allocated, "{s:#?}");
    assert_eq!((s.active_allocations, s.active_bytes), (10, 10 * 900), "{s:#?}");
    drop(again);
    // Trimming from another thread releases the shared cache, not this thread's magazine.
    trim_elsewhere(&mm);
    let s = mm.statistics();
    assert_eq!(
        s.cached_bytes,
        8 * 1024,
        "8 host blocks stay parked, the other 2 and the device parts were in the shared caches: {s:#?}"
    );
    assert_eq!(s.reserved_bytes, s.cached_bytes, "{s:#?}");
    trim_and_check_all_released(mm, &sim);
}

/// The per-thread byte bound (`max_pool_bytes / 16`, here 16 KiB) is reached exactly and never
/// passed: two 8 KiB blocks are parked, the other two go to the shared cache.
#[test]
fn the_byte_bound_is_filled_exactly_and_not_passed() {
    let options = ManagerOptions { max_pool_bytes: 256 << 10, ..quiet() };
    let mm = MemoryManager::with_shared_backend(Arc::new(SimBackend::new(SimOptions::default())), options).unwrap();
    let bufs: Vec<_> = (0..4).map(|_| mm.allocate::<u8>(8192).unwrap()).collect();
    drop(bufs);
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (4 * 8192, 4 * 8192), "{s:#?}");
    trim_elsewhere(&mm);
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (16 << 10, 16 << 10), "{s:#?}");
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
}

/// Device memory parked in this thread's magazine is what an out-of-memory allocation needs:
/// the retry empties the magazine and the allocation succeeds.
#[test]
fn out_of_memory_empties_this_threads_magazine_and_retries() {
    let sim = Arc::new(SimBackend::new(SimOptions { capacity: 2 << 20, ..Default::default() }));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let parked: Vec<_> = (0..4).map(|_| mm.allocate_device::<u8>(512 << 10).unwrap()).collect();
    assert_eq!(sim.used(), 2 << 20);
    drop(parked);
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.cached_bytes), (0, 2 << 20), "the four regions are parked: {s:#?}");
    let big = mm.allocate_device::<u8>(1536 << 10).expect("the parked regions are given back for the retry");
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (1, 1536 << 10), "{s:#?}");
    drop(big);
    mm.trim_excess().unwrap();
    drop(mm);
    assert_eq!(sim.used(), 0);
}

/// A device-only buffer dropped with a download in flight (its future dropped unawaited): the
/// drop settles it, the downloaded host block becomes the host part and is what is parked (the
/// device part goes back to the pool); the next host allocation of that class reuses it.
#[test]
fn a_device_only_buffer_dropped_mid_download_parks_its_new_host_part() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let mut b = mm.allocate_device::<u32>(1000).unwrap();
    assert_eq!(b.state(), BufferState::DeviceOnly);
    let mut out = vec![0u32; 1000];
    drop(b.copy_to_async(&mut out));
    drop(b);
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    assert!(s.cached_bytes > 0 && s.cached_bytes <= s.reserved_bytes, "{s:#?}");
    let (allocs, hits) = (s.backend_allocations, s.pool_hits);
    let c = mm.allocate::<u32>(1000).unwrap();
    assert_eq!(c.state(), BufferState::HostOnly);
    let s = mm.statistics();
    assert_eq!((s.backend_allocations, s.pool_hits), (allocs, hits + 1), "the parked host block is reused: {s:#?}");
    drop(c);
    // Parked here, not in the shared cache: trimming from another thread leaves exactly it.
    trim_elsewhere(&mm);
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (4096, 4096), "{s:#?}");
    trim_and_check_all_released(mm, &sim);
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

/// Many short-lived threads, several at a time, each parking blocks of two managers in turn:
/// thread ids (and with them statistics shards) are reused by later threads, and each exit
/// flush must leave its shard's parked-bytes count at zero. Afterwards the statistics are exact
/// and trimming from here releases everything.
#[test]
fn many_short_lived_threads_leave_nothing_parked() {
    let (waves, width) = if cfg!(miri) { (2, 2) } else { (6, 4) };
    let sims: Vec<_> = (0..2).map(|_| Arc::new(SimBackend::new(SimOptions::default()))).collect();
    let mms: Vec<_> = sims.iter().map(|s| MemoryManager::with_shared_backend(s.clone(), quiet()).unwrap()).collect();
    for wave in 0..waves {
        // Joined one by one: `std::thread::scope` may return before a thread's thread-local
        // destructors (the exit flush) have run.
        let threads: Vec<_> = (0..width)
            .map(|t| {
                let mms = mms.clone();
                std::thread::spawn(move || {
                    for round in 0..3 {
                        let mm = &mms[(t + round + wave) % 2];
                        let bufs: Vec<_> = (0..3).map(|i| mm.allocate::<u16>(100 + 700 * i + t).unwrap()).collect();
                        drop(bufs);
                        let again = mm.allocate::<u16>(100 + t).unwrap();
                        drop(again);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for mm in &mms {
            let s = mm.statistics();
            assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
            assert_eq!(s.buffers_allocated, s.buffers_freed, "{s:#?}");
            assert_eq!(s.cached_bytes, s.reserved_bytes, "wave {wave}: {s:#?}");
        }
    }
    for (mm, sim) in mms.into_iter().zip(&sims) {
        mm.trim_excess().unwrap();
        let s = mm.statistics();
        assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "every exited thread's magazine went back: {s:#?}");
        // Each thread runs two rounds of 4 allocations on one manager and one on the other;
        // with an even width, half the threads favour each manager.
        assert_eq!(s.buffers_allocated, (waves * width * 6) as u64, "{s:#?}");
        drop(mm);
        assert_eq!(sim.used(), 0);
    }
}

/// Statistics checked against a model after every step of a pseudo-random mix of allocations
/// (all sizes: empty, parked classes, above the magazine bound), device-only buffers, device
/// copies, drops here and on another thread, and trims, over three managers (two discrete, one
/// unified) used in turn on one thread, so the magazine keeps switching owner and epoch.
#[test]
fn statistics_match_a_model_through_a_mixed_sequence() {
    struct Model {
        allocated: u64,
        bytes_allocated: u64,
        live: u64,
        live_bytes: u64,
        peak: u64,
    }
    let sims: Vec<_> = (0..2).map(|_| Arc::new(SimBackend::new(SimOptions::default()))).collect();
    let mut mms: Vec<_> =
        sims.iter().map(|s| MemoryManager::with_shared_backend(s.clone(), quiet()).unwrap()).collect();
    mms.push(MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap());
    let mut models: Vec<_> =
        (0..3).map(|_| Model { allocated: 0, bytes_allocated: 0, live: 0, live_bytes: 0, peak: 0 }).collect();
    let mut live: Vec<(usize, UnifiedBuffer<u8>)> = Vec::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    const SIZES: [usize; 10] = [0, 1, 500, 1000, 1024, 4096, 70_000, 1 << 20, (1 << 20) + 1, 3 << 20];
    let steps = if cfg!(miri) { 60 } else { 600 };
    for step in 0..steps {
        let m = next(3);
        match next(12) {
            0..=4 => {
                let n = SIZES[next(SIZES.len())];
                live.push((m, mms[m].allocate::<u8>(n).unwrap()));
                let model = &mut models[m];
                (model.allocated, model.bytes_allocated, model.live, model.live_bytes) = (
                    model.allocated + 1,
                    model.bytes_allocated + n as u64,
                    model.live + 1,
                    model.live_bytes + n as u64,
                );
                model.peak = model.peak.max(model.live_bytes);
            }
            5 => {
                let n = SIZES[1 + next(SIZES.len() - 1)];
                live.push((m, mms[m].allocate_device::<u8>(n).unwrap()));
                let model = &mut models[m];
                (model.allocated, model.bytes_allocated, model.live, model.live_bytes) = (
                    model.allocated + 1,
                    model.bytes_allocated + n as u64,
                    model.live + 1,
                    model.live_bytes + n as u64,
                );
                model.peak = model.peak.max(model.live_bytes);
            }
            6 if !live.is_empty() => {
                let i = next(live.len());
                live[i].1.ensure_on_device().unwrap();
            }
            7..=9 if !live.is_empty() => {
                let (m, b) = live.swap_remove(next(live.len()));
                models[m].live -= 1;
                models[m].live_bytes -= b.size_in_bytes() as u64;
                drop(b);
            }
            10 if !live.is_empty() => {
                let (m, b) = live.swap_remove(next(live.len()));
                models[m].live -= 1;
                models[m].live_bytes -= b.size_in_bytes() as u64;
                std::thread::spawn(move || drop(b)).join().unwrap();
            }
            11 => {
                mms[m].trim_excess().unwrap();
            }
            _ => {}
        }
        for (i, (mm, model)) in mms.iter().zip(&models).enumerate() {
            let s = mm.statistics();
            let got =
                (s.buffers_allocated, s.total_bytes_allocated, s.active_allocations, s.active_bytes, s.peak_bytes);
            let want = (model.allocated, model.bytes_allocated, model.live, model.live_bytes, model.peak);
            assert_eq!(got, want, "step {step}, manager {i}: {s:#?}");
            assert_eq!(s.buffers_freed, model.allocated - model.live, "step {step}, manager {i}: {s:#?}");
            assert!(s.cached_bytes <= s.reserved_bytes, "step {step}, manager {i}: {s:#?}");
        }
    }
    drop(live);
    for (i, mm) in mms.iter().enumerate() {
        mm.trim_excess().unwrap();
        let s = mm.statistics();
        assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "manager {i}: {s:#?}");
        assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "manager {i}: {s:#?}");
        assert_eq!(s.backend_frees, s.backend_allocations, "manager {i}: {s:#?}");
    }
    drop(mms);
    assert!(sims.iter().all(|s| s.used() == 0));
}

/// Device regions of one size class need not have one size: the arena hands out a whole free
/// block when the remainder is too small to split (here a 1280-byte hole serves a 1024-byte
/// request). Nodes parked in one magazine slot then hold blocks of different sizes, and taking
/// them must subtract each one's own size from the magazine's bytes: otherwise the count
/// underflows (a panic with overflow checks) or stays above zero, and `cached_bytes` is wrong.
#[test]
fn nodes_of_one_class_with_different_block_sizes_are_counted_exactly() {
    for bigger_parked_last in [false, true] {
        let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
        // Live region bytes = reserved - cached: the accounting this test relies on.
        let check = |live: u64, what: &str| {
            let s = mm.statistics();
            assert_eq!(
                s.reserved_bytes - s.cached_bytes,
                live,
                "{what} (bigger parked last: {bigger_parked_last}): {s:#?}"
            );
        };
        let a = mm.allocate::<u8>(1280).unwrap(); // a 1280-byte region at the segment's start
        let fence = mm.allocate::<u8>(1024).unwrap(); // keeps a's hole from merging with the rest
        check(2304, "two regions");
        drop(a);
        mm.trim_excess().unwrap(); // a's region goes back to the arena: a 1280-byte hole
        let whole = mm.allocate::<u8>(1000).unwrap(); // best fit: the hole, not split (256 < 512)
        let exact = mm.allocate::<u8>(1024).unwrap(); // same size class, from the rest of the segment
        check(1024 + 1280 + 1024, "a whole 1280-byte block for the 1024-byte class");
        // Parked in one slot: a 1280-byte and a 1024-byte block, in either order.
        if bigger_parked_last {
            drop(exact);
            drop(whole);
        } else {
            drop(whole);
            drop(exact);
        }
        check(1024, "both parked");
        let p = mm.allocate::<u8>(1024).unwrap();
        let q = mm.allocate::<u8>(1024).unwrap();
        check(1024 + 1280 + 1024, "both taken back from the magazine");
        drop((p, q, fence));
        check(0, "all dropped");
        mm.trim_excess().unwrap();
        let s = mm.statistics();
        assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    }
}
