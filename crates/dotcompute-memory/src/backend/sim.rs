//! The simulated discrete device.
//!
//! Device memory lives in host `Vec`s that only this backend can see, so host and device copies
//! of a buffer really differ and every coherence transition costs a real copy. Options add a
//! capacity (allocations beyond it fail with [`Error::OutOfMemory`]), a per-operation latency,
//! a bandwidth cap, and fault injection (fail the Nth operation, or each with probability p from
//! a seeded generator; transient or permanent), so retry, out-of-memory and error paths are
//! testable without hardware. It is a test instrument, not a stand-in for a real driver.

use super::{Backend, BackendId, BatchWrite, DeviceEvent, DeviceMemory, Event, MemoryInfo};
use crate::error::{Direction, Error, Result};
use crate::host::HostBlock;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

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

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan { fail_nth: None, fail_probability: 0.0, seed: 0x5eed, transient: true, on_completion: false }
    }
}

/// Configuration of a [`SimBackend`].
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
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            capacity: 1 << 30,
            latency: Duration::ZERO,
            bandwidth: None,
            bandwidth_device_to_host: None,
            faults: FaultPlan::default(),
            queues: 2,
        }
    }
}

/// Alignment of every simulated allocation (as a real device's base alignment).
const ALIGN: usize = 256;

struct Device {
    /// Simulated device memory: raw blocks, addressed only by range, so a view of one
    /// range handed to a kernel never aliases a reference the simulator makes to another.
    allocations: HashMap<u64, HostBlock>,
    used: usize,
    next: u64,
}

/// A discrete device simulated in host memory. See the module docs.
pub struct SimBackend {
    id: BackendId,
    options: SimOptions,
    device: Mutex<Device>,
    ops: AtomicU64,
    submissions: AtomicU64,
    /// When each queue finishes the work already enqueued on it.
    busy_until: Mutex<Vec<Instant>>,
    rng: AtomicU64,
    gate: Arc<Gate>,
}

/// Holds back every transfer completion of one simulated device while any
/// [`CompletionHold`] is alive, so tests can observe work in flight without timing.
#[derive(Default)]
struct Gate {
    /// Live holds, and the wakers of events that became due while held.
    state: Mutex<(usize, Vec<Waker>)>,
    opened: Condvar,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Vec<Waker>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held(&self) -> bool {
        self.lock().0 > 0
    }

    fn wait_open(&self) {
        let mut state = self.lock();
        while state.0 > 0 {
            state = self.opened.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Keeps `waker` for the release while held; hands it back otherwise.
    fn defer(&self, waker: Waker) -> Option<Waker> {
        let mut state = self.lock();
        if state.0 > 0 {
            state.1.push(waker);
            None
        } else {
            Some(waker)
        }
    }
}

/// While alive, no transfer of the [`SimBackend`] that made it completes: events report
/// "not complete", `wait` blocks and wake-ups are deferred. Dropping the last hold lets every
/// transfer complete at its simulated time and wakes the tasks that waited meanwhile.
#[must_use = "completions are held only while the hold is alive"]
pub struct CompletionHold {
    gate: Arc<Gate>,
}

impl std::fmt::Debug for CompletionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionHold").finish_non_exhaustive()
    }
}

impl Drop for CompletionHold {
    fn drop(&mut self) {
        let wakers = {
            let mut state = self.gate.lock();
            state.0 -= 1;
            if state.0 > 0 {
                return;
            }
            std::mem::take(&mut state.1)
        };
        self.gate.opened.notify_all();
        for waker in wakers {
            // An event may still be before its simulated time: its task re-polls and
            // registers again.
            waker.wake();
        }
    }
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
            device: Mutex::new(Device { allocations: HashMap::new(), used: 0, next: 1 }),
            ops: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            busy_until: Mutex::new(vec![Instant::now(); queues]),
            rng: AtomicU64::new(seed),
            gate: Arc::default(),
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

    /// Bytes currently allocated on the simulated device.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an operation and decides whether the fault plan fails it.
    fn inject(&self, operation: &'static str) -> Result<()> {
        if operation != "allocate" && operation != "write_batch_async" {
            self.submissions.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        let plan = &self.options.faults;
        let mut fail = plan.fail_nth == Some(n);
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
            return Err(Error::Backend {
                backend: "sim",
                operation,
                code: if plan.transient { -1 } else { -2 },
                message: format!(
                    "injected {} fault on operation #{n}",
                    if plan.transient { "transient" } else { "permanent" }
                ),
                transient: plan.transient,
            });
        }
        Ok(())
    }

    /// Fault injection for an asynchronous operation: `Ok(None)` to go ahead, `Ok(Some(event))`
    /// for a failure reported at completion (nothing is copied), `Err` for one at enqueue.
    fn inject_async(
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

    fn transfer_delay(&self, bytes: usize, dir: Direction) -> Duration {
        let cap = match dir {
            Direction::DeviceToHost => self.options.bandwidth_device_to_host.or(self.options.bandwidth),
            _ => self.options.bandwidth,
        };
        let bw = cap
            .filter(|b| *b > 0.0 && b.is_finite())
            .map(|b| Duration::from_secs_f64(bytes as f64 / b))
            .unwrap_or_default();
        self.options.latency + bw
    }

    fn sleep_for(&self, bytes: usize, dir: Direction) {
        let d = self.transfer_delay(bytes, dir);
        if !d.is_zero() {
            wait_until(Instant::now() + d);
        }
    }

    /// An event for `bytes` moved on `queue`: queues are in order, so the transfer starts when
    /// the queue's previous one has finished and takes the simulated latency and bandwidth time.
    /// The copy itself already happened; only its completion is delayed.
    fn event_for(&self, queue: usize, bytes: usize, dir: Direction) -> Event {
        Box::new(SimEvent { done_at: self.due(queue, bytes, dir), error: None, gate: self.gate.clone() })
    }

    /// When work of `bytes` enqueued now on `queue` completes (queues are in order).
    fn due(&self, queue: usize, bytes: usize, dir: Direction) -> Instant {
        let delay = self.transfer_delay(bytes, dir);
        let now = Instant::now();
        let mut busy = self.busy_until.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut busy[queue % self.options.queues.max(1)];
        let done_at = (*slot).max(now) + delay;
        *slot = done_at;
        done_at
    }

    /// Checks, counts and performs a device-to-device copy, without the simulated delay.
    fn copy_data(
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
        let from = dev.allocations.get(&src.handle()).ok_or_else(|| missing(src.handle()))?.as_ptr();
        let to = dev.allocations.get(&dst.handle()).ok_or_else(|| missing(dst.handle()))?.as_ptr();
        // SAFETY: both ranges were checked against their allocations, which stay alive while
        // the lock is held; `ptr::copy` allows the overlap of a copy within one allocation.
        unsafe { std::ptr::copy(from.add(src_offset), to.add(dst_offset), len) };
        Ok(())
    }

    fn with_range<R>(
        &self,
        memory: &DeviceMemory,
        offset: usize,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        memory.check(self, offset, len)?;
        let dev = self.lock();
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

// SAFETY: allocations are tracked per instance and checked on every call; `host_ptr` and
// events follow the trait's contract (see the module docs and each method).
unsafe impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn id(&self) -> BackendId {
        self.id
    }

    fn description(&self) -> String {
        format!(
            "simulated discrete device: {} MiB, latency {:?}, bandwidth {}",
            self.options.capacity >> 20,
            self.options.latency,
            self.options.bandwidth.map(|b| format!("{:.1} GB/s", b / 1e9)).unwrap_or_else(|| "uncapped".into())
        )
    }

    fn is_unified(&self) -> bool {
        false
    }

    fn memory_info(&self) -> MemoryInfo {
        let used = self.lock().used;
        MemoryInfo {
            total: self.options.capacity as u64,
            free: (self.options.capacity - used) as u64,
            max_allocation: self.options.capacity as u64,
        }
    }

    fn allocate(&self, size: usize, align: usize) -> Result<DeviceMemory> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument {
                option: "alignment",
                value: align.to_string(),
                reason: "must be a power of two",
            });
        }
        self.inject("allocate")?;
        let mut dev = self.lock();
        let free = self.options.capacity - dev.used;
        if size > free {
            return Err(Error::allocator_out_of_memory("sim", size as u64, free as u64));
        }
        let handle = dev.next;
        dev.next += 1;
        dev.used += size;
        let block = HostBlock::allocate_zeroed(size, ALIGN)?;
        dev.allocations.insert(handle, block);
        // SAFETY: `handle` names the allocation just inserted, of exactly `size` bytes, and is
        // never reused (ids only grow), so this DeviceMemory is its only owner.
        Ok(unsafe { DeviceMemory::from_raw(self.id, handle, size) })
    }

    fn free(&self, memory: DeviceMemory) -> Result<()> {
        memory.check(self, 0, 0)?;
        let mut dev = self.lock();
        match dev.allocations.remove(&memory.handle()) {
            Some(block) => {
                dev.used -= block.size();
                Ok(())
            }
            None => Err(Error::InvalidHandle {
                backend: "sim",
                reason: format!("no live allocation with id {}", memory.handle()),
            }),
        }
    }

    fn allocate_pinned(&self, size: usize) -> Result<Box<dyn super::PinnedHost>> {
        // Page-locked with mlock; over RLIMIT_MEMLOCK this is Error::MemoryLockLimit.
        Ok(Box::new(crate::host::pinned::PinnedBuffer::<u8>::new(size)?))
    }

    fn host_ptr(&self, _memory: &DeviceMemory) -> Option<NonNull<u8>> {
        None
    }

    /// The simulated device memory itself: kernels written as closures run on it.
    fn device_ptr_on_host(&self, memory: &DeviceMemory) -> Option<NonNull<u8>> {
        if memory.owner() != self.id {
            return None;
        }
        NonNull::new(self.lock().allocations.get(&memory.handle())?.as_ptr())
    }

    fn write(&self, dst: &DeviceMemory, dst_offset: usize, src: &[u8]) -> Result<()> {
        dst.check(self, dst_offset, src.len())?;
        self.inject("write")?;
        self.with_range(dst, dst_offset, src.len(), |d| d.copy_from_slice(src))?;
        self.sleep_for(src.len(), Direction::HostToDevice);
        Ok(())
    }

    fn read(&self, src: &DeviceMemory, src_offset: usize, dst: &mut [u8]) -> Result<()> {
        src.check(self, src_offset, dst.len())?;
        self.inject("read")?;
        let len = dst.len();
        self.with_range(src, src_offset, len, |s| dst.copy_from_slice(s))?;
        self.sleep_for(len, Direction::DeviceToHost);
        Ok(())
    }

    fn copy(
        &self,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.copy_data(src, src_offset, dst, dst_offset, len)?;
        self.sleep_for(len, Direction::DeviceToDevice);
        Ok(())
    }

    fn fill(&self, dst: &DeviceMemory, offset: usize, len: usize, value: u8) -> Result<()> {
        dst.check(self, offset, len)?;
        self.inject("fill")?;
        self.with_range(dst, offset, len, |d| d.fill(value))
    }

    fn queue_count(&self) -> usize {
        self.options.queues.max(1)
    }

    unsafe fn write_async(
        &self,
        queue: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        src: *const u8,
        len: usize,
    ) -> Result<Event> {
        dst.check(self, dst_offset, len)?;
        if let Some(failed) = self.inject_async("write_async", queue, len, Direction::HostToDevice)? {
            return Ok(failed);
        }
        // SAFETY: the caller guarantees `src` is valid for `len` bytes of reads until the event
        // completes; the simulator reads it now, before returning.
        let bytes = unsafe { std::slice::from_raw_parts(src, len) };
        self.with_range(dst, dst_offset, len, |d| d.copy_from_slice(bytes))?;
        Ok(self.event_for(queue, len, Direction::HostToDevice))
    }

    unsafe fn read_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<Event> {
        src.check(self, src_offset, len)?;
        if let Some(failed) = self.inject_async("read_async", queue, len, Direction::DeviceToHost)? {
            return Ok(failed);
        }
        // SAFETY: the caller guarantees `dst` is valid for `len` bytes of exclusive writes until
        // the event completes; the simulator writes it now, before returning.
        let out = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        self.with_range(src, src_offset, len, |s| out.copy_from_slice(s))?;
        Ok(self.event_for(queue, len, Direction::DeviceToHost))
    }

    unsafe fn write_batch_async(&self, queue: usize, writes: &[BatchWrite<'_>]) -> Result<Event> {
        for w in writes {
            w.dst.check(self, w.dst_offset, w.len)?;
        }
        self.submissions.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = writes.iter().map(|w| w.len).sum();
        if let Some(failed) = self.inject_async("write_batch_async", queue, bytes, Direction::HostToDevice)? {
            return Ok(failed);
        }
        let mut total = 0;
        for w in writes {
            // SAFETY: the caller guarantees each `src` is valid for `len` bytes of reads until
            // the event completes; the simulator reads them now.
            let bytes = unsafe { std::slice::from_raw_parts(w.src, w.len) };
            self.with_range(w.dst, w.dst_offset, w.len, |d| d.copy_from_slice(bytes))?;
            total += w.len;
        }
        // One submission: the latency is paid once, the bandwidth for all bytes.
        Ok(self.event_for(queue, total, Direction::HostToDevice))
    }

    fn copy_async(
        &self,
        queue: usize,
        src: &DeviceMemory,
        src_offset: usize,
        dst: &DeviceMemory,
        dst_offset: usize,
        len: usize,
    ) -> Result<Event> {
        self.copy_data(src, src_offset, dst, dst_offset, len)?;
        Ok(self.event_for(queue, len, Direction::DeviceToDevice))
    }
}

/// Waits until `deadline`: sleeps through most of a long wait and spins (yielding) through the
/// last stretch, because a thread sleep overshoots by the timer slack (~50 µs on Linux), which
/// would turn a modelled 10 µs latency into 60 µs.
fn wait_until(deadline: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::thread::yield_now();
        }
    }
}

/// Completes at a fixed instant, modelling transfer time.
struct SimEvent {
    done_at: Instant,
    /// An injected failure, reported once the event is due.
    error: Option<Error>,
    gate: Arc<Gate>,
}

impl SimEvent {
    fn outcome(&self) -> Result<()> {
        match &self.error {
            None => Ok(()),
            Some(Error::Backend { operation, code, message, transient, .. }) => Err(Error::Backend {
                backend: "sim",
                operation,
                code: *code,
                message: message.clone(),
                transient: *transient,
            }),
            Some(other) => Err(Error::Backend {
                backend: "sim",
                operation: "event",
                code: -3,
                message: other.to_string(),
                transient: false,
            }),
        }
    }
}

impl DeviceEvent for SimEvent {
    fn is_complete(&self) -> Result<bool> {
        if self.gate.held() || Instant::now() < self.done_at {
            return Ok(false);
        }
        self.outcome().map(|()| true)
    }

    fn wait(&self) -> Result<()> {
        self.gate.wait_open();
        wait_until(self.done_at);
        self.outcome()
    }

    fn on_complete(&self, waker: Waker) {
        let Some(waker) = self.gate.defer(waker) else { return };
        let now = Instant::now();
        if now >= self.done_at {
            waker.wake();
        } else {
            let delay = self.done_at - now;
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                waker.wake();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_enforced_with_numbers() {
        let sim = SimBackend::new(SimOptions { capacity: 1000, ..Default::default() });
        let a = sim.allocate(600, 8).unwrap();
        let err = sim.allocate(500, 8).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { requested: 500, free: 400, .. }), "{err}");
        sim.free(a).unwrap();
        let b = sim.allocate(1000, 8).unwrap();
        assert_eq!(sim.used(), 1000);
        sim.free(b).unwrap();
        assert_eq!(sim.used(), 0);
    }

    #[test]
    fn device_memory_is_separate_and_copies_work() {
        let sim = SimBackend::new(SimOptions::default());
        let a = sim.allocate(16, 8).unwrap();
        let b = sim.allocate(16, 8).unwrap();
        assert!(sim.host_ptr(&a).is_none());
        sim.write(&a, 0, &[9; 16]).unwrap();
        sim.copy(&a, 4, &b, 0, 8).unwrap();
        sim.copy(&b, 0, &b, 8, 8).unwrap();
        let mut out = [0u8; 16];
        sim.read(&b, 0, &mut out).unwrap();
        assert_eq!(out, [9; 16]);
        sim.fill(&b, 0, 4, 1).unwrap();
        sim.read(&b, 0, &mut out).unwrap();
        assert_eq!(&out[..5], &[1, 1, 1, 1, 9]);
        sim.free(a).unwrap();
        sim.free(b).unwrap();
    }

    #[test]
    fn fail_nth_fails_exactly_that_operation() {
        let sim = SimBackend::new(SimOptions {
            faults: FaultPlan { fail_nth: Some(3), transient: false, ..Default::default() },
            ..Default::default()
        });
        let a = sim.allocate(8, 8).unwrap(); // 1
        sim.write(&a, 0, &[1; 8]).unwrap(); // 2
        let err = sim.write(&a, 0, &[2; 8]).unwrap_err(); // 3
        assert!(!err.is_transient());
        assert!(err.to_string().contains("#3"), "{err}");
        let mut out = [0u8; 8];
        sim.read(&a, 0, &mut out).unwrap(); // 4
        assert_eq!(out, [1; 8], "a failed write must not change device memory");
        sim.free(a).unwrap();
    }

    #[test]
    fn probability_faults_are_seeded() {
        let run = || {
            let sim = SimBackend::new(SimOptions {
                faults: FaultPlan { fail_probability: 0.3, seed: 42, ..Default::default() },
                ..Default::default()
            });
            let a = sim.allocate(8, 8);
            let mut pattern = vec![a.is_ok()];
            if let Ok(a) = a {
                for _ in 0..50 {
                    pattern.push(sim.fill(&a, 0, 8, 0).is_ok());
                }
                sim.free(a).unwrap();
            }
            pattern
        };
        let first = run();
        assert_eq!(first, run());
        let failures = first.iter().filter(|ok| !**ok).count();
        assert!(failures > 3 && failures < 40, "{failures} failures of {}", first.len());
    }

    #[test]
    fn queues_are_in_order() {
        // Only completion times are compared, never waited for: an hour per transfer keeps
        // them apart whatever the machine does meanwhile.
        let hour = Duration::from_secs(3600);
        let sim = SimBackend::new(SimOptions { latency: hour, ..Default::default() });
        let first = sim.due(0, 8, Direction::HostToDevice);
        let second = sim.due(0, 8, Direction::HostToDevice);
        let other_queue = sim.due(1, 8, Direction::HostToDevice);
        // The second transfer on queue 0 starts only when the first has finished; another
        // queue's transfer does not wait for either.
        assert!(second >= first + hour);
        assert!(other_queue < second);
    }

    #[test]
    fn bandwidth_caps_each_direction_on_its_own() {
        let sim = SimBackend::new(SimOptions {
            bandwidth: None,
            bandwidth_device_to_host: Some(1e6),
            latency: Duration::from_millis(1),
            ..Default::default()
        });
        assert_eq!(sim.transfer_delay(1_000_000, Direction::HostToDevice), Duration::from_millis(1));
        assert_eq!(sim.transfer_delay(1_000_000, Direction::DeviceToHost), Duration::from_millis(1001));
    }

    #[test]
    fn free_with_a_copy_in_flight_leaves_its_event_to_complete() {
        let sim = SimBackend::new(SimOptions { latency: Duration::from_millis(30), ..Default::default() });
        let a = sim.allocate(8, 8).unwrap();
        let src = [5u8; 8];
        let hold = sim.hold_completions();
        // SAFETY: src outlives the wait below.
        let ev = unsafe { sim.write_async(0, &a, 0, src.as_ptr(), 8) }.unwrap();
        sim.free(a).unwrap();
        assert_eq!(sim.used(), 0);
        assert!(!ev.is_complete().unwrap());
        drop(hold);
        ev.wait().unwrap();
        assert!(sim.is_idle());
    }

    #[test]
    fn latency_delays_events() {
        let latency = Duration::from_millis(30);
        let sim = SimBackend::new(SimOptions { latency, ..Default::default() });
        let a = sim.allocate(8, 8).unwrap();
        let src = [5u8; 8];
        let enqueued = Instant::now();
        // SAFETY: src outlives the wait below.
        let ev = unsafe { sim.write_async(0, &a, 0, src.as_ptr(), 8) }.unwrap();
        ev.wait().unwrap();
        assert!(enqueued.elapsed() >= latency, "completed {:?} after enqueue", enqueued.elapsed());
        assert!(ev.is_complete().unwrap());
        sim.free(a).unwrap();
    }

    #[test]
    fn held_completions_are_released_with_their_wake_ups() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let sim = SimBackend::new(SimOptions::default());
        let a = sim.allocate(8, 8).unwrap();
        let src = [5u8; 8];
        let hold = sim.hold_completions();
        // SAFETY: src outlives the wait below.
        let ev = unsafe { sim.write_async(0, &a, 0, src.as_ptr(), 8) }.unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        ev.on_complete(Waker::from(count.clone()));
        assert!(!ev.is_complete().unwrap(), "complete while held");
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken while held");
        let second = sim.hold_completions();
        drop(hold);
        assert!(!ev.is_complete().unwrap(), "complete while the second hold is alive");
        drop(second);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the release did not wake the task");
        assert!(ev.is_complete().unwrap());
        ev.wait().unwrap();
        sim.free(a).unwrap();
    }
}
