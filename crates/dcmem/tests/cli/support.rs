//! Running the built binary and reading what it prints: shared by every test file.

use serde_json::Value;
use std::process::{Command, Output};

/// Runs `dcmem` with `args`, `DCMEM_BACKEND` unset.
pub fn dcmem(args: &[&str]) -> Output {
    dcmem_with_env(args, None)
}

/// The `dcmem` command with `args` and `DCMEM_BACKEND` unset, to run or spawn.
pub fn dcmem_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dcmem"));
    cmd.args(args).env_remove("DCMEM_BACKEND");
    cmd
}

/// Runs `dcmem` with `args` and `DCMEM_BACKEND` set to `backend` (or unset).
pub fn dcmem_with_env(args: &[&str], backend: Option<&std::ffi::OsStr>) -> Output {
    let mut cmd = dcmem_command(args);
    if let Some(b) = backend {
        cmd.env("DCMEM_BACKEND", b);
    }
    cmd.output().expect("the dcmem binary runs")
}

/// Runs `dcmem` with `args`, `DCMEM_BACKEND` unset and the environment variables `vars` set.
pub fn dcmem_with_vars(args: &[&str], vars: &[(&str, &str)]) -> Output {
    dcmem_command(args).envs(vars.iter().copied()).output().expect("the dcmem binary runs")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

/// Stdout parsed as exactly one JSON value, after checking the command succeeded.
pub fn json(o: &Output) -> Value {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status, stderr(o));
    serde_json::from_str(&stdout(o)).expect("stdout is one JSON object")
}

/// A failed run that exited cleanly: not a panic, nothing on stdout; returns stderr.
pub fn clean_failure(o: &Output) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "succeeded: {}", stdout(o));
    assert_ne!(o.status.code(), Some(101), "must not panic: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(stdout(o).is_empty(), "{}", stdout(o));
    err
}

/// The row whose operation is exactly `op`.
pub fn row<'a>(v: &'a Value, op: &str) -> &'a Value {
    let rows = v["rows"].as_array().expect("rows is an array");
    rows.iter().find(|r| r["operation"] == op).unwrap_or_else(|| panic!("no row named {op:?} in {v}"))
}

/// The rows whose operation starts with `prefix`.
pub fn rows_starting<'a>(v: &'a Value, prefix: &str) -> Vec<&'a Value> {
    let rows = v["rows"].as_array().expect("rows is an array");
    rows.iter().filter(|r| r["operation"].as_str().is_some_and(|s| s.starts_with(prefix))).collect()
}

/// A string field of a row.
pub fn text<'a>(r: &'a Value, key: &str) -> &'a str {
    r[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {r}"))
}

/// A number field of a row.
pub fn num(r: &Value, key: &str) -> f64 {
    r[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {r}"))
}

/// The number just before `suffix` in `text` (digits, `.`), e.g. `"99.5"` from `"99.5% hits"`.
pub fn number_before(text: &str, suffix: &str) -> f64 {
    let end = text.find(suffix).unwrap_or_else(|| panic!("no {suffix:?} in {text:?}"));
    let head = &text[..end];
    let start = head.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |i| i + 1);
    head[start..].parse().unwrap_or_else(|e| panic!("no number before {suffix:?} in {text:?}: {e}"))
}

/// `DCMEM_REQUIRE_OPENCL=1`: a missing OpenCL platform fails the OpenCL tests instead of
/// skipping them.
#[cfg(feature = "opencl")]
pub fn opencl_required() -> bool {
    dotcompute_memory::backend::required("opencl").expect("DCMEM_REQUIRE_OPENCL")
}

/// A scratch directory for one test, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh directory named after `name` and this process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dcmem-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `bytes` to the file `name` in it; returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
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
