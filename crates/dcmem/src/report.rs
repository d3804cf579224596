//! What `dcmem bench` produces: the rows, the pooled manager's summary and the machine, with the
//! table text; the plot and `--json` read the same [`Report`].

use crate::machine::Machine;
use crate::measure::Pair;
use crate::units;
use serde::Serialize;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured; starts with the table's wording ("Buffer allocation", ...).
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

impl Row {
    /// A row from the medians of one [`Pair`]; the ratio is computed here.
    pub fn new(operation: &str, size: usize, baseline: String, ours: impl Into<String>, pair: Pair) -> Row {
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
