//! Fault sweeps: every buffer operation and every transfer-engine path, run on a simulated
//! device with one fault injected at every backend operation index (`fail_nth` = 1, 2, …),
//! at enqueue and at completion, transient and permanent.
//!
//! Each scenario is a list of steps on two buffers, mirrored by a reference model (one `Vec`
//! per buffer). After every step:
//! - a step that returned `Ok` is applied to the model; one that returned `Err` must have left
//!   `state()` and `epochs()` of every buffer as they were;
//! - every buffer's current data equals the model, and so does its device part whenever the
//!   state says the device part is current (read through a device-to-device copy into a
//!   scratch buffer), so a part marked current that does not hold the data is caught.
//!
//! Device regions come back from the pool holding another buffer's data (each world first
//! leaves a pattern in the pool), so a stale region claimed current reads as garbage.

use crate::support::managers::quiet;
use dotcompute_memory::*;
use std::sync::Arc;

const LEN: usize = if cfg!(miri) { 64 } else { 4096 };
/// Small chunks, so engine transfers of `LEN` elements are pipelined in several chunks.
const CHUNK: usize = LEN;
/// Elements of the ranged copies.
const PART: usize = LEN / 8;

struct World {
    sim: Arc<SimBackend>,
    mm: MemoryManager,
    bufs: Vec<UnifiedBuffer<u32>>,
    model: Vec<Vec<u32>>,
    plan: String,
    steps: usize,
}

fn pattern(seed: u32) -> Vec<u32> {
    (0..LEN as u32).map(|i| seed.wrapping_mul(0x9E37_79B9) ^ i).collect()
}

impl World {
    fn new(faults: FaultPlan) -> Self {
        let plan = format!("{faults:?}");
        let sim = Arc::new(SimBackend::new(SimOptions::default().with_faults(faults)));
        let backend: Arc<dyn Backend> = sim.clone();
        let mm = MemoryManager::with_shared_backend(backend, quiet()).expect("sim manager");
        // Leaves device regions holding a pattern in the pool (faults here are fine: the
        // regions are then fresh instead).
        for seed in [0xDEAD, 0xBEEF] {
            if let Ok(mut tmp) = mm.allocate_from(&pattern(seed)) {
                let _ = tmp.ensure_on_device();
            }
        }
        let bufs: Vec<UnifiedBuffer<u32>> =
            (0..2).map(|_| mm.allocate::<u32>(LEN).expect("host part of a sim buffer")).collect();
        // `allocate` promises no contents: the model starts from what the host part holds.
        let model = bufs.iter().map(|b| b.to_vec().expect("host read")).collect();
        World { sim, mm, bufs, model, plan, steps: 0 }
    }

    fn snapshot(&self) -> Vec<(BufferState, (u64, u64))> {
        self.bufs.iter().map(|b| (b.state(), b.epochs())).collect()
    }

    /// Runs `op`; on success applies `model` to the reference, on failure checks that nothing
    /// changed; then checks every buffer against the reference.
    fn step(
        &mut self,
        what: &str,
        op: impl FnOnce(&mut [UnifiedBuffer<u32>], &MemoryManager) -> Result<()>,
        model: impl FnOnce(&mut [Vec<u32>]),
    ) {
        self.steps += 1;
        let before = self.snapshot();
        match op(&mut self.bufs, &self.mm) {
            Ok(()) => model(&mut self.model),
            Err(e) => {
                // The injected fault, or a refusal that an earlier injected fault made correct
                // (a device write declared while host writes are still unsynchronised).
                assert!(
                    matches!(e, Error::Backend { .. } | Error::ConcurrentModification { .. }),
                    "{what} ({}): unexpected error {e:?}",
                    self.plan
                );
                assert_eq!(self.snapshot(), before, "{what} failed ({e}) but changed state/epochs ({})", self.plan);
            }
        }
        self.verify(what);
    }

    /// Like `step`, for an operation whose outcome is not reported (a dropped future): the
    /// buffer must hold either its old contents, with state and epochs unchanged, or `new`.
    fn step_either(&mut self, what: &str, i: usize, new: Vec<u32>, op: impl FnOnce(&mut UnifiedBuffer<u32>)) {
        self.steps += 1;
        let before = self.snapshot();
        op(&mut self.bufs[i]);
        let got = self.read(i, what);
        if got == new {
            self.model[i] = new;
        } else {
            assert_eq!(self.snapshot(), before, "{what}: old contents kept but state changed ({})", self.plan);
        }
        self.verify(what);
    }

    /// Reads buffer `i`'s current data, retrying a read that hit the injected fault.
    fn read(&self, i: usize, what: &str) -> Vec<u32> {
        retry(what, &self.plan, || self.bufs[i].to_vec())
    }

    fn verify(&self, what: &str) {
        for (i, b) in self.bufs.iter().enumerate() {
            let before = (b.state(), b.epochs());
            let got = self.read(i, what);
            assert!(
                got == self.model[i],
                "after {what}: buffer {i} ({:?}) differs from the model ({})",
                before.0,
                self.plan
            );
            if matches!(before.0, BufferState::Synchronized | BufferState::DeviceDirty | BufferState::DeviceOnly) {
                let device = retry(what, &self.plan, || {
                    let mut scratch = self.mm.allocate::<u32>(LEN)?;
                    scratch.copy_from_buffer(b)?;
                    scratch.to_vec()
                });
                assert!(
                    device == self.model[i],
                    "after {what}: buffer {i} is {:?} but its device part differs from the model ({})",
                    before.0,
                    self.plan
                );
            }
            assert_eq!((b.state(), b.epochs()), before, "verifying buffer {i} changed it");
        }
    }

    /// Drops the buffers and checks that nothing is left: no live buffer, balanced
    /// statistics, no device bytes after `trim_excess`.
    fn finish(self) {
        let World { sim, mm, bufs, plan, .. } = self;
        drop(bufs);
        mm.trim_excess().expect("trim_excess");
        let s = mm.statistics();
        assert_eq!(s.active_allocations, 0, "{plan}");
        assert_eq!(s.total_bytes_allocated, s.total_bytes_freed, "{plan}");
        assert_eq!(sim.used(), 0, "device bytes held after trim_excess ({plan})");
    }
}

fn retry<R>(what: &str, plan: &str, mut f: impl FnMut() -> Result<R>) -> R {
    let mut last = None;
    for _ in 0..3 {
        match f() {
            Ok(r) => return r,
            Err(e) => last = Some(e),
        }
    }
    panic!("after {what}: a checking read failed three times ({plan}): {last:?}")
}

fn write_all(w: &mut World, i: usize, seed: u32) {
    let data = pattern(seed);
    let d = data.clone();
    w.step("copy_from", move |b, _| b[i].copy_from(&d), move |m| m[i] = data);
}

fn sync(w: &mut World, i: usize) {
    w.step("synchronize", |b, _| b[i].synchronize(), |_| {});
}

fn device_write(w: &mut World, i: usize) {
    w.step("ensure_on_device", |b, _| b[i].ensure_on_device(), |_| {});
    w.step("mark_device_dirty", |b, _| b[i].mark_device_dirty(), |_| {});
}

fn sync_async(w: &mut World, i: usize) {
    w.step("synchronize_async", |b, _| pollster::block_on(b[i].synchronize_async()), |_| {});
}

fn copy_from_async(w: &mut World, i: usize, seed: u32) {
    let data = pattern(seed);
    let d = data.clone();
    w.step("copy_from_async", move |b, _| pollster::block_on(b[i].copy_from_async(&d)), move |m| m[i] = data);
}

type Scenario = (&'static str, fn(&mut World));

/// The scenarios Miri runs: the asynchronous paths, whose unsafe code holds raw pointers
/// across the pending transfer, and the engine's staged pipeline and slices.
const MIRI_SCENARIOS: &[&str] = &[
    "async upload of a compacted buffer",
    "copy_from_async from every state",
    "ranged copies",
    "engine: asynchronous execution",
];

const SCENARIOS: &[Scenario] = &[
    ("synchronous transitions", |w| {
        write_all(w, 0, 1);
        sync(w, 0);
        device_write(w, 0);
        w.step("ensure_on_host", |b, _| b[0].ensure_on_host(), |_| {});
        device_write(w, 0);
        w.step("compact", |b, _| b[0].release_device_part(), |_| {});
        w.step("fill", |b, _| b[1].fill(7), |m| m[1].fill(7));
        w.step("ensure_on_device", |b, _| b[1].ensure_on_device(), |_| {});
    }),
    ("async upload of a fresh buffer", |w| {
        sync_async(w, 0);
        w.step("mark_device_dirty", |b, _| b[0].mark_device_dirty(), |_| {});
    }),
    ("async upload of a compacted buffer", |w| {
        write_all(w, 0, 2);
        sync(w, 0);
        w.step("compact", |b, _| b[0].release_device_part(), |_| {});
        sync_async(w, 0);
        w.step("mark_device_dirty", |b, _| b[0].mark_device_dirty(), |_| {});
    }),
    ("async upload of host writes", |w| {
        write_all(w, 0, 3);
        sync_async(w, 0);
        write_all(w, 0, 4);
        sync_async(w, 0);
    }),
    ("async download", |w| {
        write_all(w, 0, 5);
        device_write(w, 0);
        sync_async(w, 0);
        device_write(w, 0);
        let want = w.model[0].clone();
        w.step(
            "copy_to_async",
            |b, _| {
                let mut out = vec![0u32; LEN];
                pollster::block_on(b[0].copy_to_async(&mut out))?;
                assert!(out == want, "copy_to_async returned other data");
                Ok(())
            },
            |_| {},
        );
    }),
    ("copy_from_async from every state", |w| {
        copy_from_async(w, 0, 6);
        copy_from_async(w, 0, 7);
        device_write(w, 0);
        copy_from_async(w, 0, 8);
        write_all(w, 0, 9);
        copy_from_async(w, 0, 10);
    }),
    ("device-only buffers", |w| {
        w.step(
            "allocate_device + upload",
            |b, mm| {
                let mut d = mm.allocate_device::<u32>(LEN)?;
                d.upload(&pattern(11))?;
                b[1] = d;
                Ok(())
            },
            |m| m[1] = pattern(11),
        );
        w.step("ensure_on_host", |b, _| b[1].ensure_on_host(), |_| {});
        let data = pattern(12);
        let d = data.clone();
        w.step("upload", move |b, _| b[1].upload(&d), move |m| m[1] = data);
        w.step("as_mut_slice", |b, _| b[1].as_mut_slice().map(|s| s[5] = 55), |m| m[1][5] = 55);
    }),
    ("whole device copies", |w| {
        write_all(w, 0, 13);
        write_all(w, 1, 14);
        sync(w, 1);
        w.step(
            "copy_from_buffer (host source)",
            |b, _| split(b, |s, d| d.copy_from_buffer(s)),
            |m| m[1] = m[0].clone(),
        );
        device_write(w, 0);
        write_all(w, 0, 15);
        sync(w, 0);
        device_write(w, 0);
        w.step(
            "copy_from_buffer (device source)",
            |b, _| split(b, |s, d| d.copy_from_buffer(s)),
            |m| m[1] = m[0].clone(),
        );
        w.step("try_clone", |b, _| b[1].try_clone().map(|c| b[0] = c), |m| m[0] = m[1].clone());
    }),
    ("ranged copies", |w| {
        write_all(w, 0, 16);
        write_all(w, 1, 17);
        device_write(w, 1);
        let part = pattern(18)[..PART].to_vec();
        let p = part.clone();
        w.step(
            "slice_mut.copy_from",
            move |b, _| b[1].slice_mut(3..3 + PART)?.copy_from(&p),
            move |m| m[1][3..3 + PART].copy_from_slice(&part),
        );
        device_write(w, 1);
        w.step(
            "slice_mut.copy_from_buffer",
            |b, _| split(b, |s, d| d.slice_mut(2 * PART..3 * PART)?.copy_from_buffer(&s.slice(5 * PART..6 * PART)?)),
            |m| {
                let src = m[0][5 * PART..6 * PART].to_vec();
                m[1][2 * PART..3 * PART].copy_from_slice(&src);
            },
        );
        w.step("slice_mut.fill", |b, _| b[1].slice_mut(0..3)?.fill(9), |m| m[1][0..3].fill(9));
    }),
    ("dropped futures", |w| {
        write_all(w, 0, 19);
        let new = pattern(20);
        let n = new.clone();
        w.step_either("dropped copy_from_async", 0, new, move |b| drop(b.copy_from_async(&n)));
        let same = w.model[0].clone();
        w.step_either("dropped synchronize_async", 0, same, |b| drop(b.synchronize_async()));
    }),
    ("engine: upload, download, copy", |w| engine(w, false)),
    ("engine: asynchronous execution", |w| engine(w, true)),
    ("engine: stream_to_device", |w| {
        write_all(w, 0, 21);
        device_write(w, 0);
        let data = pattern(22);
        let bytes: Vec<u8> = bytemuck::cast_slice(&data).to_vec();
        w.step(
            "stream_to_device",
            move |b, mm| {
                let mut reader = std::io::Cursor::new(bytes);
                let options = TransferOptions::default().with_chunk_size(CHUNK);
                let report = mm.transfer_engine().stream_to_device(&mut reader, &mut b[0], options, &mut |_, _| {})?;
                let failure = report.failures().next().map(reported);
                failure.map_or(Ok(()), Err)
            },
            move |m| m[0] = data,
        );
    }),
];

/// A transfer the engine reported failed, as the error the step returns.
fn reported(t: &TransferOutcome) -> Error {
    Error::Backend {
        backend: "sim",
        operation: "engine transfer",
        code: 0,
        message: t.error.as_ref().map(|e| e.message().to_owned()).unwrap_or_default(),
        transient: false,
    }
}

/// Runs `f(source, destination)` on buffers 0 and 1.
fn split(
    b: &mut [UnifiedBuffer<u32>],
    f: impl FnOnce(&UnifiedBuffer<u32>, &mut UnifiedBuffer<u32>) -> Result<()>,
) -> Result<()> {
    let (s, d) = b.split_at_mut(1);
    f(&s[0], &mut d[0])
}

/// Two engine batches: an upload into buffer 0 with a download of buffer 1, then a copy of
/// buffer 1 into buffer 0.
fn engine(w: &mut World, asynchronous: bool) {
    write_all(w, 1, 23);
    device_write(w, 1);
    let up = pattern(24);
    let options = TransferOptions::default().with_chunk_size(CHUNK);
    w.steps += 1;
    let before = w.snapshot();
    let want_download = w.model[1].clone();
    let mut downloaded = vec![0u32; LEN];
    let (first, second) = w.bufs.split_at_mut(1);
    let mut batch = TransferBatch::new();
    batch.upload(&up, &mut first[0]).expect("upload entry");
    batch.download(&second[0], &mut downloaded).expect("download entry");
    let engine = w.mm.transfer_engine();
    let r = if asynchronous {
        pollster::block_on(engine.execute_async(batch, options.clone()))
    } else {
        engine.execute(batch, options.clone())
    };
    let report = r.expect("a valid batch is reported, not refused");
    let failed: Vec<usize> = report.failures().map(|t| t.index).collect();
    if failed.contains(&0) {
        assert_eq!(w.bufs[0].state(), before[0].0, "failed engine upload changed state ({})", w.plan);
        assert_eq!(w.bufs[0].epochs(), before[0].1, "failed engine upload changed epochs ({})", w.plan);
    } else {
        w.model[0] = up;
    }
    if !failed.contains(&1) {
        assert!(downloaded == want_download, "engine download returned other data ({})", w.plan);
    }
    w.verify("engine batch");
    let before = w.snapshot();
    let mut copies = TransferBatch::new();
    let (first, second) = w.bufs.split_at_mut(1);
    copies.copy(&second[0], &mut first[0]).expect("copy entry");
    let report = engine.execute(copies, options).expect("a valid batch is reported");
    if report.is_success() {
        w.model[0] = w.model[1].clone();
    } else {
        assert_eq!(w.snapshot(), before, "failed engine copy changed state ({})", w.plan);
    }
    w.verify("engine copy");
}

/// Backend operations the scenario makes without faults, then the scenario once per fault
/// position (a few past the end too), at enqueue and at completion, transient and permanent.
fn sweep(scenario: fn(&mut World)) -> usize {
    let mut clean = World::new(FaultPlan::default());
    scenario(&mut clean);
    let operations = clean.sim.operations();
    assert!(clean.steps > 0);
    clean.finish();
    let mut runs = 0;
    // Under Miri (which checks the unsafe transfer paths, slowly): every fourth position,
    // completion faults only.
    let (step, kinds): (usize, &[(bool, bool)]) = if cfg!(miri) {
        (4, &[(true, false)])
    } else {
        (1, &[(false, true), (false, false), (true, true), (true, false)])
    };
    for nth in (1..=operations + 3).step_by(step) {
        for &(on_completion, transient) in kinds {
            let plan = FaultPlan::default()
                .with_fail_nth(Some(nth))
                .with_on_completion(on_completion)
                .with_transient(transient);
            let mut w = World::new(plan);
            scenario(&mut w);
            w.finish();
            runs += 1;
        }
    }
    runs
}

#[test]
fn every_fault_position_leaves_the_data_and_state_consistent() {
    let (mut total, mut scenarios) = (0, 0);
    for (name, scenario) in SCENARIOS {
        if cfg!(miri) && !MIRI_SCENARIOS.contains(name) {
            continue;
        }
        let runs = sweep(*scenario);
        eprintln!("fault sweep: {name}: {runs} runs");
        assert!(runs >= 4, "{name}: the scenario made no backend operation");
        total += runs;
        scenarios += 1;
    }
    eprintln!("fault sweep: {total} runs in {scenarios} scenarios");
}
