//! ArrayPool: exact lengths in size classes, reuse by class, clearing on return, per-class caps,
//! detach, raw handles (double returns, foreign pools, panics inside `with_raw_mut`), threads
//! sharing a pool, and the class rounding against a naive oracle. Its bad inputs are in
//! `bad_input::pools`.

use dotcompute_memory::pool::array::{array_class, MIN_CLASS_LEN};
use dotcompute_memory::*;
use proptest::prelude::*;

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
fn clear_on_return_zeroes_what_was_used() {
    let arrays = ArrayPool::<i32>::new(ArrayPoolOptions::default().with_clear_on_return(true));
    let mut a = arrays.rent(100).unwrap();
    a.fill(-1);
    drop(a);
    let b = arrays.rent(112).unwrap(); // same class, and longer than what was used
    assert_eq!(arrays.statistics().hits, 1);
    assert!(b.iter().all(|&x| x == 0));
}

#[test]
fn per_class_caps_bound_what_is_kept() {
    let arrays = ArrayPool::<u8>::new(ArrayPoolOptions::default().with_max_arrays_per_class(2));
    let held: Vec<_> = (0..5).map(|_| arrays.rent(64).unwrap()).collect();
    drop(held);
    let s = arrays.statistics();
    assert_eq!((s.returns, s.arrays_held, s.dropped, s.bytes_held), (5, 2, 3, 128));
    // A byte cap smaller than one array still keeps one.
    let arrays = ArrayPool::<u64>::new(ArrayPoolOptions::default().with_max_bytes_per_class(100));
    drop((0..3).map(|_| arrays.rent(1000).unwrap()).collect::<Vec<_>>());
    assert_eq!(arrays.statistics().arrays_held, 1);
    // Zero arrays per class keeps none.
    let arrays = ArrayPool::<u8>::new(ArrayPoolOptions::default().with_max_arrays_per_class(0));
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
    let arrays = ArrayPool::<u32>::new(ArrayPoolOptions::default().with_max_arrays_per_class(4));
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
        let arrays = ArrayPool::<u16>::new(ArrayPoolOptions::default().with_max_array_len(20_000));
        let held: Vec<_> = lens.iter().map(|&n| arrays.rent(n).unwrap()).collect();
        for (r, &n) in held.iter().zip(&lens) {
            prop_assert_eq!(r.len(), n);
            let cap = if n == 0 { 0 } else { classes[classes.iter().position(|&c| c >= n).unwrap()] };
            prop_assert_eq!(r.capacity(), cap);
        }
    }
}
