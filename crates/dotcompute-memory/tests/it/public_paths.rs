//! The public paths of items defined in nested modules of the backend and host layers, which
//! must keep resolving, and the hint a compiled-out backend gives a library user.

use dotcompute_memory::backend;
use dotcompute_memory::host;
use dotcompute_memory::{Error, FaultPlan, ManagerOptions, SimOptions, TransferOptions};

/// Compiling this is most of the test: every path below is one that existed before the split.
#[test]
fn moved_items_keep_their_public_paths() {
    // One trait, reachable from the host layer (where it lives), the backend layer and the root.
    fn as_host(p: &dyn backend::PinnedHost) -> &dyn host::PinnedHost {
        p
    }
    fn as_root(p: &dyn host::PinnedHost) -> &dyn dotcompute_memory::PinnedHost {
        p
    }
    let pinned = backend::open("sim").unwrap().allocate_pinned(4096);
    if let Ok(mut pinned) = pinned {
        pinned.bytes_mut()[0] = 1;
        assert_eq!(as_root(as_host(&*pinned)).bytes()[0], 1);
    }

    let buf = host::aligned::HostAlloc::new().alignment(host::aligned::DEFAULT_ALIGNMENT).allocate::<u8>(8).unwrap();
    let _: &host::aligned::PageInfo = buf.page_info();
    assert_ne!(buf.page_kind(), host::aligned::PageKind::Foreign);
    const { assert!(host::aligned::MAX_ALIGNMENT >= host::aligned::DEFAULT_ALIGNMENT) };
    let _: Option<host::aligned::HostBuffer<u8>> = None;
    let _: Option<host::external::Deleter<u8>> = None;
    let _ = host::external::Ownership::<u8>::Borrowed;
    assert_eq!(host::shared::HEADER_SIZE, 64);
    assert_eq!(&host::shared::MAGIC, b"DCMEMSHM");
    const { assert!(host::shared::LAYOUT_VERSION >= 1 && host::shared::MAX_NAME_LEN > 0) };
    host::shared::validate_name("dcmem-paths").unwrap();
    let _ = host::shared::SharedHeader::for_type::<u32>(4, 1).unwrap();
    let _: Option<host::shared::SharedBuffer<u8>> = None;
    let _: Option<host::pinned::PinnedPool> = None;

    let sim = backend::sim::SimBackend::new(
        backend::sim::SimOptions::default().with_faults(backend::sim::FaultPlan::default()),
    );
    let _: backend::sim::CompletionHold = sim.hold_completions();
    let _: Option<(backend::BackendId, backend::MemoryInfo, backend::ReadyEvent)> = None;
    let _: Option<(backend::Event, backend::BatchWrite<'static>, backend::DeviceMemory)> = None;
    let _: &dyn backend::DeviceEvent = &backend::ReadyEvent;
    assert!(backend::BACKEND_NAMES.contains(&"sim"));
    assert_eq!(backend::required_variable("sim"), Some("DCMEM_REQUIRE_SIM"));
    assert_eq!(backend::probe_all().len(), backend::BACKEND_NAMES.len());
    let _: backend::cpu::CpuBackend = backend::cpu::CpuBackend::new();
}

#[cfg(feature = "opencl")]
#[test]
fn opencl_items_keep_their_public_paths() {
    use dotcompute_memory::backend::opencl;
    let _: Option<(opencl::OpenClBackend, opencl::OpenClOptions, opencl::DeviceSummary)> = None;
    let _: Option<(opencl::OpenClEvent, opencl::PinnedHostBuffer, opencl::OpenClSubBuffer<'static>)> = None;
    let _: fn() -> dotcompute_memory::Result<Vec<opencl::DeviceSummary>> = opencl::devices;
    let _ = opencl::sub_buffer;
    assert_eq!((opencl::ENV_PLATFORM, opencl::ENV_DEVICE), ("DCMEM_OPENCL_PLATFORM", "DCMEM_OPENCL_DEVICE"));
}

#[test]
fn a_compiled_out_backend_says_what_to_put_in_cargo_toml() {
    let version = concat!(env!("CARGO_PKG_VERSION_MAJOR"), ".", env!("CARGO_PKG_VERSION_MINOR"));
    for (name, built) in [("opencl", cfg!(feature = "opencl")), ("cuda", cfg!(feature = "cuda"))] {
        if built {
            continue;
        }
        match backend::open(name) {
            Err(Error::BackendUnavailable { backend, reason }) => {
                assert_eq!(backend, name);
                let dependency = format!("dotcompute-memory = {{ version = \"{version}\", features = [\"{name}\"] }}");
                assert!(reason.contains(&dependency), "{reason}");
                assert!(reason.contains("Cargo.toml"), "{reason}");
                assert!(reason.contains(&format!("cargo run --features dotcompute-memory/{name}")), "{reason}");
            }
            Err(other) => panic!("{name}: expected BackendUnavailable, got {other:?}"),
            Ok(_) => panic!("{name} opened in a build without it"),
        }
    }
}

/// Option structs are built both ways: struct update from `Default`, and the setters.
#[test]
fn option_structs_build_by_struct_update_and_by_setters() {
    let by_update = TransferOptions { max_concurrency: 4, use_pinned: true, ..Default::default() };
    let by_setters = TransferOptions::default().with_max_concurrency(4).with_use_pinned(true);
    assert_eq!(by_update, by_setters);
    let sim = SimOptions {
        capacity: 1 << 20,
        faults: FaultPlan { fail_nth: Some(3), ..Default::default() },
        ..Default::default()
    };
    let sim_by_setters =
        SimOptions::default().with_capacity(1 << 20).with_faults(FaultPlan::default().with_fail_nth(Some(3)));
    assert_eq!(sim, sim_by_setters);
    let manager = ManagerOptions { device_memory_limit: Some(1 << 20), ..Default::default() };
    assert_eq!(manager, ManagerOptions::default().with_device_memory_limit(Some(1 << 20)));
}
