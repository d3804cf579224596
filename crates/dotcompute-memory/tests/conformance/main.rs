//! One conformance suite, written once, run against every backend this crate can name.
//!
//! Every case is a plain function taking a [`support::Ctx`] (a manager on one backend, opened
//! by name through `MemoryManager::with_backend_name`, so the suite never names a backend
//! type). The `conformance!` macro below instantiates each case once per backend as
//! `<backend>::<case>`, so a failure names both (run one backend with
//! `cargo test --test conformance opencl::`).
//!
//! A backend that cannot be opened here (`Error::BackendUnavailable`: compiled out, no driver,
//! no device) is skipped with its reason printed, unless `DCMEM_REQUIRE_<NAME>=1` is set (for
//! example `DCMEM_REQUIRE_OPENCL=1` in CI), in which case its absence fails the case.
//!
//! Each case compares the backend against a plain `Vec`, and checks the coherence states of
//! the coherence table (docs/ARCHITECTURE.md), including how many copies each transition costs
//! (none on unified memory).

mod asynchronous;
mod bad_input;
mod coherence;
mod device_copies;
mod kernels;
mod memory;
mod round_trip;
mod slices;
mod statistics;
mod support;
mod transfer_engine;

/// Instantiates every case for every listed backend. `COVERED` lists the backends, so a test
/// can check that no name in `BACKEND_NAMES` is missing here.
macro_rules! conformance {
    (backends: [$($backend:ident),* $(,)?], cases: $cases:tt) => {
        const COVERED: &[&str] = &[$(stringify!($backend)),*];
        $(instantiate!($backend, $cases);)*
    };
}

/// One module per backend, one test per case.
macro_rules! instantiate {
    ($backend:ident, [$($module:ident :: $case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[test]
                fn $case() {
                    crate::support::run(stringify!($backend), stringify!($case), crate::$module::$case);
                }
            )*
        }
    };
}

conformance! {
    backends: [cpu, sim, opencl, cuda, metal],
    cases: [
        round_trip::round_trips_from_1_byte_to_64_mib,
        round_trip::round_trips_of_typed_elements,
        slices::slices_at_every_offset_u8,
        slices::slices_at_every_offset_u32,
        slices::slices_at_every_offset_f64,
        slices::nested_slices_at_every_offset,
        device_copies::whole_device_copies_from_every_source_state,
        device_copies::ranged_device_copies_at_every_offset_pair,
        device_copies::device_copies_keep_the_rest_of_the_destination,
        device_copies::copies_from_another_device,
        coherence::every_transition_of_the_table,
        coherence::synchronize_copies_the_stale_side_once,
        coherence::conflicting_writes_are_refused,
        asynchronous::async_forms_complete_from_every_state,
        asynchronous::many_transfers_in_flight,
        asynchronous::dropped_futures_still_complete,
        asynchronous::futures_really_wait_on_a_slow_device,
        statistics::allocations_and_frees_balance,
        statistics::pool_hits_are_counted,
        statistics::transfers_are_counted_per_direction,
        memory::out_of_memory_is_an_error_that_changes_nothing,
        memory::allocations_above_the_device_maximum_fail,
        bad_input::bad_lengths_and_ranges,
        bad_input::zero_length_buffers,
        transfer_engine::engine_round_trips_from_every_state,
        transfer_engine::engine_async_and_concurrent,
        transfer_engine::engine_stages_through_pinned_memory_when_the_backend_has_it,
        kernels::closure_kernels_from_every_state,
        kernels::read_views_change_nothing,
        kernels::saxpy_on_slices_at_offsets,
        kernels::slice_views_carry_their_offset,
        kernels::overwrite_of_a_part_keeps_the_rest,
        kernels::a_view_without_device_memory_changes_nothing,
    ]
}

#[test]
fn every_backend_name_is_covered() {
    for name in dotcompute_memory::backend::BACKEND_NAMES {
        assert!(COVERED.contains(name), "backend `{name}` is in BACKEND_NAMES but not in the conformance! list");
    }
}

#[test]
fn the_reference_backends_are_always_available() {
    // cpu and sim need no hardware: they must never be skipped.
    for name in ["cpu", "sim"] {
        dotcompute_memory::MemoryManager::with_backend_name(name, support::options()).unwrap();
    }
}
