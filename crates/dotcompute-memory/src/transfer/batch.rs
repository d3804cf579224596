//! `BatchRun`: many small uploads packed into one staging fill and submitted together.
//!
//! The members' bytes either already sit in one shared staging block (filled once for the whole
//! batch), or, in synchronous execution where that measured faster, stay in the caller's slices,
//! which the device reads directly (they are borrowed for the whole call). Either way the batch
//! is one `write_batch_async` submission (a single submission on backends that support it) and
//! one completion wait. A transient failure retries the whole submission with backoff; a permanent
//! one (or running out of attempts) splits the batch into individual transfers, so one bad
//! member fails alone.

use super::pipeline::{Finished, Op, Plan, Run, SharedStaging, Source};
use crate::backend::region::DeviceRegion;
use crate::backend::{BatchWrite, Event};
use crate::buffer::raw::RawBuffer;
use crate::error::{Direction, Error, Result};
use crate::pool::context::ManagerShared;
use crate::transfer::schedule::RetryPolicy;
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct Member<'a> {
    pub(crate) index: usize,
    pub(crate) dst: &'a mut RawBuffer,
    pub(crate) len: usize,
    /// A range of the batch's shared staging block, or (synchronous execution only) the
    /// caller's slice, borrowed for the whole call.
    src: Source<'a>,
    target: Option<DeviceRegion>,
    error: Option<Arc<Error>>,
}

impl<'a> Member<'a> {
    /// A member whose bytes lie at `offset` of the batch's staging block.
    pub(crate) fn staged(
        index: usize,
        dst: &'a mut RawBuffer,
        block: &Arc<SharedStaging>,
        offset: usize,
        len: usize,
    ) -> Self {
        Member { index, dst, len, src: Source::Staged(block.clone(), offset, len), target: None, error: None }
    }

    /// A member the device reads straight from `src`, which must stay borrowed (and so valid
    /// and unwritten) until the batch is finished or dropped: synchronous execution only.
    pub(crate) fn direct(index: usize, dst: &'a mut RawBuffer, src: &'a [u8]) -> Self {
        Member { index, dst, len: src.len(), src: Source::Borrowed(src), target: None, error: None }
    }
}

pub(crate) struct BatchRun<'a> {
    members: Vec<Member<'a>>,
    /// Members are staged (false: direct from the callers' slices).
    staged: bool,
    /// Staged through page-locked memory.
    pinned: bool,
    /// An adaptive staged-or-direct choice was made for this batch (its outcome feeds the
    /// measurements), and whether it came from measurements.
    choice: Option<bool>,
    mm: Arc<ManagerShared>,
    queue: usize,
    attempts: u32,
    pub(crate) retries: u32,
    retry_at: Option<Instant>,
    inflight: Option<Event>,
    started: Instant,
    pub(crate) start_order: usize,
    /// Some(Ok) when installed; Some(Err) when it must be split.
    outcome: Option<Result<()>>,
}

impl<'a> BatchRun<'a> {
    /// `started` is when the batch's preparation (its staging fill) began; `choice` as the
    /// field.
    pub(crate) fn new(
        members: Vec<Member<'a>>,
        staging: Option<&Arc<SharedStaging>>,
        choice: Option<bool>,
        mm: &Arc<ManagerShared>,
        queue: usize,
        started: Instant,
    ) -> Self {
        BatchRun {
            members,
            staged: staging.is_some(),
            pinned: staging.and_then(|s| s.block.as_ref()).is_some_and(|b| b.is_pinned()),
            choice,
            mm: mm.clone(),
            queue,
            attempts: 0,
            retries: 0,
            retry_at: None,
            inflight: None,
            started,
            start_order: 0,
            outcome: None,
        }
    }

    /// Takes the members' device targets from the pool. Done when the batch starts, not when
    /// it is planned, so the regions finished batches give back are reused by the next ones
    /// (a pool's front cache holds a few hundred regions per size class, not 10,000).
    fn acquire_targets(&mut self) -> Result<()> {
        for m in &mut self.members {
            if m.target.is_none() {
                m.target = Some(self.mm.acquire_device(m.len)?);
            }
        }
        Ok(())
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// True when an adaptive choice was made for this batch.
    pub(crate) fn feeds_choice(&self) -> bool {
        self.choice.is_some()
    }

    /// True when the batch failed and must be split into individual transfers.
    pub(crate) fn needs_split(&self) -> bool {
        matches!(self.outcome, Some(Err(_)))
    }

    pub(crate) fn advance(&mut self, retry: &RetryPolicy) -> bool {
        if self.is_finished() {
            return false;
        }
        if let Some(ev) = &self.inflight {
            match ev.is_complete() {
                Ok(false) => return false,
                Ok(true) => {
                    self.inflight = None;
                    self.install();
                }
                Err(e) => {
                    self.inflight = None;
                    self.failed(e, retry);
                }
            }
            return true;
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return false;
            }
            self.retry_at = None;
        }
        if self.attempts == 0 {
            if let Err(e) = self.acquire_targets() {
                // Let each member try (and fail or succeed) on its own.
                self.outcome = Some(Err(e));
                return true;
            }
        }
        if let Err(e) = self.enqueue() {
            self.failed(e, retry);
        }
        true
    }

    fn enqueue(&mut self) -> Result<()> {
        self.attempts += 1;
        let mut writes = Vec::with_capacity(self.members.len());
        for m in &self.members {
            let t = m.target.as_ref().ok_or_else(|| missing("batch target"))?;
            if m.len > t.size() {
                return Err(missing("a target large enough"));
            }
            let src = m.src.bytes();
            if src.len() != m.len {
                return Err(missing("a batch member's source bytes"));
            }
            let w = BatchWrite { dst: t.memory(), dst_offset: t.offset(), src: src.as_ptr(), len: m.len };
            // Neighbours on both sides (consecutive pool regions of one segment, filled from
            // consecutive staging bytes) become one copy: fewer commands for the backend.
            match writes.last_mut() {
                Some(last) if adjacent(last, &w) => last.len += w.len,
                _ => writes.push(w),
            }
        }
        // SAFETY: every source range lies either in the shared staging block, which this run
        // keeps alive (Arc) and nobody writes after the fill, or in a caller's slice borrowed
        // (shared) for the run's lifetime 'a, so it stays valid and unwritten (direct members
        // exist only in synchronous execution, whose call outlives the run); every destination
        // is a region this run owns until it is installed after completion. `Drop` waits for
        // the event in flight.
        let event = unsafe { self.mm.backend().write_batch_async(self.queue, &writes)? };
        self.inflight = Some(event);
        Ok(())
    }

    fn failed(&mut self, e: Error, retry: &RetryPolicy) {
        if e.is_transient() && self.attempts < retry.max_attempts {
            self.retries += 1;
            self.retry_at = Some(Instant::now() + retry.backoff(self.attempts));
        } else {
            self.outcome = Some(Err(e));
        }
    }

    fn install(&mut self) {
        // Statistics get each member's share of the batch's time, so totals stay true.
        let share = self.started.elapsed() / self.members.len().max(1) as u32;
        for m in &mut self.members {
            if let Some(t) = m.target.take() {
                // Fails only if the destination's own earlier transfer failed; then this member
                // is reported failed and its destination keeps its contents.
                match m.dst.install_device_block(t) {
                    Ok(()) => m.dst.record(Direction::HostToDevice, m.len, share),
                    Err(e) => m.error = Some(Arc::new(e)),
                }
            }
        }
        self.outcome = Some(Ok(()));
    }

    pub(crate) fn wait_next(&self) {
        if let Some(ev) = &self.inflight {
            let _ = ev.wait();
        } else if let Some(at) = self.retry_at {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        if let Some(ev) = &self.inflight {
            ev.on_complete(waker.clone());
        } else if let Some(at) = self.retry_at {
            let waker = waker.clone();
            let delay = at.saturating_duration_since(Instant::now());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                waker.wake();
            });
        } else {
            waker.wake_by_ref();
        }
    }

    /// Outcomes of a successful batch, one per member.
    pub(crate) fn finished(&self) -> Vec<Finished> {
        let duration = self.started.elapsed();
        let (pinned, staged) = (self.pinned, self.staged);
        self.members
            .iter()
            .map(|m| Finished {
                index: m.index,
                direction: Direction::HostToDevice,
                bytes: m.len,
                attempts: self.attempts,
                chunks: 1,
                batched: true,
                duration,
                error: m.error.clone(),
                start_order: self.start_order,
                retries: 0,
                pinned,
                staged,
                measured: self.choice == Some(true),
            })
            .collect()
    }

    /// Turns a failed batch into one transfer per member (each with its own retries).
    pub(crate) fn split(&mut self) -> Vec<Run<'a>> {
        self.drain();
        let members = std::mem::take(&mut self.members);
        members
            .into_iter()
            .map(|mut m| {
                if let Some(t) = m.target.take() {
                    self.mm.release_device(t);
                }
                let plan = Plan {
                    queue: self.queue,
                    chunk_size: usize::MAX,
                    ring: 1,
                    staging: false,
                    pinned: false,
                    lane: None,
                    measured: self.choice == Some(true),
                };
                let mut run = Run::new(m.index, Op::Upload { src: m.src, dst: m.dst }, &self.mm, plan, true);
                // Reported as the batch sent it: from its staging block, or direct.
                run.staged = self.staged;
                run.pinned = self.pinned;
                run
            })
            .collect()
    }

    fn drain(&mut self) {
        if let Some(ev) = self.inflight.take() {
            let _ = ev.wait();
        }
    }
}

impl Drop for BatchRun<'_> {
    fn drop(&mut self) {
        self.drain();
        for m in &mut self.members {
            if let Some(t) = m.target.take() {
                self.mm.release_device(t);
            }
        }
    }
}

/// `b` continues `a` in the same allocation and in host memory.
fn adjacent(a: &BatchWrite<'_>, b: &BatchWrite<'_>) -> bool {
    std::ptr::eq(a.dst, b.dst)
        && a.dst_offset.checked_add(a.len) == Some(b.dst_offset)
        && a.src.wrapping_add(a.len) == b.src
}

fn missing(what: &str) -> Error {
    Error::InvalidHandle {
        backend: "transfer",
        reason: format!("internal inconsistency: no {what}; please report this"),
    }
}
