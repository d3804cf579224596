//! `dcmem stream FILE`: a file into a device buffer, the report, and bad input.

use crate::support::*;
use serde_json::Value;

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
    assert!(out.contains("on the `cpu` backend"), "{out}");
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

#[cfg(target_os = "linux")]
#[test]
fn stream_of_a_file_whose_size_is_not_its_length_says_so() {
    let o = dcmem(&["stream", "/dev/zero"]);
    let err = clean_failure(&o);
    assert!(err.contains("`/dev/zero` is not a regular file") && err.contains("give a regular file"), "{err}");
    // A file under /proc reports a size of 0 and has more.
    let o = dcmem(&["stream", "/proc/self/status"]);
    let err = clean_failure(&o);
    assert!(err.contains("`/proc/self/status` yielded at least 1 bytes where its size said 0"), "{err}");
    assert!(err.contains("stream a regular file"), "{err}");
}

#[cfg(unix)]
#[test]
fn stream_of_a_named_pipe_is_refused_without_waiting_for_a_writer() {
    let dir = TempDir::new("stream-fifo");
    let fifo = dir.0.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let mut child = dcmem_command(&["stream", fifo.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the dcmem binary runs");
    // Opening the pipe would wait for a writer forever: give it ten seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("dcmem stream waited on the named pipe");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let err = clean_failure(&o);
    assert!(err.contains("is not a regular file") && err.contains("give a regular file"), "{err}");
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
