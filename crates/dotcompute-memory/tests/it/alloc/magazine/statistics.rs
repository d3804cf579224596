//! The sharded statistics with magazines: peaks with buffers freed on other threads, buffers of
//! odd shapes crossing threads, many short-lived threads reusing statistics shards, and every
//! counter checked against a model through a mixed sequence over three managers.

use crate::support::managers::quiet;
use dotcompute_memory::*;
use std::sync::Arc;

/// `peak_bytes` is the highest `active_bytes` seen. At most 10 MiB are ever live here, while the
/// allocating thread's +10 MiB and the freeing thread's -10 MiB both sit unfolded in their own
/// shards (below the 16 MiB batch): the next 1 MiB allocation must not count 0 + 11 MiB as a
/// peak.
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

/// A buffer allocated from one thread's magazine, moved to another thread and dropped there,
/// goes back with the manager reference it took over (that thread never allocated, so it parks
/// nothing: its drops go to the shared caches, see `crate::thread_exit`): statistics stay
/// exact, and everything is released once both threads are done. Includes zero-length,
/// DeviceOnly and odd-sized element buffers.
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
