//! Adversarial review of three features: `ManagerOptions::device_memory_limit`,
//! `MemoryManager::memory_snapshot` and the object pool's thread-exit (unslotted) paths.
//!
//! Each test tries to break one promise: the limit is never exceeded and `held` stays exact
//! (checked against the simulator's own count of device bytes), the error's numbers add up, a
//! refused allocation or transfer changes nothing, snapshots tile their segments and agree with
//! the statistics, and the object pool's statistics identities, `max_size` and hooks hold on
//! threads that have no slot.

use dotcompute_memory::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

mod child;
use child::{in_child, in_child_with_env};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn cpu(limit: Option<usize>, pooling: bool) -> MemoryManager {
    MemoryManager::with_backend(
        CpuBackend::new(),
        ManagerOptions {
            maintenance_interval: None,
            enable_pooling: pooling,
            device_memory_limit: limit.map(|l| l as u64),
            ..Default::default()
        },
    )
    .unwrap()
}

fn sim(limit: usize, capacity: usize) -> MemoryManager {
    MemoryManager::with_backend(
        SimBackend::new(SimOptions { capacity, ..Default::default() }),
        ManagerOptions { maintenance_interval: None, device_memory_limit: Some(limit as u64), ..Default::default() },
    )
    .unwrap()
}

/// Device bytes the simulator has handed out (this manager is its only user).
fn sim_used(mm: &MemoryManager) -> u64 {
    let info = mm.backend().memory_info();
    info.total - info.free
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
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
            assert!(text.contains(&format!("requested {requested} bytes ({rounded} bytes")), "{text}");
            // Single-threaded here: what the error says is held is what the pool holds now.
            assert_eq!(held, mm.memory_snapshot().reserved_bytes, "{err}");
        }
        ref other => panic!("expected MemoryLimitExceeded, got {other:?}"),
    }
}

/// Blocks tile their segments, totals add up, order and granularity hold, and (on a unified
/// backend, where every backend byte is device memory) the snapshot agrees with the statistics.
fn check_snapshot(mm: &MemoryManager) -> MemorySnapshot {
    let s = mm.memory_snapshot();
    for seg in &s.segments {
        let mut next = 0;
        for b in &seg.blocks {
            assert_eq!(b.offset, next, "gap or overlap in segment {}: {seg:?}", seg.id);
            assert_eq!(b.offset % 256, 0, "offset off the 256-byte granule: {seg:?}");
            next += b.size;
        }
        assert_eq!(next, seg.size, "blocks do not cover segment {}: {seg:?}", seg.id);
        if !seg.splittable {
            assert_eq!(seg.blocks.len(), 1, "an unsplittable segment is one block: {seg:?}");
        }
        assert!(seg.blocks.windows(2).all(|w| !(w[0].free && w[1].free)), "uncoalesced free neighbours: {seg:?}");
    }
    assert!(
        s.segments
            .windows(2)
            .all(|w| (std::cmp::Reverse(w[0].size), w[0].id) < (std::cmp::Reverse(w[1].size), w[1].id)),
        "segments not largest first, ties by id: {s:#?}"
    );
    let reserved: u64 = s.segments.iter().map(|g| g.size).sum();
    let free: u64 = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| b.free).map(|b| b.size).sum();
    let largest = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| b.free).map(|b| b.size).max().unwrap_or(0);
    assert_eq!((s.reserved_bytes, s.free_bytes, s.largest_free_block), (reserved, free, largest), "{s:#?}");
    assert_eq!(s.in_use_bytes + s.free_bytes, s.reserved_bytes, "{s:#?}");
    assert!(s.front_cached_bytes <= s.in_use_bytes, "{s:#?}");
    assert!((0.0..=1.0).contains(&s.fragmentation()), "{s:#?}");
    let stats = mm.statistics();
    assert_eq!(stats.device_segments, s.segments.len() as u64, "{stats:#?}\n{s:#?}");
    if mm.backend().is_unified() {
        // (On discrete backends magazines hold host blocks, which are not in any segment.)
        assert!(s.front_cached_bytes + s.magazine_bytes <= s.in_use_bytes, "{s:#?}");
        assert_eq!(stats.reserved_bytes, s.reserved_bytes, "statistics vs snapshot: {stats:#?}\n{s:#?}");
        assert_eq!(
            stats.cached_bytes,
            s.free_bytes + s.front_cached_bytes + s.magazine_bytes,
            "cached = arena free + front cache + magazines: {stats:#?}\n{s:#?}"
        );
    }
    // The JSON form carries the same numbers.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["reserved_bytes"], s.reserved_bytes);
    assert_eq!(json["free_bytes"], s.free_bytes);
    assert_eq!(json["segments"].as_array().map(Vec::len), Some(s.segments.len()));
    s
}

// ---- device_memory_limit ----

/// Mixed device-only allocations, drops, trims and maintenance passes on the simulator: the
/// pool's `held` equals the bytes the device has handed out after every step, never passes the
/// limit, and every refusal names consistent numbers and leaves the counters as they were.
#[test]
fn held_matches_the_device_through_allocations_trims_and_maintenance() {
    let limit = 12 * MIB;
    let mm = sim(limit, 64 * MIB);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
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
        assert!(s.reserved_bytes <= limit as u64, "step {step}: {s:#?}");
        assert_eq!(s.reserved_bytes, sim_used(&mm), "step {step}: held drifted from the device: {s:#?}");
    }
    assert!(refused > 0, "the workload never reached the limit: nothing was tested");
    drop(live);
    mm.trim_excess().unwrap();
    assert_eq!((mm.memory_snapshot().reserved_bytes, sim_used(&mm)), (0, 0));
}

/// Without pooling every segment goes back when its buffer drops: the full limit is usable
/// again and again (a `held` that leaked would refuse it), and one byte more is refused.
#[test]
fn without_pooling_the_whole_limit_is_reusable() {
    let limit = 4 * MIB;
    let mm = cpu(Some(limit), false);
    for round in 0..20u8 {
        let mut b = mm.allocate::<u8>(limit).unwrap_or_else(|e| panic!("round {round}: {e}"));
        b.fill(round).unwrap();
        let s = check_snapshot(&mm);
        assert_eq!(s.reserved_bytes, limit as u64);
        assert!(s.segments.iter().all(|g| g.blocks.iter().all(|blk| !blk.free)), "{s:#?}");
        drop(b);
        let s = check_snapshot(&mm);
        assert_eq!(s.reserved_bytes, 0, "round {round}: a segment stayed without pooling: {s:#?}");
    }
    let err = mm.allocate::<u8>(limit + 1).unwrap_err();
    check_limit_error(&err, &mm, limit, limit + 1);
}

/// A request of exactly the limit fits with pooling on (its 20 MiB segment does not, so the
/// request alone is allocated), comes back from the cache, and coexists with nothing else.
#[test]
fn a_request_of_exactly_the_limit_fits_and_is_reused() {
    let limit = 3 * MIB;
    let mm = cpu(Some(limit), true);
    for _ in 0..3 {
        let mut b = mm.allocate::<u8>(limit).unwrap();
        b.fill(1).unwrap();
        let err = mm.allocate::<u8>(4096).unwrap_err();
        check_limit_error(&err, &mm, limit, 4096);
        assert_eq!(check_snapshot(&mm).reserved_bytes, limit as u64);
    }
    assert_eq!(mm.statistics().backend_allocations, 1, "later rounds reuse the cached region");

    // A limit below the smallest block: empty buffers need no memory, anything else is refused.
    let tiny = cpu(Some(100), true);
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
    let mm = sim(limit, 64 * MIB);
    let mut bufs: Vec<UnifiedBuffer<u32>> = (0..4).map(|_| mm.allocate::<u32>(MIB).unwrap()).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.fill(i as u32).unwrap();
    }
    let s = mm.memory_snapshot();
    assert_eq!(s.reserved_bytes, 0, "host parts are not device memory: {s:#?}");
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
    assert_eq!((mm.memory_snapshot().reserved_bytes, sim_used(&mm)), (0, 0));
}

/// The transfer engine's device targets come from the same limited pool: a batch of uploads
/// that does not fit fails some of them, each failed destination is unchanged, the successful
/// ones hold their data, and the device never holds more than the limit.
#[test]
fn transfer_engine_targets_respect_the_limit_and_failed_uploads_change_nothing() {
    let limit = 3 * MIB;
    let mm = sim(limit, 64 * MIB);
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
    let options = TransferOptions {
        retry: RetryPolicy { max_attempts: 2, initial_backoff: std::time::Duration::ZERO, ..Default::default() },
        ..Default::default()
    };
    let report = mm.transfer_engine().execute(batch, options).unwrap();
    assert!(report.failed > 0, "4 MiB of targets fit a 3 MiB limit: {report:#?}");
    let s = mm.memory_snapshot();
    assert!(s.reserved_bytes <= limit as u64, "{s:#?}");
    assert_eq!(s.reserved_bytes, sim_used(&mm));
    for (i, d) in dsts.iter().enumerate() {
        let outcome = &report.transfers[i];
        if let Some(e) = &outcome.error {
            assert!(e.contains("device memory limit"), "transfer {i} failed otherwise: {e}");
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
    let mm = sim(limit, 128 * MIB);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let trimmer = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                mm.trim_excess().unwrap();
                mm.run_maintenance();
                let r = mm.memory_snapshot().reserved_bytes;
                assert!(r <= limit as u64, "reserved {r} over the limit");
            }
        });
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let mm = &mm;
                s.spawn(move || {
                    let mut rng = Rng(t + 1);
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
                        let r = mm.memory_snapshot().reserved_bytes;
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
    assert_eq!(mm.memory_snapshot().reserved_bytes, sim_used(&mm), "held drifted from the device");
    assert_eq!(mm.statistics().active_allocations, 0);
    mm.trim_excess().unwrap();
    assert_eq!((mm.memory_snapshot().reserved_bytes, sim_used(&mm)), (0, 0));
}

/// `from_env`: every malformed `DCMEM_DEVICE_MEMORY_LIMIT` is an error naming it, never a
/// panic and never silently "no limit" (a value that is not UTF-8 included); the largest value
/// is accepted. (The only test in this file that sets a variable in this process; the others
/// set theirs in a child process.)
#[test]
fn from_env_rejects_every_malformed_limit_and_accepts_the_largest() {
    const VAR: &str = "DCMEM_DEVICE_MEMORY_LIMIT";
    let saved = (std::env::var_os("DCMEM_BACKEND"), std::env::var_os(VAR));
    std::env::set_var("DCMEM_BACKEND", "cpu");
    let limit_of = |value: &std::ffi::OsStr| {
        std::env::set_var(VAR, value);
        MemoryManager::from_env().map(|mm| mm.options().device_memory_limit)
    };
    assert_eq!(limit_of("18446744073709551615".as_ref()).unwrap(), Some(u64::MAX));
    assert_eq!(limit_of("16 TiB".as_ref()).unwrap(), Some(16 << 40));
    for bad in ["16EiB", "18446744073709551616", "１２", "1e9", "0x10", "+5", "5 MiB extra"] {
        let err = limit_of(bad.as_ref()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { option: VAR, .. }), "{bad:?}: {err}");
    }
    // Zero parses but is no usable limit: rejected by the options' validation.
    assert!(matches!(limit_of("0".as_ref()), Err(Error::InvalidArgument { .. })));
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let err = limit_of(std::ffi::OsStr::from_bytes(b"64\xffMiB")).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { option: VAR, .. }), "a non-UTF-8 limit was ignored: {err}");
    }
    for (name, value) in [("DCMEM_BACKEND", saved.0), (VAR, saved.1)] {
        match value {
            Some(v) => std::env::set_var(name, v),
            None => std::env::remove_var(name),
        }
    }
}

/// `from_env`: a `DCMEM_BACKEND` that is not UTF-8 is an error naming the variable and showing
/// the bytes, never "unset" (which would select cpu). Run in a child process that alone sees
/// the variable.
#[cfg(unix)]
#[test]
fn from_env_rejects_a_backend_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let vars: [(&str, &std::ffi::OsStr); 2] =
        [("DCMEM_BACKEND", std::ffi::OsStr::from_bytes(b"cp\xffu")), ("DCMEM_DEVICE_MEMORY_LIMIT", "64MiB".as_ref())];
    in_child_with_env("from_env_rejects_a_backend_name_that_is_not_utf8", &vars, || {
        let err = MemoryManager::from_env().map(|mm| mm.backend().name()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { option: "DCMEM_BACKEND", value, .. } if value.contains(r"cp\xFFu")),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("DCMEM_BACKEND") && text.contains("UTF-8") && text.contains("cpu"), "{text}");
    });
}

/// The backends' own selectors (`DCMEM_OPENCL_DEVICE`, `DCMEM_CUDA_DEVICE`) that are not UTF-8
/// are errors naming the variable too, never "no selector".
#[cfg(unix)]
#[test]
fn backend_selectors_that_are_not_utf8_are_named_errors() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"0\xff");
    let vars: [(&str, &std::ffi::OsStr); 3] =
        [("DCMEM_OPENCL_DEVICE", bad), ("DCMEM_CUDA_DEVICE", bad), ("DCMEM_REQUIRE_SIM", bad)];
    in_child_with_env("backend_selectors_that_are_not_utf8_are_named_errors", &vars, || {
        #[cfg(feature = "opencl")]
        {
            let err = dotcompute_memory::backend::opencl::OpenClOptions::from_env().unwrap_err();
            assert!(matches!(&err, Error::InvalidArgument { option: "DCMEM_OPENCL_DEVICE", .. }), "{err:?}");
        }
        #[cfg(feature = "cuda")]
        {
            let err = dotcompute_memory::backend::cuda::CudaBackend::from_env().map(drop).unwrap_err();
            assert!(matches!(&err, Error::InvalidArgument { option: "DCMEM_CUDA_DEVICE", .. }), "{err:?}");
        }
        let err = dotcompute_memory::backend::required("sim").unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument { option: "DCMEM_REQUIRE_SIM", .. }), "{err:?}");
    });
}

/// `from_env`: with both variables well-formed in a child process, the backend and the limit
/// are what they say (the error paths above are not taken for valid values).
#[test]
fn from_env_reads_both_variables_when_they_are_well_formed() {
    let vars: [(&str, &std::ffi::OsStr); 2] =
        [("DCMEM_BACKEND", " sim ".as_ref()), ("DCMEM_DEVICE_MEMORY_LIMIT", "64MiB".as_ref())];
    in_child_with_env("from_env_reads_both_variables_when_they_are_well_formed", &vars, || {
        let mm = MemoryManager::from_env().unwrap();
        assert_eq!((mm.backend().name(), mm.options().device_memory_limit), ("sim", Some(64 << 20)));
    });
}

// ---- memory_snapshot ----

/// A random workload over every segment kind (small, shared large, own-segment large,
/// oversize) with drops, trims and maintenance: after every step the snapshot tiles its
/// segments, is sorted, and agrees with the statistics (reserved, cached, segment count).
#[test]
fn snapshots_stay_consistent_with_the_statistics_through_a_random_workload() {
    let mm = cpu(None, true);
    let mut rng = Rng(42);
    let mut live: Vec<UnifiedBuffer<u8>> = Vec::new();
    for step in 0..250 {
        match rng.below(12) {
            0..=6 => {
                let len = match rng.below(10) {
                    0..=4 => 1 + rng.below(16 * KIB),
                    5..=6 => 64 * KIB + rng.below(MIB),
                    7..=8 => MIB + rng.below(9 * MIB),
                    _ => 11 * MIB + rng.below(20 * MIB),
                };
                live.push(mm.allocate::<u8>(len).unwrap());
                if live.len() > 40 {
                    let i = rng.below(live.len());
                    drop(live.swap_remove(i));
                }
            }
            7..=9 if !live.is_empty() => {
                let i = rng.below(live.len());
                drop(live.swap_remove(i));
            }
            10 => {
                mm.trim_excess().unwrap();
            }
            _ => {
                mm.run_maintenance();
            }
        }
        if step == 100 {
            // One oversize buffer: a segment of its own, never split.
            live.push(mm.allocate::<u8>(65 * MIB).unwrap());
            let s = check_snapshot(&mm);
            assert!(s.segments.iter().any(|g| !g.splittable && g.size >= 65 * MIB as u64), "{s:#?}");
        }
        check_snapshot(&mm);
    }
    drop(live);
    mm.trim_excess().unwrap();
    let s = check_snapshot(&mm);
    assert_eq!(s.reserved_bytes, 0, "{s:#?}");
}

/// On a discrete backend the snapshot shows device memory only: host parts are absent, the
/// reserved bytes equal the device's count, and the statistics' reserved bytes are more.
#[test]
fn a_snapshot_on_a_discrete_backend_shows_device_memory_only() {
    let mm = sim(64 * MIB, 128 * MIB);
    let host_only = mm.allocate::<u8>(3 * MIB).unwrap();
    let mut both = mm.allocate::<u8>(2 * MIB).unwrap();
    both.fill(1).unwrap();
    both.ensure_on_device().unwrap();
    let device_only = mm.allocate_device::<u8>(5 * MIB).unwrap();
    let s = check_snapshot(&mm);
    assert_eq!(s.backend, "sim");
    assert_eq!(s.reserved_bytes, sim_used(&mm), "{s:#?}");
    let in_use: u64 = s.segments.iter().flat_map(|g| &g.blocks).filter(|b| !b.free).map(|b| b.size).sum();
    assert!(in_use >= 7 * MIB as u64 && in_use < 10 * MIB as u64, "device parts only: {s:#?}");
    assert!(mm.statistics().reserved_bytes >= s.reserved_bytes + 5 * MIB as u64, "host parts count there");
    drop((host_only, both, device_only));
    mm.trim_excess().unwrap();
    assert_eq!((check_snapshot(&mm).reserved_bytes, sim_used(&mm)), (0, 0));
}

// ---- ObjectPool without a per-thread slot ----

/// An object whose drops are counted, so the test sees each one dropped exactly once.
struct Counted {
    id: usize,
    bad: bool,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// The identities `ObjectPoolStatistics` documents for a pool at rest.
fn check_identities(s: &ObjectPoolStatistics) {
    assert_eq!(s.hits + s.misses, s.gets, "{s:#?}");
    assert_eq!(s.created, s.misses + s.min_size, "{s:#?}");
    assert_eq!(s.in_use, s.gets - s.returned - s.detached, "{s:#?}");
    assert_eq!(
        s.current_size,
        s.created - s.in_use - s.detached - s.dropped_invalid - s.dropped_full - s.evicted,
        "{s:#?}"
    );
    assert!(s.current_size <= s.max_size, "{s:#?}");
}

type Leaked = &'static ObjectPool<Counted>;

/// A pool that lives for the rest of the (child) process, so guards can sit in thread-locals.
fn leaked_pool(max_size: usize, metrics: bool, drops: &Arc<AtomicUsize>, resets: &Arc<AtomicUsize>) -> Leaked {
    let next = AtomicUsize::new(0);
    let d = drops.clone();
    let r = resets.clone();
    let pool =
        ObjectPool::builder(move || Counted { id: next.fetch_add(1, Ordering::Relaxed), bad: false, drops: d.clone() })
            .max_size(max_size)
            .metrics(metrics)
            .validate(|c: &Counted| !c.bad)
            .reset(move |_| {
                r.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap();
    Box::leak(Box::new(pool))
}

thread_local! {
    /// Guards returned at thread exit, after the pool's thread id is gone (this thread-local is
    /// registered before the pool is first used on the thread, so it is destroyed after).
    static KEPT: RefCell<Vec<Pooled<'static, Counted>>> = const { RefCell::new(Vec::new()) };
}

/// Five guards returned without a slot into a pool of `max_size` 2: the invalid one is dropped
/// unreset, the others are reset, two are kept and two dropped as full; every object is dropped
/// at most once and the identities hold.
#[test]
fn unslotted_returns_are_validated_reset_and_bounded_by_max_size() {
    in_child("unslotted_returns_are_validated_reset_and_bounded_by_max_size", || {
        let (drops, resets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pool = leaked_pool(2, true, &drops, &resets);
        std::thread::spawn(move || {
            KEPT.with(|k| {
                let mut k = k.borrow_mut();
                for i in 0..5 {
                    let mut g = pool.get();
                    g.bad = i == 2;
                    k.push(g);
                }
            });
        })
        .join()
        .unwrap();
        let s = pool.statistics();
        check_identities(&s);
        assert_eq!((s.gets, s.misses, s.returned, s.in_use), (5, 5, 5, 0), "{s:#?}");
        assert_eq!((s.dropped_invalid, s.dropped_full, s.current_size), (1, 2, 2), "{s:#?}");
        assert_eq!(resets.load(Ordering::Relaxed), 4, "every valid return is reset, the invalid one not");
        assert_eq!(drops.load(Ordering::Relaxed), 3, "one invalid and two over max_size dropped");
        // The two kept objects are distinct and valid, and come back as hits.
        let (a, b) = (pool.get(), pool.get());
        assert!(a.id != b.id && !a.bad && !b.bad);
        drop((a, b));
        let s = pool.statistics();
        check_identities(&s);
        assert_eq!((s.hits, s.current_size), (2, 2), "{s:#?}");
        assert_eq!(drops.load(Ordering::Relaxed), 3, "nothing dropped twice or lost");
    });
}

/// With metrics off the unslotted paths count nothing but still keep the objects.
#[test]
fn unslotted_paths_with_metrics_off_count_nothing_and_keep_objects() {
    in_child("unslotted_paths_with_metrics_off_count_nothing_and_keep_objects", || {
        let (drops, resets) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let pool = leaked_pool(8, false, &drops, &resets);
        std::thread::spawn(move || {
            KEPT.with(|k| k.borrow_mut().extend((0..3).map(|_| pool.get())));
        })
        .join()
        .unwrap();
        let s = pool.statistics();
        assert_eq!((s.gets, s.misses, s.returned, s.dropped_full, s.detached), (0, 0, 0, 0, 0), "{s:#?}");
        assert_eq!(s.current_size, 3, "{s:#?}");
        assert_eq!((resets.load(Ordering::Relaxed), drops.load(Ordering::Relaxed)), (3, 0));
    });
}

/// A late thread-local destructor on a thread that never used the pool (its id is gone): gets
/// served from the shared tier (a pre-warmed object is a hit), a detach, returns; the
/// identities hold and every object is dropped exactly once when the pool goes.
#[test]
fn gets_detaches_and_returns_in_a_late_destructor_keep_the_identities() {
    in_child("gets_detaches_and_returns_in_a_late_destructor_keep_the_identities", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let made = Arc::new(AtomicUsize::new(0));
        let (d, m) = (drops.clone(), made.clone());
        let pool = Arc::new(
            ObjectPool::builder(move || Counted {
                id: m.fetch_add(1, Ordering::Relaxed),
                bad: false,
                drops: d.clone(),
            })
            .min_size(1)
            .max_size(4)
            .build()
            .unwrap(),
        );
        let detached: Arc<Mutex<Vec<Counted>>> = Arc::default();
        struct Late(Arc<ObjectPool<Counted>>, Arc<Mutex<Vec<Counted>>>);
        impl Drop for Late {
            fn drop(&mut self) {
                let a = self.0.get();
                let b = self.0.get();
                let c = self.0.get();
                assert_eq!(a.id, 0, "the pre-warmed object first");
                self.1.lock().unwrap().push(Pooled::detach(b));
                drop((a, c));
            }
        }
        thread_local! {
            static LATE: RefCell<Option<Late>> = const { RefCell::new(None) };
        }
        let worker = {
            let (pool, detached) = (pool.clone(), detached.clone());
            std::thread::spawn(move || {
                LATE.with(|l| *l.borrow_mut() = Some(Late(pool, detached)));
                // Another user of the thread_local crate takes the id; it is given back before
                // LATE is destroyed.
                let other = thread_local::ThreadLocal::<u32>::new();
                assert_eq!(*other.get_or(|| 1), 1);
            })
        };
        worker.join().unwrap();
        let s = pool.statistics();
        check_identities(&s);
        assert_eq!((s.gets, s.hits, s.misses, s.detached, s.returned), (3, 1, 2, 1, 2), "{s:#?}");
        assert_eq!(s.current_size, 2, "{s:#?}");
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop(pool);
        assert_eq!(drops.load(Ordering::Relaxed), 2, "the pool drops its two idle objects once each");
        drop(detached);
        assert_eq!(drops.load(Ordering::Relaxed), made.load(Ordering::Relaxed), "every object dropped exactly once");
    });
}

/// Small buffers dropped on another thread that then stays idle (a worker waiting for work):
/// their memory must still be releasable under the limit. Parked in that thread's magazine it
/// would count against the limit and be unreachable (no buffer alive, 2 MiB "cached", and a
/// 3 MiB request under a 4 MiB limit refused even after `trim_excess`).
#[test]
fn memory_dropped_on_an_idle_thread_is_releasable_under_the_limit() {
    let limit = 4 * MIB;
    let mm = cpu(Some(limit), true);
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
    assert!(check_snapshot(&mm).reserved_bytes <= limit as u64);
}

/// `ObjectPool` looks up its slot with `ThreadLocal::get`, which must not take a thread id (at
/// thread exit taking one panics inside a thread-local destructor: an abort). The `thread_local`
/// crate's `get` stopped taking one in 1.1.10; with the manifest's former `"1.1"` a downstream
/// lockfile could resolve 1.1.8 or 1.1.9, where the tests above pass only because this
/// workspace's lockfile has 1.1.10. The manifest must ask for at least 1.1.10.
#[test]
fn the_manifest_requires_a_thread_local_whose_get_takes_no_id() {
    let manifest = include_str!("../Cargo.toml");
    let line =
        manifest.lines().find(|l| l.trim_start().starts_with("thread_local")).expect("a thread_local dependency");
    let req = line.split('"').nth(1).unwrap_or_else(|| panic!("no version in {line:?}"));
    let req = req.trim_start_matches(['^', '=', '~', ' ']);
    let parts: Vec<u64> = req.split('.').map(|p| p.parse().unwrap_or_else(|_| panic!("{line:?}"))).collect();
    let version = (parts[0], parts.get(1).copied().unwrap_or(0), parts.get(2).copied().unwrap_or(0));
    assert!(version >= (1, 1, 10), "thread_local requirement {req:?} admits versions whose get() takes an id");
}
