//! Manager statistics: allocations and frees balance, pool hits, transfers per direction.

use crate::support::{options, Ctx};
use dotcompute_memory::*;

pub fn allocations_and_frees_balance(ctx: &Ctx) {
    let mm = &ctx.mm;
    let sizes = [0usize, 1, 100, 4096, 100_000];
    let mut live = Vec::new();
    let mut total = 0u64;
    let mut peak = 0u64;
    for round in 0..3 {
        for (i, &n) in sizes.iter().enumerate() {
            let mut b = mm.allocate::<u32>(n).unwrap();
            b.fill(round).unwrap();
            if i % 2 == 0 {
                b.ensure_on_device().unwrap();
            }
            total += 4 * n as u64;
            live.push(b);
        }
        let active: u64 = live.iter().map(|b| b.size_in_bytes() as u64).sum();
        peak = peak.max(active);
        let s = mm.statistics();
        assert_eq!(s.active_allocations, live.len() as u64, "{}", ctx.at());
        assert_eq!(s.active_bytes, active, "{}", ctx.at());
        assert_eq!(mm.diagnostics().live_count(), live.len() as u64);
        // Drop every other buffer, oldest first.
        let mut k = 0;
        live.retain(|_| {
            k += 1;
            k % 2 == 0
        });
    }
    drop(live);
    let s = mm.statistics();
    let at = ctx.at();
    assert_eq!(s.buffers_allocated, 15, "{at}");
    assert_eq!(s.buffers_freed, 15, "{at}");
    assert_eq!(s.active_allocations, 0, "{at}");
    assert_eq!((s.total_bytes_allocated, s.total_bytes_freed, s.active_bytes), (total, total, 0), "{at}");
    assert_eq!(s.peak_bytes, peak, "{at}");
    assert_eq!(s.block_requests, s.pool_hits + s.backend_allocations, "{at}");
    assert_eq!(s.reserved_bytes, s.cached_bytes, "{at}: nothing in use, so all reserved memory is cached");
    let released = mm.trim_excess().unwrap();
    assert_eq!(released, s.cached_bytes, "{at}");
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{at}");
    assert_eq!(s.backend_frees, s.backend_allocations, "{at}");
    // The snapshot serialises (the CLI prints it as JSON).
    let json = serde_json::to_string(&s).unwrap();
    let back: MemoryStatistics = serde_json::from_str(&json).unwrap();
    assert_eq!(back.buffers_allocated, 15);
    assert_eq!(back.backend, ctx.name);
}

pub fn pool_hits_are_counted(ctx: &Ctx) {
    let mm = &ctx.mm;
    for _ in 0..10 {
        let mut b = mm.allocate::<u8>(10_000).unwrap();
        b.ensure_on_device().unwrap();
    }
    let s = mm.statistics();
    let at = ctx.at();
    // Unified: one block per buffer. Discrete: a host block and a device block per buffer.
    let blocks_per_buffer = if ctx.unified() { 1 } else { 2 };
    assert_eq!(s.backend_allocations, blocks_per_buffer, "{at}: {s:#?}");
    assert_eq!(s.pool_hits, 9 * blocks_per_buffer, "{at}");
    assert_eq!(s.block_requests, 10 * blocks_per_buffer, "{at}");
    assert!((s.pool_hit_rate - 0.9).abs() < 1e-9, "{at}: {}", s.pool_hit_rate);
    assert!((s.allocation_reduction - 0.9).abs() < 1e-9, "{at}: {}", s.allocation_reduction);
    // A size in another class misses the per-class cache. On the device side it is carved from
    // the pool's existing 2 MiB segment (no backend call); a discrete buffer's new host block
    // is a fresh host allocation.
    drop(mm.allocate::<u8>(100_000).unwrap());
    let fresh = if ctx.unified() { 0 } else { 1 };
    assert_eq!(mm.statistics().backend_allocations, blocks_per_buffer + fresh, "{at}");
    // Without pooling nothing hits and nothing stays cached.
    let Ok(plain) = MemoryManager::with_backend_name(ctx.name, options().with_enable_pooling(false)) else {
        return;
    };
    for _ in 0..5 {
        let mut b = plain.allocate::<u8>(10_000).unwrap();
        b.ensure_on_device().unwrap();
    }
    let s = plain.statistics();
    assert_eq!(s.pool_hits, 0, "{at}");
    assert_eq!(s.backend_allocations, 5 * blocks_per_buffer, "{at}");
    assert_eq!(s.backend_frees, s.backend_allocations, "{at}");
    assert_eq!(s.cached_bytes, 0, "{at}");
}

pub fn transfers_are_counted_per_direction(ctx: &Ctx) {
    let mm = &ctx.mm;
    let at = ctx.at();
    let mut a = mm.allocate_from(&[7u8; 1000]).unwrap();
    a.ensure_on_device().unwrap();
    a.mark_device_dirty().unwrap();
    a.ensure_on_host().unwrap();
    let mut b = mm.allocate::<u8>(1000).unwrap();
    b.copy_from_buffer(&a).unwrap();
    b.slice_mut(0..10).unwrap().copy_from_buffer(&a.slice(990..).unwrap()).unwrap();
    let s = mm.statistics();
    if ctx.unified() {
        assert_eq!((s.host_to_device.count, s.device_to_host.count), (0, 0), "{at}");
    } else {
        assert_eq!((s.host_to_device.count, s.host_to_device.bytes), (1, 1000), "{at}: {:?}", s.host_to_device);
        assert_eq!((s.device_to_host.count, s.device_to_host.bytes), (1, 1000), "{at}: {:?}", s.device_to_host);
    }
    assert_eq!((s.device_to_device.count, s.device_to_device.bytes), (2, 1010), "{at}: {:?}", s.device_to_device);
    // Per-buffer metrics agree with the manager's.
    let (ma, mb) = (a.metrics(), b.metrics());
    assert_eq!(ma.host_to_device + mb.host_to_device, s.host_to_device.count, "{at}");
    assert_eq!(ma.device_to_host + mb.device_to_host, s.device_to_host.count, "{at}");
    assert_eq!(mb.device_to_device, 2, "{at}");
    assert_eq!(mb.bytes_transferred, 1010, "{at}");
    assert_eq!(b.to_vec().unwrap(), [7u8; 1000]);
}
