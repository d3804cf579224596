//! [`TransferOptions`]: how a batch is executed (concurrency, staging, chunking, priority,
//! retries), and their validation.

use crate::error::{Error, Result};
use crate::transfer::schedule::{Priority, RetryPolicy, StagingPolicy};

/// How a batch is executed. The defaults are good without tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferOptions {
    /// Transfers in flight at once, spread over the backend's queues (default 4).
    pub max_concurrency: usize,
    /// Staging blocks are page-locked where the backend has pinned memory (default true); false
    /// stages through pooled pageable blocks. Unified backends never stage.
    pub use_pinned: bool,
    /// Whether host memory is staged at all in synchronous execution (default
    /// [`StagingPolicy::Adaptive`]: measured per manager; asynchronous execution always stages).
    pub staging: StagingPolicy,
    /// Cut large transfers into `chunk_size` chunks so host copies overlap device transfers
    /// (default true).
    pub pipelining: bool,
    /// Chunk size for pipelining (default 1 MiB).
    pub chunk_size: usize,
    /// Staging blocks per transfer in the ring (default 3; 2..=8 accepted).
    pub staging_buffers: usize,
    /// Priority of transfers added without one (default `Normal`).
    pub priority: Priority,
    /// Retry policy for transient errors.
    pub retry: RetryPolicy,
    /// Uploads smaller than this are packed into one staging fill and submitted together on one
    /// queue. `None` (default) adapts it from measured per-transfer overhead and bandwidth.
    pub batch_small_below: Option<usize>,
}

crate::setters::with_setters!(TransferOptions {
    with_max_concurrency => max_concurrency: usize,
    with_use_pinned => use_pinned: bool,
    with_staging => staging: StagingPolicy,
    with_pipelining => pipelining: bool,
    with_chunk_size => chunk_size: usize,
    with_staging_buffers => staging_buffers: usize,
    with_priority => priority: Priority,
    with_retry => retry: RetryPolicy,
    with_batch_small_below => batch_small_below: Option<usize>,
});

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            max_concurrency: 4,
            use_pinned: true,
            staging: StagingPolicy::Adaptive,
            pipelining: true,
            chunk_size: 1 << 20,
            staging_buffers: 3,
            priority: Priority::Normal,
            retry: RetryPolicy::default(),
            batch_small_below: None,
        }
    }
}

impl TransferOptions {
    /// Checks every option; the first invalid one is the error.
    pub(super) fn validate(&self) -> Result<()> {
        let bad = |option, value: String, reason| Err(Error::InvalidArgument { option, value, reason });
        if self.max_concurrency == 0 {
            return bad(
                "TransferOptions::max_concurrency",
                "0".into(),
                "at least one transfer must be allowed in flight",
            );
        }
        if self.chunk_size == 0 {
            return bad("TransferOptions::chunk_size", "0".into(), "chunks must hold at least one byte");
        }
        if !(2..=8).contains(&self.staging_buffers) {
            return bad(
                "TransferOptions::staging_buffers",
                self.staging_buffers.to_string(),
                "a ring needs 2 to 8 blocks for host copies to overlap transfers",
            );
        }
        self.retry.validate()
    }
}
