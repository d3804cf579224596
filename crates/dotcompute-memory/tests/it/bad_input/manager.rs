//! A manager's own inputs: `ManagerOptions` that contradict each other, device memory exhausted
//! (the simulator's capacity and `ManagerOptions::device_memory_limit`), and byte counts
//! (`units::parse_byte_count`).

use super::*;

// ---- ManagerOptions that contradict each other ----

pub(super) mod manager_options {
    use super::*;
    use std::time::Duration;

    pub const CASES: &[Case] = &[
        Case {
            name: "ManagerOptions: min_pool_bytes above max_pool_bytes",
            run: || {
                let o = quiet().with_min_pool_bytes(2000).with_max_pool_bytes(1000);
                fails!(
                    MemoryManager::with_backend(CpuBackend::new(), o),
                    Error::InvalidArgument { option: "ManagerOptions::min_pool_bytes", value, .. }
                        if value == "2000 (max_pool_bytes is 1000)"
                );
            },
        },
        Case {
            name: "ManagerOptions: min_pool_bytes 1 with max_pool_bytes 0",
            run: || {
                let o = quiet().with_min_pool_bytes(1).with_max_pool_bytes(0);
                fails!(
                    MemoryManager::with_backend(SimBackend::new(SimOptions::default()), o),
                    Error::InvalidArgument { option: "ManagerOptions::min_pool_bytes", value, .. }
                        if value == "1 (max_pool_bytes is 0)"
                );
            },
        },
        Case {
            name: "ManagerOptions: device_memory_limit Some(0)",
            run: || {
                let o = quiet().with_device_memory_limit(Some(0));
                fails!(
                    open_with("sim", o),
                    Error::InvalidArgument { option: "ManagerOptions::device_memory_limit", value, .. } if value == "Some(0)"
                );
            },
        },
        Case {
            name: "ManagerOptions: maintenance_interval zero",
            run: || {
                // A shared backend: the refused manager must not keep a handle to it.
                let backend: Arc<dyn Backend> = Arc::new(SimBackend::new(SimOptions::default()));
                let o = ManagerOptions::default().with_maintenance_interval(Some(Duration::ZERO));
                fails!(
                    MemoryManager::with_shared_backend(backend.clone(), o),
                    Error::InvalidArgument { option: "ManagerOptions::maintenance_interval", value, .. } if value == "0s"
                );
                assert_eq!(Arc::strong_count(&backend), 1, "a refused manager kept the backend");
            },
        },
    ];

    fn open_with(name: &str, options: ManagerOptions) -> Result<MemoryManager> {
        let _guard = env::lock();
        MemoryManager::with_backend_name(name, options)
    }

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn manager_options_that_contradict_each_other() {
        let err =
            MemoryManager::with_backend(CpuBackend::new(), quiet().with_min_pool_bytes(2000).with_max_pool_bytes(1000))
                .unwrap_err();
        match &err {
            Error::InvalidArgument { option, value, .. } => {
                assert!(option.contains("min_pool_bytes"), "{option}");
                assert!(value.contains("2000") && value.contains("1000"), "{value}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let err =
            open_with("sim", ManagerOptions::default().with_maintenance_interval(Some(std::time::Duration::ZERO)))
                .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { option, .. } if option.contains("maintenance_interval")),
            "{err:?}"
        );
        // Equal bounds are fine.
        MemoryManager::with_backend(CpuBackend::new(), quiet().with_min_pool_bytes(1000).with_max_pool_bytes(1000))
            .unwrap();
    }

    #[test]
    fn a_zero_limit_is_rejected_with_a_reason() {
        let err =
            MemoryManager::with_backend(CpuBackend::new(), ManagerOptions::default().with_device_memory_limit(Some(0)))
                .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { option: "ManagerOptions::device_memory_limit", .. }), "{err}");
        assert!(err.to_string().contains("use None for no limit"), "{err}");
    }
}

// ---- device memory exhausted: the simulator's capacity, and ManagerOptions::device_memory_limit ----

pub(super) mod out_of_memory {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A manager on a simulated device of 1 MiB, and the device.
    fn small_device() -> (Arc<SimBackend>, MemoryManager) {
        let sim = Arc::new(SimBackend::new(SimOptions::default().with_capacity(MIB)));
        let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
        (sim, mm)
    }

    /// `f` on a 2 MiB HostOnly buffer of a 1 MiB device (with a second one to copy from): out
    /// of memory with the whole device free, nothing changed, the device still empty.
    fn too_big(check: Check, f: fn(&MemoryManager, &mut UnifiedBuffer<u8>, &UnifiedBuffer<u8>) -> Result<()>) {
        let (sim, mm) = small_device();
        let mut big = mm.allocate_from(&vec![3u8; 2 * MIB]).unwrap();
        let src = mm.allocate_from(&vec![6u8; 2 * MIB]).unwrap();
        let (before, src_before) = (watch(&big), watch(&src));
        let c = counters(&mm);
        fails!(f(&mm, &mut big, &src), Error::OutOfMemory { backend: "sim", free, .. } if *free == MIB as u64);
        check_counters(&mm, &c, check, "2 MiB on a 1 MiB device");
        before.check(&big, "2 MiB on a 1 MiB device");
        src_before.check(&src, "the source");
        assert_eq!(sim.used(), 0);
    }

    /// `f` on a 600 KiB buffer whose device part is current (Synchronized, DeviceDirty), on a
    /// 1 MiB device: the call needs a second device block, which does not fit; nothing changed.
    fn second_block(f: fn(&mut UnifiedBuffer<u8>) -> Result<()>) {
        for state in [Synchronized, DeviceDirty] {
            let (sim, mm) = small_device();
            let mut b = mm.allocate_from(&vec![4u8; 600 << 10]).unwrap();
            if state == Synchronized {
                b.synchronize().unwrap()
            } else {
                b.mark_device_dirty().unwrap()
            }
            let used = sim.used();
            let before = watch(&b);
            let c = counters(&mm);
            fails!(f(&mut b), Error::OutOfMemory { backend: "sim", free, .. } if *free == (MIB - used) as u64);
            check_counters(&mm, &c, Check::PoolsMayMove, &format!("{state:?}"));
            before.check(&b, &format!("{state:?}"));
            assert_eq!(sim.used(), used);
        }
    }

    /// A manager on `name` allowed 1 MiB of device memory.
    fn limited(name: &str) -> MemoryManager {
        let _guard = env::lock();
        MemoryManager::with_backend_name(name, quiet().with_device_memory_limit(Some(MIB as u64))).unwrap()
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "sim capacity: ensure_on_device",
            run: || too_big(Check::Everything, |_, b, _| b.ensure_on_device()),
        },
        Case { name: "sim capacity: synchronize", run: || too_big(Check::Everything, |_, b, _| b.synchronize()) },
        Case {
            name: "sim capacity: mark_device_dirty",
            run: || too_big(Check::Everything, |_, b, _| b.mark_device_dirty()),
        },
        Case {
            name: "sim capacity: synchronize_async",
            run: || too_big(Check::Everything, |_, b, _| pollster::block_on(b.synchronize_async())),
        },
        Case {
            name: "sim capacity: upload",
            run: || too_big(Check::Everything, |_, b, _| b.upload(&vec![5u8; 2 * MIB])),
        },
        Case {
            name: "sim capacity: copy_from_async",
            run: || // The data goes into a staging block first, which returns to the pool.
            too_big(Check::PoolsMayMove, |_, b, _| pollster::block_on(b.copy_from_async(&vec![5u8; 2 * MIB]))),
        },
        Case {
            name: "sim capacity: copy_from_buffer",
            run: || too_big(Check::Everything, |_, b, src| b.copy_from_buffer(src)),
        },
        Case {
            name: "sim capacity: allocate_device",
            run: || too_big(Check::Everything, |mm, _, _| mm.allocate_device::<u8>(2 * MIB).map(drop)),
        },
        Case {
            name: "sim capacity: upload needs a second block",
            run: || second_block(|b| b.upload(&vec![5u8; 600 << 10])),
        },
        Case {
            name: "sim capacity: copy_from_async needs a second block",
            run: || second_block(|b| pollster::block_on(b.copy_from_async(&vec![5u8; 600 << 10]))),
        },
        Case {
            name: "sim capacity: execute reports the upload failed",
            run: || {
                let (sim, mm) = small_device();
                let mut big = mm.allocate_from(&vec![3u8; 2 * MIB]).unwrap();
                let before = watch(&big);
                let c = counters(&mm);
                let data = vec![5u8; 2 * MIB];
                let mut batch = TransferBatch::new();
                batch.upload(&data, &mut big).unwrap();
                let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
                assert_eq!(report.failed, 1, "{report:?}");
                let msg = report.transfers[0].error.as_ref().map(|e| e.message()).unwrap_or_default();
                assert!(msg.starts_with("out of memory on sim"), "{msg}");
                check_counters(&mm, &c, Check::PoolsMayMove, "execute");
                before.check(&big, "execute");
                assert_eq!(sim.used(), 0);
            },
        },
        Case {
            name: "device_memory_limit: allocate on cpu",
            run: || {
                let mm = limited("cpu");
                let c = counters(&mm);
                fails!(
                    mm.allocate::<u8>(2 * MIB),
                    Error::MemoryLimitExceeded { backend: "cpu", limit, held: 0, .. } if *limit == MIB as u64
                );
                check_counters(&mm, &c, Check::Everything, "limited cpu");
            },
        },
        Case {
            name: "device_memory_limit: allocate_device on sim",
            run: || {
                let mm = limited("sim");
                let c = counters(&mm);
                fails!(
                    mm.allocate_device::<u8>(2 * MIB),
                    Error::MemoryLimitExceeded { backend: "sim", limit, held: 0, .. } if *limit == MIB as u64
                );
                check_counters(&mm, &c, Check::Everything, "limited sim");
            },
        },
        Case {
            name: "device_memory_limit: ensure_on_device on sim",
            run: || {
                let mm = limited("sim");
                let mut b = mm.allocate_from(&vec![1u8; 2 * MIB]).unwrap();
                let before = watch(&b);
                let c = counters(&mm);
                fails!(b.ensure_on_device(), Error::MemoryLimitExceeded { backend: "sim", limit, .. } if *limit == MIB as u64);
                check_counters(&mm, &c, Check::Everything, "limited sim");
                before.check(&b, "limited sim");
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn allocation_beyond_sim_capacity_names_requested_and_available() {
        let (sim, mm) = small_device();

        // Device memory is allocated lazily: the host part alone fits anywhere.
        let mut big = mm.allocate_from(&vec![3u8; 2 << 20]).unwrap();
        let before = snapshot(&big);
        let err = big.ensure_on_device().unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { backend: "sim", requested, free, cached: 0, .. }
                if requested == 2 << 20 && free == 1 << 20),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&(2u64 << 20).to_string()) && msg.contains(&(1u64 << 20).to_string()), "{msg}");
        assert_eq!(snapshot(&big), before);
        for r in [big.synchronize(), big.mark_device_dirty(), pollster::block_on(big.synchronize_async())] {
            assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
            assert_eq!(snapshot(&big), before);
        }
        assert_eq!(sim.used(), 0);

        // With part of the device in use, "available" is what is left.
        let mut a = mm.allocate_from(&vec![1u8; 512 << 10]).unwrap();
        a.ensure_on_device().unwrap();
        let mut b = mm.allocate_from(&vec![2u8; 768 << 10]).unwrap();
        let before_b = snapshot(&b);
        let err = b.ensure_on_device().unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { requested: 786_432, free: 524_288, .. }),
            "requested 768 KiB with 512 KiB free: {err:?}"
        );
        assert_eq!(snapshot(&b), before_b);
        // A device copy into a buffer without room fails the same way and changes nothing.
        let err = b.slice_mut(0..512 << 10).unwrap().copy_from_buffer(&a).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
        assert_eq!(snapshot(&b), before_b);
        assert_eq!(a.state(), Synchronized);
        assert_eq!(sim.used(), 512 << 10);
        drop((a, b, big));
        assert_eq!(mm.statistics().active_allocations, 0);
    }
}

// ---- units::parse_byte_count ----

pub(super) mod parse_byte_count {
    use super::*;
    use dotcompute_memory::units::parse_byte_count;

    /// `text` is refused with a message containing `fragment`.
    fn refused(text: &str, fragment: &str) {
        let msg = parse_byte_count(text).expect_err(text);
        assert!(msg.contains(fragment), "{text:?}: {msg}");
    }

    pub const CASES: &[Case] = &[
        Case { name: "parse_byte_count: empty", run: || refused("", "is not a byte count") },
        Case { name: "parse_byte_count: blanks", run: || refused("   ", "is not a byte count") },
        Case { name: "parse_byte_count: a unit without a number", run: || refused("GiB", "is not a byte count") },
        Case { name: "parse_byte_count: negative", run: || refused("-1", "is not a byte count") },
        Case { name: "parse_byte_count: a fraction", run: || refused("1.5GiB", "unknown unit `.5gib`") },
        Case { name: "parse_byte_count: a word for the unit", run: || refused("12 parsecs", "unknown unit `parsecs`") },
        Case { name: "parse_byte_count: an unknown one-letter unit", run: || refused("3X", "unknown unit `x`") },
        Case {
            name: "parse_byte_count: more digits than u64 holds",
            run: || refused("99999999999999999999", "too large"),
        },
        Case { name: "parse_byte_count: overflows once scaled", run: || refused("20000000T", "too large") },
        Case { name: "parse_byte_count: zero", run: || refused("0", "zero") },
        Case { name: "parse_byte_count: zero with a unit", run: || refused("0K", "zero") },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}
