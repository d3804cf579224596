//! What happens on bad input, for every public entry point: each given every bad input we know of,
//! one module per entry point, grouped by concept in the files below. A case passes when the
//! call fails with the specific `Error` variant carrying the values involved, nothing panics, and
//! nothing observable changed: the buffers' contents, `state()`, `epochs()` and `metrics()`, and
//! the manager's `statistics()` (the pool and backend counters too, unless the case says the call
//! got as far as taking memory).
//!
//! Most modules list their cases in a `CASES` table run by the module's `matrix` test (the
//! runners are in `runner`, what must stay unchanged in `unchanged`). Buffer cases run on a cpu
//! and a sim manager (and OpenCL when the feature is on and a platform answers;
//! `DCMEM_REQUIRE_OPENCL=1` makes its absence a failure), once on a buffer in each coherence
//! state, next to buffers of the same and of another manager that must not change either. The
//! tests beside the tables check messages and edge values besides.
//! `the_matrix_has_at_least_60_cases` counts the cases. Bad input of a backend's own API (OpenCL
//! views and handles, CUDA) is with that backend in `backends`.

/// Evaluates `$call`, which must fail with an error matching the pattern (matched on a
/// reference, so guards see references); evaluates to the error.
macro_rules! fails {
    ($call:expr, $($pattern:tt)+) => {
        match $call {
            Ok(_) => panic!("`{}` succeeded; expected {}", stringify!($call), stringify!($($pattern)+)),
            Err(e) => {
                assert!(
                    matches!(&e, $($pattern)+),
                    "`{}`: expected {}, got {e:?}",
                    stringify!($call),
                    stringify!($($pattern)+)
                );
                e
            }
        }
    };
}

mod backend;
mod buffers;
mod copies;
mod environment;
mod host;
mod manager;
mod pools;
#[cfg(unix)]
mod shared_memory;
mod slices;
mod transfer;

mod runner;
mod unchanged;

use crate::support::env;
use crate::support::managers::{cpu, open, quiet, sim};
use dotcompute_memory::backend::BACKEND_NAMES;
use dotcompute_memory::*;
use runner::*;
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use unchanged::*;
use BufferState::*;

#[test]
fn the_matrix_has_at_least_60_cases() {
    let mut tables: Vec<(&str, Vec<&str>)> = vec![
        ("allocate", buffers::allocate::CASES.iter().map(|c| c.name).collect()),
        ("copy_from", copies::copy_from::CASES.iter().map(|c| c.name).collect()),
        ("copy_to", copies::copy_to::CASES.iter().map(|c| c.name).collect()),
        ("upload", copies::upload::CASES.iter().map(|c| c.name).collect()),
        ("slice", slices::slice::CASES.iter().map(|c| c.name).collect()),
        ("nested_slices", slices::nested_slices::CASES.iter().map(|c| c.name).collect()),
        ("slice_ops", slices::slice_ops::CASES.iter().map(|c| c.name).collect()),
        ("copy_from_buffer", copies::copy_from_buffer::CASES.iter().map(|c| c.name).collect()),
        ("cast", buffers::cast::CASES.iter().map(|c| c.name).collect()),
        ("asynchronous", copies::asynchronous::CASES.iter().map(|c| c.name).collect()),
        ("mark_device_dirty", {
            let mut v: Vec<&str> = copies::mark_device_dirty::CASES.iter().map(|c| c.name).collect();
            v.extend(copies::mark_device_dirty::OWN_CASES.iter().map(|c| c.name));
            v
        }),
        ("transfer_batch", transfer::transfer_batch::CASES.iter().map(|c| c.name).collect()),
        ("execute", transfer::execute::CASES.iter().map(|c| c.name).collect()),
        ("stream_to_device", transfer::stream_to_device::CASES.iter().map(|c| c.name).collect()),
        ("manager_options", manager::manager_options::CASES.iter().map(|c| c.name).collect()),
        ("object_pool", pools::object_pool::CASES.iter().map(|c| c.name).collect()),
        ("array_pool", pools::array_pool::CASES.iter().map(|c| c.name).collect()),
        ("host_alloc", host::host_alloc::CASES.iter().map(|c| c.name).collect()),
        ("host_buffer_raw_parts", host::host_buffer_raw_parts::CASES.iter().map(|c| c.name).collect()),
        ("from_env", environment::from_env::CASES.iter().map(|c| c.name).collect()),
        ("out_of_memory", manager::out_of_memory::CASES.iter().map(|c| c.name).collect()),
        ("parse_byte_count", manager::parse_byte_count::CASES.iter().map(|c| c.name).collect()),
        ("ops", host::ops::CASES.iter().map(|c| c.name).collect()),
        ("backend_calls", backend::backend_calls::CASES.iter().map(|c| c.name).collect()),
        ("pinned_pool", host::pinned_pool::CASES.iter().map(|c| c.name).collect()),
    ];
    #[cfg(unix)]
    tables.push(("shared", shared_memory::shared::CASES.iter().map(|c| c.name).collect()));
    #[cfg(unix)]
    tables.push(("mapped", shared_memory::mapped::CASES.iter().map(|c| c.name).collect()));
    let mut names: Vec<&str> = tables.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "case names must be distinct");
    for (entry, cases) in &tables {
        assert!(!cases.is_empty(), "{entry} has no cases");
    }
    assert!(total >= 60, "only {total} cases");
}
