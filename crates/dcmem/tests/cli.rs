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

const OPERATIONS: [&str; 11] = [
    "Buffer allocation",
    "Host-to-device copy",
    "Device-to-host copy",
    "Buffer pool hit",
    "Zero-copy access",
    "Pipelined transfer",
    "Batched transfers",
    "Device-to-device copy",
    "Object pool get+return",
    "Array pool rent+return",
    "Random allocations",
];

/// The row whose operation is exactly `op`.
fn row<'a>(v: &'a Value, op: &str) -> &'a Value {
    let rows = v["rows"].as_array().expect("rows is an array");
    rows.iter().find(|r| r["operation"] == op).unwrap_or_else(|| panic!("no row named {op:?} in {v}"))
}

/// The rows whose operation starts with `prefix`.
fn rows_starting<'a>(v: &'a Value, prefix: &str) -> Vec<&'a Value> {
    let rows = v["rows"].as_array().expect("rows is an array");
    rows.iter().filter(|r| r["operation"].as_str().is_some_and(|s| s.starts_with(prefix))).collect()
}

fn text<'a>(r: &'a Value, key: &str) -> &'a str {
    r[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {r}"))
}

/// What every backend's table has beyond the seed's rows, with its baselines named.
fn check_transfer_rows(v: &Value, raw: &str, unified: bool) {
    let h2d = row(v, "Host-to-device copy");
    assert!(text(h2d, "ours").starts_with("upload("), "{h2d}");
    let via_host = row(v, "Host-to-device copy (copy_from + ensure_on_device)");
    assert!(text(via_host, "ours").contains("ensure_on_device"), "{via_host}");
    let piped = row(v, "Pipelined transfer");
    // The smoke size (3 MiB) is above the default 1 MiB chunk: staged, the engine cut it in 3;
    // the row says how the last call went (adaptive staging).
    let how = text(piped, "ours");
    assert!(
        how.contains("staged in 3 chunk(s) of 1 MiB") || how.contains("direct") || how.contains("inline"),
        "{piped}"
    );
    assert_eq!(piped["size_bytes"], 3 << 20);
    // Staged against staged: the ratio is the overlap alone.
    let vs_plain = row(v, "Pipelined transfer (vs pipelining: false)");
    assert!(text(vs_plain, "baseline").contains("staging: Always, pipelining: false"), "{vs_plain}");
    assert!(text(vs_plain, "ours").contains("staging: Always, pipelining: true"), "{vs_plain}");
    // Adaptive against always staged: discrete backends only (unified memory never stages).
    let adaptive = rows_starting(v, "Pipelined transfer (adaptive vs always staged)");
    if unified {
        assert!(adaptive.is_empty(), "{v}");
    } else {
        assert_eq!(adaptive.len(), 1, "{v}");
        assert!(text(adaptive[0], "baseline").contains("staging: Always"), "{}", adaptive[0]);
        assert!(text(adaptive[0], "ours").contains("TransferOptions::default()"), "{}", adaptive[0]);
    }
    let batched = rows_starting(v, "Batched transfers");
    assert_eq!(batched.len(), 2, "{v}");
    assert!(text(batched[0], "baseline").contains("blocking Backend::write"), "{}", batched[0]);
    assert!(text(batched[1], "baseline").contains("TransferEngine::execute calls"), "{}", batched[1]);
    assert!(batched.iter().all(|r| text(r, "ours").contains("engine batch")), "{v}");
    let d2d = row(v, "Device-to-device copy");
    assert!(text(d2d, "ours").contains("copy_from_buffer"), "{d2d}");
    if raw == "Backend" {
        assert!(text(piped, "baseline").contains("raw Backend::write"), "{piped}");
        assert!(text(d2d, "baseline").contains("raw Backend::copy"), "{d2d}");
    } else {
        assert!(text(piped, "baseline").starts_with("raw opencl3 clEnqueueWriteBuffer"), "{piped}");
        assert!(text(d2d, "baseline").starts_with("raw opencl3 clEnqueueCopyBuffer"), "{d2d}");
    }
}

fn num(r: &Value, key: &str) -> f64 {
    r[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {r}"))
}

/// The number just before `suffix` in `text` (digits, `.`), e.g. `"99.5"` from `"99.5% hits"`.
fn number_before(text: &str, suffix: &str) -> f64 {
    let end = text.find(suffix).unwrap_or_else(|| panic!("no {suffix:?} in {text:?}"));
    let head = &text[..end];
    let start = head.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |i| i + 1);
    head[start..].parse().unwrap_or_else(|e| panic!("no number before {suffix:?} in {text:?}: {e}"))
}

/// The object-pool, array-pool and random-allocation rows (the same on every backend, except
/// the device variant of the random workload, which only discrete backends have).
fn check_pool_rows(v: &Value, discrete: bool) {
    for (prefix, best_name, threads) in [
        ("Object pool get+return (vs ", "Object pool get+return", 1),
        ("Object pool get+return, 2 threads (vs ", "Object pool get+return, 2 threads", 2),
    ] {
        let each = rows_starting(v, prefix);
        let names: Vec<&str> = each.iter().map(|r| text(r, "operation")).collect();
        for baseline in ["Box::new", "ArrayQueue", "Mutex<Vec>", "lockfree-object-pool"] {
            assert!(names.contains(&format!("{prefix}{baseline})").as_str()), "{names:?}");
        }
        assert_eq!(each.len(), 4, "{names:?}");
        for r in &each {
            assert_eq!(r["size_bytes"], 64, "{r}");
            let ours = text(r, "ours");
            assert!(ours.starts_with(&format!("ObjectPool::get + drop, {threads} thread")), "{r}");
            // Every get but the first few of each thread was a pool hit.
            assert!(number_before(ours, "% hits") > 90.0, "{r}");
            if threads == 2 {
                // Mops/s printed for both sides agree with the ns per pair.
                let (b, o) = (num(r, "baseline_ns"), num(r, "ours_ns"));
                assert!((number_before(ours, " Mops/s total") - 1e3 / o).abs() <= 0.51, "{r}");
                assert!((number_before(text(r, "baseline"), " Mops/s total") - 1e3 / b).abs() <= 0.51, "{r}");
            }
        }
        // The summary row is the pairing with the fastest baseline, numbers unchanged.
        let best = row(v, best_name);
        let fastest = each.iter().min_by(|a, b| num(a, "baseline_ns").total_cmp(&num(b, "baseline_ns"))).unwrap();
        for key in ["baseline_ns", "ours_ns", "ratio", "size_bytes"] {
            assert_eq!(best[key], fastest[key], "{key}: {best} vs {fastest}");
        }
        assert_eq!(text(best, "baseline"), format!("fastest baseline of this run: {}", text(fastest, "baseline")));
    }
    for (op, ours) in [
        ("Array pool rent+return", "default options (reused array, not zeroed)"),
        ("Array pool rent+return (clear_on_return)", "clear_on_return: true"),
    ] {
        let rows: Vec<&Value> = v["rows"].as_array().unwrap().iter().filter(|r| r["operation"] == op).collect();
        let sizes: Vec<u64> = rows.iter().map(|r| r["size_bytes"].as_u64().unwrap()).collect();
        assert_eq!(sizes, [1 << 10, 64 << 10, 1 << 20], "{op}");
        for r in rows {
            assert!(text(r, "baseline").starts_with("vec![0u8; n] + drop"), "{r}");
            assert!(text(r, "ours").contains(ours), "{r}");
        }
    }
    let random = rows_starting(v, "Random allocations");
    assert_eq!(random.len(), if discrete { 2 } else { 1 }, "{v}");
    for r in random {
        let ours = text(r, "ours");
        assert!(ours.contains("64 allocations, log-uniform 1 KiB..256 KiB, at most 4 MiB live"), "{r}");
        assert!(text(r, "baseline").contains("enable_pooling: false"), "{r}");
        let hits = number_before(ours, "% pool hits");
        let reduction = number_before(ours, "% allocation reduction");
        let requests = number_before(ours, " block requests");
        let allocations = number_before(ours, " backend allocations");
        assert!((0.0..=100.0).contains(&hits) && requests >= 64.0, "{r}");
        // The reduction printed is the one the printed counts give (to the 2 decimals shown).
        let expected = 100.0 - allocations * 100.0 / requests;
        assert!((reduction - expected).abs() <= 0.006, "{reduction} vs {expected}: {r}");
        // Rows are per allocation: mean size of the smoke workload, between its bounds.
        assert!((1 << 10..=256 << 10).contains(&r["size_bytes"].as_u64().unwrap()), "{r}");
    }
    if discrete {
        assert!(text(row(v, "Random allocations (device)"), "ours").contains("allocate_device + drop"));
    }
}

/// The pooled-vs-fresh host allocation rows: one pair per smoke size, untouched and touched,
/// the same treatment of pages on both sides of each.
fn check_fresh_allocation_rows(v: &Value) {
    for (op, both) in [
        ("Buffer allocation (pooled vs fresh)", "no page touched"),
        ("Buffer allocation + first touch (pooled vs fresh)", "touch pages"),
    ] {
        let rows: Vec<&Value> = v["rows"].as_array().unwrap().iter().filter(|r| r["operation"] == op).collect();
        let sizes: Vec<u64> = rows.iter().map(|r| r["size_bytes"].as_u64().unwrap()).collect();
        assert_eq!(sizes, [4 << 10, 256 << 10], "{op}");
        for r in rows {
            assert!(text(r, "baseline").starts_with("unpooled ") && text(r, "baseline").contains(both), "{r}");
            assert!(text(r, "ours").starts_with("pooled allocate") && text(r, "ours").contains(both), "{r}");
        }
    }
}

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

/// The host-memory rows (`bench/host.rs`, issue 5) at their smoke sizes, with positive times.
fn check_host_rows(v: &Value) {
    let mut expected: Vec<(&str, Vec<u64>)> = vec![
        ("Aligned allocation (HostAlloc vs std::alloc::alloc)", vec![4 << 10, 64 << 10]),
        ("Aligned allocation (HostAlloc vs std::alloc::alloc_zeroed)", vec![4 << 10, 64 << 10]),
        ("First touch (huge pages vs base pages)", vec![4 << 20]),
        ("Large copy (ops::copy_bytes vs copy_from_slice)", vec![64 << 10, 1 << 20]),
        ("Large copy, cold (ops::copy_bytes vs copy_from_slice)", vec![1 << 20]),
        ("SIMD fill (ops::fill vs slice::fill)", vec![64 << 10]),
        ("SIMD convert (ops::convert vs iter().map().collect())", vec![64 << 10]),
    ];
    if cfg!(unix) {
        expected.push(("Shared buffer open + read (vs pipe)", vec![1 << 20]));
    }
    let rows = v["rows"].as_array().expect("rows is an array");
    for (op, sizes) in expected {
        let found: Vec<&Value> = rows.iter().filter(|r| r["operation"] == op).collect();
        let got: Vec<u64> = found.iter().map(|r| r["size_bytes"].as_u64().unwrap()).collect();
        assert_eq!(got, sizes, "{op}");
        for r in found {
            for key in ["baseline_ns", "ours_ns", "ratio"] {
                assert!(r[key].as_f64().is_some_and(|x| x > 0.0 && x.is_finite()), "{key} in {r}");
            }
        }
    }
    let touch = row(v, "First touch (huge pages vs base pages)");
    assert!(text(touch, "ours").contains("huge_pages(true)") && text(touch, "ours").contains(": got "), "{touch}");
    assert!(text(touch, "baseline").ends_with("got Base pages of 4 KiB"), "{touch}");
    let copy = row(v, "Large copy (ops::copy_bytes vs copy_from_slice)");
    assert!(text(copy, "baseline").starts_with("copy_from_slice"), "{copy}");
    assert!(text(copy, "ours").contains("(used Cached stores)"), "below the streaming threshold: {copy}");
    if cfg!(unix) {
        let shared = row(v, "Shared buffer open + read (vs pipe)");
        assert!(text(shared, "baseline").starts_with("pipe transfer"), "{shared}");
        assert!(text(shared, "ours").starts_with("MemoryManager::open_shared"), "{shared}");
    }
}

#[test]
fn bench_json_on_cpu_has_every_row_with_consistent_ratios() {
    let v = check_bench_json("cpu");
    check_host_rows(&v);
    let rows = v["rows"].as_array().unwrap();
    let copy = rows.iter().find(|r| r["operation"] == "Host-to-device copy").unwrap();
    assert!(copy["baseline"].as_str().unwrap().contains("copy_from_slice"), "{copy}");
    check_transfer_rows(&v, "Backend", true);
    check_pool_rows(&v, false);
    // Unified memory: there is no separate device allocation to pool.
    assert!(rows_starting(&v, "Buffer allocation (device").is_empty(), "{v}");
    check_fresh_allocation_rows(&v);
    // Unified memory: as_slice is a zero-copy view, so there is no as_slice copy row.
    assert!(rows_starting(&v, "Device-to-host copy (as_slice)").is_empty(), "{v}");
    assert_eq!(rows_starting(&v, "Device-to-host copy (copy_to)").len(), 1, "{v}");
    let access = row(&v, "Zero-copy access");
    assert!(text(access, "baseline").contains("sum") && text(access, "ours").contains("sum"), "{access}");
    // Unified memory: the small uploads are copied inline as one group, and the text says so.
    let batched = rows_starting(&v, "Batched transfers")[0];
    assert!(text(batched, "ours").contains("16 of 16 packed"), "{batched}");
    assert!(text(batched, "ours").contains("copied inline"), "{batched}");
    // The pooled manager really served the "ours" allocations from its pool.
    let pool = &v["pooled_manager"];
    assert!(pool["pool_hits"].as_u64().unwrap() > 0, "{pool}");
    assert!(pool["pool_hit_rate"].as_f64().unwrap() > 0.5, "{pool}");
}

#[test]
fn bench_json_on_sim_uses_the_raw_backend_as_baseline() {
    let v = check_bench_json("sim");
    // Host-memory rows are shown with --backend cpu only.
    assert!(rows_starting(&v, "Aligned allocation").is_empty() && rows_starting(&v, "Large copy").is_empty(), "{v}");
    let rows = v["rows"].as_array().unwrap();
    let h2d = rows.iter().find(|r| r["operation"] == "Host-to-device copy").unwrap();
    assert!(h2d["baseline"].as_str().unwrap().contains("Backend::write"), "{h2d}");
    let d2h = rows.iter().find(|r| r["operation"].as_str().unwrap().starts_with("Device-to-host copy")).unwrap();
    assert!(d2h["baseline"].as_str().unwrap().contains("Backend::read"), "{d2h}");
    check_transfer_rows(&v, "Backend", false);
    check_pool_rows(&v, true);
    for op in ["Host-to-device copy (engine)", "Device-to-host copy (engine)"] {
        let r = row(&v, op);
        assert!(text(r, "baseline").contains("raw Backend::"), "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Present where memory can be locked (root, or a large enough RLIMIT_MEMLOCK).
    if let Some(r) = rows_starting(&v, "Pipelined transfer (pageable vs pinned source)").first() {
        assert!(text(r, "baseline").contains("upload_pinned"), "{r}");
    }
    let capped = row(&v, "Pipelined transfer (sim, bandwidth cap)");
    assert!(text(capped, "baseline").contains("pipelining: false"), "{capped}");
    assert!(capped["ratio"].as_f64().unwrap() > 0.0, "{capped}");
    check_fresh_allocation_rows(&v);
    assert_eq!(rows_starting(&v, "Device-to-host copy (as_slice)").len(), 1, "{v}");
    let device_alloc = rows_starting(&v, "Buffer allocation (device, pooled vs fresh)");
    assert_eq!(device_alloc.len(), 2, "one per smoke size: {v}");
    for r in device_alloc {
        assert!(text(r, "baseline").contains("raw Backend::allocate + Backend::free"), "{r}");
    }
    // A discrete device stages small uploads: all 16 of the smoke batch were packed.
    let batched = rows_starting(&v, "Batched transfers")[0];
    assert!(text(batched, "ours").contains("16 of 16 packed"), "{batched}");
}

#[cfg(feature = "opencl")]
fn opencl_required() -> bool {
    dotcompute_memory::backend::required("opencl").expect("DCMEM_REQUIRE_OPENCL")
}

/// With the opencl feature: the copy and device-allocation rows are set against raw opencl3
/// calls. Skips with a message when no OpenCL platform is present (unless
/// `DCMEM_REQUIRE_OPENCL=1`, as in CI).
#[cfg(feature = "opencl")]
#[test]
fn bench_json_on_opencl_uses_raw_opencl3_baselines() {
    let o = dcmem(&["bench", "--smoke", "--json", "--backend", "opencl"]);
    if !o.status.success() && stderr(&o).contains("is unavailable") && !opencl_required() {
        eprintln!("skipping: {}", stderr(&o));
        return;
    }
    let v = check_bench_json("opencl");
    check_transfer_rows(&v, "opencl3", false);
    for op in ["Host-to-device copy", "Host-to-device copy (copy_from + ensure_on_device)"] {
        assert!(text(row(&v, op), "baseline").starts_with("raw opencl3 clEnqueueWriteBuffer"), "{op}");
    }
    // The engine rows compare with the backend's own raw calls on every backend.
    for r in
        rows_starting(&v, "Device-to-host copy").into_iter().filter(|r| !text(r, "operation").ends_with("(engine)"))
    {
        assert!(text(r, "baseline").starts_with("raw opencl3 clEnqueueReadBuffer"), "{r}");
    }
    let device_alloc = rows_starting(&v, "Buffer allocation (device, pooled vs fresh)");
    assert_eq!(device_alloc.len(), 2, "{v}");
    for r in device_alloc {
        // Plain clCreateBuffer: no fill, as ours does none.
        let baseline = text(r, "baseline");
        assert!(baseline.starts_with("raw opencl3 clCreateBuffer + release") && baseline.contains("no fill"), "{r}");
    }
    // The kernel rows: real kernels on our views against a hand-written opencl3 program.
    let kernel_loop = rows_starting(&v, "Kernel loop (");
    assert_eq!(kernel_loop.len(), 1, "{v}");
    assert!(text(kernel_loop[0], "operation").contains("upload 1 MiB, saxpy, read back"), "{}", kernel_loop[0]);
    assert!(text(kernel_loop[0], "baseline").starts_with("raw opencl3"), "{}", kernel_loop[0]);
    assert!(text(kernel_loop[0], "ours").contains("device_view_mut(ReadWrite)"), "{}", kernel_loop[0]);
    let chain = rows_starting(&v, "Kernel chain (");
    assert_eq!(chain.len(), 1, "{v}");
    assert!(text(chain[0], "baseline").starts_with("raw opencl3 naive"), "{}", chain[0]);
    assert!(text(chain[0], "ours").contains("one download"), "{}", chain[0]);
    let o = dcmem(&["bench", "--smoke", "--backend", "opencl"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("\"raw opencl3 ...\" = plain opencl3 calls"), "{}", stdout(&o));
}

/// With the cuda feature: on a machine without a GPU, a clear error (no panic); with one, the
/// generic rows against raw `Backend` calls.
#[cfg(feature = "cuda")]
#[test]
fn bench_on_cuda_runs_or_says_why_not() {
    let o = dcmem(&["bench", "--smoke", "--json", "--backend", "cuda"]);
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    if o.status.success() {
        let v = check_bench_json("cuda");
        check_transfer_rows(&v, "Backend", false);
        assert_eq!(rows_starting(&v, "Buffer allocation (device, pooled vs fresh)").len(), 2, "{v}");
    } else {
        assert_ne!(o.status.code(), Some(101), "must not panic: {err}");
        assert!(err.contains("backend `cuda` is unavailable: "), "{err}");
        assert!(err.contains("dcmem info"), "{err}");
        assert!(stdout(&o).is_empty());
    }
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
fn only_measures_the_matching_steps() {
    let o = dcmem(&["bench", "--smoke", "--json", "--only", "POOL HIT"]);
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status, stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("stdout is one JSON object");
    let ops: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| text(r, "operation")).collect();
    assert_eq!(ops, ["Buffer pool hit"], "{v}");

    let o = dcmem(&["bench", "--smoke", "--only", "no such step"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("\"no such step\" matches no step") && err.contains("buffer pool hit"), "{err}");
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
    // Each line is `NAME  STATUS  description or reason`.
    let status = |name: &str| line(name).split_whitespace().nth(1).unwrap_or_default().to_string();
    assert_eq!(status("cpu"), "available", "{out}");
    assert_eq!(status("sim"), "available", "{out}");
    assert_eq!(status("metal"), "unavailable", "{out}");
    for name in ["opencl", "cuda"] {
        let s = status(name);
        assert!(s == "available" || s == "unavailable", "{name} has status {s:?}:\n{out}");
        // An unavailable backend says why, beyond its status word.
        assert!(s == "available" || line(name).split_whitespace().count() > 3, "{name} gives no reason:\n{out}");
    }
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
        // The kernel doubled the 42.0 written on the host, on the device.
        assert!(out.contains("double every element"), "{backend}: no kernel ran:\n{out}");
        assert!(out.contains("buf.as_slice()?[0] = 84 "), "{backend}: the kernel's result is not read back:\n{out}");
    }
}

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

/// A `DCMEM_BACKEND` that is not UTF-8 is an error naming the variable for every command that
/// reads it, never a silent default; `--backend` on the command line still wins over it.
#[cfg(unix)]
#[test]
fn a_dcmem_backend_that_is_not_utf8_is_a_named_error() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"cp\xffu");
    let dir = TempDir::new("bad-backend-env");
    let file = dir.file("data.bin", &[1, 2, 3]);
    for args in [&["stats", "--json"][..], &["demo"], &["bench", "--smoke"], &["stream", &file]] {
        let o = Command::new(env!("CARGO_BIN_EXE_dcmem")).args(args).env("DCMEM_BACKEND", bad).output().unwrap();
        assert!(!o.status.success(), "{args:?} ran with a non-UTF-8 backend");
        let err = stderr(&o);
        assert!(err.contains("DCMEM_BACKEND") && err.contains("UTF-8") && err.contains(r"cp\xFFu"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_dcmem"))
        .args(["stats", "--json", "--backend", "cpu"])
        .env("DCMEM_BACKEND", bad)
        .output()
        .unwrap();
    assert!(o.status.success(), "--backend should win: {}", stderr(&o));
}

/// A scratch directory for one test, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dcmem-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn stream_moves_a_file_into_a_device_buffer_and_reports() {
    let dir = TempDir::new("stream");
    // 300 KiB + 5 bytes: 5 chunks of 64 KiB, the last one short.
    let data: Vec<u8> = (0..300 * 1024 + 5).map(|i: usize| (i.wrapping_mul(7) % 253) as u8).collect();
    let path = dir.file("data.bin", &data);
    for backend in ["sim", "cpu"] {
        let o = dcmem(&["stream", &path, "--backend", backend, "--chunk-size", "64K", "--verify", "--json"]);
        assert!(o.status.success(), "{backend}: stderr: {}", stderr(&o));
        let v: Value = serde_json::from_str(&stdout(&o)).expect("stdout is one JSON object");
        assert_eq!(v["backend"], backend);
        assert_eq!(v["chunk_size"], 65536);
        assert_eq!(v["verified"], true, "{v}");
        let report = &v["report"];
        assert_eq!(report["total_bytes"], data.len() as u64, "{report}");
        assert_eq!(report["failed"], 0);
        assert_eq!(report["retries"], 0);
        assert_eq!(report["transfers"][0]["chunks"], 5, "{report}");
        assert_eq!(report["transfers"][0]["direction"], "HostToDevice");
        assert!(v["wall_seconds"].as_f64().is_some_and(|s| s > 0.0), "{v}");
    }
    // The text summary names each figure.
    let o = dcmem(&["stream", &path, "--chunk-size", "100000", "--verify"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("on the `sim` backend"), "{out}");
    assert!(out.contains(&format!("bytes      {} ", data.len())), "{out}");
    // 307205 bytes in chunks of 100000: 4 chunks.
    assert!(out.contains("chunks     4\n"), "{out}");
    for word in ["duration", "bandwidth", "retries    0", "failed     0", "wall time", "equal to the file"] {
        assert!(out.contains(word), "no {word}:\n{out}");
    }
    // An empty file is an empty buffer, not an error.
    let empty = dir.file("empty.bin", &[]);
    let o = dcmem(&["stream", &empty, "--verify", "--json"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["report"]["total_bytes"], 0);
}

#[test]
fn stream_bad_input_is_a_clear_error() {
    let dir = TempDir::new("stream-bad");
    let missing = dir.0.join("no-such-file.bin");
    let missing = missing.to_str().unwrap();
    let o = dcmem(&["stream", missing]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("cannot open `{missing}`")) && err.contains("No such file"), "{err}");
    assert!(stdout(&o).is_empty());

    let o = dcmem(&["stream", dir.0.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));

    let path = dir.file("x.bin", &[1, 2, 3]);
    for (size, why) in [("0", "zero"), ("12Q", "unknown unit"), ("lots", "not a byte count")] {
        let o = dcmem(&["stream", &path, "--chunk-size", size]);
        assert!(!o.status.success(), "--chunk-size {size} accepted");
        let err = stderr(&o);
        assert!(err.contains("--chunk-size") && err.contains(why), "{size}: {err}");
    }
    let o = dcmem(&["stream", &path, "--backend", "tpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown backend `tpu`"), "{}", stderr(&o));
    for o in [dcmem(&["stream", missing]), dcmem(&["stream", &path, "--chunk-size", "0"])] {
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn stream_with_a_device_smaller_than_the_file_fails_cleanly() {
    // The sim backend's default capacity is 1 GiB; a sparse file of 2 GiB exceeds it without
    // using disk space (or memory: nothing is read before the allocation fails).
    let dir = TempDir::new("stream-big");
    let path = dir.0.join("sparse.bin");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(2 << 30).unwrap();
    let o = dcmem(&["stream", path.to_str().unwrap(), "--backend", "sim"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("dcmem: error: out of memory on sim: requested 2147483648 bytes"), "{err}");
    assert!(stdout(&o).is_empty());
}

#[cfg(feature = "opencl")]
#[test]
fn info_lists_opencl_devices_or_why_there_are_none() {
    let o = dcmem(&["info"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let opencl_line = out.lines().find(|l| l.starts_with("opencl ")).expect("an opencl line");
    if opencl_line.contains("unavailable") {
        assert!(!opencl_required(), "DCMEM_REQUIRE_OPENCL=1 but: {opencl_line}");
        assert!(out.contains("OpenCL devices: none ("), "{out}");
    } else {
        assert!(out.contains("OpenCL devices (DCMEM_OPENCL_PLATFORM / DCMEM_OPENCL_DEVICE"), "{out}");
        assert!(out.contains("  platform #0 \""), "{out}");
        let device = out.lines().find(|l| l.starts_with("    device #0 (#0 in its platform) \"")).expect("device #0");
        assert!(device.contains("global memory") && device.contains("largest allocation"), "{device}");
    }
}
