//! Configuration of the simulated device: capacity, timing, queues, and the fault plan that
//! decides which operations fail.

use std::time::Duration;

/// Which operations fail, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Fail exactly the Nth counted operation (1-based). Operations counted: allocate, write,
    /// read, copy, fill (sync or async).
    pub fail_nth: Option<u64>,
    /// Fail each counted operation with this probability (0.0 = never).
    pub fail_probability: f64,
    /// Seed of the generator behind `fail_probability`, so runs are reproducible.
    pub seed: u64,
    /// Injected failures are transient (a retry may succeed) rather than permanent.
    pub transient: bool,
    /// Asynchronous operations fail at completion (their event reports the error, and no data
    /// moves) instead of failing when they are enqueued, as real drivers can.
    pub on_completion: bool,
}

crate::setters::with_setters!(FaultPlan {
    with_fail_nth => fail_nth: Option<u64>,
    with_fail_probability => fail_probability: f64,
    with_seed => seed: u64,
    with_transient => transient: bool,
    with_on_completion => on_completion: bool,
});

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan { fail_nth: None, fail_probability: 0.0, seed: 0x5eed, transient: true, on_completion: false }
    }
}

/// Configuration of a [`SimBackend`](super::SimBackend).
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Device memory in bytes (default 1 GiB).
    pub capacity: usize,
    /// Added to every transfer (default zero).
    pub latency: Duration,
    /// Bandwidth cap in bytes per second for transfers (default: none).
    pub bandwidth: Option<f64>,
    /// A different cap for device-to-host transfers (default: `bandwidth`), as on devices
    /// whose read-back is slower than upload.
    pub bandwidth_device_to_host: Option<f64>,
    /// Fault injection (default: none).
    pub faults: FaultPlan,
    /// Number of queues (default 2).
    pub queues: usize,
    /// Bandwidth cap in bytes per second for direct copies from another device of the same
    /// group ([`SimBackend::group`](super::SimBackend::group)); default: `bandwidth`.
    pub peer_bandwidth: Option<f64>,
    /// Pairs of devices of a group, by their index in it, that cannot reach each other (both
    /// directions): copies between them are staged through host memory, as between GPUs
    /// without peer access. Default: none, every pair is reachable.
    pub unreachable_peers: Vec<(usize, usize)>,
    /// Address space can be reserved and backed by memory 2 MiB at a time (as CUDA's virtual
    /// memory management), for expandable segments; each map or unmap call takes `latency`.
    /// Default true.
    pub virtual_memory: bool,
}

crate::setters::with_setters!(SimOptions {
    with_capacity => capacity: usize,
    with_latency => latency: Duration,
    with_bandwidth => bandwidth: Option<f64>,
    with_bandwidth_device_to_host => bandwidth_device_to_host: Option<f64>,
    with_faults => faults: FaultPlan,
    with_queues => queues: usize,
    with_peer_bandwidth => peer_bandwidth: Option<f64>,
    with_unreachable_peers => unreachable_peers: Vec<(usize, usize)>,
    with_virtual_memory => virtual_memory: bool,
});

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            capacity: 1 << 30,
            latency: Duration::ZERO,
            bandwidth: None,
            bandwidth_device_to_host: None,
            faults: FaultPlan::default(),
            queues: 2,
            peer_bandwidth: None,
            unreachable_peers: Vec::new(),
            virtual_memory: true,
        }
    }
}
