//! Expandable segments (`ManagerOptions::expandable_segments`): one reserved range that grows by
//! mapping 2 MiB granules under the blocks handed out. Data round trips on sim and cpu; freed
//! memory serves any later request without new memory (where fixed segments need more); trim
//! unmaps what no block uses; out of memory, the memory limit and a backend without virtual
//! memory are clear errors.

use super::MIB;
use crate::support::managers::quiet;
use crate::support::summary;
use dotcompute_memory::*;
use std::sync::Arc;

fn expandable_sim(options: SimOptions) -> (Arc<SimBackend>, MemoryManager) {
    let sim = Arc::new(SimBackend::new(options));
    let mm = MemoryManager::with_shared_backend(sim.clone(), quiet().with_expandable_segments(true)).unwrap();
    (sim, mm)
}

#[test]
fn data_round_trips_through_expandable_segments_on_sim_and_cpu() {
    let managers = [
        expandable_sim(SimOptions::default()).1,
        MemoryManager::with_backend(CpuBackend::new(), quiet().with_expandable_segments(true)).unwrap(),
    ];
    for mm in managers {
        let name = mm.backend().name();
        let mut live = Vec::new();
        for (i, n) in [100usize, 4096, 300_000, 3 * MIB + 5, 17, 9 * MIB].into_iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
            let mut b = mm.allocate_from(&data).unwrap();
            b.ensure_on_device().unwrap();
            b.mark_device_dirty().unwrap();
            assert_eq!(b.to_vec().unwrap(), data, "{name}: {n} bytes");
            live.push((b, data));
        }
        live.remove(2);
        live.remove(0);
        let mut again = mm.allocate_from(&vec![9u8; 2 * MIB]).unwrap();
        again.mark_device_dirty().unwrap();
        for (b, data) in &live {
            assert_eq!(&b.to_vec().unwrap(), data, "{name}: the others are untouched");
        }
        let s = mm.memory_snapshot();
        assert_eq!(s.device_reserved_bytes % (2 * MIB as u64), 0, "{name}: whole granules: {s}");
        assert_eq!(s.in_use_bytes + s.free_bytes, s.device_reserved_bytes, "{name}: {s}");
        // The segments are the stretches of mapped memory: they add up to what is held, their
        // free blocks to the free bytes, and the largest of those is the largest free block.
        let sizes: u64 = s.segments.iter().map(|seg| seg.size).sum();
        assert_eq!(sizes, s.device_reserved_bytes, "{name}: {s}");
        let free: Vec<u64> = s.segments.iter().flat_map(|seg| &seg.blocks).filter(|b| b.free).map(|b| b.size).collect();
        assert_eq!(free.iter().sum::<u64>(), s.free_bytes, "{name}: {s}");
        assert_eq!(free.iter().copied().max().unwrap_or(0), s.largest_free_block, "{name}: {s}");
        for seg in &s.segments {
            assert_eq!(seg.blocks.iter().map(|b| b.size).sum::<u64>(), seg.size, "{name}: {s}");
            for pair in seg.blocks.windows(2) {
                assert_eq!(pair[0].offset + pair[0].size, pair[1].offset, "{name}: blocks of a stretch touch: {s}");
            }
        }
    }
}

/// Forty 1 MiB blocks freed, then one 30 MiB request: fixed segments keep forty small-pool
/// segments cached and need a new large one; the expandable range serves it from the granules
/// the small blocks left mapped, and maps nothing more.
#[test]
fn freed_memory_serves_a_larger_request_without_holding_more() {
    let workload = |mm: &MemoryManager| -> (u64, u64) {
        let small: Vec<UnifiedBuffer<u8>> =
            (0..40).map(|_| mm.allocate_for::<u8>(MIB, AccessHint::Device).unwrap()).collect();
        let after_small = mm.memory_snapshot().device_reserved_bytes;
        drop(small);
        let big = mm.allocate_for::<u8>(30 * MIB, AccessHint::Device).unwrap();
        let after_big = mm.memory_snapshot().device_reserved_bytes;
        drop(big);
        (after_small, after_big)
    };
    let fixed = MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap();
    let (_, fixed_big) = workload(&fixed);
    let (sim, expandable) = expandable_sim(SimOptions::default());
    let (small, big) = workload(&expandable);
    assert_eq!(small, 40 * MIB as u64, "forty 1 MiB blocks, back to back, in twenty 2 MiB granules");
    assert_eq!(big, 40 * MIB as u64, "the 30 MiB block in the freed granules, nothing more mapped");
    assert!(fixed_big >= 70 * MIB as u64, "fixed segments held {fixed_big} bytes");
    assert!(sim.virtual_memory_operations() > 0);
    assert_eq!(sim.used() as u64, expandable.memory_snapshot().device_reserved_bytes, "the device agrees");
}

/// Freed granules stay mapped as cached memory up to the pool's bound (`max_pool_bytes`);
/// beyond it they are unmapped, and without pooling at once.
#[test]
fn freed_granules_stay_cached_up_to_the_pool_bound() {
    let cases =
        [(quiet(), 64), (quiet().with_max_pool_bytes(16 * MIB as u64), 16), (quiet().with_enable_pooling(false), 0)];
    for (options, kept) in cases {
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = MemoryManager::with_shared_backend(sim.clone(), options.with_expandable_segments(true)).unwrap();
        let blocks: Vec<UnifiedBuffer<u8>> =
            (0..16).map(|_| mm.allocate_for::<u8>(4 * MIB, AccessHint::Device).unwrap()).collect();
        assert_eq!(mm.memory_snapshot().device_reserved_bytes, 64 * MIB as u64);
        drop(blocks);
        let s = mm.memory_snapshot();
        assert_eq!(s.device_reserved_bytes, kept * MIB as u64, "{s}");
        assert_eq!(sim.used() as u64, s.device_reserved_bytes, "the device agrees");
        assert_eq!(mm.statistics().cached_bytes, s.device_reserved_bytes);
        assert_eq!(s.largest_free_block, s.device_reserved_bytes, "the cached granules are one free stretch: {s}");
    }
}

/// The maintenance pass ages cached granules as it does fixed segments: the first pass after
/// a free keeps them, the second unmaps what stayed idle through it.
#[test]
fn maintenance_unmaps_granules_that_stayed_idle_through_a_pass() {
    let (sim, mm) = expandable_sim(SimOptions::default());
    drop(mm.allocate_for::<u8>(4 * MIB, AccessHint::Device).unwrap());
    assert_eq!(sim.used(), 4 * MIB);
    mm.run_maintenance();
    assert_eq!(sim.used(), 4 * MIB, "freed during this interval: still cached");
    mm.run_maintenance();
    assert_eq!(sim.used(), 0, "idle through a whole interval: unmapped");
    assert_eq!(mm.memory_snapshot().device_reserved_bytes, 0);
}

/// A workload that frees a layer's buffers and allocates them again maps nothing the second
/// time: the freed granules stay mapped, cached for the next layer.
#[test]
fn a_layer_freed_and_allocated_again_reuses_its_granules() {
    let (sim, mm) = expandable_sim(SimOptions::default());
    let _weights: Vec<UnifiedBuffer<u8>> =
        (0..4).map(|_| mm.allocate_for::<u8>(16 * MIB, AccessHint::Device).unwrap()).collect();
    let mut operations = Vec::new();
    for _ in 0..4 {
        let layer: Vec<UnifiedBuffer<u8>> =
            (0..3).map(|_| mm.allocate_for::<u8>(4 * MIB, AccessHint::Device).unwrap()).collect();
        drop(layer);
        operations.push(sim.virtual_memory_operations());
    }
    assert!(operations.windows(2).all(|w| w[0] == w[1]), "map or unmap calls after the first pass: {operations:?}");
    assert_eq!(mm.memory_snapshot().device_reserved_bytes, 76 * MIB as u64, "64 MiB in use and the layer's 12 MiB");
}

#[test]
fn trimming_unmaps_the_granules_no_block_uses() {
    let (sim, mm) = expandable_sim(SimOptions::default());
    let keep = mm.allocate_for::<u8>(MIB, AccessHint::Device).unwrap();
    let freed: Vec<UnifiedBuffer<u8>> =
        (0..8).map(|_| mm.allocate_for::<u8>(4 * MIB, AccessHint::Device).unwrap()).collect();
    drop(freed);
    let before = mm.memory_snapshot();
    assert!(before.device_reserved_bytes >= 10 * MIB as u64, "the granule under `keep` and idle ones: {before}");
    mm.trim_excess().unwrap();
    let after = mm.memory_snapshot();
    assert_eq!(after.device_reserved_bytes, 2 * MIB as u64, "only the granule under `keep`: {after}");
    assert_eq!(sim.used() as u64, after.device_reserved_bytes, "the device agrees");
    assert_eq!(mm.statistics().cached_bytes, after.free_bytes);
    drop(keep);
    drop(mm);
    assert_eq!(sim.used(), 0, "a dropped manager returns the reservation");
}

#[test]
fn running_out_of_device_memory_or_the_limit_is_an_error_that_changes_nothing() {
    let (_, mm) = expandable_sim(SimOptions::default().with_capacity(64 * MIB));
    let a = mm.allocate_for::<u8>(40 * MIB, AccessHint::Device).unwrap();
    let mut b = mm.allocate_from(&[5u8; 30 * MIB]).unwrap();
    let err = b.ensure_on_device().unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { backend: "sim", .. }), "{err:?}");
    assert_eq!(b.state(), BufferState::HostOnly);
    assert_eq!(mm.memory_snapshot().out_of_memory_errors, 1);
    drop(a);
    b.ensure_on_device().unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![5u8; 30 * MIB], "fits once the first is freed");

    let limited = MemoryManager::with_backend(
        SimBackend::new(SimOptions::default()),
        quiet().with_expandable_segments(true).with_device_memory_limit(Some(8 * MIB as u64)),
    )
    .unwrap();
    let _first = limited.allocate_for::<u8>(4 * MIB, AccessHint::Device).unwrap();
    let err = limited.allocate_for::<u8>(6 * MIB, AccessHint::Device).unwrap_err();
    assert!(matches!(err, Error::MemoryLimitExceeded { limit, .. } if limit == 8 * MIB as u64), "{err:?}");
    assert!(limited.memory_snapshot().device_reserved_bytes <= 8 * MIB as u64);
}

#[test]
fn a_backend_without_virtual_memory_refuses_the_option() {
    let err = MemoryManager::with_backend(
        SimBackend::new(SimOptions::default().with_virtual_memory(false)),
        quiet().with_expandable_segments(true),
    )
    .unwrap_err();
    match &err {
        Error::InvalidArgument { option: "ManagerOptions::expandable_segments", value, .. } => {
            assert_eq!(value, "true, on backend `sim`")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    #[cfg(feature = "opencl")]
    if let Ok(backend) = backend::open("opencl") {
        let err = MemoryManager::with_shared_backend(backend, quiet().with_expandable_segments(true)).unwrap_err();
        assert!(err.to_string().contains("OpenCL has no such API"), "{err}");
    }
}

#[test]
fn the_simulator_refuses_access_to_unmapped_parts_of_a_reservation() {
    let sim = SimBackend::new(SimOptions::default());
    let range = sim.reserve_address_space(8 * MIB).unwrap();
    let err = sim.write(&range, 0, &[1; 16]).unwrap_err();
    assert!(matches!(err, Error::InvalidHandle { backend: "sim", .. }), "{err:?}");
    sim.map_memory(&range, 2 * MIB, 2 * MIB).unwrap();
    assert_eq!(sim.used(), 2 * MIB);
    sim.write(&range, 2 * MIB, &[1; 16]).unwrap();
    let err = sim.read(&range, 4 * MIB - 8, &mut [0; 16]).unwrap_err();
    assert!(matches!(err, Error::InvalidHandle { .. }), "crosses into an unmapped granule: {err:?}");
    assert!(matches!(sim.map_memory(&range, 2 * MIB, 2 * MIB), Err(Error::InvalidArgument { .. })));
    assert!(matches!(sim.map_memory(&range, MIB, 2 * MIB), Err(Error::InvalidArgument { .. })));
    sim.unmap_memory(&range, 2 * MIB, 2 * MIB).unwrap();
    assert_eq!(sim.used(), 0);
    sim.free(range).unwrap();
}

/// The summary of an expandable manager counts mapped memory only: the reserved range's
/// unmapped address space is neither a segment's size nor free memory.
#[test]
fn the_memory_summary_of_expandable_segments_shows_mapped_memory() {
    let (_, mm) = expandable_sim(SimOptions::default());
    let mut buffers: Vec<_> = [MIB, 3 * MIB, 512 << 10].into_iter().map(|n| mm.allocate::<u8>(n).unwrap()).collect();
    for b in &mut buffers {
        b.ensure_on_device().unwrap();
    }
    buffers.remove(1);
    let s = mm.memory_snapshot();
    let text = mm.memory_summary();
    let bytes = units::format_bytes_short;
    assert_eq!(summary::row(&text, "Reserved device memory")[1], bytes(s.device_reserved_bytes), "{text}");
    assert_eq!(summary::row(&text, "free blocks in segments")[1], bytes(s.free_bytes), "{text}");
    assert_eq!(s.pools.active_bytes.current + s.pools.cached_bytes.current, s.device_reserved_bytes, "{text}");
    assert_eq!(s.pools.active_bytes.peak, (4 * MIB + (512 << 10)) as u64, "all three blocks at once: {text}");
    assert!(s.free_bytes <= mm.statistics().cached_bytes, "free segment memory is cached memory: {text}");
    let table: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("Segments")).skip(3).collect();
    assert_eq!(table.len(), s.segments.len(), "{text}");
    for seg in &s.segments {
        assert!(seg.size <= s.device_reserved_bytes, "{text}");
    }
}
