//! Fuzzes random sequences of buffer operations against a reference model.
//!
//! The input decodes (with `arbitrary`) into a backend (the simulated discrete device, with a
//! random fault plan, capacity, latency and pool settings, or the cpu backend), then up to 256
//! operations on four buffer slots of `u32` elements (lengths 0..=16): host writes and reads,
//! views, coherence calls, device-to-device copies, uploads, the asynchronous forms driven to
//! completion, polled once, or dropped unpolled, allocation, drop, `trim_excess` and
//! maintenance.
//!
//! The model keeps, per buffer, the contents as a `Vec<u32>` and the state the coherence table
//! (`buffer::state`) and each method's docs give. What is checked:
//! - no panic anywhere;
//! - an operation that returns `Ok` returns the model's data, and the buffer then has the
//!   model's state and contents;
//! - an operation that returns `Err` returns an error it may return (a length mismatch or
//!   conflict the model predicts, an injected fault, out of memory on a small device), and the
//!   buffer keeps exactly its contents, state and modification epochs;
//! - after a dropped asynchronous operation, the buffer ends as if it had either completed or
//!   never happened (which one shows when the transfer is settled by a later call);
//! - at the end, with every buffer dropped: statistics balanced, no live buffer, and no device
//!   memory held after `trim_excess`.
//!
//! Contents are read with `to_vec`, which changes no state; a read that an injected fault fails
//! must change nothing and is retried.
//!
//! Run: `cd crates/dotcompute-memory && cargo +nightly fuzz run ops -- -max_total_time=60`
#![no_main]

use dotcompute_memory::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use BufferState::*;

mod apply;
mod drive;
mod env;
mod model;

use apply::*;
use drive::*;
use env::*;
use model::*;

const SLOTS: usize = 4;
const MAX_LEN: usize = 16;
const MAX_OPS: usize = 256;

#[derive(Debug, Arbitrary)]
struct Input {
    setup: Setup,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
struct Setup {
    /// `% 8 == 0`: the cpu backend (no faults); otherwise the simulated device.
    backend: u8,
    /// The probability that each backend call fails, in tenths (`% 6`: 0 to 0.5).
    fail_tenths: u8,
    /// Fail exactly this backend call (counted from 1).
    fail_nth: Option<u8>,
    seed: u64,
    transient: bool,
    on_completion: bool,
    /// Device capacity: 1 GiB, or a few hundred bytes to a few MiB.
    capacity: u8,
    /// 20 µs per transfer when `% 8 == 0` (so a polled future can be pending), else none: a
    /// latency slows every transfer, so most runs go without.
    latency: u8,
    pooling: bool,
    /// A cache bound below one 20 MiB segment: every device region is its own backend allocation.
    small_pool: bool,
    track_allocations: bool,
    /// A manager device-memory limit: 512 B, 4 KiB, 2 MiB or 4 MiB (`% 4`).
    limit: Option<u8>,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Span {
    a: u8,
    b: u8,
}

impl Span {
    fn resolve(self, len: usize) -> (usize, usize) {
        let (x, y) = (self.a as usize % (len + 1), self.b as usize % (len + 1));
        (x.min(y), x.max(y))
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum AllocKind {
    Plain,
    Zeroed,
    From(u32),
    Device,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Drive {
    /// Block on the future until it resolves.
    Block,
    /// Poll once; drop it if it is still pending.
    PollOnce,
    /// Drop it without polling.
    Drop,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum CopyShape {
    /// `dst.copy_from_buffer(&src)`.
    Whole,
    /// `dst.copy_from_buffer(&src.slice(start..start + dst.len()))`.
    Window { src_start: u8 },
    /// `dst.slice_mut(span).copy_from_buffer(&src.slice(..))`, lengths clipped to match.
    Ranged { span: Span, src_start: u8 },
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Op {
    Allocate { slot: u8, len: u8, kind: AllocKind },
    Drop { slot: u8 },
    CopyFrom { slot: u8, seed: u32, wrong_len: bool },
    CopyTo { slot: u8, wrong_len: bool },
    AsSlice { slot: u8 },
    WriteMutSlice { slot: u8, at: u8, value: u32 },
    Fill { slot: u8, value: u32 },
    Upload { slot: u8, seed: u32 },
    Synchronize { slot: u8 },
    EnsureOnDevice { slot: u8 },
    EnsureOnHost { slot: u8 },
    MarkDeviceDirty { slot: u8 },
    Compact { slot: u8 },
    SliceCopyTo { slot: u8, span: Span, inner: Span },
    SliceAsSlice { slot: u8, span: Span },
    SliceMutCopyFrom { slot: u8, span: Span, seed: u32 },
    SliceMutFill { slot: u8, span: Span, value: u32 },
    SliceMutWrite { slot: u8, span: Span, seed: u32 },
    CopyFromBuffer { dst: u8, src: u8, shape: CopyShape },
    TryClone { src: u8, dst: u8 },
    CopyFromAsync { slot: u8, seed: u32, drive: Drive },
    CopyToAsync { slot: u8, drive: Drive },
    SynchronizeAsync { slot: u8, drive: Drive },
    TrimExcess,
    RunMaintenance,
}

fn pattern(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| seed.wrapping_mul(2_654_435_761).wrapping_add(i.wrapping_mul(97))).collect()
}

fn manager(setup: &Setup) -> (MemoryManager, Env) {
    let limit = setup.limit.map(|l| [512u64, 4096, 2 << 20, 4 << 20][l as usize % 4]);
    let options = ManagerOptions::default()
        .with_enable_pooling(setup.pooling)
        .with_max_pool_bytes(if setup.small_pool { 1 << 20 } else { 1 << 30 })
        .with_maintenance_interval(None)
        .with_track_allocations(setup.track_allocations)
        .with_device_memory_limit(limit);
    if setup.backend % 8 == 0 {
        let mm = MemoryManager::with_backend(CpuBackend::new(), options).expect("cpu manager");
        return (mm, Env { sim: None, faults: false, scarce: limit.is_some() });
    }
    let fail_probability = (setup.fail_tenths % 6) as f64 / 10.0;
    let fail_nth = setup.fail_nth.map(u64::from);
    let capacity = [1usize << 30, 512, 1024, 4096, 3 << 20, 1 << 30, 1 << 30, 1 << 30][setup.capacity as usize % 8];
    let sim = Arc::new(SimBackend::new(
        SimOptions::default()
            .with_capacity(capacity)
            .with_latency(if setup.latency % 8 == 0 { Duration::from_micros(20) } else { Duration::ZERO })
            .with_faults(
                FaultPlan::default()
                    .with_fail_nth(fail_nth)
                    .with_fail_probability(fail_probability)
                    .with_seed(setup.seed)
                    .with_transient(setup.transient)
                    .with_on_completion(setup.on_completion),
            ),
    ));
    let mm = MemoryManager::with_shared_backend(sim.clone(), options).expect("sim manager");
    let env = Env {
        sim: Some(sim),
        faults: fail_probability > 0.0 || fail_nth.is_some(),
        scarce: limit.is_some() || capacity < (1 << 30),
    };
    (mm, env)
}

fn run(input: &Input) {
    let (mm, env) = manager(&input.setup);
    let mut slots: [Option<Slot>; SLOTS] = Default::default();
    for (step, op) in input.ops.iter().take(MAX_OPS).enumerate() {
        let ctx = || format!("step {step}: {op:?} (setup {:?})", input.setup);
        apply(&mm, &env, &mut slots, *op, &ctx);
    }
    // Settle whatever is still pending and check it against the model.
    for (i, slot) in slots.iter_mut().enumerate() {
        if let Some(slot) = slot {
            let ctx = || format!("end, slot {i} (setup {:?})", input.setup);
            let seen = observe(&env, &slot.buf, !slot.pending, &ctx);
            assert!(
                slot.cands.iter().any(|c| c.allows(&seen)),
                "{}: the buffer is {seen:?}; the model allows {:?}",
                ctx(),
                slot.cands
            );
        }
    }
    drop(slots);
    let s = mm.statistics();
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "live after dropping everything: {s:?}");
    assert_eq!(s.buffers_allocated, s.buffers_freed, "{s:?}");
    assert_eq!(s.total_bytes_allocated, s.total_bytes_freed, "{s:?}");
    assert_eq!(mm.diagnostics().live_count(), 0, "{}", mm.diagnostics().leak_report());
    mm.trim_excess().expect("trim_excess");
    if let Some(sim) = &env.sim {
        assert_eq!(sim.used(), 0, "device bytes held after trim_excess with no buffer alive");
    }
}

fn slot_of(i: u8) -> usize {
    i as usize % SLOTS
}

fuzz_target!(|input: Input| {
    run(&input);
});
