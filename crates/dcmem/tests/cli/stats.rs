//! `dcmem stats`: the statistics table and JSON after the workload, and the pool snapshot.

use crate::support::*;
use serde_json::Value;

#[test]
fn stats_text_ends_with_the_device_pool_snapshot() {
    let o = dcmem(&["stats", "--backend", "sim"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let text = stdout(&o);
    let summary = text.lines().find(|l| l.starts_with("Device pool now: ")).unwrap_or_else(|| panic!("{text}"));
    // The workload keeps one buffer alive, so at least one segment with something handed out.
    let segments = number_before(summary, " segment(s)");
    assert!(segments >= 1.0, "{summary}");
    let lines = text.lines().filter(|l| l.trim_start().starts_with("segment ")).count();
    assert_eq!(lines as f64, segments, "one line per segment:\n{text}");
    assert!(summary.contains("fragmentation") && summary.contains("magazines hold"), "{summary}");
}

#[test]
fn stats_json_reflects_the_workload() {
    let o = dcmem(&["stats", "--backend", "sim", "--json"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["backend"], "sim");
    // 1 kept + 4 rounds × 4 sizes.
    assert_eq!(v["buffers_allocated"], 17);
    assert_eq!(v["active_allocations"], 1);
    assert!(v["pool_hits"].as_u64().unwrap() > 0);
    assert!(v["host_to_device"]["count"].as_u64().unwrap() >= 17);
    assert!(v["device_to_host"]["count"].as_u64().unwrap() >= 16);

    let o = dcmem(&["stats"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("pool_hit_rate") && out.contains("host_to_device.bytes"), "{out}");
}
