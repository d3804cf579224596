//! `dcmem stats`: the statistics table and JSON after the workload, and the memory summary.

use crate::support::*;

#[test]
fn stats_text_ends_with_the_memory_summary() {
    let o = dcmem(&["stats", "--backend", "sim"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let text = stdout(&o);
    let summary = text.split("\nMemory summary: sim").nth(1).unwrap_or_else(|| panic!("no memory summary:\n{text}"));
    let row = |name: &str| -> Vec<String> {
        let line = summary
            .lines()
            .find(|l| l.starts_with(&format!("| {name} ")))
            .unwrap_or_else(|| panic!("no row {name}:\n{summary}"));
        line.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
    };
    // Metric, current, peak, total allocated, total freed.
    let buffers = row("Allocations (buffers)");
    assert_eq!(buffers[3], "17", "1 kept + 4 rounds × 4 sizes: {buffers:?}");
    let segments = row("Device segments");
    let current: usize = segments[1].parse().unwrap();
    assert!(current >= 1, "the workload's device parts are in at least one segment: {segments:?}");
    // One line per segment in the segment table, after its header and rule.
    let table = summary.split("\nSegments (").nth(1).unwrap_or_else(|| panic!("no segment table:\n{summary}"));
    assert_eq!(table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| Segment")).count(), current);
    assert!(summary.contains("Out-of-memory errors: 0"), "{summary}");
}

#[test]
fn stats_json_reflects_the_workload() {
    let v = json(&dcmem(&["stats", "--backend", "sim", "--json"]));
    assert_eq!(v["backend"], "sim");
    // 1 kept + 4 rounds × 4 sizes.
    assert_eq!(v["buffers_allocated"], 17);
    assert_eq!(v["active_allocations"], 1);
    assert!(v["pool_hits"].as_u64().unwrap() > 0);
    assert!(v["host_to_device"]["count"].as_u64().unwrap() >= 17);
    assert!(v["device_to_host"]["count"].as_u64().unwrap() >= 16);

    let o = dcmem(&["stats", "--backend", "sim"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("pool_hit_rate") && out.contains("host_to_device.bytes"), "{out}");
}

/// The key column of the statistics table, in order.
fn table_keys(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("  ")).filter_map(|l| l.split("  ").nth(1)).collect()
}

/// On cpu nothing is copied: the table shows one line for that, not 21 rows of zeros, while
/// `--json` keeps every field.
#[test]
fn stats_on_cpu_prints_no_rows_of_zero_transfers() {
    let o = dcmem(&["stats"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let keys = table_keys(&out);
    assert!(keys.contains(&"pool_hit_rate") && keys.contains(&"device_segments"), "{out}");
    assert!(!out.contains("host_to_device.") && !out.contains("device_to_device."), "{out}");
    let line = out.lines().find(|l| l.trim_start().starts_with("no transfers")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.trim_end().ends_with("host_to_device, device_to_host, device_to_device"), "{line}");
    // The line stands where the transfer rows would be: after device_segments.
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap_or_else(|| panic!("no {k}: {out}"));
    assert_eq!(at("no transfers"), at("device_segments") + 1, "{out}");

    let v = json(&dcmem(&["stats", "--json"]));
    for direction in ["host_to_device", "device_to_host", "device_to_device"] {
        let t = &v[direction];
        assert_eq!(t["count"], 0, "{v}");
        for key in ["bytes", "total_time_ns", "average_time_ns", "bandwidth_bytes_per_sec", "efficiency"] {
            assert!(t.get(key).is_some(), "{direction}.{key} missing from --json: {v}");
        }
    }
}

/// On sim the directions with transfers keep their rows; only the idle one is summarised.
#[test]
fn stats_on_sim_summarises_only_the_idle_direction() {
    let o = dcmem(&["stats", "--backend", "sim"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let keys = table_keys(&out);
    for key in ["host_to_device.count", "host_to_device.bytes", "device_to_host.efficiency"] {
        assert!(keys.contains(&key), "no {key}: {out}");
    }
    assert!(!out.contains("device_to_device."), "{out}");
    let line = out.lines().find(|l| l.trim_start().starts_with("no transfers")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.trim_end().ends_with("  device_to_device"), "{line}");
}

/// The header names the backend without an article ("a `opencl` manager" read wrong).
#[test]
fn stats_header_names_the_backend() {
    let mut backends = vec!["cpu", "sim"];
    if cfg!(feature = "opencl") {
        backends.push("opencl");
    }
    for backend in backends {
        let o = dcmem(&["stats", "--backend", backend]);
        #[cfg(feature = "opencl")]
        if backend == "opencl" && !o.status.success() && stderr(&o).contains("is unavailable") && !opencl_required() {
            eprintln!("skipping opencl: {}", stderr(&o));
            continue;
        }
        assert!(o.status.success(), "stderr: {}", stderr(&o));
        let out = stdout(&o);
        let header = out.lines().next().unwrap_or_default();
        assert!(header.starts_with(&format!("Statistics of the manager on the `{backend}` backend after")), "{header}");
        assert!(!header.contains("a `"), "{header}");
    }
}
