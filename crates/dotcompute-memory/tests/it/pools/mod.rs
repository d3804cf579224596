//! Object and array pools: `ObjectPool` (one thread, many threads, eviction, threads without a
//! slot and thread exit) and `ArrayPool`, and limits of both up to `usize::MAX`.

mod array_pool;
mod limits;
mod object_eviction;
mod object_pool;
mod thread_exit;
mod unslotted;

use dotcompute_memory::ObjectPoolStatistics;

/// The identities `ObjectPoolStatistics` documents for a pool at rest.
fn assert_identities(s: &ObjectPoolStatistics) {
    assert_eq!(s.hits + s.misses, s.gets, "{s:#?}");
    assert_eq!(s.created, s.misses + s.min_size, "{s:#?}");
    assert_eq!(s.in_use, s.gets - s.returned - s.detached, "{s:#?}");
    assert_eq!(
        s.current_size,
        s.created - s.in_use - s.detached - s.dropped_invalid - s.dropped_full - s.evicted,
        "{s:#?}"
    );
    assert!(s.current_size <= s.max_size, "{s:#?}");
}
