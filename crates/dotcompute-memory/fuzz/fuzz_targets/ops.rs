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

// ---- the model ----

/// One buffer as the model expects it. `epochs` is known when the expectation is a buffer
/// observed unchanged since; an operation that changes the buffer leaves it unknown.
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    data: Vec<u32>,
    state: BufferState,
    epochs: Option<(u64, u64)>,
}

impl Expect {
    fn with(&self, state: BufferState, data: Vec<u32>) -> Expect {
        Expect { data, state, epochs: None }
    }

    /// `seen` (an observed buffer, epochs known) is what this expectation describes.
    fn allows(&self, seen: &Expect) -> bool {
        self.data == seen.data && self.state == seen.state && self.epochs.is_none_or(|e| Some(e) == seen.epochs)
    }

    /// The same buffer, changed only in state (contents kept).
    fn to_state(&self, state: BufferState) -> Expect {
        if state == self.state {
            self.clone()
        } else {
            self.with(state, self.data.clone())
        }
    }
}

/// Errors the model itself predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    LengthMismatch,
    Conflict,
}

enum Outcome {
    /// Success: the buffer afterwards, and the data the call returns (if it returns any).
    Ok(Expect, Option<Vec<u32>>),
    Fail(Want),
}

/// Makes the host part current (D2H when the device part is newer).
fn pull(s: BufferState) -> BufferState {
    match s {
        DeviceDirty | DeviceOnly => Synchronized,
        other => other,
    }
}

/// Makes the device part current (H2D when the host part is newer).
fn push(s: BufferState) -> BufferState {
    match s {
        HostOnly | HostDirty => Synchronized,
        other => other,
    }
}

/// A host write (after a pull, for a partial one): the host part is newest.
fn host_write(s: BufferState) -> BufferState {
    match s {
        HostOnly => HostOnly,
        _ => HostDirty,
    }
}

/// A device write (the device part made first if missing): the device part is newest.
fn device_write(s: BufferState) -> BufferState {
    match s {
        DeviceOnly => DeviceOnly,
        _ => DeviceDirty,
    }
}

// ---- the environment ----

struct Env {
    /// The simulated device, when that is the backend.
    sim: Option<Arc<SimBackend>>,
    /// Backend calls may fail by injection.
    faults: bool,
    /// Allocations may fail for lack of memory (small device or a manager limit).
    scarce: bool,
}

fn is_injected(e: &Error) -> bool {
    matches!(e, Error::Backend { backend: "sim", message, .. } if message.contains("injected"))
}

enum ErrClass {
    Predicted(Want),
    /// A fault or shortage the environment allows anywhere.
    Environment,
}

fn classify(env: &Env, e: &Error, ctx: &dyn Fn() -> String) -> ErrClass {
    match e {
        Error::LengthMismatch { .. } => ErrClass::Predicted(Want::LengthMismatch),
        Error::ConcurrentModification { .. } => ErrClass::Predicted(Want::Conflict),
        e if env.faults && is_injected(e) => ErrClass::Environment,
        Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. } if env.scarce => ErrClass::Environment,
        other => panic!("{}: unexpected error {other:?}", ctx()),
    }
}

/// A buffer and what the model allows it to be: one expectation, or several while an
/// asynchronous transfer that was not awaited may still be pending (it completes or fails when
/// a later call settles it).
struct Slot {
    buf: UnifiedBuffer<u32>,
    cands: Vec<Expect>,
    /// A transfer may be pending: reading would settle it, so the buffer is not observed.
    pending: bool,
}

fn dedup(v: Vec<Expect>) -> Vec<Expect> {
    let mut out: Vec<Expect> = Vec::with_capacity(v.len());
    for e in v {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// What the buffer holds now, read without changing it (injected read faults are retried and
/// must change nothing).
fn observe(env: &Env, buf: &UnifiedBuffer<u32>, settled: bool, ctx: &dyn Fn() -> String) -> Expect {
    let before = (buf.state(), buf.epochs());
    for _ in 0..256 {
        match buf.to_vec() {
            Ok(data) => {
                let now = Expect { data, state: buf.state(), epochs: Some(buf.epochs()) };
                if settled {
                    assert_eq!((now.state, now.epochs.unwrap()), before, "{}: to_vec changed the buffer", ctx());
                }
                return now;
            }
            Err(e) if env.faults && is_injected(&e) => {
                if settled {
                    assert_eq!((buf.state(), buf.epochs()), before, "{}: a failed read changed the buffer", ctx());
                }
            }
            Err(e) => panic!("{}: reading the buffer failed: {e:?}", ctx()),
        }
    }
    panic!("{}: 256 injected read faults in a row", ctx())
}

/// Checks a settled buffer against its candidates and collapses them to what it is.
fn check(env: &Env, slot: &mut Slot, ctx: &dyn Fn() -> String) {
    if slot.pending {
        return;
    }
    let seen = observe(env, &slot.buf, true, ctx);
    assert!(
        slot.cands.iter().any(|c| c.allows(&seen)),
        "{}: the buffer is {seen:?}; the model allows only {:?}",
        ctx(),
        slot.cands
    );
    slot.cands = vec![seen];
}

/// The candidates after a call that returned `result`, given what the model expects of each
/// (empty when none allows that result).
fn next_cands(
    env: &Env,
    cands: &[Expect],
    result: &Result<Option<Vec<u32>>>,
    expect: &dyn Fn(&Expect) -> Outcome,
    ctx: &dyn Fn() -> String,
) -> Vec<Expect> {
    let next: Vec<Expect> = match result {
        Ok(got) => cands
            .iter()
            .filter_map(|c| match expect(c) {
                Outcome::Ok(n, ret) if ret.is_none() || ret == *got => Some(n),
                _ => None,
            })
            .collect(),
        Err(e) => {
            let class = classify(env, e, ctx);
            cands
                .iter()
                .filter(|c| match (expect(c), &class) {
                    (Outcome::Fail(w), ErrClass::Predicted(got)) => w == *got,
                    (_, ErrClass::Environment) => true,
                    (Outcome::Ok(..), ErrClass::Predicted(_)) => false,
                })
                .cloned()
                .collect()
        }
    };
    dedup(next)
}

/// [`next_cands`], which must leave at least one candidate.
fn next_cands_checked(
    env: &Env,
    cands: &[Expect],
    result: &Result<Option<Vec<u32>>>,
    expect: &dyn Fn(&Expect) -> Outcome,
    ctx: &dyn Fn() -> String,
) -> Vec<Expect> {
    let next = next_cands(env, cands, result, expect, ctx);
    assert!(!next.is_empty(), "{}: returned {result:?}, which no expectation allows; the model had {cands:?}", ctx());
    next
}

// ---- driving futures ----

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: polls, parks until woken, polls again.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// What a driven future gave: its result, or nothing when it was dropped before resolving.
fn drive<F: Future>(f: F, how: Drive) -> Option<F::Output> {
    match how {
        Drive::Block => Some(block_on(f)),
        Drive::PollOnce => {
            let mut f = std::pin::pin!(f);
            match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(v) => Some(v),
                Poll::Pending => None,
            }
        }
        Drive::Drop => {
            drop(f);
            None
        }
    }
}

// ---- the run ----

fn manager(setup: &Setup) -> (MemoryManager, Env) {
    let limit = setup.limit.map(|l| [512u64, 4096, 2 << 20, 4 << 20][l as usize % 4]);
    let options = ManagerOptions {
        enable_pooling: setup.pooling,
        max_pool_bytes: if setup.small_pool { 1 << 20 } else { 1 << 30 },
        maintenance_interval: None,
        track_allocations: setup.track_allocations,
        device_memory_limit: limit,
        ..Default::default()
    };
    if setup.backend % 8 == 0 {
        let mm = MemoryManager::with_backend(CpuBackend::new(), options).expect("cpu manager");
        return (mm, Env { sim: None, faults: false, scarce: limit.is_some() });
    }
    let fail_probability = (setup.fail_tenths % 6) as f64 / 10.0;
    let fail_nth = setup.fail_nth.map(u64::from);
    let capacity = [1usize << 30, 512, 1024, 4096, 3 << 20, 1 << 30, 1 << 30, 1 << 30][setup.capacity as usize % 8];
    let sim = Arc::new(SimBackend::new(SimOptions {
        capacity,
        latency: if setup.latency % 8 == 0 { Duration::from_micros(20) } else { Duration::ZERO },
        faults: FaultPlan {
            fail_nth,
            fail_probability,
            seed: setup.seed,
            transient: setup.transient,
            on_completion: setup.on_completion,
        },
        ..Default::default()
    }));
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

/// Runs `call` on the buffer in `slot` (if any) and moves its model on.
/// `settles`: the call settles pending work on the buffer before anything else can fail.
fn single(
    env: &Env,
    slots: &mut [Option<Slot>; SLOTS],
    slot: u8,
    settles: bool,
    expect: &dyn Fn(&Expect) -> Outcome,
    call: impl FnOnce(&mut UnifiedBuffer<u32>) -> Result<Option<Vec<u32>>>,
    ctx: &dyn Fn() -> String,
) {
    let Some(s) = slots[slot_of(slot)].as_mut() else { return };
    let result = call(&mut s.buf);
    s.cands = next_cands_checked(env, &s.cands, &result, expect, ctx);
    if settles {
        s.pending = false;
    }
    check(env, s, ctx);
}

/// An asynchronous call: awaited like a synchronous one, or dropped (then the buffer may end up
/// either way, decided when the transfer is settled).
fn asynchronous(
    env: &Env,
    slots: &mut [Option<Slot>; SLOTS],
    slot: u8,
    expect: &dyn Fn(&Expect) -> Outcome,
    call: impl FnOnce(&mut UnifiedBuffer<u32>) -> Option<Result<Option<Vec<u32>>>>,
    ctx: &dyn Fn() -> String,
) {
    let Some(s) = slots[slot_of(slot)].as_mut() else { return };
    match call(&mut s.buf) {
        Some(result) => {
            s.cands = next_cands_checked(env, &s.cands, &result, expect, ctx);
            s.pending = false;
            check(env, s, ctx);
        }
        None => {
            let mut all = s.cands.clone();
            all.extend(s.cands.iter().filter_map(|c| match expect(c) {
                Outcome::Ok(n, _) => Some(n),
                Outcome::Fail(_) => None,
            }));
            s.cands = dedup(all);
            s.pending = true;
        }
    }
}

fn apply(mm: &MemoryManager, env: &Env, slots: &mut [Option<Slot>; SLOTS], op: Op, ctx: &dyn Fn() -> String) {
    let len_of = |slots: &[Option<Slot>; SLOTS], i: u8| slots[slot_of(i)].as_ref().map(|s| s.buf.len());
    match op {
        Op::Allocate { slot, len, kind } => {
            let len = len as usize % (MAX_LEN + 1);
            slots[slot_of(slot)] = None;
            let r = match kind {
                AllocKind::Plain => mm.allocate::<u32>(len),
                AllocKind::Zeroed => mm.allocate_zeroed::<u32>(len),
                AllocKind::From(seed) => mm.allocate_from(&pattern(seed, len)),
                AllocKind::Device => mm.allocate_device::<u32>(len),
            };
            let buf = match r {
                Ok(b) => b,
                Err(e) => {
                    assert!(matches!(classify(env, &e, ctx), ErrClass::Environment), "{}: {e:?}", ctx());
                    return;
                }
            };
            assert_eq!(buf.len(), len, "{}", ctx());
            let seen = observe(env, &buf, true, ctx);
            let state = match kind {
                AllocKind::Device if len > 0 => DeviceOnly,
                _ => HostOnly,
            };
            assert_eq!(seen.state, state, "{}: state of a new buffer", ctx());
            match kind {
                AllocKind::Zeroed => assert_eq!(seen.data, vec![0; len], "{}", ctx()),
                AllocKind::From(seed) => assert_eq!(seen.data, pattern(seed, len), "{}", ctx()),
                AllocKind::Plain | AllocKind::Device => {} // unspecified contents
            }
            slots[slot_of(slot)] = Some(Slot { buf, cands: vec![seen], pending: false });
        }
        Op::Drop { slot } => slots[slot_of(slot)] = None,
        Op::CopyFrom { slot, seed, wrong_len } => {
            let Some(len) = len_of(slots, slot) else { return };
            let data = pattern(seed, len + wrong_len as usize);
            let expect = |c: &Expect| {
                if wrong_len {
                    Outcome::Fail(Want::LengthMismatch)
                } else {
                    Outcome::Ok(c.with(host_write(c.state), data.clone()), None)
                }
            };
            single(env, slots, slot, !wrong_len, &expect, |b| b.copy_from(&data).map(|()| None), ctx);
        }
        Op::CopyTo { slot, wrong_len } => {
            let Some(len) = len_of(slots, slot) else { return };
            let expect = |c: &Expect| {
                if wrong_len {
                    Outcome::Fail(Want::LengthMismatch)
                } else {
                    Outcome::Ok(c.clone(), Some(c.data.clone()))
                }
            };
            let call = |b: &mut UnifiedBuffer<u32>| {
                let mut out = vec![u32::MAX; len + wrong_len as usize];
                b.copy_to(&mut out).map(|()| Some(out))
            };
            single(env, slots, slot, !wrong_len, &expect, call, ctx);
        }
        Op::AsSlice { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), Some(c.data.clone()));
            single(env, slots, slot, true, &expect, |b| b.as_slice().map(|s| Some(s.to_vec())), ctx);
        }
        Op::WriteMutSlice { slot, at, value } => {
            let Some(len) = len_of(slots, slot) else { return };
            let expect = |c: &Expect| {
                let mut data = c.data.clone();
                if len > 0 {
                    data[at as usize % len] = value;
                }
                Outcome::Ok(c.with(host_write(c.state), data), None)
            };
            let call = |b: &mut UnifiedBuffer<u32>| {
                b.as_mut_slice().map(|s| {
                    if len > 0 {
                        s[at as usize % len] = value;
                    }
                    None
                })
            };
            single(env, slots, slot, true, &expect, call, ctx);
        }
        Op::Fill { slot, value } => {
            let expect = |c: &Expect| Outcome::Ok(c.with(host_write(c.state), vec![value; c.data.len()]), None);
            single(env, slots, slot, true, &expect, |b| b.fill(value).map(|()| None), ctx);
        }
        Op::Upload { slot, seed } => {
            let Some(len) = len_of(slots, slot) else { return };
            let data = pattern(seed, len);
            let expect = |c: &Expect| {
                if len == 0 {
                    Outcome::Ok(c.clone(), None)
                } else {
                    Outcome::Ok(c.with(device_write(c.state), data.clone()), None)
                }
            };
            single(env, slots, slot, true, &expect, |b| b.upload(&data).map(|()| None), ctx);
        }
        Op::Synchronize { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(Synchronized), None);
            single(env, slots, slot, true, &expect, |b| b.synchronize().map(|()| None), ctx);
        }
        Op::EnsureOnDevice { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(push(c.state)), None);
            single(env, slots, slot, true, &expect, |b| b.ensure_on_device().map(|()| None), ctx);
        }
        Op::EnsureOnHost { slot } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), None);
            single(env, slots, slot, true, &expect, |b| b.ensure_on_host().map(|()| None), ctx);
        }
        Op::MarkDeviceDirty { slot } => {
            let expect = |c: &Expect| match c.state {
                HostDirty => Outcome::Fail(Want::Conflict),
                // device_written bumps the device epoch even when the state stays the same.
                s => Outcome::Ok(c.with(device_write(s), c.data.clone()), None),
            };
            single(env, slots, slot, true, &expect, |b| b.mark_device_dirty().map(|()| None), ctx);
        }
        Op::Compact { slot } => {
            // The device epoch is set to the host's even when the state stays HostOnly.
            let expect = |c: &Expect| Outcome::Ok(c.with(HostOnly, c.data.clone()), None);
            single(env, slots, slot, true, &expect, |b| b.compact().map(|()| None), ctx);
        }
        Op::SliceCopyTo { slot, span, inner } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let (is, ie) = inner.resolve(e - s);
            let expect = |c: &Expect| Outcome::Ok(c.clone(), Some(c.data[s + is..s + ie].to_vec()));
            let call = |b: &mut UnifiedBuffer<u32>| {
                let view = b.slice(s..e)?.slice(is..ie)?;
                assert_eq!((view.offset(), view.len()), (s + is, ie - is));
                view.to_vec().map(Some)
            };
            single(env, slots, slot, true, &expect, call, ctx);
        }
        Op::SliceAsSlice { slot, span } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), Some(c.data[s..e].to_vec()));
            single(env, slots, slot, true, &expect, |b| b.slice(s..e)?.as_slice().map(|v| Some(v.to_vec())), ctx);
        }
        Op::SliceMutCopyFrom { slot, span, seed } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let data = pattern(seed, e - s);
            let expect = |c: &Expect| {
                if s == e && len > 0 {
                    return Outcome::Ok(c.clone(), None);
                }
                let mut d = c.data.clone();
                d[s..e].copy_from_slice(&data);
                Outcome::Ok(c.with(host_write(c.state), d), None)
            };
            single(env, slots, slot, true, &expect, |b| b.slice_mut(s..e)?.copy_from(&data).map(|()| None), ctx);
        }
        Op::SliceMutFill { slot, span, value } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let expect = |c: &Expect| {
                if s == e && len > 0 {
                    return Outcome::Ok(c.clone(), None);
                }
                let mut d = c.data.clone();
                d[s..e].fill(value);
                Outcome::Ok(c.with(host_write(c.state), d), None)
            };
            single(env, slots, slot, true, &expect, |b| b.slice_mut(s..e)?.fill(value).map(|()| None), ctx);
        }
        Op::SliceMutWrite { slot, span, seed } => {
            let Some(len) = len_of(slots, slot) else { return };
            let (s, e) = span.resolve(len);
            let data = pattern(seed, e - s);
            let expect = |c: &Expect| {
                let mut d = c.data.clone();
                d[s..e].copy_from_slice(&data);
                Outcome::Ok(c.with(host_write(c.state), d), None)
            };
            let call = |b: &mut UnifiedBuffer<u32>| {
                let mut view = b.slice_mut(s..e)?;
                view.as_mut_slice()?.copy_from_slice(&data);
                Ok(None)
            };
            single(env, slots, slot, true, &expect, call, ctx);
        }
        Op::CopyFromBuffer { dst, src, shape } => copy_from_buffer(env, slots, dst, src, shape, ctx),
        Op::TryClone { src, dst } => {
            let (si, di) = (slot_of(src), slot_of(dst));
            if si == di || slots[si].is_none() {
                return;
            }
            slots[di] = None;
            let s = slots[si].as_mut().expect("checked");
            match s.buf.try_clone() {
                Ok(buf) => {
                    // A fresh buffer written on the device side: the source's contents, DeviceDirty.
                    let cands = dedup(s.cands.iter().map(|c| c.with(DeviceDirty, c.data.clone())).collect());
                    let mut new = Slot { buf, cands, pending: false };
                    check(env, &mut new, ctx);
                    slots[di] = Some(new);
                }
                Err(e) => {
                    assert!(matches!(classify(env, &e, ctx), ErrClass::Environment), "{}: {e:?}", ctx());
                }
            }
            // The source is only read (a pending transfer of it may have been settled).
            if let Some(s) = slots[si].as_mut() {
                check(env, s, ctx);
            }
        }
        Op::CopyFromAsync { slot, seed, drive: how } => {
            let Some(len) = len_of(slots, slot) else { return };
            let data = pattern(seed, len);
            let expect = |c: &Expect| Outcome::Ok(c.with(Synchronized, data.clone()), None);
            let call = |b: &mut UnifiedBuffer<u32>| drive(b.copy_from_async(&data), how).map(|r| r.map(|()| None));
            asynchronous(env, slots, slot, &expect, call, ctx);
        }
        Op::CopyToAsync { slot, drive: how } => {
            let Some(len) = len_of(slots, slot) else { return };
            let expect = |c: &Expect| Outcome::Ok(c.to_state(pull(c.state)), Some(c.data.clone()));
            let call = |b: &mut UnifiedBuffer<u32>| {
                let mut out = vec![u32::MAX; len];
                let r = drive(b.copy_to_async(&mut out), how);
                r.map(|r| r.map(|()| Some(out)))
            };
            asynchronous(env, slots, slot, &expect, call, ctx);
        }
        Op::SynchronizeAsync { slot, drive: how } => {
            let expect = |c: &Expect| Outcome::Ok(c.to_state(Synchronized), None);
            let call = |b: &mut UnifiedBuffer<u32>| drive(b.synchronize_async(), how).map(|r| r.map(|()| None));
            asynchronous(env, slots, slot, &expect, call, ctx);
        }
        Op::TrimExcess => {
            mm.trim_excess().expect("trim_excess");
        }
        Op::RunMaintenance => {
            mm.run_maintenance();
        }
    }
}

/// `copy_from_buffer` between two different slots, in one of three shapes. The destination's
/// expectations are every (destination, source) pair of candidates.
fn copy_from_buffer(
    env: &Env,
    slots: &mut [Option<Slot>; SLOTS],
    dst: u8,
    src: u8,
    shape: CopyShape,
    ctx: &dyn Fn() -> String,
) {
    let (di, si) = (slot_of(dst), slot_of(src));
    if di == si {
        return;
    }
    if slots[di].is_none() || slots[si].is_none() {
        return;
    }
    let (mut d, mut s) = (slots[di].take().expect("checked"), slots[si].take().expect("checked"));
    let (dl, sl) = (d.buf.len(), s.buf.len());
    // (destination range, source start, whether the lengths mismatch)
    let (drange, ss, mismatch) = match shape {
        CopyShape::Whole => ((0, dl), 0, dl != sl),
        CopyShape::Window { src_start } => {
            if dl > sl {
                ((0, dl), 0, true)
            } else {
                ((0, dl), src_start as usize % (sl - dl + 1), false)
            }
        }
        CopyShape::Ranged { span, src_start } => {
            let (a, b) = span.resolve(dl);
            let k = (b - a).min(sl);
            ((a, a + k), src_start as usize % (sl - k + 1), false)
        }
    };
    let k = drange.1 - drange.0;
    // An empty range of a non-empty destination returns before touching either buffer.
    let noop = k == 0 && dl > 0;
    let result = {
        let sb = &s.buf;
        let r = match shape {
            CopyShape::Whole => d.buf.copy_from_buffer(sb),
            CopyShape::Window { .. } => {
                let window = if mismatch { sb.slice(..) } else { sb.slice(ss..ss + dl) };
                window.and_then(|w| d.buf.copy_from_buffer(&w))
            }
            CopyShape::Ranged { .. } => sb.slice(ss..ss + k).and_then(|w| {
                let mut view = d.buf.slice_mut(drange.0..drange.1)?;
                view.copy_from_buffer(&w)
            }),
        };
        r.map(|()| None)
    };
    let mut next = Vec::new();
    for sc in &s.cands {
        let expect = |c: &Expect| {
            if mismatch {
                return Outcome::Fail(Want::LengthMismatch);
            }
            if noop {
                return Outcome::Ok(c.clone(), None);
            }
            let mut data = c.data.clone();
            data[drange.0..drange.1].copy_from_slice(&sc.data[ss..ss + k]);
            Outcome::Ok(c.with(device_write(c.state), data), None)
        };
        // Candidates of one source expectation may not fit the result while another's do.
        next.extend(next_cands(env, &d.cands, &result, &expect, ctx));
    }
    assert!(
        !next.is_empty(),
        "{}: returned {result:?}, which no expectation allows; destination {:?}, source {:?}",
        ctx(),
        d.cands,
        s.cands
    );
    d.cands = dedup(next);
    if !mismatch && !noop {
        d.pending = false;
    }
    check(env, &mut d, ctx);
    check(env, &mut s, ctx);
    slots[di] = Some(d);
    slots[si] = Some(s);
}

fuzz_target!(|input: Input| {
    run(&input);
});
