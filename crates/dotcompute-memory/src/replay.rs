//! Replaying an allocation trace ([`crate::trace`]) through an allocator: how fast it serves
//! the trace's allocations and frees, how often it calls the backend, and how much memory it
//! holds at worst for the bytes the trace has alive at worst.
//!
//! A [`ReplayPlan`] pairs every free with its allocation first (by id, as RMM pairs pointers),
//! so the timed loop does nothing but allocate and free; frees of ids not alive at the time
//! (a log that starts mid-run, or a double free) are counted and skipped.
//!
//! ```
//! use dotcompute_memory::replay::{ReplayAllocator, ReplayOptions, ReplayPlan};
//!
//! # fn main() -> dotcompute_memory::Result<()> {
//! let trace = dotcompute_memory::trace::parse(
//!     "Thread,Time,Action,Pointer,Size,Stream\n\
//!      1,0.1,allocate,0x1000,4096,0x0\n\
//!      1,0.2,allocate,0x2000,8192,0x0\n\
//!      1,0.3,deallocate,0x1000,4096,0x0\n\
//!      1,0.4,deallocate,0x3000,64,0x0\n",
//! )?;
//! let plan = ReplayPlan::new(&trace.events)?;
//! assert_eq!((plan.events(), plan.unknown_frees(), plan.peak_live_bytes()), (4, 1, 12288));
//! let backend = dotcompute_memory::backend::open("cpu")?;
//! let unpooled = plan.run(&backend, ReplayAllocator::Unpooled, &ReplayOptions::default(), None)?;
//! assert_eq!((unpooled.backend_allocations, unpooled.peak_reserved_bytes), (2, 12288));
//! assert_eq!(unpooled.efficiency, 1.0);
//! # Ok(())
//! # }
//! ```

use crate::backend::{Backend, DeviceMemory};
use crate::buffer::UnifiedBuffer;
use crate::error::{Error, Result};
use crate::manager::MemoryManager;
use crate::pool::options::ManagerOptions;
use crate::trace::{TraceEvent, TraceOp};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Operations between two progress reports.
const PROGRESS_EVERY: usize = 4096;
/// Alignment of the unpooled allocator's backend allocations (CUDA's allocation granularity).
const UNPOOLED_ALIGN: usize = 256;

/// An allocator a trace is replayed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplayAllocator {
    /// Ours: a [`MemoryManager`] with the default options (pooling on; no maintenance thread, so
    /// nothing is released during the run), made fresh for the run; every allocation is an
    /// `allocate_device::<u8>` and every free a drop.
    Pooled,
    /// No caching allocator: every allocation is one `Backend::allocate` of exactly the
    /// trace's size and every free one `Backend::free`, called directly (the manager's own
    /// bookkeeping is not on this side). A zero-byte allocation calls nothing.
    Unpooled,
    /// Ours with expandable segments
    /// ([`ManagerOptions::expandable_segments`](crate::ManagerOptions::expandable_segments)):
    /// one reserved range grown by mapping granules. Only where the backend has virtual memory.
    Expandable,
}

impl ReplayAllocator {
    /// Every allocator, in the order reports list them. An allocator added here is replayed
    /// and reported by `dcmem replay` with no change there.
    pub const ALL: &'static [ReplayAllocator] =
        &[ReplayAllocator::Pooled, ReplayAllocator::Unpooled, ReplayAllocator::Expandable];

    /// The allocators `backend` can run, in the order of [`ReplayAllocator::ALL`]: every one,
    /// less `Expandable` where the backend has no virtual memory.
    pub fn for_backend(backend: &dyn Backend) -> Vec<ReplayAllocator> {
        let vm = backend.virtual_memory_granularity().is_some();
        Self::ALL.iter().copied().filter(|a| *a != ReplayAllocator::Expandable || vm).collect()
    }

    /// Its key in `dcmem replay --json`: `ours`, `unpooled`, `expandable`.
    pub fn key(self) -> &'static str {
        match self {
            ReplayAllocator::Pooled => "ours",
            ReplayAllocator::Unpooled => "unpooled",
            ReplayAllocator::Expandable => "expandable",
        }
    }

    /// A line saying what it is.
    pub fn description(self) -> &'static str {
        match self {
            ReplayAllocator::Pooled => "pooled MemoryManager (default options), allocate_device + drop",
            ReplayAllocator::Unpooled => "no caching allocator: Backend::allocate + Backend::free per event",
            ReplayAllocator::Expandable => {
                "pooled MemoryManager with expandable_segments: one reserved range, granules mapped on demand"
            }
        }
    }
}

/// How a replay runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Replay each of the trace's threads on a thread of its own, each thread's events in
    /// order; a free of a buffer another thread allocated waits until it is allocated and
    /// takes it over (default false: every event on the calling thread, in trace order).
    pub threads: bool,
    /// Record about this many [`ReplaySample`]s of live and reserved bytes, evenly spread over
    /// the trace (default 0; one thread only). Reading the reserved bytes takes time, so ask
    /// for samples in a run other than the one whose speed counts.
    pub samples: usize,
}

crate::setters::with_setters!(ReplayOptions {
    with_threads => threads: bool,
    with_samples => samples: usize,
});

/// Live and reserved bytes after one operation of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplaySample {
    /// Operations done (allocations and frees).
    pub operations: u64,
    /// Bytes of the trace's buffers alive.
    pub live_bytes: u64,
    /// Bytes the allocator holds from the backend.
    pub reserved_bytes: u64,
}

/// What one replay measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplayResult {
    /// The allocator replayed through.
    #[serde(skip)]
    pub allocator: ReplayAllocator,
    /// Allocations and frees done: the trace's events less its unknown frees.
    pub operations: u64,
    /// Time the operations took, in seconds.
    pub seconds: f64,
    /// `operations / seconds`.
    pub ops_per_second: f64,
    /// Allocations the backend was asked for.
    pub backend_allocations: u64,
    /// Highest sum of the sizes of the trace's live buffers: on one thread, in trace order
    /// ([`ReplayPlan::peak_live_bytes`], the same for every allocator); with
    /// [`ReplayOptions::threads`], in the order the threads ran, measured during this run.
    pub peak_live_bytes: u64,
    /// Highest number of bytes the allocator held from the backend: for ours,
    /// `MemoryStatistics::peak_reserved_bytes`; unpooled, the live allocations' sizes.
    pub peak_reserved_bytes: u64,
    /// `peak_live_bytes / peak_reserved_bytes` (1 when nothing was reserved): the share of the
    /// memory held at worst that the trace needed.
    pub efficiency: f64,
    /// Live and reserved bytes during the run, when [`ReplayOptions::samples`] asked for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<ReplaySample>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Alloc(usize),
    Free(usize),
}

/// One allocation of the trace.
#[derive(Debug, Clone, Copy)]
struct Slot {
    bytes: usize,
    /// Index of the thread that allocates it, and of the one that frees it (if any).
    alloc_thread: usize,
    free_thread: Option<usize>,
}

/// A trace made ready to replay: every free paired with its allocation.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    ops: Vec<Op>,
    /// The thread (an index into `threads`) of each operation.
    op_threads: Vec<usize>,
    slots: Vec<Slot>,
    threads: Vec<u64>,
    events: u64,
    unknown_frees: u64,
    peak_live_bytes: u64,
}

impl ReplayPlan {
    /// Pairs the frees of `events` (in trace order) with their allocations. A free whose id is
    /// not alive is counted in [`ReplayPlan::unknown_frees`] and skipped; an allocation of an
    /// id that is still alive (its free is missing from the trace) starts a new buffer, and the
    /// earlier one stays alive to the end.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a trace without events (nothing to replay), a size
    /// this machine cannot address, or live allocations whose sizes add up past `u64::MAX`;
    /// each names the event (its 1-based position in `events`) and the allocation's id.
    pub fn new(events: &[TraceEvent]) -> Result<ReplayPlan> {
        if events.is_empty() {
            return Err(Error::InvalidArgument {
                option: "trace",
                value: "0 events".into(),
                reason: "the trace has no allocations or frees: there is nothing to replay",
            });
        }
        let mut plan = ReplayPlan {
            ops: Vec::with_capacity(events.len()),
            op_threads: Vec::with_capacity(events.len()),
            slots: Vec::new(),
            threads: Vec::new(),
            events: events.len() as u64,
            unknown_frees: 0,
            peak_live_bytes: 0,
        };
        let mut thread_index: HashMap<u64, usize> = HashMap::new();
        let mut live: HashMap<u64, usize> = HashMap::new();
        let mut live_bytes = 0u64;
        for (number, e) in (1u64..).zip(events) {
            let next = plan.threads.len();
            let thread = *thread_index.entry(e.thread).or_insert(next);
            if thread == next {
                plan.threads.push(e.thread);
            }
            match e.op {
                TraceOp::Alloc => {
                    let bytes =
                        usize::try_from(e.bytes).ok().filter(|&b| b <= isize::MAX as usize).ok_or_else(|| {
                            Error::InvalidArgument {
                                option: "trace",
                                value: format!("event {number}: an allocation of {} bytes (id {})", e.bytes, e.id),
                                reason: "larger than this machine can address",
                            }
                        })?;
                    let slot = plan.slots.len();
                    plan.slots.push(Slot { bytes, alloc_thread: thread, free_thread: None });
                    live.insert(e.id, slot);
                    plan.ops.push(Op::Alloc(slot));
                    live_bytes = live_bytes.checked_add(e.bytes).ok_or_else(|| Error::InvalidArgument {
                        option: "trace",
                        value: format!(
                            "event {number}: an allocation of {} bytes (id {}) while {live_bytes} bytes are live, \
                             {} bytes in all",
                            e.bytes,
                            e.id,
                            u128::from(live_bytes) + u128::from(e.bytes)
                        ),
                        reason: "the live allocations add up to more than u64::MAX bytes",
                    })?;
                    plan.peak_live_bytes = plan.peak_live_bytes.max(live_bytes);
                }
                TraceOp::Free => match live.remove(&e.id) {
                    Some(slot) => {
                        plan.slots[slot].free_thread = Some(thread);
                        plan.ops.push(Op::Free(slot));
                        live_bytes -= plan.slots[slot].bytes as u64;
                    }
                    None => {
                        plan.unknown_frees += 1;
                        continue;
                    }
                },
            }
            plan.op_threads.push(thread);
        }
        Ok(plan)
    }

    /// Events in the trace.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Allocations and frees a replay does (the events less the unknown frees).
    pub fn operations(&self) -> u64 {
        self.ops.len() as u64
    }

    /// Frees of ids not alive at the time (never allocated in the trace, or freed already).
    pub fn unknown_frees(&self) -> u64 {
        self.unknown_frees
    }

    /// Highest sum of the sizes of the live buffers, in trace order: the peak of every run on
    /// one thread. Threads that run in another order reach their own peak, which
    /// [`ReplayResult::peak_live_bytes`] reports.
    pub fn peak_live_bytes(&self) -> u64 {
        self.peak_live_bytes
    }

    /// The trace's threads, by their numbers in the trace, in order of first appearance.
    pub fn threads(&self) -> &[u64] {
        &self.threads
    }

    /// Replays the trace through `allocator` on `backend`. `progress`, if given, is called
    /// with the number of operations done since its previous call, every few thousand.
    ///
    /// # Errors
    ///
    /// The first allocation or free that failed (out of memory, a backend error); what the
    /// replay held is released first. With [`ReplayOptions::threads`], [`Error::ThreadSpawn`]
    /// when the system cannot start a thread for each of the trace's threads.
    pub fn run(
        &self,
        backend: &Arc<dyn Backend>,
        allocator: ReplayAllocator,
        options: &ReplayOptions,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<ReplayResult> {
        let progress = progress.unwrap_or(&|_| {});
        let samples = if options.threads { 0 } else { options.samples };
        let stride = if samples == 0 { usize::MAX } else { self.ops.len().div_ceil(samples).max(1) };
        let mut sampled = Vec::new();
        let mut sample = |done: usize, live: u64, reserved: u64| {
            sampled.push(ReplaySample { operations: done as u64, live_bytes: live, reserved_bytes: reserved })
        };
        let (elapsed, peak_live, backend_allocations, peak_reserved) = match allocator {
            ReplayAllocator::Pooled | ReplayAllocator::Expandable => {
                let manager_options = ManagerOptions::default()
                    .with_maintenance_interval(None)
                    .with_expandable_segments(allocator == ReplayAllocator::Expandable);
                let mm = MemoryManager::with_shared_backend(backend.clone(), manager_options)?;
                let alloc = |bytes: usize| mm.allocate_device::<u8>(bytes);
                let free = |buffer: UnifiedBuffer<u8>| -> Result<()> {
                    drop(buffer);
                    Ok(())
                };
                let (elapsed, peak_live) = if options.threads {
                    self.execute_threads(alloc, free, progress)?
                } else {
                    let elapsed = self.execute(alloc, free, progress, stride, |done, live| {
                        sample(done, live, mm.statistics().reserved_bytes)
                    })?;
                    (elapsed, self.peak_live_bytes)
                };
                let stats = mm.statistics();
                (elapsed, peak_live, stats.backend_allocations, stats.peak_reserved_bytes)
            }
            ReplayAllocator::Unpooled => {
                let allocate = |bytes: usize| -> Result<Option<DeviceMemory>> {
                    if bytes == 0 {
                        return Ok(None);
                    }
                    backend.allocate(bytes, UNPOOLED_ALIGN).map(Some)
                };
                let release = |memory: Option<DeviceMemory>| memory.map_or(Ok(()), |m| backend.free(m));
                let timed = if options.threads {
                    // Shared counters, on this side only: the threads' reserved bytes add up.
                    // SeqCst, as the live bytes in `execute_threads`: a buffer is counted
                    // reserved before it is counted live, and uncounted live first.
                    let (reserved, peak) = (AtomicU64::new(0), AtomicU64::new(0));
                    let (elapsed, peak_live) = self.execute_threads(
                        |bytes| {
                            let memory = allocate(bytes)?;
                            let now = reserved.fetch_add(bytes as u64, SeqCst) + bytes as u64;
                            peak.fetch_max(now, Relaxed);
                            Ok(memory)
                        },
                        |memory: Option<DeviceMemory>| {
                            reserved.fetch_sub(memory.as_ref().map_or(0, |m| m.size() as u64), SeqCst);
                            release(memory)
                        },
                        progress,
                    )?;
                    (elapsed, peak_live, peak.load(Relaxed))
                } else {
                    let (reserved, peak) = (Cell::new(0u64), Cell::new(0u64));
                    let elapsed = self.execute(
                        |bytes| {
                            let memory = allocate(bytes)?;
                            reserved.set(reserved.get() + bytes as u64);
                            peak.set(peak.get().max(reserved.get()));
                            Ok(memory)
                        },
                        |memory: Option<DeviceMemory>| {
                            reserved.set(reserved.get() - memory.as_ref().map_or(0, |m| m.size() as u64));
                            release(memory)
                        },
                        progress,
                        stride,
                        |done, live| sample(done, live, reserved.get()),
                    )?;
                    (elapsed, self.peak_live_bytes, peak.get())
                };
                let allocations = self.ops.iter().filter(|op| matches!(op, Op::Alloc(s) if self.slots[*s].bytes > 0));
                (timed.0, timed.1, allocations.count() as u64, timed.2)
            }
        };
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let operations = self.operations();
        Ok(ReplayResult {
            allocator,
            operations,
            seconds,
            ops_per_second: operations as f64 / seconds,
            backend_allocations,
            peak_live_bytes: peak_live,
            peak_reserved_bytes: peak_reserved,
            efficiency: if peak_reserved == 0 { 1.0 } else { peak_live as f64 / peak_reserved as f64 },
            samples: sampled,
        })
    }

    /// Runs every operation on this thread, in trace order; `after` gets the operations done
    /// and the live bytes after every `stride`-th. Returns the time the operations took (what
    /// is still alive at the end, or when one fails, is freed afterwards, untimed).
    fn execute<H>(
        &self,
        mut alloc: impl FnMut(usize) -> Result<H>,
        mut free: impl FnMut(H) -> Result<()>,
        progress: &(dyn Fn(u64) + Sync),
        stride: usize,
        mut after: impl FnMut(usize, u64),
    ) -> Result<Duration> {
        let mut held: Vec<Option<H>> = (0..self.slots.len()).map(|_| None).collect();
        let mut live = 0u64;
        let started = Instant::now();
        let mut outcome = Ok(());
        for (i, &op) in self.ops.iter().enumerate() {
            let step = match op {
                Op::Alloc(s) => alloc(self.slots[s].bytes).map(|h| {
                    held[s] = Some(h);
                    live += self.slots[s].bytes as u64;
                }),
                Op::Free(s) => {
                    live -= self.slots[s].bytes as u64;
                    held[s].take().map_or(Ok(()), &mut free)
                }
            };
            if let Err(e) = step {
                outcome = Err(e);
                break;
            }
            let done = i + 1;
            if done.is_multiple_of(PROGRESS_EVERY) {
                progress(PROGRESS_EVERY as u64);
            }
            if done.is_multiple_of(stride) || (stride != usize::MAX && done == self.ops.len()) {
                after(done, live);
            }
        }
        let elapsed = started.elapsed();
        progress((self.ops.len() % PROGRESS_EVERY) as u64);
        for h in held.into_iter().flatten() {
            let _ = free(h);
        }
        outcome.map(|()| elapsed)
    }

    /// Runs each thread's operations on a thread of its own (see [`ReplayOptions::threads`]).
    /// Returns the time the operations took and the highest sum of the sizes of the buffers
    /// alive at once in this run.
    fn execute_threads<H: Send>(
        &self,
        alloc: impl Fn(usize) -> Result<H> + Sync,
        free: impl Fn(H) -> Result<()> + Sync,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Duration, u64)> {
        // Where each slot's handle lives between its allocation and its free: in a table of
        // the allocating thread, or, when another thread frees it, in a hand-off cell.
        #[derive(Clone, Copy)]
        enum Place {
            Local(usize),
            Handoff(usize),
        }
        let mut per_thread: Vec<Vec<(Op, Place)>> = vec![Vec::new(); self.threads.len()];
        let mut locals = vec![0usize; self.threads.len()];
        let mut places: Vec<Option<Place>> = vec![None; self.slots.len()];
        let mut handoffs = 0usize;
        for (&op, &thread) in self.ops.iter().zip(&self.op_threads) {
            let slot = match op {
                Op::Alloc(s) | Op::Free(s) => s,
            };
            let place = *places[slot].get_or_insert_with(|| {
                let info = self.slots[slot];
                if info.free_thread.is_some_and(|f| f != info.alloc_thread) {
                    handoffs += 1;
                    Place::Handoff(handoffs - 1)
                } else {
                    locals[info.alloc_thread] += 1;
                    Place::Local(locals[info.alloc_thread] - 1)
                }
            });
            per_thread[thread].push((op, place));
        }
        struct Handoff<H> {
            ready: AtomicBool,
            handle: Mutex<Option<H>>,
        }
        let cells: Vec<Handoff<H>> =
            (0..handoffs).map(|_| Handoff { ready: AtomicBool::new(false), handle: Mutex::new(None) }).collect();
        let failed = AtomicBool::new(false);
        let gate = Gate::default();
        // Live bytes of this run: added after an allocation returns, subtracted before the
        // free, SeqCst so that at every point they are at most what the allocator reserved.
        let (live, peak_live) = (AtomicU64::new(0), AtomicU64::new(0));
        let allocated = |s: usize, h: H| {
            let bytes = self.slots[s].bytes as u64;
            peak_live.fetch_max(live.fetch_add(bytes, SeqCst) + bytes, Relaxed);
            h
        };
        let release = |s: usize, h: Option<H>| {
            h.map_or(Ok(()), |h| {
                live.fetch_sub(self.slots[s].bytes as u64, SeqCst);
                free(h)
            })
        };
        let run = |ops: &[(Op, Place)], local_count: usize| -> (Result<()>, Vec<H>) {
            let mut local: Vec<Option<H>> = (0..local_count).map(|_| None).collect();
            gate.arrive_and_wait();
            let mut done = 0usize;
            let mut outcome = Ok(());
            for &(op, place) in ops {
                if failed.load(Relaxed) {
                    break;
                }
                let step = match (op, place) {
                    (Op::Alloc(s), Place::Local(i)) => {
                        alloc(self.slots[s].bytes).map(|h| local[i] = Some(allocated(s, h)))
                    }
                    (Op::Free(s), Place::Local(i)) => release(s, local[i].take()),
                    (Op::Alloc(s), Place::Handoff(i)) => alloc(self.slots[s].bytes).map(|h| {
                        *cells[i].handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(allocated(s, h));
                        cells[i].ready.store(true, Release);
                    }),
                    (Op::Free(s), Place::Handoff(i)) => {
                        // The allocation comes earlier in the trace, so waiting cannot deadlock.
                        while !cells[i].ready.load(Acquire) && !failed.load(Relaxed) {
                            std::thread::yield_now();
                        }
                        let handle = cells[i].handle.lock().unwrap_or_else(|p| p.into_inner()).take();
                        release(s, handle)
                    }
                };
                if let Err(e) = step {
                    failed.store(true, Relaxed);
                    outcome = Err(e);
                    break;
                }
                done += 1;
                if done.is_multiple_of(PROGRESS_EVERY) {
                    progress(PROGRESS_EVERY as u64);
                }
            }
            progress((done % PROGRESS_EVERY) as u64);
            (outcome, local.into_iter().flatten().collect())
        };
        let run = &run;
        let (elapsed, outcomes, not_spawned) = std::thread::scope(|scope| {
            let mut workers = Vec::with_capacity(per_thread.len());
            let mut not_spawned = None;
            for (k, (ops, &n)) in per_thread.iter().zip(&locals).enumerate() {
                match std::thread::Builder::new().spawn_scoped(scope, move || run(ops, n)) {
                    Ok(worker) => workers.push(worker),
                    Err(e) => {
                        failed.store(true, Relaxed);
                        not_spawned = Some(Error::ThreadSpawn {
                            thread: "replay",
                            message: format!(
                                "thread {} of the {} the trace's threads need: {e}; replay on one thread \
                                 (ReplayOptions::threads false, `dcmem replay` without --threads) or raise this \
                                 process's limits on threads and memory",
                                k + 1,
                                per_thread.len()
                            ),
                        });
                        break;
                    }
                }
            }
            // A thread that could not be spawned opens the gate at once, `failed` set, so that
            // the threads already waiting end without replaying.
            gate.open(if not_spawned.is_none() { workers.len() } else { 0 });
            let started = Instant::now();
            let outcomes: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
            (started.elapsed(), outcomes, not_spawned)
        });
        let mut result = match not_spawned {
            Some(e) => Err(e),
            None => Ok((elapsed, peak_live.load(Relaxed))),
        };
        for outcome in outcomes {
            match outcome {
                Ok((outcome, leftover)) => {
                    for h in leftover {
                        let _ = free(h);
                    }
                    if let (Err(e), Ok(_)) = (outcome, &result) {
                        result = Err(e);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for cell in cells {
            if let Some(h) = cell.handle.into_inner().unwrap_or_else(|p| p.into_inner()) {
                let _ = free(h);
            }
        }
        result
    }
}

/// Where the threads of a threaded replay wait to start together: the number arrived, and
/// whether the gate is open.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Counts this thread as arrived and waits until the gate opens.
    fn arrive_and_wait(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits until `threads` threads have arrived, then opens the gate.
    fn open(&self, threads: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.0 < threads {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.1 = true;
        self.changed.notify_all();
    }
}
