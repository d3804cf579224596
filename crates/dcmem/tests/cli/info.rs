//! `dcmem info`: every backend with its status, the OpenCL devices, and each backend's devices.

use crate::support::*;

#[test]
fn info_lists_every_backend() {
    let o = dcmem(&["info"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let line = |name: &str| {
        out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no {name}:\n{out}"))
    };
    // Each line is `NAME  STATUS  description or reason`.
    let status = |name: &str| line(name).split_whitespace().nth(1).unwrap_or_default().to_string();
    assert_eq!(status("cpu"), "available", "{out}");
    assert_eq!(status("sim"), "available", "{out}");
    if !cfg!(target_os = "macos") {
        assert_eq!(status("metal"), "unavailable", "{out}");
        assert!(line("metal").contains("Metal exists only on Apple platforms"), "{out}");
    }
    for name in ["opencl", "cuda"] {
        let s = status(name);
        assert!(s == "available" || s == "unavailable", "{name} has status {s:?}:\n{out}");
        // An unavailable backend says why, beyond its status word.
        assert!(s == "available" || line(name).split_whitespace().count() > 3, "{name} gives no reason:\n{out}");
    }
    // A backend left out of this binary names the command that builds dcmem with it.
    for (name, compiled) in [("opencl", cfg!(feature = "opencl")), ("cuda", cfg!(feature = "cuda"))] {
        let rebuild = format!("cargo run --release -p dcmem --features {name} -- info");
        assert_eq!(line(name).contains(&rebuild), !compiled, "{name}:\n{out}");
    }
    assert!(out.contains("memory: total"), "{out}");
}

#[cfg(feature = "opencl")]
#[test]
fn info_lists_opencl_devices_or_why_there_are_none() {
    let o = dcmem(&["info"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let opencl_line = out.lines().find(|l| l.starts_with("opencl ")).expect("an opencl line");
    if opencl_line.contains("unavailable") {
        assert!(!opencl_required(), "DCMEM_REQUIRE_OPENCL=1 but: {opencl_line}");
        assert!(out.contains("OpenCL devices: none ("), "{out}");
    } else {
        assert!(out.contains("OpenCL devices (DCMEM_OPENCL_PLATFORM / DCMEM_OPENCL_DEVICE"), "{out}");
        assert!(out.contains("  platform #0 \""), "{out}");
        let device = out.lines().find(|l| l.starts_with("    device #0 (#0 in its platform) \"")).expect("device #0");
        assert!(device.contains("global memory") && device.contains("largest allocation"), "{device}");
    }
}

#[test]
fn info_lists_each_backends_devices_and_the_pairs_that_copy_directly() {
    let o = dcmem(&["info"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let section = out.split("\nDevices (").nth(1).unwrap_or_else(|| panic!("no Devices section:\n{out}"));
    let line = |name: &str| {
        section
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} devices:\n{out}"))
    };
    assert!(line("cpu").ends_with("cpu; one device"), "{out}");
    assert!(line("sim").ends_with("sim:0, sim:1; direct: sim:0 <-> sim:1"), "{out}");
    #[cfg(feature = "opencl")]
    if opencl_required() {
        assert!(line("opencl").contains("opencl:0"), "{out}");
    }
}
