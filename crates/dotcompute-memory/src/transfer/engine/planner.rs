//! Planning: a batch's transfers, in priority order, become work for the execution: inline
//! host copies on unified memory, packed batches of small uploads, and chunked runs, each with
//! its queue and its staged-or-direct decision.

use super::execution::{BatchLane, Execution, Work};
use super::inline::{InlineOp, InlineRun};
use super::options::TransferOptions;
use super::requests::{PeerCopy, Spec, TransferBatch};
use crate::buffer::raw::{PeerRoute, RawBuffer};
use crate::error::{Error, Result};
use crate::pool::context::ManagerShared;
use crate::pool::tuning::Lane;
use crate::transfer::batch::{BatchRun, Member};
use crate::transfer::pipeline::{Op, Plan, Run, SharedStaging, Source};
use crate::transfer::schedule::{Priority, StagingPolicy};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Checks a batch (valid options, every destination of `mm`'s manager, and every other buffer
/// too except the sources of copies, which may be on another device) and plans it into an
/// execution. `owned`: asynchronous execution, where host memory is always staged.
pub(super) fn prepare<'a>(
    mm: &Arc<ManagerShared>,
    batch: TransferBatch<'a>,
    options: TransferOptions,
    owned: bool,
) -> Result<Execution<'a>> {
    // The report's clock includes setting up (staging fills, target allocations).
    let started = Instant::now();
    options.validate()?;
    for (spec, _) in &batch.items {
        let (a, b) = spec.manager_ids();
        for id in std::iter::once(a).chain(b) {
            if id != mm.id {
                return Err(Error::ManagerMismatch { operation: "TransferEngine::execute", left: mm.id, right: id });
            }
        }
    }
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
        runs: VecDeque::new(),
        batched: 0,
        group: Vec::new(),
        inline: Vec::new(),
        group_bytes: 0,
        batch_mode: None,
        batch_lane: None,
        peers: Vec::new(),
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
    let (runs, batched, batch_lane, peers) = (planner.runs, planner.batched, planner.batch_lane, planner.peers);
    let mut exec = Execution::new(mm.clone(), options, runs, started, count);
    exec.threshold = threshold;
    exec.batched = batched;
    exec.queues_used = queues_used;
    exec.batch_lane = batch_lane;
    exec.peers = peers;
    Ok(exec)
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
    runs: VecDeque<Work<'a>>,
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
    /// The devices of each peer copy planned, by batch index.
    peers: Vec<(usize, PeerCopy)>,
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
        let spec = match spec {
            Spec::Copy(src, dst) if src.manager().id != dst.manager().id => {
                // From another manager's device: the buffer's own peer copy (direct or staged),
                // made when the work is advanced.
                if let Some(route) = dst.peer_route(src) {
                    let source = src.manager().backend().device_label();
                    let destination = dst.manager().backend().device_label();
                    self.peers.push((index, PeerCopy { source, destination, direct: route == PeerRoute::Direct }));
                }
                self.runs.push_back(Work::Inline(InlineRun::new(vec![(index, InlineOp::Copy(src, dst))], false)));
                return;
            }
            spec => spec,
        };
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
