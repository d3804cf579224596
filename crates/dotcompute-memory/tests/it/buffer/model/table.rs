//! The reference side of the model-based test: the contents as plain vectors, the coherence
//! state each buffer must be in, and the copies each transition of the coherence table
//! (docs/ARCHITECTURE.md) costs.

use super::ops::Op;
use dotcompute_memory::*;
use BufferState::*;

/// The data a write with `seed` puts in `len` elements.
pub fn pattern(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| seed.wrapping_mul(2_654_435_761).wrapping_add(i.wrapping_mul(97))).collect()
}

/// Transfers one operation made on one buffer, as counted by `BufferMetrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Copies {
    h2d: u64,
    d2h: u64,
    d2d: u64,
}

/// The copies made between two readings of one buffer's metrics.
pub fn copies_between(before: &BufferMetrics, after: &BufferMetrics) -> Copies {
    Copies {
        h2d: after.host_to_device - before.host_to_device,
        d2h: after.device_to_host - before.device_to_host,
        d2d: after.device_to_device - before.device_to_device,
    }
}

/// What an operation must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
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
pub struct Model {
    pub data: [Vec<u32>; 2],
    pub state: [BufferState; 2],
    pub unified: bool,
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
    pub fn step(&mut self, op: &Op) -> (Expected, [Copies; 2]) {
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
