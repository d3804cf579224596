//! `dcmem bench`: the seed's benchmark table, each row against a baseline measured in the same
//! run. See [`crate::measure`] for how times are taken, [`native`] for the backends whose rows
//! are set against their own native API, [`transfer`] for the transfer-engine rows,
//! [`pools`] for the object-pool, array-pool and random-allocation rows, and [`host`] for the
//! host-memory rows (cpu backend only).

mod host;
#[cfg(feature = "opencl")]
mod kernels;
mod native;
mod pools;
mod transfer;
mod views;

use native::NativeOp;

use crate::machine::Machine;
use crate::measure::{compare, Pair, Plan};
use crate::{units, BenchArgs, CliError, CliResult};
use dotcompute_memory::{Access, Backend, BufferState, ManagerOptions, MemoryManager};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::hint::black_box;
use std::sync::Arc;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured; starts with the seed's wording ("Buffer allocation", ...).
    pub operation: String,
    /// Bytes per operation.
    pub size_bytes: u64,
    /// What the baseline is, exactly.
    pub baseline: String,
    /// What "ours" is, exactly.
    pub ours: String,
    /// Baseline median time per operation.
    pub baseline_ns: f64,
    /// Our median time per operation.
    pub ours_ns: f64,
    /// `baseline_ns / ours_ns`: above 1 means ours is faster.
    pub ratio: f64,
    /// Samples per side behind each median.
    pub samples: usize,
}

/// What the pooled manager's statistics said after the run (shows the pool really hit).
#[derive(Debug, Clone, Serialize)]
pub struct PoolSummary {
    /// Block requests made by the pooled manager.
    pub block_requests: u64,
    /// Of those, served from the pool.
    pub pool_hits: u64,
    /// Blocks obtained from the backend / host allocator.
    pub backend_allocations: u64,
    /// `pool_hits / block_requests`.
    pub pool_hit_rate: f64,
}

/// Everything `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Backend name.
    pub backend: String,
    /// The backend's own description of the device.
    pub backend_description: String,
    /// `full`, `quick` or `smoke`.
    pub mode: &'static str,
    /// Where the numbers come from.
    pub machine: Machine,
    /// The table.
    pub rows: Vec<Row>,
    /// Pool statistics of the "ours" manager after the run.
    pub pooled_manager: PoolSummary,
}

/// Sizes each kind of row uses.
struct Sizes {
    fresh: Vec<usize>,
    malloc: Vec<usize>,
    copy: usize,
    pool_hit: usize,
    access_elems: usize,
    /// Pipelined transfers (the 256 MiB).
    pipelined: usize,
    /// Device-to-device copies.
    transfer: usize,
    /// Batched transfers: how many, of what size.
    batch: (usize, usize),
    /// Object-pool get+return pairs per timed call, on one thread and per thread on two.
    object_pairs: (usize, usize),
    /// Array-pool rent sizes (bytes).
    arrays: Vec<usize>,
    /// Random allocations: how many, smallest, largest, most bytes live at once.
    random: (usize, usize, usize, usize),
}

impl Sizes {
    fn for_mode(smoke: bool) -> Self {
        if smoke {
            Sizes {
                fresh: vec![4 << 10, 256 << 10],
                malloc: vec![4 << 10],
                copy: 256 << 10,
                pool_hit: 256,
                access_elems: 1024,
                // Above the engine's default 1 MiB chunk, so the pipelined path really chunks.
                pipelined: 3 << 20,
                transfer: 3 << 20,
                batch: (16, 1 << 10),
                object_pairs: (1000, 2000),
                arrays: vec![1 << 10, 64 << 10, 1 << 20],
                random: (64, 1 << 10, 256 << 10, 4 << 20),
            }
        } else {
            Sizes {
                fresh: vec![4 << 10, 1 << 20, 16 << 20, 64 << 20],
                malloc: vec![4 << 10, 64 << 10, 1 << 20],
                copy: 10_000_000,
                pool_hit: 256,
                access_elems: 1024,
                pipelined: 256 << 20,
                transfer: 64 << 20,
                batch: (10_000, 4 << 10),
                object_pairs: (1000, 500_000),
                arrays: vec![1 << 10, 64 << 10, 1 << 20],
                random: (1000, 1 << 10, 4 << 20, 128 << 20),
            }
        }
    }

    /// Progress steps (a step may add more than one row).
    fn step_count(&self, discrete: bool, sim: bool) -> u64 {
        let device_alloc = if discrete { self.fresh.len() } else { 0 };
        let capped = usize::from(sim);
        // Device-to-host copy (as_slice) is a step of discrete backends only.
        let as_slice = usize::from(discrete);
        (self.fresh.len() + self.malloc.len() + device_alloc + self.arrays.len() + 12 + as_slice + capped) as u64
    }
}

struct Ctx {
    backend: Arc<dyn Backend>,
    pooled: MemoryManager,
    fresh: MemoryManager,
    plan: Plan,
}

const PAGE: usize = 4096;

/// Writes one byte in every 4 KiB page (a store, no load: one write fault per lazily mapped
/// page), so the memory is really faulted in.
fn touch_pages(bytes: &mut [u8]) {
    for i in (0..bytes.len()).step_by(PAGE) {
        bytes[i] = 1;
    }
    black_box(bytes);
}

/// `n` bytes counting up from `seed`, wrapping at 251 (a prime, so rows of one size differ).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i + seed as usize) % 251) as u8).collect()
}

fn row(operation: &str, size: usize, baseline: String, ours: impl Into<String>, pair: Pair) -> Row {
    Row {
        operation: operation.to_string(),
        size_bytes: size as u64,
        baseline,
        ours: ours.into(),
        baseline_ns: pair.baseline_ns,
        ours_ns: pair.ours_ns,
        ratio: pair.baseline_ns / pair.ours_ns,
        samples: pair.samples,
    }
}

/// A native baseline that was there a moment ago is gone (cannot happen: the backend is fixed).
fn unreachable_native() -> CliError {
    CliError::Other("internal error: the native baseline disappeared between two rows".into())
}

fn wrong_data(what: &str) -> CliError {
    CliError::Other(format!("benchmark self-check failed: {what} produced wrong data"))
}

impl Ctx {
    fn unified(&self) -> bool {
        self.backend.is_unified()
    }

    /// True where device memory is a host slice (cpu, sim), so kernels can be closures.
    fn host_addressable_device(&self) -> bool {
        let Ok(mut probe) = self.pooled.allocate::<u8>(1) else { return false };
        probe.with_device_mut(Access::Read, |v| v.device_slice_mut().is_some()).unwrap_or(false)
    }

    /// Pooled against unpooled allocate + drop, two rows: without touching the memory, and
    /// with one byte written in every 4 KiB page; each row does the same on both sides.
    fn alloc_vs_fresh(&self, n: usize) -> CliResult<Vec<Row>> {
        let (fresh, pooled) = (&self.fresh, &self.pooled);
        let plain = compare(
            &self.plan,
            &mut || {
                let b = fresh.allocate::<u8>(n)?;
                black_box(&b);
                drop(b);
                Ok(())
            },
            &mut || {
                let b = pooled.allocate::<u8>(n)?;
                black_box(&b);
                drop(b);
                Ok(())
            },
        )?;
        let touched = compare(
            &self.plan,
            &mut || {
                let mut b = fresh.allocate::<u8>(n)?;
                touch_pages(b.as_mut_slice()?);
                drop(b);
                Ok(())
            },
            &mut || {
                let mut b = pooled.allocate::<u8>(n)?;
                touch_pages(b.as_mut_slice()?);
                drop(b);
                Ok(())
            },
        )?;
        let block = if self.unified() { "block" } else { "host block" };
        let fresh_block = format!(
            "unpooled {} allocate (a fresh zeroed {block}: aligned alloc_zeroed below 1 MiB, anonymous mmap from \
             1 MiB)",
            self.backend.name()
        );
        Ok(vec![
            row(
                "Buffer allocation (pooled vs fresh)",
                n,
                format!("{fresh_block} + drop, no page touched"),
                "pooled allocate + drop, warm pool, no page touched",
                plain,
            ),
            row(
                "Buffer allocation + first touch (pooled vs fresh)",
                n,
                format!("{fresh_block} + touch pages + drop"),
                "pooled allocate + touch pages + drop, warm pool (pages already resident)",
                touched,
            ),
        ])
    }

    /// Pooled allocate+drop vs malloc/free of the same size (untouched).
    fn alloc_vs_malloc(&self, n: usize, operation: &str) -> CliResult<Row> {
        let pooled = &self.pooled;
        let pair = compare(
            &self.plan,
            &mut || {
                let v: Vec<u8> = Vec::with_capacity(black_box(n));
                black_box(v.as_ptr());
                drop(v);
                Ok(())
            },
            &mut || {
                let b = pooled.allocate::<u8>(n)?;
                black_box(&b);
                drop(b);
                Ok(())
            },
        )?;
        Ok(row(
            operation,
            n,
            "malloc + free: Vec::<u8>::with_capacity, untouched".into(),
            "pooled allocate + drop, warm pool",
            pair,
        ))
    }

    /// Host-to-device: `upload` (one copy, into a fresh device block) as the main row, and
    /// `copy_from` + `ensure_on_device` (through the buffer's host part) as a second row.
    fn host_to_device(&self, n: usize) -> CliResult<Vec<Row>> {
        let src = pattern(n, 0);
        let mut up = self.pooled.allocate::<u8>(n)?;
        up.upload(&src)?;
        let mut staged = self.pooled.allocate::<u8>(n)?;
        staged.copy_from(&src)?;
        staged.ensure_on_device()?;
        let mut upload = || -> CliResult { Ok(up.upload(&src)?) };
        let mut via_host = || -> CliResult {
            staged.copy_from(&src)?;
            staged.ensure_on_device()?;
            Ok(())
        };
        let (pairs, baseline) = if self.unified() {
            let mut dst = vec![0u8; n];
            let mut memcpy = || -> CliResult {
                dst.copy_from_slice(&src);
                black_box(dst.as_ptr());
                Ok(())
            };
            let pairs =
                [compare(&self.plan, &mut memcpy, &mut upload)?, compare(&self.plan, &mut memcpy, &mut via_host)?];
            if dst != src {
                return Err(wrong_data("copy_from_slice"));
            }
            (pairs, "copy_from_slice into a Vec<u8> (memcpy)".to_string())
        } else if let Some((first, label)) = self.against_native(NativeOp::Write, n, &mut upload)? {
            let (second, _) = self.against_native(NativeOp::Write, n, &mut via_host)?.ok_or_else(unreachable_native)?;
            ([first, second], label)
        } else {
            let (first, label) = self.against_raw_write(&src, &mut upload)?;
            let (second, _) = self.against_raw_write(&src, &mut via_host)?;
            ([first, second], label)
        };
        if up.as_slice()? != &src[..] {
            return Err(wrong_data("upload"));
        }
        staged.mark_device_dirty()?;
        if staged.as_slice()? != &src[..] {
            return Err(wrong_data("copy_from + ensure_on_device"));
        }
        let [first, second] = pairs;
        Ok(vec![
            row(
                "Host-to-device copy",
                n,
                baseline.clone(),
                "upload(&[u8]) (one copy into a fresh device block)",
                first,
            ),
            row(
                "Host-to-device copy (copy_from + ensure_on_device)",
                n,
                baseline,
                "copy_from(&[u8]) + ensure_on_device() (through the buffer's host part)",
                second,
            ),
        ])
    }

    /// Device-to-host: `via_slice` reads with `as_slice` (into the buffer's own host part;
    /// discrete backends only), otherwise with `copy_to` into a Vec.
    fn device_to_host(&self, n: usize, via_slice: bool) -> CliResult<Row> {
        let src = pattern(n, 2);
        let mut buf = self.pooled.allocate::<u8>(n)?;
        buf.copy_from(&src)?;
        buf.ensure_on_device()?;
        let mut out = vec![0u8; n];
        let mut ours = || -> CliResult {
            buf.mark_device_dirty()?;
            if via_slice {
                black_box(buf.as_slice()?.as_ptr());
            } else {
                buf.copy_to(&mut out)?;
                black_box(out.as_ptr());
            }
            Ok(())
        };
        let mut dst = vec![0u8; n];
        let (pair, baseline) = if self.unified() {
            let pair = compare(
                &self.plan,
                &mut || {
                    dst.copy_from_slice(&src);
                    black_box(dst.as_ptr());
                    Ok(())
                },
                &mut ours,
            )?;
            if dst != src {
                return Err(wrong_data("copy_from_slice"));
            }
            (pair, "copy_from_slice into a Vec<u8> (memcpy)".to_string())
        } else if let Some(r) = self.against_native(NativeOp::Read, n, &mut ours)? {
            r
        } else {
            let backend = &*self.backend;
            let mem = backend.allocate(n, PAGE)?;
            let result = backend
                .write(&mem, 0, &src)
                .map_err(CliError::from)
                .and_then(|()| compare(&self.plan, &mut || Ok(backend.read(&mem, 0, &mut dst)?), &mut ours));
            backend.free(mem)?;
            if result.is_ok() && dst != src {
                return Err(wrong_data("raw Backend::read"));
            }
            (result?, format!("raw Backend::read ({}), device to Vec<u8>", backend.name()))
        };
        if via_slice {
            if buf.as_slice()? != &src[..] {
                return Err(wrong_data("mark_device_dirty + as_slice"));
            }
            Ok(row(
                "Device-to-host copy (as_slice)",
                n,
                baseline,
                "mark_device_dirty() + as_slice() (pulls into the buffer's host part)",
                pair,
            ))
        } else {
            if out != src {
                return Err(wrong_data("mark_device_dirty + copy_to"));
            }
            Ok(row("Device-to-host copy (copy_to)", n, baseline, "mark_device_dirty() + copy_to(&mut Vec<u8>)", pair))
        }
    }

    /// Reading a Synchronized buffer's data: a copy out with `copy_to` and a sum of the copy,
    /// against `as_slice` and the same sum in place.
    fn zero_copy_access(&self, elems: usize) -> CliResult<Row> {
        let data: Vec<f32> = (0..elems).map(|i| i as f32).collect();
        let expected = sum(&data);
        let mut buf = self.pooled.allocate::<f32>(elems)?;
        buf.copy_from(&data)?;
        buf.synchronize()?;
        if buf.state() != BufferState::Synchronized {
            return Err(CliError::Other(format!("expected a Synchronized buffer, found {:?}", buf.state())));
        }
        let mut out = vec![0f32; elems];
        let b = &buf;
        let (mut copied, mut in_place) = (0f32, 0f32);
        let pair = compare(
            &self.plan,
            &mut || {
                black_box(b).copy_to(&mut out)?;
                copied = black_box(sum(&out));
                Ok(())
            },
            &mut || {
                in_place = black_box(sum(black_box(b).as_slice()?));
                Ok(())
            },
        )?;
        if out != data || copied != expected || in_place != expected || buf.state() != BufferState::Synchronized {
            return Err(wrong_data("zero-copy access"));
        }
        Ok(row(
            "Zero-copy access",
            elems * 4,
            "copying access: copy_to into a Vec<f32> + sum of the Vec".into(),
            "as_slice() on a Synchronized buffer + the same sum in place",
            pair,
        ))
    }
}

/// Sum of `values` in 16 independent lanes (vectorises; the same code on both sides of a row).
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

fn manager(backend: &Arc<dyn Backend>, pooling: bool) -> CliResult<MemoryManager> {
    Ok(MemoryManager::with_shared_backend(
        backend.clone(),
        ManagerOptions { enable_pooling: pooling, maintenance_interval: None, ..ManagerOptions::default() },
    )?)
}

fn progress(total: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    // The stderr target draws nothing when stderr is not a terminal.
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// Measures every row on the backend named in `args`.
pub fn measure(args: &BenchArgs) -> CliResult<Report> {
    let backend = dotcompute_memory::backend::open(&args.backend)?;
    let (plan, mode) = if args.smoke {
        (Plan::SMOKE, "smoke")
    } else if args.quick {
        (Plan::QUICK, "quick")
    } else {
        (Plan::FULL, "full")
    };
    let sizes = Sizes::for_mode(args.smoke);
    let ctx = Ctx { pooled: manager(&backend, true)?, fresh: manager(&backend, false)?, backend, plan };
    let discrete = !ctx.unified();
    let host_sizes = (ctx.backend.name() == "cpu").then(|| host::HostSizes::for_mode(args.smoke, args.quick));
    let host_steps = host_sizes.as_ref().map_or(0, host::HostSizes::step_count);
    // The kernel rows (two steps) exist on OpenCL builds with the opencl backend.
    let kernel_steps = if cfg!(feature = "opencl") && ctx.backend.name() == "opencl" { 2 } else { 0 };
    let pb = progress(sizes.step_count(discrete, ctx.backend.name() == "sim") + host_steps + kernel_steps, args.json);
    let mut rows = Vec::new();
    let only = args.only.as_deref().map(str::to_lowercase);
    let mut skipped = Vec::new();
    let mut step = |name: String, f: &dyn Fn() -> CliResult<Vec<Row>>| -> CliResult {
        if only.as_ref().is_some_and(|only| !name.to_lowercase().contains(only.as_str())) {
            skipped.push(name);
            pb.inc(1);
            return Ok(());
        }
        pb.set_message(name);
        rows.extend(f()?);
        // Each row warms its own pool; what one row cached would otherwise hold device memory
        // that a later row's raw baseline allocation needs (a 1 GiB sim fills up).
        ctx.pooled.trim_excess()?;
        pb.inc(1);
        Ok(())
    };
    let one = |r: CliResult<Row>| r.map(|r| vec![r]);
    for &n in &sizes.fresh {
        step(format!("buffer allocation {}", units::bytes(n as u64)), &|| ctx.alloc_vs_fresh(n))?;
    }
    if discrete {
        for &n in &sizes.fresh {
            step(format!("device buffer allocation {}", units::bytes(n as u64)), &|| one(ctx.device_alloc(n)))?;
        }
    }
    for &n in &sizes.malloc {
        step(format!("buffer allocation vs malloc {}", units::bytes(n as u64)), &|| {
            one(ctx.alloc_vs_malloc(n, "Buffer allocation (pooled vs malloc)"))
        })?;
    }
    step("host-to-device copy".into(), &|| ctx.host_to_device(sizes.copy))?;
    step("device-to-host copy (copy_to)".into(), &|| one(ctx.device_to_host(sizes.copy, false)))?;
    if discrete {
        // On unified memory as_slice is a zero-copy view, not a copy: Zero-copy access covers it.
        step("device-to-host copy (as_slice)".into(), &|| one(ctx.device_to_host(sizes.copy, true)))?;
    }
    step("buffer pool hit".into(), &|| one(ctx.alloc_vs_malloc(sizes.pool_hit, "Buffer pool hit")))?;
    step("zero-copy access".into(), &|| one(ctx.zero_copy_access(sizes.access_elems)))?;
    if ctx.host_addressable_device() {
        step("device view".into(), &|| one(ctx.view_create_drop(sizes.access_elems)))?;
        if ctx.backend.name() == "sim" {
            step("kernel chain (closure kernels)".into(), &|| one(ctx.kernel_chain_closures(1 << 20, 4e9)))?;
        }
    }
    step("pipelined transfer".into(), &|| ctx.pipelined(sizes.pipelined))?;
    step("pageable vs pinned source".into(), &|| ctx.pageable_vs_pinned(sizes.pipelined))?;
    step("engine copies".into(), &|| ctx.engine_copies(sizes.copy))?;
    if ctx.backend.name() == "sim" {
        step("pipelined transfer, bandwidth-capped sim".into(), &|| one(ctx.pipelined_capped(sizes.pipelined, 4e9)))?;
    }
    let (count, size) = sizes.batch;
    step("batched transfers".into(), &|| ctx.batched(count, size))?;
    step("device-to-device copy".into(), &|| one(ctx.device_to_device(sizes.transfer)))?;
    let (one_thread, per_thread) = sizes.object_pairs;
    step("object pool get+return".into(), &|| ctx.object_pool_one_thread(one_thread))?;
    step("object pool get+return, 2 threads".into(), &|| ctx.object_pool_two_threads(per_thread))?;
    for &n in &sizes.arrays {
        step(format!("array pool rent+return {}", units::bytes(n as u64)), &|| ctx.array_pool(n))?;
    }
    let (count, min, max, live_cap) = sizes.random;
    let workload = pools::Workload::random(count, min, max, live_cap, 0x5EED);
    step("random allocations".into(), &|| ctx.random_allocations(&workload))?;
    #[cfg(feature = "opencl")]
    if ctx.backend.name() == "opencl" {
        let kernel_sizes = kernels::KernelSizes::for_mode(args.smoke, args.quick);
        step("kernel loop".into(), &|| ctx.kernel_loop(&kernel_sizes))?;
        step("kernel chain".into(), &|| ctx.kernel_chain(&kernel_sizes))?;
    }
    if let Some(host_sizes) = &host_sizes {
        host::measure(&ctx.plan, host_sizes, &mut step)?;
    }
    pb.finish_and_clear();
    if rows.is_empty() {
        if let Some(only) = &args.only {
            return Err(CliError::Other(format!(
                "--only {only:?} matches no step of this backend; the steps are: {}",
                skipped.join(", ")
            )));
        }
    }
    let s = ctx.pooled.statistics();
    Ok(Report {
        backend: ctx.backend.name().to_string(),
        backend_description: ctx.backend.description(),
        mode,
        machine: Machine::detect(),
        rows,
        pooled_manager: PoolSummary {
            block_requests: s.block_requests,
            pool_hits: s.pool_hits,
            backend_allocations: s.backend_allocations,
            pool_hit_rate: s.pool_hit_rate,
        },
    })
}

/// The table as text.
pub fn table(report: &Report) -> String {
    let header = ["Operation", "Size", "Baseline (what it is)", "Baseline", "Ours", "Ratio"];
    let cells: Vec<[String; 6]> = report
        .rows
        .iter()
        .map(|r| {
            [
                r.operation.clone(),
                units::bytes(r.size_bytes),
                r.baseline.clone(),
                units::nanos(r.baseline_ns),
                units::nanos(r.ours_ns),
                units::ratio(r.ratio),
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String; 6]| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(width).enumerate() {
            let pad = w - cell.chars().count();
            // Numbers right-aligned, text left-aligned.
            if i >= 3 {
                s += &" ".repeat(pad);
                s += cell;
            } else {
                s += cell;
                s += &" ".repeat(pad);
            }
            if i < 5 {
                s += "  ";
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = format!(
        "dcmem bench — backend {} ({}), {} run\nmachine: {}\n\n",
        report.backend,
        report.backend_description,
        report.mode,
        report.machine.summary()
    );
    out += &line(&header.map(String::from));
    out += &line(&width.map(|w| "-".repeat(w)));
    for c in &cells {
        out += &line(c);
    }
    let p = &report.pooled_manager;
    out += &format!(
        "\nRatio = baseline time / ours time, both medians of {} samples from this run; above 1 = ours faster.\n\
         Baseline terms: \"unpooled\" = a MemoryManager with enable_pooling: false on the same backend; \"touch \n\
         pages\" = write 1 byte in every 4 KiB page so lazily mapped memory is faulted in.\n",
        report.rows.first().map(|r| r.samples).unwrap_or(0)
    );
    let has = |op: &str| report.rows.iter().any(|r| r.operation == op);
    if has("Device-to-host copy (copy_to)") && !has("Device-to-host copy (as_slice)") {
        out += "\"Device-to-host copy (as_slice)\" is measured on discrete backends only: on unified memory \n\
                as_slice is a zero-copy view, not a copy (see \"Zero-copy access\").\n";
    }
    if report.rows.iter().any(|r| r.baseline.starts_with("raw Backend::")) {
        out +=
            "\"raw Backend::...\" = the backend's own trait calls on device memory it allocated, with no manager, \n\
                pool or coherence tracking in the way.\n";
    }
    if report.rows.iter().any(|r| r.baseline.starts_with("raw opencl3")) {
        out += "\"raw opencl3 ...\" = plain opencl3 calls on the same device in a context and queue of their own, \n\
                timed like ours: batches of calls, median over samples alternating with samples of ours.\n";
    }
    out += "\"Ours\" per row:\n";
    let mut seen = Vec::new();
    for r in &report.rows {
        if !seen.contains(&(&r.operation, &r.ours)) {
            seen.push((&r.operation, &r.ours));
            out += &format!("  {}: {}\n", r.operation, r.ours);
        }
    }
    out += &format!(
        "Pooled manager after the run: {} block requests, {} pool hits ({:.1}%), {} backend allocations.\n",
        p.block_requests,
        p.pool_hits,
        p.pool_hit_rate * 100.0,
        p.backend_allocations
    );
    out
}

/// `dcmem bench`; returns what goes to stdout.
pub fn run(args: &BenchArgs) -> CliResult<String> {
    if let Some(path) = &args.plot {
        crate::plot::check_path(path)?;
    }
    let report = measure(args)?;
    let text = if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Other(format!("could not serialise the report: {e}")))?;
        json + "\n"
    } else {
        table(&report)
    };
    if let Some(path) = &args.plot {
        crate::plot::write_png(&report, path)?;
        eprintln!("dcmem: wrote chart to {}", path.display());
    }
    Ok(text)
}
