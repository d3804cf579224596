//! Stress: four threads doing random buffer operations on one manager while another thread
//! trims and runs maintenance, plus buffers of a second manager whose handle is dropped while
//! the threads still use them. On the cpu backend and on the simulated device.
//!
//! Operations per thread: `DCMEM_STRESS_OPS` (default 20,000; `scripts/long-checks.sh` runs
//! 1,000,000 through `cargo test --test it stress::`). Each thread draws from its own seeded
//! xorshift, so a run is reproducible up to thread interleaving. Every operation must succeed
//! (there is no fault injection here), except `mark_device_dirty` on a host-dirty buffer, which
//! must fail with `ConcurrentModification`; each buffer's contents are compared with a
//! `Vec<u32>` model at random points, so memory handed to two buffers at once, or reused while
//! still in use, shows up as wrong contents.
//!
//! At the end, with every buffer dropped and the threads joined: no live buffer in the
//! registry, balanced statistics (buffers and bytes allocated equal those freed, no active
//! allocation), and after `trim_excess` nothing cached or reserved and, on the simulated
//! device, zero bytes allocated there, for the dropped manager too.

use crate::support::data::words;
use crate::support::rng::Rng;
use dotcompute_memory::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

const THREADS: usize = 4;
/// Buffers each thread holds at most (including the ones of the dropped manager).
const SLOTS: usize = 8;

fn ops_per_thread() -> u64 {
    match std::env::var("DCMEM_STRESS_OPS") {
        Ok(v) => v.trim().replace('_', "").parse().unwrap_or_else(|_| panic!("DCMEM_STRESS_OPS={v:?} is not a count")),
        Err(_) => 20_000,
    }
}

/// A buffer length: mostly small, some medium, a few large, and empty ones.
fn random_len(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => 0,
        1..=5 => 1 + rng.below(64) as usize,
        6 => 256 + rng.below(2048) as usize,
        _ => 20_000 + rng.below(50_000) as usize,
    }
}

/// A buffer and its expected contents (`None` until a whole write makes them known).
struct Held {
    buf: UnifiedBuffer<u32>,
    model: Option<Vec<u32>>,
}

impl Held {
    fn check(&self, what: &str) {
        if let Some(m) = &self.model {
            let got = self.buf.to_vec().unwrap_or_else(|e| panic!("{what}: to_vec failed: {e}"));
            assert!(got == *m, "{what}: contents differ from the model (len {})", m.len());
        }
    }
}

/// One worker: `ops` random operations on its own buffers (some of them from the dropped
/// manager). Returns the number of operations done.
fn worker(mm: MemoryManager, orphans: Vec<UnifiedBuffer<u32>>, seed: u64, ops: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut held: Vec<Option<Held>> = (0..SLOTS).map(|_| None).collect();
    for (i, buf) in orphans.into_iter().enumerate() {
        let model = buf.to_vec().ok();
        held[i % SLOTS] = Some(Held { buf, model });
    }
    for n in 0..ops {
        let what = format!("thread seed {seed}, op {n}");
        let i = rng.below(SLOTS as u64) as usize;
        let op = rng.below(26);
        // Operations that need a buffer skip empty slots by allocating one instead.
        if held[i].is_none() && op > 3 {
            let len = random_len(&mut rng);
            let data = words(len, n as u32);
            let buf = mm.allocate_from(&data).unwrap_or_else(|e| panic!("{what}: allocate_from: {e}"));
            held[i] = Some(Held { buf, model: Some(data) });
            continue;
        }
        match op {
            0 => {
                let len = random_len(&mut rng);
                let buf = mm.allocate::<u32>(len).unwrap_or_else(|e| panic!("{what}: allocate: {e}"));
                held[i] = Some(Held { buf, model: None });
            }
            1 => {
                let len = random_len(&mut rng);
                let buf = mm.allocate_device::<u32>(len).unwrap_or_else(|e| panic!("{what}: allocate_device: {e}"));
                held[i] = Some(Held { buf, model: None });
            }
            2 => {
                let len = random_len(&mut rng);
                let buf = mm.allocate_zeroed::<u32>(len).unwrap_or_else(|e| panic!("{what}: allocate_zeroed: {e}"));
                held[i] = Some(Held { buf, model: Some(vec![0; len]) });
            }
            3 => held[i] = None,
            19 => {
                let h = held[i].as_ref().expect("filled above");
                let buf = h.buf.try_clone().unwrap_or_else(|e| panic!("{what}: try_clone: {e}"));
                let clone = Held { buf, model: h.model.clone() };
                clone.check(&what);
                held[(i + 1) % SLOTS] = Some(clone);
            }
            20 => {
                // Device-to-device copy from another held buffer of the same manager.
                let j = (i + 1 + rng.below(SLOTS as u64 - 1) as usize) % SLOTS;
                if let Err(e) = copy_between(&mut held, i, j, &what) {
                    panic!("{what}: copy_from_buffer failed: {e}");
                }
            }
            _ => {
                let h = held[i].as_mut().expect("filled above");
                let len = h.buf.len();
                let value = rng.next() as u32;
                let r: Result<()> = match op {
                    4 => {
                        let data = words(len, value);
                        h.model = Some(data.clone());
                        h.buf.copy_from(&data)
                    }
                    5 => {
                        h.model = Some(vec![value; len]);
                        h.buf.fill(value)
                    }
                    6 => h.buf.as_mut_slice().map(|s| {
                        if len > 0 {
                            let at = value as usize % len;
                            s[at] = value;
                            if let Some(m) = &mut h.model {
                                m[at] = value;
                            }
                        }
                    }),
                    7 => h.buf.as_slice().map(|s| {
                        if let (Some(m), true) = (&h.model, len > 0) {
                            let at = value as usize % len;
                            assert_eq!(s[at], m[at], "{what}: as_slice element {at}");
                        }
                    }),
                    8 => {
                        h.check(&what);
                        Ok(())
                    }
                    9 => h.buf.synchronize(),
                    10 => h.buf.ensure_on_device(),
                    11 => h.buf.ensure_on_host(),
                    12 => {
                        let dirty = h.buf.state() == BufferState::HostDirty;
                        match h.buf.mark_device_dirty() {
                            Err(Error::ConcurrentModification { .. }) if dirty => Ok(()),
                            other => other,
                        }
                    }
                    13 => h.buf.release_device_part(),
                    14 => {
                        let data = words(len, value);
                        h.model = Some(data.clone());
                        h.buf.upload(&data)
                    }
                    15 => {
                        let (a, b) = (value as usize % (len + 1), (value >> 16) as usize % (len + 1));
                        let (a, b) = (a.min(b), a.max(b));
                        let data = words(b - a, value);
                        if let Some(m) = &mut h.model {
                            m[a..b].copy_from_slice(&data);
                        }
                        h.buf.slice_mut(a..b).and_then(|mut v| v.copy_from(&data))
                    }
                    16 => {
                        let data = words(len, value);
                        h.model = Some(data.clone());
                        pollster::block_on(h.buf.copy_from_async(&data))
                    }
                    17 => {
                        let mut out = vec![0; len];
                        let r = pollster::block_on(h.buf.copy_to_async(&mut out));
                        if let (Ok(()), Some(m)) = (&r, &h.model) {
                            assert!(out == *m, "{what}: copy_to_async contents");
                        }
                        r
                    }
                    // Dropped before it is polled: the next call on the buffer settles it.
                    18 => {
                        drop(h.buf.synchronize_async());
                        Ok(())
                    }
                    21 => mm.trim_excess().map(drop),
                    22 => {
                        mm.run_maintenance();
                        Ok(())
                    }
                    23 => {
                        let clone = h.buf.try_clone().unwrap_or_else(|e| panic!("{what}: try_clone: {e}"));
                        // Moves through another thread and back.
                        let clone = thread::spawn(move || clone).join().expect("thread");
                        clone.to_vec().map(|v| {
                            if let Some(m) = &h.model {
                                assert!(v == *m, "{what}: clone sent through a thread");
                            }
                        })
                    }
                    _ => {
                        h.check(&what);
                        Ok(())
                    }
                };
                if let Err(e) = r {
                    panic!("{what}: operation {op} on a buffer of {len} failed: {e}");
                }
            }
        }
    }
    for h in held.iter().flatten() {
        h.check("final");
    }
    ops
}

/// `held[dst].copy_from_buffer(&held[src])` when both exist, belong to one manager and have
/// equal lengths; otherwise nothing.
fn copy_between(held: &mut [Option<Held>], dst: usize, src: usize, what: &str) -> Result<()> {
    if dst == src {
        return Ok(());
    }
    let (lo, hi) = held.split_at_mut(dst.max(src));
    let (d, s) = if dst < src { (&mut lo[dst], &hi[0]) } else { (&mut hi[0], &lo[src]) };
    let (Some(d), Some(s)) = (d.as_mut(), s.as_ref()) else { return Ok(()) };
    if d.buf.len() != s.buf.len() || d.buf.manager_id() != s.buf.manager_id() {
        return Ok(());
    }
    d.buf.copy_from_buffer(&s.buf)?;
    d.model = s.model.clone();
    d.check(what);
    Ok(())
}

fn options() -> ManagerOptions {
    ManagerOptions::default()
        .with_maintenance_interval(Some(Duration::from_millis(2)))
        .with_track_allocations(true)
        .with_max_pool_bytes(8 << 20)
}

/// Runs the stress on managers made by `make` (the second one is dropped early); returns the
/// operations done. `device_used` reports the bytes each backend still has allocated.
fn stress(name: &str, make: impl Fn() -> (MemoryManager, Box<dyn Fn() -> Option<usize> + Send>)) -> u64 {
    let ops = ops_per_thread();
    let (mm, used) = make();
    let (doomed, doomed_used) = make();
    // Buffers of the doomed manager, handed to the workers; the manager itself is dropped once
    // they run.
    let mut orphans: Vec<Vec<UnifiedBuffer<u32>>> = Vec::new();
    for t in 0..THREADS {
        let mut mine = Vec::new();
        for k in 0..3 {
            let len = [0, 16, 3000][k];
            mine.push(doomed.allocate_from(&words(len, (t * 10 + k) as u32)).expect("allocate from doomed"));
        }
        orphans.push(mine);
    }
    let start = Arc::new(Barrier::new(THREADS + 2));
    let done = Arc::new(AtomicBool::new(false));
    let janitor = {
        let (mm, start, done) = (mm.clone(), start.clone(), done.clone());
        thread::spawn(move || {
            start.wait();
            let mut passes = 0u64;
            loop {
                mm.trim_excess().expect("trim_excess");
                mm.run_maintenance();
                let _ = mm.statistics();
                let _ = mm.memory_snapshot();
                passes += 1;
                if done.load(Ordering::Relaxed) {
                    return passes;
                }
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = orphans
        .into_iter()
        .enumerate()
        .map(|(t, mine)| {
            let (mm, start) = (mm.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                worker(mm, mine, 0x5eed_0000 + t as u64, ops)
            })
        })
        .collect();
    start.wait();
    drop(doomed);
    let mut total = 0;
    for w in workers {
        total += w.join().unwrap_or_else(|_| panic!("{name}: a worker panicked"));
    }
    done.store(true, Ordering::Relaxed);
    let passes = janitor.join().unwrap_or_else(|_| panic!("{name}: the trimming thread panicked"));

    let s = mm.statistics();
    assert_eq!(mm.diagnostics().live_count(), 0, "{name}: {}", mm.diagnostics().leak_report());
    assert_eq!((s.active_allocations, s.active_bytes), (0, 0), "{name}: {s:?}");
    assert_eq!(s.buffers_allocated, s.buffers_freed, "{name}: {s:?}");
    assert_eq!(s.total_bytes_allocated, s.total_bytes_freed, "{name}: {s:?}");
    assert!(s.buffers_allocated >= total / 20, "{name}: only {} buffers for {total} operations", s.buffers_allocated);
    mm.trim_excess().expect("trim_excess");
    let s = mm.statistics();
    assert_eq!((s.cached_bytes, s.reserved_bytes, s.device_segments), (0, 0, 0), "{name}: after trim_excess: {s:?}");
    if let Some(bytes) = used() {
        assert_eq!(bytes, 0, "{name}: device bytes held after trim_excess");
    }
    drop(mm);
    // The workers have exited, so the dropped manager's last buffers and parked blocks are gone.
    if let Some(bytes) = doomed_used() {
        assert_eq!(bytes, 0, "{name}: device bytes of the dropped manager still allocated");
    }
    println!(
        "stress {name}: {total} operations on {THREADS} threads, {} buffers, {passes} trim passes alongside",
        s.buffers_allocated
    );
    total
}

#[test]
fn cpu_stress() {
    let total = stress("cpu", || {
        let mm = MemoryManager::with_backend(CpuBackend::new(), options()).expect("cpu manager");
        (mm, Box::new(|| None))
    });
    assert_eq!(total, THREADS as u64 * ops_per_thread());
}

#[test]
fn sim_stress() {
    let total = stress("sim", || {
        let sim = Arc::new(SimBackend::new(SimOptions::default()));
        let mm = MemoryManager::with_shared_backend(sim.clone(), options()).expect("sim manager");
        (mm, Box::new(move || Some(sim.used())))
    });
    assert_eq!(total, THREADS as u64 * ops_per_thread());
}
