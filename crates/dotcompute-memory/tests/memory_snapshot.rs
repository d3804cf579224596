//! `MemoryManager::memory_snapshot`: segments and blocks of the device pool, consistent with
//! the statistics, and fragmentation visible after a free in the middle of a segment.

use dotcompute_memory::*;

const MIB: usize = 1 << 20;

fn manager() -> MemoryManager {
    MemoryManager::with_backend(CpuBackend::new(), ManagerOptions { maintenance_interval: None, ..Default::default() })
        .unwrap()
}

/// Blocks tile their segment; the totals add up.
fn check_consistent(s: &MemorySnapshot) {
    for seg in &s.segments {
        let mut next = 0;
        for b in &seg.blocks {
            assert_eq!(b.offset, next, "blocks of segment {} leave a gap or overlap: {seg:?}", seg.id);
            next += b.size;
        }
        assert_eq!(next, seg.size, "blocks do not cover segment {}: {seg:?}", seg.id);
    }
    let reserved: u64 = s.segments.iter().map(|g| g.size).sum();
    let free: u64 = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| b.free).map(|b| b.size).sum();
    let largest = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| b.free).map(|b| b.size).max().unwrap_or(0);
    assert_eq!((s.reserved_bytes, s.free_bytes, s.largest_free_block), (reserved, free, largest), "{s:#?}");
    assert_eq!(s.in_use_bytes + s.free_bytes, s.reserved_bytes);
    assert!(s.segments.windows(2).all(|w| w[0].size >= w[1].size), "largest segment first");
}

#[test]
fn an_idle_manager_holds_nothing() {
    let s = manager().memory_snapshot();
    assert_eq!(s.backend, "cpu");
    assert!(s.segments.is_empty());
    assert_eq!((s.reserved_bytes, s.in_use_bytes, s.free_bytes, s.front_cached_bytes), (0, 0, 0, 0));
    assert_eq!(s.fragmentation(), 0.0);
}

#[test]
fn a_hole_in_a_segment_shows_as_a_free_block_and_as_fragmentation() {
    let mm = manager();
    let a = mm.allocate::<u8>(2 * MIB).unwrap();
    let b = mm.allocate::<u8>(3 * MIB).unwrap();
    let c = mm.allocate::<u8>(2 * MIB).unwrap();
    let s = mm.memory_snapshot();
    check_consistent(&s);
    assert_eq!(s.segments.len(), 1, "medium requests share one segment: {s:#?}");
    let seg = &s.segments[0];
    let used: Vec<_> = seg.blocks.iter().filter(|b| !b.free).collect();
    assert_eq!(used.len(), 3, "{seg:?}");
    assert!(used[1].size >= 3 * MIB as u64);
    assert_eq!(s.reserved_bytes, mm.statistics().reserved_bytes);
    assert_eq!(s.fragmentation(), 0.0, "one free remainder: {s:#?}");

    // The middle buffer goes to the front cache first (still handed out by the arena) ...
    let hole = used[1].offset;
    drop(b);
    let s = mm.memory_snapshot();
    check_consistent(&s);
    assert!(s.front_cached_bytes >= 3 * MIB as u64, "{s:#?}");
    // ... and into the arena once the cache is trimmed: a hole between a and c.
    mm.trim_excess().unwrap();
    let s = mm.memory_snapshot();
    check_consistent(&s);
    assert_eq!(s.front_cached_bytes, 0);
    let freed = s.segments[0].blocks.iter().find(|blk| blk.offset == hole).unwrap();
    assert!(freed.free && freed.size >= 3 * MIB as u64, "{s:#?}");
    let expected = 1.0 - s.largest_free_block as f64 / s.free_bytes as f64;
    assert!(s.fragmentation() > 0.0 && (s.fragmentation() - expected).abs() < 1e-12, "{s:#?}");

    drop((a, c));
    mm.trim_excess().unwrap();
    let s = mm.memory_snapshot();
    assert!(s.segments.is_empty(), "an empty segment goes back to the backend: {s:#?}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["reserved_bytes"], 0);
    assert!(json["segments"].as_array().is_some_and(|a| a.is_empty()));
}

#[test]
fn small_buffers_parked_in_a_magazine_are_counted_there() {
    let mm = manager();
    drop(mm.allocate::<u8>(4096).unwrap());
    let s = mm.memory_snapshot();
    check_consistent(&s);
    assert_eq!(s.magazine_bytes, 4096, "{s:#?}");
    assert!(s.in_use_bytes >= 4096, "a parked block is still handed out by the arena: {s:#?}");
}
