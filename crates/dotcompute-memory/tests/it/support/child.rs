//! Runs one test of this binary again in a child process (the binary, filtered to that test):
//! for scenarios whose failure mode is an abort at thread exit, which would otherwise take the
//! whole binary down, and for process-wide settings and measurements (environment variables,
//! resource limits, the address space) that tests running in parallel must not see or disturb.
//! Under Miri, which cannot spawn processes, `in_child` runs the scenario in place.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// Set in every child process this module starts.
pub const CHILD: &str = "DCMEM_TEST_CHILD";

/// The name libtest gives the test function `$name` of the calling module (its module path
/// without this binary's crate name), for [`in_child`] and [`command`]; a name that is not a
/// function in scope does not compile.
macro_rules! test_name {
    ($name:ident) => {{
        let _: fn() = $name;
        $crate::support::child::without_crate(concat!(module_path!(), "::", stringify!($name)))
    }};
}
pub(crate) use test_name;

/// `path` without its first segment (the crate name `module_path!` starts with).
pub fn without_crate(path: &'static str) -> &'static str {
    path.split_once("::").map_or(path, |(_, rest)| rest)
}

/// True in a child process started by this module.
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// The command that runs only the test called `test` (a [`test_name!`]) in a child process,
/// with its output captured; the caller adds environment variables and runs it.
pub fn command(test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]).env(CHILD, "1");
    cmd
}

/// Fails unless the child run of `test` succeeded and ran exactly that test; returns its
/// output (stdout, then stderr).
#[track_caller]
pub fn check(test: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child run of {test} failed ({:?}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run {test}:\n{stdout}\n{stderr}");
    format!("{stdout}{stderr}")
}

/// Runs `scenario` in a child process that runs only the test called `test` (the test calling
/// this, named with [`test_name!`]); fails unless the child succeeds.
pub fn in_child(test: &str, scenario: impl FnOnce()) {
    in_child_with_env(test, &[], scenario)
}

/// As [`in_child`], with the environment variables `vars` set in the child (and nowhere else,
/// so tests that run in parallel in this process never see them). Under Miri they are set in
/// this process before the scenario runs.
pub fn in_child_with_env(test: &str, vars: &[(&str, &OsStr)], scenario: impl FnOnce()) {
    if cfg!(miri) {
        for (var, value) in vars {
            std::env::set_var(var, value);
        }
    }
    if cfg!(miri) || is_child() {
        scenario();
        return;
    }
    let out = command(test).envs(vars.iter().copied()).output().unwrap();
    check(test, &out);
}
