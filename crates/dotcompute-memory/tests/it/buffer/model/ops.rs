//! The operations the model-based test draws: each one names a buffer (or a destination) and
//! ranges resolved against the buffers' lengths, and [`apply`] runs it on the real buffers.

use super::table::pattern;
use dotcompute_memory::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// A range inside a buffer, resolved against its length when the operation runs.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    a: Index,
    b: Index,
}

impl Span {
    pub fn resolve(self, len: usize) -> (usize, usize) {
        let (x, y) = (self.a.index(len + 1), self.b.index(len + 1));
        (x.min(y), x.max(y))
    }
}

/// One buffer operation, as drawn.
#[derive(Debug, Clone)]
pub enum Op {
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

/// Draws an operation (mark_device_dirty and device copies twice as often as the rest).
pub fn op_strategy() -> impl Strategy<Value = Op> {
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

fn pair(bufs: &mut [UnifiedBuffer<u32>; 2], dst: usize) -> (&mut UnifiedBuffer<u32>, &UnifiedBuffer<u32>) {
    let (x, y) = bufs.split_at_mut(1);
    if dst == 0 {
        (&mut x[0], &y[0])
    } else {
        (&mut y[0], &x[0])
    }
}

/// Runs `op` on the real buffers; returns the data read by reading operations.
pub fn apply(mm: &MemoryManager, bufs: &mut [UnifiedBuffer<u32>; 2], op: &Op) -> Result<Option<Vec<u32>>> {
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
        Op::Compact { buf } => bufs[buf].release_device_part().map(|()| None),
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
