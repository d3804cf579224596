//! ObjectPool on threads that have no per-thread slot (guards returned at thread exit, gets in
//! late thread-local destructors): returns are validated, reset and bounded by `max_size`, the
//! statistics identities hold, and every object is dropped exactly once. Each scenario runs in
//! a child process, since the failure mode is an abort at thread exit.

use super::assert_identities;
use crate::support::child::{in_child, test_name};
use dotcompute_memory::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// An object whose drops are counted, so the test sees each one dropped exactly once.
struct Counted {
    id: usize,
    bad: bool,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

type Leaked = &'static ObjectPool<Counted>;

/// A pool that lives for the rest of the (child) process, so guards can sit in thread-locals.
fn leaked_pool(max_size: usize, metrics: bool, drops: &Arc<AtomicUsize>, resets: &Arc<AtomicUsize>) -> Leaked {
    let next = AtomicUsize::new(0);
    let d = drops.clone();
    let r = resets.clone();
    let pool =
        ObjectPool::builder(move || Counted { id: next.fetch_add(1, Ordering::Relaxed), bad: false, drops: d.clone() })
            .max_size(max_size)
            .metrics(metrics)
            .validate(|c: &Counted| !c.bad)
            .reset(move |_| {
                r.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap();
    Box::leak(Box::new(pool))
}

thread_local! {
    /// Guards returned at thread exit, after the pool's thread id is gone (this thread-local is
    /// registered before the pool is first used on the thread, so it is destroyed after).
    static KEPT: RefCell<Vec<Pooled<'static, Counted>>> = const { RefCell::new(Vec::new()) };
}

/// Five guards returned without a slot into a pool of `max_size` 2: the invalid one is dropped
/// unreset, the others are reset, two are kept and two dropped as full; every object is dropped
/// at most once and the identities hold.
#[test]
fn unslotted_returns_are_validated_reset_and_bounded_by_max_size() {
    in_child(test_name!(unslotted_returns_are_validated_reset_and_bounded_by_max_size), || {
        let (drops, resets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pool = leaked_pool(2, true, &drops, &resets);
        std::thread::spawn(move || {
            KEPT.with(|k| {
                let mut k = k.borrow_mut();
                for i in 0..5 {
                    let mut g = pool.get();
                    g.bad = i == 2;
                    k.push(g);
                }
            });
        })
        .join()
        .unwrap();
        let s = pool.statistics();
        assert_identities(&s);
        assert_eq!((s.gets, s.misses, s.returned, s.in_use), (5, 5, 5, 0), "{s:#?}");
        assert_eq!((s.dropped_invalid, s.dropped_full, s.current_size), (1, 2, 2), "{s:#?}");
        assert_eq!(resets.load(Ordering::Relaxed), 4, "every valid return is reset, the invalid one not");
        assert_eq!(drops.load(Ordering::Relaxed), 3, "one invalid and two over max_size dropped");
        // The two kept objects are distinct and valid, and come back as hits.
        let (a, b) = (pool.get(), pool.get());
        assert!(a.id != b.id && !a.bad && !b.bad);
        drop((a, b));
        let s = pool.statistics();
        assert_identities(&s);
        assert_eq!((s.hits, s.current_size), (2, 2), "{s:#?}");
        assert_eq!(drops.load(Ordering::Relaxed), 3, "nothing dropped twice or lost");
    });
}

/// With metrics off the unslotted paths count nothing but still keep the objects.
#[test]
fn unslotted_paths_with_metrics_off_count_nothing_and_keep_objects() {
    in_child(test_name!(unslotted_paths_with_metrics_off_count_nothing_and_keep_objects), || {
        let (drops, resets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pool = leaked_pool(8, false, &drops, &resets);
        std::thread::spawn(move || {
            KEPT.with(|k| k.borrow_mut().extend((0..3).map(|_| pool.get())));
        })
        .join()
        .unwrap();
        let s = pool.statistics();
        assert_eq!((s.gets, s.misses, s.returned, s.dropped_full, s.detached), (0, 0, 0, 0, 0), "{s:#?}");
        assert_eq!(s.current_size, 3, "{s:#?}");
        assert_eq!((resets.load(Ordering::Relaxed), drops.load(Ordering::Relaxed)), (3, 0));
    });
}

/// A late thread-local destructor on a thread that never used the pool (its id is gone): gets
/// served from the shared tier (a pre-warmed object is a hit), a detach, returns; the
/// identities hold and every object is dropped exactly once when the pool goes.
#[test]
fn gets_detaches_and_returns_in_a_late_destructor_keep_the_identities() {
    in_child(test_name!(gets_detaches_and_returns_in_a_late_destructor_keep_the_identities), || {
        let drops = Arc::new(AtomicUsize::new(0));
        let made = Arc::new(AtomicUsize::new(0));
        let (d, m) = (drops.clone(), made.clone());
        let pool = Arc::new(
            ObjectPool::builder(move || Counted {
                id: m.fetch_add(1, Ordering::Relaxed),
                bad: false,
                drops: d.clone(),
            })
            .min_size(1)
            .max_size(4)
            .build()
            .unwrap(),
        );
        let detached: Arc<Mutex<Vec<Counted>>> = Arc::default();
        struct Late(Arc<ObjectPool<Counted>>, Arc<Mutex<Vec<Counted>>>);
        impl Drop for Late {
            fn drop(&mut self) {
                let a = self.0.get();
                let b = self.0.get();
                let c = self.0.get();
                assert_eq!(a.id, 0, "the pre-warmed object first");
                self.1.lock().unwrap().push(Pooled::detach(b));
                drop((a, c));
            }
        }
        thread_local! {
            static LATE: RefCell<Option<Late>> = const { RefCell::new(None) };
        }
        let worker = {
            let (pool, detached) = (pool.clone(), detached.clone());
            std::thread::spawn(move || {
                LATE.with(|l| *l.borrow_mut() = Some(Late(pool, detached)));
                // Another user of the thread_local crate takes the id; it is given back before
                // LATE is destroyed.
                let other = thread_local::ThreadLocal::<u32>::new();
                assert_eq!(*other.get_or(|| 1), 1);
            })
        };
        worker.join().unwrap();
        let s = pool.statistics();
        assert_identities(&s);
        assert_eq!((s.gets, s.hits, s.misses, s.detached, s.returned), (3, 1, 2, 1, 2), "{s:#?}");
        assert_eq!(s.current_size, 2, "{s:#?}");
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop(pool);
        assert_eq!(drops.load(Ordering::Relaxed), 2, "the pool drops its two idle objects once each");
        drop(detached);
        assert_eq!(drops.load(Ordering::Relaxed), made.load(Ordering::Relaxed), "every object dropped exactly once");
    });
}

/// `ObjectPool` looks up its slot with `ThreadLocal::get`, which must not take a thread id (at
/// thread exit taking one panics inside a thread-local destructor: an abort). `get` takes none
/// from `thread_local` 1.1.10 on; a requirement admitting older versions would let a downstream
/// lockfile resolve one whose `get` does, while the tests above pass here only because this
/// workspace's lockfile has 1.1.10. The manifest must ask for at least 1.1.10.
#[test]
fn the_manifest_requires_a_thread_local_whose_get_takes_no_id() {
    let manifest = include_str!("../../../Cargo.toml");
    let line =
        manifest.lines().find(|l| l.trim_start().starts_with("thread_local")).expect("a thread_local dependency");
    let req = line.split('"').nth(1).unwrap_or_else(|| panic!("no version in {line:?}"));
    let req = req.trim_start_matches(['^', '=', '~', ' ']);
    let parts: Vec<u64> = req.split('.').map(|p| p.parse().unwrap_or_else(|_| panic!("{line:?}"))).collect();
    let version = (parts[0], parts.get(1).copied().unwrap_or(0), parts.get(2).copied().unwrap_or(0));
    assert!(version >= (1, 1, 10), "thread_local requirement {req:?} admits versions whose get() takes an id");
}
