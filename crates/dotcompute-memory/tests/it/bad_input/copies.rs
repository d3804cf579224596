//! Copies into and out of a buffer with the wrong length or from another manager's buffer
//! (`copy_from`, `copy_to`, `upload`, `copy_from_buffer`, their asynchronous forms), and
//! `mark_device_dirty` over host writes not yet synchronized.

use super::*;

// ---- UnifiedBuffer::copy_from ----

pub(super) mod copy_from {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_from: empty source", |_, b| {
            fails!(b.copy_from(&[]), Error::LengthMismatch { operation: "copy_from", expected: 10, actual: 0 });
        }),
        case("copy_from: source one short", |_, b| {
            fails!(b.copy_from(&[7; 9]), Error::LengthMismatch { operation: "copy_from", expected: 10, actual: 9 });
        }),
        case("copy_from: source one long", |_, b| {
            fails!(b.copy_from(&[7; 11]), Error::LengthMismatch { operation: "copy_from", expected: 10, actual: 11 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn copy_from_too_short_and_too_long() {
        for mm in managers() {
            for mut b in buffers_in_every_state(&mm) {
                let before = snapshot(&b);
                for n in [0usize, 9, 11, 100] {
                    let src = vec![7u32; n];
                    let err = b.copy_from(&src).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_from", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    let err = pollster::block_on(b.copy_from_async(&src)).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    // The same on a view: the view's length is what counts.
                    let err = b.slice_mut(2..5).unwrap().copy_from(&src[..n.min(2)]).unwrap_err();
                    assert!(matches!(err, Error::LengthMismatch { expected: 3, .. }), "{err:?}");
                    assert_eq!(snapshot(&b), before, "{:?} after copy_from of {n} elements", before.state);
                }
            }
        }
    }
}

// ---- UnifiedBuffer::copy_to ----

pub(super) mod copy_to {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_to: empty output", |_, b| {
            fails!(b.copy_to(&mut []), Error::LengthMismatch { operation: "copy_to", expected: 10, actual: 0 });
        }),
        case("copy_to: output one short", |_, b| {
            let mut out = [7u32; 9];
            fails!(b.copy_to(&mut out), Error::LengthMismatch { operation: "copy_to", expected: 10, actual: 9 });
            assert_eq!(out, [7; 9], "a failed copy_to wrote into the output");
        }),
        case("copy_to: output one long", |_, b| {
            let mut out = [7u32; 11];
            fails!(b.copy_to(&mut out), Error::LengthMismatch { operation: "copy_to", expected: 10, actual: 11 });
            assert_eq!(out, [7; 11], "a failed copy_to wrote into the output");
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn copy_to_too_short_and_too_long() {
        for mm in managers() {
            for mut b in buffers_in_every_state(&mm) {
                let before = snapshot(&b);
                for n in [0usize, 9, 11, 100] {
                    let mut out = vec![7u32; n];
                    let err = b.copy_to(&mut out).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_to", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    assert!(out.iter().all(|&x| x == 7), "a failed copy_to wrote into the output");
                    let err = pollster::block_on(b.copy_to_async(&mut out)).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    let err = b.slice(1..4).unwrap().copy_to(&mut out).unwrap_err();
                    assert!(matches!(err, Error::LengthMismatch { expected: 3, .. }) || n == 3, "{err:?}");
                    assert!(out.iter().all(|&x| x == 7));
                    assert_eq!(snapshot(&b), before);
                }
            }
        }
    }
}

// ---- UnifiedBuffer::upload ----

pub(super) mod upload {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("upload: empty data", |_, b| {
            fails!(b.upload(&[]), Error::LengthMismatch { operation: "upload", expected: 10, actual: 0 });
        }),
        case("upload: data one short", |_, b| {
            fails!(b.upload(&[7; 9]), Error::LengthMismatch { operation: "upload", expected: 10, actual: 9 });
        }),
        case("upload: data one long", |_, b| {
            fails!(b.upload(&[7; 11]), Error::LengthMismatch { operation: "upload", expected: 10, actual: 11 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- UnifiedBuffer::copy_from_buffer ----

pub(super) mod copy_from_buffer {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_from_buffer: shorter buffer", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.short),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 7 }
            );
        }),
        case("copy_from_buffer: longer buffer", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.long),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 12 }
            );
        }),
        case("copy_from_buffer: shorter view", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.short.slice(0..3).unwrap()),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 3 }
            );
        }),
        case("copy_from_buffer: empty view", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.long.slice(12..).unwrap()),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 0 }
            );
        }),
        case("copy_from_buffer: buffer of another manager, of another length", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.foreign.slice(0..9).unwrap()),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 9 }
            );
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn copy_from_buffer_with_different_lengths() {
        for mm in managers() {
            let src = mm.allocate_from(&[9u32; 7]).unwrap();
            for mut dst in buffers_in_every_state(&mm) {
                let before = snapshot(&dst);
                let src_before = snapshot(&src);
                let err = dst.copy_from_buffer(&src).unwrap_err();
                assert!(
                    matches!(err, Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 7 }),
                    "{err:?}"
                );
                let err = dst.copy_from_buffer(&src.slice(0..3).unwrap()).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 10, actual: 3, .. }), "{err:?}");
                let err = dst.slice_mut(0..2).unwrap().copy_from_buffer(&src).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 2, actual: 7, .. }), "{err:?}");
                let err = dst.slice_mut(1..9).unwrap().copy_from_buffer(&src.slice(1..).unwrap()).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 8, actual: 6, .. }), "{err:?}");
                assert_eq!(snapshot(&dst), before);
                assert_eq!(snapshot(&src), src_before);
            }
        }
    }

    #[test]
    fn copy_from_buffer_between_managers_of_other_lengths_changes_nothing() {
        for (a, b) in [(cpu(), cpu()), (sim(), sim()), (cpu(), sim()), (sim(), cpu())] {
            let mut src = b.allocate_from(&[5u32; 11]).unwrap();
            src.mark_device_dirty().unwrap();
            for mut dst in buffers_in_every_state(&a) {
                let before = snapshot(&dst);
                let err = dst.copy_from_buffer(&src).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 10, actual: 11, .. }), "{err:?}");
                let err = dst.slice_mut(2..4).unwrap().copy_from_buffer(&src.slice(0..3).unwrap()).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 2, actual: 3, .. }), "{err:?}");
                assert_eq!(snapshot(&dst), before);
                assert_eq!(src.state(), DeviceDirty);
            }
        }
    }
}

// ---- copy_from_async and copy_to_async ----

pub(super) mod asynchronous {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_from_async: empty data", |_, b| {
            fails!(
                pollster::block_on(b.copy_from_async(&[])),
                Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual: 0 }
            );
        }),
        case("copy_from_async: data one short", |_, b| {
            fails!(
                pollster::block_on(b.copy_from_async(&[7; 9])),
                Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual: 9 }
            );
        }),
        case("copy_from_async: data one long", |_, b| {
            fails!(
                pollster::block_on(b.copy_from_async(&[7; 11])),
                Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual: 11 }
            );
        }),
        case("copy_to_async: empty output", |_, b| {
            fails!(
                pollster::block_on(b.copy_to_async(&mut [])),
                Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual: 0 }
            );
        }),
        case("copy_to_async: output one short", |_, b| {
            let mut out = [7u32; 9];
            fails!(
                pollster::block_on(b.copy_to_async(&mut out)),
                Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual: 9 }
            );
            assert_eq!(out, [7; 9], "a refused copy_to_async wrote into the output");
        }),
        case("copy_to_async: output one long", |_, b| {
            let mut out = [7u32; 11];
            fails!(
                pollster::block_on(b.copy_to_async(&mut out)),
                Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual: 11 }
            );
            assert_eq!(out, [7; 11], "a refused copy_to_async wrote into the output");
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- mark_device_dirty over unsynchronized host writes ----

pub(super) mod mark_device_dirty {
    use super::*;

    pub const CASES: &[BufferCase] = &[BufferCase {
        only: Some(HostDirty),
        ..case("mark_device_dirty: host part written through as_mut_slice", |_, b| {
            let (h, d) = b.epochs();
            fails!(
                b.mark_device_dirty(),
                Error::ConcurrentModification { operation: "mark_device_dirty", host_epoch, device_epoch }
                    if (*host_epoch, *device_epoch) == (h, d) && h > d
            );
        })
    }];

    /// A Synchronized buffer written on the host by `write`, then marked device-dirty: refused,
    /// naming the epochs, with nothing changed.
    fn refused_after(mm: &MemoryManager, write: fn(&mut UnifiedBuffer<u32>)) {
        for state in [Synchronized, DeviceDirty] {
            let mut b = mm.allocate_from(&[1u32, 2, 3, 4, 5, 6]).unwrap();
            if state == Synchronized {
                b.synchronize().unwrap()
            } else {
                b.mark_device_dirty().unwrap()
            }
            write(&mut b);
            assert_eq!(b.state(), HostDirty, "from {state:?}");
            let at = format!("[{}] from {state:?}", mm.backend().name());
            let before = watch(&b);
            let c = counters(mm);
            fails!(
                b.mark_device_dirty(),
                Error::ConcurrentModification { operation: "mark_device_dirty", host_epoch, device_epoch }
                    if (*host_epoch, *device_epoch) == before.snap.epochs
            );
            check_counters(mm, &c, Check::Everything, &at);
            before.check(&b, &at);
        }
    }

    pub const OWN_CASES: &[ManagerCase] = &[
        ManagerCase {
            check: Check::InCase,
            ..on_manager("mark_device_dirty: host part written through a view", |mm| {
                refused_after(mm, |b| b.slice_mut(2..4).unwrap().copy_from(&[30, 40]).unwrap())
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("mark_device_dirty: host part filled", |mm| refused_after(mm, |b| b.fill(5).unwrap()))
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("mark_device_dirty: host part written by copy_from", |mm| {
                refused_after(mm, |b| b.copy_from(&[6, 5, 4, 3, 2, 1]).unwrap())
            })
        },
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
        run_manager_cases(OWN_CASES);
    }

    #[test]
    fn device_write_over_unsynchronized_host_writes_is_a_conflict() {
        for mm in managers() {
            let mut b = mm.allocate_from(&[1u32, 2, 3]).unwrap();
            b.ensure_on_device().unwrap();
            b.as_mut_slice().unwrap()[1] = 20;
            let before = snapshot(&b);
            assert_eq!(before.state, HostDirty);
            match b.mark_device_dirty().unwrap_err() {
                Error::ConcurrentModification { operation: "mark_device_dirty", host_epoch, device_epoch } => {
                    assert_eq!((host_epoch, device_epoch), before.epochs);
                    assert!(host_epoch > device_epoch);
                }
                other => panic!("expected ConcurrentModification, got {other:?}"),
            }
            assert_eq!(snapshot(&b), before);
            assert_eq!(b.to_vec().unwrap(), [1, 20, 3]);
        }
    }
}
