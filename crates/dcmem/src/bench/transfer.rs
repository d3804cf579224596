//! Transfer rows: the transfer engine (pipelined, pinned-source, batched uploads and its
//! copies against raw calls), device-to-device copies, and copies between devices. Each checks the
//! data it moved.

use super::ctx::Ctx;
use super::data::{pattern, wrong_data, PAGE};
use super::native::{against_native, against_raw_write, NativeOp};
use crate::report::Row;
use crate::{units, CliError, CliResult};
use dotcompute_memory::{
    ManagerOptions, MemoryManager, SimBackend, SimOptions, StagingPolicy, TransferBatch, TransferEngine,
    TransferOptions, TransferReport, UnifiedBuffer,
};
use std::time::Duration;

/// Per-operation latency of the simulated device in the batched rows: submitting and completing
/// one small copy to a PCIe GPU takes about this long.
const SIM_SUBMIT_LATENCY: Duration = Duration::from_micros(10);

/// Always staged, not pipelined: the whole transfer copied into staging, then sent.
fn staged_unpipelined() -> TransferOptions {
    TransferOptions::default().with_pipelining(false).with_staging(StagingPolicy::Always)
}

/// Always staged and pipelined (the default `pipelining: true`): chunks copied into the staging
/// ring while earlier chunks are sent.
fn staged_pipelined() -> TransferOptions {
    TransferOptions::default().with_staging(StagingPolicy::Always)
}

/// How the engine sent the first transfer of `report`: staged in chunks, direct, or (unified
/// memory) an inline host copy.
fn decision(report: &TransferReport, unified: bool) -> String {
    match report.transfers.first() {
        None => "nothing sent".into(),
        Some(_) if unified => "inline host copy, unified memory".into(),
        Some(t) => {
            let how = if t.staged && t.chunks <= 1 {
                format!("staged in one piece of {}", units::bytes(t.bytes))
            } else if t.staged {
                format!(
                    "staged in {} chunk(s) of {}",
                    t.chunks,
                    units::bytes(TransferOptions::default().chunk_size as u64)
                )
            } else {
                format!("direct from the caller's memory, {} piece(s)", t.chunks)
            };
            let why = if t.staging_measured { "measured choice" } else { "rule or first trial" };
            format!("{how}; {why}")
        }
    }
}

/// Runs one upload of `src` into `dst` through the engine; a failed transfer is an error.
fn engine_upload(
    engine: &TransferEngine,
    src: &[u8],
    dst: &mut UnifiedBuffer<u8>,
    options: TransferOptions,
) -> CliResult<TransferReport> {
    let mut batch = TransferBatch::new();
    batch.upload(src, dst)?;
    let report = engine.execute(batch, options)?;
    check_report(&report)?;
    Ok(report)
}

fn check_report(report: &TransferReport) -> CliResult {
    match report.failures().next() {
        None => Ok(()),
        Some(f) => Err(CliError::Other(format!(
            "transfer {} of the batch failed after {} attempt(s): {}",
            f.index,
            f.attempts,
            f.error.as_ref().map_or("no reason given", |e| e.message())
        ))),
    }
}

/// A large upload through the engine: with default options against a raw write of the same
/// bytes; always staged and pipelined against always staged with `pipelining: false` (the
/// ratio is the overlap alone); and, on discrete backends, default options (adaptive
/// staging) against always staged and pipelined.
pub(super) fn pipelined(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let src = pattern(n, 241);
    let engine = ctx.pooled().transfer_engine();
    let unified = ctx.unified();
    let mut a = ctx.pooled().allocate::<u8>(n)?;
    let mut how = String::new();
    let mut adaptive = || -> CliResult {
        how = decision(&engine_upload(&engine, &src, &mut a, TransferOptions::default())?, unified);
        Ok(())
    };
    let (first, first_baseline) = match against_native(ctx, NativeOp::Write, n, &mut adaptive)? {
        Some(r) => r,
        None => against_raw_write(ctx, &src, &mut adaptive)?,
    };
    let mut b = ctx.pooled().allocate::<u8>(n)?;
    let mut c = ctx.pooled().allocate::<u8>(n)?;
    let (mut b_how, mut c_how) = (String::new(), String::new());
    let mut unpipelined = || -> CliResult {
        b_how = decision(&engine_upload(&engine, &src, &mut b, staged_unpipelined())?, unified);
        Ok(())
    };
    let mut pipelined = || -> CliResult {
        c_how = decision(&engine_upload(&engine, &src, &mut c, staged_pipelined())?, unified);
        Ok(())
    };
    let overlap = ctx.compare(&mut unpipelined, &mut pipelined)?;
    let adaptive_vs_staged = if unified { None } else { Some(ctx.compare(&mut pipelined, &mut adaptive)?) };
    for (buf, what) in [
        (&a, "engine upload with default options"),
        (&b, "staged engine upload, pipelining: false"),
        (&c, "staged engine upload, pipelined"),
    ] {
        if buf.as_slice()? != &src[..] {
            return Err(wrong_data(what));
        }
    }
    let adaptive_text = format!("engine upload, TransferOptions::default() (last call: {how})");
    let staged_text = format!("engine upload, staging: Always, pipelining: true (the default) (last call: {c_how})");
    let mut rows = vec![
        Row::new("Pipelined transfer", n, first_baseline, adaptive_text.clone(), first),
        Row::new(
            "Pipelined transfer (vs pipelining: false)",
            n,
            format!(
                "engine upload, staging: Always, pipelining: false (whole staging copy, then one transfer) (last \
                 call: {b_how})"
            ),
            staged_text.clone(),
            overlap,
        ),
    ];
    if let Some(pair) = adaptive_vs_staged {
        rows.push(Row::new("Pipelined transfer (adaptive vs always staged)", n, staged_text, adaptive_text, pair));
    }
    Ok(rows)
}

/// On the simulated device with a bandwidth cap (so transfers take device time the host can
/// overlap): an always-staged upload pipelined against the same upload with
/// `pipelining: false`, which stages the whole transfer first and then sends it.
pub(super) fn pipelined_capped(ctx: &Ctx, n: usize, bandwidth: f64) -> CliResult<Row> {
    let sim =
        dotcompute_memory::MemoryManager::sim(dotcompute_memory::SimOptions::default().with_bandwidth(Some(bandwidth)));
    let src = pattern(n, 97);
    let engine = sim.transfer_engine();
    let mut a = sim.allocate::<u8>(n)?;
    let mut b = sim.allocate::<u8>(n)?;
    let (mut a_how, mut b_how) = (String::new(), String::new());
    let pair = ctx.compare(
        &mut || {
            b_how = decision(&engine_upload(&engine, &src, &mut b, staged_unpipelined())?, false);
            Ok(())
        },
        &mut || {
            a_how = decision(&engine_upload(&engine, &src, &mut a, staged_pipelined())?, false);
            Ok(())
        },
    )?;
    for buf in [&a, &b] {
        if buf.as_slice()? != &src[..] {
            return Err(wrong_data("bandwidth-capped engine upload"));
        }
    }
    Ok(Row::new(
        "Pipelined transfer (sim, bandwidth cap)",
        n,
        format!(
            "engine upload, staging: Always, pipelining: false (whole staging copy, then one transfer) on sim \
             capped at {:.0} GB/s (last call: {b_how})",
            bandwidth / 1e9
        ),
        format!("engine upload, staging: Always, pipelining: true (the default), same sim (last call: {a_how})"),
        pair,
    ))
}

/// The 10 MB rows through the engine: an engine upload against a raw write, and an
/// engine download against a raw read, on the same backend.
pub(super) fn engine_copies(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let src = pattern(n, 61);
    let engine = ctx.pooled().transfer_engine();
    let mut a = ctx.pooled().allocate::<u8>(n)?;
    let mut up_how = String::new();
    let (up, up_baseline) = against_raw_write(ctx, &src, &mut || {
        up_how = decision(&engine_upload(&engine, &src, &mut a, TransferOptions::default())?, ctx.unified());
        Ok(())
    })?;
    let backend = ctx.backend();
    let mem = backend.allocate(n, PAGE)?;
    backend.write(&mem, 0, &src)?;
    let mut raw_out = vec![0u8; n];
    let mut out = vec![0u8; n];
    let mut down_how = String::new();
    let down = ctx.compare(&mut || Ok(backend.read(&mem, 0, &mut raw_out)?), &mut || {
        let mut batch = TransferBatch::new();
        batch.download(&a, &mut out)?;
        let r = engine.execute(batch, TransferOptions::default())?;
        check_report(&r)?;
        down_how = decision(&r, ctx.unified());
        Ok(())
    });
    backend.free(mem)?;
    let down = down?;
    if out != src || raw_out != src {
        return Err(wrong_data("engine download"));
    }
    Ok(vec![
        Row::new(
            "Host-to-device copy (engine)",
            n,
            up_baseline,
            format!("engine upload, default options (last call: {up_how})"),
            up,
        ),
        Row::new(
            "Device-to-host copy (engine)",
            n,
            format!("raw Backend::read ({}), device to Vec<u8>", backend.name()),
            format!("engine download, default options (last call: {down_how})"),
            down,
        ),
    ])
}

/// A pageable upload pipelined through pinned staging against the same upload from an
/// already page-locked source (which skips staging): the target is at least 0.95× the pinned
/// path. Skipped, with a message, where memory cannot be locked.
pub(super) fn pageable_vs_pinned(ctx: &Ctx, n: usize) -> CliResult<Vec<Row>> {
    let mut pinned = match dotcompute_memory::host::pinned::PinnedBuffer::<u8>::new(n) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dcmem: skipping the pageable-vs-pinned row: {e}");
            return Ok(Vec::new());
        }
    };
    let src = pattern(n, 83);
    pinned.copy_from_slice(&src);
    let engine = ctx.pooled().transfer_engine();
    let mut a = ctx.pooled().allocate::<u8>(n)?;
    let mut b = ctx.pooled().allocate::<u8>(n)?;
    let mut how = String::new();
    let pair = ctx.compare(
        &mut || {
            let mut batch = TransferBatch::new();
            batch.upload_pinned(&pinned, &mut b)?;
            check_report(&engine.execute(batch, TransferOptions::default())?)
        },
        &mut || {
            how = decision(&engine_upload(&engine, &src, &mut a, TransferOptions::default())?, ctx.unified());
            Ok(())
        },
    )?;
    if a.as_slice()? != &src[..] || b.as_slice()? != &src[..] {
        return Err(wrong_data("pinned/pageable upload"));
    }
    Ok(vec![Row::new(
        "Pipelined transfer (pageable vs pinned source)",
        n,
        "engine upload_pinned from a page-locked source (no staging)".into(),
        format!("engine upload from pageable memory, TransferOptions::default() (last call: {how})"),
        pair,
    )])
}

/// `count` small uploads as one engine batch against the same uploads one by one, two ways:
/// what a user writes without the engine (one blocking `Backend::write`, i.e. write + wait,
/// per transfer, into one device allocation at consecutive offsets), and one
/// `TransferEngine::execute` per transfer. On the simulator both sides run on a simulated
/// device with a per-operation latency ([`SIM_SUBMIT_LATENCY`]): without one a simulated
/// "transfer" is a memcpy and a lock, and no submission cost exists for batching to save.
pub(super) fn batched(ctx: &Ctx, count: usize, size: usize) -> CliResult<Vec<Row>> {
    let latency_sim;
    let (mm, device) = if ctx.caps().simulated_device() {
        latency_sim = MemoryManager::sim(SimOptions::default().with_latency(SIM_SUBMIT_LATENCY));
        (&latency_sim, format!("sim with {} µs latency per operation", SIM_SUBMIT_LATENCY.as_micros()))
    } else {
        (ctx.pooled(), ctx.backend().name().to_string())
    };
    let backend = mm.backend();
    let sources: Vec<Vec<u8>> = (0..count).map(|i| pattern(size, 200 + (i % 50) as u8)).collect();
    let alloc = |_| mm.allocate::<u8>(size);
    let mut ours_bufs = (0..count).map(alloc).collect::<Result<Vec<_>, _>>()?;
    let mut each_bufs = (0..count).map(alloc).collect::<Result<Vec<_>, _>>()?;
    let engine = mm.transfer_engine();
    let mut report = None;
    let mut ours = || -> CliResult {
        let mut batch = TransferBatch::with_capacity(count);
        for (src, dst) in sources.iter().zip(ours_bufs.iter_mut()) {
            batch.upload(src, dst)?;
        }
        let r = engine.execute(batch, TransferOptions::default())?;
        check_report(&r)?;
        report = Some(r);
        Ok(())
    };
    let mem = backend.allocate(count * size, PAGE)?;
    let raw = ctx.compare(
        &mut || {
            for (i, src) in sources.iter().enumerate() {
                backend.write(&mem, i * size, src)?;
            }
            Ok(())
        },
        &mut ours,
    );
    let mut back = vec![0u8; count * size];
    let read = backend.read(&mem, 0, &mut back);
    backend.free(mem)?;
    let raw = raw?;
    read?;
    if back.chunks(size).zip(&sources).any(|(a, b)| a != &b[..]) {
        return Err(wrong_data("raw Backend::write loop"));
    }
    let per_execute = ctx.compare(
        &mut || {
            for (src, dst) in sources.iter().zip(each_bufs.iter_mut()) {
                let mut batch = TransferBatch::new();
                batch.upload(src, dst)?;
                check_report(&engine.execute(batch, TransferOptions::default())?)?;
            }
            Ok(())
        },
        &mut ours,
    )?;
    for (src, (o, e)) in sources.iter().zip(ours_bufs.iter().zip(&each_bufs)) {
        if o.as_slice()? != &src[..] {
            return Err(wrong_data("batched engine upload"));
        }
        if e.as_slice()? != &src[..] {
            return Err(wrong_data("one engine execute per upload"));
        }
    }
    let report = report.ok_or_else(|| CliError::Other("the batched upload never ran".into()))?;
    let submissions = report.transfers.iter().map(|t| t.start_order).max().map_or(0, |m| m + 1);
    let each = units::bytes(size as u64);
    let staged = if backend.is_unified() {
        "copied inline: unified memory"
    } else if report.staged == 0 {
        "device reads the callers' slices directly"
    } else {
        "staged"
    };
    let ours_text = format!(
        "one engine batch of {count} uploads on {device}, TransferOptions::default() (adaptive batching: {} of \
         {count} packed into {submissions} batch(es), {staged})",
        report.batched
    );
    let operation = format!("Batched transfers ({count} × {each})");
    Ok(vec![
        Row::new(
            &operation,
            count * size,
            format!(
                "{count} blocking Backend::write calls (write + wait each) on {device}, {each} each, into one \
                 device allocation"
            ),
            ours_text.clone(),
            raw,
        ),
        Row::new(
            &format!("{operation} (vs one execute each)"),
            count * size,
            format!("{count} TransferEngine::execute calls of one {each} upload each, on {device}"),
            ours_text,
            per_execute,
        ),
    ])
}

/// `copy_from_buffer` between two buffers whose data is on the device, against a raw
/// `Backend::copy` between two device allocations.
pub(super) fn device_to_device(ctx: &Ctx, n: usize) -> CliResult<Row> {
    let data = pattern(n, 239);
    let mut src = ctx.pooled().allocate::<u8>(n)?;
    src.upload(&data)?;
    let mut dst = ctx.pooled().allocate::<u8>(n)?;
    dst.upload(&pattern(n, 7))?;
    let before = dst.metrics();
    let mut ours = || -> CliResult { Ok(dst.copy_from_buffer(&src)?) };
    let (pair, baseline) = match against_native(ctx, NativeOp::Copy, n, &mut ours)? {
        Some(r) => r,
        None => {
            let backend = ctx.backend();
            let from = backend.allocate(n, PAGE)?;
            let to = match backend.allocate(n, PAGE) {
                Ok(m) => m,
                Err(e) => {
                    backend.free(from)?;
                    return Err(e.into());
                }
            };
            let result = backend
                .write(&from, 0, &data)
                .map_err(CliError::from)
                .and_then(|()| ctx.compare(&mut || Ok(backend.copy(&from, 0, &to, 0, n)?), &mut ours));
            let mut check = vec![0u8; n];
            let read = backend.read(&to, 0, &mut check);
            backend.free(from)?;
            backend.free(to)?;
            let pair = result?;
            read?;
            if check != data {
                return Err(wrong_data("raw Backend::copy"));
            }
            (pair, format!("raw Backend::copy ({}) between two device allocations", backend.name()))
        }
    };
    let after = dst.metrics();
    if !ctx.unified() && after.host_to_device != before.host_to_device {
        return Err(CliError::Other("device-to-device copy went through the host: copy_from_buffer uploaded".into()));
    }
    if dst.as_slice()? != &data[..] {
        return Err(wrong_data("copy_from_buffer"));
    }
    Ok(Row::new("Device-to-device copy", n, baseline, "dst.copy_from_buffer(&src), both current on the device", pair))
}

/// Peer copy: a direct copy between two simulated devices of one group against a copy between
/// two that cannot reach each other (staged through host memory in pipelined chunks), every
/// link capped at `bandwidth`. The baseline's description gives the direct copy's share of the
/// cap; the ratio is the staged copy's share of the direct one's bandwidth.
pub(super) fn peer_copy(ctx: &Ctx, n: usize, bandwidth: f64) -> CliResult<Row> {
    let options = SimOptions::default()
        .with_bandwidth(Some(bandwidth))
        .with_peer_bandwidth(Some(bandwidth))
        .with_unreachable_peers(vec![(1, 2)]);
    let managers = SimBackend::group(3, options)
        .into_iter()
        .map(|device| MemoryManager::with_backend(device, ManagerOptions::default().with_maintenance_interval(None)))
        .collect::<Result<Vec<_>, _>>()?;
    let src = pattern(n, 89);
    let mut on_1 = managers[1].allocate_from(&src)?;
    on_1.mark_device_dirty()?;
    let mut direct_dst = managers[0].allocate::<u8>(n)?;
    let mut staged_dst = managers[2].allocate::<u8>(n)?;
    let pair =
        ctx.compare(&mut || Ok(direct_dst.copy_from_buffer(&on_1)?), &mut || Ok(staged_dst.copy_from_buffer(&on_1)?))?;
    for dst in [&direct_dst, &staged_dst] {
        if dst.to_vec()? != src {
            return Err(wrong_data("peer copy"));
        }
    }
    let direct_bw = n as f64 / (pair.baseline_ns * 1e-9);
    let staged_bw = n as f64 / (pair.ours_ns * 1e-9);
    Ok(Row::new(
        "Peer copy (sim group, bandwidth cap)",
        n,
        format!(
            "direct copy between two devices of a sim group, links capped at {:.0} GB/s: {:.2} GB/s, {:.2} of the cap",
            bandwidth / 1e9,
            direct_bw / 1e9,
            direct_bw / bandwidth
        ),
        format!(
            "staged copy between two devices of the group that cannot reach each other, through a ring of four 4 MiB \
             host blocks (the source's read of one chunk overlapping the destination's write of the last): {:.2} GB/s, \
             {:.2} of the direct copy",
            staged_bw / 1e9,
            staged_bw / direct_bw
        ),
        pair,
    ))
}

/// Prefetch: a host write, then an upload and unrelated host work of about the same length,
/// then the device access. The baseline uploads first (`ensure_on_device`) and then works; ours
/// starts the upload with `prefetch_to_device`, works while it runs, and the access waits only
/// for what is left. On a sim capped at `bandwidth` with 1 ms latency per transfer.
pub(super) fn prefetch(ctx: &Ctx, n: usize, bandwidth: f64) -> CliResult<Row> {
    let options = SimOptions::default().with_bandwidth(Some(bandwidth)).with_latency(Duration::from_millis(1));
    let sim = MemoryManager::with_backend(
        SimBackend::new(options),
        ManagerOptions::default().with_maintenance_interval(None),
    )?;
    let src = pattern(n, 71);
    let mut eager = sim.allocate_from(&src)?;
    let mut prefetched = sim.allocate_from(&src)?;
    let mut work = vec![0u32; n / 4];
    // Host work unrelated to the buffer, of about the upload's length here: four passes of
    // integer arithmetic over `n` bytes.
    let mut host_work = move || {
        for pass in 0..4u32 {
            for (i, x) in work.iter_mut().enumerate() {
                *x = x.wrapping_mul(31).wrapping_add(i as u32 ^ pass);
            }
            std::hint::black_box(&work);
        }
    };
    let mut host_work_2 = host_work.clone();
    let pair = ctx.compare(
        &mut || {
            eager.as_mut_slice()?[0] ^= 1;
            eager.ensure_on_device()?;
            host_work();
            Ok(())
        },
        &mut || {
            prefetched.as_mut_slice()?[0] ^= 1;
            prefetched.prefetch_to_device()?;
            host_work_2();
            prefetched.ensure_on_device()?;
            Ok(())
        },
    )?;
    if eager.to_vec()? != prefetched.to_vec()? {
        return Err(wrong_data("prefetch"));
    }
    Ok(Row::new(
        "Prefetch (sim, latency and bandwidth cap)",
        n,
        format!(
            "host write, ensure_on_device (upload), then host work (4 passes over {}) on a sim capped at {:.0} GB/s \
             with 1 ms latency",
            units::bytes(n as u64),
            bandwidth / 1e9
        ),
        "host write, prefetch_to_device, the same host work while the upload runs, then ensure_on_device (waits for the rest)",
        pair,
    ))
}
