//! The device pool across threads: buffers freed on another thread than the one that made
//! them, threads exiting with regions cached, and exact statistics with per-thread counters.

use dotcompute_memory::*;
use std::sync::Arc;
use std::thread;

fn quiet() -> ManagerOptions {
    ManagerOptions { maintenance_interval: None, ..Default::default() }
}

fn sim_manager() -> (Arc<SimBackend>, MemoryManager) {
    let sim = Arc::new(SimBackend::new(SimOptions::default()));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
    (sim, mm)
}

fn device_buffer(mm: &MemoryManager, bytes: usize) -> UnifiedBuffer<u8> {
    let mut b = mm.allocate_device::<u8>(bytes).unwrap();
    b.ensure_on_device().unwrap();
    b
}

/// Nothing in use: everything reserved is cached, and trimming releases all of it.
fn assert_idle_and_trim(mm: &MemoryManager, sim: &SimBackend) {
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{s:#?}");
    assert_eq!(s.buffers_allocated, s.buffers_freed, "{s:#?}");
    assert_eq!(s.total_bytes_allocated, s.total_bytes_freed, "{s:#?}");
    assert_eq!(s.block_requests, s.pool_hits + s.backend_allocations, "{s:#?}");
    assert_eq!(s.reserved_bytes, s.cached_bytes, "{s:#?}");
    let released = mm.trim_excess().unwrap();
    assert_eq!(released, s.cached_bytes);
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes, s.device_segments), (0, 0, 0), "{s:#?}");
    assert_eq!(sim.used(), 0, "trimming returned every segment to the device");
}

#[test]
fn a_buffer_allocated_on_one_thread_is_dropped_on_another() {
    let (sim, mm) = sim_manager();
    // Warm the pool so the buffers below come from cached regions.
    drop(device_buffer(&mm, 4096));
    let buffers: Vec<_> = (0..16).map(|i| device_buffer(&mm, 256 << (i % 8))).collect();
    let s = mm.statistics();
    assert_eq!(s.active_allocations, 16);
    // The other thread frees them.
    thread::spawn(move || drop(buffers)).join().unwrap();
    let s = mm.statistics();
    assert_eq!(s.active_allocations, 0, "{s:#?}");
    assert!(s.cached_bytes > 0);
    // The regions freed by the other thread serve this one again: the device does not grow.
    let used = sim.used();
    let again: Vec<_> = (0..16).map(|i| device_buffer(&mm, 256 << (i % 8))).collect();
    assert_eq!(sim.used(), used, "the freed regions are reused, no new segment");
    drop(again);
    assert_idle_and_trim(&mm, &sim);
}

#[test]
fn a_thread_exits_with_cached_regions_then_trim_releases_them() {
    let (sim, mm) = sim_manager();
    let mm2 = mm.clone();
    thread::spawn(move || {
        for bytes in [256, 512, 4096, 40_000, 65536] {
            drop(device_buffer(&mm2, bytes));
        }
    })
    .join()
    .unwrap();
    let s = mm.statistics();
    assert!(s.cached_bytes >= 256 + 512 + 4096 + 40_000 + 65536, "{s:#?}");
    assert!(sim.used() > 0);
    assert_idle_and_trim(&mm, &sim);
}

#[test]
fn a_thread_exits_with_cached_regions_then_the_manager_drops() {
    let (sim, mm) = sim_manager();
    let mm2 = mm.clone();
    thread::spawn(move || {
        let held: Vec<_> = (0..8).map(|_| device_buffer(&mm2, 1024)).collect();
        drop(held);
        drop(device_buffer(&mm2, 65536));
    })
    .join()
    .unwrap();
    assert!(mm.statistics().cached_bytes >= 8 * 1024 + 65536);
    assert!(sim.used() > 0);
    drop(mm);
    assert_eq!(sim.used(), 0, "dropping the manager returned every segment");
}

#[test]
fn maintenance_releases_regions_freed_on_this_thread() {
    let (sim, mm) = sim_manager();
    drop(device_buffer(&mm, 4096));
    assert!(mm.statistics().cached_bytes > 0);
    // The first pass only ages what is cached; the second releases what stayed idle.
    mm.run_maintenance();
    mm.run_maintenance();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    assert_eq!(sim.used(), 0);
}

#[test]
fn statistics_are_exact_across_threads() {
    for cpu in [true, false] {
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = if cpu {
            MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap()
        } else {
            MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap()
        };
        let threads = 4u64;
        let per_thread = 300u64;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mm = mm.clone();
                thread::spawn(move || {
                    let mut bytes_total = 0u64;
                    let mut keep = Vec::new();
                    for i in 0..per_thread {
                        let bytes = 256usize << ((i + t) % 9); // 256 B ..= 64 KiB
                        bytes_total += bytes as u64;
                        let mut b = mm.allocate::<u8>(bytes).unwrap();
                        b.ensure_on_device().unwrap();
                        // Keep some alive a while so several regions per class are live at once.
                        if i % 3 == 0 {
                            keep.push(b);
                        }
                        if keep.len() > 12 {
                            keep.clear();
                        }
                    }
                    bytes_total
                })
            })
            .collect();
        let bytes: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let s = mm.statistics();
        assert_eq!(s.buffers_allocated, threads * per_thread, "{s:#?}");
        assert_eq!(s.buffers_freed, threads * per_thread, "{s:#?}");
        assert_eq!(s.total_bytes_allocated, bytes, "{s:#?}");
        assert!(s.peak_bytes > 0 && s.peak_bytes <= bytes, "{s:#?}");
        assert!(s.pool_hits > 0, "{s:#?}");
        if cpu {
            let s = mm.statistics();
            assert_eq!(s.reserved_bytes, s.cached_bytes, "{s:#?}");
            assert_eq!(mm.trim_excess().unwrap(), s.cached_bytes);
            assert_eq!(mm.statistics().reserved_bytes, 0);
        } else {
            assert_idle_and_trim(&mm, &sim);
        }
    }
}
