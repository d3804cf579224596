//! The library's integration tests, one binary, by concept:
//!
//! - `buffer`: the coherence table, device views, the model-based test, fault sweeps, threads;
//! - `alloc`: the device pool, per-thread magazines, the device memory limit, snapshots;
//! - `pools`: `ObjectPool` and `ArrayPool`, their limits, threads without a slot, thread exit;
//! - `host`: aligned, mapped, pinned and shared host memory, host operations;
//! - `transfer`: the transfer engine, under faults, staged or direct;
//! - `devices`: several devices, one manager each: copies between them, direct or staged;
//! - `backends`: OpenCL and CUDA against real drivers (with their features);
//! - `interop`: DLPack export and import (with the `dlpack` feature);
//! - `bad_input`: what every public entry point does on bad input;
//! - `stress`: threads doing random operations (`DCMEM_STRESS_OPS` per thread);
//! - `trace`: allocation traces: recording, reading both formats, replay, the kept traces;
//! - `public_paths`: the paths through which public items are reached;
//! - `support`: what the tests share (managers, the environment lock, skips, child processes).
//!
//! Tests that must be alone in a process (an abort at thread exit, process-wide resource limits or
//! environment, measurements of the address space) re-run themselves in a child process with
//! `support::child`. `pools::limits` declares this binary's global allocator: the system
//! allocator, recording each thread's largest allocation.
//!
//! Miri runs the tests of the unsafe paths that need neither files nor processes nor drivers:
//! `buffer::coherence`, `buffer::device_views`, `buffer::fault_sweep`, `alloc::magazine` and
//! `pools::thread_exit` (see `.ci/run`). The conformance suite (every case on every backend) and
//! the loom model are binaries of their own.

mod alloc;
mod backends;
mod bad_input;
mod buffer;
mod devices;
mod host;
mod interop;
mod pools;
mod public_paths;
mod stress;
mod support;
mod trace;
mod transfer;
