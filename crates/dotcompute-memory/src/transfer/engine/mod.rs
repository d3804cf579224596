//! `TransferEngine`: executes batches of transfers and reports on each.
//!
//! - `options`: how a batch is executed ([`TransferOptions`]).
//! - `requests`: what a caller submits ([`TransferBatch`]) and what comes back
//!   ([`TransferReport`], [`TransferOutcome`], [`TransferError`]).
//! - `planner`: a batch, in priority order, becomes work (inline copies, packed small uploads,
//!   chunked runs) with its queues and staged-or-direct decisions.
//! - `execution`: runs that work, blocking or as a future, and builds the report.
//! - `inline`: transfers on unified memory, made as host copies; `stream`: a reader streamed
//!   into a buffer.

mod execution;
mod inline;
mod options;
mod planner;
mod requests;
mod stream;

pub use self::options::TransferOptions;
pub use self::requests::{PeerBandwidth, PeerCopy, TransferBatch, TransferError, TransferOutcome, TransferReport};

use self::execution::ExecuteFuture;
use crate::buffer::UnifiedBuffer;
use crate::element::Element;
use crate::error::Result;
use crate::pool::context::ManagerShared;
use std::future::Future;
use std::sync::Arc;

/// Runs transfer batches on one manager's backend (`MemoryManager::transfer_engine`).
///
/// Upload a buffer's contents and read them back:
///
/// ```
/// use dotcompute_memory::*;
/// # fn main() -> Result<()> {
/// let mm = MemoryManager::cpu();
/// let engine = mm.transfer_engine();
/// let data: Vec<f32> = (0..1024).map(|i| i as f32).collect();
/// let mut buf = mm.allocate::<f32>(data.len())?;
///
/// let mut upload = TransferBatch::new();
/// upload.upload(&data, &mut buf)?;
/// let report = engine.execute(upload, TransferOptions::default())?;
/// assert!(report.is_success());
/// assert_eq!(report.total_bytes, 4096);
///
/// let mut back = vec![0.0f32; data.len()];
/// let mut download = TransferBatch::new();
/// download.download(&buf, &mut back)?;
/// let report = engine.execute(download, TransferOptions::default())?;
/// assert_eq!(report.transfers[0].direction, Direction::DeviceToHost);
/// assert_eq!(back, data);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TransferEngine {
    mm: Arc<ManagerShared>,
}

impl std::fmt::Debug for TransferEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferEngine").field("manager", &self.mm.id).finish()
    }
}

impl TransferEngine {
    /// The engine of the manager whose context this is
    /// ([`MemoryManager::transfer_engine`](crate::MemoryManager::transfer_engine)).
    pub(crate) fn new(mm: Arc<ManagerShared>) -> Self {
        TransferEngine { mm }
    }
}

impl TransferEngine {
    /// Runs every transfer of `batch` and waits for all of them. Invalid options, or buffers of
    /// another manager, fail the call before anything moves; a transfer that fails after retries
    /// is reported in [`TransferReport::failures`]; a failed upload or copy leaves its destination
    /// buffer unchanged (a failed download may have written part of its destination slice).
    ///
    /// The batch's slices are borrowed for the whole call, so host memory may be handed to the
    /// device directly instead of through staging blocks ([`TransferOptions::staging`]); each
    /// transfer's [`TransferOutcome::staged`] says which way it went.
    pub fn execute(&self, batch: TransferBatch<'_>, options: TransferOptions) -> Result<TransferReport> {
        let mut exec = planner::prepare(&self.mm, batch, options, false)?;
        loop {
            if exec.step() {
                return Ok(exec.report());
            }
            exec.block();
        }
    }

    /// Like [`TransferEngine::execute`] but as a runtime-agnostic future. Host memory is never
    /// handed to the device directly: uploads and host-sourced copies are staged (copied by the
    /// CPU, chunk by chunk, while the future is polled) and downloads land in staging first, so a
    /// leaked future cannot leave the device reading or writing memory that safe code frees.
    /// (Device-to-device copies read the source's device memory, which returns to the pool when
    /// its buffer drops; a leaked future may then copy stale data into its own, never-installed
    /// target.)
    pub fn execute_async<'a>(
        &self,
        batch: TransferBatch<'a>,
        options: TransferOptions,
    ) -> impl Future<Output = Result<TransferReport>> + 'a {
        ExecuteFuture::new(planner::prepare(&self.mm, batch, options, true))
    }

    /// Fills `dst` from `reader` chunk by chunk through the staging ring (the reader must yield
    /// exactly `dst.size_in_bytes()` bytes), calling `progress(done, total)` after each chunk.
    /// On any failure `dst` is unchanged (contents, state and epochs).
    ///
    /// The reader is never asked for more than the buffer's size, plus one read of one byte
    /// once it has yielded that size (before the data is installed) to check that it has
    /// nothing left.
    ///
    /// # Errors
    ///
    /// [`Error::ReaderLengthMismatch`] when the reader yields fewer or more bytes than the
    /// buffer holds; [`Error::InvalidArgument`] for invalid options; [`Error::ManagerMismatch`]
    /// for a buffer of another manager. Other failures (a reader's I/O error, a device error
    /// after retries) are reported in [`TransferReport::failures`].
    ///
    /// [`Error::ReaderLengthMismatch`]: crate::Error::ReaderLengthMismatch
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    /// [`Error::ManagerMismatch`]: crate::Error::ManagerMismatch
    pub fn stream_to_device<T: Element>(
        &self,
        reader: &mut dyn std::io::Read,
        dst: &mut UnifiedBuffer<T>,
        options: TransferOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<TransferReport> {
        stream::stream_to_device(&self.mm, reader, dst, options, progress)
    }
}
