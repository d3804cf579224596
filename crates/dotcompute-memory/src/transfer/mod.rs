//! The transfer engine: concurrent, pipelined, batched, prioritised transfers with retries.
//!
//! - [`engine`]: the public API (`TransferEngine`, `TransferBatch`, options, the report and
//!   its errors).
//! - `pipeline`: one transfer as a small state machine: chunks through a ring of staging
//!   blocks, so the host copy of chunk N+1 overlaps the DMA of chunk N, with per-chunk retries.
//! - `batch`: many small uploads as one submission, from one staging fill or (synchronous
//!   execution) straight from the callers' slices.
//! - [`schedule`]: priority order, retry backoff, and the staging policy. The measurements
//!   behind the small-transfer threshold and [`StagingPolicy::Adaptive`] live in the pool
//!   context (`pool::tuning`), which every engine of a manager shares.
//!
//! Staging (a host copy into pooled, pinned where possible, blocks) pays where the device moves
//! page-locked memory faster and the copy overlaps the transfer; on host-backed devices (the
//! simulator, a CPU OpenCL device) it is one extra memcpy. Synchronous execution borrows the
//! callers' slices for the whole call, so it may hand them to the device directly: it does so
//! for one-chunk transfers, and otherwise whichever way has measured faster on this manager
//! (each transfer's report line says which, and whether the choice was measured). Asynchronous
//! execution always stages: a leaked future must never leave a device reading or writing memory
//! that safe code may free. Unified memory never stages: every transfer is a host copy, made
//! inline.

mod batch;
pub(crate) mod engine;
mod pipeline;
pub(crate) mod schedule;

pub use engine::{
    PeerBandwidth, PeerCopy, TransferBatch, TransferEngine, TransferError, TransferOptions, TransferOutcome,
    TransferReport,
};
pub use schedule::{Priority, RetryPolicy, StagingPolicy};
