//! `SimBackend`: the simulated device itself, with its memory (host blocks only it can see),
//! the modelled timing of its queues, and fault injection.

use super::event::{wait_until, SimEvent};
use super::hold::{CompletionHold, Gate};
use super::options::SimOptions;
use crate::backend::{BackendId, DeviceMemory, Event};
use crate::error::{Direction, Error, Result};
use crate::host::HostBlock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Alignment of every simulated allocation (as a real device's base alignment).
pub(super) const ALIGN: usize = 256;

/// The simulated device memory and its accounting.
pub(super) struct Device {
    /// Simulated device memory: raw blocks, addressed only by range, so a view of one
    /// range handed to a kernel never aliases a reference the simulator makes to another.
    pub(super) allocations: HashMap<u64, HostBlock>,
    pub(super) used: usize,
    pub(super) next: u64,
    /// Reserved address ranges (also in `allocations`, whose block stands for the whole range):
    /// which granules of each have memory mapped.
    pub(super) reservations: HashMap<u64, Vec<bool>>,
}

/// Bytes mapped at a time in reserved address space.
pub(super) const VM_GRANULARITY: usize = 2 << 20;

impl Device {
    /// `InvalidHandle` unless every granule under `offset..offset + len` of a reservation is
    /// mapped (other allocations pass).
    pub(super) fn check_mapped(&self, handle: u64, offset: usize, len: usize) -> Result<()> {
        let Some(granules) = self.reservations.get(&handle) else { return Ok(()) };
        if len == 0 {
            return Ok(());
        }
        let (first, last) = (offset / VM_GRANULARITY, (offset + len - 1) / VM_GRANULARITY);
        if granules.get(first..=last).is_some_and(|g| g.iter().all(|&m| m)) {
            Ok(())
        } else {
            Err(Error::InvalidHandle {
                backend: "sim",
                reason: format!("bytes {offset}..{} of reservation {handle} are not all mapped", offset + len),
            })
        }
    }
}

/// A discrete device simulated in host memory. See the [module docs](super).
///
/// Fault injection: the third counted operation (allocation, then two uploads) fails, as a
/// driver's transient error would, and leaves the device memory as it was.
///
/// ```
/// use dotcompute_memory::{Backend, Error, FaultPlan, SimBackend, SimOptions};
///
/// # fn main() -> dotcompute_memory::Result<()> {
/// let faults = FaultPlan::default().with_fail_nth(Some(3)).with_transient(true);
/// let sim = SimBackend::new(SimOptions::default().with_faults(faults));
/// let memory = sim.allocate(8, 8)?;                 // operation 1
/// sim.write(&memory, 0, &[1; 8])?;                  // operation 2
/// let err = sim.write(&memory, 0, &[2; 8]).unwrap_err();
/// assert!(matches!(err, Error::Backend { backend: "sim", operation: "write", .. }), "{err}");
/// assert!(err.is_transient());                      // a retry may succeed
///
/// let mut back = [0; 8];
/// sim.read(&memory, 0, &mut back)?;                 // operation 4 goes through
/// assert_eq!(back, [1; 8], "the failed upload changed nothing");
/// sim.free(memory)?;
/// # Ok(())
/// # }
/// ```
pub struct SimBackend {
    pub(super) id: BackendId,
    pub(super) options: SimOptions,
    device: Mutex<Device>,
    ops: AtomicU64,
    pub(super) submissions: AtomicU64,
    /// When each queue finishes the work already enqueued on it.
    busy_until: Mutex<Vec<Instant>>,
    rng: AtomicU64,
    gate: Arc<Gate>,
    /// The group this device belongs to and its index in it ([`SimBackend::group`]).
    membership: Option<(u64, usize)>,
    /// Set by [`SimBackend::lose_device`]: every later operation fails.
    lost: AtomicBool,
    /// The counted operation that [`SimBackend::fail_operation_after`] set to fail (0: none).
    armed_failure: AtomicU64,
    pub(super) vm_operations: AtomicU64,
}

impl std::fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBackend").field("id", &self.id).field("options", &self.options).finish()
    }
}

impl SimBackend {
    /// A simulated device with the given options.
    pub fn new(options: SimOptions) -> Self {
        let seed = options.faults.seed | 1;
        let queues = options.queues.max(1);
        SimBackend {
            id: BackendId::next(),
            options,
            device: Mutex::new(Device { allocations: HashMap::new(), used: 0, next: 1, reservations: HashMap::new() }),
            ops: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            busy_until: Mutex::new(vec![Instant::now(); queues]),
            rng: AtomicU64::new(seed),
            gate: Arc::default(),
            membership: None,
            lost: AtomicBool::new(false),
            armed_failure: AtomicU64::new(0),
            vm_operations: AtomicU64::new(0),
        }
    }

    /// `n` simulated devices that can reach each other, as GPUs with peer access: a copy from
    /// a buffer on one to a buffer on another is direct, capped by
    /// [`SimOptions::peer_bandwidth`], except between the pairs listed in
    /// [`SimOptions::unreachable_peers`], where it is staged through host memory.
    ///
    /// ```
    /// use dotcompute_memory::{Backend, SimBackend, SimOptions};
    ///
    /// let devices = SimBackend::group(3, SimOptions::default().with_unreachable_peers(vec![(0, 2)]));
    /// assert_eq!(devices[1].device_label(), "sim:1");
    /// assert!(devices[1].can_copy_from_peer(&devices[0]));
    /// assert!(!devices[2].can_copy_from_peer(&devices[0]), "0 and 2 are unreachable");
    /// ```
    pub fn group(n: usize, options: SimOptions) -> Vec<SimBackend> {
        static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);
        let group = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|index| SimBackend { membership: Some((group, index)), ..SimBackend::new(options.clone()) })
            .collect()
    }

    /// This device's index in its group, or `None` for a device made alone with
    /// [`SimBackend::new`].
    pub fn group_index(&self) -> Option<usize> {
        self.membership.map(|(_, index)| index)
    }

    /// True when this device can copy directly from `other`: both are distinct devices of one
    /// group and the pair is not listed in [`SimOptions::unreachable_peers`].
    pub fn reaches(&self, other: &SimBackend) -> bool {
        match (self.membership, other.membership) {
            (Some((g, a)), Some((h, b))) if g == h && a != b => {
                !self.options.unreachable_peers.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
            }
            _ => false,
        }
    }

    /// Simulates losing the device (a reset, or a GPU falling off the bus): every later
    /// operation on it fails with [`Error::DeviceLost`], and nothing it held can be read back.
    pub fn lose_device(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }

    /// Makes the `n`th counted operation from now (1: the next one) fail with a permanent
    /// injected fault, as [`FaultPlan::fail_nth`](super::FaultPlan::fail_nth) does from the
    /// start: for a test that sets up buffers first and then fails one step of a copy.
    pub fn fail_operation_after(&self, n: u64) {
        self.armed_failure.store(self.operations() + n.max(1), Ordering::Relaxed);
    }

    /// `sim:<index>` for a device of a group, else `sim#<instance id>`.
    pub(super) fn label(&self) -> String {
        match self.membership {
            Some((_, index)) => format!("sim:{index}"),
            None => format!("sim#{}", self.id.get()),
        }
    }

    /// Holds back every transfer completion until the returned guard is dropped (see
    /// [`CompletionHold`]): what a test needs to see a transfer in flight deterministically.
    pub fn hold_completions(&self) -> CompletionHold {
        self.gate.lock().0 += 1;
        CompletionHold { gate: self.gate.clone() }
    }

    /// The options this device was made with.
    pub fn options(&self) -> &SimOptions {
        &self.options
    }

    /// Operations counted so far (for fault plans: the next one is number `operations() + 1`).
    pub fn operations(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Transfer submissions so far: each write, read, copy or fill call counts one, and a
    /// batched write (`write_batch_async`) counts one for all its copies.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    /// True when every transfer enqueued so far has completed (its simulated time has passed),
    /// as a driver's queues would be empty: for tests of code that must wait for its copies.
    pub fn is_idle(&self) -> bool {
        let now = Instant::now();
        self.busy_until.lock().unwrap_or_else(|p| p.into_inner()).iter().all(|&t| t <= now)
    }

    /// Map and unmap calls made in reserved address space so far.
    pub fn virtual_memory_operations(&self) -> u64 {
        self.vm_operations.load(Ordering::Relaxed)
    }

    /// Bytes currently allocated on the simulated device.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an operation and decides whether the fault plan fails it.
    pub(super) fn inject(&self, operation: &'static str) -> Result<()> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(Error::DeviceLost { backend: "sim", device: self.label(), operation });
        }
        if operation != "allocate" && operation != "write_batch_async" {
            self.submissions.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        let plan = &self.options.faults;
        let armed = self.armed_failure.load(Ordering::Relaxed) == n;
        let mut fail = plan.fail_nth == Some(n) || armed;
        if !fail && plan.fail_probability > 0.0 {
            // xorshift64*: small, seeded, good enough to spread failures.
            let mut x = self.rng.load(Ordering::Relaxed);
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.rng.store(x, Ordering::Relaxed);
            let r = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            fail = r < plan.fail_probability;
        }
        if fail {
            let transient = plan.transient && !armed;
            return Err(Error::Backend {
                backend: "sim",
                operation,
                code: if transient { -1 } else { -2 },
                message: format!(
                    "injected {} fault on operation #{n}",
                    if transient { "transient" } else { "permanent" }
                ),
                transient,
            });
        }
        Ok(())
    }

    /// Fault injection for an asynchronous operation: `Ok(None)` to go ahead, `Ok(Some(event))`
    /// for a failure reported at completion (nothing is copied), `Err` for one at enqueue.
    pub(super) fn inject_async(
        &self,
        operation: &'static str,
        queue: usize,
        bytes: usize,
        dir: Direction,
    ) -> Result<Option<Event>> {
        match self.inject(operation) {
            Ok(()) => Ok(None),
            Err(e) if self.options.faults.on_completion => Ok(Some(Box::new(SimEvent {
                done_at: self.due(queue, bytes, dir),
                error: Some(e),
                gate: self.gate.clone(),
            }))),
            Err(e) => Err(e),
        }
    }

    pub(super) fn transfer_delay(&self, bytes: usize, dir: Direction) -> Duration {
        let cap = match dir {
            Direction::DeviceToHost => self.options.bandwidth_device_to_host.or(self.options.bandwidth),
            _ => self.options.bandwidth,
        };
        self.delay(bytes, cap)
    }

    /// The latency plus `bytes` at `cap` bytes per second (no time for a missing or invalid cap).
    fn delay(&self, bytes: usize, cap: Option<f64>) -> Duration {
        let bw = cap
            .filter(|b| *b > 0.0 && b.is_finite())
            .map(|b| Duration::from_secs_f64(bytes as f64 / b))
            .unwrap_or_default();
        self.options.latency + bw
    }

    /// Waits until the simulated time of a transfer of `bytes` begun at `started` has passed: the
    /// simulator's own copy counts as part of the modelled transfer, as a device's DMA would.
    pub(super) fn sleep_for(&self, started: Instant, bytes: usize, dir: Direction) {
        wait_until(started + self.transfer_delay(bytes, dir));
    }

    /// As [`SimBackend::sleep_for`], for a direct copy of `bytes` from a peer device.
    pub(super) fn sleep_for_peer_copy(&self, started: Instant, bytes: usize) {
        wait_until(started + self.delay(bytes, self.options.peer_bandwidth.or(self.options.bandwidth)));
    }

    /// An event for `bytes` moved on `queue`: queues are in order, so the transfer starts when
    /// the queue's previous one has finished and takes the simulated latency and bandwidth time.
    /// The copy itself already happened; only its completion is delayed.
    pub(super) fn event_for(&self, started: Instant, queue: usize, bytes: usize, dir: Direction) -> Event {
        Box::new(SimEvent { done_at: self.due_from(started, queue, bytes, dir), error: None, gate: self.gate.clone() })
    }

    /// When work of `bytes` enqueued now on `queue` completes (queues are in order).
    pub(super) fn due(&self, queue: usize, bytes: usize, dir: Direction) -> Instant {
        self.due_from(Instant::now(), queue, bytes, dir)
    }

    /// When work of `bytes` enqueued at `started` on `queue` completes: it starts once the
    /// queue's earlier work has finished, and takes the modelled latency and bandwidth time.
    pub(super) fn due_from(&self, started: Instant, queue: usize, bytes: usize, dir: Direction) -> Instant {
        let delay = self.transfer_delay(bytes, dir);
        let mut busy = self.busy_until.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut busy[queue % self.options.queues.max(1)];
        let done_at = (*slot).max(started) + delay;
        *slot = done_at;
        done_at
    }

    /// Maps (`map`) or unmaps granules `offset..offset + len` of a reservation: checked (whole
    /// granules of a reservation of this device, all unmapped or all mapped), counted for the
    /// fault plan, within the capacity when mapping, and taking `latency`.
    pub(super) fn change_mapping(
        &self,
        reservation: &DeviceMemory,
        offset: usize,
        len: usize,
        map: bool,
    ) -> Result<()> {
        reservation.check(self, offset, len)?;
        let operation = if map { "map_memory" } else { "unmap_memory" };
        if !offset.is_multiple_of(VM_GRANULARITY) || !len.is_multiple_of(VM_GRANULARITY) || len == 0 {
            return Err(Error::InvalidArgument {
                option: "mapping range",
                value: format!("{offset}..{}", offset.saturating_add(len)),
                reason: "must be a non-empty range of whole 2 MiB granules",
            });
        }
        // The modelled cost is `latency`; with none, the clock is not read at all.
        let deadline = (!self.options.latency.is_zero()).then(|| Instant::now() + self.options.latency);
        self.inject(operation)?;
        let mut dev = self.lock();
        let free = self.options.capacity - dev.used;
        let granules = dev.reservations.get_mut(&reservation.handle()).ok_or_else(|| Error::InvalidHandle {
            backend: "sim",
            reason: format!("{} is not a reserved address range", reservation.handle()),
        })?;
        let range = &mut granules[offset / VM_GRANULARITY..(offset + len) / VM_GRANULARITY];
        if range.contains(&map) {
            return Err(Error::InvalidArgument {
                option: "mapping range",
                value: format!("{offset}..{}", offset + len),
                reason: if map { "part of it is mapped already" } else { "part of it is not mapped" },
            });
        }
        if map && len > free {
            return Err(Error::allocator_out_of_memory("sim", len as u64, free as u64));
        }
        range.fill(map);
        if map {
            dev.used += len;
        } else {
            dev.used -= len;
        }
        drop(dev);
        self.vm_operations.fetch_add(1, Ordering::Relaxed);
        if let Some(deadline) = deadline {
            wait_until(deadline);
        }
        Ok(())
    }

    /// Checks, counts and performs a device-to-device copy, without the simulated delay.
    pub(super) fn copy_data(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        src.check(self, src_offset, len)?;
        dst.check(self, dst_offset, len)?;
        self.inject("copy")?;
        let dev = self.lock();
        let missing =
            |h: u64| Error::InvalidHandle { backend: "sim", reason: format!("no live allocation with id {h}") };
        dev.check_mapped(src.handle(), src_offset, len)?;
        dev.check_mapped(dst.handle(), dst_offset, len)?;
        let from = dev.allocations.get(&src.handle()).ok_or_else(|| missing(src.handle()))?.as_ptr();
        let to = dev.allocations.get(&dst.handle()).ok_or_else(|| missing(dst.handle()))?.as_ptr();
        // SAFETY: both ranges were checked against their allocations, which stay alive while
        // the lock is held; `ptr::copy` allows the overlap of a copy within one allocation.
        unsafe { std::ptr::copy(from.add(src_offset), to.add(dst_offset), len) };
        Ok(())
    }

    pub(super) fn with_range<R>(
        &self,
        memory: &DeviceMemory,
        offset: usize,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        memory.check(self, offset, len)?;
        let dev = self.lock();
        dev.check_mapped(memory.handle(), offset, len)?;
        let block = dev.allocations.get(&memory.handle()).ok_or_else(|| Error::InvalidHandle {
            backend: "sim",
            reason: format!("no live allocation with id {}", memory.handle()),
        })?;
        // SAFETY: the range was checked against the allocation, which stays alive while the
        // lock is held; only this range is referenced, and its owner (the handle's holder)
        // makes no other access to it during this call.
        Ok(f(unsafe { std::slice::from_raw_parts_mut(block.as_ptr().add(offset), len) }))
    }
}
