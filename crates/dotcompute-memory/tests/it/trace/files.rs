//! The traces kept in `benches/traces/` (made by `scripts/make-traces.py`): each reads, and
//! replays through every allocator with sane results, expandable segments holding less at the
//! peak than fixed ones; its peak live bytes are computed here from the file's text, apart from
//! the library's reader.

use dotcompute_memory::replay::{ReplayAllocator, ReplayOptions, ReplayPlan};
use dotcompute_memory::{backend, trace};
use std::collections::HashMap;
use std::path::PathBuf;

fn traces_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../benches/traces")
}

/// Events and peak live bytes of `text`, read line by line: `(op is an allocation, id,
/// bytes)` from each JSON object, or from the CSV's Action, Pointer and Size columns.
fn events_and_peak(text: &str, csv: bool) -> (u64, u64) {
    let rows: Vec<(bool, String, u64)> = if csv {
        text.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[2] == "allocate", f[3].to_string(), f[4].parse().unwrap())
            })
            .collect()
    } else {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["op"] == "alloc", v["id"].to_string(), v["bytes"].as_u64().unwrap())
            })
            .collect()
    };
    let mut live: HashMap<String, u64> = HashMap::new();
    let (mut now, mut peak) = (0u64, 0u64);
    for (alloc, id, bytes) in &rows {
        if *alloc {
            live.insert(id.clone(), *bytes);
            now += bytes;
            peak = peak.max(now);
        } else {
            now -= live.remove(id).expect("every free in these traces has its allocation");
        }
    }
    assert!(live.is_empty(), "the trace frees everything it allocates");
    (rows.len() as u64, peak)
}

#[test]
fn every_kept_trace_replays_with_sane_results() {
    let backend = backend::open("cpu").unwrap();
    // The lowest efficiency expandable segments may reach on each trace: partly used 2 MiB
    // granules cost the random pattern about a tenth (see docs/MEASUREMENTS.md).
    for (name, format, csv, expandable_floor) in [
        ("random.csv", trace::TraceFormat::RmmCsv, true, 0.88),
        ("training.jsonl", trace::TraceFormat::JsonLines, false, 0.95),
        ("inference.jsonl", trace::TraceFormat::JsonLines, false, 0.95),
    ] {
        let path = traces_dir().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.len() < 2 << 20, "{name} is {} bytes; keep the kept traces small", text.len());
        let (events, peak) = events_and_peak(&text, csv);
        let parsed = trace::parse(&text).unwrap();
        assert_eq!((parsed.format, parsed.events.len() as u64), (format, events), "{name}");
        assert_eq!(super::peak_live(&parsed.events), peak, "{name}");
        let plan = ReplayPlan::new(&parsed.events).unwrap();
        assert_eq!((plan.events(), plan.unknown_frees(), plan.peak_live_bytes()), (events, 0, peak), "{name}");
        let mut efficiency = HashMap::new();
        for allocator in ReplayAllocator::ALL.iter().copied() {
            let r = plan.run(&backend, allocator, &ReplayOptions::default(), None).unwrap();
            efficiency.insert(allocator, r.efficiency);
            assert_eq!((r.operations, r.peak_live_bytes), (events, peak), "{name} {allocator:?}");
            assert!(r.efficiency > 0.0 && r.efficiency <= 1.0, "{name} {allocator:?}: {r:?}");
            assert!(r.peak_reserved_bytes >= peak && r.backend_allocations > 0, "{name} {allocator:?}: {r:?}");
            assert!(r.ops_per_second.is_finite() && r.ops_per_second > 0.0, "{name} {allocator:?}: {r:?}");
        }
        let (fixed, expandable) = (efficiency[&ReplayAllocator::Pooled], efficiency[&ReplayAllocator::Expandable]);
        assert!(
            expandable >= expandable_floor && expandable > fixed,
            "{name}: expandable segments {expandable:.3}, fixed segments {fixed:.3}"
        );
    }
}
