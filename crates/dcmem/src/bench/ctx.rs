//! The context every row is measured in: the backend, a pooled and an unpooled manager on it,
//! the mode's plan and sizes, and what the backend can do (which decides the rows it gets).

use super::data::PAGE;
use super::sizes::{Mode, Sizes};
use crate::measure::{self, Op, Pair, Plan};
use crate::CliResult;
use dotcompute_memory::{Backend, ManagerOptions, MemoryManager};
use std::sync::Arc;

/// What the backend offers that decides which rows apply to it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Capabilities {
    /// Host and device share one memory (`Backend::is_unified`).
    pub unified: bool,
    /// The host can address device allocations (`Backend::device_ptr_on_host`), so a kernel
    /// can be a closure over `device_slice_mut`.
    pub host_addressable_device: bool,
    /// The backend is `OpenClBackend`, whose own API the kernel rows and native baselines use.
    #[cfg(feature = "opencl")]
    pub opencl: bool,
}

impl Capabilities {
    /// Asks `backend`; the host-addressability probe allocates and frees one raw byte.
    fn of(backend: &dyn Backend) -> Self {
        let host_addressable_device = match backend.allocate(1, PAGE) {
            Ok(mem) => {
                let addressable = backend.device_ptr_on_host(&mem).is_some();
                // A failed free of a one-byte probe changes no row; the answer still holds.
                let _ = backend.free(mem);
                addressable
            }
            Err(_) => false,
        };
        Capabilities {
            unified: backend.is_unified(),
            host_addressable_device,
            #[cfg(feature = "opencl")]
            opencl: backend.downcast_ref::<dotcompute_memory::backend::opencl::OpenClBackend>().is_some(),
        }
    }

    /// A discrete device whose memory the host can address: a simulated one, since a real
    /// discrete device's memory is out of the host's reach.
    pub fn simulated_device(&self) -> bool {
        !self.unified && self.host_addressable_device
    }
}

/// The backend under test, the two managers the rows compare, and the mode.
pub(super) struct Ctx {
    backend: Arc<dyn Backend>,
    pooled: MemoryManager,
    fresh: MemoryManager,
    mode: &'static Mode,
    caps: Capabilities,
}

impl Ctx {
    /// Opens the backend called `name` and a pooled and an unpooled manager on it.
    pub fn new(name: &str, mode: &'static Mode) -> CliResult<Self> {
        let backend = dotcompute_memory::backend::open(name)?;
        let pooled = manager(&backend, true)?;
        let fresh = manager(&backend, false)?;
        let caps = Capabilities::of(&*backend);
        Ok(Ctx { backend, pooled, fresh, mode, caps })
    }

    /// The backend under test.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The manager "ours" uses: pooling on (the default options, no maintenance thread).
    pub fn pooled(&self) -> &MemoryManager {
        &self.pooled
    }

    /// The unpooled manager (`enable_pooling: false`) of the "fresh" baselines.
    pub fn fresh(&self) -> &MemoryManager {
        &self.fresh
    }

    /// A new manager on the same backend, for rows whose statistics must be their own.
    pub fn new_manager(&self, pooling: bool) -> CliResult<MemoryManager> {
        manager(&self.backend, pooling)
    }

    /// A new manager on the same backend with `options` (no maintenance thread).
    pub fn new_manager_with(&self, options: ManagerOptions) -> CliResult<MemoryManager> {
        Ok(MemoryManager::with_shared_backend(self.backend.clone(), options.with_maintenance_interval(None))?)
    }

    /// The mode's timing plan.
    pub fn plan(&self) -> &Plan {
        &self.mode.plan
    }

    /// The mode's sizes.
    pub fn sizes(&self) -> &'static Sizes {
        &self.mode.sizes
    }

    /// `full`, `quick` or `smoke`.
    pub fn mode_name(&self) -> &'static str {
        self.mode.name
    }

    /// What the backend offers.
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// True where host and device share one memory.
    pub fn unified(&self) -> bool {
        self.caps.unified
    }

    /// `baseline` against `ours` under the mode's plan.
    pub fn compare(&self, baseline: Op<'_>, ours: Op<'_>) -> CliResult<Pair> {
        measure::compare(&self.mode.plan, baseline, ours)
    }

    /// The backend as `OpenClBackend`, where it is one.
    #[cfg(feature = "opencl")]
    pub fn opencl(&self) -> Option<&dotcompute_memory::backend::opencl::OpenClBackend> {
        self.backend.downcast_ref()
    }

    /// Gives back what the pooled manager cached beyond its needs: each row warms its own pool,
    /// and what one row cached would otherwise hold device memory that a later row's raw
    /// baseline allocation needs (a 1 GiB sim fills up).
    pub fn trim(&self) -> CliResult {
        self.pooled.trim_excess()?;
        Ok(())
    }
}

fn manager(backend: &Arc<dyn Backend>, pooling: bool) -> CliResult<MemoryManager> {
    Ok(MemoryManager::with_shared_backend(
        backend.clone(),
        ManagerOptions::default().with_enable_pooling(pooling).with_maintenance_interval(None),
    )?)
}
