//! The transfer engine: concurrent, pipelined, batched, prioritised transfers with retries.
//!
//! - [`engine`]: the public API (`TransferEngine`, `TransferBatch`, options, the report).
//! - `pipeline`: one transfer as a small state machine: chunks through a ring of staging
//!   blocks, so the host copy of chunk N+1 overlaps the DMA of chunk N, with per-chunk retries.
//! - [`schedule`]: priority order, retry backoff, and the adaptive small-transfer threshold.

mod batch;
pub mod engine;
mod pipeline;
pub mod schedule;
pub(crate) mod staging;

pub use engine::{TransferBatch, TransferEngine, TransferOptions, TransferOutcome, TransferReport};
pub use schedule::{Priority, RetryPolicy, StagingPolicy};
