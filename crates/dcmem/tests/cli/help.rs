//! `dcmem --help` and the subcommands' help: every subcommand listed, the backends offered.

use crate::support::*;

#[test]
fn help_lists_every_subcommand() {
    let o = dcmem(&["--help"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let about = out.lines().next().unwrap_or_default();
    for command in ["bench", "info", "demo", "stats", "stream", "replay"] {
        assert!(about.contains(command), "the summary line lacks {command}: {about}");
        assert!(out.lines().any(|l| l.trim_start().starts_with(&format!("{command} "))), "{command}:\n{out}");
    }
}

/// Each command that takes `--backend` offers exactly the backends compiled in, cpu first and
/// by default (metal only in a macOS build with the feature).
#[test]
fn backend_help_offers_only_the_compiled_backends() {
    let mut offered = vec!["cpu", "sim"];
    if cfg!(feature = "opencl") {
        offered.push("opencl");
    }
    if cfg!(feature = "cuda") {
        offered.push("cuda");
    }
    let with_metal = cfg!(all(feature = "metal", target_os = "macos"));
    if with_metal {
        offered.push("metal");
    }
    let values = format!("[possible values: {}]", offered.join(", "));
    for command in ["bench", "demo", "stats", "stream", "replay"] {
        let o = dcmem(&[command, "--help"]);
        assert!(o.status.success(), "stderr: {}", stderr(&o));
        // clap wraps long help lines; the backend's entry is read as one line.
        let out = stdout(&o).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(out.contains("--backend <NAME>"), "{command}: {out}");
        assert!(out.contains("[default: cpu]"), "{command}: {out}");
        assert!(out.contains(&values), "{command}: {out}");
        assert!(with_metal || !out.contains("metal"), "{command}: {out}");
    }
}
