//! Managers the tests run on: without the background maintenance thread (so nothing trims or
//! evicts behind a test's back), on the cpu backend, on the simulator, or on a backend named
//! at run time.

use super::{env, skip};
use dotcompute_memory::*;

/// Default options without the maintenance thread.
pub fn quiet() -> ManagerOptions {
    ManagerOptions::default().with_maintenance_interval(None)
}

/// A manager on a new cpu backend, with [`quiet`] options.
pub fn cpu() -> MemoryManager {
    MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap()
}

/// A manager on a new simulated device with default options, with [`quiet`] options.
pub fn sim() -> MemoryManager {
    MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap()
}

/// A manager on the backend called `name`, with [`quiet`] options, opened under the
/// environment lock (a driver may read the environment).
pub fn open(name: &str) -> Result<MemoryManager> {
    open_with(name, quiet())
}

/// As [`open`], with `options`.
pub fn open_with(name: &str, options: ManagerOptions) -> Result<MemoryManager> {
    let _guard = env::lock();
    MemoryManager::with_backend_name(name, options)
}

/// A manager on OpenCL with `options` when the feature is on and a platform answers; `None`
/// otherwise, after saying why `test` skips its OpenCL part (a failure instead when
/// `DCMEM_REQUIRE_OPENCL=1`).
pub fn opencl(test: &str, options: ManagerOptions) -> Option<MemoryManager> {
    if !cfg!(feature = "opencl") {
        return None;
    }
    match open_with("opencl", options) {
        Ok(mm) => Some(mm),
        Err(e @ Error::BackendUnavailable { .. }) => {
            skip::unavailable("opencl", test, &e);
            None
        }
        Err(e) => panic!("opening the OpenCL backend failed: {e:?}"),
    }
}

/// `n` simulated devices of one group ([`SimBackend::group`]) with `options`, each with a
/// manager ([`quiet`] options); the devices are returned too, for their counters and faults.
pub fn sim_group(n: usize, options: SimOptions) -> Vec<(std::sync::Arc<SimBackend>, MemoryManager)> {
    SimBackend::group(n, options)
        .into_iter()
        .map(|device| {
            let device = std::sync::Arc::new(device);
            let mm = MemoryManager::with_shared_backend(device.clone(), quiet()).unwrap();
            (device, mm)
        })
        .collect()
}
