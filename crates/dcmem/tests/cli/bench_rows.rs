//! Checks of the rows `dcmem bench --smoke --json` prints, shared by the per-backend tests.

use crate::support::{dcmem, json, num, number_before, row, rows_starting, text};
use serde_json::Value;

/// The operations of the DotCompute.Memory benchmark table: every backend's table has a row starting with each.
pub const OPERATIONS: [&str; 11] = [
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

/// What every backend's table has beyond those rows, with its baselines named.
pub fn check_transfer_rows(v: &Value, raw: &str, unified: bool) {
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

/// The object-pool, array-pool and random-allocation rows (the same on every backend, except
/// the device variant of the random workload, which only discrete backends have).
pub fn check_pool_rows(v: &Value, discrete: bool) {
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
pub fn check_fresh_allocation_rows(v: &Value) {
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

/// Runs `bench --smoke --json` on `backend` and checks what every row of every backend has.
pub fn check_bench_json(backend: &str) -> Value {
    // Exactly one JSON value on stdout, nothing else.
    let v = json(&dcmem(&["bench", "--smoke", "--json", "--backend", backend]));
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

/// The host-memory rows (`bench/host.rs`) at their smoke sizes, with positive times.
pub fn check_host_rows(v: &Value) {
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

/// The trace-recording row: a 4 KiB pooled allocate + drop with and without the trace.
pub fn check_trace_row(v: &Value) {
    let r = row(v, "Trace recording");
    assert_eq!(r["size_bytes"], 4096, "{r}");
    assert!(text(r, "baseline").contains("no trace"), "{r}");
    assert!(text(r, "ours").contains("ManagerOptions::trace"), "{r}");
    assert!(num(r, "ratio") > 0.0, "{r}");
}
