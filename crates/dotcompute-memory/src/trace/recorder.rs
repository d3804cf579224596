//! The recorder of one manager's trace: a bounded ring of events, and in front of it one batch
//! of events per recording thread.
//!
//! Recording an event must cost a few nanoseconds (a pooled allocate + drop costs about 12), so
//! a thread writes its events into a batch of its own with plain stores (relaxed atomics: no
//! read-modify-write, no lock) and moves the batch into the ring, under the ring's lock, once it
//! holds [`BATCH`] events. An export reads the ring and every batch's published events under
//! the same lock, so it sees every event recorded so far without stopping the threads.
//!
//! A thread reads the clock at every [`STAMP_EVERY`]-th event (a clock read costs about 27 ns
//! on the project's VMs, more than the rest of an event); the events in between are given
//! times interpolated between the reads around them when the batch is moved into the ring or
//! exported.
//!
//! A batch belongs to one thread at a time (`claimed`); a thread that records for another
//! manager, or exits, gives its batch back, and the next thread to record here takes it over.
//! A thread whose thread-local state is already destroyed (a buffer dropped by a thread-local
//! destructor) records straight into the ring, as thread 0.

use super::{Trace, TraceEvent, TraceOp};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::panic::Location;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Events a thread records before moving them into the ring.
const BATCH: usize = 256;
/// A thread reads the clock at every `STAMP_EVERY`-th event.
const STAMP_EVERY: u32 = 16;
/// The time of an event whose thread did not read the clock for it.
const UNSTAMPED: u64 = u64::MAX;
/// Bit 0 of an event's `meta`: the event is a free.
const FREE_BIT: u64 = 1;

/// One event as the ring keeps it. `meta` is `thread << 32 | site << 1 | op` (site 0: none).
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

/// One event of a batch: written by the batch's thread, read by exports.
#[derive(Default)]
struct Slot {
    t_ns: AtomicU64,
    id: AtomicU64,
    bytes: AtomicU64,
    meta: AtomicU64,
}

/// One thread's events not yet in the ring. The thread that claimed it writes slot `len` and
/// then publishes it by storing `len + 1` (release); exports read the slots below `len`
/// (acquire). Only a move into the ring sets `len` back to 0, and moves and exports both hold
/// the ring's lock, so an export never reads a slot being rewritten.
struct Batch {
    len: AtomicUsize,
    claimed: AtomicBool,
    slots: Box<[Slot]>,
}

impl Batch {
    fn new() -> Self {
        Batch {
            len: AtomicUsize::new(0),
            claimed: AtomicBool::new(true),
            slots: (0..BATCH).map(|_| Slot::default()).collect(),
        }
    }

    /// The first `n` events, as written.
    fn read(&self, n: usize) -> Vec<Packed> {
        self.slots
            .iter()
            .take(n)
            .map(|s| Packed {
                t_ns: s.t_ns.load(Relaxed),
                id: s.id.load(Relaxed),
                bytes: s.bytes.load(Relaxed),
                meta: s.meta.load(Relaxed),
            })
            .collect()
    }
}

/// The events kept, oldest first, and how many were dropped to keep within the capacity.
struct Ring {
    events: VecDeque<Packed>,
    dropped: u64,
}

impl Ring {
    fn push(&mut self, event: Packed, capacity: usize) {
        if self.events.len() >= capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
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
    ring: Mutex<Ring>,
    batches: Mutex<Vec<Arc<Batch>>>,
    sites: Mutex<Sites>,
}

/// What a thread knows of the recorder it last recorded for.
struct Local {
    recorder: u64,
    thread: u32,
    /// Events since the thread last read the clock (0: read it for the next one).
    since_stamp: u32,
    batch: Option<Arc<Batch>>,
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            batch.claimed.store(false, Release);
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> =
        const { RefCell::new(Local { recorder: 0, thread: 0, since_stamp: 0, batch: None }) };
}

/// Thread numbers, handed out in the order threads first record (0 is "exiting").
static NEXT_THREAD: AtomicU32 = AtomicU32::new(1);
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    /// A recorder keeping up to `capacity` events (at least 1) of the device `device`.
    pub(crate) fn new(capacity: usize, device: String) -> Self {
        Recorder {
            key: NEXT_KEY.fetch_add(1, Relaxed),
            started: Instant::now(),
            device,
            capacity: capacity.max(1),
            ring: Mutex::new(Ring { events: VecDeque::new(), dropped: 0 }),
            batches: Mutex::new(Vec::new()),
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
    /// `site` (0: unknown).
    #[inline]
    pub(crate) fn record(&self, op: TraceOp, id: u64, bytes: usize, site: u32) {
        let bytes = bytes as u64;
        let recorded = LOCAL.try_with(|local| match local.try_borrow_mut() {
            Ok(mut local) => self.record_local(&mut local, op, id, bytes, site),
            Err(_) => false,
        });
        if recorded != Ok(true) {
            self.record_shared(op, id, bytes, site);
        }
    }

    #[inline]
    fn record_local(&self, local: &mut Local, op: TraceOp, id: u64, bytes: u64, site: u32) -> bool {
        if local.recorder != self.key {
            self.attach(local);
        }
        let stamp = local.since_stamp == 0;
        local.since_stamp = if local.since_stamp + 1 == STAMP_EVERY { 0 } else { local.since_stamp + 1 };
        let meta = meta(local.thread, site, op);
        let Some(batch) = &local.batch else { return false };
        let i = batch.len.load(Relaxed);
        // A batch is moved into the ring as soon as it is full, so `i` is always in range.
        let Some(slot) = batch.slots.get(i) else { return false };
        slot.t_ns.store(if stamp { self.now() } else { UNSTAMPED }, Relaxed);
        slot.id.store(id, Relaxed);
        slot.bytes.store(bytes, Relaxed);
        slot.meta.store(meta, Relaxed);
        batch.len.store(i + 1, Release);
        if i + 1 == BATCH {
            self.flush(batch);
            local.since_stamp = 0;
        }
        true
    }

    /// Makes this recorder the thread's: gives the previous recorder's batch back and takes a
    /// free batch of this one (or a new one).
    #[cold]
    #[inline(never)]
    fn attach(&self, local: &mut Local) {
        if let Some(old) = local.batch.take() {
            old.claimed.store(false, Release);
        }
        if local.thread == 0 {
            local.thread = NEXT_THREAD.fetch_add(1, Relaxed).max(1);
        }
        let mut batches = lock(&self.batches);
        // Acquire: the previous holder's events (and its `len`) are seen before this thread
        // writes after them.
        let free = batches.iter().find(|b| b.claimed.compare_exchange(false, true, Acquire, Relaxed).is_ok()).cloned();
        let batch = free.unwrap_or_else(|| {
            let batch = Arc::new(Batch::new());
            batches.push(batch.clone());
            batch
        });
        local.batch = Some(batch);
        local.recorder = self.key;
        local.since_stamp = 0;
    }

    /// Moves a full batch into the ring.
    #[cold]
    #[inline(never)]
    fn flush(&self, batch: &Batch) {
        let end = self.now();
        let mut ring = lock(&self.ring);
        let mut events = batch.read(batch.len.load(Relaxed));
        resolve_times(&mut events, Some(end));
        for event in events {
            ring.push(event, self.capacity);
        }
        batch.len.store(0, Release);
    }

    /// Records an event straight into the ring (a thread without thread-local state).
    #[cold]
    #[inline(never)]
    fn record_shared(&self, op: TraceOp, id: u64, bytes: u64, site: u32) {
        let event = Packed { t_ns: self.now(), id, bytes, meta: meta(0, site, op) };
        lock(&self.ring).push(event, self.capacity);
    }

    /// Every event kept: the ring's and those still in threads' batches, by time.
    pub(crate) fn snapshot(&self) -> Trace {
        let ring = lock(&self.ring);
        let mut events: Vec<Packed> = ring.events.iter().copied().collect();
        let mut dropped = ring.dropped;
        for batch in lock(&self.batches).iter() {
            let mut part = batch.read(batch.len.load(Acquire));
            resolve_times(&mut part, None);
            events.extend(part);
        }
        drop(ring);
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

/// Gives every unstamped event of `events` (one batch, in recording order) a time: between the
/// stamps of its thread around it, or, after a thread's last stamp, up to `end` (the time the
/// batch is moved into the ring) or else that last stamp.
fn resolve_times(events: &mut [Packed], end: Option<u64>) {
    let n = events.len();
    let mut p = 0;
    while p < n {
        let q = (p + 1..n).find(|&k| events[k].t_ns != UNSTAMPED).unwrap_or(n);
        // A batch's first event, and each thread's first after taking a batch over, is stamped;
        // should one not be, it takes the next known time.
        if events[p].t_ns == UNSTAMPED {
            events[p].t_ns = events.get(q).map(|e| e.t_ns).or(end).unwrap_or(0);
        }
        let (a, thread) = (events[p].t_ns, events[p].thread());
        let target = match events.get(q) {
            Some(next) if next.thread() == thread => Some((next.t_ns, q - p)),
            Some(_) => None,
            None => end.filter(|_| q - p > 1).map(|end| (end, q - 1 - p)),
        };
        for (step, e) in events[p + 1..q].iter_mut().enumerate() {
            e.t_ns = match target {
                Some((b, span)) => {
                    let gap = u128::from(b.saturating_sub(a)) * (step as u128 + 1) / span as u128;
                    a.saturating_add(u64::try_from(gap).unwrap_or(u64::MAX))
                }
                None => a,
            };
        }
        p = q;
    }
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
        // Another thread's stamp does not bound this thread's events.
        let mut e = [ev(100, 1), ev(UNSTAMPED, 1), ev(50, 2), ev(UNSTAMPED, 2)];
        resolve_times(&mut e, None);
        assert_eq!(e.map(|e| e.t_ns), [100, 100, 50, 50]);
    }

    #[test]
    fn meta_keeps_thread_site_and_op() {
        let m = meta(7, 5, TraceOp::Free);
        assert_eq!((m >> 32, (m & 0xffff_ffff) >> 1, m & FREE_BIT), (7, 5, 1));
    }
}
