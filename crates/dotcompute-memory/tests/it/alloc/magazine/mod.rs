//! Per-thread magazines (`pool::magazine`): a small buffer dropped and allocated again on one
//! thread reuses the same block without the shared caches; parked blocks count as cached, are
//! released by `trim_excess`, and never keep a manager's memory after its last handle and buffer
//! are gone (or after the threads that parked them exit).

mod bounds;
mod closed_managers;
mod reuse;
mod statistics;
mod thread_exit;

use dotcompute_memory::*;

/// After `trim_excess` nothing stays cached or reserved, and once the manager is gone the
/// device holds nothing: no block was left in a magazine or lost.
fn trim_and_check_all_released(mm: MemoryManager, sim: &SimBackend) {
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes), (0, 0), "{s:#?}");
    drop(mm);
    assert_eq!(sim.used(), 0);
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
