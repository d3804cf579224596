//! The `Backend` trait called directly: alignments, ranges past the end or overflowing, and handles
//! of another instance of the backend.

use super::*;

// ---- the Backend trait, called directly ----

pub(super) mod backend_calls {
    use super::*;
    use dotcompute_memory::backend;

    const PATTERN: [u8; 64] = {
        let mut p = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            p[i] = i as u8 + 1;
            i += 1;
        }
        p
    };

    /// `f` on the manager's backend and a 64-byte allocation of it holding `PATTERN`, which
    /// must still hold it afterwards.
    fn with_allocation(mm: &MemoryManager, f: fn(&dyn Backend, &DeviceMemory)) {
        let be = mm.backend();
        let m = be.allocate(64, 64).unwrap();
        be.write(&m, 0, &PATTERN).unwrap();
        f(be, &m);
        let mut back = [0u8; 64];
        be.read(&m, 0, &mut back).unwrap();
        assert_eq!(back, PATTERN, "a refused call changed the allocation");
        be.free(m).unwrap();
    }

    /// Another instance of the manager's backend (under the environment lock: a driver may read the
    /// environment).
    fn another_instance(mm: &MemoryManager) -> Arc<dyn Backend> {
        let _guard = env::lock();
        backend::open(mm.backend().name()).unwrap()
    }

    /// `f` with a 64-byte allocation of another instance of the manager's backend, which
    /// must still hold `PATTERN` afterwards.
    fn with_foreign(mm: &MemoryManager, f: fn(&dyn Backend, &DeviceMemory)) {
        let other = another_instance(mm);
        let m = other.allocate(64, 64).unwrap();
        other.write(&m, 0, &PATTERN).unwrap();
        f(mm.backend(), &m);
        let mut back = [0u8; 64];
        other.read(&m, 0, &mut back).unwrap();
        assert_eq!(back, PATTERN, "a refused call changed the other instance's allocation");
        other.free(m).unwrap();
    }

    fn out_of_range(e: &Error, start: usize, end: usize) -> bool {
        matches!(e, Error::OutOfRange { start: s, end: en, len: 64 } if (*s, *en) == (start, end))
    }

    pub const CASES: &[ManagerCase] = &[
        on_manager("Backend::allocate: alignment not a power of two", |mm| {
            fails!(mm.backend().allocate(64, 48), Error::InvalidArgument { option: "alignment", .. });
        }),
        on_manager("Backend::allocate: alignment 0", |mm| {
            fails!(mm.backend().allocate(64, 0), Error::InvalidArgument { option: "alignment", .. });
        }),
        on_manager("Backend::write: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.write(m, 62, &[9, 9, 9]), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 62, 65), "{e:?}");
            })
        }),
        on_manager("Backend::write: offset + len overflows", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.write(m, usize::MAX, &[9]), Error::OutOfRange { .. });
                assert!(out_of_range(&e, usize::MAX, usize::MAX), "{e:?}");
            })
        }),
        on_manager("Backend::write_async: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let src = [9u8; 8];
                // SAFETY: `src` outlives the call, which fails before enqueuing anything.
                let r = unsafe { be.write_async(0, m, 60, src.as_ptr(), src.len()) };
                let e = fails!(r.map(drop), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 60, 68), "{e:?}");
            })
        }),
        on_manager("Backend::read: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let mut out = [7u8; 5];
                let e = fails!(be.read(m, 60, &mut out), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 60, 65), "{e:?}");
                assert_eq!(out, [7; 5]);
            })
        }),
        on_manager("Backend::copy: source range past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.copy(m, 40, m, 0, 30), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 40, 70), "{e:?}");
            })
        }),
        on_manager("Backend::copy: destination range past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.copy(m, 0, m, 50, 20), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 50, 70), "{e:?}");
            })
        }),
        on_manager("Backend::fill: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.fill(m, 10, 60, 0xEE), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 10, 70), "{e:?}");
            })
        }),
        on_manager("Backend::write, fill, read: handle of another instance", |mm| {
            with_foreign(mm, |be, m| {
                fails!(be.write(m, 0, &[1; 8]), Error::InvalidHandle { backend, .. } if *backend == be.name());
                fails!(be.fill(m, 0, 8, 1), Error::InvalidHandle { .. });
                let mut out = [7u8; 8];
                fails!(be.read(m, 0, &mut out), Error::InvalidHandle { .. });
                assert_eq!(out, [7; 8]);
            })
        }),
        on_manager("Backend::copy: handle of another instance", |mm| {
            with_foreign(mm, |be, foreign| {
                let own = be.allocate(64, 64).unwrap();
                be.write(&own, 0, &PATTERN).unwrap();
                fails!(be.copy(foreign, 0, &own, 0, 8), Error::InvalidHandle { .. });
                fails!(be.copy(&own, 0, foreign, 0, 8), Error::InvalidHandle { .. });
                let mut back = [0u8; 64];
                be.read(&own, 0, &mut back).unwrap();
                assert_eq!(back, PATTERN);
                be.free(own).unwrap();
            })
        }),
        on_manager("Backend::free: handle of another instance", |mm| {
            let other = another_instance(mm);
            let m = other.allocate(64, 64).unwrap();
            // The handle is consumed; its instance frees the memory when it is dropped.
            fails!(mm.backend().free(m), Error::InvalidHandle { .. });
            let probe = other.allocate(64, 64).unwrap();
            other.free(probe).expect("the other instance still works");
        }),
    ];

    #[test]
    fn matrix() {
        run_manager_cases(CASES);
    }
}
