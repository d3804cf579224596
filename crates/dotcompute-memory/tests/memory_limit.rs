//! `ManagerOptions::device_memory_limit` (a cap on the device memory one manager holds, cached
//! blocks included) and `MemoryManager::reset_peak_bytes`.

use dotcompute_memory::*;

const MIB: usize = 1 << 20;

fn limited(limit: usize) -> MemoryManager {
    MemoryManager::with_backend(
        CpuBackend::new(),
        ManagerOptions { maintenance_interval: None, device_memory_limit: Some(limit as u64), ..Default::default() },
    )
    .unwrap()
}

#[test]
fn an_allocation_beyond_the_limit_fails_with_the_numbers_and_changes_nothing() {
    let mm = limited(8 * MIB);
    let mut a = mm.allocate::<u8>(3 * MIB).unwrap();
    let mut b = mm.allocate::<u8>(3 * MIB).unwrap();
    a.fill(1).unwrap();
    b.fill(2).unwrap();
    let before = mm.statistics();
    let err = mm.allocate::<u8>(3 * MIB).unwrap_err();
    match &err {
        Error::MemoryLimitExceeded { requested, limit, held, .. } => {
            assert_eq!(*limit, 8 * MIB as u64);
            assert_eq!(*held, 6 * MIB as u64, "{err}");
            assert!(*requested >= 3 * MIB as u64, "{err}");
        }
        other => panic!("expected MemoryLimitExceeded, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("8388608-byte limit") && text.contains("device_memory_limit"), "{text}");
    assert!(err.is_transient(), "memory may be freed by others: retryable");
    // Nothing changed: the two buffers are intact and the counters are where they were.
    assert!(a.as_slice().unwrap().iter().all(|&x| x == 1));
    assert!(b.as_slice().unwrap().iter().all(|&x| x == 2));
    let after = mm.statistics();
    assert_eq!(after.active_allocations, before.active_allocations);
    assert_eq!(after.active_bytes, before.active_bytes);
    assert_eq!(after.reserved_bytes, before.reserved_bytes);
    assert!(after.reserved_bytes <= 8 * MIB as u64, "{after:#?}");
}

/// `requested` is what the caller asked for; `rounded` is its size class, the bytes that did not
/// fit. 3,000,001 bytes round up to 3 MiB (3,145,728): under a 3,100,000-byte limit the request
/// itself would fit, its class does not, and the message says both.
#[test]
fn a_refusal_reports_the_bytes_asked_for_and_their_size_class() {
    let mm = limited(3_100_000);
    let before = mm.statistics();
    for (asked, elements) in
        [(3_000_001u64, mm.allocate::<u8>(3_000_001).err()), (3_000_004, mm.allocate::<u32>(750_001).err())]
    {
        let err = elements.expect("the size class exceeds the limit");
        assert!(
            matches!(err, Error::MemoryLimitExceeded { requested, rounded: 3_145_728, limit: 3_100_000, held: 0, .. }
                if requested == asked),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("requested {asked} bytes")) && text.contains("3145728"), "{text}");
    }
    let after = mm.statistics();
    assert_eq!((after.active_allocations, after.reserved_bytes), (before.active_allocations, before.reserved_bytes));
}

#[test]
fn cached_memory_is_released_to_make_room_under_the_limit() {
    let mm = limited(8 * MIB);
    drop((mm.allocate::<u8>(3 * MIB).unwrap(), mm.allocate::<u8>(3 * MIB).unwrap()));
    assert!(mm.statistics().cached_bytes >= 6 * MIB as u64);
    // 5 MiB does not fit next to the 6 MiB cached: the cache goes back, then it fits.
    let mut c = mm.allocate::<u8>(5 * MIB).unwrap();
    c.fill(9).unwrap();
    let s = mm.statistics();
    assert!(s.reserved_bytes <= 8 * MIB as u64, "{s:#?}");
    assert_eq!(s.active_allocations, 1);
}

#[test]
fn a_limit_below_one_pool_segment_still_serves_small_buffers() {
    // Small requests normally take a 2 MiB segment; under a 1 MiB limit the request alone is
    // allocated instead.
    let mm = limited(MIB);
    let mut small = mm.allocate::<f32>(1000).unwrap();
    small.fill(0.5).unwrap();
    assert!(mm.statistics().reserved_bytes <= MIB as u64);
    assert!(matches!(mm.allocate::<u8>(2 * MIB), Err(Error::MemoryLimitExceeded { .. })));
}

#[test]
fn a_zero_limit_is_rejected_with_a_reason() {
    let err = MemoryManager::with_backend(
        CpuBackend::new(),
        ManagerOptions { device_memory_limit: Some(0), ..Default::default() },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { option: "ManagerOptions::device_memory_limit", .. }), "{err}");
    assert!(err.to_string().contains("use None for no limit"), "{err}");
}

#[test]
fn threads_racing_for_the_limit_never_exceed_it() {
    let limit = 16 * MIB;
    let mm = limited(limit);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let mm = mm.clone();
            s.spawn(move || {
                let mut held = Vec::new();
                for i in 0..40usize {
                    let n = MIB + (i * 4096 + t as usize * 100_000) % (3 * MIB);
                    match mm.allocate::<u8>(n) {
                        Ok(mut b) => {
                            b.fill(t).unwrap();
                            held.push(b);
                        }
                        Err(Error::MemoryLimitExceeded { limit: l, .. }) => {
                            assert_eq!(l, limit as u64);
                            held.clear();
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                    let reserved = mm.statistics().reserved_bytes;
                    assert!(reserved <= limit as u64, "reserved {reserved} over the {limit}-byte limit");
                    assert!(held.iter().all(|b| b.as_slice().unwrap().iter().all(|&x| x == t)));
                }
            });
        }
    });
    let s = mm.statistics();
    assert_eq!(s.active_allocations, 0, "{s:#?}");
    assert!(s.reserved_bytes <= limit as u64);
}

#[test]
fn reset_peak_starts_a_new_peak_at_what_is_alive() {
    let mm = MemoryManager::with_backend(
        CpuBackend::new(),
        ManagerOptions { maintenance_interval: None, ..Default::default() },
    )
    .unwrap();
    drop(mm.allocate::<u8>(4 * MIB).unwrap());
    let keep = mm.allocate::<u8>(MIB).unwrap();
    assert_eq!(mm.statistics().peak_bytes, 4 * MIB as u64);
    assert_eq!(mm.reset_peak_bytes(), 4 * MIB as u64);
    assert_eq!(mm.statistics().peak_bytes, MIB as u64, "the live 1 MiB buffer");
    let more = mm.allocate::<u8>(2 * MIB).unwrap();
    assert_eq!(mm.statistics().peak_bytes, 3 * MIB as u64);
    drop((keep, more));
    assert_eq!(mm.reset_peak_bytes(), 3 * MIB as u64);
    assert_eq!(mm.statistics().peak_bytes, 0);
}

#[test]
fn on_a_discrete_device_a_refused_upload_leaves_the_buffer_as_it_was() {
    let mm = MemoryManager::with_backend(
        SimBackend::new(SimOptions::default()),
        ManagerOptions { maintenance_interval: None, device_memory_limit: Some(4 * MIB as u64), ..Default::default() },
    )
    .unwrap();
    let mut on_device = mm.allocate::<u8>(3 * MIB).unwrap();
    on_device.fill(5).unwrap();
    on_device.ensure_on_device().unwrap();
    // Host memory is not limited: the host part of a second buffer is made, its device part
    // is refused.
    let mut host_only = mm.allocate::<u8>(3 * MIB).unwrap();
    host_only.fill(6).unwrap();
    let state = host_only.state();
    let err = host_only.ensure_on_device().unwrap_err();
    assert!(matches!(err, Error::MemoryLimitExceeded { limit, .. } if limit == 4 * MIB as u64), "{err}");
    assert_eq!(host_only.state(), state);
    assert!(host_only.as_slice().unwrap().iter().all(|&x| x == 6));
    // Once the first buffer is gone (and its memory released from the cache), it fits.
    drop(on_device);
    host_only.ensure_on_device().unwrap();
    assert_eq!(host_only.state(), BufferState::Synchronized);
}
