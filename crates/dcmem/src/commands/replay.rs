//! `dcmem replay FILE`: replays an allocation trace (our JSON Lines, or RMM's logging CSV)
//! through each allocator of `dotcompute_memory::replay` and compares them: speed, backend
//! allocations, peak live and reserved bytes, efficiency. The library does the replay; this
//! file reads the file, runs each allocator, and prints the table, the JSON or the chart.

use crate::plot::{self, plot_error, FAMILY};
use crate::{units, CliError, CliResult};
use dotcompute_memory::replay::{ReplayAllocator, ReplayOptions, ReplayPlan, ReplayResult};
use dotcompute_memory::trace::{self, ParsedTrace};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::prelude::*;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Options of `dcmem replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The trace: JSON Lines as `Diagnostics::trace` or `DCMEM_TRACE` write them, or RMM's
    /// logging CSV (header `Thread,Time,Action,Pointer,Size,Stream`); told apart by the first
    /// line.
    pub file: PathBuf,
    #[command(flatten)]
    pub backend: crate::BackendArg,
    /// Print exactly one JSON object (`file`, `events`, then one object per allocator) instead
    /// of the table.
    #[arg(long)]
    pub json: bool,
    /// Also draw the live and reserved bytes over the trace, for each allocator, into this PNG
    /// (from a second, sampled run of each).
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Replay each of the trace's threads on a thread of its own, in order (a buffer freed by
    /// another thread than the one that allocated it is handed over); by default every event
    /// runs on one thread, in the trace's order.
    #[arg(long)]
    pub threads: bool,
    /// Replay the trace this many times through each allocator, alternating between them, and
    /// report each allocator's median run (by operations per second).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

/// Traces with at least this many operations show a progress bar (on a terminal).
const LONG_TRACE: u64 = 100_000;
/// Points per line of the chart.
const PLOT_SAMPLES: usize = 1000;

fn progress_bar(total: u64, hidden: bool) -> ProgressBar {
    if hidden || total < LONG_TRACE {
        return ProgressBar::hidden();
    }
    // The stderr target draws nothing when stderr is not a terminal.
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} operations {wide_msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// Reads the trace at `path`: an unreadable file is the OS error with the path; a malformed
/// or empty trace is bad input (exit status 2).
fn read(path: &Path) -> CliResult<ParsedTrace> {
    let file =
        std::fs::File::open(path).map_err(|e| CliError::Other(format!("cannot open `{}`: {e}", path.display())))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(CliError::Other(format!(
            "`{}` is a directory; give the path of a trace file (JSON Lines or RMM's logging CSV)",
            path.display()
        )));
    }
    let parsed = trace::read(std::io::BufReader::new(file)).map_err(|e| match e {
        dotcompute_memory::Error::MalformedTrace { .. } => CliError::BadInput(format!("`{}`: {e}", path.display())),
        other => CliError::Other(format!("cannot read `{}`: {other}", path.display())),
    })?;
    if parsed.events.is_empty() {
        return Err(CliError::BadInput(format!(
            "`{}` holds no allocation events, so there is nothing to replay; give a trace with at least one \
             allocation (JSON Lines or RMM's logging CSV)",
            path.display()
        )));
    }
    Ok(parsed)
}

/// `dcmem replay`; returns what goes to stdout.
pub fn run(args: &ReplayArgs) -> CliResult<String> {
    if let Some(path) = &args.plot {
        plot::check_path(path)?;
    }
    let parsed = read(&args.file)?;
    let plan = ReplayPlan::new(&parsed.events)?;
    if plan.operations() == 0 {
        return Err(CliError::BadInput(format!(
            "`{}` holds {} event(s), all frees of ids not alive at the time (never allocated in the trace, or \
             freed already), so there is nothing to replay; give a trace that holds the allocations too",
            args.file.display(),
            plan.events()
        )));
    }
    let backend = dotcompute_memory::backend::open(&args.backend.name)?;
    let allocators = &ReplayAllocator::for_backend(backend.as_ref())[..];
    let runs = args.runs as usize;
    let pb = progress_bar(plan.operations().saturating_mul((allocators.len() * runs) as u64), args.json);
    let tick = |n: u64| pb.inc(n);
    let options = ReplayOptions::default().with_threads(args.threads);
    // Alternating, so that drift on a noisy machine hits every allocator alike. The results
    // grow run by run: reserving `--runs` of them up front could ask for more than there is.
    let mut all: Vec<Vec<ReplayResult>> = allocators.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (&allocator, done) in allocators.iter().zip(&mut all) {
            pb.set_message(allocator.key());
            done.push(plan.run(&backend, allocator, &options, Some(&tick))?);
        }
    }
    pb.finish_and_clear();
    let results: Vec<ReplayResult> = all.into_iter().filter_map(median).collect();
    if let Some(path) = &args.plot {
        let sampled = options.clone().with_threads(false).with_samples(PLOT_SAMPLES);
        let series =
            allocators.iter().map(|&a| plan.run(&backend, a, &sampled, None)).collect::<Result<Vec<_>, _>>()?;
        draw(path, &args.file, backend.name(), &series)?;
        eprintln!("dcmem: wrote chart to {}", path.display());
    }
    let backend = backend.name();
    Ok(if args.json {
        json_report(args, &parsed, &plan, backend, &results)?
    } else {
        table(args, &parsed, &plan, backend, &results)
    })
}

/// The run of median speed.
fn median(mut runs: Vec<ReplayResult>) -> Option<ReplayResult> {
    runs.sort_by(|a, b| a.ops_per_second.total_cmp(&b.ops_per_second));
    let middle = runs.len() / 2;
    runs.into_iter().nth(middle)
}

/// The figures of one allocator, as `--json` prints them.
fn figures(r: &ReplayResult) -> Value {
    json!({
        "ops_per_second": r.ops_per_second,
        "backend_allocations": r.backend_allocations,
        "peak_live_bytes": r.peak_live_bytes,
        "peak_reserved_bytes": r.peak_reserved_bytes,
        "efficiency": r.efficiency,
        "seconds": r.seconds,
    })
}

fn json_report(
    args: &ReplayArgs,
    parsed: &ParsedTrace,
    plan: &ReplayPlan,
    backend: &str,
    results: &[ReplayResult],
) -> CliResult<String> {
    let mut out = Map::new();
    out.insert("file".into(), json!(args.file.display().to_string()));
    out.insert("events".into(), json!(plan.events()));
    for r in results {
        out.insert(r.allocator.key().into(), figures(r));
    }
    out.insert("format".into(), json!(parsed.format.to_string()));
    out.insert("backend".into(), json!(backend));
    out.insert("threads".into(), json!(args.threads));
    out.insert("runs".into(), json!(args.runs));
    out.insert("trace_threads".into(), json!(plan.threads().len()));
    out.insert("operations".into(), json!(plan.operations()));
    out.insert("unknown_frees".into(), json!(plan.unknown_frees()));
    out.insert("failed_allocations".into(), json!(parsed.failed_allocations));
    let text = serde_json::to_string_pretty(&Value::Object(out))
        .map_err(|e| CliError::Other(format!("could not serialise the report: {e}")))?;
    Ok(text + "\n")
}

fn table(
    args: &ReplayArgs,
    parsed: &ParsedTrace,
    plan: &ReplayPlan,
    backend: &str,
    results: &[ReplayResult],
) -> String {
    let mut out = String::new();
    let threads = plan.threads().len();
    let _ = writeln!(
        out,
        "Replayed `{}` ({}: {} events, {} thread{}) on the `{backend}` backend, {}:",
        args.file.display(),
        parsed.format,
        plan.events(),
        threads,
        if threads == 1 { "" } else { "s" },
        if args.threads { "each trace thread on a thread of its own" } else { "on one thread, in trace order" },
    );
    if args.runs > 1 {
        let _ = writeln!(out, "(the median of {} runs of each allocator, alternating)", args.runs);
    }
    let percent = |e: f64| format!("{:.1}%", e * 100.0);
    let rows: [(&str, Cell); 5] = [
        ("ops per second", |r| ops(r.ops_per_second)),
        ("backend allocations", |r| r.backend_allocations.to_string()),
        ("peak live", |r| units::bytes(r.peak_live_bytes)),
        ("peak reserved", |r| units::bytes(r.peak_reserved_bytes)),
        ("efficiency", |r| format!("{:.1}%", r.efficiency * 100.0)),
    ];
    let _ = write!(out, "\n  {:<21}", "");
    for r in results {
        let _ = write!(out, "{:>16}", r.allocator.key());
    }
    out.push('\n');
    for (name, value) in rows {
        let _ = write!(out, "  {name:<21}");
        for r in results {
            let _ = write!(out, "{:>16}", value(r));
        }
        out.push('\n');
    }
    out.push('\n');
    for r in results {
        let _ = writeln!(out, "  {}: {}", r.allocator.key(), r.allocator.description());
    }
    let find = |a: ReplayAllocator| results.iter().find(|r| r.allocator == a);
    if let (Some(ours), Some(unpooled)) = (find(ReplayAllocator::Pooled), find(ReplayAllocator::Unpooled)) {
        let _ = writeln!(
            out,
            "  ours against unpooled: {} the operations per second, {} against {} backend allocations, \
             efficiency {} against {}",
            units::ratio(ours.ops_per_second / unpooled.ops_per_second),
            ours.backend_allocations,
            unpooled.backend_allocations,
            percent(ours.efficiency),
            percent(unpooled.efficiency),
        );
    }
    if let (Some(ours), Some(expandable)) = (find(ReplayAllocator::Pooled), find(ReplayAllocator::Expandable)) {
        let _ = writeln!(
            out,
            "  expandable against ours: {} the operations per second, efficiency {} against {}",
            units::ratio(expandable.ops_per_second / ours.ops_per_second),
            percent(expandable.efficiency),
            percent(ours.efficiency),
        );
    }
    if plan.unknown_frees() > 0 {
        let _ = writeln!(
            out,
            "  {} free(s) of ids not alive at the time were skipped (a log that starts mid-run, or a double free)",
            plan.unknown_frees()
        );
    }
    if parsed.failed_allocations > 0 {
        let _ = writeln!(out, "  {} failed allocation(s) in the log were skipped", parsed.failed_allocations);
    }
    out
}

/// One cell of the table: a figure of one allocator's result.
type Cell = fn(&ReplayResult) -> String;

/// `12345678.9` → `"12.3 M/s"`.
fn ops(per_second: f64) -> String {
    let (value, unit) = if per_second >= 1e9 {
        (per_second / 1e9, "G/s")
    } else if per_second >= 1e6 {
        (per_second / 1e6, "M/s")
    } else if per_second >= 1e3 {
        (per_second / 1e3, "k/s")
    } else {
        (per_second, "/s")
    };
    format!("{value:.1} {unit}")
}

/// Draws the live bytes of the trace and each allocator's reserved bytes over the operations.
fn draw(path: &Path, file: &Path, backend: &str, series: &[ReplayResult]) -> CliResult {
    plot::register_font()?;
    let (width, height) = (1400u32, 700u32);
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let last = series.iter().flat_map(|r| r.samples.last()).map(|s| s.operations).max().unwrap_or(1).max(1);
        let top = series
            .iter()
            .flat_map(|r| &r.samples)
            .map(|s| s.reserved_bytes.max(s.live_bytes))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let title = format!("dcmem replay - {} on {backend}", file.display());
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(90)
            // Headroom above the lines for the legend.
            .build_cartesian_2d(0u64..last, 0f64..mib(top as u64) * 1.3)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("operations (allocations and frees) replayed")
            .y_desc("MiB")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(plot_error)?;
        let colors = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
        for (r, color) in series.iter().zip(colors.iter().cycle()) {
            let reserved = r.samples.iter().map(|s| (s.operations, mib(s.reserved_bytes)));
            let color = *color;
            chart
                .draw_series(LineSeries::new(reserved, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(format!("reserved: {} ({})", r.allocator.key(), r.allocator.description()))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        // Live bytes last, on top (an allocator without a cache reserves exactly these).
        if let Some(first) = series.first() {
            let live = first.samples.iter().map(|s| (s.operations, mib(s.live_bytes)));
            chart
                .draw_series(LineSeries::new(live, BLACK.stroke_width(1)))
                .map_err(plot_error)?
                .label("live bytes (the trace's buffers)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(1)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    plot::save_png(&pixels, width, height, path)
}
