//! Replaying traces: the counts and peaks of a small trace whose answers are known, unknown
//! and double frees, threads handing buffers over, samples, and what is refused.

use dotcompute_memory::replay::{ReplayAllocator, ReplayOptions, ReplayPlan};
use dotcompute_memory::{backend, Error, TraceEvent, TraceOp};
use dotcompute_memory::{Backend, SimBackend, SimOptions};

fn ev(thread: u64, op: TraceOp, id: u64, bytes: u64) -> TraceEvent {
    TraceEvent { t_ns: 0, thread, op, id, bytes, device: None, site: None }
}

/// Live bytes after each event: 1000, 3000, 2000, 2000 (unknown), 6000, 6000 (double free),
/// 4000, 4500 (id 1 again), 500, 0 (a zero-byte buffer is allocated and freed between).
fn small_trace() -> Vec<TraceEvent> {
    use TraceOp::{Alloc, Free};
    vec![
        ev(1, Alloc, 1, 1000),
        ev(1, Alloc, 2, 2000),
        ev(1, Free, 1, 1000),
        ev(1, Free, 99, 64),
        ev(1, Alloc, 3, 4000),
        ev(1, Free, 1, 1000),
        ev(1, Free, 2, 2000),
        ev(1, Alloc, 1, 500),
        ev(1, Free, 3, 4000),
        ev(1, Alloc, 4, 0),
        ev(1, Free, 4, 0),
        ev(1, Free, 1, 500),
    ]
}

#[test]
fn a_small_trace_gives_its_known_counts_and_peaks() {
    let plan = ReplayPlan::new(&small_trace()).unwrap();
    assert_eq!((plan.events(), plan.operations(), plan.unknown_frees(), plan.peak_live_bytes()), (12, 10, 2, 6000));
    assert_eq!(plan.threads(), [1]);
    for name in ["cpu", "sim"] {
        let backend = backend::open(name).unwrap();
        let raw = plan.run(&backend, ReplayAllocator::Unpooled, &ReplayOptions::default(), None).unwrap();
        // Four allocations with bytes; the backend holds exactly the live bytes.
        assert_eq!((raw.operations, raw.backend_allocations, raw.peak_reserved_bytes), (10, 4, 6000), "{name}");
        assert_eq!((raw.peak_live_bytes, raw.efficiency), (6000, 1.0), "{name}");
        assert!(raw.ops_per_second > 0.0 && raw.seconds > 0.0, "{name}: {raw:?}");
        let ours = plan.run(&backend, ReplayAllocator::Pooled, &ReplayOptions::default(), None).unwrap();
        assert_eq!((ours.operations, ours.peak_live_bytes), (10, 6000), "{name}");
        assert!(ours.backend_allocations >= 1 && ours.backend_allocations <= 4, "{name}: {ours:?}");
        assert!(ours.peak_reserved_bytes >= 6000, "{name}: {ours:?}");
        assert!(ours.efficiency > 0.0 && ours.efficiency <= 1.0, "{name}: {ours:?}");
        // Everything was given back: the sim holds nothing once the replay's manager is gone.
        let info = backend.memory_info();
        assert!(name == "cpu" || info.total == info.free, "{name}: {info:?}");
    }
}

#[test]
fn results_serialise_with_the_keys_dcmem_prints() {
    let plan = ReplayPlan::new(&small_trace()).unwrap();
    let backend = backend::open("cpu").unwrap();
    let result = plan.run(&backend, ReplayAllocator::Unpooled, &ReplayOptions::default(), None).unwrap();
    let v = serde_json::to_value(&result).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut expected = [
        "operations",
        "seconds",
        "ops_per_second",
        "backend_allocations",
        "peak_live_bytes",
        "peak_reserved_bytes",
        "efficiency",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(ReplayAllocator::ALL.iter().map(|a| a.key()).collect::<Vec<_>>(), ["ours", "unpooled", "expandable"]);
    let keys = |b: &dyn Backend| ReplayAllocator::for_backend(b).iter().map(|a| a.key()).collect::<Vec<_>>();
    assert_eq!(keys(backend.as_ref()), ["ours", "unpooled", "expandable"], "cpu has virtual memory");
    let no_vm = SimBackend::new(SimOptions::default().with_virtual_memory(false));
    assert_eq!(keys(&no_vm), ["ours", "unpooled"]);
    // The expandable allocator replays the same trace to the same peak of live bytes.
    let expandable = plan.run(&backend, ReplayAllocator::Expandable, &ReplayOptions::default(), None).unwrap();
    assert_eq!(expandable.peak_live_bytes, result.peak_live_bytes);
    assert!(expandable.efficiency > 0.0 && expandable.efficiency <= 1.0, "{expandable:?}");
}

#[test]
fn threads_replay_their_own_events_and_hand_buffers_over() {
    use TraceOp::{Alloc, Free};
    // Thread 2 frees what thread 1 allocated, and the other way round; thread 3 alone.
    let events = vec![
        ev(1, Alloc, 1, 100),
        ev(2, Alloc, 2, 200),
        ev(3, Alloc, 3, 300),
        ev(2, Free, 1, 100),
        ev(1, Free, 2, 200),
        ev(3, Free, 3, 300),
        ev(1, Alloc, 4, 400),
        ev(2, Free, 4, 400),
    ];
    let plan = ReplayPlan::new(&events).unwrap();
    assert_eq!((plan.threads(), plan.peak_live_bytes()), (&[1, 2, 3][..], 600));
    let backend = backend::open("sim").unwrap();
    for allocator in ReplayAllocator::ALL.iter().copied() {
        let progress = std::sync::atomic::AtomicU64::new(0);
        let count = |n| {
            progress.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let options = ReplayOptions::default().with_threads(true);
        let result = plan.run(&backend, allocator, &options, Some(&count)).unwrap();
        assert_eq!(result.operations, 8, "{allocator:?}");
        // The run's own peak: from 400 (id 4 alone) to 800 (ids 1, 3 and 4, when thread 2
        // frees id 1 late); id 4 is allocated after id 2 is freed.
        assert!((400..=800).contains(&result.peak_live_bytes), "{allocator:?}: {result:?}");
        assert!(result.peak_live_bytes <= result.peak_reserved_bytes, "{allocator:?}: {result:?}");
        assert_eq!(progress.into_inner(), 8, "{allocator:?}");
        assert!(result.efficiency > 0.0 && result.efficiency <= 1.0, "{allocator:?}: {result:?}");
        let info = backend.memory_info();
        assert_eq!(info.total, info.free, "{allocator:?}: memory left behind");
    }
}

#[test]
fn threads_measure_the_live_bytes_of_their_own_run() {
    use TraceOp::{Alloc, Free};
    const MIB: u64 = 1 << 20;
    // Two MiB alive in trace order; threads that do not overlap have one alive at a time.
    let events = vec![ev(1, Alloc, 1, MIB), ev(2, Alloc, 2, MIB), ev(1, Free, 1, MIB), ev(2, Free, 2, MIB)];
    let plan = ReplayPlan::new(&events).unwrap();
    assert_eq!(plan.peak_live_bytes(), 2 * MIB);
    let backend = backend::open("sim").unwrap();
    let options = ReplayOptions::default().with_threads(true);
    for allocator in ReplayAllocator::for_backend(backend.as_ref()) {
        for run in 0..20 {
            let r = plan.run(&backend, allocator, &options, None).unwrap();
            assert!(r.peak_live_bytes == MIB || r.peak_live_bytes == 2 * MIB, "{allocator:?} run {run}: {r:?}");
            assert!(r.peak_live_bytes <= r.peak_reserved_bytes, "{allocator:?} run {run}: {r:?}");
            assert!(r.efficiency > 0.0 && r.efficiency <= 1.0, "{allocator:?} run {run}: {r:?}");
        }
    }
    // On one thread the run follows the trace's order: its peak is the plan's.
    let r = plan.run(&backend, ReplayAllocator::Unpooled, &ReplayOptions::default(), None).unwrap();
    assert_eq!((r.peak_live_bytes, r.peak_reserved_bytes, r.efficiency), (2 * MIB, 2 * MIB, 1.0));
}

#[test]
fn samples_follow_live_and_reserved_bytes() {
    let plan = ReplayPlan::new(&small_trace()).unwrap();
    let backend = backend::open("cpu").unwrap();
    let options = ReplayOptions::default().with_samples(10);
    let raw = plan.run(&backend, ReplayAllocator::Unpooled, &options, None).unwrap();
    let live: Vec<u64> = raw.samples.iter().map(|s| s.live_bytes).collect();
    assert_eq!(live, [1000, 3000, 2000, 6000, 4000, 4500, 500, 500, 500, 0]);
    assert!(raw.samples.iter().all(|s| s.reserved_bytes == s.live_bytes), "{:?}", raw.samples);
    assert_eq!(raw.samples.iter().map(|s| s.operations).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    let ours = plan.run(&backend, ReplayAllocator::Pooled, &options.clone().with_samples(3), None).unwrap();
    assert!(ours.samples.len() >= 3 && ours.samples.len() <= 4, "{:?}", ours.samples);
    assert!(ours.samples.iter().all(|s| s.reserved_bytes >= s.live_bytes), "{:?}", ours.samples);
}

#[test]
fn an_empty_trace_is_refused_with_a_reason() {
    let err = ReplayPlan::new(&[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { option: "trace", .. }), "{err}");
    assert!(err.to_string().contains("nothing to replay"), "{err}");
}

#[test]
fn live_bytes_past_u64_are_refused_naming_the_event() {
    use TraceOp::{Alloc, Free};
    // 2^62 bytes each: the fourth alive with the other three adds up to 2^64.
    let big = 1u64 << 62;
    let events = vec![ev(1, Alloc, 1, big), ev(1, Free, 1, big), ev(1, Alloc, 2, big), ev(1, Alloc, 3, big)]
        .into_iter()
        .chain([ev(1, Alloc, 4, big), ev(1, Alloc, 5, big)])
        .collect::<Vec<_>>();
    let err = ReplayPlan::new(&events).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { option: "trace", .. }), "{err}");
    let message = err.to_string();
    for part in ["event 6", "id 5", "4611686018427387904 bytes", "13835058055282163712 bytes", "18446744073709551616"] {
        assert!(message.contains(part), "no {part:?} in {message}");
    }
    // Up to u64::MAX alive at once is a plan.
    let events = [ev(1, Alloc, 1, u64::MAX >> 1), ev(1, Alloc, 2, u64::MAX >> 1), ev(1, Alloc, 3, 1)];
    assert_eq!(ReplayPlan::new(&events).unwrap().peak_live_bytes(), u64::MAX);
}

#[test]
fn an_allocation_larger_than_the_machine_can_address_names_its_event() {
    let events = [ev(1, TraceOp::Alloc, 1, 64), ev(1, TraceOp::Free, 9, 8), ev(1, TraceOp::Alloc, 7, u64::MAX)];
    let err = ReplayPlan::new(&events).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { option: "trace", .. }), "{err}");
    let message = err.to_string();
    for part in ["event 3", "id 7", "18446744073709551615 bytes", "larger than this machine can address"] {
        assert!(message.contains(part), "no {part:?} in {message}");
    }
}

#[test]
fn a_replay_that_runs_out_of_memory_fails_and_gives_everything_back() {
    use dotcompute_memory::{SimBackend, SimOptions};
    let backend: std::sync::Arc<dyn dotcompute_memory::Backend> =
        std::sync::Arc::new(SimBackend::new(SimOptions::default().with_capacity(1 << 20)));
    let events: Vec<TraceEvent> = (0..8).map(|i| ev(1, TraceOp::Alloc, i, 256 << 10)).collect();
    let plan = ReplayPlan::new(&events).unwrap();
    for allocator in ReplayAllocator::ALL.iter().copied() {
        for threads in [false, true] {
            let options = ReplayOptions::default().with_threads(threads);
            let err = plan.run(&backend, allocator, &options, None).unwrap_err();
            assert!(matches!(err, Error::OutOfMemory { .. }), "{allocator:?}: {err}");
            let info = backend.memory_info();
            assert_eq!(info.total, info.free, "{allocator:?}, threads {threads}: memory left behind");
        }
    }
}

#[test]
fn threads_that_cannot_be_started_are_an_error_and_give_everything_back() {
    use crate::support::child::{in_child_with_env, test_name};
    use TraceOp::{Alloc, Free};
    // Miri runs the scenario in place, where the environment cannot refuse threads.
    if cfg!(miri) {
        return;
    }
    // A stack larger than the address space: the system refuses every thread the replay asks
    // for, in the child only.
    let huge_stack = (1u64 << 48).to_string();
    let test = test_name!(threads_that_cannot_be_started_are_an_error_and_give_everything_back);
    in_child_with_env(test, &[("RUST_MIN_STACK", huge_stack.as_ref())], || {
        let events = [ev(1, Alloc, 1, 100), ev(2, Alloc, 2, 200), ev(1, Free, 2, 200), ev(2, Free, 1, 100)];
        let plan = ReplayPlan::new(&events).unwrap();
        let backend = backend::open("sim").unwrap();
        let options = ReplayOptions::default().with_threads(true);
        for allocator in ReplayAllocator::for_backend(backend.as_ref()) {
            let err = plan.run(&backend, allocator, &options, None).unwrap_err();
            assert!(matches!(err, Error::ThreadSpawn { thread: "replay", .. }), "{allocator:?}: {err}");
            let message = err.to_string();
            assert!(message.contains("of the 2 the trace's threads need"), "{allocator:?}: {message}");
            assert!(message.contains("without --threads"), "{allocator:?}: {message}");
            let info = backend.memory_info();
            assert_eq!(info.total, info.free, "{allocator:?}: memory left behind");
        }
        // On one thread the same plan replays.
        let r = plan.run(&backend, ReplayAllocator::Unpooled, &ReplayOptions::default(), None).unwrap();
        assert_eq!((r.operations, r.peak_live_bytes), (4, 300));
    });
}
