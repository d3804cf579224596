//! How memory is taken and kept: the device pool (segments, blocks, caching), the per-thread
//! magazines, the device memory limit, and snapshots of the pool.

mod device_pool;
mod expandable;
mod magazine;
mod memory_limit;
mod snapshot;

use crate::support::managers::quiet;
use dotcompute_memory::*;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// A cpu manager with an optional device memory limit, pooling on or off.
fn cpu_with(limit: Option<usize>, pooling: bool) -> MemoryManager {
    let options = quiet().with_enable_pooling(pooling).with_device_memory_limit(limit.map(|l| l as u64));
    MemoryManager::with_backend(CpuBackend::new(), options).unwrap()
}

/// A manager on a simulated device of `capacity` bytes, allowed `limit` of them.
fn sim_with(limit: usize, capacity: usize) -> MemoryManager {
    MemoryManager::with_backend(
        SimBackend::new(SimOptions::default().with_capacity(capacity)),
        quiet().with_device_memory_limit(Some(limit as u64)),
    )
    .unwrap()
}

/// Device bytes the simulator has handed out (this manager is its only user).
fn sim_used(mm: &MemoryManager) -> u64 {
    let info = mm.backend().memory_info();
    info.total - info.free
}
