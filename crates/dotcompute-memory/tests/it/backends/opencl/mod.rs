//! The OpenCL backend against a real driver (PoCL in CI): the backend on its own, buffers on it,
//! the environment that selects its device, real kernels on device views, and copies between
//! backends (direct on one context, through host memory between contexts).
//!
//! Each test skips with a printed reason when no OpenCL platform is present, unless
//! `DCMEM_REQUIRE_OPENCL=1`, which turns the absence into a failure. Tests that read or set the
//! process-global `DCMEM_*` environment variables hold the environment lock
//! (`support::env::lock`) so they never interleave with each other or with a driver opening.

mod device;
mod environment;
mod kernels;
mod peer;
mod programs;
mod views;

use crate::support::skip;
use dotcompute_memory::backend::opencl::{OpenClBackend, OpenClOptions};
use dotcompute_memory::*;

fn required() -> bool {
    dotcompute_memory::backend::required("opencl").expect("DCMEM_REQUIRE_OPENCL")
}

/// The backend with explicit default options (no environment), or `None` after printing why
/// it is unavailable.
fn backend_with(options: OpenClOptions) -> Option<OpenClBackend> {
    match OpenClBackend::with_options(options) {
        Ok(b) => Some(b),
        Err(e @ Error::BackendUnavailable { .. }) => {
            skip::unavailable("opencl", "this OpenCL case", &e);
            None
        }
        Err(e) => panic!("opening the OpenCL backend failed: {e}"),
    }
}

fn backend() -> Option<OpenClBackend> {
    backend_with(OpenClOptions::default())
}

fn manager() -> Option<MemoryManager> {
    backend().map(|b| MemoryManager::with_backend(b, ManagerOptions::default()).unwrap())
}

fn open_err() -> Error {
    match backend::open("opencl") {
        Ok(b) => panic!("expected an error, opened {}", b.description()),
        Err(e) => e,
    }
}
