//! Runs a test's scenario in a child process (this test binary again, with only that test),
//! for scenarios whose failure mode is an abort at thread exit, which would otherwise take the
//! whole test binary down. Under Miri, which cannot spawn processes, the scenario runs in
//! place (Miri reports an abort itself).

/// Runs `scenario` in a child process that runs only the test named `name` (the test calling
/// this); fails unless the child succeeds and ran exactly that test.
pub fn in_child(name: &str, scenario: impl FnOnce()) {
    in_child_with_env(name, &[], scenario)
}

/// As [`in_child`], with the environment variables `vars` set in the child (and nowhere else,
/// so tests that run in parallel in this process never see them). Under Miri they are set in
/// this process before the scenario runs.
#[allow(dead_code)] // Called by some of the test binaries that include this module.
pub fn in_child_with_env(name: &str, vars: &[(&str, &std::ffi::OsStr)], scenario: impl FnOnce()) {
    const CHILD: &str = "DCMEM_TEST_CHILD";
    if cfg!(miri) {
        for (var, value) in vars {
            std::env::set_var(var, value);
        }
    }
    if cfg!(miri) || std::env::var_os(CHILD).is_some() {
        scenario();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed ({:?}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run the scenario:\n{stdout}\n{stderr}");
}
