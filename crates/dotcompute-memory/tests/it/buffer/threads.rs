//! Many threads, one manager: allocation, use and drop from several threads at once must end
//! with zero live buffers and statistics that balance; buffers move between threads.

use dotcompute_memory::*;
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use BufferState::*;

use crate::support::managers::quiet;
use crate::support::rng::Rng;

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<MemoryManager>();
    send::<UnifiedBuffer<f32>>();
    send::<UnifiedBuffer<u8>>();
};

/// Totals one worker saw, to compare with the manager's statistics.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    buffers: u64,
    bytes: u64,
}

/// One worker: allocates buffers of assorted sizes, moves them through every state, checks
/// their contents, and drops them in a shuffled order (some only at the end).
fn worker(mm: MemoryManager, seed: u64, iterations: usize) -> Tally {
    let mut rng = Rng(seed | 1);
    let mut tally = Tally::default();
    let mut held: Vec<(UnifiedBuffer<u32>, u32)> = Vec::new();
    for i in 0..iterations {
        let len = match rng.below(4) {
            0 => 0,
            1 => 1 + rng.below(16) as usize,
            2 => 100 + rng.below(400) as usize,
            _ => 4000 + rng.below(20_000) as usize,
        };
        let tag = (seed as u32).wrapping_mul(1000).wrapping_add(i as u32);
        let mut b = mm.allocate::<u32>(len).unwrap();
        tally.buffers += 1;
        tally.bytes += 4 * len as u64;
        b.fill(tag).unwrap();
        match rng.below(4) {
            0 => b.ensure_on_device().unwrap(),
            1 => b.mark_device_dirty().unwrap(),
            2 => {
                // A device copy from another live buffer of this thread, when one fits.
                if let Some((src, src_tag)) = held.iter().find(|(s, _)| s.len() == len) {
                    b.copy_from_buffer(src).unwrap();
                    assert_eq!(b.state(), DeviceDirty);
                    let t = *src_tag;
                    b.synchronize().unwrap();
                    // Tags are per buffer, so the copy's result differs from what `fill` wrote.
                    assert_ne!(t, tag);
                    assert!(b.as_slice().unwrap().iter().all(|&x| x == t), "device copy of thread {seed}");
                    b.fill(tag).unwrap();
                    assert!(b.as_slice().unwrap().iter().all(|&x| x == tag), "copy then fill");
                    assert!(src.as_slice().unwrap().iter().all(|&x| x == t), "source changed");
                }
            }
            _ => pollster::block_on(b.synchronize_async()).unwrap(),
        }
        assert!(b.to_vec().unwrap().iter().all(|&x| x == tag), "thread {seed} iteration {i}");
        if rng.below(3) == 0 {
            held.push((b, tag));
        }
        if held.len() > 6 {
            let (victim, victim_tag) = held.swap_remove(rng.below(held.len() as u64) as usize);
            assert!(victim.as_slice().unwrap().iter().all(|&x| x == victim_tag));
        }
    }
    for (b, tag) in held {
        assert!(b.to_vec().unwrap().iter().all(|&x| x == tag));
    }
    tally
}

fn check_balanced(mm: &MemoryManager, expected: Tally) {
    let s = mm.statistics();
    assert_eq!(s.active_allocations, 0, "{s:#?}");
    assert_eq!(s.active_bytes, 0);
    assert_eq!(s.buffers_allocated, expected.buffers);
    assert_eq!(s.buffers_freed, expected.buffers);
    assert_eq!(s.total_bytes_allocated, expected.bytes);
    assert_eq!(s.total_bytes_freed, expected.bytes);
    assert!(s.peak_bytes > 0 && s.peak_bytes <= expected.bytes);
    assert_eq!(s.block_requests, s.pool_hits + s.backend_allocations);
    assert!(s.pool_hits > 0, "with pooling on, some requests must have been served from the pool");
    // Nothing is in use, so everything still obtained from the backend sits in the cache.
    assert_eq!(s.reserved_bytes, s.cached_bytes);
    assert_eq!(mm.diagnostics().live_count(), 0);
    assert_eq!(mm.diagnostics().live_bytes(), 0);
    assert!(mm.diagnostics().live_buffers().is_empty(), "{}", mm.diagnostics().leak_report());
    let released = mm.trim_excess().unwrap();
    assert_eq!(released, s.cached_bytes);
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0));
    assert_eq!(s.backend_frees, s.backend_allocations, "every backend allocation was freed once");
}

fn run_workers(mm: &MemoryManager, threads: u64, iterations: usize) -> Tally {
    let start = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mm = mm.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                worker(mm, 0x9e37_79b9 + t * 7919, iterations)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .fold(Tally::default(), |a, b| Tally { buffers: a.buffers + b.buffers, bytes: a.bytes + b.bytes })
}

#[test]
fn threads_share_a_cpu_manager() {
    let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
    let tally = run_workers(&mm, 4, 800);
    check_balanced(&mm, tally);
}

#[test]
fn threads_share_a_sim_manager() {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    let tally = run_workers(&mm, 4, 800);
    check_balanced(&mm, tally);
    assert_eq!(sim.used(), 0, "all device memory returned to the simulated device");
}

#[test]
fn threads_contend_on_a_small_pool() {
    // A pool too small for the working set: blocks are cached, refused and freed concurrently.
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet().with_max_pool_bytes(64 << 10)).unwrap();
    let tally = run_workers(&mm, 4, 200);
    let s = mm.statistics();
    assert!(s.cached_bytes <= 2 * (64 << 10), "host and device caches each hold at most max_pool_bytes");
    check_balanced(&mm, tally);
    assert_eq!(sim.used(), 0);
}

#[test]
fn threads_share_a_manager_without_pooling() {
    let mm = MemoryManager::with_backend_name("sim", quiet().with_enable_pooling(false)).unwrap();
    let tally = run_workers(&mm, 3, 100);
    let s = mm.statistics();
    assert_eq!(s.pool_hits, 0);
    assert_eq!(s.cached_bytes, 0);
    assert_eq!(s.active_allocations, 0);
    assert_eq!(s.buffers_allocated, tally.buffers);
    assert_eq!(s.total_bytes_freed, tally.bytes);
    assert_eq!(s.backend_frees, s.backend_allocations);
    assert_eq!(s.reserved_bytes, 0);
}

#[test]
fn buffers_move_between_threads() {
    for mm in [MemoryManager::cpu(), MemoryManager::sim(SimOptions::default())] {
        let (to_worker, worker_rx) = mpsc::channel::<UnifiedBuffer<f64>>();
        let (to_main, main_rx) = mpsc::channel::<UnifiedBuffer<f64>>();
        let worker_mm = mm.clone();
        let worker = thread::spawn(move || {
            let scratch = worker_mm.allocate_from(&[0.5f64; 64]).unwrap();
            for mut b in worker_rx {
                // Arrives HostDirty or HostOnly; leaves device-dirty with new contents.
                assert!(matches!(b.state(), HostOnly | HostDirty), "{:?}", b.state());
                let first = b.as_slice().unwrap()[0];
                b.synchronize().unwrap();
                b.slice_mut(32..64).unwrap().copy_from_buffer(&scratch.slice(0..32).unwrap()).unwrap();
                assert_eq!(b.state(), DeviceDirty);
                assert_eq!(b.as_slice().unwrap()[0], first);
                b.mark_device_dirty().unwrap();
                to_main.send(b).unwrap();
            }
        });
        for i in 0..20 {
            let mut b = mm.allocate::<f64>(64).unwrap();
            b.fill(i as f64).unwrap();
            if i % 2 == 1 {
                b.ensure_on_device().unwrap();
                b.as_mut_slice().unwrap()[1] = -1.0;
            }
            to_worker.send(b).unwrap();
            let b = main_rx.recv().unwrap();
            assert_eq!(b.state(), DeviceDirty);
            let v = b.to_vec().unwrap();
            assert_eq!(v[0], i as f64);
            assert_eq!(v[1], if i % 2 == 1 { -1.0 } else { i as f64 });
            assert!(v[32..].iter().all(|&x| x == 0.5));
            if i % 3 == 0 {
                // Dropped on yet another thread.
                thread::spawn(move || drop(b)).join().unwrap();
            }
        }
        drop(to_worker);
        worker.join().unwrap();
        let s = mm.statistics();
        assert_eq!(s.active_allocations, 0);
        assert_eq!(s.buffers_allocated, 21);
        assert_eq!(s.total_bytes_freed, 21 * 64 * 8);
    }
}

#[test]
fn buffers_outlive_their_manager_handle_on_another_thread() {
    let mm = MemoryManager::sim(SimOptions::default());
    let mut b = mm.allocate_from(&[1u16, 2, 3]).unwrap();
    b.mark_device_dirty().unwrap();
    let stats_handle = mm.clone();
    drop(mm);
    let b = thread::spawn(move || {
        assert_eq!(b.to_vec().unwrap(), [1, 2, 3]);
        b
    })
    .join()
    .unwrap();
    drop(b);
    assert_eq!(stats_handle.statistics().active_allocations, 0);
}

#[test]
fn host_views_are_shared_and_split_across_scoped_threads() {
    for mm in [MemoryManager::cpu(), MemoryManager::sim(SimOptions::default())] {
        let mut b = mm.allocate::<u64>(4096).unwrap();
        b.fill(0).unwrap();
        b.mark_device_dirty().unwrap();
        b.synchronize().unwrap();
        // Disjoint mutable chunks of one host view, written by several threads.
        let host = b.as_mut_slice().unwrap();
        thread::scope(|s| {
            for (c, chunk) in host.chunks_mut(1024).enumerate() {
                s.spawn(move || {
                    for (i, x) in chunk.iter_mut().enumerate() {
                        *x = (c * 1024 + i) as u64;
                    }
                });
            }
        });
        assert_eq!(b.state(), HostDirty);
        b.synchronize().unwrap();
        // One shared read-only view, read by several threads.
        let view = b.as_slice().unwrap();
        let sums: Vec<u64> = thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|t| s.spawn(move || view[t * 1024..(t + 1) * 1024].iter().sum())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(sums.iter().sum::<u64>(), (0..4096u64).sum::<u64>());
        assert_eq!(b.state(), Synchronized);
    }
}

#[test]
fn a_buffer_behind_a_mutex_serves_several_threads() {
    let mm = MemoryManager::sim(SimOptions::default());
    let shared = Arc::new(Mutex::new(mm.allocate_zeroed::<u32>(256).unwrap()));
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let shared = shared.clone();
            thread::spawn(move || {
                for round in 0..50u32 {
                    let mut b = shared.lock().unwrap();
                    b.slice_mut(t as usize * 64..(t as usize + 1) * 64).unwrap().fill(round + 1).unwrap();
                    if round % 5 == 0 {
                        b.synchronize().unwrap();
                        b.mark_device_dirty().unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let b = Arc::try_unwrap(shared).unwrap().into_inner().unwrap();
    assert!(b.to_vec().unwrap().iter().all(|&x| x == 50));
    drop(b);
    assert_eq!(mm.statistics().active_allocations, 0);
}
