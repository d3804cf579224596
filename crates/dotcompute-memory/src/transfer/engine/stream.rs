//! Streaming upload: a reader's bytes go chunk by chunk through the staging ring into a
//! buffer, the reader held to exactly the buffer's size.

use super::execution::{Execution, Work};
use super::options::TransferOptions;
use super::requests::TransferReport;
use crate::buffer::UnifiedBuffer;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::pool::context::ManagerShared;
use crate::transfer::pipeline::{Op, Plan, Run, Source};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// [`TransferEngine::stream_to_device`](super::TransferEngine::stream_to_device) on `mm`.
pub(super) fn stream_to_device<T: Element>(
    mm: &Arc<ManagerShared>,
    reader: &mut dyn std::io::Read,
    dst: &mut UnifiedBuffer<T>,
    options: TransferOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<TransferReport> {
    const OPERATION: &str = "stream_to_device";
    options.validate()?;
    if dst.manager_id() != mm.id {
        return Err(Error::ManagerMismatch { operation: OPERATION, left: mm.id, right: dst.manager_id() });
    }
    // The report's clock includes setting up (allocating the target and staging).
    let started = Instant::now();
    let mut exact = ExactReader { inner: reader, expected: dst.size_in_bytes() as u64, read: 0, ended: None };
    if exact.expected == 0 {
        // No chunk will read: check here that the reader is empty too.
        if let Err(e) = exact.check_end() {
            return Err(exact.mismatch(OPERATION).unwrap_or_else(|| Error::InvalidArgument {
                option: "stream reader",
                value: format!("read at offset 0 failed: {e}"),
                reason: "the reader must supply exactly the buffer's size in bytes",
            }));
        }
    }
    let pinned = options.use_pinned && !mm.unified;
    let plan = Plan {
        queue: 0,
        chunk_size: options.chunk_size,
        ring: options.staging_buffers,
        staging: true,
        pinned,
        lane: None,
        measured: false,
    };
    let run = Run::new(0, Op::Upload { src: Source::Reader(&mut exact), dst: &mut dst.raw }, mm, plan, false)
        .with_progress(progress);
    // A reader is always read into staging blocks.
    let mut exec = Execution::new(mm.clone(), options, VecDeque::from([Work::One(Box::new(run))]), started, 0);
    while !exec.step() {
        exec.block();
    }
    let report = exec.report();
    drop(exec);
    // On a mismatch the run failed before installing anything; the caller's error is that.
    match exact.mismatch(OPERATION) {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// How a streamed reader was found not to hold exactly the buffer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It ended before the buffer's size.
    Short,
    /// It yielded bytes past the buffer's size.
    Long,
}

/// The reader of [`TransferEngine::stream_to_device`], held to exactly `expected` bytes. It
/// never asks the inner reader for bytes past `expected`, counts what it yields, and fails the
/// read that completes `expected` bytes when the inner reader has more, so the upload stops
/// before its data is installed. `ended` records a mismatch for the caller.
///
/// [`TransferEngine::stream_to_device`]: super::TransferEngine::stream_to_device
struct ExactReader<'r> {
    inner: &'r mut dyn std::io::Read,
    expected: u64,
    /// Bytes the inner reader yielded (one probed byte past `expected` included).
    read: u64,
    ended: Option<Ended>,
}

impl ExactReader<'_> {
    /// The error for a reader found short or long, if it was.
    fn mismatch(&self, operation: &'static str) -> Option<Error> {
        self.ended.map(|ended| Error::ReaderLengthMismatch {
            operation,
            expected: self.expected,
            actual: self.read,
            at_least: ended == Ended::Long,
        })
    }

    /// Reads once past `expected`: an error (and `ended` set) when the inner reader yields more.
    fn check_end(&mut self) -> std::io::Result<()> {
        let mut probe = [0u8; 1];
        loop {
            match self.inner.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    self.read += 1;
                    self.ended = Some(Ended::Long);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the reader yields more than {} bytes", self.expected),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl std::io::Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.expected - self.read.min(self.expected);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        // A reader that claims more than it was given is held to what it was given.
        let n = self.inner.read(&mut buf[..want])?.min(want);
        if n == 0 {
            self.ended = Some(Ended::Short);
            return Ok(0);
        }
        self.read += n as u64;
        if self.read == self.expected {
            self.check_end()?;
        }
        Ok(n)
    }
}
