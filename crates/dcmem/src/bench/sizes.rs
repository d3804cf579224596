//! The sizes and repetitions of every row in each mode (`full`, `--quick`, `--smoke`): the one
//! place the registry's steps take their parameters from.

use crate::measure::Plan;
use std::time::Duration;

/// Bytes per second of the simulated link in the bandwidth-capped sim rows: about what a
/// discrete device's PCIe link moves, where the default sim copies at memcpy speed.
pub(super) const SIM_LINK_BANDWIDTH: f64 = 4e9;

/// How thoroughly to measure: the name `--json` reports, the timing plan and the sizes.
pub(super) struct Mode {
    /// `full`, `quick` or `smoke`.
    pub name: &'static str,
    /// Warm-up and samples of every row except the kernel rows.
    pub plan: Plan,
    /// Sizes of every row.
    pub sizes: Sizes,
}

impl Mode {
    /// The mode the flags ask for; `--smoke` wins over `--quick`.
    pub fn from_flags(smoke: bool, quick: bool) -> &'static Mode {
        if smoke {
            &SMOKE
        } else if quick {
            &QUICK
        } else {
            &FULL
        }
    }
}

/// Sizes each kind of row uses.
pub(super) struct Sizes {
    /// Pooled vs fresh allocations (bytes), and device allocations on discrete backends.
    pub fresh: &'static [usize],
    /// Pooled allocations vs malloc (bytes).
    pub malloc: &'static [usize],
    /// The host/device copy sizes (bytes).
    pub copy: usize,
    /// The buffer pool hit (bytes).
    pub pool_hit: usize,
    /// Zero-copy access and device views (f32 elements).
    pub access_elems: usize,
    /// The closure-kernel chain on a bandwidth-capped sim (f32 elements).
    pub closure_chain: usize,
    /// Pipelined transfers (256 MiB in full runs: large enough for many chunks in flight).
    pub pipelined: usize,
    /// Device-to-device copies.
    pub transfer: usize,
    /// Batched transfers: how many, of what size.
    pub batch: (usize, usize),
    /// Object-pool get+return pairs per timed call, on one thread and per thread on two.
    pub object_pairs: (usize, usize),
    /// Array-pool rent sizes (bytes).
    pub arrays: &'static [usize],
    /// Random allocations: how many, smallest, largest, most bytes live at once.
    pub random: (usize, usize, usize, usize),
    /// Host rows: aligned allocations (bytes).
    pub host_alloc: &'static [usize],
    /// Host rows: first touch (bytes).
    pub first_touch: usize,
    /// Host rows: large copies between the same buffers every call (bytes).
    pub copy_hot: &'static [usize],
    /// Host rows: large copies into the next of several buffer pairs (bytes).
    pub copy_cold: &'static [usize],
    /// Host rows: total source bytes the cold copy rotates through.
    pub cold_budget: usize,
    /// Host rows: fill and convert (elements).
    pub ops_elems: usize,
    /// Host rows: shared buffer vs pipe (bytes).
    pub shared: usize,
    /// Kernel rows (OpenCL): bytes of each vector, iterations per timed call, and the plan: one
    /// call is a whole loop, so no warm-up beyond the harness's own calls and no sample target.
    #[cfg_attr(not(feature = "opencl"), allow(dead_code))]
    pub kernels: (usize, usize, Plan),
}

/// A plan for the kernel rows: each sample is one call.
const fn one_call_per_sample(samples: usize) -> Plan {
    Plan { warmup: Duration::ZERO, samples, sample_target: Duration::ZERO }
}

/// Tiny sizes and three repetitions, for tests of the command itself.
pub(super) const SMOKE: Mode = Mode {
    name: "smoke",
    plan: Plan::SMOKE,
    sizes: Sizes {
        fresh: &[4 << 10, 256 << 10],
        malloc: &[4 << 10],
        copy: 256 << 10,
        pool_hit: 256,
        access_elems: 1024,
        closure_chain: 1 << 20,
        // Above the engine's default 1 MiB chunk, so the pipelined path really chunks.
        pipelined: 3 << 20,
        transfer: 3 << 20,
        batch: (16, 1 << 10),
        object_pairs: (1000, 2000),
        arrays: &[1 << 10, 64 << 10, 1 << 20],
        random: (64, 1 << 10, 256 << 10, 4 << 20),
        host_alloc: &[4 << 10, 64 << 10],
        first_touch: 4 << 20,
        copy_hot: &[64 << 10, 1 << 20],
        copy_cold: &[1 << 20],
        cold_budget: 4 << 20,
        ops_elems: 16 << 10,
        shared: 1 << 20,
        kernels: (1 << 20, 2, Plan::SMOKE),
    },
};

/// `--quick`: the full sizes with fewer samples, without the 256 MiB host copy and with 10
/// kernel iterations per call.
pub(super) const QUICK: Mode = Mode {
    name: "quick",
    plan: Plan::QUICK,
    sizes: Sizes {
        copy_hot: &[64 << 10, 1 << 20, 10_000_000, 64 << 20],
        kernels: (16 << 20, 10, one_call_per_sample(3)),
        ..FULL.sizes
    },
};

/// The default run.
pub(super) const FULL: Mode = Mode {
    name: "full",
    plan: Plan::FULL,
    sizes: Sizes {
        fresh: &[4 << 10, 1 << 20, 16 << 20, 64 << 20],
        malloc: &[4 << 10, 64 << 10, 1 << 20],
        copy: 10_000_000,
        pool_hit: 256,
        access_elems: 1024,
        closure_chain: 1 << 20,
        pipelined: 256 << 20,
        transfer: 64 << 20,
        batch: (10_000, 4 << 10),
        object_pairs: (1000, 500_000),
        arrays: &[1 << 10, 64 << 10, 1 << 20],
        random: (1000, 1 << 10, 4 << 20, 128 << 20),
        host_alloc: &[4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20],
        first_touch: 64 << 20,
        copy_hot: &[64 << 10, 1 << 20, 10_000_000, 64 << 20, 256 << 20],
        copy_cold: &[10_000_000, 64 << 20],
        cold_budget: 128 << 20,
        ops_elems: 256 << 10,
        shared: 16 << 20,
        kernels: (16 << 20, 100, one_call_per_sample(5)),
    },
};
