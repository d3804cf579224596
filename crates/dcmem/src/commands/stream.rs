//! `dcmem stream FILE`: streams a file into a device buffer through the transfer engine's
//! staging ring (`TransferEngine::stream_to_device`), with a progress bar, then prints the
//! transfer report. The file is read chunk by chunk: no host copy of the whole file is made
//! (the buffer is allocated device-only), except by `--verify`, which reads it back.

use crate::{units, CliError, CliResult};
use dotcompute_memory::{TransferOptions, TransferReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Options of `dcmem stream`.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// File to stream into a device buffer of its size.
    pub file: PathBuf,
    #[command(flatten)]
    pub backend: crate::BackendArg,
    /// Bytes per chunk (staging block size): a number with an optional unit, e.g. 65536, 64K,
    /// 64KiB, 4M, 1MB (K/M/G and KiB/MiB/GiB are binary, kB/MB/GB decimal).
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes, default_value = "1MiB")]
    pub chunk_size: usize,
    /// Afterwards read the device buffer back and compare it with the file.
    #[arg(long)]
    pub verify: bool,
    /// Print one JSON object (file, backend, chunk size, the full transfer report) instead of
    /// the summary.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Output<'a> {
    file: String,
    backend: &'a str,
    chunk_size: usize,
    /// Wall time of the whole `stream_to_device` call, staging setup included, in seconds.
    wall_seconds: f64,
    /// `true` after a successful `--verify`, `null` without one (a failed one is an error).
    verified: Option<bool>,
    report: &'a TransferReport,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> CliError {
    CliError::Other(format!("cannot {what} `{}`: {e}", path.display()))
}

fn progress_bar(total: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    // The stderr target draws nothing when stderr is not a terminal.
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// Compares the file at `path` with `device` (the bytes read back), chunk by chunk.
fn verify(path: &Path, device: &[u8]) -> CliResult<Option<u64>> {
    let mut file = File::open(path).map_err(|e| io_error(path, "reopen", e))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut offset = 0usize;
    loop {
        let n = file.read(&mut chunk).map_err(|e| io_error(path, "read", e))?;
        if n == 0 {
            break;
        }
        let Some(expected) = device.get(offset..offset + n) else {
            return Err(CliError::Other(format!(
                "`{}` grew while it was streamed: it now has more than the {} bytes streamed",
                path.display(),
                device.len()
            )));
        };
        if let Some(i) = expected.iter().zip(&chunk[..n]).position(|(a, b)| a != b) {
            return Ok(Some((offset + i) as u64));
        }
        offset += n;
    }
    if offset != device.len() {
        return Err(CliError::Other(format!(
            "`{}` shrank while it was streamed: {} bytes now, {} streamed",
            path.display(),
            offset,
            device.len()
        )));
    }
    Ok(None)
}

/// Refuses what is not a regular file: a directory, or a device, pipe or socket, whose size
/// is not its length.
fn check_regular(path: &Path, meta: &std::fs::Metadata) -> CliResult<()> {
    if meta.is_dir() {
        return Err(CliError::Other(format!("`{}` is a directory; give a file to stream", path.display())));
    }
    if !meta.is_file() {
        return Err(CliError::Other(format!(
            "`{}` is not a regular file (a device, a pipe or a socket), so its size is not known; give a regular \
             file to stream",
            path.display()
        )));
    }
    Ok(())
}

/// `dcmem stream`; returns what goes to stdout.
pub fn run(args: &StreamArgs) -> CliResult<String> {
    let path = &args.file;
    // Checked before opening (opening a named pipe waits for a writer) and again on what was
    // opened.
    if let Ok(meta) = std::fs::metadata(path) {
        check_regular(path, &meta)?;
    }
    let mut file = File::open(path).map_err(|e| io_error(path, "open", e))?;
    let meta = file.metadata().map_err(|e| io_error(path, "read the size of", e))?;
    check_regular(path, &meta)?;
    let len = usize::try_from(meta.len()).map_err(|_| {
        CliError::Other(format!("`{}` has {} bytes, more than this machine can address", path.display(), meta.len()))
    })?;
    let mm = super::manager(&args.backend.name)?;
    let mut buf = mm.allocate_device::<u8>(len)?;
    let options = TransferOptions::default().with_chunk_size(args.chunk_size);
    let pb = progress_bar(len as u64, args.json);
    let started = std::time::Instant::now();
    let report = mm.transfer_engine().stream_to_device(&mut file, &mut buf, options, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    });
    let wall = started.elapsed();
    pb.finish_and_clear();
    let report = report.map_err(|e| match e {
        dotcompute_memory::Error::ReaderLengthMismatch { expected, actual, at_least, .. } => CliError::Other(format!(
            "`{}` yielded {}{actual} bytes where its size said {expected}: it changed while it was streamed, or its \
             size is not its length (as for files under /proc); stream a regular file that nothing writes to \
             meanwhile",
            path.display(),
            if at_least { "at least " } else { "" }
        )),
        other => other.into(),
    })?;
    if let Some(f) = report.failures().next() {
        return Err(CliError::Other(format!(
            "streaming `{}` failed after {} attempt(s): {}",
            path.display(),
            f.attempts,
            f.error.as_ref().map_or("no reason given", |e| e.message())
        )));
    }
    let mismatch = if args.verify { Some(verify(path, buf.as_slice()?)?) } else { None };
    if let Some(Some(offset)) = mismatch {
        return Err(CliError::Other(format!(
            "verification failed: the device buffer read back differs from `{}` at byte {offset}",
            path.display()
        )));
    }
    let verified = mismatch.is_some();
    Ok(if args.json {
        let out = Output {
            file: path.display().to_string(),
            backend: mm.backend().name(),
            chunk_size: args.chunk_size,
            wall_seconds: wall.as_secs_f64(),
            verified: verified.then_some(true),
            report: &report,
        };
        serde_json::to_string_pretty(&out)
            .map_err(|e| CliError::Other(format!("could not serialise the report: {e}")))?
            + "\n"
    } else {
        summary(args, mm.backend().name(), &report, wall, verified)
    })
}

fn summary(
    args: &StreamArgs,
    backend: &str,
    report: &TransferReport,
    wall: std::time::Duration,
    verified: bool,
) -> String {
    let mut out = String::new();
    let chunks: u32 = report.transfers.iter().map(|t| t.chunks).sum();
    let _ = writeln!(
        out,
        "Streamed `{}` into a device buffer on the `{backend}` backend, in chunks of {}:",
        args.file.display(),
        units::bytes(args.chunk_size as u64)
    );
    let rows = [
        ("bytes", format!("{} ({})", report.total_bytes, units::bytes(report.total_bytes))),
        ("duration", units::nanos(report.duration.as_nanos() as f64)),
        ("bandwidth", units::rate(report.average_bandwidth)),
        ("chunks", chunks.to_string()),
        ("retries", report.retries.to_string()),
        ("failed", report.failed.to_string()),
        (
            "wall time",
            format!(
                "{} for the whole call, staging setup included ({})",
                units::nanos(wall.as_nanos() as f64),
                units::rate(report.total_bytes as f64 / wall.as_secs_f64().max(1e-9))
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<10} {v}");
    }
    if verified {
        let _ = writeln!(out, "  verified   read back from the device: equal to the file");
    }
    out
}
