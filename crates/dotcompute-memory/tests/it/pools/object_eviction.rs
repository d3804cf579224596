//! `EvictionPolicy::IdleTime` with passes made by hand: gets and returns read no clock, so an
//! object is evicted by the first pass that runs at least the idle time after the first pass
//! following its return; one pass after the idle time is not enough.

use dotcompute_memory::*;
use std::time::Duration;

const IDLE: Duration = Duration::from_millis(20);
const MARGIN: Duration = Duration::from_millis(5);

/// Both tiers: the shared one alone (`thread_cache(0)`) and the calling thread's stack.
fn pools() -> [ObjectPool<u64>; 2] {
    let build = |cache| {
        ObjectPool::builder(|| 0u64).thread_cache(cache).eviction(EvictionPolicy::IdleTime(IDLE)).build().unwrap()
    };
    [build(0), build(dotcompute_memory::pool::object::DEFAULT_THREAD_CACHE)]
}

#[test]
fn the_first_pass_after_the_idle_time_only_starts_the_clock() {
    for pool in pools() {
        drop(pool.get());
        std::thread::sleep(IDLE * 2);
        // Idle long enough, but no pass began between the return and now: nothing is provably
        // idle for IDLE, whatever the timing.
        let first = pool.maintain();
        assert_eq!((first.evicted, first.current_size), (0, 1), "{pool:?}");
        std::thread::sleep(IDLE + MARGIN);
        let second = pool.maintain();
        assert_eq!((second.evicted, second.current_size), (1, 0), "{pool:?}");
        let s = pool.statistics();
        assert_eq!((s.evicted, s.current_size), (1, 0), "{s:?}");
    }
}

#[test]
fn return_pass_wait_pass_evicts_at_the_second_pass() {
    for pool in pools() {
        drop(pool.get());
        assert_eq!(pool.maintain().evicted, 0, "{pool:?}");
        std::thread::sleep(IDLE + MARGIN);
        let report = pool.maintain();
        assert_eq!((report.evicted, report.current_size), (1, 0), "{pool:?}");
    }
}

#[test]
fn an_object_returned_after_a_pass_waits_for_the_next_one() {
    for pool in pools() {
        let held = pool.get();
        assert_eq!(pool.maintain().evicted, 0);
        std::thread::sleep(IDLE + MARGIN);
        drop(held);
        // The pass that began before this return does not count for it.
        assert_eq!(pool.maintain().evicted, 0, "{pool:?}");
        std::thread::sleep(IDLE + MARGIN);
        assert_eq!(pool.maintain().evicted, 1, "{pool:?}");
    }
}
