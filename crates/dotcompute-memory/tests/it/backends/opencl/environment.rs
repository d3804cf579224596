//! The OpenCL backend and its environment: device selectors (`DCMEM_OPENCL_PLATFORM`,
//! `DCMEM_OPENCL_DEVICE`), `from_env` and `probe_all`, a driver's own error, and a machine
//! without any OpenCL driver (the last two in child processes: they change the driver's
//! process-wide settings).

use super::{backend, backend_with, open_err, required};
use crate::support::child::{self, test_name};
use crate::support::env;
use dotcompute_memory::backend::opencl::{self, OpenClBackend, OpenClOptions};
use dotcompute_memory::*;
use BufferState::*;

/// A forced driver error: with our own max-allocation check off, the driver itself rejects an
/// oversize `clCreateBuffer`. It runs in a child with `POCL_MEMORY_LIMIT=1` so PoCL's max
/// allocation is 256 MiB and the buffer-level part needs only ~320 MiB of host memory (PoCL
/// sizes its device from the machine's RAM; on a 24 GiB machine max allocation is 8 GiB).
#[test]
fn a_driver_error_surfaces_with_its_cl_name_and_changes_nothing() {
    if !child::is_child() {
        let test = test_name!(a_driver_error_surfaces_with_its_cl_name_and_changes_nothing);
        let out = child::command(test).env("POCL_MEMORY_LIMIT", "1").output().unwrap();
        eprintln!("{}", child::check(test, &out));
        return;
    }
    // Skip our own max-allocation check so the driver itself rejects the size.
    let Some(b) = backend_with(OpenClOptions::default().with_check_max_alloc(false)) else { return };
    let info = b.memory_info();
    let too_big = info.max_allocation + 4096;
    if too_big > info.free {
        eprintln!("skipping: max allocation equals free memory on this device ({info:?})");
        return;
    }
    let err = b.allocate(too_big as usize, 4096).unwrap_err();
    match &err {
        Error::Backend { backend, operation, code, message, .. } => {
            assert_eq!((*backend, *operation), ("opencl", "clCreateBuffer"), "{err}");
            assert!(*code < 0, "{err}");
            assert!(message.starts_with("CL_"), "{err}");
            eprintln!("driver error as expected: {err}");
        }
        other => panic!("expected a driver error, got {other}"),
    }
    assert_eq!(b.used(), 0);

    // Through a buffer: the failed device allocation leaves state, data and counters alone.
    if too_big > 2 << 30 {
        assert!(!required(), "POCL_MEMORY_LIMIT had no effect (max allocation {} bytes)", info.max_allocation);
        eprintln!("skipping the buffer-level part: it would need {too_big} bytes of host memory");
        return;
    }
    let mm = MemoryManager::with_backend(b, ManagerOptions::default()).unwrap();
    let mut buf = mm.allocate::<u8>(too_big as usize).unwrap();
    buf.as_mut_slice().unwrap()[0] = 42;
    assert_eq!(buf.state(), HostOnly);
    let err = buf.ensure_on_device().unwrap_err();
    assert!(matches!(err, Error::Backend { operation: "clCreateBuffer", .. }), "{err}");
    assert_eq!(buf.state(), HostOnly);
    assert_eq!(buf.metrics().transfer_count, 0);
    assert_eq!(buf.as_slice().unwrap()[..2], [42, 0]);
    assert_eq!(mm.backend().memory_info().free, info.free);
    let err = buf.synchronize().unwrap_err();
    assert!(matches!(err, Error::Backend { operation: "clCreateBuffer", .. }), "{err}");
    assert_eq!(buf.state(), HostOnly);
}

#[test]
fn selectors_pick_devices_and_unknown_ones_list_what_exists() {
    let _lock = env::lock();
    let Some(b) = backend() else { return };
    let dev = b.device().clone();
    drop(b);
    let all = opencl::devices().unwrap();

    let by_name = dev.name.to_uppercase();
    let by_name = &by_name[..by_name.len().min(6)];
    for (platform, device) in [
        (None, Some(dev.index.to_string())),
        (None, Some(by_name.to_string())),
        (Some(dev.platform_index.to_string()), Some(dev.index_in_platform.to_string())),
        (Some(dev.platform_name.to_lowercase()), None),
    ] {
        let _env =
            env::Vars::set(&[(opencl::ENV_PLATFORM, platform.as_deref()), (opencl::ENV_DEVICE, device.as_deref())]);
        let b = backend::open("opencl").unwrap();
        assert!(b.description().contains(&all[0].platform_name) || b.description().contains(&dev.name));
    }

    {
        let _env = env::Vars::set(&[(opencl::ENV_PLATFORM, None), (opencl::ENV_DEVICE, Some("no-such-device-xyz"))]);
        let err = open_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{msg}");
        assert!(msg.contains("no-such-device-xyz") && msg.contains("DCMEM_OPENCL_DEVICE"), "{msg}");
        for d in &all {
            assert!(msg.contains(&d.name), "the error lists device {}: {msg}", d.name);
        }
        let err = MemoryManager::with_backend_name("opencl", ManagerOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
    {
        let _env = env::Vars::set(&[(opencl::ENV_PLATFORM, Some("99")), (opencl::ENV_DEVICE, None)]);
        let msg = open_err().to_string();
        assert!(msg.contains("DCMEM_OPENCL_PLATFORM") && msg.contains("\"99\""), "{msg}");
        for d in &all {
            assert!(msg.contains(&d.platform_name), "the error lists platform {}: {msg}", d.platform_name);
        }
    }
    {
        let _env = env::Vars::set(&[
            (opencl::ENV_PLATFORM, Some(&dev.platform_index.to_string())),
            (opencl::ENV_DEVICE, Some("1000")),
        ]);
        let msg = open_err().to_string();
        assert!(msg.contains("\"1000\"") && msg.contains(&dev.name), "{msg}");
    }
}

#[test]
fn from_env_and_probe_all_open_opencl() {
    let _lock = env::lock();
    if backend().is_none() {
        return;
    }
    let _env =
        env::Vars::set(&[("DCMEM_BACKEND", Some("OpenCL")), (opencl::ENV_PLATFORM, None), (opencl::ENV_DEVICE, None)]);
    let mm = MemoryManager::from_env().unwrap();
    assert_eq!(mm.backend().name(), "opencl");
    let mut b = mm.allocate_from(&[1.5f64, 2.5]).unwrap();
    b.ensure_on_device().unwrap();
    b.mark_device_dirty().unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![1.5, 2.5]);
    let probe = backend::probe_all();
    let (_, line) = probe.iter().find(|(n, _)| *n == "opencl").unwrap();
    let line = line.as_ref().unwrap();
    assert!(line.contains("OpenCL platform"), "{line}");
}

/// With no ICD registered (OCL_ICD_VENDORS pointing at an empty place), opening is a clean
/// `BackendUnavailable` with the reason. The loader reads that variable once per process, so
/// the check runs in a child process.
#[test]
fn no_driver_is_backend_unavailable() {
    if !child::is_child() {
        let test = test_name!(no_driver_is_backend_unavailable);
        let out = child::command(test)
            .env("OCL_ICD_VENDORS", "/nonexistent/dcmem-no-icds")
            .env("OCL_ICD_FILENAMES", "")
            .env_remove("DCMEM_REQUIRE_OPENCL")
            .output()
            .unwrap();
        eprintln!("{}", child::check(test, &out));
        return;
    }
    let err = OpenClBackend::new().unwrap_err();
    let msg = err.to_string();
    eprintln!("as expected: {msg}");
    assert!(matches!(err, Error::BackendUnavailable { .. }), "{msg}");
    assert!(msg.contains("no OpenCL platform") || msg.contains("could not be loaded"), "{msg}");
    assert!(matches!(backend::open("opencl"), Err(Error::BackendUnavailable { .. })));
    assert!(matches!(opencl::devices(), Err(Error::BackendUnavailable { .. })));
    let probe = backend::probe_all();
    assert!(probe.iter().any(|(n, r)| *n == "opencl" && r.is_err()));
}
