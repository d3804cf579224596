//! One transfer as a state machine that the engine advances without blocking.
//!
//! A transfer is cut into chunks. With staging, chunk `c` goes through slot `c % ring` of a
//! ring of host blocks: the host copy into a slot happens while earlier chunks are still in
//! flight, so host copies overlap device transfers. A slot is reused only after its previous
//! chunk completed, and never while a retry is pending, so a failed chunk can be re-sent from
//! its slot. Uploads and device copies write into a fresh device block that replaces the
//! destination's device part only when every chunk has arrived: a failed transfer leaves its
//! destination exactly as it was. Without staging (synchronous execution only) the chunks are
//! read from, or written to, the caller's memory directly; the engine then sends one chunk.

use crate::backend::region::DeviceRegion;
use crate::backend::{Event, ReadyEvent};
use crate::buffer::raw::RawBuffer;
use crate::error::{Direction, Error, Result};
use crate::pool::context::ManagerShared;
use crate::pool::staging::StagingSlot;
use crate::pool::tuning::Lane;
use crate::transfer::schedule::RetryPolicy;
use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A host block shared by the members of one small-transfer batch; back to the pool on drop.
pub(crate) struct SharedStaging {
    pub(crate) block: Option<StagingSlot>,
    pub(crate) mm: Arc<ManagerShared>,
}

impl Drop for SharedStaging {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.mm.release_staging(b);
        }
    }
}

/// Where an upload's bytes come from.
pub(crate) enum Source<'a> {
    /// User memory, valid for the whole (synchronous) execution.
    Borrowed(&'a [u8]),
    /// A copy taken at submission (asynchronous execution: no user borrow outlives the call).
    Owned(Vec<u8>),
    /// A range of a batch's shared staging block.
    Staged(Arc<SharedStaging>, usize, usize),
    /// A reader consumed chunk by chunk (streaming).
    Reader(&'a mut dyn Read),
}

impl Source<'_> {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Source::Borrowed(b) => b,
            Source::Owned(v) => v,
            Source::Staged(s, off, len) => s.block.as_ref().map(|b| &b.bytes()[*off..*off + *len]).unwrap_or(&[]),
            Source::Reader(_) => &[],
        }
    }
}

pub(crate) enum Op<'a> {
    Upload { src: Source<'a>, dst: &'a mut RawBuffer },
    Download { src: &'a RawBuffer, dst: &'a mut [u8] },
    Copy { src: &'a RawBuffer, dst: &'a mut RawBuffer },
}

struct Flight {
    chunk: usize,
    event: Event,
}

/// A finished transfer, as the report lists it.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) index: usize,
    pub(crate) direction: Direction,
    pub(crate) bytes: usize,
    pub(crate) attempts: u32,
    pub(crate) chunks: usize,
    pub(crate) batched: bool,
    pub(crate) duration: Duration,
    pub(crate) error: Option<Arc<Error>>,
    pub(crate) start_order: usize,
    pub(crate) retries: u32,
    pub(crate) pinned: bool,
    /// Its host bytes went through staging blocks.
    pub(crate) staged: bool,
    /// The staged-or-direct choice came from measurements.
    pub(crate) measured: bool,
}

/// Progress callback of a streaming upload: (bytes done, bytes total).
pub(crate) type Progress<'a> = &'a mut dyn FnMut(u64, u64);

pub(crate) struct Run<'a> {
    pub(crate) index: usize,
    pub(crate) direction: Direction,
    pub(crate) bytes: usize,
    pub(crate) batched: bool,
    pub(crate) start_order: usize,
    pub(crate) retries: u32,
    pub(crate) chunks: usize,
    /// Staged through the backend's pinned memory.
    pub(crate) pinned: bool,
    /// Staged at all (false: direct, or no host memory involved).
    pub(crate) staged: bool,
    /// The lane whose staged-or-direct measurements this run feeds, and whether its choice
    /// came from measurements.
    pub(crate) lane: Option<Lane>,
    pub(crate) measured: bool,
    pub(crate) outcome: Option<Result<(), Arc<Error>>>,
    pub(crate) started: Instant,
    pub(crate) finished_at: Option<Instant>,
    op: Op<'a>,
    mm: Arc<ManagerShared>,
    queue: usize,
    chunk: usize,
    staging: Vec<StagingSlot>,
    target: Option<DeviceRegion>,
    next: usize,
    done: usize,
    inflight: VecDeque<Flight>,
    attempts: Vec<u32>,
    retry_at: VecDeque<(usize, Instant)>,
    progress: Option<Progress<'a>>,
    /// Base of the user's destination for direct (unstaged) downloads.
    direct_dst: *mut u8,
}

/// How a run moves its data.
pub(crate) struct Plan {
    pub(crate) queue: usize,
    pub(crate) chunk_size: usize,
    pub(crate) ring: usize,
    pub(crate) staging: bool,
    /// Stage through the backend's pinned memory where it has it.
    pub(crate) pinned: bool,
    /// The measurement lane of an adaptive staged-or-direct choice, if this run made one.
    pub(crate) lane: Option<Lane>,
    /// That choice came from measurements.
    pub(crate) measured: bool,
}

impl<'a> Run<'a> {
    pub(crate) fn new(index: usize, op: Op<'a>, mm: &Arc<ManagerShared>, plan: Plan, batched: bool) -> Run<'a> {
        let (direction, bytes, needs_target) = match &op {
            Op::Upload { dst, .. } => (Direction::HostToDevice, dst.bytes(), true),
            Op::Download { src, .. } => (Direction::DeviceToHost, src.bytes(), false),
            Op::Copy { src, dst } => {
                let d2d = src.current_device().is_some() || mm.unified;
                (if d2d { Direction::DeviceToDevice } else { Direction::HostToDevice }, dst.bytes(), true)
            }
        };
        let chunk = plan.chunk_size.clamp(1, bytes.max(1));
        let chunks = bytes.div_ceil(chunk);
        let mut run = Run {
            index,
            direction,
            bytes,
            batched,
            start_order: 0,
            pinned: false,
            staged: false,
            lane: plan.lane,
            measured: plan.measured,
            retries: 0,
            chunks,
            outcome: None,
            started: Instant::now(),
            finished_at: None,
            op,
            mm: mm.clone(),
            queue: plan.queue,
            chunk,
            staging: Vec::new(),
            target: None,
            next: 0,
            done: 0,
            inflight: VecDeque::new(),
            attempts: vec![0; chunks],
            retry_at: VecDeque::new(),
            progress: None,
            direct_dst: std::ptr::null_mut(),
        };
        if let Op::Download { dst, .. } = &mut run.op {
            run.direct_dst = dst.as_mut_ptr();
        }
        if bytes == 0 {
            run.finish(Ok(()));
            return run;
        }
        // A download whose newest data is already in host memory is one memcpy.
        if let Op::Download { src, dst } = &mut run.op {
            if src.data_on_host() {
                crate::ops::copy_into(dst, src.host());
                run.done = run.chunks;
                run.finish(Ok(()));
                return run;
            }
        }
        let setup = (|| -> Result<()> {
            if needs_target {
                run.target = Some(mm.acquire_device(bytes)?);
            }
            if plan.staging {
                for _ in 0..plan.ring.clamp(1, chunks) {
                    run.staging.push(mm.acquire_staging(chunk, plan.pinned)?);
                }
            }
            Ok(())
        })();
        if let Err(e) = setup {
            run.fail(e);
        }
        run.pinned = run.staging.first().is_some_and(StagingSlot::is_pinned);
        run.staged = !run.staging.is_empty();
        run
    }

    pub(crate) fn with_progress(mut self, progress: Progress<'a>) -> Self {
        self.progress = Some(progress);
        self
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// Marks the run started (its duration counts from here, not from its setup in the queue).
    pub(crate) fn start(&mut self, order: usize) {
        self.start_order = order;
        if !self.is_finished() {
            self.started = Instant::now();
        }
    }

    /// The report line of a finished run.
    pub(crate) fn finished(&self) -> Finished {
        Finished {
            index: self.index,
            direction: self.direction,
            bytes: self.bytes,
            attempts: self.attempts(),
            chunks: self.chunks,
            batched: self.batched,
            duration: self.duration(),
            error: match &self.outcome {
                Some(Err(e)) => Some(e.clone()),
                _ => None,
            },
            start_order: self.start_order,
            retries: self.retries,
            pinned: self.pinned,
            staged: self.staged,
            measured: self.measured,
        }
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.iter().copied().max().unwrap_or(0)
    }

    pub(crate) fn duration(&self) -> Duration {
        self.finished_at.unwrap_or_else(Instant::now) - self.started
    }

    fn ring(&self) -> usize {
        if self.staging.is_empty() {
            // Direct transfers need no slots; keep a few in flight.
            4
        } else {
            self.staging.len()
        }
    }

    /// Does whatever can be done without blocking; true if anything happened.
    pub(crate) fn advance(&mut self, retry: &RetryPolicy) -> bool {
        if self.is_finished() {
            return false;
        }
        let mut progressed = false;
        // Completions, in order.
        while let Some(front) = self.inflight.front() {
            match front.event.is_complete() {
                Ok(false) => break,
                Ok(true) => {
                    let f = self.inflight.pop_front().expect("front exists");
                    self.complete_chunk(f.chunk);
                    progressed = true;
                }
                Err(e) => {
                    let f = self.inflight.pop_front().expect("front exists");
                    self.chunk_failed(f.chunk, e, retry);
                    progressed = true;
                    if self.is_finished() {
                        return true;
                    }
                }
            }
        }
        // Due retries.
        while let Some(&(c, at)) = self.retry_at.front() {
            if Instant::now() < at {
                break;
            }
            self.retry_at.pop_front();
            progressed = true;
            if let Err(e) = self.enqueue(c) {
                self.chunk_failed(c, e, retry);
                if self.is_finished() {
                    return true;
                }
            }
        }
        // New chunks, while slots are free and no retry waits for its slot.
        while self.retry_at.is_empty()
            && self.next < self.chunks
            && self.inflight.len() < self.ring()
            && self.slot_free(self.next)
        {
            let c = self.next;
            self.next += 1;
            progressed = true;
            if let Err(e) = self.enqueue(c) {
                self.chunk_failed(c, e, retry);
                if self.is_finished() {
                    return true;
                }
                break;
            }
        }
        if self.done == self.chunks && self.inflight.is_empty() && self.retry_at.is_empty() {
            let r = self.install();
            self.finish(r);
            progressed = true;
        }
        progressed
    }

    /// Blocks until the next thing this run waits for (its oldest chunk, or a retry time).
    pub(crate) fn wait_next(&self) {
        if let Some(f) = self.inflight.front() {
            // Errors are picked up by the next `advance`.
            let _ = f.event.wait();
        } else if let Some(&(_, at)) = self.retry_at.front() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
    }

    /// Arranges for `waker` to be woken when this run can make progress.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        if let Some(f) = self.inflight.front() {
            f.event.on_complete(waker.clone());
        } else if let Some(&(_, at)) = self.retry_at.front() {
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

    /// A chunk's staging slot may be filled only when no chunk in flight (a retry included,
    /// which is re-sent from its slot) still uses it.
    fn slot_free(&self, c: usize) -> bool {
        let ring = self.staging.len();
        ring == 0 || !self.inflight.iter().any(|f| f.chunk % ring == c % ring)
    }

    fn chunk_range(&self, c: usize) -> (usize, usize) {
        let off = c * self.chunk;
        (off, self.chunk.min(self.bytes - off))
    }

    fn enqueue(&mut self, c: usize) -> Result<()> {
        self.attempts[c] += 1;
        let (off, len) = self.chunk_range(c);
        let backend = self.mm.backend.clone();
        let slot = if self.staging.is_empty() { None } else { Some(c % self.staging.len()) };
        // A transfer sent directly in one piece is made as a blocking call, as a caller would
        // make it: nothing could overlap it, and it saves an event's round trip (~10 µs on
        // PoCL under load).
        let blocking = slot.is_none() && self.chunks == 1;
        let event: Event = match &mut self.op {
            Op::Upload { src, .. } if blocking => {
                let target = self.target.as_ref().ok_or_else(|| missing("upload target"))?;
                target.write(&*backend, off, &src.bytes()[off..off + len])?;
                Box::new(ReadyEvent)
            }
            Op::Download { src, dst } if blocking => {
                let from = src.current_device().ok_or_else(|| missing("download source on the device"))?;
                from.read(&*backend, off, &mut dst[off..off + len])?;
                Box::new(ReadyEvent)
            }
            Op::Upload { src, .. } => {
                let target = self.target.as_ref().ok_or_else(|| missing("upload target"))?;
                let ptr = match slot {
                    Some(s) => {
                        let block = &mut self.staging[s];
                        // A retry re-sends the slot as it is; only a first attempt fills it.
                        if self.attempts[c] == 1 {
                            fill_slot(src, &mut block.bytes_mut()[..len], off)?;
                        }
                        block.bytes().as_ptr()
                    }
                    None => src.bytes()[off..off + len].as_ptr(),
                };
                // SAFETY: `ptr` addresses `len` readable bytes that stay valid and unwritten
                // until the event completes: a staging slot is owned by this run and refilled
                // only after its chunk completed; borrowed, owned and shared-staging sources
                // live at least as long as the run; `Drop` waits for every event in flight.
                unsafe { target.write_async(&*backend, self.queue, off, ptr, len)? }
            }
            Op::Download { src, .. } => {
                let from = src.current_device().ok_or_else(|| missing("download source on the device"))?;
                let ptr = match slot {
                    Some(s) => self.staging[s].bytes_mut().as_mut_ptr(),
                    // One base pointer for all chunks, so in-flight chunks keep valid pointers.
                    None => self.direct_dst.wrapping_add(off),
                };
                // SAFETY: `ptr` addresses `len` writable bytes that nothing else touches until
                // the event completes: a staging slot owned by this run, or the user's
                // destination, exclusively borrowed for the run's whole life (direct downloads
                // are used only by synchronous execution); `Drop` waits for events in flight.
                unsafe { from.read_async(&*backend, self.queue, off, ptr, len)? }
            }
            Op::Copy { src, .. } => {
                let target = self.target.as_ref().ok_or_else(|| missing("copy target"))?;
                match src.current_device() {
                    Some(from) => target.copy_from_async(&*backend, self.queue, off, from, off, len)?,
                    None => {
                        let data = &src.host()[off..off + len];
                        let ptr = match slot {
                            // Asynchronous execution stages host sources, so a leaked future
                            // never leaves the device reading the source buffer's memory.
                            Some(s) => {
                                let block = &mut self.staging[s];
                                if self.attempts[c] == 1 {
                                    crate::ops::copy_into(&mut block.bytes_mut()[..len], data);
                                }
                                block.bytes().as_ptr()
                            }
                            None => data.as_ptr(),
                        };
                        // SAFETY: a staging slot owned by this run (refilled only when no chunk
                        // in flight uses it), or the source's host bytes, borrowed for the
                        // run's whole life (synchronous execution only); Drop waits.
                        unsafe { target.write_async(&*backend, self.queue, off, ptr, len)? }
                    }
                }
            }
        };
        self.inflight.push_back(Flight { chunk: c, event });
        Ok(())
    }

    fn complete_chunk(&mut self, c: usize) {
        let (off, len) = self.chunk_range(c);
        if let (Op::Download { dst, .. }, false) = (&mut self.op, self.staging.is_empty()) {
            let slot = &self.staging[c % self.staging.len()];
            crate::ops::copy_into(&mut dst[off..off + len], &slot.bytes()[..len]);
        }
        self.done += 1;
        if let Some(p) = self.progress.as_mut() {
            p((off + len) as u64, self.bytes as u64);
        }
    }

    fn chunk_failed(&mut self, c: usize, e: Error, retry: &RetryPolicy) {
        if e.is_transient() && self.attempts[c] < retry.max_attempts {
            self.retries += 1;
            self.retry_at.push_back((c, Instant::now() + retry.backoff(self.attempts[c])));
        } else {
            self.fail(e);
        }
    }

    /// Puts the finished target in place (uploads and copies) and records the transfer.
    fn install(&mut self) -> Result<()> {
        let elapsed = self.started.elapsed();
        match &mut self.op {
            Op::Upload { dst, .. } | Op::Copy { dst, .. } => {
                let block = self.target.take().ok_or_else(|| missing("target"))?;
                dst.install_device_block(block)?;
                dst.record(self.direction, self.bytes, elapsed);
            }
            Op::Download { src, .. } => src.record(Direction::DeviceToHost, self.bytes, elapsed),
        }
        Ok(())
    }

    fn fail(&mut self, e: Error) {
        self.drain();
        self.finish(Err(e));
    }

    fn finish(&mut self, r: Result<()>) {
        self.release();
        self.outcome = Some(r.map_err(Arc::new));
        self.finished_at = Some(Instant::now());
    }

    /// Waits for everything in flight (so no memory is released under a running transfer).
    fn drain(&mut self) {
        while let Some(f) = self.inflight.pop_front() {
            let _ = f.event.wait();
        }
        self.retry_at.clear();
    }

    fn release(&mut self) {
        for b in self.staging.drain(..) {
            self.mm.release_staging(b);
        }
        if let Some(t) = self.target.take() {
            self.mm.release_device(t);
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.drain();
        self.release();
    }
}

/// Fills a staging slot with the source bytes at `off` (a reader is read exactly).
fn fill_slot(src: &mut Source<'_>, slot: &mut [u8], off: usize) -> Result<()> {
    match src {
        Source::Reader(r) => r.read_exact(slot).map_err(|e| Error::InvalidArgument {
            option: "stream reader",
            value: format!("read of {} bytes at offset {off} failed: {e}", slot.len()),
            reason: "the reader must supply exactly the buffer's size in bytes",
        }),
        other => {
            let len = slot.len();
            crate::ops::copy_into(slot, &other.bytes()[off..off + len]);
            Ok(())
        }
    }
}

fn missing(what: &str) -> Error {
    Error::InvalidHandle {
        backend: "transfer",
        reason: format!("internal inconsistency: no {what}; please report this"),
    }
}
