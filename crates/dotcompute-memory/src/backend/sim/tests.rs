//! Unit tests of the simulated device: capacity, copies, fault plans, queue timing, holds.

use super::options::FaultPlan;
use super::*;
use crate::backend::Backend;
use crate::error::{Direction, Error};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

#[test]
fn capacity_is_enforced_with_numbers() {
    let sim = SimBackend::new(SimOptions { capacity: 1000, ..Default::default() });
    let a = sim.allocate(600, 8).unwrap();
    let err = sim.allocate(500, 8).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { requested: 500, free: 400, .. }), "{err}");
    sim.free(a).unwrap();
    let b = sim.allocate(1000, 8).unwrap();
    assert_eq!(sim.used(), 1000);
    sim.free(b).unwrap();
    assert_eq!(sim.used(), 0);
}

#[test]
fn device_memory_is_separate_and_copies_work() {
    let sim = SimBackend::new(SimOptions::default());
    let a = sim.allocate(16, 8).unwrap();
    let b = sim.allocate(16, 8).unwrap();
    assert!(sim.host_ptr(&a).is_none());
    sim.write(&a, 0, &[9; 16]).unwrap();
    sim.copy(&a, 4, &b, 0, 8).unwrap();
    sim.copy(&b, 0, &b, 8, 8).unwrap();
    let mut out = [0u8; 16];
    sim.read(&b, 0, &mut out).unwrap();
    assert_eq!(out, [9; 16]);
    sim.fill(&b, 0, 4, 1).unwrap();
    sim.read(&b, 0, &mut out).unwrap();
    assert_eq!(&out[..5], &[1, 1, 1, 1, 9]);
    sim.free(a).unwrap();
    sim.free(b).unwrap();
}

#[test]
fn fail_nth_fails_exactly_that_operation() {
    let sim = SimBackend::new(SimOptions {
        faults: FaultPlan { fail_nth: Some(3), transient: false, ..Default::default() },
        ..Default::default()
    });
    let a = sim.allocate(8, 8).unwrap(); // 1
    sim.write(&a, 0, &[1; 8]).unwrap(); // 2
    let err = sim.write(&a, 0, &[2; 8]).unwrap_err(); // 3
    assert!(!err.is_transient());
    assert!(err.to_string().contains("#3"), "{err}");
    let mut out = [0u8; 8];
    sim.read(&a, 0, &mut out).unwrap(); // 4
    assert_eq!(out, [1; 8], "a failed write must not change device memory");
    sim.free(a).unwrap();
}

#[test]
fn probability_faults_are_seeded() {
    let run = || {
        let sim = SimBackend::new(SimOptions {
            faults: FaultPlan { fail_probability: 0.3, seed: 42, ..Default::default() },
            ..Default::default()
        });
        let a = sim.allocate(8, 8);
        let mut pattern = vec![a.is_ok()];
        if let Ok(a) = a {
            for _ in 0..50 {
                pattern.push(sim.fill(&a, 0, 8, 0).is_ok());
            }
            sim.free(a).unwrap();
        }
        pattern
    };
    let first = run();
    assert_eq!(first, run());
    let failures = first.iter().filter(|ok| !**ok).count();
    assert!(failures > 3 && failures < 40, "{failures} failures of {}", first.len());
}

#[test]
fn queues_are_in_order() {
    // Only completion times are compared, never waited for: an hour per transfer keeps
    // them apart whatever the machine does meanwhile.
    let hour = Duration::from_secs(3600);
    let sim = SimBackend::new(SimOptions { latency: hour, ..Default::default() });
    let first = sim.due(0, 8, Direction::HostToDevice);
    let second = sim.due(0, 8, Direction::HostToDevice);
    let other_queue = sim.due(1, 8, Direction::HostToDevice);
    // The second transfer on queue 0 starts only when the first has finished; another
    // queue's transfer does not wait for either.
    assert!(second >= first + hour);
    assert!(other_queue < second);
}

#[test]
fn bandwidth_caps_each_direction_on_its_own() {
    let sim = SimBackend::new(SimOptions {
        bandwidth: None,
        bandwidth_device_to_host: Some(1e6),
        latency: Duration::from_millis(1),
        ..Default::default()
    });
    assert_eq!(sim.transfer_delay(1_000_000, Direction::HostToDevice), Duration::from_millis(1));
    assert_eq!(sim.transfer_delay(1_000_000, Direction::DeviceToHost), Duration::from_millis(1001));
}

#[test]
fn free_with_a_copy_in_flight_leaves_its_event_to_complete() {
    let sim = SimBackend::new(SimOptions { latency: Duration::from_millis(30), ..Default::default() });
    let a = sim.allocate(8, 8).unwrap();
    let src = [5u8; 8];
    let hold = sim.hold_completions();
    // SAFETY: src outlives the wait below.
    let ev = unsafe { sim.write_async(0, &a, 0, src.as_ptr(), 8) }.unwrap();
    sim.free(a).unwrap();
    assert_eq!(sim.used(), 0);
    assert!(!ev.is_complete().unwrap());
    drop(hold);
    ev.wait().unwrap();
    assert!(sim.is_idle());
}

#[test]
fn latency_delays_events() {
    let latency = Duration::from_millis(30);
    let sim = SimBackend::new(SimOptions { latency, ..Default::default() });
    let a = sim.allocate(8, 8).unwrap();
    let src = [5u8; 8];
    let enqueued = Instant::now();
    // SAFETY: src outlives the wait below.
    let ev = unsafe { sim.write_async(0, &a, 0, src.as_ptr(), 8) }.unwrap();
    ev.wait().unwrap();
    assert!(enqueued.elapsed() >= latency, "completed {:?} after enqueue", enqueued.elapsed());
    assert!(ev.is_complete().unwrap());
    sim.free(a).unwrap();
}

#[test]
fn held_completions_are_released_with_their_wake_ups() {
    use std::sync::atomic::AtomicUsize;
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let sim = SimBackend::new(SimOptions::default());
    let a = sim.allocate(8, 8).unwrap();
    let src = [5u8; 8];
    let hold = sim.hold_completions();
    // SAFETY: src outlives the wait below.
    let ev = unsafe { sim.write_async(0, &a, 0, src.as_ptr(), 8) }.unwrap();
    let count = Arc::new(Count(AtomicUsize::new(0)));
    ev.on_complete(Waker::from(count.clone()));
    assert!(!ev.is_complete().unwrap(), "complete while held");
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken while held");
    let second = sim.hold_completions();
    drop(hold);
    assert!(!ev.is_complete().unwrap(), "complete while the second hold is alive");
    drop(second);
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "the release did not wake the task");
    assert!(ev.is_complete().unwrap());
    ev.wait().unwrap();
    sim.free(a).unwrap();
}
