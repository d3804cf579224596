//! State-machine property test: random sequences of buffer operations on two buffers of one
//! manager, compared after every step against a plain `Vec<u32>` reference model and an
//! expected-state model derived from the coherence table in DESIGN.md.
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

use dotcompute_memory::*;
use proptest::prelude::*;
use proptest::sample::Index;
use BufferState::*;

/// A range inside a buffer, resolved against its length when the operation runs.
#[derive(Debug, Clone, Copy)]
struct Span {
    a: Index,
    b: Index,
}

impl Span {
    fn resolve(self, len: usize) -> (usize, usize) {
        let (x, y) = (self.a.index(len + 1), self.b.index(len + 1));
        (x.min(y), x.max(y))
    }
}

#[derive(Debug, Clone)]
enum Op {
    CopyFrom {
        buf: usize,
        seed: u32,
    },
    CopyTo {
        buf: usize,
    },
    AsSlice {
        buf: usize,
    },
    WriteThroughMutSlice {
        buf: usize,
        at: Index,
        value: u32,
    },
    Fill {
        buf: usize,
        value: u32,
    },
    ViewCopyFrom {
        buf: usize,
        span: Span,
        seed: u32,
    },
    ViewFill {
        buf: usize,
        span: Span,
        value: u32,
    },
    ViewWriteThroughMutSlice {
        buf: usize,
        span: Span,
        seed: u32,
    },
    ViewCopyTo {
        buf: usize,
        span: Span,
    },
    NestedViewCopyTo {
        buf: usize,
        span: Span,
        inner: Span,
    },
    ViewAsSlice {
        buf: usize,
        span: Span,
    },
    Synchronize {
        buf: usize,
    },
    EnsureOnDevice {
        buf: usize,
    },
    EnsureOnHost {
        buf: usize,
    },
    MarkDeviceDirty {
        buf: usize,
    },
    /// `dst.copy_from_buffer(&src)` (whole; an error when the lengths differ).
    CopyFromBuffer {
        dst: usize,
    },
    /// `dst.copy_from_buffer(&src.slice(..))`, whole destination from a source window.
    CopyFromBufferWindow {
        dst: usize,
        src_start: Index,
    },
    /// `dst.slice_mut(..).copy_from_buffer(&src.slice(..))`.
    CopyFromBufferRanged {
        dst: usize,
        span: Span,
        src_start: Index,
    },
    Compact {
        buf: usize,
    },
    CopyFromAsync {
        buf: usize,
        seed: u32,
    },
    CopyToAsync {
        buf: usize,
    },
    SynchronizeAsync {
        buf: usize,
    },
    /// `upload`: the data goes straight to the device part.
    Upload {
        buf: usize,
        seed: u32,
    },
    /// Replaces the buffer with `allocate_device(len)` filled by `upload` (`DeviceOnly`).
    AllocateDevice {
        buf: usize,
        seed: u32,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let buf = 0usize..2;
    let span = (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Span { a, b });
    prop_oneof![
        1 => (buf.clone(), any::<u32>()).prop_map(|(buf, seed)| Op::CopyFrom { buf, seed }),
        1 => buf.clone().prop_map(|buf| Op::CopyTo { buf }),
        1 => buf.clone().prop_map(|buf| Op::AsSlice { buf }),
        1 => (buf.clone(), any::<Index>(), any::<u32>())
            .prop_map(|(buf, at, value)| Op::WriteThroughMutSlice { buf, at, value }),
        1 => (buf.clone(), any::<u32>()).prop_map(|(buf, value)| Op::Fill { buf, value }),
        1 => (buf.clone(), span.clone(), any::<u32>()).prop_map(|(buf, span, seed)| Op::ViewCopyFrom { buf, span, seed }),
        1 => (buf.clone(), span.clone(), any::<u32>()).prop_map(|(buf, span, value)| Op::ViewFill { buf, span, value }),
        1 => (buf.clone(), span.clone(), any::<u32>())
            .prop_map(|(buf, span, seed)| Op::ViewWriteThroughMutSlice { buf, span, seed }),
        1 => (buf.clone(), span.clone()).prop_map(|(buf, span)| Op::ViewCopyTo { buf, span }),
        1 => (buf.clone(), span.clone(), span.clone())
            .prop_map(|(buf, span, inner)| Op::NestedViewCopyTo { buf, span, inner }),
        1 => (buf.clone(), span.clone()).prop_map(|(buf, span)| Op::ViewAsSlice { buf, span }),
        1 => buf.clone().prop_map(|buf| Op::Synchronize { buf }),
        1 => buf.clone().prop_map(|buf| Op::EnsureOnDevice { buf }),
        1 => buf.clone().prop_map(|buf| Op::EnsureOnHost { buf }),
        2 => buf.clone().prop_map(|buf| Op::MarkDeviceDirty { buf }),
        2 => buf.clone().prop_map(|dst| Op::CopyFromBuffer { dst }),
        1 => (buf.clone(), any::<Index>()).prop_map(|(dst, src_start)| Op::CopyFromBufferWindow { dst, src_start }),
        2 => (buf.clone(), span, any::<Index>())
            .prop_map(|(dst, span, src_start)| Op::CopyFromBufferRanged { dst, span, src_start }),
        1 => buf.clone().prop_map(|buf| Op::Compact { buf }),
        1 => (buf.clone(), any::<u32>()).prop_map(|(buf, seed)| Op::CopyFromAsync { buf, seed }),
        1 => buf.clone().prop_map(|buf| Op::CopyToAsync { buf }),
        1 => buf.clone().prop_map(|buf| Op::SynchronizeAsync { buf }),
        1 => (buf.clone(), any::<u32>()).prop_map(|(buf, seed)| Op::Upload { buf, seed }),
        1 => (buf, any::<u32>()).prop_map(|(buf, seed)| Op::AllocateDevice { buf, seed }),
    ]
}

fn pattern(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| seed.wrapping_mul(2_654_435_761).wrapping_add(i.wrapping_mul(97))).collect()
}

/// Transfers one operation made on one buffer, as counted by `BufferMetrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Copies {
    h2d: u64,
    d2h: u64,
    d2d: u64,
}

fn copies_between(before: &BufferMetrics, after: &BufferMetrics) -> Copies {
    Copies {
        h2d: after.host_to_device - before.host_to_device,
        d2h: after.device_to_host - before.device_to_host,
        d2d: after.device_to_device - before.device_to_device,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// Success; `Some` when the operation returns data to compare.
    Ok(Option<Vec<u32>>),
    LengthMismatch {
        expected: usize,
        actual: usize,
    },
    Conflict,
}

/// The reference: contents as plain vectors and the expected coherence state of each buffer.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    data: [Vec<u32>; 2],
    state: [BufferState; 2],
    unified: bool,
}

/// Pull (ensure_on_host, as_slice): D2H when the device side is newer.
fn pull(s: BufferState, c: &mut Copies) -> BufferState {
    match s {
        DeviceDirty | DeviceOnly => {
            c.d2h += 1;
            Synchronized
        }
        other => other,
    }
}

/// Push (ensure_on_device): H2D when the host side is newer or the device side is missing.
fn push(s: BufferState, c: &mut Copies) -> BufferState {
    match s {
        HostOnly | HostDirty => {
            c.h2d += 1;
            Synchronized
        }
        other => other,
    }
}

/// A device write: the device part becomes the newest (`DeviceOnly` stays: no host part).
fn device_written(s: BufferState) -> BufferState {
    match s {
        DeviceOnly => DeviceOnly,
        _ => DeviceDirty,
    }
}

/// A host write (as_mut_slice, copy_from, fill): D2H first unless the write covers everything.
fn host_write(s: BufferState, covers_all: bool, c: &mut Copies) -> BufferState {
    match s {
        HostOnly => HostOnly,
        HostDirty | Synchronized => HostDirty,
        DeviceDirty | DeviceOnly => {
            if !covers_all {
                c.d2h += 1;
            }
            HostDirty
        }
    }
}

impl Model {
    /// Applies `op`; returns what it must return and the copies it must make on each buffer.
    fn step(&mut self, op: &Op) -> (Expected, [Copies; 2]) {
        let mut copies = [Copies::default(); 2];
        let lens = [self.data[0].len(), self.data[1].len()];
        let expected = match *op {
            Op::CopyFrom { buf, seed } => {
                self.state[buf] = host_write(self.state[buf], true, &mut copies[buf]);
                self.data[buf] = pattern(seed, lens[buf]);
                Expected::Ok(None)
            }
            Op::CopyTo { buf } => {
                // Reads the current side without changing state.
                if matches!(self.state[buf], DeviceDirty | DeviceOnly) {
                    copies[buf].d2h += 1;
                }
                Expected::Ok(Some(self.data[buf].clone()))
            }
            Op::AsSlice { buf } | Op::EnsureOnHost { buf } => {
                self.state[buf] = pull(self.state[buf], &mut copies[buf]);
                let data = matches!(op, Op::AsSlice { .. }).then(|| self.data[buf].clone());
                Expected::Ok(data)
            }
            Op::WriteThroughMutSlice { buf, at, value } => {
                // as_mut_slice cannot know which elements will be written: it always pulls.
                self.state[buf] = host_write(self.state[buf], false, &mut copies[buf]);
                let i = at.index(lens[buf]);
                self.data[buf][i] = value;
                Expected::Ok(None)
            }
            Op::Fill { buf, value } => {
                self.state[buf] = host_write(self.state[buf], true, &mut copies[buf]);
                self.data[buf].fill(value);
                Expected::Ok(None)
            }
            Op::ViewCopyFrom { buf, span, seed } => {
                let (s, e) = span.resolve(lens[buf]);
                if s < e {
                    let covers = s == 0 && e == lens[buf];
                    self.state[buf] = host_write(self.state[buf], covers, &mut copies[buf]);
                    self.data[buf][s..e].copy_from_slice(&pattern(seed, e - s));
                }
                Expected::Ok(None)
            }
            Op::ViewFill { buf, span, value } => {
                let (s, e) = span.resolve(lens[buf]);
                if s < e {
                    let covers = s == 0 && e == lens[buf];
                    self.state[buf] = host_write(self.state[buf], covers, &mut copies[buf]);
                    self.data[buf][s..e].fill(value);
                }
                Expected::Ok(None)
            }
            Op::ViewWriteThroughMutSlice { buf, span, seed } => {
                // Handing out a mutable host view always marks the host side written.
                let (s, e) = span.resolve(lens[buf]);
                self.state[buf] = host_write(self.state[buf], false, &mut copies[buf]);
                self.data[buf][s..e].copy_from_slice(&pattern(seed, e - s));
                Expected::Ok(None)
            }
            Op::ViewCopyTo { buf, span } => {
                let (s, e) = span.resolve(lens[buf]);
                if s < e && matches!(self.state[buf], DeviceDirty | DeviceOnly) {
                    copies[buf].d2h += 1;
                }
                Expected::Ok(Some(self.data[buf][s..e].to_vec()))
            }
            Op::NestedViewCopyTo { buf, span, inner } => {
                let (s, e) = span.resolve(lens[buf]);
                let (is, ie) = inner.resolve(e - s);
                if is < ie && matches!(self.state[buf], DeviceDirty | DeviceOnly) {
                    copies[buf].d2h += 1;
                }
                Expected::Ok(Some(self.data[buf][s + is..s + ie].to_vec()))
            }
            Op::ViewAsSlice { buf, span } => {
                let (s, e) = span.resolve(lens[buf]);
                self.state[buf] = pull(self.state[buf], &mut copies[buf]);
                Expected::Ok(Some(self.data[buf][s..e].to_vec()))
            }
            Op::Synchronize { buf } | Op::SynchronizeAsync { buf } => {
                self.state[buf] = match self.state[buf] {
                    HostOnly | HostDirty => push(self.state[buf], &mut copies[buf]),
                    _ => pull(self.state[buf], &mut copies[buf]),
                };
                Expected::Ok(None)
            }
            Op::EnsureOnDevice { buf } => {
                self.state[buf] = push(self.state[buf], &mut copies[buf]);
                Expected::Ok(None)
            }
            Op::MarkDeviceDirty { buf } => match self.state[buf] {
                HostDirty => Expected::Conflict,
                // Without a host part the device part stays the only one.
                DeviceOnly => Expected::Ok(None),
                s => {
                    push(s, &mut copies[buf]);
                    self.state[buf] = DeviceDirty;
                    Expected::Ok(None)
                }
            },
            Op::CopyFromBuffer { dst } => {
                let src = 1 - dst;
                if lens[dst] != lens[src] {
                    Expected::LengthMismatch { expected: lens[dst], actual: lens[src] }
                } else {
                    self.device_copy(dst, 0, 0, lens[dst], &mut copies[dst]);
                    Expected::Ok(None)
                }
            }
            Op::CopyFromBufferWindow { dst, src_start } => {
                let src = 1 - dst;
                if lens[dst] > lens[src] {
                    // The window would run past the source: the op takes a shorter one and
                    // fails with a length mismatch.
                    Expected::LengthMismatch { expected: lens[dst], actual: lens[src] }
                } else {
                    let ss = src_start.index(lens[src] - lens[dst] + 1);
                    self.device_copy(dst, 0, ss, lens[dst], &mut copies[dst]);
                    Expected::Ok(None)
                }
            }
            Op::CopyFromBufferRanged { dst, span, src_start } => {
                let src = 1 - dst;
                let (ds, de) = span.resolve(lens[dst]);
                let k = (de - ds).min(lens[src]);
                let ss = src_start.index(lens[src] - k + 1);
                if k > 0 {
                    self.device_copy(dst, ds, ss, k, &mut copies[dst]);
                }
                Expected::Ok(None)
            }
            Op::Compact { buf } => {
                pull(self.state[buf], &mut copies[buf]);
                self.state[buf] = HostOnly;
                Expected::Ok(None)
            }
            Op::CopyFromAsync { buf, seed } => {
                let s = host_write(self.state[buf], true, &mut copies[buf]);
                self.state[buf] = push(s, &mut copies[buf]);
                self.data[buf] = pattern(seed, lens[buf]);
                Expected::Ok(None)
            }
            Op::CopyToAsync { buf } => {
                self.state[buf] = pull(self.state[buf], &mut copies[buf]);
                Expected::Ok(Some(self.data[buf].clone()))
            }
            Op::Upload { buf, seed } => {
                copies[buf].h2d += 1;
                self.state[buf] = device_written(self.state[buf]);
                self.data[buf] = pattern(seed, lens[buf]);
                Expected::Ok(None)
            }
            Op::AllocateDevice { buf, seed } => {
                // Counted on the new buffer, whose metrics start at zero.
                copies[buf].h2d += 1;
                self.state[buf] = DeviceOnly;
                self.data[buf] = pattern(seed, lens[buf]);
                Expected::Ok(None)
            }
        };
        if self.unified {
            for c in &mut copies {
                c.h2d = 0;
                c.d2h = 0;
            }
        }
        (expected, copies)
    }

    /// A device-side copy of `len` elements from the other buffer into `dst` (a device write:
    /// the destination ends `DeviceDirty`; a partial one first brings its device side up to
    /// date).
    fn device_copy(&mut self, dst: usize, dst_start: usize, src_start: usize, len: usize, c: &mut Copies) {
        let src = 1 - dst;
        let covers_all = dst_start == 0 && len == self.data[dst].len();
        if !covers_all {
            push(self.state[dst], c);
        }
        if self.unified || matches!(self.state[src], Synchronized | DeviceDirty | DeviceOnly) {
            c.d2d += 1;
        } else {
            c.h2d += 1;
        }
        self.state[dst] = device_written(self.state[dst]);
        let chunk = self.data[src][src_start..src_start + len].to_vec();
        self.data[dst][dst_start..dst_start + len].copy_from_slice(&chunk);
    }
}

fn pair(bufs: &mut [UnifiedBuffer<u32>; 2], dst: usize) -> (&mut UnifiedBuffer<u32>, &UnifiedBuffer<u32>) {
    let (x, y) = bufs.split_at_mut(1);
    if dst == 0 {
        (&mut x[0], &y[0])
    } else {
        (&mut y[0], &x[0])
    }
}

/// Runs `op` on the real buffers; returns the data read by reading operations.
fn apply(mm: &MemoryManager, bufs: &mut [UnifiedBuffer<u32>; 2], op: &Op) -> Result<Option<Vec<u32>>> {
    match *op {
        Op::Upload { buf, seed } => {
            let data = pattern(seed, bufs[buf].len());
            bufs[buf].upload(&data).map(|()| None)
        }
        Op::AllocateDevice { buf, seed } => {
            let mut fresh = mm.allocate_device::<u32>(bufs[buf].len())?;
            fresh.upload(&pattern(seed, fresh.len()))?;
            bufs[buf] = fresh;
            Ok(None)
        }
        Op::CopyFrom { buf, seed } => {
            let data = pattern(seed, bufs[buf].len());
            bufs[buf].copy_from(&data).map(|()| None)
        }
        Op::CopyTo { buf } => {
            let mut out = vec![u32::MAX; bufs[buf].len()];
            bufs[buf].copy_to(&mut out).map(|()| Some(out))
        }
        Op::AsSlice { buf } => bufs[buf].as_slice().map(|s| Some(s.to_vec())),
        Op::WriteThroughMutSlice { buf, at, value } => {
            let i = at.index(bufs[buf].len());
            bufs[buf].as_mut_slice().map(|s| {
                s[i] = value;
                None
            })
        }
        Op::Fill { buf, value } => bufs[buf].fill(value).map(|()| None),
        Op::ViewCopyFrom { buf, span, seed } => {
            let (s, e) = span.resolve(bufs[buf].len());
            bufs[buf].slice_mut(s..e)?.copy_from(&pattern(seed, e - s)).map(|()| None)
        }
        Op::ViewFill { buf, span, value } => {
            let (s, e) = span.resolve(bufs[buf].len());
            bufs[buf].slice_mut(s..e)?.fill(value).map(|()| None)
        }
        Op::ViewWriteThroughMutSlice { buf, span, seed } => {
            let (s, e) = span.resolve(bufs[buf].len());
            let mut view = bufs[buf].slice_mut(s..e)?;
            let host = view.as_mut_slice()?;
            host.copy_from_slice(&pattern(seed, e - s));
            Ok(None)
        }
        Op::ViewCopyTo { buf, span } => {
            let (s, e) = span.resolve(bufs[buf].len());
            let mut out = vec![u32::MAX; e - s];
            bufs[buf].slice(s..e)?.copy_to(&mut out).map(|()| Some(out))
        }
        Op::NestedViewCopyTo { buf, span, inner } => {
            let (s, e) = span.resolve(bufs[buf].len());
            let (is, ie) = inner.resolve(e - s);
            let view = bufs[buf].slice(s..e)?.slice(is..ie)?;
            assert_eq!((view.offset(), view.len()), (s + is, ie - is));
            let mut out = vec![u32::MAX; ie - is];
            view.copy_to(&mut out).map(|()| Some(out))
        }
        Op::ViewAsSlice { buf, span } => {
            let (s, e) = span.resolve(bufs[buf].len());
            bufs[buf].slice(s..e)?.as_slice().map(|v| Some(v.to_vec()))
        }
        Op::Synchronize { buf } => bufs[buf].synchronize().map(|()| None),
        Op::EnsureOnDevice { buf } => bufs[buf].ensure_on_device().map(|()| None),
        Op::EnsureOnHost { buf } => bufs[buf].ensure_on_host().map(|()| None),
        Op::MarkDeviceDirty { buf } => bufs[buf].mark_device_dirty().map(|()| None),
        Op::CopyFromBuffer { dst } => {
            let (d, s) = pair(bufs, dst);
            d.copy_from_buffer(s).map(|()| None)
        }
        Op::CopyFromBufferWindow { dst, src_start } => {
            let (d, s) = pair(bufs, dst);
            let (dl, sl) = (d.len(), s.len());
            let window = if dl > sl {
                s.slice(..)?
            } else {
                let ss = src_start.index(sl - dl + 1);
                s.slice(ss..ss + dl)?
            };
            d.copy_from_buffer(&window).map(|()| None)
        }
        Op::CopyFromBufferRanged { dst, span, src_start } => {
            let (d, s) = pair(bufs, dst);
            let (ds, de) = span.resolve(d.len());
            let k = (de - ds).min(s.len());
            let ss = src_start.index(s.len() - k + 1);
            let src_view = s.slice(ss..ss + k)?;
            d.slice_mut(ds..ds + k)?.copy_from_buffer(&src_view).map(|()| None)
        }
        Op::Compact { buf } => bufs[buf].compact().map(|()| None),
        Op::CopyFromAsync { buf, seed } => {
            let data = pattern(seed, bufs[buf].len());
            pollster::block_on(bufs[buf].copy_from_async(&data)).map(|()| None)
        }
        Op::CopyToAsync { buf } => {
            let mut out = vec![u32::MAX; bufs[buf].len()];
            pollster::block_on(bufs[buf].copy_to_async(&mut out)).map(|()| Some(out))
        }
        Op::SynchronizeAsync { buf } => pollster::block_on(bufs[buf].synchronize_async()).map(|()| None),
    }
}

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

fn manager_options() -> ManagerOptions {
    ManagerOptions { maintenance_interval: None, ..Default::default() }
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
        let mm = MemoryManager::with_backend(SimBackend::new(SimOptions::default()), manager_options()).unwrap();
        run(&mm, lens, &ops, false)?;
    }

    #[test]
    fn cpu_matches_the_model(lens in lens(), ops in prop::collection::vec(op_strategy(), 1..40)) {
        let mm = MemoryManager::with_backend(CpuBackend::new(), manager_options()).unwrap();
        run(&mm, lens, &ops, false)?;
    }

    #[test]
    fn failed_calls_change_nothing(
        lens in lens(),
        ops in prop::collection::vec(op_strategy(), 1..40),
        seed in any::<u64>(),
        transient in any::<bool>(),
    ) {
        let sim = SimBackend::new(SimOptions {
            faults: FaultPlan { fail_probability: 0.25, seed, transient, ..Default::default() },
            ..Default::default()
        });
        let mm = MemoryManager::with_backend(sim, manager_options()).unwrap();
        run(&mm, lens, &ops, true)?;
    }
}

/// The fault-injection variant must actually inject: over a fixed sequence, some calls fail
/// and the buffers still end with the right contents.
#[test]
fn fault_injection_really_fails_calls() {
    let sim = SimBackend::new(SimOptions {
        faults: FaultPlan { fail_probability: 0.3, seed: 7, ..Default::default() },
        ..Default::default()
    });
    let mm = MemoryManager::with_backend(sim, manager_options()).unwrap();
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
