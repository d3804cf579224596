//! `dcmem replay FILE`: the kept traces and a small one through every allocator, the JSON keys,
//! the table, the chart, and bad input (exit status 2 for a malformed or empty trace).

use crate::support::*;
use serde_json::Value;

fn kept(name: &str) -> String {
    format!("{}/../../benches/traces/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Live bytes peak at 3000 (ids 1 and 2); one free of an id never allocated.
const SMALL_CSV: &str = "Thread,Time,Action,Pointer,Size,Stream\n\
                         1,0.1,allocate,0x1000,1000,0x0\n\
                         2,0.2,allocate,0x2000,2000,0x0\n\
                         1,0.3,deallocate,0x9000,64,0x0\n\
                         2,0.4,deallocate,0x1000,1000,0x0\n\
                         1,0.5,deallocate,0x2000,2000,0x0\n";

#[test]
fn replay_json_has_one_object_per_allocator() {
    let dir = TempDir::new("replay-json");
    let path = dir.file("small.csv", SMALL_CSV.as_bytes());
    for backend in ["cpu", "sim"] {
        for threads in [false, true] {
            let mut args = vec!["replay", path.as_str(), "--backend", backend, "--json"];
            if threads {
                args.push("--threads");
            }
            let v = json(&dcmem(&args));
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(&keys[..4], ["file", "events", "ours", "unpooled"], "{v}");
            assert_eq!((v["file"].as_str(), v["events"].as_u64()), (Some(path.as_str()), Some(5)), "{v}");
            assert_eq!((v["unknown_frees"].as_u64(), v["operations"].as_u64()), (Some(1), Some(4)), "{v}");
            assert_eq!((v["backend"].as_str(), v["threads"].as_bool()), (Some(backend), Some(threads)), "{v}");
            assert_eq!(v["runs"], 3, "{v}");
            for side in ["ours", "unpooled"] {
                let s = &v[side];
                let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
                let expected =
                    ["ops_per_second", "backend_allocations", "peak_live_bytes", "peak_reserved_bytes", "efficiency"];
                assert_eq!(&keys[..5], expected, "{side}: {s}");
                assert_eq!(s["peak_live_bytes"], 3000, "{side}: {s}");
                assert!(num(s, "ops_per_second") > 0.0, "{side}: {s}");
                let efficiency = num(s, "efficiency");
                assert!(efficiency > 0.0 && efficiency <= 1.0, "{side}: {s}");
            }
            assert_eq!(v["unpooled"]["backend_allocations"], 2, "{v}");
            assert_eq!(v["unpooled"]["peak_reserved_bytes"], 3000, "{v}");
        }
    }
}

#[test]
fn replay_json_counts_failed_allocations_after_unknown_frees() {
    let dir = TempDir::new("replay-failed");
    let text = "Thread,Time,Action,Pointer,Size,Stream\n\
                1,0.1,allocate,0x1000,1000,0x0\n\
                1,0.2,allocate failure,0x0,1099511627776,0x0\n\
                1,0.3,deallocate,0x1000,1000,0x0\n";
    let path = dir.file("failed.csv", text.as_bytes());
    let v = json(&dcmem(&["replay", &path, "--json", "--runs", "1"]));
    assert_eq!((v["events"].as_u64(), v["failed_allocations"].as_u64()), (Some(2), Some(1)), "{v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let at = keys.iter().position(|k| *k == "unknown_frees").expect("unknown_frees");
    assert_eq!(keys.get(at + 1), Some(&"failed_allocations"), "{v}");
    let path = dir.file("none.csv", SMALL_CSV.as_bytes());
    assert_eq!(json(&dcmem(&["replay", &path, "--json", "--runs", "1"]))["failed_allocations"], 0);
}

#[test]
fn replay_runs_the_kept_traces() {
    for name in ["random.csv", "training.jsonl", "inference.jsonl"] {
        let v = json(&dcmem(&["replay", &kept(name), "--json"]));
        let (ours, unpooled) = (&v["ours"], &v["unpooled"]);
        assert_eq!(ours["peak_live_bytes"], unpooled["peak_live_bytes"], "{name}: {v}");
        assert_eq!(num(unpooled, "efficiency"), 1.0, "{name}: {v}");
        assert!(num(ours, "backend_allocations") < num(unpooled, "backend_allocations"), "{name}: {v}");
        assert_eq!(v["unknown_frees"], 0, "{name}: {v}");
    }
}

#[test]
fn replay_prints_a_table_and_draws_a_chart() {
    let dir = TempDir::new("replay-table");
    let path = dir.file("small.csv", SMALL_CSV.as_bytes());
    let png = dir.0.join("replay.png");
    let o = dcmem(&["replay", &path, "--plot", png.to_str().unwrap()]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("Replayed `{path}` (RMM CSV: 5 events, 2 threads) on the `cpu` backend")),
        "{out}"
    );
    for row in ["ops per second", "backend allocations", "peak live", "peak reserved", "efficiency"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(row)), "no {row} row:\n{out}");
    }
    assert!(out.contains("1 free(s) of ids not alive at the time were skipped"), "{out}");
    assert!(out.contains("ours against unpooled: "), "{out}");
    assert!(out.contains("expandable against ours: "), "cpu has expandable segments: {out}");
    let bytes = std::fs::read(&png).expect("the chart was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(stderr(&o).contains("wrote chart to"), "{}", stderr(&o));
}

#[test]
fn replay_bad_input_is_a_clear_error() {
    let dir = TempDir::new("replay-bad");
    let missing = dir.0.join("no-such-trace.csv");
    let missing = missing.to_str().unwrap();
    let o = dcmem(&["replay", missing]);
    let err = clean_failure(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot open `{missing}`")) && err.contains("No such file"), "{err}");

    let malformed = [
        (
            "bad.jsonl",
            "{\"t_ns\":1,\"thread\":1,\"op\":\"alloc\",\"id\":1,\"bytes\":8}\n{\"t_ns\":2}\n",
            "line 2",
            "missing field",
        ),
        (
            "bad.csv",
            "Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x1,8,0x0\n1,0.2,resize,0x1,8,0x0\n",
            "line 3",
            "Action `resize`",
        ),
        ("header.csv", "Thread,Time,Action,Size\n", "line 1", "without the column(s) Pointer"),
        (
            "huge.csv",
            "Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x1,8,0x0\n\
             1,0.2,allocate,0x2,9223372036854775808,0x0\n",
            "line 3",
            "largest size accepted",
        ),
        ("neither.txt", "hello\n", "line 1", "expected a JSON object"),
    ];
    for (name, text, line, what) in malformed {
        let path = dir.file(name, text.as_bytes());
        let o = dcmem(&["replay", &path]);
        let err = clean_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&path) && err.contains(line) && err.contains(what), "{name}: {err}");
        assert!(err.contains("expected"), "{name}: {err}");
    }

    for (name, text) in [("empty.csv", ""), ("header-only.csv", "Thread,Time,Action,Pointer,Size,Stream\n")] {
        let path = dir.file(name, text.as_bytes());
        let o = dcmem(&["replay", &path, "--json"]);
        let err = clean_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("nothing to replay") && err.contains(&path), "{name}: {err}");
    }

    let path = dir.file("ok.csv", SMALL_CSV.as_bytes());
    let o = dcmem(&["replay", &path, "--plot", "chart.jpg"]);
    assert!(clean_failure(&o).contains("PNG"), "{}", stderr(&o));
    let o = dcmem(&["replay", &path, "--runs", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--runs"), "{}", stderr(&o));
    assert_eq!(json(&dcmem(&["replay", &path, "--runs", "1", "--json"]))["runs"], 1);
}

#[test]
fn a_directory_as_the_trace_or_the_chart_is_refused_before_replaying() {
    let dir = TempDir::new("replay-dirs");
    let folder = dir.0.join("traces");
    std::fs::create_dir(&folder).unwrap();
    let folder = folder.to_str().unwrap();
    let o = dcmem(&["replay", folder]);
    let err = clean_failure(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("`{folder}` is a directory")) && err.contains("trace file"), "{err}");

    let path = dir.file("ok.csv", SMALL_CSV.as_bytes());
    let png = dir.0.join("chart.png");
    std::fs::create_dir(&png).unwrap();
    let png = png.to_str().unwrap();
    let o = dcmem(&["replay", &path, "--json", "--plot", png]);
    let err = clean_failure(&o);
    assert!(err.contains(&format!("--plot: `{png}` is a directory")) && err.contains("chart.png/chart.png"), "{err}");
    assert!(!err.contains("wrote chart"), "refused before replaying: {err}");
}

#[test]
fn a_trace_of_only_frees_of_unknown_ids_has_nothing_to_replay() {
    let dir = TempDir::new("replay-frees");
    let text = "Thread,Time,Action,Pointer,Size,Stream\n\
                1,0.1,deallocate,0x1000,64,0x0\n\
                1,0.2,allocate failure,0x0,1099511627776,0x0\n\
                1,0.3,free,0x2000,64,0x0\n";
    let path = dir.file("frees.csv", text.as_bytes());
    for json in [false, true] {
        let mut args = vec!["replay", path.as_str(), "--runs", "1"];
        if json {
            args.push("--json");
        }
        let o = dcmem(&args);
        let err = clean_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&path) && err.contains("2 event(s)") && err.contains("nothing to replay"), "{err}");
        assert!(!err.contains("NaN"), "{err}");
    }
}

#[test]
fn a_huge_runs_count_reserves_nothing_up_front() {
    // The first run fails (no machine has 4 EiB): what remains is whether the command got
    // there or died reserving room for four billion results.
    let dir = TempDir::new("replay-runs");
    let text = "Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x1000,4611686018427387904,0x0\n";
    let path = dir.file("huge.csv", text.as_bytes());
    let o = dcmem(&["replay", &path, "--runs", "4294967295"]);
    let err = clean_failure(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("out of memory on cpu") && err.contains("4611686018427387904 bytes"), "{err}");
}

#[test]
fn threads_the_system_refuses_are_a_clear_error() {
    let dir = TempDir::new("replay-spawn");
    let path = dir.file("small.csv", SMALL_CSV.as_bytes());
    // A stack larger than the address space: no thread of the replay can start.
    let o = dcmem_with_vars(&["replay", &path, "--threads", "--runs", "1"], &[("RUST_MIN_STACK", "281474976710656")]);
    let err = clean_failure(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("could not start thread") && err.contains("of the 2 the trace's threads need"), "{err}");
    assert!(err.contains("without --threads"), "{err}");
}

#[test]
fn a_json_lines_trace_replays_on_a_discrete_device() {
    // As a recording manager writes them: device on every line, a site where it was tracked.
    let dir = TempDir::new("replay-jsonl");
    let lines = [
        r#"{"t_ns":10,"thread":1,"op":"alloc","id":140000,"bytes":4096,"device":"cpu"}"#,
        r#"{"t_ns":20,"thread":1,"op":"alloc","id":140064,"bytes":100,"device":"cpu","site":"src/main.rs:3"}"#,
        r#"{"t_ns":30,"thread":1,"op":"free","id":140000,"bytes":4096,"device":"cpu"}"#,
        r#"{"t_ns":40,"thread":1,"op":"free","id":140064,"bytes":100,"device":"cpu"}"#,
    ];
    let path = dir.file("t.jsonl", (lines.join("\n") + "\n").as_bytes());
    let v: Value = json(&dcmem(&["replay", &path, "--json", "--backend", "sim"]));
    assert_eq!((v["events"].as_u64(), v["format"].as_str()), (Some(4), Some("JSON Lines")), "{v}");
    assert_eq!(v["ours"]["peak_live_bytes"], 4196, "{v}");
}
