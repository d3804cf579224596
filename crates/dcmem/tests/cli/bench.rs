//! `dcmem bench`: the rows of each backend, the table, the chart and `--only`.

use crate::bench_rows::*;
use crate::support::*;
use serde_json::Value;

#[test]
fn bench_json_on_cpu_has_every_row_with_consistent_ratios() {
    let v = check_bench_json("cpu");
    check_host_rows(&v);
    let rows = v["rows"].as_array().unwrap();
    let copy = rows.iter().find(|r| r["operation"] == "Host-to-device copy").unwrap();
    assert!(copy["baseline"].as_str().unwrap().contains("copy_from_slice"), "{copy}");
    check_transfer_rows(&v, "Backend", true);
    check_pool_rows(&v, false);
    check_trace_row(&v);
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
    check_trace_row(&v);
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

/// An empty or blank `--only` (an unset shell variable, say) is refused, not read as "every
/// step" or as text no step holds.
#[test]
fn a_blank_only_is_refused_before_measuring() {
    for blank in ["", "   "] {
        let o = dcmem(&["bench", "--smoke", "--json", "--only", blank]);
        let err = clean_failure(&o);
        assert!(err.contains("--only") && err.contains("empty") && err.contains("pool hit"), "{blank:?}: {err}");
        assert!(!err.contains("matches no step"), "{blank:?}: {err}");
    }
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
    let dir = TempDir::new("bench-plot-dir");
    let folder = dir.0.join("chart.png");
    std::fs::create_dir(&folder).unwrap();
    let o = dcmem(&["bench", "--smoke", "--plot", folder.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("is a directory") && err.contains("chart.png/chart.png"), "stderr: {err}");
    assert!(stdout(&o).is_empty(), "nothing measured, nothing printed");
}

/// A `--plot` file that cannot be created is refused before measuring, not after a whole run
/// whose table is then lost; the check itself leaves no file behind and no file changed.
#[cfg(target_os = "linux")]
#[test]
fn an_unwritable_plot_path_fails_before_measuring() {
    // No file can be created in /proc, even by root. With `--only` matching nothing, an error
    // from measuring would come first if the path were checked only after measuring.
    let o = dcmem(&["bench", "--smoke", "--only", "no such step", "--plot", "/proc/dcmem-chart.png"]);
    let err = clean_failure(&o);
    assert!(err.contains("--plot: cannot write `/proc/dcmem-chart.png`") && err.contains("directory"), "{err}");
    assert!(!err.contains("matches no step"), "measured before checking the path: {err}");

    let dir = TempDir::new("bench-plot-probe");
    let png = dir.0.join("chart.png");
    let o = dcmem(&["bench", "--smoke", "--only", "no such step", "--plot", png.to_str().unwrap()]);
    assert!(clean_failure(&o).contains("matches no step"));
    assert!(!png.exists(), "a failed run left a chart file behind");
    std::fs::write(&png, b"an older chart").unwrap();
    let o = dcmem(&["bench", "--smoke", "--only", "no such step", "--plot", png.to_str().unwrap()]);
    assert!(clean_failure(&o).contains("matches no step"));
    assert_eq!(std::fs::read(&png).unwrap(), b"an older chart", "a failed run changed the existing file");
}
