//! Runs the built `dcmem` binary and checks what it prints and how it exits.
//!
//! `bench` runs with the hidden `--smoke` flag (tiny sizes, three samples), so these tests
//! check the command's output format and arithmetic, never its timings.

use serde_json::Value;
use std::process::{Command, Output};

fn dcmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dcmem"))
        .args(args)
        .env_remove("DCMEM_BACKEND")
        .output()
        .expect("the dcmem binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

const OPERATIONS: [&str; 5] =
    ["Buffer allocation", "Host-to-device copy", "Device-to-host copy", "Buffer pool hit", "Zero-copy access"];

fn check_bench_json(backend: &str) -> Value {
    let o = dcmem(&["bench", "--smoke", "--json", "--backend", backend]);
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status, stderr(&o));
    // Exactly one JSON value on stdout, nothing else.
    let v: Value = serde_json::from_str(&stdout(&o)).expect("stdout is one JSON object");
    assert_eq!(v["backend"], backend);
    let machine = &v["machine"];
    assert!(machine["cpu"].as_str().is_some_and(|s| !s.is_empty()), "machine: {machine}");
    assert!(machine["logical_cores"].as_u64().is_some_and(|n| n >= 1), "machine: {machine}");
    assert!(machine["os"].as_str().is_some_and(|s| !s.is_empty()), "machine: {machine}");
    let rows = v["rows"].as_array().expect("rows is an array");
    for op in OPERATIONS {
        assert!(rows.iter().any(|r| r["operation"].as_str().is_some_and(|s| s.starts_with(op))), "no row for {op}");
    }
    for r in rows {
        for key in ["operation", "baseline"] {
            assert!(r[key].as_str().is_some_and(|s| !s.is_empty()), "{key} missing in {r}");
        }
        assert!(r["size_bytes"].as_u64().is_some_and(|n| n > 0), "size_bytes in {r}");
        let b = r["baseline_ns"].as_f64().expect("baseline_ns is a number");
        let ours = r["ours_ns"].as_f64().expect("ours_ns is a number");
        let ratio = r["ratio"].as_f64().expect("ratio is a number");
        assert!(b > 0.0 && b.is_finite() && ours > 0.0 && ours.is_finite(), "times in {r}");
        let expected = b / ours;
        assert!((ratio - expected).abs() <= 1e-9 * expected, "ratio {ratio} != {b} / {ours}");
    }
    v
}

#[test]
fn bench_json_on_cpu_has_every_row_with_consistent_ratios() {
    let v = check_bench_json("cpu");
    let rows = v["rows"].as_array().unwrap();
    let copy = rows.iter().find(|r| r["operation"] == "Host-to-device copy").unwrap();
    assert!(copy["baseline"].as_str().unwrap().contains("copy_from_slice"), "{copy}");
    // The pooled manager really served the "ours" allocations from its pool.
    let pool = &v["pooled_manager"];
    assert!(pool["pool_hits"].as_u64().unwrap() > 0, "{pool}");
    assert!(pool["pool_hit_rate"].as_f64().unwrap() > 0.5, "{pool}");
}

#[test]
fn bench_json_on_sim_uses_the_raw_backend_as_baseline() {
    let v = check_bench_json("sim");
    let rows = v["rows"].as_array().unwrap();
    let h2d = rows.iter().find(|r| r["operation"] == "Host-to-device copy").unwrap();
    assert!(h2d["baseline"].as_str().unwrap().contains("Backend::write"), "{h2d}");
    let d2h = rows.iter().find(|r| r["operation"].as_str().unwrap().starts_with("Device-to-host copy")).unwrap();
    assert!(d2h["baseline"].as_str().unwrap().contains("Backend::read"), "{d2h}");
}

#[test]
fn bench_table_and_plot() {
    let dir = std::env::temp_dir().join(format!("dcmem-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("chart.png");
    let o = dcmem(&["bench", "--smoke", "--plot", png.to_str().unwrap()]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    for word in ["Operation", "Baseline", "Ours", "Ratio"].into_iter().chain(OPERATIONS) {
        assert!(out.contains(word), "table lacks {word}:\n{out}");
    }
    let bytes = std::fs::read(&png).expect("the chart was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // Width and height from the IHDR chunk: the chart is 1400 px wide and has a row per line.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(width, 1400);
    assert!(height > 300, "height {height}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_plot_path_fails_before_measuring() {
    let o = dcmem(&["bench", "--smoke", "--plot", "chart.svg"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(".png"), "stderr: {}", stderr(&o));
    assert!(stdout(&o).is_empty(), "nothing measured, nothing printed");
    let o = dcmem(&["bench", "--smoke", "--plot", "/nonexistent-dir-for-dcmem/x.png"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not exist"), "stderr: {}", stderr(&o));
}

#[test]
fn unknown_backend_lists_valid_names() {
    let o = dcmem(&["bench", "--smoke", "--backend", "tpu"]);
    assert!(!o.status.success());
    assert_ne!(o.status.code(), Some(101), "must not panic");
    let err = stderr(&o);
    assert!(err.contains("tpu"), "{err}");
    for name in ["cpu", "sim", "opencl", "cuda"] {
        assert!(err.contains(name), "{name} not listed: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(stdout(&o).is_empty());
}

#[cfg(not(feature = "opencl"))]
#[test]
fn compiled_out_backend_says_how_to_get_it() {
    let o = dcmem(&["bench", "--smoke", "--backend", "opencl"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--features opencl"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn info_lists_every_backend() {
    let o = dcmem(&["info"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let line = |name: &str| {
        out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no {name}:\n{out}"))
    };
    assert!(line("cpu").contains("available"), "{out}");
    assert!(!line("cpu").contains("unavailable"), "{out}");
    assert!(!line("sim").contains("unavailable"), "{out}");
    assert!(line("metal").contains("unavailable"), "{out}");
    assert!(line("opencl").contains("available"), "{out}");
    assert!(line("cuda").contains("available"), "{out}");
    assert!(out.contains("memory: total"), "{out}");
}

#[test]
fn demo_walks_through_the_states() {
    for backend in ["sim", "cpu"] {
        let o = dcmem(&["demo", "--backend", backend]);
        assert!(o.status.success(), "stderr: {}", stderr(&o));
        let out = stdout(&o);
        for state in ["HostOnly", "Synchronized", "HostDirty", "DeviceDirty"] {
            assert!(out.contains(state), "{backend}: no {state}:\n{out}");
        }
        // The conflict, the length mismatch and the bad range are shown as errors.
        assert_eq!(out.matches("-> Error:").count(), 3, "{out}");
        assert!(out.contains("concurrent modification"), "{out}");
        assert!(out.contains("pool_hit_rate"), "{out}");
    }
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

#[test]
fn backend_defaults_to_dcmem_backend_env() {
    let o = Command::new(env!("CARGO_BIN_EXE_dcmem"))
        .args(["stats", "--json"])
        .env("DCMEM_BACKEND", "sim")
        .output()
        .expect("the dcmem binary runs");
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["backend"], "sim");
    // --backend wins over the environment.
    let o = Command::new(env!("CARGO_BIN_EXE_dcmem"))
        .args(["stats", "--json", "--backend", "cpu"])
        .env("DCMEM_BACKEND", "sim")
        .output()
        .expect("the dcmem binary runs");
    let v: Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["backend"], "cpu");
}
