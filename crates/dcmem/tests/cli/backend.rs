//! Choosing the backend: `--backend`, `DCMEM_BACKEND`, the default, and the errors for names
//! this binary cannot use.

use crate::support::*;
use serde_json::Value;
use std::process::Command;

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
