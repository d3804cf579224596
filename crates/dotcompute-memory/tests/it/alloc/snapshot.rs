//! `MemoryManager::memory_snapshot`: segments and blocks of the device pool, which tile their
//! segments, are sorted, and agree with the statistics (reserved, cached, segment count) through
//! random workloads; fragmentation after a free in the middle of a segment; blocks parked in a
//! magazine; and, on a discrete backend, device memory only.

use super::{cpu_with, sim_used, sim_with, KIB, MIB};
use crate::support::managers::cpu;
use crate::support::rng::RngStar;
use crate::support::summary;
use dotcompute_memory::*;

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
    assert_eq!((s.device_reserved_bytes, s.free_bytes, s.largest_free_block), (reserved, free, largest), "{s:#?}");
    assert_eq!(s.in_use_bytes + s.free_bytes, s.device_reserved_bytes);
    assert!(s.segments.windows(2).all(|w| w[0].size >= w[1].size), "largest segment first");
}

/// Blocks tile their segments, totals add up, order and granularity hold, and (on a unified
/// backend, where every backend byte is device memory) the snapshot agrees with the statistics.
pub(super) fn check_snapshot(mm: &MemoryManager) -> MemorySnapshot {
    let s = mm.memory_snapshot();
    for seg in &s.segments {
        let mut next = 0;
        for b in &seg.blocks {
            assert_eq!(b.offset, next, "gap or overlap in segment {}: {seg:?}", seg.id);
            assert_eq!(b.offset % 256, 0, "offset off the 256-byte granule: {seg:?}");
            next += b.size;
        }
        assert_eq!(next, seg.size, "blocks do not cover segment {}: {seg:?}", seg.id);
        if !seg.splittable {
            assert_eq!(seg.blocks.len(), 1, "an unsplittable segment is one block: {seg:?}");
        }
        assert!(seg.blocks.windows(2).all(|w| !(w[0].free && w[1].free)), "uncoalesced free neighbours: {seg:?}");
    }
    assert!(
        s.segments
            .windows(2)
            .all(|w| (std::cmp::Reverse(w[0].size), w[0].id) < (std::cmp::Reverse(w[1].size), w[1].id)),
        "segments not largest first, ties by id: {s:#?}"
    );
    let reserved: u64 = s.segments.iter().map(|g| g.size).sum();
    let free: u64 = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| b.free).map(|b| b.size).sum();
    let largest = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| b.free).map(|b| b.size).max().unwrap_or(0);
    assert_eq!((s.device_reserved_bytes, s.free_bytes, s.largest_free_block), (reserved, free, largest), "{s:#?}");
    assert_eq!(s.in_use_bytes + s.free_bytes, s.device_reserved_bytes, "{s:#?}");
    // Blocks out of the arena are handed out or whole in the front cache.
    assert_eq!(s.pools.active_bytes.current + s.front_cached_bytes, s.in_use_bytes, "{s:#?}");
    assert_eq!(s.pools.active_bytes.current + s.pools.cached_bytes.current, s.device_reserved_bytes, "{s:#?}");
    assert!(s.front_cached_bytes <= s.in_use_bytes, "{s:#?}");
    assert!((0.0..=1.0).contains(&s.fragmentation()), "{s:#?}");
    let stats = mm.statistics();
    assert_eq!(stats.device_segments, s.segments.len() as u64, "{stats:#?}\n{s:#?}");
    if mm.backend().is_unified() {
        // (On discrete backends magazines hold host blocks, which are not in any segment.)
        assert!(s.front_cached_bytes + s.magazine_bytes <= s.in_use_bytes, "{s:#?}");
        assert_eq!(stats.reserved_bytes, s.device_reserved_bytes, "statistics vs snapshot: {stats:#?}\n{s:#?}");
        assert_eq!(
            stats.cached_bytes,
            s.free_bytes + s.front_cached_bytes + s.magazine_bytes,
            "cached = arena free + front cache + magazines: {stats:#?}\n{s:#?}"
        );
    }
    // The JSON form carries the same numbers.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["reserved_bytes"], s.device_reserved_bytes);
    assert_eq!(json["free_bytes"], s.free_bytes);
    assert_eq!(json["segments"].as_array().map(Vec::len), Some(s.segments.len()));
    s
}

#[test]
fn an_idle_manager_holds_nothing() {
    let s = cpu().memory_snapshot();
    assert_eq!(s.backend, "cpu");
    assert!(s.segments.is_empty());
    assert_eq!((s.device_reserved_bytes, s.in_use_bytes, s.free_bytes, s.front_cached_bytes), (0, 0, 0, 0));
    assert_eq!(s.fragmentation(), 0.0);
}

#[test]
fn a_hole_in_a_segment_shows_as_a_free_block_and_as_fragmentation() {
    let mm = cpu();
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
    assert_eq!(s.device_reserved_bytes, mm.statistics().reserved_bytes);
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
    let mm = cpu();
    drop(mm.allocate::<u8>(4096).unwrap());
    let s = mm.memory_snapshot();
    check_consistent(&s);
    assert_eq!(s.magazine_bytes, 4096, "{s:#?}");
    assert!(s.in_use_bytes >= 4096, "a parked block is still handed out by the arena: {s:#?}");
}

/// A random workload over every segment kind (small, shared large, own-segment large,
/// oversize) with drops, trims and maintenance: after every step the snapshot tiles its
/// segments, is sorted, and agrees with the statistics (reserved, cached, segment count).
#[test]
fn snapshots_stay_consistent_with_the_statistics_through_a_random_workload() {
    let mm = cpu_with(None, true);
    let mut rng = RngStar(42);
    let mut live: Vec<UnifiedBuffer<u8>> = Vec::new();
    for step in 0..250 {
        match rng.below(12) {
            0..=6 => {
                let len = match rng.below(10) {
                    0..=4 => 1 + rng.below(16 * KIB),
                    5..=6 => 64 * KIB + rng.below(MIB),
                    7..=8 => MIB + rng.below(9 * MIB),
                    _ => 11 * MIB + rng.below(20 * MIB),
                };
                live.push(mm.allocate::<u8>(len).unwrap());
                if live.len() > 40 {
                    let i = rng.below(live.len());
                    drop(live.swap_remove(i));
                }
            }
            7..=9 if !live.is_empty() => {
                let i = rng.below(live.len());
                drop(live.swap_remove(i));
            }
            10 => {
                mm.trim_excess().unwrap();
            }
            _ => {
                mm.run_maintenance();
            }
        }
        if step == 100 {
            // One oversize buffer: a segment of its own, never split.
            live.push(mm.allocate::<u8>(65 * MIB).unwrap());
            let s = check_snapshot(&mm);
            assert!(s.segments.iter().any(|g| !g.splittable && g.size >= 65 * MIB as u64), "{s:#?}");
        }
        check_snapshot(&mm);
    }
    drop(live);
    mm.trim_excess().unwrap();
    let s = check_snapshot(&mm);
    assert_eq!(s.device_reserved_bytes, 0, "{s:#?}");
}

/// On a discrete backend the snapshot shows device memory only: host parts are absent, the
/// reserved bytes equal the device's count, and the statistics' reserved bytes are more.
#[test]
fn a_snapshot_on_a_discrete_backend_shows_device_memory_only() {
    let mm = sim_with(64 * MIB, 128 * MIB);
    let host_only = mm.allocate::<u8>(3 * MIB).unwrap();
    let mut both = mm.allocate::<u8>(2 * MIB).unwrap();
    both.fill(1).unwrap();
    both.ensure_on_device().unwrap();
    let device_only = mm.allocate_device::<u8>(5 * MIB).unwrap();
    let s = check_snapshot(&mm);
    assert_eq!(s.backend, "sim");
    assert_eq!(s.device_reserved_bytes, sim_used(&mm), "{s:#?}");
    let in_use: u64 = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| !b.free).map(|b| b.size).sum();
    assert!(in_use >= 7 * MIB as u64 && in_use < 10 * MIB as u64, "device parts only: {s:#?}");
    assert!(mm.statistics().reserved_bytes >= s.device_reserved_bytes + 5 * MIB as u64, "host parts count there");
    drop((host_only, both, device_only));
    mm.trim_excess().unwrap();
    assert_eq!((check_snapshot(&mm).device_reserved_bytes, sim_used(&mm)), (0, 0));
}

#[test]
fn pool_usage_and_the_memory_summary_follow_segments_by_pool() {
    let mm = MemoryManager::with_backend(
        SimBackend::new(SimOptions::default().with_capacity(64 << 20)),
        ManagerOptions::default().with_maintenance_interval(None),
    )
    .unwrap();
    let mut small = mm.allocate::<u8>(4096).unwrap();
    small.ensure_on_device().unwrap();
    let mut large = mm.allocate::<u8>(8 << 20).unwrap();
    large.ensure_on_device().unwrap();
    let s = mm.memory_snapshot();
    assert_eq!((s.pools.small_segments.current, s.pools.large_segments.current), (1, 1));
    assert_eq!(s.pools.small_bytes.current, 2 << 20, "one 2 MiB small-pool segment");
    assert_eq!(s.pools.bytes.current, s.device_reserved_bytes);
    assert_eq!(s.segments.iter().filter(|g| g.small_pool).count(), 1);
    // Blocks handed out and the rest of each segment cached, per pool.
    assert_eq!((s.pools.small_active_bytes.current, s.pools.large_active_bytes.current), (4096, 8 << 20));
    assert_eq!((s.pools.small_cached_bytes.current, s.pools.large_cached_bytes.current), ((2 << 20) - 4096, 12 << 20));
    assert_eq!(s.pools.active_bytes.current + s.pools.cached_bytes.current, s.device_reserved_bytes);
    let peak = s.pools.bytes.current;
    drop((small, large));
    mm.trim_excess().unwrap();
    let s = mm.memory_snapshot();
    assert_eq!(s.pools.bytes.current, 0);
    assert_eq!((s.pools.bytes.peak, s.pools.bytes.allocated, s.pools.bytes.freed), (peak, peak, peak));
    assert_eq!((s.pools.segments.allocated, s.pools.segments.freed), (2, 2));
    let active = s.pools.active_bytes;
    assert_eq!(
        (active.current, active.peak, active.allocated, active.freed),
        (0, (8 << 20) + 4096, (8 << 20) + 4096, (8 << 20) + 4096)
    );
    let cached = s.pools.cached_bytes;
    assert_eq!((cached.current, cached.peak), (0, peak), "all of both segments once the blocks came back");
    assert_eq!(cached.allocated, peak + active.freed, "segments added and blocks given back");
    assert_eq!(cached.freed, peak + active.allocated, "blocks handed out and segments released");
    // A request the device cannot hold: counted once, after the pool's own retry.
    let mut huge = mm.allocate::<u8>(100 << 20).unwrap();
    assert!(matches!(huge.ensure_on_device(), Err(Error::OutOfMemory { .. })));
    let s = mm.memory_snapshot();
    assert_eq!(s.out_of_memory_errors, 1);
    assert!(s.segment_retries >= 1);
    let summary = mm.memory_summary();
    assert!(summary.contains("Out-of-memory errors: 1 "), "{summary}");
    let cells = summary::row(&summary, "Reserved device memory");
    let p = units::format_bytes_short(peak);
    assert_eq!(peak, 22 << 20, "a 2 MiB small-pool segment and a 20 MiB large-pool one");
    assert_eq!(cells[1..], ["0 B", p.as_str(), p.as_str(), p.as_str()], "{summary}");
    let active = summary::row(&summary, "Active device memory");
    assert_eq!(active[2], units::format_bytes_short((8 << 20) + 4096), "{summary}");
    assert_eq!(summary::row(&summary, "Cached device memory")[2], p, "{summary}");
    // The statistics serialise with the new fields, and older snapshots without them still load.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["pools"]["segments"]["allocated"], 2);
    let mut old = json.clone();
    for key in ["pools", "out_of_memory_errors", "segment_retries"] {
        old.as_object_mut().unwrap().remove(key);
    }
    let back: MemorySnapshot = serde_json::from_value(old).unwrap();
    assert_eq!(back.pools, PoolUsage::default());
}
