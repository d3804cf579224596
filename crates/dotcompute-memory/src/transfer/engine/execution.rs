//! Running a planned execution: starting work in priority order up to `max_concurrency`,
//! advancing it (each run retries its own chunks), splitting failed batches, feeding the
//! measurements, and collecting the report, blocking or as a future.

use super::inline::InlineRun;
use super::options::TransferOptions;
use super::requests::{PeerBandwidth, PeerCopy, TransferError, TransferOutcome, TransferReport};
use crate::error::{Direction, Error, Result};
use crate::pool::context::ManagerShared;
use crate::pool::tuning::Lane;
use crate::transfer::batch::BatchRun;
use crate::transfer::pipeline::{Finished, Run};
use crate::transfer::schedule::RetryPolicy;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The state of one execution, advanced by `execute` (blocking) or by polling.
pub(super) struct Execution<'a> {
    mm: Arc<ManagerShared>,
    options: TransferOptions,
    pending: VecDeque<Work<'a>>,
    active: Vec<Work<'a>>,
    /// Report lines of finished transfers, in finishing order.
    done: Vec<TransferOutcome>,
    /// Retries made by finished transfers (their report lines do not carry them).
    done_retries: u32,
    started: Instant,
    pub(super) threshold: (usize, bool),
    pub(super) batched: usize,
    pub(super) queues_used: usize,
    started_count: usize,
    /// Retries made by whole batches (member retries after a split are counted per member).
    batch_retries: u32,
    /// The adaptive staged-or-direct measurement of this execution's batches.
    pub(super) batch_lane: Option<BatchLane>,
    /// The devices of each peer copy, by batch index.
    pub(super) peers: Vec<(usize, PeerCopy)>,
}

/// The batches of one execution share one staged-or-direct choice and are measured together,
/// from the first staging fill to the last completion: batches run concurrently, so the time of
/// one says little about its own cost.
pub(super) struct BatchLane {
    pub(super) staged: bool,
    pub(super) started: Instant,
    /// Bytes of all the batches, and how many batches have not completed.
    pub(super) bytes: usize,
    pub(super) remaining: usize,
    /// No batch was retried or split (a clean measurement).
    pub(super) clean: bool,
}

/// A single transfer, a batch of small uploads, or host copies on unified memory.
pub(super) enum Work<'a> {
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
    /// An execution of `pending` work (in start order) for `transfers` report lines, clocked
    /// from `started`; the planner fills in the batching figures.
    pub(super) fn new(
        mm: Arc<ManagerShared>,
        options: TransferOptions,
        pending: VecDeque<Work<'a>>,
        started: Instant,
        transfers: usize,
    ) -> Self {
        Execution {
            mm,
            options,
            pending,
            active: Vec::new(),
            // Sized once: the report's list is made in place from it.
            done: Vec::with_capacity(transfers),
            done_retries: 0,
            started,
            threshold: (0, false),
            batched: 0,
            queues_used: 1,
            started_count: 0,
            batch_retries: 0,
            batch_lane: None,
            peers: Vec::new(),
        }
    }

    /// Starts what may start and advances everything; true when all work is finished.
    pub(super) fn step(&mut self) -> bool {
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

    /// Waits for the next event of the first unfinished work.
    pub(super) fn block(&self) {
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
            error: f.error.map(TransferError::from),
            peer: self.peers.iter().position(|(i, _)| *i == f.index).map(|k| self.peers.swap_remove(k).1),
        });
    }

    /// The report of a finished execution.
    pub(super) fn report(&mut self) -> TransferReport {
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
            peer_bandwidth: peer_bandwidth(&transfers),
            transfers,
        }
    }
}

/// Per pair of devices and route, the successful peer copies' bytes over the sum of their
/// durations.
fn peer_bandwidth(transfers: &[TransferOutcome]) -> Vec<PeerBandwidth> {
    let mut pairs: Vec<PeerBandwidth> = Vec::new();
    for t in transfers.iter().filter(|t| t.error.is_none()) {
        let Some(pair) = &t.peer else { continue };
        let at = match pairs.iter().position(|p| &p.pair == pair) {
            Some(at) => at,
            None => {
                pairs.push(PeerBandwidth { pair: pair.clone(), copies: 0, bytes: 0, seconds: 0.0, bandwidth: 0.0 });
                pairs.len() - 1
            }
        };
        let p = &mut pairs[at];
        p.copies += 1;
        p.bytes += t.bytes;
        p.seconds += t.duration.as_secs_f64();
    }
    for p in &mut pairs {
        p.bandwidth = p.bytes as f64 / p.seconds.max(1e-9);
    }
    pairs
}

/// [`TransferEngine::execute_async`](super::TransferEngine::execute_async): advances the
/// execution on each poll.
pub(super) struct ExecuteFuture<'a> {
    exec: Option<Result<Execution<'a>>>,
}

impl<'a> ExecuteFuture<'a> {
    /// A future that reports `exec`, or fails with its preparation error.
    pub(super) fn new(exec: Result<Execution<'a>>) -> Self {
        ExecuteFuture { exec: Some(exec) }
    }
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
