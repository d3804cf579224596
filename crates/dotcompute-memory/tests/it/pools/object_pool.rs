//! ObjectPool: pre-warming, bounds, validation and reset, detach, statistics and their identities,
//! eviction (by a pass and by the background thread), and many threads sharing one pool. Its bad
//! inputs are in `bad_input::pools`.

use super::assert_identities;
use dotcompute_memory::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
