//! What a recording manager records: every allocation and free of its buffers with their
//! sizes, device, thread and (while tracked) site; the ring's bound; other threads' events;
//! `DCMEM_TRACE`.

use super::traced;
use crate::support::child::{in_child_with_env, test_name};
use crate::support::managers::{cpu, quiet};
use dotcompute_memory::*;
use std::sync::{Arc, Barrier};

#[test]
fn every_allocation_and_free_is_recorded_in_order() {
    let mm = traced(1 << 10);
    let a = mm.allocate::<f32>(1024).unwrap();
    let b = mm.allocate::<u8>(100).unwrap();
    let c = mm.allocate_zeroed::<u64>(3).unwrap();
    drop(b);
    drop(a);
    let empty = mm.allocate::<u8>(0).unwrap();
    let trace = mm.diagnostics().trace().expect("the manager records");
    let ops: Vec<(TraceOp, u64)> = trace.events.iter().map(|e| (e.op, e.bytes)).collect();
    use TraceOp::{Alloc, Free};
    assert_eq!(ops, [(Alloc, 4096), (Alloc, 100), (Alloc, 24), (Free, 100), (Free, 4096), (Alloc, 0)]);
    // Each free names its allocation; buffers alive at once have different ids.
    let ids: Vec<u64> = trace.events.iter().map(|e| e.id).collect();
    assert_eq!((ids[3], ids[4]), (ids[1], ids[0]));
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");
    let device = mm.backend().device_label();
    for e in &trace.events {
        assert_eq!(e.device.as_deref(), Some(device.as_str()));
        assert!(e.thread >= 1, "{e:?}");
        assert_eq!(e.site, None, "sites are not tracked: {e:?}");
    }
    assert!(trace.events.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "{:?}", trace.events);
    assert_eq!((trace.dropped, trace.capacity), (0, 1 << 10));
    drop((c, empty));
    assert_eq!(mm.diagnostics().trace().unwrap().events.len(), 8);
}

#[test]
fn a_manager_without_trace_options_records_nothing() {
    let mm = cpu();
    drop(mm.allocate::<u8>(64).unwrap());
    assert_eq!(mm.diagnostics().trace(), None);
}

#[test]
fn device_allocations_are_recorded_on_a_discrete_device() {
    let options = quiet().with_trace(Some(TraceOptions::default()));
    let mm = MemoryManager::with_backend(SimBackend::new(SimOptions::default()), options).unwrap();
    let d = mm.allocate_device::<u8>(5000).unwrap();
    let both = mm.allocate_on_device::<u16>(10).unwrap();
    let mut host = mm.allocate::<u8>(7).unwrap();
    host.ensure_on_device().unwrap();
    drop((d, both, host));
    let trace = mm.diagnostics().trace().unwrap();
    let bytes: Vec<(TraceOp, u64)> = trace.events.iter().map(|e| (e.op, e.bytes)).collect();
    use TraceOp::{Alloc, Free};
    assert_eq!(bytes, [(Alloc, 5000), (Alloc, 20), (Alloc, 7), (Free, 5000), (Free, 20), (Free, 7)]);
    assert!(trace.events.iter().all(|e| e.device.as_deref() == Some(mm.backend().device_label().as_str())));
}

#[test]
fn sites_are_recorded_while_allocations_are_tracked() {
    let mm = traced(64);
    let untracked = mm.allocate::<u8>(8).unwrap();
    mm.diagnostics().set_tracking(true);
    let line = line!() + 1;
    let tracked = mm.allocate::<u8>(16).unwrap();
    drop((untracked, tracked));
    let trace = mm.diagnostics().trace().unwrap();
    assert_eq!(trace.events[0].site, None);
    let site = trace.events[1].site.as_deref().expect("a tracked allocation has its site");
    assert_eq!(site, format!("{}:{line}", file!()));
    // Frees carry no site; the JSON line has it.
    assert!(trace.events[2..].iter().all(|e| e.site.is_none()));
    assert!(trace.to_json_lines().lines().nth(1).unwrap().ends_with(&format!(r#","site":"{site}"}}"#)));
}

#[test]
fn the_ring_keeps_the_newest_events_and_counts_the_dropped() {
    let mm = traced(1000);
    for i in 0..1500 {
        drop(mm.allocate::<u8>(i + 1).unwrap());
    }
    let trace = mm.diagnostics().trace().unwrap();
    assert_eq!((trace.events.len(), trace.dropped), (1000, 2000));
    // The newest: the last 500 allocations and their frees.
    assert_eq!(trace.events.first().map(|e| (e.op, e.bytes)), Some((TraceOp::Alloc, 1001)));
    assert_eq!(trace.events.last().map(|e| (e.op, e.bytes)), Some((TraceOp::Free, 1500)));
}

#[test]
fn events_other_threads_are_still_batching_are_exported() {
    let mm = traced(1 << 12);
    let (allocated, done) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (mm, allocated, done) = (mm.clone(), allocated.clone(), done.clone());
            std::thread::spawn(move || {
                let kept = mm.allocate::<u8>(1000 + t).unwrap();
                drop(mm.allocate::<u8>(2000 + t).unwrap());
                allocated.wait();
                done.wait();
                drop(kept);
            })
        })
        .collect();
    allocated.wait();
    // Both threads are alive, each with 3 events in a batch of its own.
    let trace = mm.diagnostics().trace().unwrap();
    done.wait();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(trace.events.len(), 6, "{:?}", trace.events);
    let mut threads: Vec<u64> = trace.events.iter().map(|e| e.thread).collect();
    threads.sort();
    threads.dedup();
    assert_eq!(threads.len(), 2, "{:?}", trace.events);
    for t in threads {
        let mine: Vec<(TraceOp, u64)> =
            trace.events.iter().filter(|e| e.thread == t).map(|e| (e.op, e.bytes % 1000)).collect();
        let n = mine[0].1;
        assert_eq!(mine, [(TraceOp::Alloc, n), (TraceOp::Alloc, n), (TraceOp::Free, n)], "thread {t}");
    }
    // After the threads ended: their frees too, all 8 events, each free after its allocation.
    let trace = mm.diagnostics().trace().unwrap();
    assert_eq!(trace.events.len(), 8);
    let mut live = std::collections::HashSet::new();
    for e in &trace.events {
        let fresh = live.insert(e.id);
        assert_eq!(fresh, e.op == TraceOp::Alloc, "{:?}", trace.events);
        if !fresh {
            live.remove(&e.id);
        }
    }
    assert!(live.is_empty(), "{:?}", trace.events);
}

#[test]
fn many_threads_record_every_event_once() {
    let mm = traced(1 << 16);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let mm = &mm;
            s.spawn(move || {
                for i in 0..1000 {
                    drop(mm.allocate::<u8>(t * 10_000 + i + 1).unwrap());
                }
            });
        }
    });
    let trace = mm.diagnostics().trace().unwrap();
    assert_eq!((trace.events.len(), trace.dropped), (8000, 0));
    let mut sizes: Vec<u64> = trace.events.iter().filter(|e| e.op == TraceOp::Alloc).map(|e| e.bytes).collect();
    sizes.sort();
    let expected: Vec<u64> = (0..4u64).flat_map(|t| (0..1000).map(move |i| t * 10_000 + i + 1)).collect();
    assert_eq!(sizes, expected);
    // Each thread's events keep their order: every free follows its allocation.
    let mut seen = std::collections::HashSet::new();
    for e in &trace.events {
        match e.op {
            TraceOp::Alloc => assert!(seen.insert((e.thread, e.id)), "{e:?}"),
            TraceOp::Free => assert!(seen.remove(&(e.thread, e.id)), "free before its allocation: {e:?}"),
        }
    }
}

#[test]
fn json_lines_have_the_documented_keys_and_read_back() {
    let mm = traced(64);
    drop(mm.allocate::<u32>(10).unwrap());
    let trace = mm.diagnostics().trace().unwrap();
    let text = trace.to_json_lines();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for (line, op) in lines.iter().zip(["alloc", "free"]) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 6, "{line}");
        // The keys, in this order.
        let at: Vec<usize> = ["t_ns", "thread", "op", "id", "bytes", "device"]
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("no {k} in {line}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert_eq!((v["op"].as_str(), v["bytes"].as_u64()), (Some(op), Some(40)));
    }
    let back = trace::parse(&text).unwrap();
    assert_eq!((back.format, back.events), (trace::TraceFormat::JsonLines, trace.events.clone()));
    let mut out = Vec::new();
    trace.write_json_lines(&mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), text);
}

#[test]
fn a_trace_capacity_of_zero_is_refused() {
    let options = quiet().with_trace(Some(TraceOptions::default().with_capacity(0)));
    let err = MemoryManager::with_backend(CpuBackend::new(), options).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { option: "ManagerOptions::trace", .. }), "{err}");
}

#[test]
fn peak_reserved_bytes_follow_the_backend_and_reset_with_the_peak() {
    let mm = cpu();
    let big = mm.allocate::<u8>(8 << 20).unwrap();
    let s = mm.statistics();
    assert!(s.peak_reserved_bytes >= s.reserved_bytes && s.reserved_bytes >= 8 << 20, "{s:?}");
    drop(big);
    mm.trim_excess().unwrap();
    let s = mm.statistics();
    assert!(s.reserved_bytes < 8 << 20 && s.peak_reserved_bytes >= 8 << 20, "{s:?}");
    mm.reset_peak_bytes();
    assert_eq!(mm.statistics().peak_reserved_bytes, mm.statistics().reserved_bytes);
}

#[test]
fn dcmem_trace_writes_the_trace_when_the_last_handle_drops() {
    let dir = std::env::temp_dir().join(format!("dcmem-trace-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.jsonl");
    let test = test_name!(dcmem_trace_writes_the_trace_when_the_last_handle_drops);
    in_child_with_env(test, &[("DCMEM_TRACE", file.as_os_str()), ("DCMEM_BACKEND", "cpu".as_ref())], || {
        let path = std::path::PathBuf::from(std::env::var_os("DCMEM_TRACE").unwrap());
        let mm = MemoryManager::from_env().unwrap();
        let trace = mm.options().trace.clone().expect("DCMEM_TRACE turns recording on");
        assert_eq!((trace.capacity, trace.file.as_deref()), (1 << 20, Some(path.as_path())));
        let kept = mm.allocate::<u8>(300).unwrap();
        drop(mm.allocate::<u8>(200).unwrap());
        let other = mm.clone();
        drop(mm);
        assert!(!path.exists(), "written before the last handle dropped");
        drop(other);
        let read = trace::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let ops: Vec<(TraceOp, u64)> = read.events.iter().map(|e| (e.op, e.bytes)).collect();
        assert_eq!(ops, [(TraceOp::Alloc, 300), (TraceOp::Alloc, 200), (TraceOp::Free, 200)]);
        drop(kept);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_trace_file_that_cannot_be_written_is_one_line_on_stderr() {
    if cfg!(miri) {
        return;
    }
    let missing = std::env::temp_dir().join(format!("dcmem-no-such-dir-{}", std::process::id())).join("t.jsonl");
    let test = test_name!(a_trace_file_that_cannot_be_written_is_one_line_on_stderr);
    if crate::support::child::is_child() {
        let mm = MemoryManager::from_env().unwrap();
        drop(mm.allocate::<u8>(1).unwrap());
        drop(mm);
        return;
    }
    let out =
        crate::support::child::command(test).env("DCMEM_TRACE", &missing).env_remove("DCMEM_BACKEND").output().unwrap();
    let all = crate::support::child::check(test, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("allocation trace")).collect();
    assert_eq!(lines.len(), 1, "{all}");
    assert!(lines[0].contains(&missing.display().to_string()) && lines[0].contains("No such file"), "{all}");
}

#[test]
fn a_thread_takes_over_the_batch_of_one_that_ended() {
    let mm = traced(1 << 12);
    for t in 0..3u64 {
        let mm = mm.clone();
        std::thread::spawn(move || {
            for i in 0..10 {
                drop(mm.allocate::<u8>((100 * t + i + 1) as usize).unwrap());
            }
        })
        .join()
        .unwrap();
    }
    let trace = mm.diagnostics().trace().unwrap();
    assert_eq!(trace.events.len(), 60);
    // In the order they happened: each thread's ten pairs, the threads one after another.
    let sizes: Vec<u64> = trace.events.iter().map(|e| e.bytes).collect();
    let expected: Vec<u64> = (0..3u64).flat_map(|t| (0..10).flat_map(move |i| [100 * t + i + 1; 2])).collect();
    assert_eq!(sizes, expected);
    let threads: Vec<u64> = trace.events.iter().map(|e| e.thread).collect();
    assert!(threads[0] != threads[20] && threads[20] != threads[40], "{threads:?}");
    assert!(trace.events.windows(2).all(|w| w[0].t_ns <= w[1].t_ns), "{:?}", trace.events);
}
