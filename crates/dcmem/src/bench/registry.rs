//! Every step `dcmem bench` can run, in table order: its progress name, what the backend must
//! offer for it to apply, and what it measures. The progress bar's length and the run loop are
//! both [`steps`] of this one list.

use super::ctx::{Capabilities, Ctx};
use super::sizes::{Sizes, SIM_LINK_BANDWIDTH};
use super::{alloc, copies, host, pools, random, transfer, views};
use crate::report::Row;
use crate::{units, CliResult};

/// What the backend must offer for a step to apply.
#[derive(Debug, Clone, Copy)]
enum Needs {
    /// Nothing: every backend.
    Any,
    /// A discrete device (not unified with host memory).
    Discrete,
    /// Device memory the host can address, so a kernel can be a closure.
    HostAddressableDevice,
    /// A simulated discrete device (see [`Capabilities::simulated_device`]).
    SimulatedDevice,
    /// Host memory as device memory (unified): the host rows, which no backend changes, are
    /// shown once, on that backend.
    HostMemory,
    /// The OpenCL backend, whose kernels the kernel rows run.
    #[cfg(feature = "opencl")]
    OpenCl,
}

impl Needs {
    fn met_by(self, caps: &Capabilities) -> bool {
        match self {
            Needs::Any => true,
            Needs::Discrete => !caps.unified,
            Needs::HostAddressableDevice => caps.host_addressable_device,
            Needs::SimulatedDevice => caps.simulated_device(),
            Needs::HostMemory => caps.unified,
            #[cfg(feature = "opencl")]
            Needs::OpenCl => caps.opencl,
        }
    }
}

type Rows = CliResult<Vec<Row>>;

/// How many steps an entry makes and what each measures.
#[derive(Clone, Copy)]
enum Run {
    /// One step, named by the entry.
    Once(fn(&Ctx) -> Rows),
    /// One step per size the first function picks from the mode's sizes, named by the entry and
    /// the size.
    PerSize(fn(&Sizes) -> &[usize], fn(&Ctx, usize) -> Rows),
}

/// One entry of the list.
struct Entry {
    name: &'static str,
    needs: Needs,
    run: Run,
}

const fn entry(name: &'static str, needs: Needs, run: Run) -> Entry {
    Entry { name, needs, run }
}

fn one(row: CliResult<Row>) -> Rows {
    row.map(|r| vec![r])
}

/// Every step, in the order of the table.
static ENTRIES: &[Entry] = &[
    entry("buffer allocation", Needs::Any, Run::PerSize(|s| s.fresh, alloc::vs_fresh)),
    entry("device buffer allocation", Needs::Discrete, Run::PerSize(|s| s.fresh, |c, n| one(alloc::device(c, n)))),
    entry(
        "buffer allocation vs malloc",
        Needs::Any,
        Run::PerSize(|s| s.malloc, |c, n| one(alloc::vs_malloc(c, n, "Buffer allocation (pooled vs malloc)"))),
    ),
    entry("host-to-device copy", Needs::Any, Run::Once(|c| copies::host_to_device(c, c.sizes().copy))),
    entry(
        "device-to-host copy (copy_to)",
        Needs::Any,
        Run::Once(|c| one(copies::device_to_host(c, c.sizes().copy, false))),
    ),
    // On unified memory as_slice is a zero-copy view, not a copy: Zero-copy access covers it.
    entry(
        "device-to-host copy (as_slice)",
        Needs::Discrete,
        Run::Once(|c| one(copies::device_to_host(c, c.sizes().copy, true))),
    ),
    entry("trace recording", Needs::Any, Run::Once(|c| one(alloc::trace_recording(c, 4 << 10)))),
    entry(
        "buffer pool hit",
        Needs::Any,
        Run::Once(|c| one(alloc::vs_malloc(c, c.sizes().pool_hit, "Buffer pool hit"))),
    ),
    entry("zero-copy access", Needs::Any, Run::Once(|c| one(copies::zero_copy_access(c, c.sizes().access_elems)))),
    entry(
        "device view",
        Needs::HostAddressableDevice,
        Run::Once(|c| one(views::create_drop(c, c.sizes().access_elems))),
    ),
    entry(
        "kernel chain (closure kernels)",
        Needs::SimulatedDevice,
        Run::Once(|c| one(views::kernel_chain_closures(c, c.sizes().closure_chain, SIM_LINK_BANDWIDTH))),
    ),
    entry("pipelined transfer", Needs::Any, Run::Once(|c| transfer::pipelined(c, c.sizes().pipelined))),
    entry("pageable vs pinned source", Needs::Any, Run::Once(|c| transfer::pageable_vs_pinned(c, c.sizes().pipelined))),
    entry("engine copies", Needs::Any, Run::Once(|c| transfer::engine_copies(c, c.sizes().copy))),
    entry(
        "pipelined transfer, bandwidth-capped sim",
        Needs::SimulatedDevice,
        Run::Once(|c| one(transfer::pipelined_capped(c, c.sizes().pipelined, SIM_LINK_BANDWIDTH))),
    ),
    entry("batched transfers", Needs::Any, Run::Once(|c| transfer::batched(c, c.sizes().batch.0, c.sizes().batch.1))),
    entry("device-to-device copy", Needs::Any, Run::Once(|c| one(transfer::device_to_device(c, c.sizes().transfer)))),
    entry(
        "prefetch, sim with latency",
        Needs::SimulatedDevice,
        Run::Once(|c| one(transfer::prefetch(c, c.sizes().copy, SIM_LINK_BANDWIDTH))),
    ),
    entry(
        "peer copy, bandwidth-capped sim group",
        Needs::SimulatedDevice,
        Run::Once(|c| one(transfer::peer_copy(c, c.sizes().transfer, SIM_LINK_BANDWIDTH))),
    ),
    entry(
        "object pool get+return",
        Needs::Any,
        Run::Once(|c| pools::object_pool_one_thread(c, c.sizes().object_pairs.0)),
    ),
    entry(
        "object pool get+return, 2 threads",
        Needs::Any,
        Run::Once(|c| pools::object_pool_two_threads(c, c.sizes().object_pairs.1)),
    ),
    entry("array pool rent+return", Needs::Any, Run::PerSize(|s| s.arrays, pools::array_pool)),
    entry("random allocations", Needs::Any, Run::Once(random::random_allocations)),
    #[cfg(feature = "opencl")]
    entry("kernel loop", Needs::OpenCl, Run::Once(super::kernels::kernel_loop)),
    #[cfg(feature = "opencl")]
    entry("kernel chain", Needs::OpenCl, Run::Once(super::kernels::kernel_chain)),
    entry("aligned allocation", Needs::HostMemory, Run::PerSize(|s| s.host_alloc, host::aligned_alloc)),
    entry(
        "first touch",
        Needs::HostMemory,
        Run::PerSize(|s| std::slice::from_ref(&s.first_touch), |c, n| one(host::first_touch(c, n))),
    ),
    entry("large copy", Needs::HostMemory, Run::PerSize(|s| s.copy_hot, |c, n| one(host::large_copy_hot(c, n)))),
    entry(
        "large copy, cold",
        Needs::HostMemory,
        Run::PerSize(|s| s.copy_cold, |c, n| one(host::large_copy_cold(c, n))),
    ),
    entry("fill and convert", Needs::HostMemory, Run::Once(|c| host::fill_convert(c, c.sizes().ops_elems))),
    #[cfg(unix)]
    entry(
        "shared buffer vs pipe",
        Needs::HostMemory,
        Run::PerSize(|s| std::slice::from_ref(&s.shared), |c, n| one(host::shared_vs_pipe(c, n))),
    ),
];

/// One step of a run: the name the progress bar shows and `--only` matches, and what it
/// measures.
pub(super) struct Step {
    /// Progress and `--only` name, e.g. `buffer allocation 4 KiB`.
    pub name: String,
    run: Run,
    size: usize,
}

impl Step {
    /// Measures the step's rows.
    pub fn measure(&self, ctx: &Ctx) -> Rows {
        match self.run {
            Run::Once(f) => f(ctx),
            Run::PerSize(_, f) => f(ctx, self.size),
        }
    }
}

/// The steps that apply to a backend with `caps` under `sizes`, in table order.
pub(super) fn steps(caps: &Capabilities, sizes: &Sizes) -> Vec<Step> {
    let mut out = Vec::new();
    for e in ENTRIES.iter().filter(|e| e.needs.met_by(caps)) {
        match e.run {
            Run::Once(_) => out.push(Step { name: e.name.to_string(), run: e.run, size: 0 }),
            Run::PerSize(pick, _) => out.extend(pick(sizes).iter().map(|&n| Step {
                name: format!("{} {}", e.name, units::bytes(n as u64)),
                run: e.run,
                size: n,
            })),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::sizes::{FULL, QUICK, SMOKE};

    fn caps(unified: bool, host_addressable_device: bool) -> Capabilities {
        Capabilities {
            unified,
            host_addressable_device,
            #[cfg(feature = "opencl")]
            opencl: false,
        }
    }

    fn names(caps: &Capabilities, sizes: &Sizes) -> Vec<String> {
        steps(caps, sizes).into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn each_backend_kind_gets_its_own_steps_once() {
        let (cpu, sim, device) = (caps(true, true), caps(false, true), caps(false, false));
        for mode in [&SMOKE, &QUICK, &FULL] {
            for c in [&cpu, &sim, &device] {
                let all = names(c, &mode.sizes);
                let mut unique = all.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), all.len(), "{all:?}");
            }
        }
        let (cpu, sim, device) = (names(&cpu, &SMOKE.sizes), names(&sim, &SMOKE.sizes), names(&device, &SMOKE.sizes));
        let has = |list: &[String], name: &str| list.iter().any(|n| n == name);
        assert!(has(&cpu, "device view") && has(&sim, "device view") && !has(&device, "device view"));
        for sim_only in ["kernel chain (closure kernels)", "pipelined transfer, bandwidth-capped sim"] {
            assert!(has(&sim, sim_only) && !has(&cpu, sim_only) && !has(&device, sim_only), "{sim_only}");
        }
        assert!(has(&cpu, "fill and convert") && !has(&sim, "fill and convert") && !has(&device, "fill and convert"));
        assert!(has(&device, "device-to-host copy (as_slice)") && !has(&cpu, "device-to-host copy (as_slice)"));
        // Sized steps carry their size: one per size of the mode.
        assert_eq!(cpu.iter().filter(|n| n.starts_with("buffer allocation ") && !n.contains("vs")).count(), 2);
        assert_eq!(cpu.first().map(String::as_str), Some("buffer allocation 4 KiB"));
    }
}
