//! Allocating buffers (`allocate`, `allocate_device`, `allocate_zeroed`: lengths that overflow or
//! exceed any memory, zero lengths) and changing their element type (`cast`, `try_cast` with sizes
//! that do not divide).

use super::*;

// ---- allocate, allocate_device, allocate_zeroed (allocate_from takes a valid slice: no bad input) ----

pub(super) mod allocate {
    use super::*;

    pub const CASES: &[ManagerCase] = &[
        on_manager("allocate: len * size_of::<T>() overflows usize", |mm| {
            fails!(
                mm.allocate::<u64>(usize::MAX / 4),
                Error::LengthOverflow { len, element_size: 8, type_name } if *len == usize::MAX / 4 && type_name.contains("u64")
            );
        }),
        on_manager("allocate: byte size above isize::MAX", |mm| {
            fails!(
                mm.allocate::<u8>(isize::MAX as usize + 1),
                Error::LengthOverflow { len, element_size: 1, .. } if *len == isize::MAX as usize + 1
            );
        }),
        on_manager("allocate_zeroed: usize::MAX elements", |mm| {
            fails!(
                mm.allocate_zeroed::<f64>(usize::MAX),
                Error::LengthOverflow { len: usize::MAX, element_size: 8, .. }
            );
        }),
        on_manager("allocate_device: len * size_of::<T>() overflows usize", |mm| {
            fails!(
                mm.allocate_device::<u32>(usize::MAX / 4 + 1),
                Error::LengthOverflow { len, element_size: 4, .. } if *len == usize::MAX / 4 + 1
            );
        }),
        // Representable, but more than any machine has: which error depends on whether the
        // host or the device allocation fails first, and on the size-class rounding.
        on_manager("allocate: representable but larger than any memory", |mm| {
            fails!(mm.allocate::<u8>(1 << 62), Error::OutOfMemory { .. } | Error::LengthOverflow { .. });
        }),
        on_manager("allocate_device: representable but larger than any device", |mm| {
            fails!(mm.allocate_device::<u8>(1 << 62), Error::OutOfMemory { .. } | Error::LengthOverflow { .. });
        }),
    ];

    #[test]
    fn matrix() {
        run_manager_cases(CASES);
    }

    #[test]
    fn length_overflow_names_len_and_element_size() {
        for mm in managers() {
            let before = mm.statistics();
            let len = usize::MAX / 4;
            let err = mm.allocate::<u64>(len).unwrap_err();
            match &err {
                Error::LengthOverflow { len: l, element_size: 8, type_name } => {
                    assert_eq!(*l, len);
                    assert!(type_name.contains("u64"), "{type_name}");
                }
                other => panic!("expected LengthOverflow, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&len.to_string()) && msg.contains("8 bytes"), "{msg}");
            // Products that fit in usize but not in isize (the limit for any Rust allocation).
            let err = mm.allocate::<u8>(isize::MAX as usize + 1).unwrap_err();
            assert!(matches!(err, Error::LengthOverflow { element_size: 1, .. }), "{err:?}");
            let err = mm.allocate::<u32>(usize::MAX / 4 + 1).unwrap_err();
            assert!(matches!(err, Error::LengthOverflow { element_size: 4, .. }), "{err:?}");
            let err = mm.allocate_zeroed::<f64>(usize::MAX).unwrap_err();
            assert!(matches!(err, Error::LengthOverflow { len: usize::MAX, element_size: 8, .. }), "{err:?}");
            let after = mm.statistics();
            assert_eq!(after.buffers_allocated, before.buffers_allocated, "a failed allocate counts no buffer");
            assert_eq!(after.backend_allocations, before.backend_allocations);
        }
    }

    #[test]
    fn huge_but_representable_lengths_fail_cleanly() {
        // len * size fits in isize, but no machine has that much memory: an error, not a panic
        // or an abort. Which error depends on where the allocation fails (host or device memory).
        for mm in managers() {
            let before = mm.statistics();
            for len in [1usize << 62, (1usize << 62) + 1, isize::MAX as usize - 4095, isize::MAX as usize] {
                let err = mm.allocate::<u8>(len).unwrap_err();
                assert!(
                    matches!(err, Error::OutOfMemory { requested, .. } if requested >= len as u64)
                        || matches!(err, Error::LengthOverflow { len: l, .. } if l >= len),
                    "{len}: {err:?}"
                );
            }
            let after = mm.statistics();
            assert_eq!(after.buffers_allocated, before.buffers_allocated);
            assert_eq!(after.active_allocations, 0);
        }
    }

    #[test]
    fn zero_length_buffers_are_valid_and_empty() {
        let sim_backend = Arc::new(SimBackend::new(SimOptions::default()));
        let sim_mm = MemoryManager::with_shared_backend(sim_backend.clone(), quiet()).unwrap();
        for mm in [cpu(), sim_mm] {
            let mut b = mm.allocate::<f32>(0).unwrap();
            let mut c = mm.allocate::<f32>(0).unwrap();
            assert_eq!((b.len(), b.size_in_bytes()), (0, 0));
            assert!(b.is_empty());
            assert_eq!(b.state(), HostOnly);
            assert!(b.as_slice().unwrap().is_empty());
            assert!(b.as_mut_slice().unwrap().is_empty());
            b.copy_from(&[]).unwrap();
            b.copy_to(&mut []).unwrap();
            b.fill(1.0).unwrap();
            assert!(b.to_vec().unwrap().is_empty());
            b.synchronize().unwrap();
            b.ensure_on_device().unwrap();
            b.ensure_on_host().unwrap();
            b.mark_device_dirty().unwrap();
            b.copy_from_buffer(&c).unwrap();
            c.copy_from_buffer(&b.slice(..).unwrap()).unwrap();
            b.release_device_part().unwrap();
            assert_eq!(b.state(), HostOnly);
            pollster::block_on(b.copy_from_async(&[])).unwrap();
            pollster::block_on(b.copy_to_async(&mut [])).unwrap();
            pollster::block_on(b.synchronize_async()).unwrap();
            assert!(b.slice(..).unwrap().is_empty());
            assert!(b.slice(0..0).unwrap().as_slice().unwrap().is_empty());
            assert!(matches!(b.slice(0..1), Err(Error::OutOfRange { start: 0, end: 1, len: 0 })));
            assert!(matches!(b.copy_from(&[1.0]), Err(Error::LengthMismatch { expected: 0, actual: 1, .. })));
            let bytes = b.cast::<u8>().unwrap();
            assert!(bytes.is_empty());
            assert_eq!(mm.statistics().active_allocations, 2);
            assert_eq!(mm.statistics().active_bytes, 0);
            drop((bytes, c));
            let s = mm.statistics();
            assert_eq!((s.active_allocations, s.buffers_allocated, s.buffers_freed), (0, 2, 2));
            assert_eq!(s.backend_allocations, 0, "empty buffers need no memory");
        }
        assert_eq!(sim_backend.used(), 0);
    }
}

// ---- cast and try_cast ----

pub(super) mod cast {
    use super::*;

    /// `try_cast` of a buffer holding `data`, in each state, to `U`: fails with `expect`'s
    /// variant and hands the buffer back as it was.
    fn try_cast_refused<T: Element + PartialEq + Debug, U: Element>(
        mm: &MemoryManager,
        data: &[T],
        expect: fn(&Error) -> bool,
    ) {
        for b in in_every_state(mm, data) {
            let at = format!("{:?} {} -> {}", b.state(), T::TYPE_TAG.name, U::TYPE_TAG.name);
            let before = watch(&b);
            let c = counters(mm);
            let (b, err) = b.try_cast::<U>().unwrap_err();
            assert!(expect(&err), "{at}: {err:?}");
            check_counters(mm, &c, Check::Everything, &at);
            before.check(&b, &at);
        }
    }

    pub const CASES: &[ManagerCase] = &[
        ManagerCase {
            check: Check::InCase,
            ..on_manager("try_cast: 7 bytes to u32", |mm| {
                try_cast_refused::<u8, u32>(mm, &[1, 2, 3, 4, 5, 6, 7], |e| {
                    matches!(e, Error::CastMismatch { len: 7, from: "u8", from_size: 1, to: "u32", to_size: 4, .. })
                })
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("try_cast: 7 bytes to u16", |mm| {
                try_cast_refused::<u8, u16>(mm, &[1, 2, 3, 4, 5, 6, 7], |e| {
                    matches!(e, Error::CastMismatch { len: 7, from_size: 1, to: "u16", to_size: 2, .. })
                })
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("try_cast: 10 u32 (40 bytes) to u128", |mm| {
                try_cast_refused::<u32, u128>(mm, &[1; 10], |e| {
                    matches!(e, Error::CastMismatch { len: 10, from: "u32", from_size: 4, to: "u128", to_size: 16, .. })
                })
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("cast: 7 bytes to u64 (the buffer is dropped)", |mm| {
                for b in in_every_state(mm, &[1u8, 2, 3, 4, 5, 6, 7]) {
                    let state = b.state();
                    let c = counters(mm);
                    fails!(b.cast::<u64>(), Error::CastMismatch { len: 7, to: "u64", to_size: 8, .. });
                    // Exactly one buffer of 7 bytes went away; nothing was transferred.
                    let now = counters(mm);
                    assert_eq!(
                        (now.active_allocations, now.buffers_freed, now.active_bytes, now.transfers),
                        (c.active_allocations - 1, c.buffers_freed + 1, c.active_bytes - 7, c.transfers),
                        "{state:?}"
                    );
                }
            })
        },
    ];

    #[test]
    fn matrix() {
        run_manager_cases(CASES);
    }

    #[test]
    fn cast_with_sizes_that_do_not_divide() {
        for mm in managers() {
            let mut b = mm.allocate_from(&[1u8, 2, 3, 4, 5, 6, 7]).unwrap();
            b.mark_device_dirty().unwrap();
            let before = snapshot(&b);
            let (b, err) = b.try_cast::<u32>().unwrap_err();
            match err {
                Error::CastMismatch { len: 7, from: "u8", from_size: 1, to: "u32", to_size: 4, .. } => {}
                other => panic!("expected CastMismatch, got {other:?}"),
            }
            assert_eq!(snapshot(&b), before, "try_cast must hand the buffer back intact");
            let (b, err) = b.try_cast::<u16>().unwrap_err();
            assert!(matches!(err, Error::CastMismatch { to_size: 2, .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains('7') && msg.contains("u16"), "{msg}");
            assert_eq!(snapshot(&b), before);
            let err = b.cast::<u64>().unwrap_err();
            assert!(matches!(err, Error::CastMismatch { len: 7, to_size: 8, .. }), "{err:?}");
            assert_eq!(mm.statistics().active_allocations, 0, "cast consumes the buffer on failure");

            // And a cast that fits keeps contents and state.
            let mut w = mm.allocate_from(&[0x0403_0201u32, 0x0807_0605, 0x0c0b_0a09]).unwrap();
            w.mark_device_dirty().unwrap();
            let bytes = w.cast::<u8>().unwrap();
            assert_eq!(bytes.len(), 12);
            assert_eq!(bytes.state(), DeviceDirty);
            let expected: Vec<u8> =
                [0x0403_0201u32, 0x0807_0605, 0x0c0b_0a09].iter().flat_map(|x| x.to_ne_bytes()).collect();
            assert_eq!(bytes.to_vec().unwrap(), expected);
            let back = bytes.cast::<u16>().unwrap();
            assert_eq!(back.len(), 6);
        }
    }
}
