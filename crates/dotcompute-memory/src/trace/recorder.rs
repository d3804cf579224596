//! The recorder of one manager's trace: per recording thread a batch of events, and a ring of
//! full batches behind them.
//!
//! Recording an event must cost a few nanoseconds (a pooled allocate + drop costs about 12), so
//! a thread writes its events into a batch of its own with plain stores (relaxed atomics: no
//! read-modify-write, no lock). A full batch ([`BATCH`] events) is moved into the ring whole,
//! under the recorder's lock, and the thread goes on in an empty one (the ring's oldest batch,
//! once the ring holds the capacity, so a recording thread allocates nothing then). An export
//! reads the ring and every batch's published events under the same lock, so it sees every
//! event recorded so far without stopping the threads.
//!
//! A thread reads the clock for every [`STAMP_EVERY`]-th slot of its batch (a clock read costs
//! about 27 ns on the project's VMs, several times the rest of an event); the events in
//! between are given times interpolated between the reads around them when the trace is
//! exported.
//!
//! A batch belongs to one thread at a time (`claimed`); a thread that records for another
//! manager, or exits, gives its batch back, and the next thread to record here takes it over.
//! A thread whose thread-local state is already destroyed (a buffer dropped by a thread-local
//! destructor) records into a batch shared under the lock, as thread 0.

use super::{Trace, TraceEvent, TraceOp};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::mem::ManuallyDrop;
use std::panic::Location;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Events a batch holds.
const BATCH: usize = 1024;
/// A thread reads the clock for every `STAMP_EVERY`-th slot of a batch.
const STAMP_EVERY: usize = 64;
/// The time of an event whose thread did not read the clock for it.
const UNSTAMPED: u64 = u64::MAX;
/// Bit 0 of an event's `meta`: the event is a free.
const FREE_BIT: u64 = 1;

/// One event as exports read it. `meta` is `thread << 32 | site << 1 | op` (site 0: none).
#[derive(Clone, Copy, Debug)]
struct Packed {
    t_ns: u64,
    id: u64,
    bytes: u64,
    meta: u64,
}

impl Packed {
    fn thread(&self) -> u64 {
        self.meta >> 32
    }
}

fn meta(thread: u32, site: u32, op: TraceOp) -> u64 {
    let op = match op {
        TraceOp::Alloc => 0,
        TraceOp::Free => FREE_BIT,
    };
    (u64::from(thread) << 32) | (u64::from(site & 0x7fff_ffff) << 1) | op
}

/// One event of a batch, but its time: written by the batch's thread, read by exports.
#[derive(Default)]
struct Slot {
    id: AtomicU64,
    bytes: AtomicU64,
    meta: AtomicU64,
}

/// Up to [`BATCH`] events. The thread that claimed it writes slot `len` and then publishes it
/// by storing `len + 1` (release); exports read the slots below `len` (acquire). A full batch
/// is never written again until the ring lets it go and it is handed out empty (under the
/// lock, which exports hold too).
struct Batch {
    len: AtomicUsize,
    claimed: AtomicBool,
    /// When the batch was moved into the ring ([`UNSTAMPED`] before): the upper bound of the
    /// times of its last events.
    end: AtomicU64,
    /// The time of slot `k * STAMP_EVERY`, written with it.
    stamps: Box<[AtomicU64]>,
    slots: Box<[Slot]>,
}

impl Batch {
    /// An empty batch, claimed by the thread it is made for.
    fn new() -> Arc<Self> {
        Arc::new(Batch {
            len: AtomicUsize::new(0),
            claimed: AtomicBool::new(true),
            end: AtomicU64::new(UNSTAMPED),
            stamps: (0..BATCH / STAMP_EVERY).map(|_| AtomicU64::new(UNSTAMPED)).collect(),
            slots: (0..BATCH).map(|_| Slot::default()).collect(),
        })
    }

    /// The published events with their times resolved, appended to `out`.
    fn read_into(&self, out: &mut Vec<Packed>) {
        let start = out.len();
        let n = self.len.load(Acquire).min(BATCH);
        out.extend(self.slots.iter().take(n).enumerate().map(|(k, slot)| {
            let stamp = k.is_multiple_of(STAMP_EVERY).then(|| self.stamps.get(k / STAMP_EVERY)).flatten();
            Packed {
                t_ns: stamp.map_or(UNSTAMPED, |s| s.load(Relaxed)),
                id: slot.id.load(Relaxed),
                bytes: slot.bytes.load(Relaxed),
                meta: slot.meta.load(Relaxed),
            }
        }));
        let end = self.end.load(Relaxed);
        resolve_times(&mut out[start..], (end != UNSTAMPED).then_some(end));
    }
}

/// What the recorder's lock guards.
struct State {
    /// Full batches, oldest first.
    ring: VecDeque<Arc<Batch>>,
    /// Events in `ring`.
    ring_events: usize,
    /// Batches being filled: claimed by a thread, given back by one, or `shared`.
    active: Vec<Arc<Batch>>,
    /// The batch of threads without thread-local state, written under the lock.
    shared: Option<Arc<Batch>>,
    /// Events the ring let go.
    dropped: u64,
}

impl State {
    /// Moves the full batch `full` into the ring, in `active`'s place of `full`, and returns
    /// the empty batch that takes that place: the ring's oldest when the rest of the ring
    /// still holds `capacity` events, else a new one.
    fn retire(&mut self, full: Arc<Batch>, capacity: usize) -> Arc<Batch> {
        let at = self.active.iter().position(|b| Arc::ptr_eq(b, &full));
        self.ring_events += full.len.load(Relaxed);
        self.ring.push_back(full);
        let mut reuse = None;
        while let Some(oldest) = self.ring.front() {
            let len = oldest.len.load(Relaxed);
            if self.ring_events - len < capacity {
                break;
            }
            self.ring_events -= len;
            self.dropped += len as u64;
            reuse = self.ring.pop_front();
        }
        // Nothing else holds a batch the ring let go (threads hold only their active batch).
        let fresh = match reuse.filter(|b| Arc::strong_count(b) == 1) {
            Some(b) => {
                b.len.store(0, Relaxed);
                b.end.store(UNSTAMPED, Relaxed);
                b.claimed.store(true, Relaxed);
                b
            }
            None => Batch::new(),
        };
        match at {
            Some(i) => self.active[i] = fresh.clone(),
            None => self.active.push(fresh.clone()),
        }
        fresh
    }
}

/// Allocation sites seen, numbered from 1 in the order they were first recorded.
#[derive(Default)]
struct Sites {
    index: HashMap<&'static Location<'static>, u32>,
    list: Vec<&'static Location<'static>>,
}

/// The trace of one manager (see the module docs).
pub(crate) struct Recorder {
    /// Tells this recorder apart in threads' state (never reused in a process).
    key: u64,
    started: Instant,
    device: String,
    capacity: usize,
    state: Mutex<State>,
    sites: Mutex<Sites>,
}

/// What a thread knows of the recorder it last recorded for. It has no drop glue, so the
/// thread-local that holds it is a plain load on the hot path; [`ExitRelease`] gives its batch
/// back when the thread exits.
struct Local {
    recorder: u64,
    thread: u32,
    batch: ManuallyDrop<Option<Arc<Batch>>>,
}

impl Local {
    /// Gives the thread's batch back to its recorder (and drops this thread's reference).
    fn release(&mut self) {
        if let Some(batch) = self.batch.take() {
            batch.claimed.store(false, Release);
        }
        self.recorder = 0;
    }
}

/// Gives the thread's batch back when thread-local destructors reach it; registered by
/// [`Recorder::attach`] before the thread takes a batch.
struct ExitRelease;

impl Drop for ExitRelease {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            if let Ok(mut local) = local.try_borrow_mut() {
                local.release();
            }
        });
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { recorder: 0, thread: 0, batch: ManuallyDrop::new(None) })
    };
    static EXIT_RELEASE: ExitRelease = const { ExitRelease };
}

/// Thread numbers, handed out in the order threads first record (0 is "exiting").
static NEXT_THREAD: AtomicU32 = AtomicU32::new(1);
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    /// A recorder keeping at least the last `capacity` events (at least 1) of the device
    /// `device`.
    pub(crate) fn new(capacity: usize, device: String) -> Self {
        Recorder {
            key: NEXT_KEY.fetch_add(1, Relaxed),
            started: Instant::now(),
            device,
            capacity: capacity.max(1),
            state: Mutex::new(State {
                ring: VecDeque::new(),
                ring_events: 0,
                active: Vec::new(),
                shared: None,
                dropped: 0,
            }),
            sites: Mutex::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// The number of `location` in this trace's site list (1-based), adding it if new.
    #[cold]
    pub(crate) fn site(&self, location: &'static Location<'static>) -> u32 {
        let mut sites = lock(&self.sites);
        if let Some(&n) = sites.index.get(location) {
            return n;
        }
        let Ok(n) = u32::try_from(sites.list.len() + 1) else { return 0 };
        if n > 0x7fff_ffff {
            return 0;
        }
        sites.list.push(location);
        sites.index.insert(location, n);
        n
    }

    /// Records one event: `op` of the buffer `id` of `bytes` bytes, allocated at site number
    /// `site` (0: unknown). The common case (this thread's batch, a slot whose time is not read,
    /// not the last) is a few stores; every other case is one tail call to
    /// [`Recorder::record_slow`], so this path saves no registers.
    #[inline(always)]
    pub(crate) fn record(&self, op: TraceOp, id: u64, bytes: usize, site: u32) {
        let bytes = bytes as u64;
        // `move`: the closure holds the values, not references to them (one load each in
        // `try_with`, which is not always inlined, instead of two).
        let recorded = LOCAL.try_with(move |local| match local.try_borrow_mut() {
            Ok(local) => self.record_fast(&local, op, id, bytes, site),
            Err(_) => false,
        });
        if recorded != Ok(true) {
            self.record_slow(op, id, bytes, site);
        }
    }

    #[inline(always)]
    fn record_fast(&self, local: &Local, op: TraceOp, id: u64, bytes: u64, site: u32) -> bool {
        let (true, Some(batch)) = (local.recorder == self.key, &*local.batch) else { return false };
        let i = batch.len.load(Relaxed);
        // A batch is moved into the ring as soon as it is full, so `i` is always in range.
        let (false, false, Some(slot)) = (i.is_multiple_of(STAMP_EVERY), i + 1 == BATCH, batch.slots.get(i)) else {
            return false;
        };
        slot.id.store(id, Relaxed);
        slot.bytes.store(bytes, Relaxed);
        slot.meta.store(meta(local.thread, site, op), Relaxed);
        batch.len.store(i + 1, Release);
        true
    }

    /// [`Recorder::record`] when the thread has no batch of this recorder yet, or the slot is
    /// one whose time is read, or the last of its batch; or, without thread-local state, into
    /// the shared batch.
    #[cold]
    #[inline(never)]
    fn record_slow(&self, op: TraceOp, id: u64, bytes: u64, site: u32) {
        let recorded = LOCAL.try_with(|local| match local.try_borrow_mut() {
            Ok(mut local) => self.record_local(&mut local, op, id, bytes, site),
            Err(_) => false,
        });
        if recorded != Ok(true) {
            self.record_shared(op, id, bytes, site);
        }
    }

    fn record_local(&self, local: &mut Local, op: TraceOp, id: u64, bytes: u64, site: u32) -> bool {
        if local.recorder != self.key {
            self.attach(local);
        }
        let meta = meta(local.thread, site, op);
        let Some(batch) = &*local.batch else { return false };
        let i = batch.len.load(Relaxed);
        let Some(slot) = batch.slots.get(i) else { return false };
        if i.is_multiple_of(STAMP_EVERY) {
            if let Some(stamp) = batch.stamps.get(i / STAMP_EVERY) {
                stamp.store(self.now(), Relaxed);
            }
        }
        slot.id.store(id, Relaxed);
        slot.bytes.store(bytes, Relaxed);
        slot.meta.store(meta, Relaxed);
        batch.len.store(i + 1, Release);
        if i + 1 == BATCH {
            self.flush(local);
        }
        true
    }

    /// Makes this recorder the thread's: gives the previous recorder's batch back and takes a
    /// batch of this one that no thread holds (or a new one).
    #[cold]
    #[inline(never)]
    fn attach(&self, local: &mut Local) {
        local.release();
        // A thread whose destructors have begun takes no batch (nothing would give it back).
        if EXIT_RELEASE.try_with(|_| ()).is_err() {
            return;
        }
        if local.thread == 0 {
            local.thread = NEXT_THREAD.fetch_add(1, Relaxed).max(1);
        }
        let mut state = lock(&self.state);
        // Acquire: the previous holder's events (and its `len`) are seen before this thread
        // writes after them.
        let free =
            state.active.iter().find(|b| b.claimed.compare_exchange(false, true, Acquire, Relaxed).is_ok()).cloned();
        let batch = free.unwrap_or_else(|| {
            let batch = Batch::new();
            state.active.push(batch.clone());
            batch
        });
        drop(state);
        *local.batch = Some(batch);
        local.recorder = self.key;
    }

    /// Moves the thread's full batch into the ring and gives the thread an empty one.
    #[cold]
    #[inline(never)]
    fn flush(&self, local: &mut Local) {
        let Some(full) = local.batch.take() else { return };
        full.end.store(self.now(), Relaxed);
        let fresh = lock(&self.state).retire(full, self.capacity);
        *local.batch = Some(fresh);
    }

    /// Records an event into the shared batch, under the lock (a thread without thread-local
    /// state).
    #[cold]
    #[inline(never)]
    fn record_shared(&self, op: TraceOp, id: u64, bytes: u64, site: u32) {
        let t_ns = self.now();
        let mut state = lock(&self.state);
        let batch = match &state.shared {
            Some(b) => b.clone(),
            None => {
                let b = Batch::new();
                state.active.push(b.clone());
                state.shared = Some(b.clone());
                b
            }
        };
        let i = batch.len.load(Relaxed);
        if let Some(slot) = batch.slots.get(i) {
            if let Some(stamp) = batch.stamps.get(i / STAMP_EVERY).filter(|_| i.is_multiple_of(STAMP_EVERY)) {
                stamp.store(t_ns, Relaxed);
            }
            slot.id.store(id, Relaxed);
            slot.bytes.store(bytes, Relaxed);
            slot.meta.store(meta(0, site, op), Relaxed);
            batch.len.store(i + 1, Release);
        }
        if i + 1 >= BATCH {
            batch.end.store(t_ns, Relaxed);
            let fresh = state.retire(batch, self.capacity);
            state.shared = Some(fresh);
        }
    }

    /// Every event kept: the ring's and those in batches still being filled, by time.
    pub(crate) fn snapshot(&self) -> Trace {
        let state = lock(&self.state);
        let mut events = Vec::with_capacity(state.ring_events + state.active.len() * BATCH);
        for batch in state.ring.iter().chain(&state.active) {
            batch.read_into(&mut events);
        }
        let mut dropped = state.dropped;
        drop(state);
        // Stable: each thread's events keep their order (its times never decrease).
        events.sort_by_key(|e| e.t_ns);
        if events.len() > self.capacity {
            let extra = events.len() - self.capacity;
            events.drain(..extra);
            dropped += extra as u64;
        }
        let sites: Vec<String> = lock(&self.sites).list.iter().map(|l| format!("{}:{}", l.file(), l.line())).collect();
        let events = events
            .into_iter()
            .map(|p| TraceEvent {
                t_ns: p.t_ns,
                thread: p.thread(),
                op: if p.meta & FREE_BIT != 0 { TraceOp::Free } else { TraceOp::Alloc },
                id: p.id,
                bytes: p.bytes,
                device: Some(self.device.clone()),
                site: usize::try_from((p.meta & 0xffff_ffff) >> 1)
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|n| sites.get(n).cloned()),
            })
            .collect();
        Trace { events, dropped, capacity: self.capacity }
    }
}

/// Gives every unstamped event of `events` (one batch, in recording order) a time from the
/// stamps of its own thread in the batch: the first stamp for the events before it,
/// interpolated between two stamps, and after the last one up to `end` (when the batch was
/// moved into the ring, which its last thread did) or else that last stamp. A thread with no
/// stamp in the batch takes the time of the event before it (or after it) in the batch.
fn resolve_times(events: &mut [Packed], end: Option<u64>) {
    let mut threads: Vec<u64> = Vec::new();
    for e in events.iter() {
        if !threads.contains(&e.thread()) {
            threads.push(e.thread());
        }
    }
    let last = events.last().map(Packed::thread);
    for &thread in &threads {
        let run: Vec<usize> = (0..events.len()).filter(|&k| events[k].thread() == thread).collect();
        resolve_run(events, &run, end.filter(|_| last == Some(thread)));
    }
    // Threads without a stamp of their own.
    for k in 0..events.len() {
        if events[k].t_ns == UNSTAMPED {
            let near = events[..k].iter().rev().chain(&events[k + 1..]).map(|e| e.t_ns).find(|&t| t != UNSTAMPED);
            events[k].t_ns = near.or(end).unwrap_or(0);
        }
    }
}

/// [`resolve_times`] for the events at `run`, one thread's.
fn resolve_run(events: &mut [Packed], run: &[usize], end: Option<u64>) {
    let stamped: Vec<usize> = (0..run.len()).filter(|&j| events[run[j]].t_ns != UNSTAMPED).collect();
    let (Some(&first), Some(&last)) = (stamped.first(), stamped.last()) else { return };
    let at = |events: &[Packed], j: usize| events[run[j]].t_ns;
    let t0 = at(events, first);
    for &k in &run[..first] {
        events[k].t_ns = t0;
    }
    for pair in stamped.windows(2) {
        let (p, q) = (pair[0], pair[1]);
        let (a, b) = (at(events, p), at(events, q));
        for j in p + 1..q {
            events[run[j]].t_ns = between(a, b, j - p, q - p);
        }
    }
    let a = at(events, last);
    let tail = run.len() - 1 - last;
    for j in last + 1..run.len() {
        events[run[j]].t_ns = match end {
            Some(b) => between(a, b, j - last, tail),
            None => a,
        };
    }
}

/// The time `step / span` of the way from `a` to `b`.
fn between(a: u64, b: u64, step: usize, span: usize) -> u64 {
    let (gap, step, span) = (b.saturating_sub(a), step as u64, span.max(1) as u64);
    // Gaps below 2^55 ns (over a year) take the fast path.
    let part = match gap.checked_mul(step) {
        Some(g) => g / span,
        None => (u128::from(gap) * u128::from(step) / u128::from(span)) as u64,
    };
    a.saturating_add(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, thread: u32) -> Packed {
        Packed { t_ns: t, id: 0, bytes: 0, meta: meta(thread, 0, TraceOp::Alloc) }
    }

    #[test]
    fn unstamped_events_are_interpolated_within_their_thread() {
        let mut e = [ev(100, 1), ev(UNSTAMPED, 1), ev(UNSTAMPED, 1), ev(130, 1), ev(UNSTAMPED, 1)];
        resolve_times(&mut e, None);
        assert_eq!(e.map(|e| e.t_ns), [100, 110, 120, 130, 130]);
        let mut e = [ev(100, 1), ev(UNSTAMPED, 1), ev(UNSTAMPED, 1)];
        resolve_times(&mut e, Some(300));
        assert_eq!(e.map(|e| e.t_ns), [100, 200, 300]);
        // A thread that took the batch over mid-way: its events before its first stamp take
        // that stamp, and only the last thread's tail runs up to the end.
        let mut e = [ev(100, 1), ev(UNSTAMPED, 1), ev(UNSTAMPED, 2), ev(500, 2), ev(UNSTAMPED, 2)];
        resolve_times(&mut e, Some(700));
        assert_eq!(e.map(|e| e.t_ns), [100, 100, 500, 500, 700]);
        // A thread with no stamp of its own takes its neighbour's time.
        let mut e = [ev(100, 1), ev(UNSTAMPED, 2)];
        resolve_times(&mut e, None);
        assert_eq!(e.map(|e| e.t_ns), [100, 100]);
    }

    #[test]
    fn meta_keeps_thread_site_and_op() {
        let m = meta(7, 5, TraceOp::Free);
        assert_eq!((m >> 32, (m & 0xffff_ffff) >> 1, m & FREE_BIT), (7, 5, 1));
    }
}
