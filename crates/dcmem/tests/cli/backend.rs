//! Choosing the backend: `--backend`, `DCMEM_BACKEND`, the default, and the errors for names
//! this binary cannot use.

use crate::support::*;

/// The backends this test binary's `dcmem` was built with.
fn compiled() -> Vec<&'static str> {
    let mut names = vec!["cpu", "sim"];
    if cfg!(feature = "opencl") {
        names.push("opencl");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    if cfg!(all(feature = "metal", target_os = "macos")) {
        names.push("metal");
    }
    names
}

#[test]
fn unknown_backend_lists_valid_names() {
    let err = clean_failure(&dcmem(&["bench", "--smoke", "--backend", "tpu"]));
    assert!(err.contains("unknown backend `tpu`"), "{err}");
    // Those compiled in as offered, the others with the feature that adds them.
    for name in ["cpu", "sim", "opencl", "cuda"] {
        assert!(err.contains(name), "{name} not listed: {err}");
    }
    // Off Apple platforms no build can have metal, so it is neither offered nor suggested.
    assert!(cfg!(target_os = "macos") || !err.contains("metal"), "{err}");
}

#[cfg(not(feature = "opencl"))]
#[test]
fn compiled_out_backend_says_how_to_get_it() {
    let err = clean_failure(&dcmem(&["bench", "--smoke", "--backend", "opencl"]));
    assert!(err.contains("--features opencl"), "{err}");
    assert!(err.contains("cargo run --release -p dcmem --features opencl -- ..."), "{err}");
}

/// A backend left out of this build is refused by every command that takes `--backend` or
/// `DCMEM_BACKEND`, naming the feature that adds it, before anything runs.
#[test]
fn backends_not_compiled_in_are_refused_with_the_feature_to_build() {
    let dir = TempDir::new("not-compiled");
    let file = dir.file("data.bin", &[1, 2, 3]);
    let absent: Vec<&str> = ["metal", "opencl", "cuda"].into_iter().filter(|b| !compiled().contains(b)).collect();
    for name in absent {
        for args in [&["stats"][..], &["demo"], &["bench", "--smoke"], &["stream", &file]] {
            let mut with_flag = args.to_vec();
            with_flag.extend(["--backend", name]);
            let from_env = dcmem_with_env(args, Some(name.as_ref()));
            for o in [dcmem(&with_flag), from_env] {
                let err = clean_failure(&o);
                assert!(err.contains(&format!("`{name}`")), "{args:?} {name}: {err}");
                if name == "metal" && !cfg!(target_os = "macos") {
                    assert!(err.contains("no `metal` backend on this platform"), "{err}");
                } else {
                    assert!(err.contains(&format!("cargo run --release -p dcmem --features {name} -- ...")), "{err}");
                }
                assert!(err.contains(&format!("offers {}", compiled().join(", "))), "{err}");
            }
        }
    }
}

/// Without `--backend` or `DCMEM_BACKEND`, every command runs on cpu.
#[test]
fn every_command_defaults_to_cpu() {
    let v = json(&dcmem(&["stats", "--json"]));
    assert_eq!(v["backend"], "cpu");
    let v = json(&dcmem(&["bench", "--smoke", "--json", "--only", "pool hit"]));
    assert_eq!(v["backend"], "cpu");
    let dir = TempDir::new("default-backend");
    let file = dir.file("data.bin", &[1, 2, 3]);
    let v = json(&dcmem(&["stream", &file, "--json"]));
    assert_eq!(v["backend"], "cpu");
    let o = dcmem(&["demo"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).starts_with("dcmem demo on the `cpu` backend"), "{}", stdout(&o));
}

#[test]
fn backend_defaults_to_dcmem_backend_env() {
    let v = json(&dcmem_with_env(&["stats", "--json"], Some("sim".as_ref())));
    assert_eq!(v["backend"], "sim");
    // --backend wins over the environment.
    let v = json(&dcmem_with_env(&["stats", "--json", "--backend", "cpu"], Some("sim".as_ref())));
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
        let err = clean_failure(&dcmem_with_env(args, Some(bad)));
        assert!(err.contains("DCMEM_BACKEND") && err.contains("UTF-8") && err.contains(r"cp\xFFu"), "{args:?}: {err}");
    }
    let o = dcmem_with_env(&["stats", "--json", "--backend", "cpu"], Some(bad));
    assert!(o.status.success(), "--backend should win: {}", stderr(&o));
}

/// A blank `DCMEM_BACKEND` means unset, as the library's `from_env` reads it: every command
/// runs on cpu; `--backend` given empty on the command line is still an error.
#[test]
fn a_blank_dcmem_backend_means_the_default() {
    let dir = TempDir::new("blank-backend-env");
    let file = dir.file("data.bin", &[1, 2, 3]);
    for blank in ["", "  "] {
        for args in [
            &["stats", "--json"][..],
            &["bench", "--smoke", "--json", "--only", "pool hit"],
            &["stream", &file, "--json"],
        ] {
            let v = json(&dcmem_with_env(args, Some(blank.as_ref())));
            assert_eq!(v["backend"], "cpu", "{args:?} with DCMEM_BACKEND={blank:?}");
        }
    }
    let err = clean_failure(&dcmem(&["stats", "--backend", " "]));
    assert!(err.contains("--backend") && err.contains("empty") && err.contains("cpu, sim"), "{err}");
}

/// A bad name taken from `DCMEM_BACKEND` says so, and how to get past it: the user may not
/// know the variable is set.
#[test]
fn a_bad_dcmem_backend_names_the_variable_and_the_way_out() {
    for name in ["tpu", "metal", "cuda", "opencl"].into_iter().filter(|b| !compiled().contains(b)) {
        let err = clean_failure(&dcmem_with_env(&["stats"], Some(name.as_ref())));
        assert!(err.contains(&format!("DCMEM_BACKEND is `{name}`")), "{name}: {err}");
        assert!(err.contains("unset DCMEM_BACKEND") && err.contains("--backend"), "{name}: {err}");
        // Given on the command line, the message names no variable.
        let err = clean_failure(&dcmem(&["stats", "--backend", name]));
        assert!(!err.contains("DCMEM_BACKEND"), "{name}: {err}");
    }
}
