//! State-machine property test: random sequences of buffer operations on two buffers of one
//! manager, compared after every step against a plain `Vec<u32>` reference model and an
//! expected-state model derived from the coherence table (docs/ARCHITECTURE.md, `buffer::state`).
//!
//! What is checked after every operation:
//! - the value it returned (slices, copies) equals the model's data;
//! - `state()` of both buffers equals the expected state;
//! - the contents of both buffers equal the model (read with `copy_to`, which changes no state);
//! - on the simulated discrete device, the number of host-to-device, device-to-host and
//!   device-to-device transfers the operation made equals the copies the table lists for that
//!   transition (on the CPU backend: no host/device copies at all);
//! - an operation the model says must fail fails with the specific error, makes no transfer
//!   and changes nothing.
//!
//! The fault-injection variant runs the same sequences on a simulated device that fails each
//! backend call with some probability: every call that returns `Err` must leave the contents,
//! the state and the modification epochs of both buffers exactly as they were.
//!
//! `DeviceOnly` is reached through `allocate_device` + `upload`, which replace a buffer with one
//! that has only a device part.

mod ops;
mod table;

use crate::support::managers::quiet;
use dotcompute_memory::*;
use ops::{apply, op_strategy, Op};
use proptest::prelude::*;
use table::{copies_between, pattern, Copies, Expected, Model};
use BufferState::*;

fn is_injected(e: &Error) -> bool {
    matches!(e, Error::Backend { backend: "sim", message, .. } if message.contains("injected"))
}

/// Reads a buffer's contents without changing its state, retrying reads that an injected fault
/// failed (each failed read must itself change nothing).
fn contents(buf: &UnifiedBuffer<u32>, faults: bool) -> std::result::Result<Vec<u32>, TestCaseError> {
    let (state, epochs) = (buf.state(), buf.epochs());
    for _ in 0..1000 {
        match buf.to_vec() {
            Ok(v) => {
                prop_assert_eq!(buf.state(), state, "copy_to changed the state");
                return Ok(v);
            }
            Err(e) if faults && is_injected(&e) => {
                prop_assert_eq!((buf.state(), buf.epochs()), (state, epochs), "failed read changed the buffer");
            }
            Err(e) => return Err(TestCaseError::fail(format!("reading contents failed: {e}"))),
        }
    }
    Err(TestCaseError::fail("1000 injected read failures in a row"))
}

/// Runs `ops` on two buffers of lengths `lens` from `mm`, checking every step against the model.
fn run(mm: &MemoryManager, lens: (usize, usize), ops: &[Op], faults: bool) -> std::result::Result<(), TestCaseError> {
    let unified = mm.backend().is_unified();
    let init = [pattern(1, lens.0), pattern(2, lens.1)];
    let mut bufs = [mm.allocate::<u32>(lens.0).unwrap(), mm.allocate::<u32>(lens.1).unwrap()];
    for (b, d) in bufs.iter_mut().zip(&init) {
        b.copy_from(d).unwrap();
    }
    let mut model = Model { data: init, state: [HostOnly; 2], unified };
    for (step, op) in ops.iter().enumerate() {
        let before = [bufs[0].metrics(), bufs[1].metrics()];
        let epochs_before = [bufs[0].epochs(), bufs[1].epochs()];
        let mut next = model.clone();
        let (expected, copies) = next.step(op);
        let actual = apply(mm, &mut bufs, op);
        let mut before = before;
        if let (Op::AllocateDevice { buf, .. }, Ok(_)) = (op, &actual) {
            before[*buf] = BufferMetrics::default();
        }
        let after = [bufs[0].metrics(), bufs[1].metrics()];
        let from = model.state;
        let ctx = || format!("step {step}: {op:?} from states {from:?}");
        match (&expected, actual) {
            (Expected::Ok(data), Ok(got)) => {
                prop_assert_eq!(data, &got, "{}: returned data", ctx());
                for i in 0..2 {
                    prop_assert_eq!(
                        copies_between(&before[i], &after[i]),
                        copies[i],
                        "{}: transfers on buffer {}",
                        ctx(),
                        i
                    );
                }
                model = next;
            }
            (Expected::LengthMismatch { expected: e, actual: a }, Err(err)) => {
                prop_assert!(
                    matches!(err, Error::LengthMismatch { expected, actual, .. } if expected == *e && actual == *a),
                    "{}: wanted LengthMismatch {{ expected: {}, actual: {} }}, got {:?}",
                    ctx(),
                    e,
                    a,
                    err
                );
                prop_assert_eq!([bufs[0].epochs(), bufs[1].epochs()], epochs_before, "{}: epochs", ctx());
                for i in 0..2 {
                    prop_assert_eq!(
                        copies_between(&before[i], &after[i]),
                        Copies::default(),
                        "{}: refused, yet transferred",
                        ctx()
                    );
                }
            }
            (Expected::Conflict, Err(err)) => {
                prop_assert!(
                    matches!(err, Error::ConcurrentModification { operation: "mark_device_dirty", .. }),
                    "{}: wanted ConcurrentModification, got {:?}",
                    ctx(),
                    err
                );
                prop_assert_eq!([bufs[0].epochs(), bufs[1].epochs()], epochs_before, "{}: epochs", ctx());
                for i in 0..2 {
                    prop_assert_eq!(
                        copies_between(&before[i], &after[i]),
                        Copies::default(),
                        "{}: refused, yet transferred",
                        ctx()
                    );
                }
            }
            (_, Err(err)) if faults && is_injected(&err) => {
                // The model stays where it was; the buffers must too, exactly.
                prop_assert_eq!(
                    [bufs[0].epochs(), bufs[1].epochs()],
                    epochs_before,
                    "{}: a failed call ({}) changed the modification epochs",
                    ctx(),
                    err
                );
            }
            (expected, actual) => {
                return Err(TestCaseError::fail(format!("{}: expected {expected:?}, got {actual:?}", ctx())));
            }
        }
        for (i, buf) in bufs.iter().enumerate() {
            prop_assert_eq!(buf.state(), model.state[i], "{}: state of buffer {}", ctx(), i);
            let got = contents(buf, faults)?;
            prop_assert_eq!(&got, &model.data[i], "{}: contents of buffer {}", ctx(), i);
            prop_assert_eq!(buf.state(), model.state[i], "{}: state of buffer {} after reading", ctx(), i);
        }
    }
    drop(bufs);
    let s = mm.statistics();
    prop_assert_eq!(s.active_allocations, 0);
    prop_assert_eq!(s.active_bytes, 0);
    prop_assert_eq!(s.total_bytes_allocated, s.total_bytes_freed);
    Ok(())
}

fn lens() -> impl Strategy<Value = (usize, usize)> {
    (1usize..24, 1usize..24, any::<bool>()).prop_map(|(a, b, same)| (a, if same { a } else { b }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sim_matches_the_model(lens in lens(), ops in prop::collection::vec(op_strategy(), 1..40)) {
        let mm = MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap();
        run(&mm, lens, &ops, false)?;
    }

    #[test]
    fn cpu_matches_the_model(lens in lens(), ops in prop::collection::vec(op_strategy(), 1..40)) {
        let mm = MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap();
        run(&mm, lens, &ops, false)?;
    }

    #[test]
    fn failed_calls_change_nothing(
        lens in lens(),
        ops in prop::collection::vec(op_strategy(), 1..40),
        seed in any::<u64>(),
        transient in any::<bool>(),
    ) {
        let sim = SimBackend::new(SimOptions::default().with_faults(FaultPlan::default().with_fail_probability(0.25).with_seed(seed).with_transient(transient)));
        let mm = MemoryManager::with_backend(sim, quiet()).unwrap();
        run(&mm, lens, &ops, true)?;
    }
}

/// The fault-injection variant must actually inject: over a fixed sequence, some calls fail
/// and the buffers still end with the right contents.
#[test]
fn fault_injection_really_fails_calls() {
    let sim = SimBackend::new(
        SimOptions::default().with_faults(FaultPlan::default().with_fail_probability(0.3).with_seed(7)),
    );
    let mm = MemoryManager::with_backend(sim, quiet()).unwrap();
    let mut b = mm.allocate_from(&[1u32, 2, 3, 4]).unwrap();
    let mut failed = 0;
    for _ in 0..50 {
        let before = (b.state(), b.epochs());
        match b.synchronize().and_then(|()| b.mark_device_dirty()) {
            Ok(()) => assert_eq!(b.state(), DeviceDirty),
            Err(e) => {
                assert!(is_injected(&e), "{e}");
                failed += 1;
                // synchronize may have succeeded before mark_device_dirty failed; either way
                // the state is one the table allows and nothing was lost.
                assert!(matches!(b.state(), Synchronized | DeviceDirty) || (b.state(), b.epochs()) == before);
            }
        }
        let _ = b.ensure_on_host();
    }
    assert!(failed > 0, "no call failed with fail_probability 0.3");
    let v = (0..100).find_map(|_| b.to_vec().ok()).expect("100 failed reads in a row");
    assert_eq!(v, [1, 2, 3, 4]);
}
