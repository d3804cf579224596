//! The pools: `ObjectPool::builder` limits that contradict each other, and `ArrayPool` lengths too
//! large, raw handles returned twice, to another pool or while lent out.

use super::*;

// ---- ObjectPool::builder ... build ----

pub(super) mod object_pool {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// `configure` applied to a builder whose `create` counts its calls: `build` fails with the
    /// variant `expect` accepts, having created nothing.
    fn refused(configure: fn(ObjectPoolBuilder<Vec<u8>>) -> ObjectPoolBuilder<Vec<u8>>, expect: fn(&Error) -> bool) {
        let created = Arc::new(AtomicUsize::new(0));
        let counter = created.clone();
        let builder = ObjectPool::builder(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Vec::<u8>::new()
        });
        let e = fails!(configure(builder).build(), Error::InvalidArgument { .. });
        assert!(expect(&e), "{e:?}");
        assert_eq!(created.load(Ordering::Relaxed), 0, "a refused pool created objects");
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "ObjectPool: max_size 0",
            run: || {
                refused(
                    |b| b.max_size(0),
                    |e| matches!(e, Error::InvalidArgument { option: "max_size", value, .. } if value == "0"),
                )
            },
        },
        Case {
            name: "ObjectPool: min_size above max_size",
            run: || {
                refused(
                    |b| b.max_size(4).min_size(5),
                    |e| matches!(e, Error::InvalidArgument { option: "min_size", value, .. } if value == "5 (max_size is 4)"),
                )
            },
        },
        Case {
            name: "ObjectPool: min_size usize::MAX above max_size usize::MAX - 1",
            run: || {
                refused(
                    |b| b.max_size(usize::MAX - 1).min_size(usize::MAX),
                    |e| matches!(e, Error::InvalidArgument { option: "min_size", .. }),
                )
            },
        },
        Case {
            name: "ObjectPool: max_size 0 and min_size 3 (max_size is reported)",
            run: || {
                refused(
                    |b| b.max_size(0).min_size(3),
                    |e| matches!(e, Error::InvalidArgument { option: "max_size", .. }),
                )
            },
        },
        Case {
            name: "ObjectPool: maintenance_interval zero",
            run: || {
                refused(
                    |b| b.min_size(2).maintenance_interval(Duration::ZERO),
                    |e| matches!(e, Error::InvalidArgument { option: "maintenance_interval", value, .. } if value == "0s"),
                )
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

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
        let pool =
            ObjectPool::builder(move || m.fetch_add(1, Ordering::SeqCst)).max_size(10).min_size(10).build().unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 10);
        assert_eq!(pool.statistics().current_size, 10);
    }

    #[test]
    fn builder_rejects_zero_maintenance_interval() {
        let err = ObjectPool::builder(|| 0u32).maintenance_interval(Duration::ZERO).build().unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { option: "maintenance_interval", .. }), "{err}");
    }
}

// ---- ArrayPool: rent, rent_raw and raw handles ----

pub(super) mod array_pool {
    use super::*;

    /// Runs `f` and asserts the pool's statistics did not move.
    fn unchanged<T: Element>(pool: &ArrayPool<T>, f: impl FnOnce()) {
        let before = pool.statistics();
        f();
        assert_eq!(pool.statistics(), before, "the pool's statistics moved");
    }

    fn pool<T: Element>(max_array_len: usize) -> ArrayPool<T> {
        ArrayPool::new(ArrayPoolOptions::default().with_max_array_len(max_array_len))
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "ArrayPool::rent: one past max_array_len",
            run: || {
                let p = pool::<f32>(1000);
                unchanged(&p, || {
                    fails!(p.rent(1001), Error::ArrayTooLarge { requested: 1001, max_array_len: 1000 });
                });
            },
        },
        Case {
            name: "ArrayPool::rent: usize::MAX with the default limit",
            run: || {
                let p = ArrayPool::<u8>::default();
                unchanged(&p, || {
                    fails!(
                        p.rent(usize::MAX),
                        Error::ArrayTooLarge { requested: usize::MAX, max_array_len: 16_777_216 }
                    );
                });
            },
        },
        Case {
            name: "ArrayPool::rent_raw: one past max_array_len",
            run: || {
                let p = pool::<u64>(64);
                unchanged(&p, || {
                    fails!(p.rent_raw(65), Error::ArrayTooLarge { requested: 65, max_array_len: 64 });
                });
                assert_eq!(p.statistics().raw_outstanding, 0);
            },
        },
        Case {
            name: "ArrayPool::rent: max_array_len 0",
            run: || {
                let p = pool::<u32>(0);
                unchanged(&p, || {
                    fails!(p.rent(1), Error::ArrayTooLarge { requested: 1, max_array_len: 0 });
                });
            },
        },
        // With no limit, the size classes and the allocator refuse instead.
        Case {
            name: "ArrayPool::rent: usize::MAX with max_array_len usize::MAX (no class)",
            run: || {
                let p = pool::<u8>(usize::MAX);
                unchanged(&p, || {
                    fails!(p.rent(usize::MAX), Error::ArrayTooLarge { requested: usize::MAX, .. });
                });
            },
        },
        Case {
            name: "ArrayPool::rent: class byte size overflows with max_array_len usize::MAX",
            run: || {
                let p = pool::<u32>(usize::MAX);
                unchanged(&p, || {
                    fails!(p.rent(usize::MAX / 2), Error::LengthOverflow { element_size: 4, .. });
                });
            },
        },
        Case {
            name: "ArrayPool::rent: 4 EiB with max_array_len usize::MAX",
            run: || {
                let p = pool::<u8>(usize::MAX);
                unchanged(&p, || {
                    fails!(p.rent(1 << 62), Error::OutOfMemory { backend: "host", .. });
                });
            },
        },
        Case {
            name: "ArrayPool::return_raw: the same handle twice",
            run: || {
                let p = ArrayPool::<u32>::default();
                let h = p.rent_raw(10).unwrap();
                p.return_raw(h).unwrap();
                unchanged(&p, || {
                    fails!(p.return_raw(h), Error::DoubleReturn { pool, handle } if (*pool, *handle) == (p.id(), h.id()));
                });
            },
        },
        Case {
            name: "ArrayPool::return_raw: a handle of another pool",
            run: || {
                let (a, b) = (ArrayPool::<u32>::default(), ArrayPool::<u32>::default());
                let h = a.rent_raw(10).unwrap();
                unchanged(&a, || {
                    unchanged(&b, || {
                        fails!(
                            b.return_raw(h),
                            Error::ForeignHandle { handle_pool, pool } if (*handle_pool, *pool) == (a.id(), b.id())
                        );
                    })
                });
                a.return_raw(h).expect("the handle is still good in its own pool");
            },
        },
        Case {
            name: "ArrayPool::with_raw_mut: a returned handle",
            run: || {
                let p = ArrayPool::<u32>::default();
                let h = p.rent_raw(10).unwrap();
                p.return_raw(h).unwrap();
                unchanged(&p, || {
                    fails!(p.with_raw_mut(h, |_| panic!("ran on a returned handle")), Error::DoubleReturn { .. });
                });
            },
        },
        Case {
            name: "ArrayPool::with_raw_mut: a handle of another pool",
            run: || {
                let (a, b) = (ArrayPool::<u32>::default(), ArrayPool::<u32>::default());
                let h = a.rent_raw(10).unwrap();
                a.with_raw_mut(h, |x| x.fill(3)).unwrap();
                unchanged(&b, || {
                    fails!(b.with_raw_mut(h, |_| panic!("ran on a foreign handle")), Error::ForeignHandle { .. });
                });
                assert_eq!(a.with_raw_mut(h, |x| x.to_vec()).unwrap(), [3; 10]);
            },
        },
        Case {
            name: "ArrayPool::raw_ptr: a handle of another pool",
            run: || {
                let (a, b) = (ArrayPool::<u32>::default(), ArrayPool::<u32>::default());
                let h = a.rent_raw(3).unwrap();
                unchanged(&b, || {
                    fails!(b.raw_ptr(h), Error::ForeignHandle { .. });
                });
            },
        },
        Case {
            name: "ArrayPool::return_raw: inside with_raw_mut of the same handle",
            run: || {
                let p = ArrayPool::<u32>::default();
                let h = p.rent_raw(10).unwrap();
                let before = p.statistics();
                p.with_raw_mut(h, |x| {
                    fails!(p.return_raw(h), Error::InvalidArgument { option: "handle", .. });
                    x[0] = 1;
                })
                .unwrap();
                assert_eq!(p.statistics(), before);
                assert_eq!(p.with_raw_mut(h, |x| x[0]).unwrap(), 1, "the array stayed with its handle");
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn rent_too_large_is_an_error_with_the_numbers() {
        let arrays = ArrayPool::<u8>::new(ArrayPoolOptions::default().with_max_array_len(4096));
        for len in [4097, 1 << 40, usize::MAX] {
            let err = arrays.rent(len).unwrap_err();
            assert!(
                matches!(err, Error::ArrayTooLarge { requested, max_array_len: 4096 } if requested == len),
                "{err}"
            );
            assert!(err.to_string().contains(&len.to_string()) && err.to_string().contains("4096"), "{err}");
            assert!(matches!(arrays.rent_raw(len), Err(Error::ArrayTooLarge { .. })));
        }
        assert_eq!(arrays.rent(4096).unwrap().len(), 4096);
        // With no limit, sizes whose bytes overflow are still errors, not panics.
        let unlimited = ArrayPool::<u64>::new(ArrayPoolOptions::default().with_max_array_len(usize::MAX));
        assert!(matches!(unlimited.rent(usize::MAX / 4), Err(Error::LengthOverflow { .. })));
        assert!(matches!(unlimited.rent(usize::MAX), Err(Error::ArrayTooLarge { .. })));
        let s = unlimited.statistics();
        assert_eq!(s.rents, 0, "failed rents are not counted");
    }
}
