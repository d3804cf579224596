//! `dcmem bench`: the benchmark table, each row against a baseline measured in the same
//! run. See [`crate::measure`] for how times are taken, [`registry`] for every step and the
//! backends it applies to, [`sizes`] for the sizes of each mode, [`ctx`] for the context a row
//! is measured in, and the row groups: [`alloc`], [`copies`], [`views`], [`transfer`],
//! [`pools`], [`random`], [`host`] (host memory, on the unified backend) and, with the
//! `opencl` feature, `kernels`; [`native`] picks each row's backend-native baseline.

mod alloc;
mod copies;
mod ctx;
mod data;
mod host;
#[cfg(feature = "opencl")]
mod kernels;
mod native;
mod native_op;
#[cfg(feature = "opencl")]
mod opencl_baseline;
mod pools;
mod random;
mod registry;
mod sizes;
mod transfer;
mod views;

use crate::machine::Machine;
use crate::report::{table, PoolSummary, Report};
use crate::{BenchArgs, CliError, CliResult};
use ctx::Ctx;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sizes::Mode;

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

/// Measures every row that applies to the backend named in `args`.
pub fn measure(args: &BenchArgs) -> CliResult<Report> {
    if args.only.as_deref().is_some_and(|only| only.trim().is_empty()) {
        return Err(CliError::Other(format!(
            "--only {:?} is empty; give part of a step name, e.g. --only \"pool hit\", or leave --only out to \
             measure every step",
            args.only.as_deref().unwrap_or_default()
        )));
    }
    let ctx = Ctx::new(&args.backend.name, Mode::from_flags(args.smoke, args.quick))?;
    let steps = registry::steps(ctx.caps(), ctx.sizes());
    let pb = progress(steps.len() as u64, args.json);
    let only = args.only.as_deref().map(str::to_lowercase);
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for step in steps {
        if only.as_ref().is_some_and(|only| !step.name.to_lowercase().contains(only.as_str())) {
            skipped.push(step.name);
            pb.inc(1);
            continue;
        }
        pb.set_message(step.name.clone());
        rows.extend(step.measure(&ctx)?);
        ctx.trim()?;
        pb.inc(1);
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
    let s = ctx.pooled().statistics();
    Ok(Report {
        backend: ctx.backend().name().to_string(),
        backend_description: ctx.backend().description(),
        mode: ctx.mode_name(),
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
