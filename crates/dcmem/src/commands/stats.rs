//! `dcmem stats`: a small workload on one manager, then its statistics (a table or JSON) and its
//! memory summary (`MemoryManager::memory_summary`: memory by kind and pool, and the segments).

use super::manager;
use crate::{CliError, CliResult};
use dotcompute_memory::{MemoryManager, MemoryStatistics};
use std::fmt::Write as _;

/// The small workload `dcmem stats` runs; returns the manager's statistics afterwards.
pub fn workload(mm: &MemoryManager) -> CliResult<MemoryStatistics> {
    // One buffer stays alive to the end, so active figures are non-zero.
    let mut keep = mm.allocate::<f32>(4096)?;
    keep.fill(1.0)?;
    keep.ensure_on_device()?;
    for _round in 0..4 {
        for n in [100usize, 4096, 100_000, 1 << 18] {
            let mut b = mm.allocate::<f32>(n)?;
            b.fill(2.0)?;
            b.ensure_on_device()?;
            b.mark_device_dirty()?;
            let sum: f32 = b.as_slice()?.iter().take(4).sum();
            if sum != 8.0 {
                return Err(CliError::Other(format!("stats workload: read back {sum}, expected 8")));
            }
        }
    }
    let s = mm.statistics();
    drop(keep);
    Ok(s)
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            let text = match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:.4}"),
                _ => n.to_string(),
            };
            out.push((prefix.to_string(), text));
        }
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// True for a transfer direction's statistics (`TransferStatistics`) with no transfer in it.
fn no_transfers(v: &serde_json::Value) -> bool {
    v.get("bandwidth_bytes_per_sec").is_some() && v.get("count").and_then(serde_json::Value::as_u64) == Some(0)
}

/// `MemoryStatistics` as an aligned two-column table (field order as in the struct). A transfer
/// direction with no transfers shows no rows of zeros: one line names every such direction
/// (`--json` keeps every field).
pub fn stats_table(s: &MemoryStatistics) -> CliResult<String> {
    let value = serde_json::to_value(s).map_err(|e| CliError::Other(format!("could not serialise statistics: {e}")))?;
    let mut rows = Vec::new();
    let mut idle = Vec::new();
    if let serde_json::Value::Object(map) = &value {
        for (k, v) in map {
            if no_transfers(v) {
                if idle.is_empty() {
                    // The summary line takes the place of the first direction left out.
                    rows.push(("no transfers".to_string(), String::new()));
                }
                idle.push(k.as_str());
            } else {
                flatten(k, v, &mut rows);
            }
        }
    }
    if let Some(line) = rows.iter_mut().find(|(k, _)| k == "no transfers") {
        line.1 = idle.join(", ");
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    Ok(rows.into_iter().map(|(k, v)| format!("  {k:<w$}  {v}\n")).collect())
}

/// `dcmem stats`.
pub fn run(backend: &str, json: bool) -> CliResult<String> {
    let mut out = String::new();
    let mm = manager(backend)?;
    let s = workload(&mm)?;
    if json {
        let text = serde_json::to_string_pretty(&s)
            .map_err(|e| CliError::Other(format!("could not serialise statistics: {e}")))?;
        say!(out, "{text}");
    } else {
        say!(
            out,
            "Statistics of the manager on the `{}` backend after a small workload (4 rounds of allocate f32 × 100, 4096, \
             100000, 262144 → fill → ensure_on_device → mark_device_dirty → as_slice → drop; one 4096-element \
             buffer kept alive):",
            mm.backend().name()
        );
        out += &stats_table(&s)?;
        say!(out);
        out += &mm.memory_summary();
    }
    Ok(out)
}
