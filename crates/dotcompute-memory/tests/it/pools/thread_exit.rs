//! Pooled objects and buffers used from thread-local destructors, where the `thread_local`
//! crate's thread id (behind the object pool's per-thread slots and the statistics shards) may
//! already be gone: no abort, nothing lost, statistics consistent. Each scenario runs in a
//! child process, since the failure mode is an abort (in place under Miri, which cannot spawn
//! processes and reports an abort itself).

use crate::support::child::{in_child, test_name};
use dotcompute_memory::*;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

fn static_pool() -> &'static ObjectPool<Vec<u8>> {
    static POOL: OnceLock<ObjectPool<Vec<u8>>> = OnceLock::new();
    POOL.get_or_init(|| ObjectPool::builder(|| vec![7u8; 16]).reset(|v| v.fill(7)).build().unwrap())
}

/// A guard kept in a thread-local first used before the pool: at thread exit the pool's
/// thread id goes first, then the guard returns its object.
#[test]
fn a_pooled_object_kept_in_a_thread_local_is_returned_at_thread_exit() {
    in_child(test_name!(a_pooled_object_kept_in_a_thread_local_is_returned_at_thread_exit), || {
        thread_local! {
            static KEEP: RefCell<Option<Pooled<'static, Vec<u8>>>> = const { RefCell::new(None) };
        }
        let pool = static_pool();
        std::thread::spawn(|| {
            KEEP.with(|k| {
                let mut obj = static_pool().get();
                obj[0] = 99;
                *k.borrow_mut() = Some(obj);
            });
        })
        .join()
        .unwrap();
        let s = pool.statistics();
        assert_eq!((s.gets, s.returned, s.in_use), (1, 1, 0), "{s:#?}");
        // The object went back to the shared tier, reset: the next get is a hit.
        let again = pool.get();
        assert_eq!(again[0], 7);
        assert_eq!(pool.statistics().misses, 1, "only the first get created an object");
    });
}

/// A thread-local destructor that runs after another user of the `thread_local` crate gave the
/// thread's id back, on a thread that never used the pool: its `get` cannot take an id, and is
/// served without a per-thread slot.
#[test]
fn a_get_and_return_in_a_late_thread_local_destructor_uses_the_shared_tier() {
    in_child(test_name!(a_get_and_return_in_a_late_thread_local_destructor_uses_the_shared_tier), || {
        struct UsesPoolOnDrop(Arc<ObjectPool<Vec<u8>>>);
        impl Drop for UsesPoolOnDrop {
            fn drop(&mut self) {
                let mut obj = self.0.get();
                obj.push(1);
                assert_eq!(obj.len(), 17);
            }
        }
        thread_local! {
            static LATE: RefCell<Option<UsesPoolOnDrop>> = const { RefCell::new(None) };
        }
        let pool = Arc::new(ObjectPool::builder(|| vec![0u8; 16]).reset(|v| v.truncate(16)).build().unwrap());
        let worker = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                // LATE is registered first, so it is destroyed last.
                LATE.with(|l| *l.borrow_mut() = Some(UsesPoolOnDrop(pool)));
                // Another library takes the thread's id: its guard is destroyed before LATE.
                let other = thread_local::ThreadLocal::<u32>::new();
                assert_eq!(*other.get_or(|| 5), 5);
            })
        };
        worker.join().unwrap();
        let s = pool.statistics();
        assert_eq!((s.gets, s.misses, s.returned, s.in_use), (1, 1, 1, 0), "{s:#?}");
        assert_eq!(s.current_size, 1, "the object went back to the shared tier: {s:#?}");
        assert_eq!(pool.get().len(), 16, "reset on return");
    });
}

/// The same for a buffer: a fresh thread allocates in a late destructor (statistics shard
/// unavailable), and the buffer works and is counted.
#[test]
fn an_allocation_in_a_late_thread_local_destructor_is_counted_on_shared_counters() {
    in_child(test_name!(an_allocation_in_a_late_thread_local_destructor_is_counted_on_shared_counters), || {
        struct AllocatesOnDrop(MemoryManager);
        impl Drop for AllocatesOnDrop {
            fn drop(&mut self) {
                let mut b = self.0.allocate::<u16>(500).unwrap();
                b.fill(3).unwrap();
                assert!(b.as_slice().unwrap().iter().all(|&x| x == 3));
            }
        }
        thread_local! {
            static LATE: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
        }
        let mm =
            MemoryManager::with_backend(CpuBackend::new(), ManagerOptions::default().with_maintenance_interval(None))
                .unwrap();
        let worker = {
            let mm = mm.clone();
            std::thread::spawn(move || {
                LATE.with(|l| *l.borrow_mut() = Some(AllocatesOnDrop(mm)));
                let other = thread_local::ThreadLocal::<u32>::new();
                assert_eq!(*other.get_or(|| 5), 5);
            })
        };
        worker.join().unwrap();
        let s = mm.statistics();
        assert_eq!((s.buffers_allocated, s.buffers_freed, s.active_allocations), (1, 1, 0), "{s:#?}");
    });
}

/// After the caught panic the thread counts as exiting: a second late destructor takes the
/// shared paths at once, and another user of the `thread_local` crate still works there (the
/// id taken during the caught panic stays with the thread).
#[test]
fn several_late_destructors_on_one_thread_use_the_shared_tier() {
    in_child(test_name!(several_late_destructors_on_one_thread_use_the_shared_tier), || {
        struct Late(Arc<ObjectPool<Vec<u8>>>, Arc<thread_local::ThreadLocal<u32>>);
        impl Drop for Late {
            fn drop(&mut self) {
                let mut obj = self.0.get();
                obj.push(1);
                assert_eq!(obj.len(), 17);
                assert!(matches!(*self.1.get_or(|| 9), 5 | 9));
            }
        }
        thread_local! {
            static FIRST: RefCell<Option<Late>> = const { RefCell::new(None) };
            static SECOND: RefCell<Option<Late>> = const { RefCell::new(None) };
        }
        let pool = Arc::new(ObjectPool::builder(|| vec![0u8; 16]).reset(|v| v.truncate(16)).build().unwrap());
        let other = Arc::new(thread_local::ThreadLocal::<u32>::new());
        let worker = {
            let (pool, other) = (pool.clone(), other.clone());
            std::thread::spawn(move || {
                FIRST.with(|l| *l.borrow_mut() = Some(Late(pool.clone(), other.clone())));
                SECOND.with(|l| *l.borrow_mut() = Some(Late(pool, other.clone())));
                // Takes the thread's id: its guard is destroyed before SECOND, then FIRST.
                assert_eq!(*other.get_or(|| 5), 5);
            })
        };
        worker.join().unwrap();
        let s = pool.statistics();
        assert_eq!((s.gets, s.misses, s.returned, s.in_use), (2, 1, 2, 0), "{s:#?}");
        assert_eq!(s.current_size, 1, "both went back to the shared tier: {s:#?}");
    });
}
