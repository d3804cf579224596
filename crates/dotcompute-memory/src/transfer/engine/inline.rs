//! Transfers on unified memory: every one is a host copy, made inline when the execution first
//! advances it, so no device ever holds a pointer to the caller's memory.

use crate::buffer::raw::RawBuffer;
use crate::error::Direction;
use crate::transfer::pipeline::Finished;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One transfer on unified memory: a host copy made inline.
pub(super) enum InlineOp<'a> {
    Upload(&'a [u8], &'a mut RawBuffer),
    Download(&'a RawBuffer, &'a mut [u8]),
    Copy(&'a RawBuffer, &'a mut RawBuffer),
}

/// Transfers on unified memory, copied one after the other when first advanced. Small uploads
/// are grouped (reported as batched, with the group's duration); the rest come one per run.
pub(super) struct InlineRun<'a> {
    ops: Vec<(usize, InlineOp<'a>)>,
    batched: bool,
    pub(super) start_order: usize,
    /// The report lines, once the copies are made.
    pub(super) finished: Option<Vec<Finished>>,
}

impl<'a> InlineRun<'a> {
    /// `batched`: a group of small uploads, reported as batched.
    pub(super) fn new(ops: Vec<(usize, InlineOp<'a>)>, batched: bool) -> Self {
        InlineRun { ops, batched, start_order: 0, finished: None }
    }

    /// Makes every copy (on the first call); true when that call did the work.
    pub(super) fn advance(&mut self) -> bool {
        if self.finished.is_some() {
            return false;
        }
        // One clock read pair for the group, not two per transfer.
        let t = Instant::now();
        let (batched, start_order) = (self.batched, self.start_order);
        let mut finished: Vec<Finished> = self
            .ops
            .drain(..)
            .map(|(index, op)| {
                let (direction, bytes, r) = match op {
                    InlineOp::Upload(src, dst) => (Direction::HostToDevice, src.len(), dst.upload(src)),
                    InlineOp::Download(src, dst) => (Direction::DeviceToHost, dst.len(), src.read_current(0, dst)),
                    InlineOp::Copy(src, dst) => {
                        let len = dst.bytes();
                        (Direction::DeviceToDevice, len, dst.device_write_from(0, src, 0, len))
                    }
                };
                Finished {
                    index,
                    direction,
                    bytes,
                    attempts: 1,
                    chunks: 1,
                    batched,
                    duration: Duration::ZERO,
                    error: r.err().map(Arc::new),
                    start_order,
                    retries: 0,
                    pinned: false,
                    staged: false,
                    measured: false,
                }
            })
            .collect();
        let duration = t.elapsed();
        for f in &mut finished {
            f.duration = duration;
        }
        self.finished = Some(finished);
        true
    }
}
