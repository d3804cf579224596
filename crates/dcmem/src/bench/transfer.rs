//! Rows beyond the seed's table: device allocation, the transfer engine (pipelined and
//! batched uploads) and device-to-device copies. Each checks the data it moved afterwards.

use super::{pattern, row, wrong_data, Ctx, NativeOp, Row, PAGE};
use crate::measure::{compare, Op, Pair};
use crate::{units, CliError, CliResult};
use dotcompute_memory::{BufferState, TransferBatch, TransferEngine, TransferOptions, TransferReport, UnifiedBuffer};
use std::hint::black_box;

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
            f.error.as_deref().unwrap_or("no reason given")
        ))),
    }
}

impl Ctx {
    /// `ours` against a raw `Backend::write` of `src` into a fresh device allocation.
    pub(super) fn against_raw_write(&self, src: &[u8], ours: Op<'_>) -> CliResult<(Pair, String)> {
        let backend = &*self.backend;
        let mem = backend.allocate(src.len(), PAGE)?;
        let result = compare(&self.plan, &mut || Ok(backend.write(&mem, 0, src)?), ours);
        backend.free(mem)?;
        Ok((result?, format!("raw Backend::write ({}), Vec<u8> to device", backend.name())))
    }

    /// Pooled `allocate_device` + drop against a fresh device allocation (discrete backends).
    pub(super) fn device_alloc(&self, n: usize) -> CliResult<Row> {
        let pooled = &self.pooled;
        let mut ours = || -> CliResult {
            let b = pooled.allocate_device::<u8>(n)?;
            black_box(&b);
            drop(b);
            Ok(())
        };
        let (pair, baseline) = match self.against_native(NativeOp::AllocZeroed, n, &mut ours)? {
            Some(r) => r,
            None => {
                let backend = &*self.backend;
                let pair = compare(
                    &self.plan,
                    &mut || {
                        let m = backend.allocate(n, PAGE)?;
                        black_box(&m);
                        backend.free(m)?;
                        Ok(())
                    },
                    &mut ours,
                )?;
                (pair, format!("raw Backend::allocate + Backend::free ({})", backend.name()))
            }
        };
        let b = pooled.allocate_device::<u8>(n)?;
        if b.state() != BufferState::DeviceOnly {
            return Err(CliError::Other(format!("allocate_device gave a {:?} buffer, expected DeviceOnly", b.state())));
        }
        Ok(row(
            "Buffer allocation (device, pooled vs fresh)",
            n,
            baseline,
            "pooled allocate_device + drop, warm pool (device memory reused)",
            pair,
        ))
    }

    /// A large upload through the engine with default options (pipelined through the staging
    /// ring) against a raw write of the same bytes, and against the engine with
    /// `pipelining: false`.
    pub(super) fn pipelined(&self, n: usize) -> CliResult<Vec<Row>> {
        let src = pattern(n, 241);
        let engine = self.pooled.transfer_engine();
        let mut a = self.pooled.allocate::<u8>(n)?;
        let mut b = self.pooled.allocate::<u8>(n)?;
        let mut chunks = 0;
        let mut ours = || -> CliResult {
            let r = engine_upload(&engine, &src, &mut a, TransferOptions::default())?;
            chunks = r.transfers.first().map_or(0, |t| t.chunks);
            Ok(())
        };
        let (first, first_baseline) = match self.against_native(NativeOp::Write, n, &mut ours)? {
            Some(r) => r,
            None => self.against_raw_write(&src, &mut ours)?,
        };
        let unpipelined = TransferOptions { pipelining: false, ..TransferOptions::default() };
        let second = compare(
            &self.plan,
            &mut || engine_upload(&engine, &src, &mut b, unpipelined.clone()).map(drop),
            &mut ours,
        )?;
        for (buf, what) in [(&a, "pipelined engine upload"), (&b, "unpipelined engine upload")] {
            if buf.as_slice()? != &src[..] {
                return Err(wrong_data(what));
            }
        }
        let ours_text = format!(
            "engine upload, TransferOptions::default() (pipelined: {} chunk(s) of {})",
            chunks,
            units::bytes(TransferOptions::default().chunk_size as u64)
        );
        Ok(vec![
            row("Pipelined transfer", n, first_baseline, ours_text.clone(), first),
            row(
                "Pipelined transfer (vs pipelining: false)",
                n,
                "engine upload with pipelining: false (one transfer, not cut into chunks)".into(),
                ours_text,
                second,
            ),
        ])
    }

    /// On the simulated device with a bandwidth cap (so transfers take device time the host can
    /// overlap): the pipelined engine upload against the same upload with `pipelining: false`,
    /// which stages the whole transfer first and then sends it.
    pub(super) fn pipelined_capped(&self, n: usize, bandwidth: f64) -> CliResult<Row> {
        let sim = dotcompute_memory::MemoryManager::sim(dotcompute_memory::SimOptions {
            bandwidth: Some(bandwidth),
            ..Default::default()
        });
        let src = pattern(n, 97);
        let engine = sim.transfer_engine();
        let mut a = sim.allocate::<u8>(n)?;
        let mut b = sim.allocate::<u8>(n)?;
        let unpipelined = TransferOptions { pipelining: false, ..TransferOptions::default() };
        let pair = compare(
            &self.plan,
            &mut || engine_upload(&engine, &src, &mut b, unpipelined.clone()).map(drop),
            &mut || engine_upload(&engine, &src, &mut a, TransferOptions::default()).map(drop),
        )?;
        for buf in [&a, &b] {
            if buf.as_slice()? != &src[..] {
                return Err(wrong_data("bandwidth-capped engine upload"));
            }
        }
        Ok(row(
            "Pipelined transfer (sim, bandwidth cap)",
            n,
            format!("engine upload with pipelining: false on sim capped at {:.0} GB/s", bandwidth / 1e9),
            format!(
                "engine upload, pipelined in {} chunks through the staging ring",
                units::bytes(TransferOptions::default().chunk_size as u64)
            ),
            pair,
        ))
    }

    /// The seed's 10 MB rows through the engine: an engine upload against a raw write, and an
    /// engine download against a raw read, on the same backend.
    pub(super) fn engine_copies(&self, n: usize) -> CliResult<Vec<Row>> {
        let src = pattern(n, 61);
        let engine = self.pooled.transfer_engine();
        let mut a = self.pooled.allocate::<u8>(n)?;
        let (up, up_baseline) = self.against_raw_write(&src, &mut || {
            engine_upload(&engine, &src, &mut a, TransferOptions::default()).map(drop)
        })?;
        let backend = &*self.backend;
        let mem = backend.allocate(n, PAGE)?;
        backend.write(&mem, 0, &src)?;
        let mut raw_out = vec![0u8; n];
        let mut out = vec![0u8; n];
        let down = compare(&self.plan, &mut || Ok(backend.read(&mem, 0, &mut raw_out)?), &mut || {
            let mut batch = TransferBatch::new();
            batch.download(&a, &mut out)?;
            check_report(&engine.execute(batch, TransferOptions::default())?)
        });
        backend.free(mem)?;
        let down = down?;
        if out != src || raw_out != src {
            return Err(wrong_data("engine download"));
        }
        Ok(vec![
            row("Host-to-device copy (engine)", n, up_baseline, "engine upload, default options", up),
            row(
                "Device-to-host copy (engine)",
                n,
                format!("raw Backend::read ({}), device to Vec<u8>", backend.name()),
                "engine download, default options",
                down,
            ),
        ])
    }

    /// A pageable upload pipelined through pinned staging against the same upload from an
    /// already page-locked source (which skips staging): the issue's "≥ 0.95× of the pinned
    /// path". Skipped, with a message, where memory cannot be locked.
    pub(super) fn pageable_vs_pinned(&self, n: usize) -> CliResult<Vec<Row>> {
        let mut pinned = match dotcompute_memory::host::pinned::PinnedBuffer::<u8>::new(n) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("dcmem: skipping the pageable-vs-pinned row: {e}");
                return Ok(Vec::new());
            }
        };
        let src = pattern(n, 83);
        pinned.copy_from_slice(&src);
        let engine = self.pooled.transfer_engine();
        let mut a = self.pooled.allocate::<u8>(n)?;
        let mut b = self.pooled.allocate::<u8>(n)?;
        let pair = compare(
            &self.plan,
            &mut || {
                let mut batch = TransferBatch::new();
                batch.upload_pinned(&pinned, &mut b)?;
                check_report(&engine.execute(batch, TransferOptions::default())?)
            },
            &mut || engine_upload(&engine, &src, &mut a, TransferOptions::default()).map(drop),
        )?;
        if a.as_slice()? != &src[..] || b.as_slice()? != &src[..] {
            return Err(wrong_data("pinned/pageable upload"));
        }
        Ok(vec![row(
            "Pipelined transfer (pageable vs pinned source)",
            n,
            "engine upload_pinned from a page-locked source (no staging)".into(),
            "engine upload from pageable memory, pipelined through the staging ring",
            pair,
        )])
    }

    /// `count` small uploads as one engine batch (adaptive batching) against a loop of
    /// per-buffer `upload` calls.
    pub(super) fn batched(&self, count: usize, size: usize) -> CliResult<Row> {
        let sources: Vec<Vec<u8>> = (0..count).map(|i| pattern(size, 200 + (i % 50) as u8)).collect();
        let alloc = |_| self.pooled.allocate::<u8>(size);
        let mut ours_bufs = (0..count).map(alloc).collect::<Result<Vec<_>, _>>()?;
        let mut base_bufs = (0..count).map(alloc).collect::<Result<Vec<_>, _>>()?;
        let engine = self.pooled.transfer_engine();
        let mut batched = 0;
        let pair = compare(
            &self.plan,
            &mut || {
                for (src, dst) in sources.iter().zip(base_bufs.iter_mut()) {
                    dst.upload(src)?;
                }
                Ok(())
            },
            &mut || {
                let mut batch = TransferBatch::new();
                for (src, dst) in sources.iter().zip(ours_bufs.iter_mut()) {
                    batch.upload(src, dst)?;
                }
                let r = engine.execute(batch, TransferOptions::default())?;
                check_report(&r)?;
                batched = r.batched;
                Ok(())
            },
        )?;
        for (src, (o, b)) in sources.iter().zip(ours_bufs.iter().zip(&base_bufs)) {
            if o.as_slice()? != &src[..] {
                return Err(wrong_data("batched engine upload"));
            }
            if b.as_slice()? != &src[..] {
                return Err(wrong_data("per-buffer upload loop"));
            }
        }
        let each = units::bytes(size as u64);
        Ok(row(
            &format!("Batched transfers ({count} × {each})"),
            count * size,
            format!("loop of {count} UnifiedBuffer::upload calls, {each} each"),
            format!(
                "one engine batch of {count} uploads, TransferOptions::default() (adaptive batching: \
                 {batched} of {count} packed)"
            ),
            pair,
        ))
    }

    /// `copy_from_buffer` between two buffers whose data is on the device, against a raw
    /// `Backend::copy` between two device allocations.
    pub(super) fn device_to_device(&self, n: usize) -> CliResult<Row> {
        let data = pattern(n, 239);
        let mut src = self.pooled.allocate::<u8>(n)?;
        src.upload(&data)?;
        let mut dst = self.pooled.allocate::<u8>(n)?;
        dst.upload(&pattern(n, 7))?;
        let before = dst.metrics();
        let mut ours = || -> CliResult { Ok(dst.copy_from_buffer(&src)?) };
        let (pair, baseline) = match self.against_native(NativeOp::Copy, n, &mut ours)? {
            Some(r) => r,
            None => {
                let backend = &*self.backend;
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
                    .and_then(|()| compare(&self.plan, &mut || Ok(backend.copy(&from, 0, &to, 0, n)?), &mut ours));
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
        if !self.unified() && after.host_to_device != before.host_to_device {
            return Err(CliError::Other(
                "device-to-device copy went through the host: copy_from_buffer uploaded".into(),
            ));
        }
        if dst.as_slice()? != &data[..] {
            return Err(wrong_data("copy_from_buffer"));
        }
        Ok(row("Device-to-device copy", n, baseline, "dst.copy_from_buffer(&src), both current on the device", pair))
    }
}
