//! The magazine's bounds: at most 8 nodes per size class, a per-thread byte bound filled exactly,
//! nothing parked under a pool bound below the smallest block; out of memory empties this
//! thread's magazine; discrete buffers with a device part or a download in flight at drop; and
//! nodes of one class holding blocks of different sizes.

use super::{trim_and_check_all_released, trim_elsewhere};
use crate::support::managers::quiet;
use dotcompute_memory::*;
use std::sync::Arc;

/// With a pool bound so small that the per-thread cap is below the smallest block, nothing is
/// parked and statistics match the no-magazine behaviour.
#[test]
fn a_tiny_pool_bound_parks_nothing_it_cannot_hold() {
    let options = quiet().with_max_pool_bytes(256); // cap 16 bytes
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
    let options = quiet().with_max_pool_bytes(256 << 10);
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
    let sim = Arc::new(SimBackend::new(SimOptions::default().with_capacity(2 << 20)));
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
