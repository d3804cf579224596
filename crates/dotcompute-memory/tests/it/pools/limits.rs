//! Pool limits as bounds, not sizes: `ObjectPool` and `ArrayPool` accept every limit up to
//! `usize::MAX` without panicking and without allocating in proportion to it.
//!
//! The global allocator of this test binary, declared here, records the largest single
//! allocation each thread makes (and otherwise is the system allocator), so a test can check
//! that building a pool, or returning the first array to a class, allocates only a small, fixed
//! amount whatever the limits say. The record is per thread: tests on other threads do not
//! disturb it.

use dotcompute_memory::pool::array::MAX_ARRAYS_PER_CLASS;
use dotcompute_memory::pool::object::{DEFAULT_THREAD_CACHE, MAX_THREAD_CACHE};
use dotcompute_memory::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, recording the largest allocation of the current thread.
struct Recording;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: allocations during thread teardown are not recorded.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call forwards to `System` with the caller's arguments; recording a size touches
// only a const-initialised thread-local `Cell`, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Runs `f` and returns its result with the largest single allocation this thread made in it.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|largest| largest.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

/// Generous for the structures involved (a thread's stack, a batch, a queue of at most
/// `MAX_ARRAYS_PER_CLASS` slots), tiny next to anything sized by a limit of 2^40.
const SMALL: usize = 256 << 10;

// ---- ObjectPool ----

/// Every combination of huge `max_size` and `thread_cache` builds, serves and keeps objects;
/// the thread cache is clamped to `MAX_THREAD_CACHE`, and nothing big is allocated.
#[test]
fn object_pool_accepts_the_largest_limits_without_allocating_for_them() {
    for (max_size, thread_cache) in [
        (usize::MAX, usize::MAX),
        (1 << 40, DEFAULT_THREAD_CACHE),
        (1 << 40, 1 << 40),
        (usize::MAX, 0),
        (usize::MAX, MAX_THREAD_CACHE + 1),
    ] {
        let case = format!("max_size {max_size}, thread_cache {thread_cache}");
        let (pool, largest) = largest_allocation(|| {
            let pool = ObjectPool::builder(|| [7u64; 4]).max_size(max_size).thread_cache(thread_cache).build().unwrap();
            drop((pool.get(), pool.get(), pool.get()));
            pool
        });
        assert!(largest <= SMALL, "{case}: an allocation of {largest} bytes");
        assert_eq!(pool.max_size(), max_size, "{case}");
        assert_eq!(pool.thread_cache(), thread_cache.min(MAX_THREAD_CACHE), "{case}");
        let s = pool.statistics();
        assert_eq!((s.gets, s.misses, s.returned, s.current_size, s.dropped_full), (3, 3, 3, 3, 0), "{case}: {s:?}");
        assert_eq!(s.max_size, max_size as u64, "{case}");
        assert_eq!(*pool.get(), [7; 4], "{case}");
    }
}

/// With `thread_cache(usize::MAX)` a thread caches at most `MAX_THREAD_CACHE` objects and
/// passes the rest to the shared tier; a huge `max_size` keeps every one of them.
#[test]
fn a_clamped_thread_cache_spills_to_the_shared_tier_and_keeps_everything() {
    let pool = ObjectPool::builder(|| 0u32).max_size(usize::MAX).thread_cache(usize::MAX).build().unwrap();
    let n = 3 * MAX_THREAD_CACHE;
    drop((0..n).map(|_| pool.get()).collect::<Vec<_>>());
    let s = pool.statistics();
    assert_eq!((s.created, s.current_size, s.dropped_full), (n as u64, n as u64, 0), "{s:?}");
    // Another thread reaches what this one spilled: at least all but one stack's worth.
    let from_other = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let held: Vec<_> = (0..n).map(|_| pool.get()).collect();
                let misses = pool.statistics().misses;
                drop(held);
                misses
            })
            .join()
            .unwrap()
    });
    assert!(from_other - n as u64 <= MAX_THREAD_CACHE as u64, "{from_other} misses: the spill was not shared");
}

/// `min_size` near a huge `max_size` prewarms exactly that many objects, in batches (no vector
/// of `min_size` elements first).
#[test]
fn prewarming_with_huge_limits_creates_min_size_objects() {
    let (pool, largest) = largest_allocation(|| {
        ObjectPool::builder(|| [1u8; 16]).max_size(usize::MAX).min_size(5000).thread_cache(usize::MAX).build().unwrap()
    });
    // 5000 objects of 16 bytes in one vector would be 80 KB plus stamps; batches stay at
    // MAX_THREAD_CACHE / 2 objects.
    assert!(largest < 5000 * 16, "an allocation of {largest} bytes");
    let s = pool.statistics();
    assert_eq!((s.created, s.current_size, s.min_size), (5000, 5000, 5000), "{s:?}");
}

// ---- ArrayPool ----

/// Unbounded and huge per-class limits: the first return to a class creates its queue with at
/// most `MAX_ARRAYS_PER_CLASS` slots, never panics (a guard's drop), and later rents reuse it.
#[test]
fn array_pool_accepts_the_largest_per_class_limits() {
    for (arrays, bytes) in [(usize::MAX, usize::MAX), (1 << 40, usize::MAX), (usize::MAX, 1 << 50), (1 << 40, 1 << 50)]
    {
        let case = format!("max_arrays_per_class {arrays}, max_bytes_per_class {bytes}");
        let pool = ArrayPool::<u64>::new(
            ArrayPoolOptions::default().with_max_arrays_per_class(arrays).with_max_bytes_per_class(bytes),
        );
        let a = pool.rent(100).unwrap();
        let ((), largest) = largest_allocation(|| drop(a));
        assert!(largest <= SMALL, "{case}: returning the first array allocated {largest} bytes");
        let h = pool.rent_raw(100).unwrap();
        pool.return_raw(h).unwrap();
        let s = pool.statistics();
        assert_eq!((s.rents, s.hits, s.returns, s.arrays_held, s.dropped), (2, 1, 2, 1, 0), "{case}: {s:?}");
        assert_eq!(pool.options().max_arrays_per_class, arrays, "{case}: the options are kept as given");
    }
}

/// A class keeps at most `MAX_ARRAYS_PER_CLASS` arrays whatever the options allow; the rest
/// are freed and counted as dropped.
#[test]
fn a_class_keeps_at_most_max_arrays_per_class() {
    let pool = ArrayPool::<u8>::new(
        ArrayPoolOptions::default().with_max_arrays_per_class(usize::MAX).with_max_bytes_per_class(usize::MAX),
    );
    let extra = 10;
    drop((0..MAX_ARRAYS_PER_CLASS + extra).map(|_| pool.rent(16).unwrap()).collect::<Vec<_>>());
    let s = pool.statistics();
    assert_eq!((s.arrays_held, s.dropped), (MAX_ARRAYS_PER_CLASS as u64, extra as u64), "{s:?}");
    assert_eq!(s.bytes_held, (MAX_ARRAYS_PER_CLASS * 16) as u64, "{s:?}");
}

/// A guard dropped while its thread unwinds, to a class with an unbounded limit, goes back to
/// the pool (a panic in that drop would abort the process).
#[test]
fn a_guard_dropped_during_unwinding_with_unbounded_limits_is_kept() {
    let pool = ArrayPool::<f32>::new(
        ArrayPoolOptions::default().with_max_arrays_per_class(usize::MAX).with_max_bytes_per_class(usize::MAX),
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut a = pool.rent(1000).unwrap();
        a[0] = 1.0;
        panic!("unwinding with a rented array");
    }));
    assert!(r.is_err(), "the closure panicked");
    let s = pool.statistics();
    assert_eq!((s.returns, s.arrays_held), (1, 1), "{s:?}");
    assert_eq!(pool.rent(1000).unwrap()[0], 1.0, "the same array is rented again");
}
