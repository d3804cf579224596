//! `ManagerOptions::device_memory_limit` (a cap on the device memory one manager holds, cached
//! blocks included) and `MemoryManager::reset_peak_bytes`: the limit is never exceeded and the
//! pool's `held` stays exact (checked against the simulator's own count of device bytes), a
//! refusal's numbers add up, and a refused allocation or transfer changes nothing. Malformed
//! limits are in `bad_input::manager`.

use super::snapshot::check_snapshot;
use super::{cpu_with, sim_used, sim_with, KIB, MIB};
use crate::support::managers::quiet;
use crate::support::rng::RngStar;
use dotcompute_memory::units::format_bytes;
use dotcompute_memory::*;
use std::sync::atomic::Ordering;

/// A cpu manager allowed `limit` bytes, with pooling.
fn limited(limit: usize) -> MemoryManager {
    MemoryManager::with_backend(CpuBackend::new(), quiet().with_device_memory_limit(Some(limit as u64))).unwrap()
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
    assert!(text.contains("of its 8388608 bytes (8.0 MiB) limit") && text.contains("device_memory_limit"), "{text}");
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
    let mm = MemoryManager::with_backend(CpuBackend::new(), ManagerOptions::default().with_maintenance_interval(None))
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
        ManagerOptions::default().with_maintenance_interval(None).with_device_memory_limit(Some(4 * MIB as u64)),
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

/// The numbers of a `MemoryLimitExceeded` are consistent with each other and with the pool:
/// `requested` is exactly the `asked` bytes, `rounded` its size class, the one that did not fit.
fn check_limit_error(err: &Error, mm: &MemoryManager, limit: usize, asked: usize) {
    match *err {
        Error::MemoryLimitExceeded { backend, requested, rounded, limit: l, held, cached } => {
            assert_eq!(backend, mm.backend().name());
            assert_eq!(l, limit as u64, "{err}");
            assert_eq!(requested, asked as u64, "requested is not what was asked: {err}");
            assert!(rounded >= requested, "rounded below the request: {err}");
            assert!(held + rounded > l, "the request would have fit: {err}");
            assert!(held <= l, "held over the limit: {err}");
            assert!(cached <= held, "more cached than held: {err}");
            let text = err.to_string();
            let (asked_text, rounded_text) = (format_bytes(requested), format_bytes(rounded));
            assert!(text.contains(&format!("requested {asked_text}; {rounded_text} after rounding")), "{text}");
            // Single-threaded here: what the error says is held is what the pool holds now.
            assert_eq!(held, mm.memory_snapshot().device_reserved_bytes, "{err}");
        }
        ref other => panic!("expected MemoryLimitExceeded, got {other:?}"),
    }
}

/// Mixed device-only allocations, drops, trims and maintenance passes on the simulator: the
/// pool's `held` equals the bytes the device has handed out after every step, never passes the
/// limit, and every refusal names consistent numbers and leaves the counters as they were.
#[test]
fn held_matches_the_device_through_allocations_trims_and_maintenance() {
    let limit = 12 * MIB;
    let mm = sim_with(limit, 64 * MIB);
    let mut rng = RngStar(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<UnifiedBuffer<u8>> = Vec::new();
    let mut refused = 0;
    for step in 0..300 {
        match rng.below(10) {
            0..=5 => {
                let len = match rng.below(3) {
                    0 => 1 + rng.below(64 * KIB),
                    1 => 256 * KIB + rng.below(MIB),
                    _ => MIB + rng.below(4 * MIB),
                };
                let before = mm.statistics();
                match mm.allocate_device::<u8>(len) {
                    Ok(b) => live.push(b),
                    Err(e) => {
                        refused += 1;
                        check_limit_error(&e, &mm, limit, len);
                        let after = mm.statistics();
                        assert_eq!(
                            (after.active_allocations, after.active_bytes, after.buffers_allocated),
                            (before.active_allocations, before.active_bytes, before.buffers_allocated),
                            "step {step}: a refused allocation counted a buffer"
                        );
                    }
                }
            }
            6..=7 if !live.is_empty() => {
                let i = rng.below(live.len());
                drop(live.swap_remove(i));
            }
            8 => {
                mm.trim_excess().unwrap();
            }
            _ => {
                mm.run_maintenance();
            }
        }
        let s = mm.memory_snapshot();
        assert!(s.device_reserved_bytes <= limit as u64, "step {step}: {s:#?}");
        assert_eq!(s.device_reserved_bytes, sim_used(&mm), "step {step}: held drifted from the device: {s:#?}");
    }
    assert!(refused > 0, "the workload never reached the limit: nothing was tested");
    drop(live);
    mm.trim_excess().unwrap();
    assert_eq!((mm.memory_snapshot().device_reserved_bytes, sim_used(&mm)), (0, 0));
}

/// Without pooling every segment goes back when its buffer drops: the full limit is usable
/// again and again (a `held` that leaked would refuse it), and one byte more is refused.
#[test]
fn without_pooling_the_whole_limit_is_reusable() {
    let limit = 4 * MIB;
    let mm = cpu_with(Some(limit), false);
    for round in 0..20u8 {
        let mut b = mm.allocate::<u8>(limit).unwrap_or_else(|e| panic!("round {round}: {e}"));
        b.fill(round).unwrap();
        let s = check_snapshot(&mm);
        assert_eq!(s.device_reserved_bytes, limit as u64);
        assert!(s.segments.iter().all(|g| g.blocks.iter().all(|blk| !blk.free)), "{s:#?}");
        drop(b);
        let s = check_snapshot(&mm);
        assert_eq!(s.device_reserved_bytes, 0, "round {round}: a segment stayed without pooling: {s:#?}");
    }
    let err = mm.allocate::<u8>(limit + 1).unwrap_err();
    check_limit_error(&err, &mm, limit, limit + 1);
}

/// A request of exactly the limit fits with pooling on (its 20 MiB segment does not, so the
/// request alone is allocated), comes back from the cache, and coexists with nothing else.
#[test]
fn a_request_of_exactly_the_limit_fits_and_is_reused() {
    let limit = 3 * MIB;
    let mm = cpu_with(Some(limit), true);
    for _ in 0..3 {
        let mut b = mm.allocate::<u8>(limit).unwrap();
        b.fill(1).unwrap();
        let err = mm.allocate::<u8>(4096).unwrap_err();
        check_limit_error(&err, &mm, limit, 4096);
        assert_eq!(check_snapshot(&mm).device_reserved_bytes, limit as u64);
    }
    assert_eq!(mm.statistics().backend_allocations, 1, "later rounds reuse the cached region");

    // A limit below the smallest block: empty buffers need no memory, anything else is refused.
    let tiny = cpu_with(Some(100), true);
    assert_eq!(tiny.allocate::<u8>(0).unwrap().len(), 0);
    let err = tiny.allocate::<u8>(1).unwrap_err();
    check_limit_error(&err, &tiny, 100, 1);
    let err = tiny.allocate_device::<u64>(1).unwrap_err();
    check_limit_error(&err, &tiny, 100, 8);
}

/// On a discrete backend host memory does not count: host buffers far beyond the limit are
/// fine; their device parts are refused without changing state, contents or the snapshot.
#[test]
fn host_parts_on_a_discrete_backend_do_not_count_and_refused_device_parts_change_nothing() {
    let limit = MIB;
    let mm = sim_with(limit, 64 * MIB);
    let mut bufs: Vec<UnifiedBuffer<u32>> = (0..4).map(|_| mm.allocate::<u32>(MIB).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(i as u32).unwrap();
    }
    let s = mm.memory_snapshot();
    assert_eq!(s.device_reserved_bytes, 0, "host parts are not device memory: {s:#?}");
    assert!(mm.statistics().reserved_bytes >= 16 * MIB as u64);
    for (i, b) in bufs.iter_mut().enumerate() {
        let state = b.state();
        let err = b.ensure_on_device().unwrap_err();
        check_limit_error(&err, &mm, limit, 4 * MIB);
        assert_eq!(b.state(), state);
        assert!(b.as_slice().unwrap().iter().all(|&x| x == i as u32));
        let err = b.upload(&vec![9; MIB]).unwrap_err();
        check_limit_error(&err, &mm, limit, 4 * MIB);
        assert_eq!(b.state(), state);
        assert!(b.to_vec().unwrap().iter().all(|&x| x == i as u32), "a refused upload wrote data");
    }
    assert_eq!((mm.memory_snapshot().device_reserved_bytes, sim_used(&mm)), (0, 0));
}

/// The transfer engine's device targets come from the same limited pool: a batch of uploads
/// that does not fit fails some of them, each failed destination is unchanged, the successful
/// ones hold their data, and the device never holds more than the limit.
#[test]
fn transfer_engine_targets_respect_the_limit_and_failed_uploads_change_nothing() {
    let limit = 3 * MIB;
    let mm = sim_with(limit, 64 * MIB);
    let sizes = [MIB, MIB, MIB, MIB, 4 * KIB, 4 * KIB, 16 * KIB, 512 * KIB];
    let mut dsts: Vec<UnifiedBuffer<u8>> = sizes.iter().map(|&n| mm.allocate::<u8>(n).unwrap()).collect();
    for (i, d) in dsts.iter_mut().enumerate() {
        d.fill(100 + i as u8).unwrap();
    }
    let srcs: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
    let states: Vec<BufferState> = dsts.iter().map(|d| d.state()).collect();
    let mut batch = TransferBatch::new();
    for (s, d) in srcs.iter().zip(dsts.iter_mut()) {
        batch.upload(s, d).unwrap();
    }
    let options = TransferOptions::default()
        .with_retry(RetryPolicy::default().with_max_attempts(2).with_initial_backoff(std::time::Duration::ZERO));
    let report = mm.transfer_engine().execute(batch, options).unwrap();
    assert!(report.failed > 0, "4 MiB of targets fit a 3 MiB limit: {report:#?}");
    let s = mm.memory_snapshot();
    assert!(s.device_reserved_bytes <= limit as u64, "{s:#?}");
    assert_eq!(s.device_reserved_bytes, sim_used(&mm));
    for (i, d) in dsts.iter().enumerate() {
        let outcome = &report.transfers[i];
        if let Some(e) = &outcome.error {
            assert!(e.message().contains("device memory limit"), "transfer {i} failed otherwise: {e}");
            assert_eq!(d.state(), states[i], "transfer {i} failed but changed its buffer's state");
            assert!(d.to_vec().unwrap().iter().all(|&x| x == 100 + i as u8), "transfer {i} failed but wrote");
        } else {
            assert!(d.to_vec().unwrap().iter().all(|&x| x == i as u8), "transfer {i} lost its data");
        }
    }
}

/// Allocating threads race with threads that trim and run maintenance: the limit holds at
/// every observation and `held` ends equal to the device's count, then zero.
#[test]
fn allocations_racing_trims_and_maintenance_keep_held_exact() {
    let limit = 16 * MIB;
    let mm = sim_with(limit, 128 * MIB);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let trimmer = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                mm.trim_excess().unwrap();
                mm.run_maintenance();
                let r = mm.memory_snapshot().device_reserved_bytes;
                assert!(r <= limit as u64, "reserved {r} over the limit");
            }
        });
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let mm = &mm;
                s.spawn(move || {
                    let mut rng = RngStar(t + 1);
                    let mut held = Vec::new();
                    for _ in 0..150 {
                        let len = if rng.below(2) == 0 { 1 + rng.below(32 * KIB) } else { 1 + rng.below(3 * MIB) };
                        match mm.allocate_device::<u8>(len) {
                            Ok(b) => held.push(b),
                            Err(Error::MemoryLimitExceeded {
                                limit: l,
                                held: h,
                                cached: c,
                                requested: r,
                                rounded,
                                ..
                            }) => {
                                assert_eq!(l, limit as u64);
                                assert_eq!(r, len as u64, "requested is not what was asked");
                                assert!(h <= l && c <= h && h + rounded > l, "{h} held, {c} cached, {rounded} needed");
                                held.clear();
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                        if held.len() > 4 {
                            held.swap_remove(rng.below(held.len()));
                        }
                        let r = mm.memory_snapshot().device_reserved_bytes;
                        assert!(r <= limit as u64, "reserved {r} over the limit");
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        trimmer.join().unwrap();
    });
    assert_eq!(mm.memory_snapshot().device_reserved_bytes, sim_used(&mm), "held drifted from the device");
    assert_eq!(mm.statistics().active_allocations, 0);
    mm.trim_excess().unwrap();
    assert_eq!((mm.memory_snapshot().device_reserved_bytes, sim_used(&mm)), (0, 0));
}

/// Small buffers dropped on another thread that then stays idle (a worker waiting for work):
/// their memory must still be releasable under the limit. Parked in that thread's magazine it
/// would count against the limit and be unreachable (no buffer alive, 2 MiB "cached", and a
/// 3 MiB request under a 4 MiB limit refused even after `trim_excess`).
#[test]
fn memory_dropped_on_an_idle_thread_is_releasable_under_the_limit() {
    let limit = 4 * MIB;
    let mm = cpu_with(Some(limit), true);
    let (resume, wait) = std::sync::mpsc::channel::<()>();
    let (parked, done) = std::sync::mpsc::channel::<()>();
    let worker = {
        let mm = mm.clone();
        std::thread::spawn(move || {
            let bufs: Vec<_> = (0..8).map(|_| mm.allocate::<u8>(200 * KIB).unwrap()).collect();
            drop(bufs);
            parked.send(()).unwrap();
            wait.recv().unwrap();
        })
    };
    done.recv().unwrap();
    assert_eq!(mm.statistics().active_allocations, 0);
    let big = mm.allocate::<u8>(3 * MIB);
    resume.send(()).unwrap();
    worker.join().unwrap();
    let mut big = big.unwrap_or_else(|e| panic!("no buffer is alive, yet: {e}"));
    big.fill(1).unwrap();
    assert!(check_snapshot(&mm).device_reserved_bytes <= limit as u64);
}
