//! The `*_async` forms: completion, several transfers in flight, futures dropped early, and
//! futures that really wait (wake-ups, not busy completion).

use crate::support::{bytes, in_state, options, same, Ctx, STATES};
use dotcompute_memory::BufferState::*;
use dotcompute_memory::*;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

/// Wakes a parked thread and counts wake-ups.
struct CountingWaker {
    thread: Thread,
    wakes: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// A minimal executor that reports how many times it polled and was woken. It only polls again
/// after a wake-up (with a generous timeout that fails the test), so a future that returns
/// `Pending` without arranging a wake-up is caught.
fn block_on_counting<F: Future>(fut: F) -> (F::Output, usize, usize) {
    let state = Arc::new(CountingWaker { thread: std::thread::current(), wakes: AtomicUsize::new(0) });
    let waker = Waker::from(state.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return (out, polls, state.wakes.load(Ordering::SeqCst));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while state.wakes.load(Ordering::SeqCst) < polls {
            assert!(std::time::Instant::now() < deadline, "a pending future was never woken");
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

pub fn async_forms_complete_from_every_state(ctx: &Ctx) {
    for n in [1usize, 1000, 300_001] {
        let data = bytes(n, 3);
        let fresh = bytes(n, 99);
        for from in STATES {
            let at = format!("{} {n} bytes from {from:?}", ctx.at());
            let mut b = in_state(&ctx.mm, &data, from);
            let mut out = vec![0u8; n];
            // `block_on_counting` fails the case if a pending future is never woken.
            let (r, _, _) = block_on_counting(b.copy_to_async(&mut out));
            r.unwrap();
            same(&at, &out, &data);
            assert_eq!(b.state(), if matches!(from, DeviceDirty | DeviceOnly) { Synchronized } else { from }, "{at}");
            let (r, _, _) = block_on_counting(b.copy_from_async(&fresh));
            r.unwrap();
            assert_eq!(b.state(), Synchronized, "{at}");
            b.mark_device_dirty().unwrap();
            let (r, _, _) = block_on_counting(b.synchronize_async());
            r.unwrap();
            assert_eq!(b.state(), Synchronized, "{at}");
            same(&at, b.as_slice().unwrap(), &fresh);
        }
    }
}

pub fn many_transfers_in_flight(ctx: &Ctx) {
    let n = 100_000;
    let data: Vec<Vec<u32>> = (0..8).map(|k| (0..n as u32).map(|i| i ^ (k << 24)).collect()).collect();
    let mut bufs: Vec<UnifiedBuffer<u32>> = (0..8).map(|_| ctx.mm.allocate::<u32>(n).unwrap()).collect();
    {
        // Start all uploads, then await them in reverse order.
        let futures: Vec<_> = bufs.iter_mut().zip(&data).map(|(b, d)| b.copy_from_async(d)).collect();
        for f in futures.into_iter().rev() {
            pollster::block_on(f).unwrap();
        }
    }
    for b in &mut bufs {
        assert_eq!(b.state(), Synchronized, "{}", ctx.at());
        b.mark_device_dirty().unwrap();
    }
    let mut outs = vec![vec![0u32; n]; 8];
    {
        let futures: Vec<_> = bufs.iter_mut().zip(outs.iter_mut()).map(|(b, o)| b.copy_to_async(o)).collect();
        for f in futures {
            pollster::block_on(f).unwrap();
        }
    }
    for (k, (o, d)) in outs.iter().zip(&data).enumerate() {
        same(&format!("{} buffer {k}", ctx.at()), o, d);
    }
}

pub fn dropped_futures_still_complete(ctx: &Ctx) {
    let data = bytes(50_000, 5);
    let mut b = ctx.mm.allocate::<u8>(data.len()).unwrap();
    // An upload whose future is dropped unpolled still happens; the next operation settles it.
    drop(b.copy_from_async(&data));
    same(&ctx.at(), &b.to_vec().unwrap(), &data);
    b.synchronize().unwrap();
    assert_eq!(b.state(), Synchronized, "{}", ctx.at());
    // The same for a download whose output buffer is never written (its future was dropped).
    b.mark_device_dirty().unwrap();
    let mut out = vec![0u8; data.len()];
    drop(b.copy_to_async(&mut out));
    same(&ctx.at(), b.as_slice().unwrap(), &data);
    assert_eq!(b.state(), Synchronized, "{}", ctx.at());
    // A buffer dropped with a transfer in flight returns its memory only after it finished:
    // the next buffer gets that device memory from the pool and writes other bytes into it,
    // which a late write of the dropped transfer would overwrite.
    let mut c = ctx.mm.allocate::<u8>(data.len()).unwrap();
    drop(c.copy_from_async(&data));
    drop(c);
    let other = bytes(data.len(), 6);
    assert_ne!(other, data);
    let mut again = ctx.mm.allocate::<u8>(data.len()).unwrap();
    again.upload(&other).unwrap();
    same(&ctx.at(), &again.to_vec().unwrap(), &other);
}

pub fn futures_really_wait_on_a_slow_device(ctx: &Ctx) {
    if ctx.name == "sim" {
        // A simulated device whose completions are held: the future must stay pending without
        // being woken, and be woken exactly by the release.
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = MemoryManager::with_shared_backend(sim.clone(), options()).unwrap();
        let data: Vec<u64> = (0..1000).collect();
        let mut b = mm.allocate::<u64>(1000).unwrap();
        let counter = Arc::new(CountingWaker { thread: std::thread::current(), wakes: AtomicUsize::new(0) });
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let wakes = || counter.wakes.load(Ordering::SeqCst);
        {
            let hold = sim.hold_completions();
            let mut fut = pin!(b.copy_from_async(&data));
            assert!(fut.as_mut().poll(&mut cx).is_pending(), "{}: an upload completed while held", ctx.at());
            assert!(fut.as_mut().poll(&mut cx).is_pending(), "{}: an upload completed while held", ctx.at());
            assert_eq!(wakes(), 0, "{}: woken while the transfer was held", ctx.at());
            drop(hold);
            assert!(wakes() >= 1, "{}: the completion woke nobody", ctx.at());
            assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(()))), "{}", ctx.at());
        }
        assert_eq!(b.state(), Synchronized);
        b.mark_device_dirty().unwrap();
        let mut out = vec![0u64; 1000];
        {
            let hold = sim.hold_completions();
            let before = wakes();
            let mut fut = pin!(b.copy_to_async(&mut out));
            assert!(fut.as_mut().poll(&mut cx).is_pending(), "{}: a download completed while held", ctx.at());
            assert_eq!(wakes(), before, "{}: woken while the transfer was held", ctx.at());
            drop(hold);
            assert!(wakes() > before, "{}: the completion woke nobody", ctx.at());
            assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(()))), "{}", ctx.at());
        }
        assert_eq!(out, data);
        drop(b);
        assert_eq!(mm.statistics().active_allocations, 0);
    }
    // On every backend: a large transfer driven by the counting executor completes (which
    // fails the case if a pending future is never woken).
    let data = bytes(16 << 20, 11);
    let mut b = ctx.mm.allocate::<u8>(data.len()).unwrap();
    let (r, _, _) = block_on_counting(b.copy_from_async(&data));
    r.unwrap();
    b.mark_device_dirty().unwrap();
    let mut out = vec![0u8; data.len()];
    let (r, polls, _) = block_on_counting(b.copy_to_async(&mut out));
    r.unwrap();
    same(&ctx.at(), &out, &data);
    eprintln!("[{}] 16 MiB download completed after {polls} poll(s)", ctx.name);
}
