//! `TransferEngine`: executes batches of transfers and reports on each.

use super::batch::{BatchRun, Member};
use super::pipeline::{Finished, Op, Plan, Run, SharedStaging, Source};
use super::schedule::{Priority, RetryPolicy, StagingPolicy};
use crate::buffer::raw::RawBuffer;
use crate::buffer::UnifiedBuffer;
use crate::element::Element;
use crate::error::{Direction, Error, Result};
use crate::pool::context::ManagerShared;
use crate::pool::tuning::Lane;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
    fn validate(&self) -> Result<()> {
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

/// One transfer's result in a [`TransferReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferOutcome {
    /// Position in the batch, in the order transfers were added.
    pub index: usize,
    /// Direction of the data movement.
    pub direction: Direction,
    /// Bytes moved (or that were to be moved, for a failure).
    pub bytes: u64,
    /// Most attempts any of its chunks needed.
    pub attempts: u32,
    /// Chunks it was cut into.
    pub chunks: u32,
    /// Packed with other small uploads into one staging fill.
    pub batched: bool,
    /// Position in which it was started (0 = first): priority order, then submission order.
    pub start_order: usize,
    /// Staged through the backend's page-locked memory (false: pageable staging or none).
    pub pinned_staging: bool,
    /// Its host bytes went through staging blocks (false: the device read or wrote the
    /// caller's memory directly, or no host memory was involved, or unified memory).
    pub staged: bool,
    /// The staged-or-direct decision came from this manager's measurements
    /// ([`StagingPolicy::Adaptive`]); false: a rule, the policy, or a first trial.
    pub staging_measured: bool,
    /// From its start to its completion.
    pub duration: Duration,
    /// Why it failed, if it did. A failed upload or copy leaves its destination buffer
    /// unchanged; a failed download may have written part of its destination slice.
    pub error: Option<String>,
}

/// What a batch did ([`TransferEngine::execute`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferReport {
    /// Every transfer's outcome, by index.
    pub transfers: Vec<TransferOutcome>,
    /// Bytes moved by successful transfers.
    pub total_bytes: u64,
    /// `total_bytes` over `duration`, in bytes per second.
    pub average_bandwidth: f64,
    /// Number of failed transfers.
    pub failed: usize,
    /// Retries made (all transfers).
    pub retries: u32,
    /// Wall time of the whole batch.
    pub duration: Duration,
    /// Host-to-device bytes per second of wall time.
    pub host_to_device_bandwidth: f64,
    /// Device-to-host bytes per second of wall time.
    pub device_to_host_bandwidth: f64,
    /// Device-to-device bytes per second of wall time.
    pub device_to_device_bandwidth: f64,
    /// The small-transfer threshold used, in bytes.
    pub batch_threshold: usize,
    /// Whether that threshold came from measurements (false: the default or the option).
    pub batch_threshold_measured: bool,
    /// Transfers that went through batching.
    pub batched: usize,
    /// Transfers whose host bytes went through staging blocks.
    pub staged: usize,
    /// Queues used.
    pub queues_used: usize,
}

impl TransferReport {
    /// True when no transfer failed.
    pub fn is_success(&self) -> bool {
        self.failed == 0
    }

    /// The failed transfers.
    pub fn failures(&self) -> impl Iterator<Item = &TransferOutcome> {
        self.transfers.iter().filter(|t| t.error.is_some())
    }
}

enum Spec<'a> {
    Upload(&'a [u8], &'a mut RawBuffer),
    /// An upload from page-locked memory: the device reads it directly, no staging copy.
    UploadPinned(&'a [u8], &'a mut RawBuffer),
    Download(&'a RawBuffer, &'a mut [u8]),
    Copy(&'a RawBuffer, &'a mut RawBuffer),
}

impl Spec<'_> {
    fn manager_ids(&self) -> (u64, Option<u64>) {
        match self {
            Spec::Upload(_, d) | Spec::UploadPinned(_, d) => (d.manager().id, None),
            Spec::Download(s, _) => (s.manager().id, None),
            Spec::Copy(s, d) => (d.manager().id, Some(s.manager().id)),
        }
    }
}

/// A list of transfers to run together. Lengths are checked as transfers are added.
#[derive(Default)]
pub struct TransferBatch<'a> {
    items: Vec<(Spec<'a>, Option<Priority>)>,
}

impl std::fmt::Debug for TransferBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferBatch").field("transfers", &self.items.len()).finish()
    }
}

impl<'a> TransferBatch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        TransferBatch { items: Vec::new() }
    }

    /// An empty batch with room for `transfers` transfers (saves regrowing a large list). The
    /// room is a hint: when it cannot be reserved (`usize::MAX`, or more than memory holds) the
    /// batch starts empty and grows as transfers are added.
    pub fn with_capacity(transfers: usize) -> Self {
        let mut items = Vec::new();
        // A failed reservation leaves `items` empty and usable.
        let _ = items.try_reserve_exact(transfers);
        TransferBatch { items }
    }

    /// Number of transfers.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Host-to-device: `src` becomes `dst`'s device contents (`dst` ends `DeviceDirty`, or
    /// `DeviceOnly` if it has no host part... until read back).
    pub fn upload<T: Element>(&mut self, src: &'a [T], dst: &'a mut UnifiedBuffer<T>) -> Result<&mut Self> {
        check("upload", dst.len(), src.len())?;
        self.items.push((Spec::Upload(bytemuck::cast_slice(src), &mut dst.raw), None));
        Ok(self)
    }

    /// Host-to-device from page-locked memory: the device reads `src` directly, skipping the
    /// staging copy (in [`TransferEngine::execute`]; asynchronous execution stages it like any
    /// other source, because a leaked future must not leave the device reading user memory).
    pub fn upload_pinned<T: Element>(
        &mut self,
        src: &'a crate::host::pinned::PinnedBuffer<T>,
        dst: &'a mut UnifiedBuffer<T>,
    ) -> Result<&mut Self> {
        let src: &'a [T] = src;
        check("upload_pinned", dst.len(), src.len())?;
        self.items.push((Spec::UploadPinned(bytemuck::cast_slice(src), &mut dst.raw), None));
        Ok(self)
    }

    /// Device-to-host: `src`'s current contents into `dst` (`src` is not changed).
    pub fn download<T: Element>(&mut self, src: &'a UnifiedBuffer<T>, dst: &'a mut [T]) -> Result<&mut Self> {
        check("download", src.len(), dst.len())?;
        self.items.push((Spec::Download(&src.raw, bytemuck::cast_slice_mut(dst)), None));
        Ok(self)
    }

    /// Device-to-device: `src`'s contents into `dst` (same manager, same length).
    pub fn copy<T: Element>(&mut self, src: &'a UnifiedBuffer<T>, dst: &'a mut UnifiedBuffer<T>) -> Result<&mut Self> {
        check("copy", dst.len(), src.len())?;
        let (left, right) = (dst.manager_id(), src.manager_id());
        if left != right {
            return Err(Error::ManagerMismatch { operation: "TransferBatch::copy", left, right });
        }
        self.items.push((Spec::Copy(&src.raw, &mut dst.raw), None));
        Ok(self)
    }

    /// Sets the priority of the transfer added last.
    pub fn with_priority(&mut self, priority: Priority) -> &mut Self {
        if let Some(last) = self.items.last_mut() {
            last.1 = Some(priority);
        }
        self
    }
}

fn check(operation: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected != actual {
        return Err(Error::LengthMismatch { operation, expected, actual });
    }
    Ok(())
}

/// Runs transfer batches on one manager's backend (`MemoryManager::transfer_engine`).
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
    /// The engine of the manager whose pool context is `mm` (made by
    /// `MemoryManager::transfer_engine`).
    pub(crate) fn new(mm: Arc<ManagerShared>) -> Self {
        TransferEngine { mm }
    }
}

/// The state of one execution, advanced by `execute` (blocking) or by polling.
struct Execution<'a> {
    mm: Arc<ManagerShared>,
    options: TransferOptions,
    pending: std::collections::VecDeque<Work<'a>>,
    active: Vec<Work<'a>>,
    /// Report lines of finished transfers, in finishing order.
    done: Vec<TransferOutcome>,
    /// Retries made by finished transfers (their report lines do not carry them).
    done_retries: u32,
    started: Instant,
    threshold: (usize, bool),
    batched: usize,
    queues_used: usize,
    started_count: usize,
    /// Retries made by whole batches (member retries after a split are counted per member).
    batch_retries: u32,
    /// The adaptive staged-or-direct measurement of this execution's batches.
    batch_lane: Option<BatchLane>,
}

/// The batches of one execution share one staged-or-direct choice and are measured together,
/// from the first staging fill to the last completion: batches run concurrently, so the time of
/// one says little about its own cost.
struct BatchLane {
    staged: bool,
    started: Instant,
    bytes: usize,
    remaining: usize,
    /// No batch was retried or split (a clean measurement).
    clean: bool,
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
        let mut exec = self.prepare(batch, options, false)?;
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
        let exec = self.prepare(batch, options, true);
        ExecuteFuture { exec: Some(exec) }
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
    pub fn stream_to_device<T: Element>(
        &self,
        reader: &mut dyn std::io::Read,
        dst: &mut UnifiedBuffer<T>,
        options: TransferOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<TransferReport> {
        const OPERATION: &str = "stream_to_device";
        options.validate()?;
        if dst.manager_id() != self.mm.id {
            return Err(Error::ManagerMismatch { operation: OPERATION, left: self.mm.id, right: dst.manager_id() });
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
        let pinned = options.use_pinned && !self.mm.unified;
        let plan = Plan {
            queue: 0,
            chunk_size: options.chunk_size,
            ring: options.staging_buffers,
            staging: true,
            pinned,
            lane: None,
            measured: false,
        };
        let run = Run::new(0, Op::Upload { src: Source::Reader(&mut exact), dst: &mut dst.raw }, &self.mm, plan, false)
            .with_progress(progress);
        // A reader is always read into staging blocks.
        let mut exec = Execution {
            mm: self.mm.clone(),
            options,
            pending: std::collections::VecDeque::from([Work::One(Box::new(run))]),
            active: Vec::new(),
            done: Vec::new(),
            done_retries: 0,
            started,
            threshold: (0, false),
            batched: 0,
            queues_used: 1,
            started_count: 0,
            batch_retries: 0,
            batch_lane: None,
        };
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

    fn prepare<'a>(&self, batch: TransferBatch<'a>, options: TransferOptions, owned: bool) -> Result<Execution<'a>> {
        // The report's clock includes setting up (staging fills, target allocations).
        let started = Instant::now();
        options.validate()?;
        for (spec, _) in &batch.items {
            let (a, b) = spec.manager_ids();
            for id in std::iter::once(a).chain(b) {
                if id != self.mm.id {
                    return Err(Error::ManagerMismatch {
                        operation: "TransferEngine::execute",
                        left: self.mm.id,
                        right: id,
                    });
                }
            }
        }
        let mm = &self.mm;
        let threshold = match options.batch_small_below {
            Some(t) => (t, false),
            None => mm.transfer_tuning.threshold(),
        };
        let queues = mm.backend().queue_count().max(1);
        let queues_used = options.max_concurrency.min(queues).min(batch.items.len().max(1));
        // Priority order, stable within a class (no sort when all share one class).
        let count = batch.items.len();
        let priority = |p: &Option<Priority>| p.unwrap_or(options.priority);
        let mixed = batch.items.windows(2).any(|w| priority(&w[0].1) != priority(&w[1].1));
        let mut planner = Planner {
            mm,
            options: &options,
            owned,
            threshold: threshold.0,
            queues,
            next_queue: 0,
            runs: std::collections::VecDeque::new(),
            batched: 0,
            group: Vec::new(),
            inline: Vec::new(),
            group_bytes: 0,
            batch_mode: None,
            batch_lane: None,
        };
        if mixed {
            let mut items: Vec<(usize, Spec<'a>, Priority)> =
                batch.items.into_iter().enumerate().map(|(i, (s, p))| (i, s, priority(&p))).collect();
            items.sort_by_key(|(_, _, p)| std::cmp::Reverse(*p));
            for (index, spec, _) in items {
                planner.add(index, spec);
            }
        } else {
            // One class: submission order, no copy of the list.
            for (index, (spec, _)) in batch.items.into_iter().enumerate() {
                planner.add(index, spec);
            }
        }
        planner.flush();
        let (runs, batched, batch_lane) = (planner.runs, planner.batched, planner.batch_lane);
        Ok(Execution {
            mm: mm.clone(),
            options,
            pending: runs,
            active: Vec::new(),
            // Sized once: the report's list is made in place from it.
            done: Vec::with_capacity(count),
            done_retries: 0,
            started,
            threshold,
            batched,
            queues_used,
            started_count: 0,
            batch_retries: 0,
            batch_lane,
        })
    }
}

/// Turns a batch's transfers, in start order, into work: inline host copies on unified memory,
/// packed batches of small uploads, and chunked runs, each with its staged-or-direct decision.
struct Planner<'a, 'o> {
    mm: &'o Arc<ManagerShared>,
    options: &'o TransferOptions,
    /// Asynchronous execution: host memory is always staged.
    owned: bool,
    threshold: usize,
    queues: usize,
    next_queue: usize,
    runs: std::collections::VecDeque<Work<'a>>,
    batched: usize,
    /// Small uploads waiting to be packed into one submission (discrete devices).
    group: Vec<(usize, &'a [u8], &'a mut RawBuffer)>,
    /// Small uploads waiting to be copied together (unified memory).
    inline: Vec<(usize, InlineOp<'a>)>,
    group_bytes: usize,
    /// This execution's staged-or-direct choice for batches: (stage, adaptive choice made and
    /// whether it was measured), decided at the first batch.
    batch_mode: Option<(bool, Option<bool>)>,
    batch_lane: Option<BatchLane>,
}

/// Members per batch at most: with `max_concurrency` batches in flight, each holding a fresh
/// device target per member until it completes, larger batches would outgrow the device pool's
/// per-class front cache (256 regions) and pay its slower arena path per member.
const MAX_BATCH_MEMBERS: usize = 64;

impl<'a> Planner<'a, '_> {
    fn queue(&mut self) -> usize {
        let q = self.next_queue % self.queues;
        self.next_queue += 1;
        q
    }

    fn add(&mut self, index: usize, spec: Spec<'a>) {
        let limit = self.options.chunk_size.max(self.threshold);
        if self.mm.unified {
            // One memory: every transfer is a host copy, made inline when the work is advanced
            // (no device ever holds a pointer to the caller's memory), small uploads together.
            let op = match spec {
                Spec::Upload(src, dst) | Spec::UploadPinned(src, dst) if src.len() < self.threshold => {
                    if self.group_bytes + src.len() > limit {
                        self.flush();
                    }
                    self.group_bytes += src.len();
                    self.inline.push((index, InlineOp::Upload(src, dst)));
                    return;
                }
                Spec::Upload(src, dst) | Spec::UploadPinned(src, dst) => InlineOp::Upload(src, dst),
                Spec::Download(src, dst) => InlineOp::Download(src, dst),
                Spec::Copy(src, dst) => InlineOp::Copy(src, dst),
            };
            self.runs.push_back(Work::Inline(InlineRun::new(vec![(index, op)], false)));
            return;
        }
        let opts = self.options;
        let chunk = if opts.pipelining { opts.chunk_size } else { usize::MAX };
        let (op, lane) = match spec {
            Spec::Upload(src, dst) if src.len() < self.threshold => {
                if self.group_bytes + src.len() > limit || self.group.len() >= MAX_BATCH_MEMBERS {
                    self.flush();
                }
                self.group_bytes += src.len();
                self.group.push((index, src, dst));
                return;
            }
            // Page-locked memory is read in place in synchronous execution; asynchronous
            // execution stages it like any other host memory (leak safety).
            Spec::UploadPinned(src, dst) if !self.owned => {
                let queue = self.queue();
                let plan = Plan {
                    queue,
                    chunk_size: chunk,
                    ring: opts.staging_buffers,
                    staging: false,
                    pinned: false,
                    lane: None,
                    measured: false,
                };
                let run = Run::new(index, Op::Upload { src: Source::Borrowed(src), dst }, self.mm, plan, false);
                self.runs.push_back(Work::One(Box::new(run)));
                return;
            }
            Spec::Upload(src, dst) | Spec::UploadPinned(src, dst) => {
                (Op::Upload { src: Source::Borrowed(src), dst }, Some(Lane::Upload))
            }
            Spec::Download(src, dst) => {
                // Data already on the host is one memcpy, with no device access to stage.
                let lane = (!src.data_on_host()).then_some(Lane::Download);
                (Op::Download { src, dst }, lane)
            }
            Spec::Copy(src, dst) => {
                // Device-to-device moves no host memory; a host-current source is an upload.
                let lane = src.current_device().is_none().then_some(Lane::Upload);
                (Op::Copy { src, dst }, lane)
            }
        };
        let bytes = match &op {
            Op::Upload { dst, .. } | Op::Copy { dst, .. } => dst.bytes(),
            Op::Download { src, .. } => src.bytes(),
        };
        let chunks = bytes.div_ceil(chunk.clamp(1, bytes.max(1)));
        // Staged or direct (see `StagingPolicy`); `feed`: an adaptive choice, whose outcome
        // feeds the measurements.
        let (stage, feed, measured) = match lane {
            None => (false, None, false),
            // Asynchronous: the device only ever touches staging blocks (leak safety).
            Some(_) if self.owned => (true, None, false),
            Some(lane) => match opts.staging {
                StagingPolicy::Always => (true, None, false),
                StagingPolicy::Never => (false, None, false),
                // One chunk: staging would overlap nothing, only add a copy.
                StagingPolicy::Adaptive if chunks <= 1 => (false, None, false),
                StagingPolicy::Adaptive => {
                    let (stage, measured) = self.mm.transfer_tuning.lane(lane, bytes).choose();
                    (stage, Some(lane), measured)
                }
            },
        };
        // A direct host transfer goes in one piece: with nothing staged there is no host copy
        // to overlap, and chunks only add submissions (~20 µs each on PoCL); drivers pipeline
        // their own pageable copies.
        let chunk = if lane.is_some() && !stage { usize::MAX } else { chunk };
        let queue = self.queue();
        let plan = Plan {
            queue,
            chunk_size: chunk,
            ring: opts.staging_buffers,
            staging: stage,
            pinned: opts.use_pinned,
            lane: feed,
            measured,
        };
        self.runs.push_back(Work::One(Box::new(Run::new(index, op, self.mm, plan, false))));
    }

    /// Turns the waiting small uploads into one piece of work.
    fn flush(&mut self) {
        self.group_bytes = 0;
        if !self.inline.is_empty() {
            self.batched += self.inline.len();
            let ops = std::mem::take(&mut self.inline);
            self.runs.push_back(Work::Inline(InlineRun::new(ops, true)));
        }
        if self.group.is_empty() {
            return;
        }
        let (mm, opts) = (self.mm, self.options);
        let queue = self.queue();
        let n = self.group.len();
        self.batched += n;
        let started = Instant::now();
        let (stage, choice) = match self.batch_mode {
            Some(mode) => mode,
            None => {
                let mode = if self.owned {
                    (true, None)
                } else {
                    match opts.staging {
                        StagingPolicy::Always => (true, None),
                        StagingPolicy::Never => (false, None),
                        StagingPolicy::Adaptive => {
                            let (stage, measured) = mm.transfer_tuning.lane(Lane::Batch, 0).choose();
                            self.batch_lane =
                                Some(BatchLane { staged: stage, started, bytes: 0, remaining: 0, clean: true });
                            (stage, Some(measured))
                        }
                    }
                };
                self.batch_mode = Some(mode);
                mode
            }
        };
        let group = std::mem::take(&mut self.group);
        if let Some(lane) = self.batch_lane.as_mut() {
            lane.bytes += group.iter().map(|(_, s, _)| s.len()).sum::<usize>();
            lane.remaining += 1;
        }
        if !stage {
            let members = group.into_iter().map(|(index, s, dst)| Member::direct(index, dst, s)).collect();
            self.runs.push_back(Work::Batch(BatchRun::new(members, None, choice, mm, queue, started)));
            return;
        }
        let total: usize = group.iter().map(|(_, s, _)| s.len()).sum();
        match mm.acquire_staging(total, opts.use_pinned) {
            Ok(mut block) => {
                // One staging fill for the whole group.
                let mut off = 0;
                for (_, s, _) in &group {
                    crate::ops::copy_into(&mut block.bytes_mut()[off..off + s.len()], s);
                    off += s.len();
                }
                let shared = Arc::new(SharedStaging { block: Some(block), mm: mm.clone() });
                let mut off = 0;
                let members = group
                    .into_iter()
                    .map(|(index, s, dst)| {
                        let m = Member::staged(index, dst, &shared, off, s.len());
                        off += s.len();
                        m
                    })
                    .collect();
                self.runs.push_back(Work::Batch(BatchRun::new(members, Some(&shared), choice, mm, queue, started)));
            }
            // No staging memory, synchronous: the device reads the callers' slices (and the
            // batch counts in the measurement as the direct batch it is not: discard it).
            Err(_) if !self.owned => {
                if let Some(lane) = self.batch_lane.as_mut() {
                    lane.clean = false;
                }
                let members = group.into_iter().map(|(index, s, dst)| Member::direct(index, dst, s)).collect();
                self.runs.push_back(Work::Batch(BatchRun::new(members, None, choice, mm, queue, started)));
            }
            // No staging memory, asynchronous: each member from a copy of its own.
            Err(_) => {
                for (index, s, dst) in group {
                    let plan = Plan {
                        queue,
                        chunk_size: usize::MAX,
                        ring: 1,
                        staging: false,
                        pinned: false,
                        lane: None,
                        measured: false,
                    };
                    let op = Op::Upload { src: Source::Owned(s.to_vec()), dst };
                    let mut run = Run::new(index, op, mm, plan, true);
                    run.staged = true;
                    self.runs.push_back(Work::One(Box::new(run)));
                }
            }
        }
    }
}

/// One transfer on unified memory: a host copy made inline.
enum InlineOp<'a> {
    Upload(&'a [u8], &'a mut RawBuffer),
    Download(&'a RawBuffer, &'a mut [u8]),
    Copy(&'a RawBuffer, &'a mut RawBuffer),
}

/// Transfers on unified memory, copied one after the other when first advanced. Small uploads
/// are grouped (reported as batched, with the group's duration); the rest come one per run.
struct InlineRun<'a> {
    ops: Vec<(usize, InlineOp<'a>)>,
    batched: bool,
    start_order: usize,
    finished: Option<Vec<Finished>>,
}

impl<'a> InlineRun<'a> {
    fn new(ops: Vec<(usize, InlineOp<'a>)>, batched: bool) -> Self {
        InlineRun { ops, batched, start_order: 0, finished: None }
    }

    fn advance(&mut self) -> bool {
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
                    error: r.err().map(|e| e.to_string()),
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

/// A single transfer, a batch of small uploads, or host copies on unified memory.
enum Work<'a> {
    One(Box<Run<'a>>),
    Batch(BatchRun<'a>),
    Inline(InlineRun<'a>),
}

impl Work<'_> {
    fn advance(&mut self, retry: &RetryPolicy) -> bool {
        match self {
            Work::One(r) => r.advance(retry),
            Work::Batch(b) => b.advance(retry),
            Work::Inline(i) => i.advance(),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Work::One(r) => r.is_finished(),
            Work::Batch(b) => b.is_finished(),
            Work::Inline(i) => i.finished.is_some(),
        }
    }

    fn set_start_order(&mut self, n: usize) {
        match self {
            Work::One(r) => r.start(n),
            Work::Batch(b) => b.start_order = n,
            Work::Inline(i) => i.start_order = n,
        }
    }

    fn wait_next(&self) {
        match self {
            Work::One(r) => r.wait_next(),
            Work::Batch(b) => b.wait_next(),
            Work::Inline(_) => {}
        }
    }

    fn register(&self, waker: &std::task::Waker) {
        match self {
            Work::One(r) => r.register(waker),
            Work::Batch(b) => b.register(waker),
            Work::Inline(_) => waker.wake_by_ref(),
        }
    }
}

impl<'a> Execution<'a> {
    /// Starts what may start and advances everything; true when all work is finished.
    fn step(&mut self) -> bool {
        loop {
            let mut progressed = false;
            while self.active.len() < self.options.max_concurrency {
                match self.pending.pop_front() {
                    Some(mut work) => {
                        work.set_start_order(self.started_count);
                        self.started_count += 1;
                        self.active.push(work);
                        progressed = true;
                    }
                    None => break,
                }
            }
            for work in &mut self.active {
                progressed |= work.advance(&self.options.retry);
            }
            let mut i = 0;
            while i < self.active.len() {
                if !self.active[i].is_finished() {
                    i += 1;
                    continue;
                }
                progressed = true;
                match self.active.remove(i) {
                    Work::One(run) => {
                        let f = run.finished();
                        if f.error.is_none() {
                            let tuning = &self.mm.transfer_tuning;
                            // Batch members split off a failed batch say nothing about the
                            // cost of one unbatched transfer.
                            if !f.batched {
                                tuning.observe(f.bytes, f.duration);
                            }
                            if let (Some(lane), 0) = (run.lane, f.retries) {
                                tuning.lane(lane, f.bytes).observe(f.staged, f.bytes, f.duration);
                            }
                        }
                        self.finish(f);
                    }
                    Work::Inline(mut inline) => {
                        for f in inline.finished.take().unwrap_or_default() {
                            self.finish(f);
                        }
                    }
                    Work::Batch(mut batch) => {
                        self.batch_retries += batch.retries;
                        if let (Some(lane), true) = (self.batch_lane.as_mut(), batch.feeds_choice()) {
                            lane.remaining = lane.remaining.saturating_sub(1);
                            lane.clean &= batch.retries == 0 && !batch.needs_split();
                            if lane.remaining == 0 && lane.clean {
                                let tuning = &self.mm.transfer_tuning;
                                let choice = tuning.lane(Lane::Batch, 0);
                                choice.observe(lane.staged, lane.bytes, lane.started.elapsed());
                            }
                        }
                        if batch.needs_split() {
                            // Each member on its own, with its own retries, ahead of the rest.
                            for run in batch.split().into_iter().rev() {
                                self.pending.push_front(Work::One(Box::new(run)));
                            }
                        } else {
                            for f in batch.finished() {
                                self.finish(f);
                            }
                        }
                    }
                }
            }
            if self.active.is_empty() && self.pending.is_empty() {
                return true;
            }
            if !progressed {
                return false;
            }
        }
    }

    fn block(&self) {
        if let Some(work) = self.active.iter().find(|w| !w.is_finished()) {
            work.wait_next();
        }
    }

    /// Records a finished transfer's report line (straight into the report's list: no second
    /// list of 10,000 lines to build and convert).
    fn finish(&mut self, f: Finished) {
        self.done_retries += f.retries;
        self.done.push(TransferOutcome {
            index: f.index,
            direction: f.direction,
            bytes: f.bytes as u64,
            attempts: f.attempts,
            chunks: f.chunks as u32,
            batched: f.batched,
            start_order: f.start_order,
            pinned_staging: f.pinned,
            staged: f.staged,
            staging_measured: f.measured,
            duration: f.duration,
            error: f.error,
        });
    }

    fn report(&mut self) -> TransferReport {
        let duration = self.started.elapsed();
        let secs = duration.as_secs_f64().max(1e-9);
        let retries = self.batch_retries + self.done_retries;
        let mut transfers = std::mem::take(&mut self.done);
        if transfers.windows(2).any(|w| w[0].index > w[1].index) {
            transfers.sort_by_key(|t| t.index);
        }
        // One pass for every total: bytes per direction (successes), failures, staged.
        let (mut by_direction, mut failed, mut staged) = ([0u64; 3], 0, 0);
        for t in &transfers {
            match t.error {
                None => by_direction[t.direction as usize] += t.bytes,
                Some(_) => failed += 1,
            }
            staged += usize::from(t.staged);
        }
        let total_bytes = by_direction.iter().sum::<u64>();
        let per_second = |d: Direction| by_direction[d as usize] as f64 / secs;
        TransferReport {
            total_bytes,
            average_bandwidth: total_bytes as f64 / secs,
            failed,
            retries,
            duration,
            host_to_device_bandwidth: per_second(Direction::HostToDevice),
            device_to_host_bandwidth: per_second(Direction::DeviceToHost),
            device_to_device_bandwidth: per_second(Direction::DeviceToDevice),
            batch_threshold: self.threshold.0,
            batch_threshold_measured: self.threshold.1,
            batched: self.batched,
            staged,
            queues_used: self.queues_used,
            transfers,
        }
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

struct ExecuteFuture<'a> {
    exec: Option<Result<Execution<'a>>>,
}

impl Future for ExecuteFuture<'_> {
    type Output = Result<TransferReport>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let exec = match this.exec.as_mut() {
            None => {
                return Poll::Ready(Err(Error::InvalidArgument {
                    option: "future",
                    value: "polled after completion".into(),
                    reason: "a transfer future yields its report once",
                }))
            }
            Some(Err(_)) => return Poll::Ready(Err(this.exec.take().and_then(|r| r.err()).expect("checked"))),
            Some(Ok(exec)) => exec,
        };
        if exec.step() {
            let report = exec.report();
            this.exec = None;
            return Poll::Ready(Ok(report));
        }
        for run in exec.active.iter().filter(|r| !r.is_finished()) {
            run.register(cx.waker());
        }
        Poll::Pending
    }
}
