//! ObjectPool and ArrayPool: correctness on one and many threads, bounds, eviction, statistics
//! identities, and bad input.

use dotcompute_memory::pool::array::{array_class, MIN_CLASS_LEN};
use dotcompute_memory::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A tracked object: unique id, an "in use" flag, and a ledger of how often each id was dropped.

#[derive(Default)]
struct Ledger {
    next: AtomicU64,
    drops: Mutex<HashMap<u64, u32>>,
}

impl Ledger {
    fn created(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }
    fn dropped(&self) -> u64 {
        self.drops.lock().unwrap().values().map(|&n| u64::from(n)).sum()
    }
    /// Every created object dropped exactly once.
    fn assert_all_dropped_once(&self) {
        let drops = self.drops.lock().unwrap();
        assert_eq!(drops.len() as u64, self.created(), "some objects were never dropped");
        for (id, n) in drops.iter() {
            assert_eq!(*n, 1, "object {id} dropped {n} times");
        }
    }
}

struct Tracked {
    id: u64,
    pool_tag: u32,
    in_use: AtomicBool,
    payload: Vec<u8>,
    ledger: Arc<Ledger>,
}

impl Tracked {
    fn new(ledger: &Arc<Ledger>, pool_tag: u32) -> Self {
        Tracked {
            id: ledger.next.fetch_add(1, Ordering::SeqCst),
            pool_tag,
            in_use: AtomicBool::new(false),
            payload: Vec::new(),
            ledger: ledger.clone(),
        }
    }
    /// Marks the object taken; fails if someone else holds it.
    fn claim(&self) {
        assert!(!self.in_use.swap(true, Ordering::SeqCst), "object {} handed to two holders at once", self.id);
    }
    fn release(&self) {
        assert!(self.in_use.swap(false, Ordering::SeqCst), "object {} released twice", self.id);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        *self.ledger.drops.lock().unwrap().entry(self.id).or_insert(0) += 1;
    }
}

fn tracked_pool(ledger: &Arc<Ledger>) -> ObjectPoolBuilder<Tracked> {
    let l = ledger.clone();
    ObjectPool::builder(move || Tracked::new(&l, 0))
}

/// The identities of `ObjectPoolStatistics` at rest.
fn assert_identities(s: &ObjectPoolStatistics) {
    assert_eq!(s.hits + s.misses, s.gets, "{s:?}");
    assert_eq!(s.created, s.misses + s.min_size, "{s:?}");
    assert_eq!(s.in_use, s.gets - s.returned - s.detached, "{s:?}");
    assert_eq!(
        s.current_size,
        s.created - s.in_use - s.detached - s.dropped_invalid - s.dropped_full - s.evicted,
        "{s:?}"
    );
    assert!(s.current_size <= s.max_size, "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// ObjectPool: bad input

#[test]
fn builder_rejects_max_size_zero() {
    let err = ObjectPool::builder(|| 0u32).max_size(0).build().unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { option: "max_size", value, .. } if value == "0"), "{err}");
}

#[test]
fn builder_rejects_min_above_max() {
    let err = ObjectPool::builder(|| 0u32).max_size(10).min_size(20).build().unwrap_err();
    match &err {
        Error::InvalidArgument { option: "min_size", value, .. } => {
            assert!(value.contains("20") && value.contains("10"), "{err}");
        }
        other => panic!("wrong error: {other}"),
    }
    // Equal is fine, and creates exactly min_size objects.
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let pool = ObjectPool::builder(move || m.fetch_add(1, Ordering::SeqCst)).max_size(10).min_size(10).build().unwrap();
    assert_eq!(made.load(Ordering::SeqCst), 10);
    assert_eq!(pool.statistics().current_size, 10);
}

#[test]
fn builder_rejects_zero_maintenance_interval() {
    let err = ObjectPool::builder(|| 0u32).maintenance_interval(Duration::ZERO).build().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { option: "maintenance_interval", .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// ObjectPool: single thread

#[test]
fn min_size_is_prewarmed_and_served_first() {
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger).min_size(5).max_size(8).build().unwrap();
    assert_eq!(ledger.created(), 5);
    let held: Vec<_> = (0..5).map(|_| pool.get()).collect();
    assert_eq!(ledger.created(), 5, "pre-warmed objects served the first gets");
    let sixth = pool.get();
    assert_eq!(ledger.created(), 6);
    let s = pool.statistics();
    assert_eq!((s.gets, s.hits, s.misses, s.created, s.in_use), (6, 5, 1, 6, 6));
    assert_identities(&s);
    drop(held);
    drop(sixth);
    assert_identities(&pool.statistics());
}

#[test]
fn max_size_bounds_idle_objects() {
    for thread_cache in [0, 1, 2, 16] {
        let ledger = Arc::new(Ledger::default());
        let pool = tracked_pool(&ledger).max_size(4).thread_cache(thread_cache).build().unwrap();
        let held: Vec<_> = (0..10).map(|_| pool.get()).collect();
        drop(held);
        let s = pool.statistics();
        assert_eq!(s.current_size, 4, "thread_cache {thread_cache}: {s:?}");
        assert_eq!(s.dropped_full, 6, "thread_cache {thread_cache}: {s:?}");
        assert_eq!(ledger.dropped(), 6);
        assert_identities(&s);
        // The 4 kept are reused.
        let again: Vec<_> = (0..4).map(|_| pool.get()).collect();
        assert_eq!(pool.statistics().misses, 10, "thread_cache {thread_cache}");
        drop(again);
        drop(pool);
        ledger.assert_all_dropped_once();
    }
}

#[test]
fn validate_drops_invalid_objects_and_reset_cleans_valid_ones() {
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger)
        .reset(|o| o.payload.clear())
        .validate(|o| o.payload.capacity() <= 64)
        .max_size(16)
        .build()
        .unwrap();
    let mut a = pool.get();
    let mut b = pool.get();
    let (a_id, b_id) = (a.id, b.id);
    a.payload.extend_from_slice(&[1; 10]);
    b.payload.extend_from_slice(&[2; 1000]); // grows past the validation limit
    drop(a);
    drop(b);
    let s = pool.statistics();
    assert_eq!(s.dropped_invalid, 1, "{s:?}");
    assert_eq!(s.current_size, 1);
    assert_eq!(ledger.drops.lock().unwrap().get(&b_id), Some(&1), "the invalid object was dropped");
    let again = pool.get();
    assert_eq!(again.id, a_id, "the valid object came back");
    assert!(again.payload.is_empty(), "reset ran on return");
    assert!(again.payload.capacity() >= 10, "reset kept the allocation");
    drop(again);
    assert_identities(&pool.statistics());
}

#[test]
fn detach_keeps_the_object() {
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger).build().unwrap();
    let obj = Pooled::detach(pool.get());
    let s = pool.statistics();
    assert_eq!((s.detached, s.in_use, s.current_size), (1, 0, 0));
    assert_identities(&s);
    drop(pool);
    assert_eq!(ledger.dropped(), 0, "the pool does not own a detached object");
    drop(obj);
    ledger.assert_all_dropped_once();
}

#[test]
fn metrics_off_still_tracks_size() {
    let pool = ObjectPool::builder(|| [0u8; 16]).metrics(false).build().unwrap();
    drop((pool.get(), pool.get()));
    let s = pool.statistics();
    assert_eq!((s.gets, s.returned, s.current_size), (0, 0, 2));
}

#[test]
fn pools_on_one_thread_keep_their_own_objects() {
    let ledger = Arc::new(Ledger::default());
    let (l1, l2) = (ledger.clone(), ledger.clone());
    let p1 = ObjectPool::builder(move || Tracked::new(&l1, 1)).build().unwrap();
    let p2 = ObjectPool::builder(move || Tracked::new(&l2, 2)).build().unwrap();
    for round in 0..50 {
        let a: Vec<_> = (0..round % 7 + 1).map(|_| p1.get()).collect();
        let b: Vec<_> = (0..round % 5 + 1).map(|_| p2.get()).collect();
        assert!(a.iter().all(|o| o.pool_tag == 1));
        assert!(b.iter().all(|o| o.pool_tag == 2));
    }
    drop((p1, p2));
    ledger.assert_all_dropped_once();
}

#[test]
fn statistics_serialize_with_the_derived_rates() {
    let pool = ObjectPool::builder(|| 1u64).min_size(1).build().unwrap();
    for _ in 0..4 {
        drop(pool.get());
    }
    let s = pool.statistics();
    assert_eq!((s.gets, s.hits, s.created), (4, 4, 1));
    assert!((s.hit_rate - 1.0).abs() < 1e-12);
    assert!((s.allocation_reduction - 0.75).abs() < 1e-12, "{s:?}");
    let json = serde_json::to_value(s).unwrap();
    for key in ["gets", "hits", "misses", "created", "returned", "dropped_invalid", "evicted", "current_size"] {
        assert!(json.get(key).is_some(), "missing {key}: {json}");
    }
    assert_eq!(json["hit_rate"], 1.0);
    assert_eq!(json["allocation_reduction"], 0.75);
}

// ---------------------------------------------------------------------------------------------
// ObjectPool: eviction

#[test]
fn maintain_evicts_objects_idle_past_the_limit_down_to_min_size() {
    let idle = Duration::from_millis(20);
    let ledger = Arc::new(Ledger::default());
    let pool =
        tracked_pool(&ledger).max_size(100).min_size(3).eviction(EvictionPolicy::IdleTime(idle)).build().unwrap();
    let held: Vec<_> = (0..50).map(|_| pool.get()).collect();
    drop(held);
    assert_eq!(pool.statistics().current_size, 50);
    // First pass: none of them can be shown to be idle for 20 ms yet (they came back in the
    // current tick).
    assert_eq!(pool.maintain().evicted, 0);
    std::thread::sleep(idle + Duration::from_millis(10));
    let report = pool.maintain();
    assert_eq!(report.evicted, 47, "{report:?}");
    assert_eq!(report.current_size, 3);
    // An object returned after that pass is not evicted by the next one, whatever the timing.
    drop(pool.get());
    let report = pool.maintain();
    assert_eq!(report.evicted, 0, "{report:?}");
    let s = pool.statistics();
    assert_eq!(s.evicted, 47);
    assert_identities(&s);
    drop(pool);
    ledger.assert_all_dropped_once();
}

#[test]
fn no_eviction_policy_keeps_everything() {
    let pool = ObjectPool::builder(|| 0u8).build().unwrap();
    drop((0..10).map(|_| pool.get()).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(pool.maintain().evicted, 0);
    assert_eq!(pool.maintain().current_size, 10);
}

#[test]
fn other_threads_trim_their_caches_after_a_pass() {
    let idle = Duration::from_millis(10);
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger).max_size(64).eviction(EvictionPolicy::IdleTime(idle)).build().unwrap();
    std::thread::scope(|s| {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let pool = &pool;
        let worker = s.spawn(move || {
            drop((0..8).map(|_| pool.get()).collect::<Vec<_>>()); // 8 objects in this thread's cache
            done.send(()).unwrap();
            wait.recv().unwrap();
            // The next get on this thread trims the stale objects first.
            let o = pool.get();
            assert!(!o.in_use.load(Ordering::SeqCst));
        });
        finished.recv().unwrap();
        pool.maintain();
        std::thread::sleep(idle + Duration::from_millis(10));
        pool.maintain();
        go.send(()).unwrap();
        worker.join().unwrap();
    });
    let s = pool.statistics();
    assert_eq!(s.evicted, 8, "{s:?}");
    assert_eq!(s.misses, 9, "the worker's last get found nothing left: {s:?}");
    assert_identities(&s);
}

#[test]
fn background_maintenance_evicts_and_stops_with_the_pool() {
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger)
        .thread_cache(0)
        .eviction(EvictionPolicy::IdleTime(Duration::from_millis(5)))
        .maintenance_interval(Duration::from_millis(5))
        .build()
        .unwrap();
    drop((0..20).map(|_| pool.get()).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(20);
    // The maintenance thread counts an eviction before it drops the object: wait for both.
    while pool.statistics().evicted < 20 || ledger.dropped() < 20 {
        assert!(Instant::now() < deadline, "the maintenance thread never evicted: {:?}", pool.statistics());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.statistics().current_size, 0);
    assert_eq!(ledger.dropped(), 20);
    drop(pool); // joins the maintenance thread
    ledger.assert_all_dropped_once();
}

// ---------------------------------------------------------------------------------------------
// ObjectPool: many threads

#[test]
fn many_threads_never_share_an_object_and_counts_balance() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 3000;
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger)
        .max_size(24)
        .min_size(4)
        .thread_cache(4)
        .validate(|o| o.id % 97 != 13) // some objects fail validation
        .eviction(EvictionPolicy::IdleTime(Duration::ZERO))
        .build()
        .unwrap();
    let detached = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<Pooled<'_, Tracked>>();
        let pool = &pool;
        // A thread that receives guards from the others and drops them: returns from a thread
        // other than the one that got the object.
        let sink = s.spawn(move || {
            for o in rx {
                o.release();
            }
        });
        for t in 0..THREADS {
            let tx = tx.clone();
            let detached = &detached;
            s.spawn(move || {
                let mut held: Vec<Pooled<'_, Tracked>> = Vec::new();
                for i in 0..ROUNDS {
                    let o = pool.get();
                    o.claim();
                    held.push(o);
                    if (i + t) % 3 == 0 {
                        let o = held.remove(0);
                        o.release();
                        drop(o);
                    }
                    if held.len() > 5 {
                        let o = held.pop().unwrap();
                        if i % 101 == 0 {
                            o.release();
                            detached.lock().unwrap().push(Pooled::detach(o));
                        } else {
                            tx.send(o).unwrap(); // the sink releases and returns it
                        }
                    }
                    if i % 500 == 0 && t == 0 {
                        pool.maintain();
                    }
                }
                for o in held {
                    o.release();
                }
                pool.flush_thread_cache();
            });
        }
        drop(tx);
        sink.join().unwrap();
    });
    let s = pool.statistics();
    assert_eq!(s.gets, (THREADS * ROUNDS) as u64);
    assert_eq!(s.in_use, 0);
    assert_eq!(s.detached, detached.lock().unwrap().len() as u64);
    assert!(s.dropped_invalid > 0, "the validation path ran: {s:?}");
    assert!(s.hits > 0 && s.misses > 0, "{s:?}");
    assert_identities(&s);
    // Live objects: idle in the pool plus detached ones.
    assert_eq!(ledger.created() - ledger.dropped(), s.current_size + s.detached);
    drop(pool);
    drop(detached);
    ledger.assert_all_dropped_once();
}

#[test]
fn objects_left_in_an_exited_threads_cache_are_dropped_with_the_pool() {
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger).build().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| drop((0..5).map(|_| pool.get()).collect::<Vec<_>>()));
    });
    assert_eq!(pool.statistics().current_size, 5, "they stay in the exited thread's slot");
    assert_eq!(ledger.dropped(), 0);
    drop(pool);
    ledger.assert_all_dropped_once();
}

#[test]
fn flushed_thread_cache_serves_other_threads() {
    let ledger = Arc::new(Ledger::default());
    let pool = tracked_pool(&ledger).build().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            drop((0..5).map(|_| pool.get()).collect::<Vec<_>>());
            pool.flush_thread_cache();
        });
    });
    let again: Vec<_> = (0..5).map(|_| pool.get()).collect();
    let s = pool.statistics();
    assert_eq!((s.misses, s.hits), (5, 5), "{s:?}");
    drop(again);
    drop(pool);
    ledger.assert_all_dropped_once();
}

// ---------------------------------------------------------------------------------------------
// ArrayPool

#[test]
fn rent_gives_exact_length_and_reuses_by_class() {
    let arrays = ArrayPool::<u32>::new(ArrayPoolOptions::default());
    let mut a = arrays.rent(1000).unwrap();
    assert_eq!(a.len(), 1000);
    assert_eq!(a.capacity(), 1024);
    assert!(a.iter().all(|&x| x == 0), "fresh arrays are zeroed");
    a.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32);
    let ptr = a.as_ptr();
    drop(a);
    let s = arrays.statistics();
    assert_eq!((s.rents, s.misses, s.returns, s.arrays_held, s.bytes_held), (1, 1, 1, 1, 4096));
    let b = arrays.rent(900).unwrap(); // same class (897..=1024)
    assert_eq!(b.as_ptr(), ptr, "the same array came back");
    assert_eq!(b.len(), 900);
    assert_eq!(b[5], 5, "without clear_on_return the old contents remain");
    let c = arrays.rent(1025).unwrap();
    assert_eq!(c.capacity(), 1280);
    let s = arrays.statistics();
    assert_eq!((s.rents, s.hits, s.misses, s.bytes_held), (3, 1, 2, 0));
    assert!((s.hit_rate - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn rent_zero_is_empty_and_allocates_nothing() {
    let arrays = ArrayPool::<f64>::default();
    let e = arrays.rent(0).unwrap();
    assert!(e.is_empty());
    assert_eq!(e.capacity(), 0);
    drop(e);
    let s = arrays.statistics();
    assert_eq!((s.rents, s.hits, s.misses, s.returns, s.arrays_held), (1, 1, 0, 1, 0));
}

#[test]
fn rent_too_large_is_an_error_with_the_numbers() {
    let arrays = ArrayPool::<u8>::new(ArrayPoolOptions { max_array_len: 4096, ..Default::default() });
    for len in [4097, 1 << 40, usize::MAX] {
        let err = arrays.rent(len).unwrap_err();
        assert!(matches!(err, Error::ArrayTooLarge { requested, max_array_len: 4096 } if requested == len), "{err}");
        assert!(err.to_string().contains(&len.to_string()) && err.to_string().contains("4096"), "{err}");
        assert!(matches!(arrays.rent_raw(len), Err(Error::ArrayTooLarge { .. })));
    }
    assert_eq!(arrays.rent(4096).unwrap().len(), 4096);
    // With no limit, sizes whose bytes overflow are still errors, not panics.
    let unlimited = ArrayPool::<u64>::new(ArrayPoolOptions { max_array_len: usize::MAX, ..Default::default() });
    assert!(matches!(unlimited.rent(usize::MAX / 4), Err(Error::LengthOverflow { .. })));
    assert!(matches!(unlimited.rent(usize::MAX), Err(Error::ArrayTooLarge { .. })));
    let s = unlimited.statistics();
    assert_eq!(s.rents, 0, "failed rents are not counted");
}

#[test]
fn clear_on_return_zeroes_what_was_used() {
    let arrays = ArrayPool::<i32>::new(ArrayPoolOptions { clear_on_return: true, ..Default::default() });
    let mut a = arrays.rent(100).unwrap();
    a.fill(-1);
    drop(a);
    let b = arrays.rent(112).unwrap(); // same class, and longer than what was used
    assert_eq!(arrays.statistics().hits, 1);
    assert!(b.iter().all(|&x| x == 0));
}

#[test]
fn per_class_caps_bound_what_is_kept() {
    let arrays = ArrayPool::<u8>::new(ArrayPoolOptions { max_arrays_per_class: 2, ..Default::default() });
    let held: Vec<_> = (0..5).map(|_| arrays.rent(64).unwrap()).collect();
    drop(held);
    let s = arrays.statistics();
    assert_eq!((s.returns, s.arrays_held, s.dropped, s.bytes_held), (5, 2, 3, 128));
    // A byte cap smaller than one array still keeps one.
    let arrays = ArrayPool::<u64>::new(ArrayPoolOptions { max_bytes_per_class: 100, ..Default::default() });
    drop((0..3).map(|_| arrays.rent(1000).unwrap()).collect::<Vec<_>>());
    assert_eq!(arrays.statistics().arrays_held, 1);
    // Zero arrays per class keeps none.
    let arrays = ArrayPool::<u8>::new(ArrayPoolOptions { max_arrays_per_class: 0, ..Default::default() });
    drop(arrays.rent(10).unwrap());
    assert_eq!(arrays.statistics().arrays_held, 0);
    assert_eq!(arrays.clear(), 0);
}

#[test]
fn detach_keeps_the_array_with_its_class_capacity() {
    let arrays = ArrayPool::<u16>::default();
    let mut r = arrays.rent(30).unwrap();
    r[29] = 7;
    let v = Rented::detach(r);
    assert_eq!(v.len(), 30);
    assert!(v.capacity() >= 32);
    assert_eq!(v[29], 7);
    let s = arrays.statistics();
    assert_eq!((s.detached, s.returns, s.arrays_held), (1, 0, 0));
}

#[test]
fn raw_handles_detect_double_return_and_foreign_pools() {
    let arrays = ArrayPool::<f32>::default();
    let other = ArrayPool::<f32>::default();
    let h = arrays.rent_raw(10).unwrap();
    assert_eq!((h.len(), h.pool_id()), (10, arrays.id()));
    assert!(!arrays.raw_ptr(h).unwrap().is_null());
    arrays.with_raw_mut(h, |s| s.copy_from_slice(&[1.5; 10])).unwrap();
    assert_eq!(arrays.with_raw_mut(h, |s| s.iter().sum::<f32>()).unwrap(), 15.0);
    assert_eq!(arrays.statistics().raw_outstanding, 1);

    // Another pool refuses it, naming both pools, and nothing changes.
    let err = other.return_raw(h).unwrap_err();
    assert!(
        matches!(err, Error::ForeignHandle { handle_pool, pool } if handle_pool == arrays.id() && pool == other.id()),
        "{err}"
    );
    assert!(matches!(other.with_raw_mut(h, |_| ()), Err(Error::ForeignHandle { .. })));
    assert_eq!(arrays.statistics().raw_outstanding, 1);

    // Returning inside with_raw_mut is refused while the array is lent out.
    let inner = arrays.with_raw_mut(h, |_| arrays.return_raw(h)).unwrap();
    assert!(matches!(inner, Err(Error::InvalidArgument { option: "handle", .. })), "{inner:?}");

    arrays.return_raw(h).unwrap();
    assert_eq!(arrays.statistics().raw_outstanding, 0);
    let err = arrays.return_raw(h).unwrap_err();
    assert!(matches!(err, Error::DoubleReturn { pool, handle } if pool == arrays.id() && handle == h.id()), "{err}");
    assert!(matches!(arrays.with_raw_mut(h, |_| ()), Err(Error::DoubleReturn { .. })));
    assert!(matches!(arrays.raw_ptr(h), Err(Error::DoubleReturn { .. })));

    // The slot is reused by a new handle; the stale one still cannot return it.
    let h2 = arrays.rent_raw(10).unwrap();
    assert_ne!(h2.id(), h.id());
    assert!(matches!(arrays.return_raw(h), Err(Error::DoubleReturn { .. })));
    assert_eq!(arrays.with_raw_mut(h2, |s| s[0]).unwrap(), 1.5, "h2 got the returned array back");
    arrays.return_raw(h2).unwrap();

    // Empty raw arrays work too.
    let e = arrays.rent_raw(0).unwrap();
    assert!(e.is_empty());
    arrays.return_raw(e).unwrap();
    assert!(matches!(arrays.return_raw(e), Err(Error::DoubleReturn { .. })));
    let s = arrays.statistics();
    assert_eq!(s.rents, s.returns);
}

#[test]
fn raw_array_survives_a_panic_inside_with_raw_mut() {
    let arrays = ArrayPool::<u8>::default();
    let h = arrays.rent_raw(4).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        arrays.with_raw_mut(h, |s| {
            s[0] = 9;
            panic!("user code failed");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(arrays.with_raw_mut(h, |s| s[0]).unwrap(), 9);
    arrays.return_raw(h).unwrap();
}

#[test]
fn array_pool_threads_never_share_an_array() {
    const THREADS: u32 = 4;
    const ROUNDS: u32 = 2000;
    let arrays = ArrayPool::<u32>::new(ArrayPoolOptions { max_arrays_per_class: 4, ..Default::default() });
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let arrays = &arrays;
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let len = 1 + ((i * 37 + t * 11) % 300) as usize;
                    let tag = t << 24 | i;
                    if i % 2 == 0 {
                        let mut a = arrays.rent(len).unwrap();
                        a.fill(tag);
                        std::thread::yield_now();
                        assert!(a.iter().all(|&x| x == tag), "array shared between holders");
                    } else {
                        let h = arrays.rent_raw(len).unwrap();
                        arrays.with_raw_mut(h, |a| a.fill(tag)).unwrap();
                        std::thread::yield_now();
                        assert!(arrays.with_raw_mut(h, |a| a.iter().all(|&x| x == tag)).unwrap());
                        arrays.return_raw(h).unwrap();
                    }
                }
            });
        }
    });
    let s = arrays.statistics();
    assert_eq!(s.rents, u64::from(THREADS * ROUNDS));
    assert_eq!(s.hits + s.misses, s.rents);
    assert_eq!(s.returns, s.rents);
    assert_eq!(s.raw_outstanding, 0);
    assert!(s.hits > 0);
    assert_eq!(s.returns - s.dropped, s.arrays_held + s.hits, "every kept array is idle or was rented again");
}

// ---------------------------------------------------------------------------------------------
// ArrayPool class rounding against a naive oracle

/// Every class length in order, generated the slow way: 16, then four equal steps per power of
/// two.
fn oracle_classes() -> Vec<usize> {
    let mut classes = vec![MIN_CLASS_LEN];
    let mut base = MIN_CLASS_LEN;
    while let Some(next) = base.checked_mul(2) {
        let step = base / 4;
        classes.extend((1..=4).map(|j| base + j * step));
        base = next;
    }
    // The last interval (2^63, 2^64) has three representable steps.
    let step = base / 4;
    classes.extend((1..4).map(|j| base + j * step));
    classes
}

proptest! {
    #[test]
    fn class_rounding_matches_the_oracle(len in prop_oneof![1usize..5000, 1usize..(1 << 40), any::<usize>()]) {
        let classes = oracle_classes();
        let expected = classes.iter().position(|&c| c >= len).map(|i| (i, classes[i]));
        prop_assert_eq!(array_class(len), expected);
        if let Some((_, c)) = expected {
            if len > MIN_CLASS_LEN {
                prop_assert!((c - len) * 4 < len, "waste {} for {}", c - len, len);
            } else {
                prop_assert!(c - len < MIN_CLASS_LEN);
            }
        }
    }

    #[test]
    fn rent_length_and_capacity_match_the_oracle(lens in proptest::collection::vec(0usize..20_000, 1..20)) {
        let classes = oracle_classes();
        let arrays = ArrayPool::<u16>::new(ArrayPoolOptions { max_array_len: 20_000, ..Default::default() });
        let held: Vec<_> = lens.iter().map(|&n| arrays.rent(n).unwrap()).collect();
        for (r, &n) in held.iter().zip(&lens) {
            prop_assert_eq!(r.len(), n);
            let cap = if n == 0 { 0 } else { classes[classes.iter().position(|&c| c >= n).unwrap()] };
            prop_assert_eq!(r.capacity(), cap);
        }
    }
}
