//! Host memory: `HostAlloc` alignments and NUMA nodes the machine does not have, `PinnedBuffer`,
//! `HostBlock` and `PinnedPool` sizes, `HostBuffer::from_raw_parts` with null or misaligned
//! pointers, and the bounds-checked host operations (`ops`).

use super::*;

// ---- HostAlloc, allocate_host, PinnedBuffer and HostBlock ----

pub(super) mod host_alloc {
    use super::*;

    /// `alloc.allocate::<u32>(len)` through a manager: fails as `expect` says, moving none of
    /// the manager's counters.
    fn refused(alloc: HostAlloc, len: usize, expect: fn(&Error) -> bool) {
        let mm = cpu();
        let c = counters(&mm);
        let e = fails!(mm.allocate_host::<u32>(&alloc, len), _);
        assert!(expect(&e), "{e:?}");
        check_counters(&mm, &c, Check::Everything, "allocate_host");
        // The builder says the same without allocating.
        if let Err(e2) = alloc.effective_alignment::<u32>() {
            assert_eq!(e2.to_string(), e.to_string());
        }
    }

    fn bad_alignment(e: &Error, alignment: usize, reason: &str) -> bool {
        matches!(e, Error::InvalidAlignment { alignment: a, element_align: 4, reason: r, .. } if *a == alignment && r.contains(reason))
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "HostAlloc: alignment 0",
            run: || refused(HostAlloc::new().alignment(0), 4, |e| bad_alignment(e, 0, "0 is not")),
        },
        Case {
            name: "HostAlloc: alignment not a power of two",
            run: || refused(HostAlloc::new().alignment(48), 4, |e| bad_alignment(e, 48, "power of two")),
        },
        Case {
            name: "HostAlloc: alignment below the element's",
            run: || refused(HostAlloc::new().alignment(2), 4, |e| bad_alignment(e, 2, "element type")),
        },
        Case {
            name: "HostAlloc: alignment just above 1 GiB",
            run: || refused(HostAlloc::new().alignment(1 << 31), 4, |e| bad_alignment(e, 1 << 31, "1 GiB")),
        },
        Case {
            name: "HostAlloc: alignment 2^63",
            run: || refused(HostAlloc::new().alignment(1 << 63), 4, |e| bad_alignment(e, 1 << 63, "1 GiB")),
        },
        Case {
            name: "HostAlloc: NUMA node the machine does not have",
            run: || {
                refused(HostAlloc::new().numa_node(4096), 4, |e| {
                    matches!(e, Error::NumaNodeUnavailable { node: 4096, .. })
                })
            },
        },
        Case {
            name: "HostAlloc: len * size_of::<T>() overflows",
            run: || {
                refused(
                    HostAlloc::new(),
                    usize::MAX / 2,
                    |e| matches!(e, Error::LengthOverflow { len, element_size: 4, .. } if *len == usize::MAX / 2),
                )
            },
        },
        Case {
            name: "HostAlloc: size rounded to the alignment overflows",
            run: || {
                refused(HostAlloc::new().alignment(1 << 20), isize::MAX as usize / 4, |e| {
                    matches!(e, Error::LengthOverflow { element_size: 4, .. })
                })
            },
        },
        Case {
            name: "HostAlloc::allocate_from: alignment not a power of two",
            run: || {
                let e = fails!(HostAlloc::new().alignment(3).allocate_from(&[1u64, 2]), Error::InvalidAlignment { .. });
                assert!(matches!(e, Error::InvalidAlignment { alignment: 3, element_align: 8, .. }), "{e:?}");
            },
        },
        Case {
            name: "HostAlloc::effective_alignment: below the element's",
            run: || {
                fails!(
                    HostAlloc::new().alignment(4).effective_alignment::<u64>(),
                    Error::InvalidAlignment { alignment: 4, element_align: 8, type_name: "u64", .. }
                );
            },
        },
        Case {
            name: "PinnedBuffer::with_options: alignment not a power of two",
            run: || {
                fails!(
                    PinnedBuffer::<u32>::with_options(&HostAlloc::new().alignment(3), 16),
                    Error::InvalidAlignment { alignment: 3, element_align: 4, .. }
                );
            },
        },
        Case {
            name: "PinnedBuffer::new: len * size_of::<T>() overflows",
            run: || {
                fails!(PinnedBuffer::<u64>::new(usize::MAX / 4), Error::LengthOverflow { element_size: 8, .. });
            },
        },
        Case {
            name: "HostBlock::allocate_zeroed: alignment not a power of two",
            run: || {
                fails!(HostBlock::allocate_zeroed(64, 48), Error::InvalidArgument { option: "alignment", value, .. } if value == "48 (size 64)");
            },
        },
        Case {
            name: "HostBlock::allocate_zeroed: alignment 0",
            run: || {
                fails!(HostBlock::allocate_zeroed(64, 0), Error::InvalidArgument { option: "alignment", .. });
            },
        },
        Case {
            name: "HostBlock::allocate_zeroed: size rounded to the alignment above isize::MAX",
            run: || {
                fails!(
                    HostBlock::allocate_zeroed(isize::MAX as usize, 4096),
                    Error::InvalidArgument { option: "alignment", .. }
                );
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- PinnedPool::rent ----

pub(super) mod pinned_pool {
    use super::*;

    /// `bytes` is refused by `rent` as `expect` says, with the pool's counters unmoved.
    fn refused(bytes: usize, expect: fn(&Error) -> bool) {
        let pool = PinnedPool::new(1 << 20);
        drop(pool.rent(4096).unwrap());
        let before = (pool.hits(), pool.misses(), pool.cached_bytes());
        let e = fails!(pool.rent(bytes), _);
        assert!(expect(&e), "{e:?}");
        assert_eq!((pool.hits(), pool.misses(), pool.cached_bytes()), before, "(hits, misses, cached bytes) moved");
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "PinnedPool::rent: no size class fits",
            run: || {
                refused(usize::MAX, |e| matches!(e, Error::LengthOverflow { len: usize::MAX, element_size: 1, .. }))
            },
        },
        Case {
            name: "PinnedPool::rent: 4 EiB (no mapping that large)",
            run: || refused(1 << 62, |e| matches!(e, Error::OutOfMemory { .. } | Error::Os { .. })),
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- HostBuffer::try_from_raw_parts and from_raw_parts ----

pub(super) mod host_buffer_raw_parts {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An owning deleter that counts its calls.
    fn counted<T>() -> (Arc<AtomicUsize>, Ownership<T>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        (
            calls,
            Ownership::owned(move |_, _| {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "try_from_raw_parts: null pointer with 3 elements",
            run: || {
                let (calls, owner) = counted::<f32>();
                // SAFETY: the call fails before the pointer is used.
                let r = unsafe { HostBuffer::<f32>::try_from_raw_parts(std::ptr::null_mut(), 3, owner) };
                fails!(
                    r,
                    Error::InvalidArgument { option: "HostBuffer::from_raw_parts(ptr)", value, .. } if value == "null with len 3"
                );
                assert_eq!(calls.load(Ordering::SeqCst), 0, "a refused wrap freed the memory");
            },
        },
        Case {
            name: "try_from_raw_parts: u32 pointer off by one byte",
            run: || {
                let mut words = [5u32; 4];
                let (calls, owner) = counted::<u32>();
                let misaligned = (words.as_mut_ptr() as *mut u8).wrapping_add(1).cast::<u32>();
                // SAFETY: the call fails on the alignment before the pointer is used.
                let r = unsafe { HostBuffer::try_from_raw_parts(misaligned, 2, owner) };
                fails!(r, Error::InvalidAlignment { alignment: 1, element_align: 4, type_name: "u32", .. });
                assert_eq!(calls.load(Ordering::SeqCst), 0);
                assert_eq!(words, [5; 4]);
            },
        },
        Case {
            name: "try_from_raw_parts: u64 pointer off by four bytes",
            run: || {
                let mut words = [5u64; 4];
                let misaligned = (words.as_mut_ptr() as *mut u8).wrapping_add(4).cast::<u64>();
                // SAFETY: the call fails on the alignment before the pointer is used.
                let r = unsafe { HostBuffer::try_from_raw_parts(misaligned, 2, Ownership::Borrowed) };
                fails!(r, Error::InvalidAlignment { alignment: 4, element_align: 8, .. });
                assert_eq!(words, [5; 4]);
            },
        },
        Case {
            name: "try_from_raw_parts: len * size_of::<T>() overflows",
            run: || {
                let mut one = 0u64;
                let (calls, owner) = counted::<u64>();
                // SAFETY: the call fails on the length before the pointer is used.
                let r = unsafe { HostBuffer::try_from_raw_parts(&mut one as *mut u64, usize::MAX, owner) };
                fails!(r, Error::LengthOverflow { len: usize::MAX, element_size: 8, .. });
                assert_eq!(calls.load(Ordering::SeqCst), 0);
            },
        },
        // The unchecked shape refuses the same inputs, by panicking (they break its contract).
        Case {
            name: "from_raw_parts: null pointer panics without freeing",
            run: || {
                let (calls, owner) = counted::<f32>();
                let refused = catch_unwind(AssertUnwindSafe(|| {
                    // SAFETY: the call fails on the null pointer before it is used.
                    unsafe { HostBuffer::<f32>::from_raw_parts(std::ptr::null_mut(), 3, owner) }
                }));
                let payload = refused.expect_err("from_raw_parts accepted a null pointer");
                let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
                assert!(msg.contains("try_from_raw_parts"), "{msg}");
                assert_eq!(calls.load(Ordering::SeqCst), 0);
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- ops: bounds-checked host operations ----

pub(super) mod ops {
    #![allow(clippy::reversed_empty_ranges)]
    use super::*;
    use dotcompute_memory::ops;

    const TEN: [u32; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

    pub const CASES: &[Case] = &[
        Case {
            name: "ops::copy_bytes: lengths differ",
            run: || {
                let mut dst = [1u8; 10];
                fails!(
                    ops::copy_bytes(&mut dst, &[2u8; 11]),
                    Error::LengthMismatch { operation: "ops::copy_bytes", expected: 10, actual: 11 }
                );
                assert_eq!(dst, [1; 10]);
            },
        },
        Case {
            name: "ops::copy: lengths differ",
            run: || {
                let mut dst = TEN;
                fails!(
                    ops::copy(&mut dst, &[2u32; 9]),
                    Error::LengthMismatch { operation: "ops::copy", expected: 10, actual: 9 }
                );
                assert_eq!(dst, TEN);
            },
        },
        Case {
            name: "ops::convert: lengths differ",
            run: || {
                let mut dst = [9.0f32; 2];
                fails!(
                    ops::convert(&mut dst, &[1i32, 2, 3]),
                    Error::LengthMismatch { operation: "ops::convert", expected: 2, actual: 3 }
                );
                assert_eq!(dst, [9.0; 2]);
            },
        },
        Case {
            name: "ops::copy_at: source does not fit",
            run: || {
                let mut dst = TEN;
                fails!(ops::copy_at(&mut dst, 8, &[1, 2, 3]), Error::OutOfRange { start: 8, end: 11, len: 10 });
                assert_eq!(dst, TEN);
            },
        },
        Case {
            name: "ops::copy_at: offset + len overflows",
            run: || {
                let mut dst = TEN;
                fails!(
                    ops::copy_at(&mut dst, usize::MAX, &[1]),
                    Error::OutOfRange { start: usize::MAX, end: usize::MAX, len: 10 }
                );
                assert_eq!(dst, TEN);
            },
        },
        Case {
            name: "ops::copy_within: source range past the end",
            run: || {
                let mut buf = TEN;
                fails!(ops::copy_within(&mut buf, 0..11, 0), Error::OutOfRange { start: 0, end: 11, len: 10 });
                assert_eq!(buf, TEN);
            },
        },
        Case {
            name: "ops::copy_within: destination past the end",
            run: || {
                let mut buf = TEN;
                fails!(ops::copy_within(&mut buf, 0..4, 7), Error::OutOfRange { start: 7, end: 11, len: 10 });
                assert_eq!(buf, TEN);
            },
        },
        Case {
            name: "ops::fill_range: past the end",
            run: || {
                let mut buf = TEN;
                fails!(ops::fill_range(&mut buf, 8..11, 1), Error::OutOfRange { start: 8, end: 11, len: 10 });
                assert_eq!(buf, TEN);
            },
        },
        Case {
            name: "ops::fill_range: reversed",
            run: || {
                let mut buf = TEN;
                fails!(ops::fill_range(&mut buf, 5..2, 1), Error::ReversedRange { start: 5, end: 2 });
                assert_eq!(buf, TEN);
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}
