//! `memory_summary`: the manager's statistics and its device pool's snapshot as one text table,
//! like `torch.cuda.memory_summary()`: memory by kind with current, peak and total figures
//! (allocated: the live buffers' bytes, host and device; active, reserved and cached: device
//! memory, split into the small and large pools), what the other caches hold, the counts (the
//! number of live buffers is counted per thread and has no peak), and every segment with its
//! fragmentation.

use super::snapshot::{MemorySnapshot, Usage};
use crate::stats::MemoryStatistics;
use crate::units::format_bytes_short;
use std::fmt::Write as _;

/// One row's cells: the metric, then current, peak, total allocated and total freed (`-` where
/// the figure is not kept).
type Cells = [String; 5];

fn bytes_row(name: &str, current: u64, peak: Option<u64>, allocated: Option<u64>, freed: Option<u64>) -> Cells {
    let b = |v: Option<u64>| v.map(format_bytes_short).unwrap_or_else(|| "-".into());
    [name.to_string(), b(Some(current)), b(peak), b(allocated), b(freed)]
}

fn usage_row(name: &str, u: &Usage, bytes: bool) -> Cells {
    let f = |v: u64| if bytes { format_bytes_short(v) } else { v.to_string() };
    [name.to_string(), f(u.current), f(u.peak), f(u.allocated), f(u.freed)]
}

fn count_row(name: &str, current: u64, allocated: u64, freed: u64) -> Cells {
    [name.to_string(), current.to_string(), "-".into(), allocated.to_string(), freed.to_string()]
}

/// The table `MemoryManager::memory_summary` returns.
pub(crate) fn render(stats: &MemoryStatistics, snap: &MemorySnapshot, device: &str) -> String {
    let pools = &snap.pools;
    let free_in_segments: u64 = snap.segments.iter().flat_map(|s| &s.blocks).filter(|b| b.free).map(|b| b.size).sum();
    let host_reserved = stats.reserved_bytes.saturating_sub(snap.device_reserved_bytes);
    let host_cached = stats.cached_bytes.saturating_sub(pools.cached_bytes.current + snap.magazine_bytes);
    let rows: Vec<Cells> = vec![
        bytes_row(
            "Allocated memory (live buffers, host and device)",
            stats.active_bytes,
            Some(stats.peak_bytes),
            Some(stats.total_bytes_allocated),
            Some(stats.total_bytes_freed),
        ),
        usage_row("Active device memory (blocks handed out)", &pools.active_bytes, true),
        usage_row("    from small pool", &pools.small_active_bytes, true),
        usage_row("    from large pool", &pools.large_active_bytes, true),
        usage_row("Reserved device memory (segments)", &pools.bytes, true),
        usage_row("    from small pool", &pools.small_bytes, true),
        usage_row("    from large pool", &pools.large_bytes, true),
        usage_row("Cached device memory (segments less active)", &pools.cached_bytes, true),
        usage_row("    from small pool", &pools.small_cached_bytes, true),
        usage_row("    from large pool", &pools.large_cached_bytes, true),
        bytes_row("    free blocks in segments", free_in_segments, None, None, None),
        bytes_row("    whole blocks in the front cache", snap.front_cached_bytes, None, None, None),
        bytes_row("Blocks parked in thread magazines (device ones are active)", snap.magazine_bytes, None, None, None),
        bytes_row("Cached host memory (the pool's host caches)", host_cached, None, None, None),
        bytes_row("Reserved host memory", host_reserved, None, None, None),
        count_row("Allocations (buffers)", stats.active_allocations, stats.buffers_allocated, stats.buffers_freed),
        usage_row("Device segments (granules when expandable)", &pools.segments, false),
        usage_row("    from small pool", &pools.small_segments, false),
        usage_row("    from large pool", &pools.large_segments, false),
    ];
    let header: Cells = ["Metric", "Current", "Peak", "Total alloc", "Total freed"].map(String::from);
    let mut out = String::new();
    let _ = writeln!(out, "Memory summary: {} ({device})", stats.backend);
    let _ = writeln!(
        out,
        "Out-of-memory errors: {} | segment allocations retried after releasing the cache: {} | pool hit rate {:.1}% \
         ({} of {} requests) | backend allocations {}, frees {}, evictions {}",
        snap.out_of_memory_errors,
        snap.segment_retries,
        stats.pool_hit_rate * 100.0,
        stats.pool_hits,
        stats.block_requests,
        stats.backend_allocations,
        stats.backend_frees,
        stats.evictions,
    );
    table(&mut out, &header, &rows);
    if !snap.segments.is_empty() {
        let _ = writeln!(
            out,
            "\nSegments (fragmentation = 1 - largest free block / free bytes, 0 when the free memory is one block):"
        );
        let header: [String; 7] =
            ["Segment", "Pool", "Size", "Blocks", "In use", "Largest free", "Fragmentation"].map(String::from);
        let rows: Vec<[String; 7]> = snap
            .segments
            .iter()
            .map(|s| {
                let free: Vec<u64> = s.blocks.iter().filter(|b| b.free).map(|b| b.size).collect();
                let (total_free, largest) = (free.iter().sum::<u64>(), free.iter().copied().max().unwrap_or(0));
                let fragmentation = if total_free == 0 { 0.0 } else { 1.0 - largest as f64 / total_free as f64 };
                [
                    s.id.to_string(),
                    if s.small_pool {
                        "small"
                    } else if s.splittable {
                        "large"
                    } else {
                        "large, oversize"
                    }
                    .into(),
                    format_bytes_short(s.size),
                    s.blocks.len().to_string(),
                    format_bytes_short(s.size - total_free),
                    format_bytes_short(largest),
                    format!("{fragmentation:.2}"),
                ]
            })
            .collect();
        table(&mut out, &header, &rows);
    }
    out
}

/// Writes `rows` under `header` as a text table with `|` borders, columns padded to fit.
fn table<const N: usize>(out: &mut String, header: &[String; N], rows: &[[String; N]]) {
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String; N]| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let _ = if i == 0 { write!(out, "| {cell:<w$} ") } else { write!(out, "| {cell:>w$} ") };
        }
        let _ = writeln!(out, "|");
    };
    let rule = |out: &mut String| {
        for w in widths {
            let _ = write!(out, "|{}", "-".repeat(w + 2));
        }
        let _ = writeln!(out, "|");
    };
    line(out, header);
    rule(out);
    for row in rows {
        line(out, row);
    }
}
