//! The bad-input matrix: every public entry point given each bad input we know of, one module
//! per entry point. A case passes when the call fails with the specific `Error` variant carrying
//! the values involved, nothing panics, and nothing observable changed: the buffers' contents,
//! `state()`, `epochs()` and `metrics()`, and the manager's `statistics()` (the pool and backend
//! counters too, unless the case says the call got as far as taking memory).
//!
//! Most modules list their cases in a `CASES` table run by the module's `matrix` test. Buffer
//! cases run on a cpu and a sim manager (and OpenCL when the feature is on and a platform
//! answers; `DCMEM_REQUIRE_OPENCL=1` makes its absence a failure), once on a buffer in each
//! coherence state, next to buffers of the same and of another manager that must not change
//! either. A failing case is named (with backend and state) and the others still run. The tests
//! kept from before the matrix check messages and edge values besides.
//! `the_matrix_has_at_least_60_cases` counts the cases.

use dotcompute_memory::backend::BACKEND_NAMES;
use dotcompute_memory::*;
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use BufferState::*;

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

// ---- what a failed call must leave as it was ----

/// Everything observable about a buffer's data that a failed call must not change.
#[derive(Debug, PartialEq)]
struct Snapshot<T> {
    len: usize,
    state: BufferState,
    epochs: (u64, u64),
    contents: Vec<T>,
}

fn snapshot<T: Element + PartialEq>(buf: &UnifiedBuffer<T>) -> Snapshot<T> {
    let (state, epochs) = (buf.state(), buf.epochs());
    let contents = buf.to_vec().expect("reading a buffer");
    assert_eq!((buf.state(), buf.epochs()), (state, epochs), "to_vec must not change the state");
    Snapshot { len: buf.len(), state, epochs, contents }
}

/// A buffer before a bad call: its snapshot and its metrics. Reading the contents moves the
/// metrics (a cache hit, or a device read), so `watch` reads first and then takes the metrics,
/// and `check` takes the metrics first and then reads.
struct Before<T> {
    snap: Snapshot<T>,
    metrics: BufferMetrics,
}

fn watch<T: Element + PartialEq>(buf: &UnifiedBuffer<T>) -> Before<T> {
    let snap = snapshot(buf);
    Before { snap, metrics: buf.metrics() }
}

impl<T: Element + PartialEq + Debug> Before<T> {
    #[track_caller]
    fn check(&self, buf: &UnifiedBuffer<T>, at: &str) {
        assert_eq!(buf.metrics(), self.metrics, "{at}: the buffer's metrics moved");
        assert_eq!((buf.state(), buf.epochs()), (self.snap.state, self.snap.epochs), "{at}: state or epochs moved");
        assert_eq!(snapshot(buf), self.snap, "{at}: the buffer changed");
    }
}

/// A manager's counters (`statistics()` less the clock-dependent rates).
#[derive(Debug, Clone, PartialEq)]
struct Counters {
    buffers_allocated: u64,
    buffers_freed: u64,
    active_allocations: u64,
    total_bytes_allocated: u64,
    total_bytes_freed: u64,
    active_bytes: u64,
    peak_bytes: u64,
    /// (count, bytes) of host-to-device, device-to-host and device-to-device transfers.
    transfers: [(u64, u64); 3],
    pool: PoolCounters,
}

/// Memory taken from the pools and the backend: unchanged by a call refused before it asks
/// for memory; a call that fails later (out of memory, a failed stream) may move it.
#[derive(Debug, Clone, PartialEq)]
struct PoolCounters {
    block_requests: u64,
    pool_hits: u64,
    backend_allocations: u64,
    backend_frees: u64,
    evictions: u64,
    cached_bytes: u64,
    reserved_bytes: u64,
    device_segments: u64,
}

fn counters(mm: &MemoryManager) -> Counters {
    let s = mm.statistics();
    let t = |t: &TransferStatistics| (t.count, t.bytes);
    Counters {
        buffers_allocated: s.buffers_allocated,
        buffers_freed: s.buffers_freed,
        active_allocations: s.active_allocations,
        total_bytes_allocated: s.total_bytes_allocated,
        total_bytes_freed: s.total_bytes_freed,
        active_bytes: s.active_bytes,
        peak_bytes: s.peak_bytes,
        transfers: [t(&s.host_to_device), t(&s.device_to_host), t(&s.device_to_device)],
        pool: PoolCounters {
            block_requests: s.block_requests,
            pool_hits: s.pool_hits,
            backend_allocations: s.backend_allocations,
            backend_frees: s.backend_frees,
            evictions: s.evictions,
            cached_bytes: s.cached_bytes,
            reserved_bytes: s.reserved_bytes,
            device_segments: s.device_segments,
        },
    }
}

/// What the runner checks after a case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    /// Every counter, the buffer and the bystanders.
    Everything,
    /// As `Everything`, but the pool counters may move: the call took (and gave back) memory
    /// before it failed.
    PoolsMayMove,
    /// The case builds its own buffers and checks them itself (only bystanders are checked).
    InCase,
}

#[track_caller]
fn check_counters(mm: &MemoryManager, before: &Counters, check: Check, at: &str) {
    let now = counters(mm);
    match check {
        Check::Everything => assert_eq!(now, *before, "{at}: the manager's statistics moved"),
        Check::PoolsMayMove => {
            assert_eq!(Counters { pool: before.pool.clone(), ..now }, *before, "{at}: the manager's statistics moved")
        }
        Check::InCase => {}
    }
}

// ---- managers and buffers ----

fn quiet() -> ManagerOptions {
    ManagerOptions { maintenance_interval: None, ..Default::default() }
}

fn sim() -> MemoryManager {
    MemoryManager::with_backend(SimBackend::new(SimOptions::default()), quiet()).unwrap()
}

fn cpu() -> MemoryManager {
    MemoryManager::with_backend(CpuBackend::new(), quiet()).unwrap()
}

/// `DCMEM_*` variables are process-global: every test that sets them, and every opening of a
/// driver (which may read the environment), holds this lock.
static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|p| p.into_inner())
}

/// A manager on the backend called `name`, opened under `ENV`.
fn open(name: &str) -> Result<MemoryManager> {
    let _guard = env_lock();
    MemoryManager::with_backend_name(name, quiet())
}

/// An OpenCL manager when the feature is on and a platform answers; `None` otherwise, unless
/// `DCMEM_REQUIRE_OPENCL=1`.
fn opencl() -> Option<MemoryManager> {
    if !cfg!(feature = "opencl") {
        return None;
    }
    match open("opencl") {
        Ok(mm) => Some(mm),
        Err(e @ Error::BackendUnavailable { .. }) => {
            let required = std::env::var("DCMEM_REQUIRE_OPENCL").is_ok_and(|v| v.trim() == "1");
            assert!(!required, "DCMEM_REQUIRE_OPENCL=1 but the OpenCL backend is unavailable: {e}");
            None
        }
        Err(e) => panic!("opening the OpenCL backend failed: {e:?}"),
    }
}

/// A cpu and a sim manager (and OpenCL where available), for checks that must hold on unified
/// and discrete memory alike.
fn managers() -> Vec<MemoryManager> {
    let mut v = vec![cpu(), sim()];
    v.extend(opencl());
    v
}

/// A buffer holding `data` in each state: HostOnly, HostDirty, Synchronized, DeviceDirty and
/// DeviceOnly.
fn in_every_state<T: Element + PartialEq>(mm: &MemoryManager, data: &[T]) -> Vec<UnifiedBuffer<T>> {
    let mut out = Vec::new();
    for state in [HostOnly, HostDirty, Synchronized, DeviceDirty, DeviceOnly] {
        let b = match state {
            HostOnly => mm.allocate_from(data).unwrap(),
            HostDirty => {
                let mut b = mm.allocate_from(data).unwrap();
                b.ensure_on_device().unwrap();
                b.as_mut_slice().unwrap()[0] = data[0];
                b
            }
            Synchronized => {
                let mut b = mm.allocate_from(data).unwrap();
                b.synchronize().unwrap();
                b
            }
            DeviceDirty => {
                let mut b = mm.allocate_from(data).unwrap();
                b.mark_device_dirty().unwrap();
                b
            }
            DeviceOnly => {
                let mut b = mm.allocate_device(data.len()).unwrap();
                b.upload(data).unwrap();
                b
            }
        };
        assert_eq!(b.state(), state);
        out.push(b);
    }
    out
}

/// A buffer of 10 u32 (100..110) in each state.
fn buffers_in_every_state(mm: &MemoryManager) -> Vec<UnifiedBuffer<u32>> {
    let data: Vec<u32> = (100..110).collect();
    in_every_state(mm, &data)
}

// ---- the three kinds of case and their runners ----

/// The other buffers a buffer case may use, which must not change either.
struct Fixture {
    mm: MemoryManager,
    /// Another manager on the same backend.
    other: MemoryManager,
    /// 7 elements of `mm` (HostOnly).
    short: UnifiedBuffer<u32>,
    /// 12 elements of `mm` (HostOnly).
    long: UnifiedBuffer<u32>,
    /// 10 elements of `other`, DeviceDirty.
    foreign: UnifiedBuffer<u32>,
}

struct FixtureBefore {
    short: Before<u32>,
    long: Before<u32>,
    foreign: Before<u32>,
    other: Counters,
}

impl Fixture {
    fn new(mm: &MemoryManager) -> Self {
        let other = open(mm.backend().name()).unwrap();
        let short = mm.allocate_from(&[7u32; 7]).unwrap();
        let long = mm.allocate_from(&[8u32; 12]).unwrap();
        let mut foreign = other.allocate_from(&[9u32; 10]).unwrap();
        foreign.mark_device_dirty().unwrap();
        Fixture { mm: mm.clone(), other, short, long, foreign }
    }

    /// Reads the fixture's buffers (host reads of `mm`'s buffers move no manager counter).
    fn watch(&self) -> FixtureBefore {
        let (short, long, foreign) = (watch(&self.short), watch(&self.long), watch(&self.foreign));
        FixtureBefore { short, long, foreign, other: counters(&self.other) }
    }
}

impl FixtureBefore {
    fn check(&self, fx: &Fixture, at: &str) {
        check_counters(&fx.other, &self.other, Check::Everything, &format!("{at} (the other manager)"));
        self.foreign.check(&fx.foreign, &format!("{at} (the other manager's buffer)"));
        self.short.check(&fx.short, &format!("{at} (the 7-element bystander)"));
        self.long.check(&fx.long, &format!("{at} (the 12-element bystander)"));
    }
}

type BufferFn = fn(&Fixture, &mut UnifiedBuffer<u32>);

/// A bad call on a buffer of 10 u32 (100..110), run once per manager and state.
struct BufferCase {
    name: &'static str,
    /// Run only on a buffer in this state.
    only: Option<BufferState>,
    check: Check,
    run: BufferFn,
}

const fn case(name: &'static str, run: BufferFn) -> BufferCase {
    BufferCase { name, only: None, check: Check::Everything, run }
}

fn run_buffer_cases(cases: &[BufferCase]) {
    let mut failed = Vec::new();
    for mm in managers() {
        let fx = Fixture::new(&mm);
        for case in cases {
            for mut b in buffers_in_every_state(&mm) {
                if case.only.is_some_and(|s| s != b.state()) {
                    continue;
                }
                let at = format!("[{}] {} (a {:?} buffer)", mm.backend().name(), case.name, b.state());
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let fx_before = fx.watch();
                    let before = watch(&b);
                    let counters_before = counters(&mm);
                    (case.run)(&fx, &mut b);
                    check_counters(&mm, &counters_before, case.check, &at);
                    if case.check != Check::InCase {
                        before.check(&b, &at);
                    }
                    fx_before.check(&fx, &at);
                }));
                if result.is_err() {
                    eprintln!("FAILED: {at}");
                    failed.push(at);
                }
            }
        }
    }
    assert!(failed.is_empty(), "{} failed (messages above):\n{}", failed.len(), failed.join("\n"));
}

/// A bad call on a manager, run once per manager next to a buffer of it in each state.
struct ManagerCase {
    name: &'static str,
    check: Check,
    run: fn(&MemoryManager),
}

const fn on_manager(name: &'static str, run: fn(&MemoryManager)) -> ManagerCase {
    ManagerCase { name, check: Check::Everything, run }
}

fn run_manager_cases(cases: &[ManagerCase]) {
    let mut failed = Vec::new();
    for mm in managers() {
        for case in cases {
            let at = format!("[{}] {}", mm.backend().name(), case.name);
            let bystanders = buffers_in_every_state(&mm);
            let result = catch_unwind(AssertUnwindSafe(|| {
                let before: Vec<_> = bystanders.iter().map(watch).collect();
                let counters_before = counters(&mm);
                (case.run)(&mm);
                check_counters(&mm, &counters_before, case.check, &at);
                for (b, w) in bystanders.iter().zip(&before) {
                    w.check(b, &format!("{at} (a {:?} bystander)", w.snap.state));
                }
            }));
            if result.is_err() {
                eprintln!("FAILED: {at}");
                failed.push(at);
            }
        }
    }
    assert!(failed.is_empty(), "{} failed (messages above):\n{}", failed.len(), failed.join("\n"));
}

/// A case that needs no manager, or makes its own, and checks what it touches itself.
struct Case {
    name: &'static str,
    run: fn(),
}

fn run_cases(cases: &[Case]) {
    let mut failed = Vec::new();
    for case in cases {
        if catch_unwind(case.run).is_err() {
            eprintln!("FAILED: {}", case.name);
            failed.push(case.name);
        }
    }
    assert!(failed.is_empty(), "{} failed (messages above):\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn the_matrix_has_at_least_60_cases() {
    let mut tables: Vec<(&str, Vec<&str>)> = vec![
        ("allocate", allocate::CASES.iter().map(|c| c.name).collect()),
        ("copy_from", copy_from::CASES.iter().map(|c| c.name).collect()),
        ("copy_to", copy_to::CASES.iter().map(|c| c.name).collect()),
        ("upload", upload::CASES.iter().map(|c| c.name).collect()),
        ("slice", slice::CASES.iter().map(|c| c.name).collect()),
        ("nested_slices", nested_slices::CASES.iter().map(|c| c.name).collect()),
        ("slice_ops", slice_ops::CASES.iter().map(|c| c.name).collect()),
        ("copy_from_buffer", copy_from_buffer::CASES.iter().map(|c| c.name).collect()),
        ("cast", cast::CASES.iter().map(|c| c.name).collect()),
        ("asynchronous", asynchronous::CASES.iter().map(|c| c.name).collect()),
        ("mark_device_dirty", {
            let mut v: Vec<&str> = mark_device_dirty::CASES.iter().map(|c| c.name).collect();
            v.extend(mark_device_dirty::OWN_CASES.iter().map(|c| c.name));
            v
        }),
        ("transfer_batch", transfer_batch::CASES.iter().map(|c| c.name).collect()),
        ("execute", execute::CASES.iter().map(|c| c.name).collect()),
        ("stream_to_device", stream_to_device::CASES.iter().map(|c| c.name).collect()),
        ("manager_options", manager_options::CASES.iter().map(|c| c.name).collect()),
        ("object_pool", object_pool::CASES.iter().map(|c| c.name).collect()),
        ("array_pool", array_pool::CASES.iter().map(|c| c.name).collect()),
        ("host_alloc", host_alloc::CASES.iter().map(|c| c.name).collect()),
        ("host_buffer_raw_parts", host_buffer_raw_parts::CASES.iter().map(|c| c.name).collect()),
        ("from_env", from_env::CASES.iter().map(|c| c.name).collect()),
        ("out_of_memory", out_of_memory::CASES.iter().map(|c| c.name).collect()),
        ("parse_byte_count", parse_byte_count::CASES.iter().map(|c| c.name).collect()),
        ("ops", ops::CASES.iter().map(|c| c.name).collect()),
        ("backend_calls", backend_calls::CASES.iter().map(|c| c.name).collect()),
        ("pinned_pool", pinned_pool::CASES.iter().map(|c| c.name).collect()),
    ];
    #[cfg(unix)]
    tables.push(("shared", shared::CASES.iter().map(|c| c.name).collect()));
    #[cfg(unix)]
    tables.push(("mapped", mapped::CASES.iter().map(|c| c.name).collect()));
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

// ---- allocate, allocate_device, allocate_zeroed (allocate_from takes a valid slice: no bad input) ----

mod allocate {
    use super::*;

    pub const CASES: &[ManagerCase] = &[
        on_manager("allocate: len * size_of::<T>() overflows usize", |mm| {
            fails!(
                mm.allocate::<u64>(usize::MAX / 4),
                Error::LengthOverflow { len, element_size: 8, type_name } if *len == usize::MAX / 4 && type_name.contains("u64")
            );
        }),
        on_manager("allocate: byte size above isize::MAX", |mm| {
            fails!(
                mm.allocate::<u8>(isize::MAX as usize + 1),
                Error::LengthOverflow { len, element_size: 1, .. } if *len == isize::MAX as usize + 1
            );
        }),
        on_manager("allocate_zeroed: usize::MAX elements", |mm| {
            fails!(
                mm.allocate_zeroed::<f64>(usize::MAX),
                Error::LengthOverflow { len: usize::MAX, element_size: 8, .. }
            );
        }),
        on_manager("allocate_device: len * size_of::<T>() overflows usize", |mm| {
            fails!(
                mm.allocate_device::<u32>(usize::MAX / 4 + 1),
                Error::LengthOverflow { len, element_size: 4, .. } if *len == usize::MAX / 4 + 1
            );
        }),
        // Representable, but more than any machine has: which error depends on whether the
        // host or the device allocation fails first, and on the size-class rounding.
        on_manager("allocate: representable but larger than any memory", |mm| {
            fails!(mm.allocate::<u8>(1 << 62), Error::OutOfMemory { .. } | Error::LengthOverflow { .. });
        }),
        on_manager("allocate_device: representable but larger than any device", |mm| {
            fails!(mm.allocate_device::<u8>(1 << 62), Error::OutOfMemory { .. } | Error::LengthOverflow { .. });
        }),
    ];

    #[test]
    fn matrix() {
        run_manager_cases(CASES);
    }

    #[test]
    fn length_overflow_names_len_and_element_size() {
        for mm in managers() {
            let before = mm.statistics();
            let len = usize::MAX / 4;
            let err = mm.allocate::<u64>(len).unwrap_err();
            match &err {
                Error::LengthOverflow { len: l, element_size: 8, type_name } => {
                    assert_eq!(*l, len);
                    assert!(type_name.contains("u64"), "{type_name}");
                }
                other => panic!("expected LengthOverflow, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&len.to_string()) && msg.contains("8 bytes"), "{msg}");
            // Products that fit in usize but not in isize (the limit for any Rust allocation).
            let err = mm.allocate::<u8>(isize::MAX as usize + 1).unwrap_err();
            assert!(matches!(err, Error::LengthOverflow { element_size: 1, .. }), "{err:?}");
            let err = mm.allocate::<u32>(usize::MAX / 4 + 1).unwrap_err();
            assert!(matches!(err, Error::LengthOverflow { element_size: 4, .. }), "{err:?}");
            let err = mm.allocate_zeroed::<f64>(usize::MAX).unwrap_err();
            assert!(matches!(err, Error::LengthOverflow { len: usize::MAX, element_size: 8, .. }), "{err:?}");
            let after = mm.statistics();
            assert_eq!(after.buffers_allocated, before.buffers_allocated, "a failed allocate counts no buffer");
            assert_eq!(after.backend_allocations, before.backend_allocations);
        }
    }

    #[test]
    fn huge_but_representable_lengths_fail_cleanly() {
        // len * size fits in isize, but no machine has that much memory: an error, not a panic
        // or an abort. Which error depends on where the allocation fails (host or device memory).
        for mm in managers() {
            let before = mm.statistics();
            for len in [1usize << 62, (1usize << 62) + 1, isize::MAX as usize - 4095, isize::MAX as usize] {
                let err = mm.allocate::<u8>(len).unwrap_err();
                assert!(
                    matches!(err, Error::OutOfMemory { requested, .. } if requested >= len as u64)
                        || matches!(err, Error::LengthOverflow { len: l, .. } if l >= len),
                    "{len}: {err:?}"
                );
            }
            let after = mm.statistics();
            assert_eq!(after.buffers_allocated, before.buffers_allocated);
            assert_eq!(after.active_allocations, 0);
        }
    }

    #[test]
    fn zero_length_buffers_are_valid_and_empty() {
        let sim_backend = Arc::new(SimBackend::new(SimOptions::default()));
        let sim_mm = MemoryManager::with_shared_backend(sim_backend.clone(), quiet()).unwrap();
        for mm in [cpu(), sim_mm] {
            let mut b = mm.allocate::<f32>(0).unwrap();
            let mut c = mm.allocate::<f32>(0).unwrap();
            assert_eq!((b.len(), b.size_in_bytes()), (0, 0));
            assert!(b.is_empty());
            assert_eq!(b.state(), HostOnly);
            assert!(b.as_slice().unwrap().is_empty());
            assert!(b.as_mut_slice().unwrap().is_empty());
            b.copy_from(&[]).unwrap();
            b.copy_to(&mut []).unwrap();
            b.fill(1.0).unwrap();
            assert!(b.to_vec().unwrap().is_empty());
            b.synchronize().unwrap();
            b.ensure_on_device().unwrap();
            b.ensure_on_host().unwrap();
            b.mark_device_dirty().unwrap();
            b.copy_from_buffer(&c).unwrap();
            c.copy_from_buffer(&b.slice(..).unwrap()).unwrap();
            b.compact().unwrap();
            assert_eq!(b.state(), HostOnly);
            pollster::block_on(b.copy_from_async(&[])).unwrap();
            pollster::block_on(b.copy_to_async(&mut [])).unwrap();
            pollster::block_on(b.synchronize_async()).unwrap();
            assert!(b.slice(..).unwrap().is_empty());
            assert!(b.slice(0..0).unwrap().as_slice().unwrap().is_empty());
            assert!(matches!(b.slice(0..1), Err(Error::OutOfRange { start: 0, end: 1, len: 0 })));
            assert!(matches!(b.copy_from(&[1.0]), Err(Error::LengthMismatch { expected: 0, actual: 1, .. })));
            let bytes = b.cast::<u8>().unwrap();
            assert!(bytes.is_empty());
            assert_eq!(mm.statistics().active_allocations, 2);
            assert_eq!(mm.statistics().active_bytes, 0);
            drop((bytes, c));
            let s = mm.statistics();
            assert_eq!((s.active_allocations, s.buffers_allocated, s.buffers_freed), (0, 2, 2));
            assert_eq!(s.backend_allocations, 0, "empty buffers need no memory");
        }
        assert_eq!(sim_backend.used(), 0);
    }
}

// ---- UnifiedBuffer::copy_from ----

mod copy_from {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_from: empty source", |_, b| {
            fails!(b.copy_from(&[]), Error::LengthMismatch { operation: "copy_from", expected: 10, actual: 0 });
        }),
        case("copy_from: source one short", |_, b| {
            fails!(b.copy_from(&[7; 9]), Error::LengthMismatch { operation: "copy_from", expected: 10, actual: 9 });
        }),
        case("copy_from: source one long", |_, b| {
            fails!(b.copy_from(&[7; 11]), Error::LengthMismatch { operation: "copy_from", expected: 10, actual: 11 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn copy_from_too_short_and_too_long() {
        for mm in managers() {
            for mut b in buffers_in_every_state(&mm) {
                let before = snapshot(&b);
                for n in [0usize, 9, 11, 100] {
                    let src = vec![7u32; n];
                    let err = b.copy_from(&src).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_from", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    let err = pollster::block_on(b.copy_from_async(&src)).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    // The same on a view: the view's length is what counts.
                    let err = b.slice_mut(2..5).unwrap().copy_from(&src[..n.min(2)]).unwrap_err();
                    assert!(matches!(err, Error::LengthMismatch { expected: 3, .. }), "{err:?}");
                    assert_eq!(snapshot(&b), before, "{:?} after copy_from of {n} elements", before.state);
                }
            }
        }
    }
}

// ---- UnifiedBuffer::copy_to ----

mod copy_to {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_to: empty output", |_, b| {
            fails!(b.copy_to(&mut []), Error::LengthMismatch { operation: "copy_to", expected: 10, actual: 0 });
        }),
        case("copy_to: output one short", |_, b| {
            let mut out = [7u32; 9];
            fails!(b.copy_to(&mut out), Error::LengthMismatch { operation: "copy_to", expected: 10, actual: 9 });
            assert_eq!(out, [7; 9], "a failed copy_to wrote into the output");
        }),
        case("copy_to: output one long", |_, b| {
            let mut out = [7u32; 11];
            fails!(b.copy_to(&mut out), Error::LengthMismatch { operation: "copy_to", expected: 10, actual: 11 });
            assert_eq!(out, [7; 11], "a failed copy_to wrote into the output");
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn copy_to_too_short_and_too_long() {
        for mm in managers() {
            for mut b in buffers_in_every_state(&mm) {
                let before = snapshot(&b);
                for n in [0usize, 9, 11, 100] {
                    let mut out = vec![7u32; n];
                    let err = b.copy_to(&mut out).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_to", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    assert!(out.iter().all(|&x| x == 7), "a failed copy_to wrote into the output");
                    let err = pollster::block_on(b.copy_to_async(&mut out)).unwrap_err();
                    assert!(
                        matches!(err, Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual } if actual == n),
                        "{err:?}"
                    );
                    let err = b.slice(1..4).unwrap().copy_to(&mut out).unwrap_err();
                    assert!(matches!(err, Error::LengthMismatch { expected: 3, .. }) || n == 3, "{err:?}");
                    assert!(out.iter().all(|&x| x == 7));
                    assert_eq!(snapshot(&b), before);
                }
            }
        }
    }
}

// ---- UnifiedBuffer::upload ----

mod upload {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("upload: empty data", |_, b| {
            fails!(b.upload(&[]), Error::LengthMismatch { operation: "upload", expected: 10, actual: 0 });
        }),
        case("upload: data one short", |_, b| {
            fails!(b.upload(&[7; 9]), Error::LengthMismatch { operation: "upload", expected: 10, actual: 9 });
        }),
        case("upload: data one long", |_, b| {
            fails!(b.upload(&[7; 11]), Error::LengthMismatch { operation: "upload", expected: 10, actual: 11 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- slice and slice_mut ----

mod slice {
    #![allow(clippy::reversed_empty_ranges)]
    use super::*;
    use std::ops::Bound;

    pub const CASES: &[BufferCase] = &[
        case("slice: end past the end", |_, b| {
            fails!(b.slice(2..11), Error::OutOfRange { start: 2, end: 11, len: 10 });
        }),
        case("slice_mut: inclusive end past the end", |_, b| {
            fails!(b.slice_mut(0..=10), Error::OutOfRange { start: 0, end: 11, len: 10 });
        }),
        case("slice: inclusive end usize::MAX (end + 1 overflows)", |_, b| {
            fails!(b.slice(..=usize::MAX), Error::OutOfRange { start: 0, end: usize::MAX, len: 10 });
        }),
        case("slice: reversed", |_, b| {
            fails!(b.slice(6..2), Error::ReversedRange { start: 6, end: 2 });
        }),
        case("slice_mut: reversed", |_, b| {
            fails!(b.slice_mut(6..2), Error::ReversedRange { start: 6, end: 2 });
        }),
        case("slice: start past the end, open end", |_, b| {
            fails!(b.slice(11..), Error::OutOfRange { start: 11, end: 10, len: 10 });
        }),
        case("slice_mut: start and end past the end", |_, b| {
            fails!(b.slice_mut(12..15), Error::OutOfRange { start: 12, end: 15, len: 10 });
        }),
        case("slice: start usize::MAX", |_, b| {
            fails!(b.slice(usize::MAX..), Error::OutOfRange { start: usize::MAX, end: 10, len: 10 });
        }),
        case("slice: excluded start usize::MAX (start + 1 overflows)", |_, b| {
            fails!(
                b.slice((Bound::Excluded(usize::MAX), Bound::Unbounded)),
                Error::OutOfRange { start: usize::MAX, end: usize::MAX, len: 10 }
            );
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn slice_ranges_out_of_bounds_reversed_and_past_the_end() {
        for mm in managers() {
            for mut b in buffers_in_every_state(&mm) {
                let before = snapshot(&b);
                // Out of bounds at the end.
                assert!(matches!(b.slice(2..11), Err(Error::OutOfRange { start: 2, end: 11, len: 10 })));
                assert!(matches!(b.slice_mut(0..=10), Err(Error::OutOfRange { start: 0, end: 11, len: 10 })));
                assert!(matches!(b.slice(..=usize::MAX), Err(Error::OutOfRange { len: 10, .. })));
                // Reversed.
                assert!(matches!(b.slice(6..2), Err(Error::ReversedRange { start: 6, end: 2 })));
                assert!(matches!(b.slice_mut(6..2), Err(Error::ReversedRange { start: 6, end: 2 })));
                // Starting past the end (even when the end is past it too, the start is reported).
                assert!(matches!(b.slice(11..), Err(Error::OutOfRange { start: 11, len: 10, .. })));
                assert!(matches!(b.slice_mut(12..15), Err(Error::OutOfRange { start: 12, end: 15, len: 10 })));
                assert!(matches!(b.slice(usize::MAX..), Err(Error::OutOfRange { start: usize::MAX, .. })));
                // Messages carry the numbers.
                let msg = b.slice(2..11).unwrap_err().to_string();
                assert!(msg.contains("2..11") && msg.contains("10"), "{msg}");
                // The edges themselves are fine.
                assert_eq!(b.slice(10..).unwrap().len(), 0);
                assert_eq!(b.slice(..).unwrap().len(), 10);
                assert_eq!(snapshot(&b), before);
            }
        }
    }
}

// ---- slices of slices ----

mod nested_slices {
    #![allow(clippy::reversed_empty_ranges)]
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("slice of a slice: inside the buffer but past the view", |_, b| {
            // 0..5 of the view 2..6 would be 2..7 of the buffer, which exists.
            let view = b.slice(2..6).unwrap();
            fails!(view.slice(0..5), Error::OutOfRange { start: 0, end: 5, len: 4 });
        }),
        case("slice of a slice: start past the view", |_, b| {
            fails!(b.slice(2..6).unwrap().slice(5..), Error::OutOfRange { start: 5, end: 4, len: 4 });
        }),
        case("slice of a slice: reversed", |_, b| {
            fails!(b.slice(2..6).unwrap().slice(3..1), Error::ReversedRange { start: 3, end: 1 });
        }),
        case("slice of a slice of a slice: past the innermost view", |_, b| {
            let inner = b.slice(2..6).unwrap().slice(1..3).unwrap();
            assert_eq!((inner.offset(), inner.len()), (3, 2));
            fails!(inner.slice(0..3), Error::OutOfRange { start: 0, end: 3, len: 2 });
        }),
        case("slice of an empty view", |_, b| {
            fails!(b.slice(10..).unwrap().slice(0..1), Error::OutOfRange { start: 0, end: 1, len: 0 });
        }),
        case("slice_mut of a slice_mut: past the view", |_, b| {
            fails!(b.slice_mut(2..6).unwrap().slice_mut(1..5), Error::OutOfRange { start: 1, end: 5, len: 4 });
        }),
        case("slice of a slice_mut: inclusive end past the view", |_, b| {
            fails!(b.slice_mut(2..6).unwrap().slice(4..=4), Error::OutOfRange { start: 4, end: 5, len: 4 });
        }),
        case("slice_mut of a slice_mut of a slice_mut: past the innermost view", |_, b| {
            let mut view = b.slice_mut(2..6).unwrap();
            let mut inner = view.slice_mut(1..3).unwrap();
            fails!(inner.slice_mut(2..3), Error::OutOfRange { start: 2, end: 3, len: 2 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn slice_of_a_slice_is_bounded_by_the_parent_view() {
        for mm in managers() {
            for mut b in buffers_in_every_state(&mm) {
                let before = snapshot(&b);
                {
                    // 2..6 of a length-10 buffer: 0..5 of the view would be 2..7 of the buffer,
                    // which exists, but lies outside the view.
                    let view = b.slice(2..6).unwrap();
                    assert!(matches!(view.slice(0..5), Err(Error::OutOfRange { start: 0, end: 5, len: 4 })));
                    assert!(matches!(view.slice(5..), Err(Error::OutOfRange { start: 5, len: 4, .. })));
                    assert!(matches!(view.slice(3..1), Err(Error::ReversedRange { start: 3, end: 1 })));
                    let inner = view.slice(1..3).unwrap();
                    assert_eq!((inner.offset(), inner.len()), (3, 2));
                    assert!(matches!(inner.slice(0..3), Err(Error::OutOfRange { start: 0, end: 3, len: 2 })));
                    assert_eq!(inner.to_vec().unwrap(), before.contents[3..5]);
                }
                {
                    let mut view = b.slice_mut(2..6).unwrap();
                    assert!(matches!(view.slice_mut(1..5), Err(Error::OutOfRange { start: 1, end: 5, len: 4 })));
                    assert!(matches!(view.slice(4..=4), Err(Error::OutOfRange { start: 4, end: 5, len: 4 })));
                    let mut inner = view.slice_mut(1..3).unwrap();
                    assert!(matches!(inner.slice_mut(2..3), Err(Error::OutOfRange { start: 2, end: 3, len: 2 })));
                    assert!(matches!(
                        inner.copy_from(&[1, 2, 3]),
                        Err(Error::LengthMismatch { expected: 2, actual: 3, .. })
                    ));
                }
                assert_eq!(snapshot(&b), before);
            }
        }
    }
}

// ---- what views do: copy_from, copy_to, copy_from_buffer, fill ----

mod slice_ops {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("BufferSliceMut::copy_from: source shorter than the view", |_, b| {
            let mut view = b.slice_mut(2..5).unwrap();
            fails!(view.copy_from(&[1, 2]), Error::LengthMismatch { operation: "copy_from", expected: 3, actual: 2 });
        }),
        case("BufferSliceMut::copy_from: source as long as the buffer, longer than the view", |_, b| {
            let mut view = b.slice_mut(2..5).unwrap();
            fails!(view.copy_from(&[1; 10]), Error::LengthMismatch { operation: "copy_from", expected: 3, actual: 10 });
        }),
        case("BufferSlice::copy_to: output longer than the view", |_, b| {
            let mut out = [7u32; 4];
            fails!(
                b.slice(1..4).unwrap().copy_to(&mut out),
                Error::LengthMismatch { operation: "copy_to", expected: 3, actual: 4 }
            );
            assert_eq!(out, [7; 4]);
        }),
        case("BufferSliceMut::copy_to: output shorter than the view", |_, b| {
            let mut out = [7u32; 2];
            fails!(
                b.slice_mut(1..4).unwrap().copy_to(&mut out),
                Error::LengthMismatch { operation: "copy_to", expected: 3, actual: 2 }
            );
            assert_eq!(out, [7; 2]);
        }),
        case("BufferSliceMut::copy_from_buffer: source of another length", |fx, b| {
            fails!(
                b.slice_mut(0..2).unwrap().copy_from_buffer(&fx.short),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 2, actual: 7 }
            );
        }),
        case("BufferSliceMut::copy_from_buffer: view of another manager's buffer", |fx, b| {
            fails!(
                b.slice_mut(2..4).unwrap().copy_from_buffer(&fx.foreign.slice(0..2).unwrap()),
                Error::ManagerMismatch { operation: "copy_from_buffer", left, right }
                    if (*left, *right) == (fx.mm.id(), fx.other.id())
            );
        }),
        // `fill` itself takes any value; its view is what can be wrong.
        case("BufferSliceMut::fill: view past the end", |_, b| {
            fails!(b.slice_mut(8..12).and_then(|mut v| v.fill(1)), Error::OutOfRange { start: 8, end: 12, len: 10 });
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- UnifiedBuffer::copy_from_buffer ----

mod copy_from_buffer {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_from_buffer: shorter buffer", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.short),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 7 }
            );
        }),
        case("copy_from_buffer: longer buffer", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.long),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 12 }
            );
        }),
        case("copy_from_buffer: shorter view", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.short.slice(0..3).unwrap()),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 3 }
            );
        }),
        case("copy_from_buffer: empty view", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.long.slice(12..).unwrap()),
                Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 0 }
            );
        }),
        case("copy_from_buffer: buffer of another manager", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.foreign),
                Error::ManagerMismatch { operation: "copy_from_buffer", left, right }
                    if (*left, *right) == (fx.mm.id(), fx.other.id())
            );
        }),
        case("copy_from_buffer: view of another manager's buffer", |fx, b| {
            fails!(
                b.copy_from_buffer(&fx.foreign.slice(..).unwrap()),
                Error::ManagerMismatch { operation: "copy_from_buffer", left, right }
                    if (*left, *right) == (fx.mm.id(), fx.other.id())
            );
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }

    #[test]
    fn copy_from_buffer_with_different_lengths() {
        for mm in managers() {
            let src = mm.allocate_from(&[9u32; 7]).unwrap();
            for mut dst in buffers_in_every_state(&mm) {
                let before = snapshot(&dst);
                let src_before = snapshot(&src);
                let err = dst.copy_from_buffer(&src).unwrap_err();
                assert!(
                    matches!(err, Error::LengthMismatch { operation: "copy_from_buffer", expected: 10, actual: 7 }),
                    "{err:?}"
                );
                let err = dst.copy_from_buffer(&src.slice(0..3).unwrap()).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 10, actual: 3, .. }), "{err:?}");
                let err = dst.slice_mut(0..2).unwrap().copy_from_buffer(&src).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 2, actual: 7, .. }), "{err:?}");
                let err = dst.slice_mut(1..9).unwrap().copy_from_buffer(&src.slice(1..).unwrap()).unwrap_err();
                assert!(matches!(err, Error::LengthMismatch { expected: 8, actual: 6, .. }), "{err:?}");
                assert_eq!(snapshot(&dst), before);
                assert_eq!(snapshot(&src), src_before);
            }
        }
    }

    #[test]
    fn copy_from_buffer_between_managers() {
        for (a, b) in [(cpu(), cpu()), (sim(), sim()), (cpu(), sim()), (sim(), cpu())] {
            let mut src = b.allocate_from(&[5u32; 10]).unwrap();
            src.mark_device_dirty().unwrap();
            for mut dst in buffers_in_every_state(&a) {
                let before = snapshot(&dst);
                let err = dst.copy_from_buffer(&src).unwrap_err();
                match err {
                    Error::ManagerMismatch { operation: "copy_from_buffer", left, right } => {
                        assert_eq!((left, right), (a.id(), b.id()));
                        assert_ne!(left, right);
                    }
                    other => panic!("expected ManagerMismatch, got {other:?}"),
                }
                let err = dst.slice_mut(2..4).unwrap().copy_from_buffer(&src.slice(0..2).unwrap()).unwrap_err();
                assert!(matches!(err, Error::ManagerMismatch { .. }), "{err:?}");
                assert_eq!(snapshot(&dst), before);
                assert_eq!(src.state(), DeviceDirty);
            }
        }
    }
}

// ---- cast and try_cast ----

mod cast {
    use super::*;

    /// `try_cast` of a buffer holding `data`, in each state, to `U`: fails with `expect`'s
    /// variant and hands the buffer back as it was.
    fn try_cast_refused<T: Element + PartialEq + Debug, U: Element>(
        mm: &MemoryManager,
        data: &[T],
        expect: fn(&Error) -> bool,
    ) {
        for b in in_every_state(mm, data) {
            let at = format!("{:?} {} -> {}", b.state(), T::TYPE_TAG.name, U::TYPE_TAG.name);
            let before = watch(&b);
            let c = counters(mm);
            let (b, err) = b.try_cast::<U>().unwrap_err();
            assert!(expect(&err), "{at}: {err:?}");
            check_counters(mm, &c, Check::Everything, &at);
            before.check(&b, &at);
        }
    }

    pub const CASES: &[ManagerCase] = &[
        ManagerCase {
            check: Check::InCase,
            ..on_manager("try_cast: 7 bytes to u32", |mm| {
                try_cast_refused::<u8, u32>(mm, &[1, 2, 3, 4, 5, 6, 7], |e| {
                    matches!(e, Error::CastMismatch { len: 7, from: "u8", from_size: 1, to: "u32", to_size: 4, .. })
                })
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("try_cast: 7 bytes to u16", |mm| {
                try_cast_refused::<u8, u16>(mm, &[1, 2, 3, 4, 5, 6, 7], |e| {
                    matches!(e, Error::CastMismatch { len: 7, from_size: 1, to: "u16", to_size: 2, .. })
                })
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("try_cast: 10 u32 (40 bytes) to u128", |mm| {
                try_cast_refused::<u32, u128>(mm, &[1; 10], |e| {
                    matches!(e, Error::CastMismatch { len: 10, from: "u32", from_size: 4, to: "u128", to_size: 16, .. })
                })
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("cast: 7 bytes to u64 (the buffer is dropped)", |mm| {
                for b in in_every_state(mm, &[1u8, 2, 3, 4, 5, 6, 7]) {
                    let state = b.state();
                    let c = counters(mm);
                    fails!(b.cast::<u64>(), Error::CastMismatch { len: 7, to: "u64", to_size: 8, .. });
                    // Exactly one buffer of 7 bytes went away; nothing was transferred.
                    let now = counters(mm);
                    assert_eq!(
                        (now.active_allocations, now.buffers_freed, now.active_bytes, now.transfers),
                        (c.active_allocations - 1, c.buffers_freed + 1, c.active_bytes - 7, c.transfers),
                        "{state:?}"
                    );
                }
            })
        },
    ];

    #[test]
    fn matrix() {
        run_manager_cases(CASES);
    }

    #[test]
    fn cast_with_sizes_that_do_not_divide() {
        for mm in managers() {
            let mut b = mm.allocate_from(&[1u8, 2, 3, 4, 5, 6, 7]).unwrap();
            b.mark_device_dirty().unwrap();
            let before = snapshot(&b);
            let (b, err) = b.try_cast::<u32>().unwrap_err();
            match err {
                Error::CastMismatch { len: 7, from: "u8", from_size: 1, to: "u32", to_size: 4, .. } => {}
                other => panic!("expected CastMismatch, got {other:?}"),
            }
            assert_eq!(snapshot(&b), before, "try_cast must hand the buffer back intact");
            let (b, err) = b.try_cast::<u16>().unwrap_err();
            assert!(matches!(err, Error::CastMismatch { to_size: 2, .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains('7') && msg.contains("u16"), "{msg}");
            assert_eq!(snapshot(&b), before);
            let err = b.cast::<u64>().unwrap_err();
            assert!(matches!(err, Error::CastMismatch { len: 7, to_size: 8, .. }), "{err:?}");
            assert_eq!(mm.statistics().active_allocations, 0, "cast consumes the buffer on failure");

            // And a cast that fits keeps contents and state.
            let mut w = mm.allocate_from(&[0x0403_0201u32, 0x0807_0605, 0x0c0b_0a09]).unwrap();
            w.mark_device_dirty().unwrap();
            let bytes = w.cast::<u8>().unwrap();
            assert_eq!(bytes.len(), 12);
            assert_eq!(bytes.state(), DeviceDirty);
            let expected: Vec<u8> =
                [0x0403_0201u32, 0x0807_0605, 0x0c0b_0a09].iter().flat_map(|x| x.to_ne_bytes()).collect();
            assert_eq!(bytes.to_vec().unwrap(), expected);
            let back = bytes.cast::<u16>().unwrap();
            assert_eq!(back.len(), 6);
        }
    }
}

// ---- copy_from_async and copy_to_async ----

mod asynchronous {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("copy_from_async: empty data", |_, b| {
            fails!(
                pollster::block_on(b.copy_from_async(&[])),
                Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual: 0 }
            );
        }),
        case("copy_from_async: data one short", |_, b| {
            fails!(
                pollster::block_on(b.copy_from_async(&[7; 9])),
                Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual: 9 }
            );
        }),
        case("copy_from_async: data one long", |_, b| {
            fails!(
                pollster::block_on(b.copy_from_async(&[7; 11])),
                Error::LengthMismatch { operation: "copy_from_async", expected: 10, actual: 11 }
            );
        }),
        case("copy_to_async: empty output", |_, b| {
            fails!(
                pollster::block_on(b.copy_to_async(&mut [])),
                Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual: 0 }
            );
        }),
        case("copy_to_async: output one short", |_, b| {
            let mut out = [7u32; 9];
            fails!(
                pollster::block_on(b.copy_to_async(&mut out)),
                Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual: 9 }
            );
            assert_eq!(out, [7; 9], "a refused copy_to_async wrote into the output");
        }),
        case("copy_to_async: output one long", |_, b| {
            let mut out = [7u32; 11];
            fails!(
                pollster::block_on(b.copy_to_async(&mut out)),
                Error::LengthMismatch { operation: "copy_to_async", expected: 10, actual: 11 }
            );
            assert_eq!(out, [7; 11], "a refused copy_to_async wrote into the output");
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- mark_device_dirty over unsynchronized host writes ----

mod mark_device_dirty {
    use super::*;

    pub const CASES: &[BufferCase] = &[BufferCase {
        only: Some(HostDirty),
        ..case("mark_device_dirty: host part written through as_mut_slice", |_, b| {
            let (h, d) = b.epochs();
            fails!(
                b.mark_device_dirty(),
                Error::ConcurrentModification { operation: "mark_device_dirty", host_epoch, device_epoch }
                    if (*host_epoch, *device_epoch) == (h, d) && h > d
            );
        })
    }];

    /// A Synchronized buffer written on the host by `write`, then marked device-dirty: refused,
    /// naming the epochs, with nothing changed.
    fn refused_after(mm: &MemoryManager, write: fn(&mut UnifiedBuffer<u32>)) {
        for state in [Synchronized, DeviceDirty] {
            let mut b = mm.allocate_from(&[1u32, 2, 3, 4, 5, 6]).unwrap();
            if state == Synchronized {
                b.synchronize().unwrap()
            } else {
                b.mark_device_dirty().unwrap()
            }
            write(&mut b);
            assert_eq!(b.state(), HostDirty, "from {state:?}");
            let at = format!("[{}] from {state:?}", mm.backend().name());
            let before = watch(&b);
            let c = counters(mm);
            fails!(
                b.mark_device_dirty(),
                Error::ConcurrentModification { operation: "mark_device_dirty", host_epoch, device_epoch }
                    if (*host_epoch, *device_epoch) == before.snap.epochs
            );
            check_counters(mm, &c, Check::Everything, &at);
            before.check(&b, &at);
        }
    }

    pub const OWN_CASES: &[ManagerCase] = &[
        ManagerCase {
            check: Check::InCase,
            ..on_manager("mark_device_dirty: host part written through a view", |mm| {
                refused_after(mm, |b| b.slice_mut(2..4).unwrap().copy_from(&[30, 40]).unwrap())
            })
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("mark_device_dirty: host part filled", |mm| refused_after(mm, |b| b.fill(5).unwrap()))
        },
        ManagerCase {
            check: Check::InCase,
            ..on_manager("mark_device_dirty: host part written by copy_from", |mm| {
                refused_after(mm, |b| b.copy_from(&[6, 5, 4, 3, 2, 1]).unwrap())
            })
        },
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
        run_manager_cases(OWN_CASES);
    }

    #[test]
    fn device_write_over_unsynchronized_host_writes_is_a_conflict() {
        for mm in managers() {
            let mut b = mm.allocate_from(&[1u32, 2, 3]).unwrap();
            b.ensure_on_device().unwrap();
            b.as_mut_slice().unwrap()[1] = 20;
            let before = snapshot(&b);
            assert_eq!(before.state, HostDirty);
            match b.mark_device_dirty().unwrap_err() {
                Error::ConcurrentModification { operation: "mark_device_dirty", host_epoch, device_epoch } => {
                    assert_eq!((host_epoch, device_epoch), before.epochs);
                    assert!(host_epoch > device_epoch);
                }
                other => panic!("expected ConcurrentModification, got {other:?}"),
            }
            assert_eq!(snapshot(&b), before);
            assert_eq!(b.to_vec().unwrap(), [1, 20, 3]);
        }
    }
}

// ---- TransferBatch: building a batch ----

mod transfer_batch {
    use super::*;

    pub const CASES: &[BufferCase] = &[
        case("TransferBatch::upload: source one short", |_, b| {
            let mut batch = TransferBatch::new();
            fails!(batch.upload(&[1u32; 9], b), Error::LengthMismatch { operation: "upload", expected: 10, actual: 9 });
            assert!(batch.is_empty());
        }),
        case("TransferBatch::upload: source one long", |_, b| {
            let mut batch = TransferBatch::new();
            fails!(
                batch.upload(&[1u32; 11], b),
                Error::LengthMismatch { operation: "upload", expected: 10, actual: 11 }
            );
            assert!(batch.is_empty());
        }),
        case("TransferBatch::upload_pinned: pinned source one short", |_, b| {
            let pinned = PinnedBuffer::<u32>::new(9).expect("9 pinned u32");
            let mut batch = TransferBatch::new();
            fails!(
                batch.upload_pinned(&pinned, b),
                Error::LengthMismatch { operation: "upload_pinned", expected: 10, actual: 9 }
            );
            assert!(batch.is_empty());
        }),
        case("TransferBatch::download: output one short", |_, b| {
            let mut out = [7u32; 9];
            let mut batch = TransferBatch::new();
            fails!(
                batch.download(b, &mut out),
                Error::LengthMismatch { operation: "download", expected: 10, actual: 9 }
            );
            assert!(batch.is_empty());
            assert_eq!(out, [7; 9]);
        }),
        case("TransferBatch::download: output one long", |_, b| {
            let mut out = [7u32; 11];
            let mut batch = TransferBatch::new();
            fails!(
                batch.download(b, &mut out),
                Error::LengthMismatch { operation: "download", expected: 10, actual: 11 }
            );
            assert!(batch.is_empty());
            assert_eq!(out, [7; 11]);
        }),
        case("TransferBatch::copy: shorter source", |fx, b| {
            let mut batch = TransferBatch::new();
            fails!(batch.copy(&fx.short, b), Error::LengthMismatch { operation: "copy", expected: 10, actual: 7 });
            assert!(batch.is_empty());
        }),
        case("TransferBatch::copy: longer source", |fx, b| {
            let mut batch = TransferBatch::new();
            fails!(batch.copy(&fx.long, b), Error::LengthMismatch { operation: "copy", expected: 10, actual: 12 });
            assert!(batch.is_empty());
        }),
        case("TransferBatch::copy: source of another manager", |fx, b| {
            let mut batch = TransferBatch::new();
            fails!(
                batch.copy(&fx.foreign, b),
                Error::ManagerMismatch { operation: "TransferBatch::copy", left, right }
                    if (*left, *right) == (fx.mm.id(), fx.other.id())
            );
            assert!(batch.is_empty());
        }),
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- TransferEngine::execute, execute_async (and the options stream_to_device shares) ----

mod execute {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    /// Every path that validates `TransferOptions` refuses `options`, naming `option` and
    /// `value`, before anything moves: execute and execute_async of an upload into `b`, execute
    /// of a download from it, and stream_to_device into it (which does not read the reader).
    fn refused(fx: &Fixture, b: &mut UnifiedBuffer<u32>, options: TransferOptions, option: &str, value: &str) {
        let engine = fx.mm.transfer_engine();
        let data: Vec<u32> = (0..10).collect();
        let named =
            |e: &Error| matches!(e, Error::InvalidArgument { option: o, value: v, .. } if *o == option && v == value);
        {
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            let e = fails!(engine.execute(batch, options.clone()), Error::InvalidArgument { .. });
            assert!(named(&e), "execute: {e:?}");
        }
        {
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            let e =
                fails!(pollster::block_on(engine.execute_async(batch, options.clone())), Error::InvalidArgument { .. });
            assert!(named(&e), "execute_async: {e:?}");
        }
        {
            let mut out = [7u32; 10];
            let mut batch = TransferBatch::new();
            batch.download(b, &mut out).unwrap();
            let e = fails!(engine.execute(batch, options.clone()), Error::InvalidArgument { .. });
            assert!(named(&e), "execute (download): {e:?}");
            assert_eq!(out, [7; 10]);
        }
        let mut reader = stream_to_device::Reader::new(40, None);
        let e = fails!(engine.stream_to_device(&mut reader, b, options, &mut |_, _| {}), Error::InvalidArgument { .. });
        assert!(named(&e), "stream_to_device: {e:?}");
        assert_eq!(reader.reads, 0, "stream_to_device read the reader before refusing the options");
    }

    fn retry(retry: RetryPolicy) -> TransferOptions {
        TransferOptions { retry, ..Default::default() }
    }

    const TWO_HOURS: Duration = Duration::from_secs(7200);

    pub const CASES: &[BufferCase] = &[
        case("TransferOptions: max_concurrency 0", |fx, b| {
            let o = TransferOptions { max_concurrency: 0, ..Default::default() };
            refused(fx, b, o, "TransferOptions::max_concurrency", "0");
        }),
        case("TransferOptions: chunk_size 0", |fx, b| {
            let o = TransferOptions { chunk_size: 0, ..Default::default() };
            refused(fx, b, o, "TransferOptions::chunk_size", "0");
        }),
        case("TransferOptions: staging_buffers 0", |fx, b| {
            let o = TransferOptions { staging_buffers: 0, ..Default::default() };
            refused(fx, b, o, "TransferOptions::staging_buffers", "0");
        }),
        case("TransferOptions: staging_buffers 1 (below 2..=8)", |fx, b| {
            let o = TransferOptions { staging_buffers: 1, ..Default::default() };
            refused(fx, b, o, "TransferOptions::staging_buffers", "1");
        }),
        case("TransferOptions: staging_buffers 9 (above 2..=8)", |fx, b| {
            let o = TransferOptions { staging_buffers: 9, ..Default::default() };
            refused(fx, b, o, "TransferOptions::staging_buffers", "9");
        }),
        case("TransferOptions: staging_buffers usize::MAX", |fx, b| {
            let o = TransferOptions { staging_buffers: usize::MAX, ..Default::default() };
            refused(fx, b, o, "TransferOptions::staging_buffers", &usize::MAX.to_string());
        }),
        case("RetryPolicy: max_attempts 0", |fx, b| {
            let o = retry(RetryPolicy { max_attempts: 0, ..Default::default() });
            refused(fx, b, o, "RetryPolicy::max_attempts", "0");
        }),
        case("RetryPolicy: initial_backoff above one hour", |fx, b| {
            let o = retry(RetryPolicy { initial_backoff: TWO_HOURS, ..Default::default() });
            refused(fx, b, o, "RetryPolicy::initial_backoff / max_backoff", "7200s / 100ms");
        }),
        case("RetryPolicy: max_backoff above one hour", |fx, b| {
            let o = retry(RetryPolicy { max_backoff: TWO_HOURS, ..Default::default() });
            refused(fx, b, o, "RetryPolicy::initial_backoff / max_backoff", "1ms / 7200s");
        }),
        case("RetryPolicy: multiplier below 1", |fx, b| {
            let o = retry(RetryPolicy { multiplier: 0.5, ..Default::default() });
            refused(fx, b, o, "RetryPolicy::multiplier", "0.5");
        }),
        case("RetryPolicy: multiplier NaN", |fx, b| {
            let o = retry(RetryPolicy { multiplier: f64::NAN, ..Default::default() });
            refused(fx, b, o, "RetryPolicy::multiplier", "NaN");
        }),
        case("RetryPolicy: multiplier infinite", |fx, b| {
            let o = retry(RetryPolicy { multiplier: f64::INFINITY, ..Default::default() });
            refused(fx, b, o, "RetryPolicy::multiplier", "inf");
        }),
        case("execute: upload into a buffer of another manager", |fx, b| {
            let data = [1u32; 10];
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            fails!(
                fx.other.transfer_engine().execute(batch, TransferOptions::default()),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
        }),
        case("execute: download from a buffer of another manager", |fx, b| {
            let mut out = [7u32; 10];
            let mut batch = TransferBatch::new();
            batch.download(b, &mut out).unwrap();
            fails!(
                fx.other.transfer_engine().execute(batch, TransferOptions::default()),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
            assert_eq!(out, [7; 10]);
        }),
        case("execute: a batch whose later transfer belongs to another manager", |fx, b| {
            // The first transfer is the engine's own (a download of its manager's buffer, which
            // the fixture checks): the whole batch is refused before anything moves.
            let data = [1u32; 10];
            let mut out = [7u32; 10];
            let mut batch = TransferBatch::new();
            batch.download(&fx.foreign, &mut out).unwrap();
            batch.upload(&data, b).unwrap();
            fails!(
                fx.other.transfer_engine().execute(batch, TransferOptions::default()),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
            assert_eq!(out, [7; 10], "the engine's own download ran");
        }),
        case("execute_async: upload into a buffer of another manager", |fx, b| {
            let data = [1u32; 10];
            let mut batch = TransferBatch::new();
            batch.upload(&data, b).unwrap();
            fails!(
                pollster::block_on(fx.other.transfer_engine().execute_async(batch, TransferOptions::default())),
                Error::ManagerMismatch { operation: "TransferEngine::execute", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
        }),
        BufferCase {
            check: Check::InCase,
            ..case("execute_async: future polled again after it completed", |fx, b| {
                let data: Vec<u32> = (0..10).collect();
                {
                    let mut batch = TransferBatch::new();
                    batch.upload(&data, b).unwrap();
                    let mut fut =
                        std::pin::pin!(fx.mm.transfer_engine().execute_async(batch, TransferOptions::default()));
                    let mut cx = Context::from_waker(Waker::noop());
                    let report = loop {
                        match fut.as_mut().poll(&mut cx) {
                            Poll::Ready(r) => break r.unwrap(),
                            Poll::Pending => std::thread::yield_now(),
                        }
                    };
                    assert!(report.is_success(), "{report:?}");
                    let c = counters(&fx.mm);
                    fails!(
                        match fut.as_mut().poll(&mut cx) {
                            Poll::Ready(r) => r,
                            Poll::Pending => panic!("a finished future went back to pending"),
                        },
                        Error::InvalidArgument { option: "future", .. }
                    );
                    check_counters(&fx.mm, &c, Check::Everything, "the second poll");
                }
                assert_eq!(b.to_vec().unwrap(), data);
            })
        },
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- TransferEngine::stream_to_device ----

mod stream_to_device {
    use super::*;
    use std::io::Read;

    /// `len` bytes (0, 1, 2, ...), then the end, or `error` if given; counts read calls.
    pub struct Reader {
        data: Vec<u8>,
        at: usize,
        error: Option<&'static str>,
        pub reads: usize,
    }

    impl Reader {
        pub fn new(len: usize, error: Option<&'static str>) -> Self {
            Reader { data: (0..len).map(|i| i as u8).collect(), at: 0, error, reads: 0 }
        }
    }

    impl Read for Reader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            if self.at == self.data.len() {
                return match self.error {
                    Some(e) => Err(std::io::Error::other(e)),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Chunks of 8 bytes: the 40-byte buffer is streamed in five, so a short reader fails
    /// after some chunks went to the device.
    fn options() -> TransferOptions {
        TransferOptions { chunk_size: 8, ..Default::default() }
    }

    /// Streams `reader` into `b`: the transfer is reported failed with the reader's error
    /// (InvalidArgument for option `stream reader`), and the buffer keeps what it had.
    fn reported_failed(fx: &Fixture, b: &mut UnifiedBuffer<u32>, mut reader: Reader, fragment: &str) {
        let report = fx
            .mm
            .transfer_engine()
            .stream_to_device(&mut reader, b, options(), &mut |_, _| {})
            .expect("a failed stream is reported, not returned");
        assert_eq!((report.failed, report.transfers.len(), report.total_bytes), (1, 1, 0), "{report:?}");
        let msg = report.transfers[0].error.as_deref().unwrap_or_default();
        assert!(msg.starts_with("invalid value for stream reader: ") && msg.contains(fragment), "{msg}");
    }

    pub const CASES: &[BufferCase] = &[
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: reader ends 4 bytes early", |fx, b| {
                let mut reader = Reader::new(36, None);
                fails!(
                    fx.mm.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                    Error::ReaderLengthMismatch {
                        operation: "stream_to_device",
                        expected: 40,
                        actual: 36,
                        at_least: false
                    }
                );
            })
        },
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: empty reader", |fx, b| {
                let mut reader = Reader::new(0, None);
                fails!(
                    fx.mm.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                    Error::ReaderLengthMismatch {
                        operation: "stream_to_device",
                        expected: 40,
                        actual: 0,
                        at_least: false
                    }
                );
            })
        },
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: reader fails midway", |fx, b| {
                reported_failed(fx, b, Reader::new(20, Some("disk on fire")), "disk on fire");
            })
        },
        case("stream_to_device: buffer of another manager", |fx, b| {
            let mut reader = Reader::new(40, None);
            fails!(
                fx.other.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                Error::ManagerMismatch { operation: "stream_to_device", left, right }
                    if (*left, *right) == (fx.other.id(), fx.mm.id())
            );
            assert_eq!(reader.reads, 0, "the reader was read although the call was refused");
        }),
        // More bytes than the buffer holds: refused, nothing of it lands in the buffer.
        BufferCase {
            check: Check::PoolsMayMove,
            ..case("stream_to_device: reader yields more than the buffer", |fx, b| {
                let mut reader = Reader::new(44, None);
                fails!(
                    fx.mm.transfer_engine().stream_to_device(&mut reader, b, options(), &mut |_, _| {}),
                    Error::ReaderLengthMismatch { operation: "stream_to_device", expected: 40, actual, at_least: true }
                        if *actual > 40
                );
            })
        },
    ];

    #[test]
    fn matrix() {
        run_buffer_cases(CASES);
    }
}

// ---- ManagerOptions that contradict each other ----

mod manager_options {
    use super::*;
    use std::time::Duration;

    pub const CASES: &[Case] = &[
        Case {
            name: "ManagerOptions: min_pool_bytes above max_pool_bytes",
            run: || {
                let o = ManagerOptions { min_pool_bytes: 2000, max_pool_bytes: 1000, ..quiet() };
                fails!(
                    MemoryManager::with_backend(CpuBackend::new(), o),
                    Error::InvalidArgument { option: "ManagerOptions::min_pool_bytes", value, .. }
                        if value == "2000 (max_pool_bytes is 1000)"
                );
            },
        },
        Case {
            name: "ManagerOptions: min_pool_bytes 1 with max_pool_bytes 0",
            run: || {
                let o = ManagerOptions { min_pool_bytes: 1, max_pool_bytes: 0, ..quiet() };
                fails!(
                    MemoryManager::with_backend(SimBackend::new(SimOptions::default()), o),
                    Error::InvalidArgument { option: "ManagerOptions::min_pool_bytes", value, .. }
                        if value == "1 (max_pool_bytes is 0)"
                );
            },
        },
        Case {
            name: "ManagerOptions: device_memory_limit Some(0)",
            run: || {
                let o = ManagerOptions { device_memory_limit: Some(0), ..quiet() };
                fails!(
                    open_with("sim", o),
                    Error::InvalidArgument { option: "ManagerOptions::device_memory_limit", value, .. } if value == "Some(0)"
                );
            },
        },
        Case {
            name: "ManagerOptions: maintenance_interval zero",
            run: || {
                // A shared backend: the refused manager must not keep a handle to it.
                let backend: Arc<dyn Backend> = Arc::new(SimBackend::new(SimOptions::default()));
                let o = ManagerOptions { maintenance_interval: Some(Duration::ZERO), ..Default::default() };
                fails!(
                    MemoryManager::with_shared_backend(backend.clone(), o),
                    Error::InvalidArgument { option: "ManagerOptions::maintenance_interval", value, .. } if value == "0s"
                );
                assert_eq!(Arc::strong_count(&backend), 1, "a refused manager kept the backend");
            },
        },
    ];

    fn open_with(name: &str, options: ManagerOptions) -> Result<MemoryManager> {
        let _guard = env_lock();
        MemoryManager::with_backend_name(name, options)
    }

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn manager_options_that_contradict_each_other() {
        let err = MemoryManager::with_backend(
            CpuBackend::new(),
            ManagerOptions { min_pool_bytes: 2000, max_pool_bytes: 1000, ..quiet() },
        )
        .unwrap_err();
        match &err {
            Error::InvalidArgument { option, value, .. } => {
                assert!(option.contains("min_pool_bytes"), "{option}");
                assert!(value.contains("2000") && value.contains("1000"), "{value}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let err = open_with(
            "sim",
            ManagerOptions { maintenance_interval: Some(std::time::Duration::ZERO), ..Default::default() },
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { option, .. } if option.contains("maintenance_interval")),
            "{err:?}"
        );
        // Equal bounds are fine.
        MemoryManager::with_backend(
            CpuBackend::new(),
            ManagerOptions { min_pool_bytes: 1000, max_pool_bytes: 1000, ..quiet() },
        )
        .unwrap();
    }
}

// ---- ObjectPool::builder ... build ----

mod object_pool {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// `configure` applied to a builder whose `create` counts its calls: `build` fails with the
    /// variant `expect` accepts, having created nothing.
    fn refused(configure: fn(ObjectPoolBuilder<Vec<u8>>) -> ObjectPoolBuilder<Vec<u8>>, expect: fn(&Error) -> bool) {
        let created = Arc::new(AtomicUsize::new(0));
        let counter = created.clone();
        let builder = ObjectPool::builder(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Vec::<u8>::new()
        });
        let e = fails!(configure(builder).build(), Error::InvalidArgument { .. });
        assert!(expect(&e), "{e:?}");
        assert_eq!(created.load(Ordering::Relaxed), 0, "a refused pool created objects");
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "ObjectPool: max_size 0",
            run: || {
                refused(
                    |b| b.max_size(0),
                    |e| matches!(e, Error::InvalidArgument { option: "max_size", value, .. } if value == "0"),
                )
            },
        },
        Case {
            name: "ObjectPool: min_size above max_size",
            run: || {
                refused(
                    |b| b.max_size(4).min_size(5),
                    |e| matches!(e, Error::InvalidArgument { option: "min_size", value, .. } if value == "5 (max_size is 4)"),
                )
            },
        },
        Case {
            name: "ObjectPool: min_size usize::MAX above max_size usize::MAX - 1",
            run: || {
                refused(
                    |b| b.max_size(usize::MAX - 1).min_size(usize::MAX),
                    |e| matches!(e, Error::InvalidArgument { option: "min_size", .. }),
                )
            },
        },
        Case {
            name: "ObjectPool: max_size 0 and min_size 3 (max_size is reported)",
            run: || {
                refused(
                    |b| b.max_size(0).min_size(3),
                    |e| matches!(e, Error::InvalidArgument { option: "max_size", .. }),
                )
            },
        },
        Case {
            name: "ObjectPool: maintenance_interval zero",
            run: || {
                refused(
                    |b| b.min_size(2).maintenance_interval(Duration::ZERO),
                    |e| matches!(e, Error::InvalidArgument { option: "maintenance_interval", value, .. } if value == "0s"),
                )
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- ArrayPool: rent, rent_raw and raw handles ----

mod array_pool {
    use super::*;

    /// Runs `f` and asserts the pool's statistics did not move.
    fn unchanged<T: Element>(pool: &ArrayPool<T>, f: impl FnOnce()) {
        let before = pool.statistics();
        f();
        assert_eq!(pool.statistics(), before, "the pool's statistics moved");
    }

    fn pool<T: Element>(max_array_len: usize) -> ArrayPool<T> {
        ArrayPool::new(ArrayPoolOptions { max_array_len, ..Default::default() })
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "ArrayPool::rent: one past max_array_len",
            run: || {
                let p = pool::<f32>(1000);
                unchanged(&p, || {
                    fails!(p.rent(1001), Error::ArrayTooLarge { requested: 1001, max_array_len: 1000 });
                });
            },
        },
        Case {
            name: "ArrayPool::rent: usize::MAX with the default limit",
            run: || {
                let p = ArrayPool::<u8>::default();
                unchanged(&p, || {
                    fails!(
                        p.rent(usize::MAX),
                        Error::ArrayTooLarge { requested: usize::MAX, max_array_len: 16_777_216 }
                    );
                });
            },
        },
        Case {
            name: "ArrayPool::rent_raw: one past max_array_len",
            run: || {
                let p = pool::<u64>(64);
                unchanged(&p, || {
                    fails!(p.rent_raw(65), Error::ArrayTooLarge { requested: 65, max_array_len: 64 });
                });
                assert_eq!(p.statistics().raw_outstanding, 0);
            },
        },
        Case {
            name: "ArrayPool::rent: max_array_len 0",
            run: || {
                let p = pool::<u32>(0);
                unchanged(&p, || {
                    fails!(p.rent(1), Error::ArrayTooLarge { requested: 1, max_array_len: 0 });
                });
            },
        },
        // With no limit, the size classes and the allocator refuse instead.
        Case {
            name: "ArrayPool::rent: usize::MAX with max_array_len usize::MAX (no class)",
            run: || {
                let p = pool::<u8>(usize::MAX);
                unchanged(&p, || {
                    fails!(p.rent(usize::MAX), Error::ArrayTooLarge { requested: usize::MAX, .. });
                });
            },
        },
        Case {
            name: "ArrayPool::rent: class byte size overflows with max_array_len usize::MAX",
            run: || {
                let p = pool::<u32>(usize::MAX);
                unchanged(&p, || {
                    fails!(p.rent(usize::MAX / 2), Error::LengthOverflow { element_size: 4, .. });
                });
            },
        },
        Case {
            name: "ArrayPool::rent: 4 EiB with max_array_len usize::MAX",
            run: || {
                let p = pool::<u8>(usize::MAX);
                unchanged(&p, || {
                    fails!(p.rent(1 << 62), Error::OutOfMemory { backend: "host", .. });
                });
            },
        },
        Case {
            name: "ArrayPool::return_raw: the same handle twice",
            run: || {
                let p = ArrayPool::<u32>::default();
                let h = p.rent_raw(10).unwrap();
                p.return_raw(h).unwrap();
                unchanged(&p, || {
                    fails!(p.return_raw(h), Error::DoubleReturn { pool, handle } if (*pool, *handle) == (p.id(), h.id()));
                });
            },
        },
        Case {
            name: "ArrayPool::return_raw: a handle of another pool",
            run: || {
                let (a, b) = (ArrayPool::<u32>::default(), ArrayPool::<u32>::default());
                let h = a.rent_raw(10).unwrap();
                unchanged(&a, || {
                    unchanged(&b, || {
                        fails!(
                            b.return_raw(h),
                            Error::ForeignHandle { handle_pool, pool } if (*handle_pool, *pool) == (a.id(), b.id())
                        );
                    })
                });
                a.return_raw(h).expect("the handle is still good in its own pool");
            },
        },
        Case {
            name: "ArrayPool::with_raw_mut: a returned handle",
            run: || {
                let p = ArrayPool::<u32>::default();
                let h = p.rent_raw(10).unwrap();
                p.return_raw(h).unwrap();
                unchanged(&p, || {
                    fails!(p.with_raw_mut(h, |_| panic!("ran on a returned handle")), Error::DoubleReturn { .. });
                });
            },
        },
        Case {
            name: "ArrayPool::with_raw_mut: a handle of another pool",
            run: || {
                let (a, b) = (ArrayPool::<u32>::default(), ArrayPool::<u32>::default());
                let h = a.rent_raw(10).unwrap();
                a.with_raw_mut(h, |x| x.fill(3)).unwrap();
                unchanged(&b, || {
                    fails!(b.with_raw_mut(h, |_| panic!("ran on a foreign handle")), Error::ForeignHandle { .. });
                });
                assert_eq!(a.with_raw_mut(h, |x| x.to_vec()).unwrap(), [3; 10]);
            },
        },
        Case {
            name: "ArrayPool::raw_ptr: a handle of another pool",
            run: || {
                let (a, b) = (ArrayPool::<u32>::default(), ArrayPool::<u32>::default());
                let h = a.rent_raw(3).unwrap();
                unchanged(&b, || {
                    fails!(b.raw_ptr(h), Error::ForeignHandle { .. });
                });
            },
        },
        Case {
            name: "ArrayPool::return_raw: inside with_raw_mut of the same handle",
            run: || {
                let p = ArrayPool::<u32>::default();
                let h = p.rent_raw(10).unwrap();
                let before = p.statistics();
                p.with_raw_mut(h, |x| {
                    fails!(p.return_raw(h), Error::InvalidArgument { option: "handle", .. });
                    x[0] = 1;
                })
                .unwrap();
                assert_eq!(p.statistics(), before);
                assert_eq!(p.with_raw_mut(h, |x| x[0]).unwrap(), 1, "the array stayed with its handle");
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- HostAlloc, allocate_host, PinnedBuffer and HostBlock ----

mod host_alloc {
    use super::*;

    /// `alloc.allocate::<u32>(len)` through a manager: fails as `expect` says, moving none of
    /// the manager's counters.
    fn refused(alloc: HostAlloc, len: usize, expect: fn(&Error) -> bool) {
        let mm = cpu();
        let c = counters(&mm);
        let e = fails!(mm.allocate_host::<u32>(&alloc, len), _);
        assert!(expect(&e), "{e:?}");
        check_counters(&mm, &c, Check::Everything, "allocate_host");
        // The builder says the same without allocating.
        if let Err(e2) = alloc.effective_alignment::<u32>() {
            assert_eq!(e2.to_string(), e.to_string());
        }
    }

    fn bad_alignment(e: &Error, alignment: usize, reason: &str) -> bool {
        matches!(e, Error::InvalidAlignment { alignment: a, element_align: 4, reason: r, .. } if *a == alignment && r.contains(reason))
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "HostAlloc: alignment 0",
            run: || refused(HostAlloc::new().alignment(0), 4, |e| bad_alignment(e, 0, "0 is not")),
        },
        Case {
            name: "HostAlloc: alignment not a power of two",
            run: || refused(HostAlloc::new().alignment(48), 4, |e| bad_alignment(e, 48, "power of two")),
        },
        Case {
            name: "HostAlloc: alignment below the element's",
            run: || refused(HostAlloc::new().alignment(2), 4, |e| bad_alignment(e, 2, "element type")),
        },
        Case {
            name: "HostAlloc: alignment just above 1 GiB",
            run: || refused(HostAlloc::new().alignment(1 << 31), 4, |e| bad_alignment(e, 1 << 31, "1 GiB")),
        },
        Case {
            name: "HostAlloc: alignment 2^63",
            run: || refused(HostAlloc::new().alignment(1 << 63), 4, |e| bad_alignment(e, 1 << 63, "1 GiB")),
        },
        Case {
            name: "HostAlloc: NUMA node the machine does not have",
            run: || {
                refused(HostAlloc::new().numa_node(4096), 4, |e| {
                    matches!(e, Error::NumaNodeUnavailable { node: 4096, .. })
                })
            },
        },
        Case {
            name: "HostAlloc: len * size_of::<T>() overflows",
            run: || {
                refused(
                    HostAlloc::new(),
                    usize::MAX / 2,
                    |e| matches!(e, Error::LengthOverflow { len, element_size: 4, .. } if *len == usize::MAX / 2),
                )
            },
        },
        Case {
            name: "HostAlloc: size rounded to the alignment overflows",
            run: || {
                refused(HostAlloc::new().alignment(1 << 20), isize::MAX as usize / 4, |e| {
                    matches!(e, Error::LengthOverflow { element_size: 4, .. })
                })
            },
        },
        Case {
            name: "HostAlloc::allocate_from: alignment not a power of two",
            run: || {
                let e = fails!(HostAlloc::new().alignment(3).allocate_from(&[1u64, 2]), Error::InvalidAlignment { .. });
                assert!(matches!(e, Error::InvalidAlignment { alignment: 3, element_align: 8, .. }), "{e:?}");
            },
        },
        Case {
            name: "HostAlloc::effective_alignment: below the element's",
            run: || {
                fails!(
                    HostAlloc::new().alignment(4).effective_alignment::<u64>(),
                    Error::InvalidAlignment { alignment: 4, element_align: 8, type_name: "u64", .. }
                );
            },
        },
        Case {
            name: "PinnedBuffer::with_options: alignment not a power of two",
            run: || {
                fails!(
                    PinnedBuffer::<u32>::with_options(&HostAlloc::new().alignment(3), 16),
                    Error::InvalidAlignment { alignment: 3, element_align: 4, .. }
                );
            },
        },
        Case {
            name: "PinnedBuffer::new: len * size_of::<T>() overflows",
            run: || {
                fails!(PinnedBuffer::<u64>::new(usize::MAX / 4), Error::LengthOverflow { element_size: 8, .. });
            },
        },
        Case {
            name: "HostBlock::allocate_zeroed: alignment not a power of two",
            run: || {
                fails!(HostBlock::allocate_zeroed(64, 48), Error::InvalidArgument { option: "alignment", value, .. } if value == "48 (size 64)");
            },
        },
        Case {
            name: "HostBlock::allocate_zeroed: alignment 0",
            run: || {
                fails!(HostBlock::allocate_zeroed(64, 0), Error::InvalidArgument { option: "alignment", .. });
            },
        },
        Case {
            name: "HostBlock::allocate_zeroed: size rounded to the alignment above isize::MAX",
            run: || {
                fails!(
                    HostBlock::allocate_zeroed(isize::MAX as usize, 4096),
                    Error::InvalidArgument { option: "alignment", .. }
                );
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- HostBuffer::try_from_raw_parts and from_raw_parts ----

mod host_buffer_raw_parts {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An owning deleter that counts its calls.
    fn counted<T>() -> (Arc<AtomicUsize>, Ownership<T>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        (
            calls,
            Ownership::owned(move |_, _| {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "try_from_raw_parts: null pointer with 3 elements",
            run: || {
                let (calls, owner) = counted::<f32>();
                // SAFETY: the call fails before the pointer is used.
                let r = unsafe { HostBuffer::<f32>::try_from_raw_parts(std::ptr::null_mut(), 3, owner) };
                fails!(
                    r,
                    Error::InvalidArgument { option: "HostBuffer::from_raw_parts(ptr)", value, .. } if value == "null with len 3"
                );
                assert_eq!(calls.load(Ordering::SeqCst), 0, "a refused wrap freed the memory");
            },
        },
        Case {
            name: "try_from_raw_parts: u32 pointer off by one byte",
            run: || {
                let mut words = [5u32; 4];
                let (calls, owner) = counted::<u32>();
                let misaligned = (words.as_mut_ptr() as *mut u8).wrapping_add(1).cast::<u32>();
                // SAFETY: the call fails on the alignment before the pointer is used.
                let r = unsafe { HostBuffer::try_from_raw_parts(misaligned, 2, owner) };
                fails!(r, Error::InvalidAlignment { alignment: 1, element_align: 4, type_name: "u32", .. });
                assert_eq!(calls.load(Ordering::SeqCst), 0);
                assert_eq!(words, [5; 4]);
            },
        },
        Case {
            name: "try_from_raw_parts: u64 pointer off by four bytes",
            run: || {
                let mut words = [5u64; 4];
                let misaligned = (words.as_mut_ptr() as *mut u8).wrapping_add(4).cast::<u64>();
                // SAFETY: the call fails on the alignment before the pointer is used.
                let r = unsafe { HostBuffer::try_from_raw_parts(misaligned, 2, Ownership::Borrowed) };
                fails!(r, Error::InvalidAlignment { alignment: 4, element_align: 8, .. });
                assert_eq!(words, [5; 4]);
            },
        },
        Case {
            name: "try_from_raw_parts: len * size_of::<T>() overflows",
            run: || {
                let mut one = 0u64;
                let (calls, owner) = counted::<u64>();
                // SAFETY: the call fails on the length before the pointer is used.
                let r = unsafe { HostBuffer::try_from_raw_parts(&mut one as *mut u64, usize::MAX, owner) };
                fails!(r, Error::LengthOverflow { len: usize::MAX, element_size: 8, .. });
                assert_eq!(calls.load(Ordering::SeqCst), 0);
            },
        },
        // The unchecked shape refuses the same inputs, by panicking (they break its contract).
        Case {
            name: "from_raw_parts: null pointer panics without freeing",
            run: || {
                let (calls, owner) = counted::<f32>();
                let refused = catch_unwind(AssertUnwindSafe(|| {
                    // SAFETY: the call fails on the null pointer before it is used.
                    unsafe { HostBuffer::<f32>::from_raw_parts(std::ptr::null_mut(), 3, owner) }
                }));
                let payload = refused.expect_err("from_raw_parts accepted a null pointer");
                let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
                assert!(msg.contains("try_from_raw_parts"), "{msg}");
                assert_eq!(calls.load(Ordering::SeqCst), 0);
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- allocate_shared and open_shared ----

#[cfg(unix)]
mod shared {
    use super::*;
    use dotcompute_memory::host::MAX_NAME_LEN;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A name no other test (or parallel run of this binary) uses.
    fn unique(tag: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!("dcmem-bad-{}-{tag}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    fn shm_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new("/dev/shm").join(name)
    }

    /// Runs `f` against a manager and asserts it moved none of its counters.
    fn unchanged(f: impl FnOnce(&MemoryManager)) {
        let mm = cpu();
        let c = counters(&mm);
        f(&mm);
        check_counters(&mm, &c, Check::Everything, "shared");
    }

    /// `name` is refused by both calls, and no segment of that name appears.
    fn bad_name(name: &str, reason: &str) {
        unchanged(|mm| {
            for r in [mm.allocate_shared::<u8>(name, 4).map(drop), mm.open_shared::<u8>(name).map(drop)] {
                fails!(r, Error::SharedName { name: n, reason: why } if n == name && why.contains(reason));
            }
        });
        if !name.is_empty() && !name.contains(['/', '\0']) && name != "." && name != ".." {
            assert!(!shm_path(name).exists());
        }
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "open_shared: no such name",
            run: || {
                let name = unique("missing");
                unchanged(|mm| {
                    fails!(mm.open_shared::<u32>(&name), Error::SharedNotFound { name: n } if *n == name);
                });
            },
        },
        Case {
            name: "open_shared: another element type of the same size",
            run: || {
                let name = unique("type");
                let mut buf = cpu().allocate_shared::<f32>(&name, 4).unwrap();
                buf[1] = 2.5;
                unchanged(|mm| {
                    fails!(
                        mm.open_shared::<u32>(&name),
                        Error::SharedTypeMismatch {
                            expected_type: "u32",
                            expected_id: 5,
                            expected_size: 4,
                            found_id: 9,
                            found_size: 4,
                            ..
                        }
                    );
                });
                assert_eq!(&buf[..], &[0.0, 2.5, 0.0, 0.0]);
            },
        },
        Case {
            name: "open_shared: an element type of another size",
            run: || {
                let name = unique("size");
                let _buf = cpu().allocate_shared::<f32>(&name, 4).unwrap();
                unchanged(|mm| {
                    fails!(
                        mm.open_shared::<f64>(&name),
                        Error::SharedTypeMismatch { expected_type: "f64", expected_size: 8, found_size: 4, .. }
                    );
                });
            },
        },
        Case {
            name: "allocate_shared: the name exists",
            run: || {
                let name = unique("exists");
                let mut buf = cpu().allocate_shared::<u32>(&name, 4).unwrap();
                buf[0] = 7;
                unchanged(|mm| {
                    fails!(
                        mm.allocate_shared::<u32>(&name, 8),
                        Error::SharedExists { name: n, creator_pid } if *n == name && *creator_pid == Some(std::process::id())
                    );
                });
                assert_eq!(&buf[..], &[7, 0, 0, 0]);
                // Reopened after this process's handle is closed (one handle per segment).
                buf.persist();
                let again = cpu().open_shared::<u32>(&name).unwrap();
                assert_eq!(&again[..], &[7, 0, 0, 0], "the segment was resized or changed");
                SharedBuffer::remove(&name).unwrap();
            },
        },
        Case { name: "shared name: empty", run: || bad_name("", "empty") },
        Case { name: "shared name: contains '/'", run: || bad_name("a/b", "'/'") },
        Case { name: "shared name: leading '/'", run: || bad_name("/lead", "'/'") },
        Case { name: "shared name: too long", run: || bad_name(&"n".repeat(MAX_NAME_LEN + 1), "bytes long") },
        Case { name: "shared name: NUL byte", run: || bad_name("a\0b", "NUL") },
        Case { name: "shared name: '.'", run: || bad_name(".", "are not names") },
        Case { name: "shared name: '..'", run: || bad_name("..", "are not names") },
        Case {
            name: "allocate_shared: len * size_of::<T>() overflows",
            run: || {
                let name = unique("overflow");
                unchanged(|mm| {
                    fails!(
                        mm.allocate_shared::<u64>(&name, usize::MAX / 2),
                        Error::LengthOverflow { element_size: 8, .. }
                    );
                });
                assert!(!shm_path(&name).exists(), "a refused allocate_shared left a segment");
            },
        },
        Case {
            name: "open_shared: segment shorter than a header",
            run: || {
                let name = unique("truncated");
                let bytes = &SharedHeader::for_type::<u32>(100, 1).unwrap().encode()[..20];
                std::fs::write(shm_path(&name), bytes).unwrap();
                unchanged(|mm| {
                    fails!(mm.open_shared::<u32>(&name), Error::SharedCorrupt { field: "segment size", name: n, .. } if *n == name);
                });
                let left = std::fs::read(shm_path(&name));
                std::fs::remove_file(shm_path(&name)).unwrap();
                assert_eq!(left.unwrap(), bytes, "open_shared changed the segment");
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- from_env and with_backend_name ----

mod from_env {
    use super::*;
    use std::ffi::OsStr;

    const BACKEND: &str = "DCMEM_BACKEND";
    const LIMIT: &str = "DCMEM_DEVICE_MEMORY_LIMIT";

    fn set(var: &str, value: Option<&OsStr>) {
        match value {
            Some(v) => std::env::set_var(var, v),
            None => std::env::remove_var(var),
        }
    }

    /// `from_env()` with `DCMEM_BACKEND` set to `value` (None: unset), under `ENV`.
    fn from_env_with(value: Option<&str>) -> Result<MemoryManager> {
        let _guard = env_lock();
        let old = std::env::var_os(BACKEND);
        set(BACKEND, value.map(OsStr::new));
        let r = MemoryManager::from_env();
        set(BACKEND, old.as_deref());
        r
    }

    /// `from_env()` with both variables as given (None: unset), under `ENV`; asserts the call
    /// left them as it found them, and restores what they were before.
    fn from_env_vars(backend: Option<&OsStr>, limit: Option<&OsStr>) -> Result<MemoryManager> {
        let _guard = env_lock();
        let saved = [BACKEND, LIMIT].map(std::env::var_os);
        set(BACKEND, backend);
        set(LIMIT, limit);
        let r = MemoryManager::from_env();
        let after = [BACKEND, LIMIT].map(std::env::var_os);
        set(BACKEND, saved[0].as_deref());
        set(LIMIT, saved[1].as_deref());
        assert_eq!(
            after,
            [backend.map(OsStr::to_os_string), limit.map(OsStr::to_os_string)],
            "from_env changed the environment"
        );
        r
    }

    fn unknown_backend(name: &str) {
        let e = fails!(from_env_vars(Some(name.as_ref()), None), Error::UnknownBackend { name: n, .. } if n == name);
        let Error::UnknownBackend { valid, .. } = e else { unreachable!() };
        for n in BACKEND_NAMES {
            assert!(valid.contains(n), "{valid} lacks {n}");
        }
    }

    fn bad_limit(value: &str) {
        fails!(
            from_env_vars(None, Some(value.as_ref())),
            Error::InvalidArgument { option: "DCMEM_DEVICE_MEMORY_LIMIT", value: v, .. } if v == value
        );
    }

    pub const CASES: &[Case] = &[
        Case { name: "from_env: DCMEM_BACKEND unknown", run: || unknown_backend("vulkan") },
        Case { name: "from_env: DCMEM_BACKEND a known name with a suffix", run: || unknown_backend("opencl3") },
        Case { name: "from_env: DCMEM_BACKEND a known name with spaces inside", run: || unknown_backend("s i m") },
        Case {
            name: "with_backend_name: unknown name",
            run: || {
                fails!(open("nope"), Error::UnknownBackend { name, valid } if name == "nope" && valid.contains("sim"));
            },
        },
        Case {
            name: "with_backend_name: empty name",
            run: || {
                fails!(open(""), Error::UnknownBackend { name, .. } if name.is_empty());
            },
        },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT with a word for the unit", run: || bad_limit("6 megabytes") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT zero", run: || bad_limit("0") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT negative", run: || bad_limit("-1") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT a fraction", run: || bad_limit("1.5GiB") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT above u64", run: || bad_limit("99999999999999999999") },
        Case { name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT above u64 once scaled", run: || bad_limit("20000000T") },
        #[cfg(unix)]
        Case {
            name: "from_env: DCMEM_DEVICE_MEMORY_LIMIT not UTF-8",
            run: || {
                use std::os::unix::ffi::OsStringExt;
                let raw = std::ffi::OsString::from_vec(vec![b'6', 0xFF, b'M']);
                fails!(
                    from_env_vars(None, Some(&raw)),
                    Error::InvalidArgument { option: "DCMEM_DEVICE_MEMORY_LIMIT", value, .. }
                        if value.contains("not valid UTF-8") && value.contains("\\xFF")
                );
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn from_env_reads_the_device_memory_limit_and_names_a_bad_one() {
        let _guard = env_lock();
        let old = std::env::var_os(LIMIT);
        let with = |v: &str| {
            std::env::set_var(LIMIT, v);
            MemoryManager::from_env()
        };
        let ok = with("6MiB").map(|mm| mm.options().device_memory_limit);
        let bad = with("6 megabytes").err();
        let empty = with(" ").map(|mm| mm.options().device_memory_limit);
        set(LIMIT, old.as_deref());
        assert_eq!(ok.unwrap(), Some(6 << 20));
        assert_eq!(empty.unwrap(), None, "empty means unset");
        let err = bad.expect("a malformed limit is an error");
        assert!(
            matches!(&err, Error::InvalidArgument { option: "DCMEM_DEVICE_MEMORY_LIMIT", value, .. } if value == "6 megabytes"),
            "{err:?}"
        );
        assert!(err.to_string().contains("512MiB"), "says what is accepted: {err}");
    }

    #[test]
    fn from_env_unknown_backend_lists_the_valid_names() {
        for bad in ["vulkan", "cpux", "s i m", "opencl3"] {
            let err = from_env_with(Some(bad)).unwrap_err();
            match &err {
                Error::UnknownBackend { name, valid } => {
                    assert_eq!(name, bad);
                    for n in BACKEND_NAMES {
                        assert!(valid.contains(n), "{valid} lacks {n}");
                    }
                }
                other => panic!("{bad}: expected UnknownBackend, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(bad) && msg.contains("cpu") && msg.contains("sim"), "{msg}");
        }
        // The same through the explicit constructor.
        let err = open("nope").unwrap_err();
        assert!(matches!(err, Error::UnknownBackend { ref name, .. } if name == "nope"), "{err:?}");
        // Unset, empty, and differently spelt known names work.
        assert_eq!(from_env_with(None).unwrap().backend().name(), "cpu");
        assert_eq!(from_env_with(Some("")).unwrap().backend().name(), "cpu");
        assert_eq!(from_env_with(Some(" SIM ")).unwrap().backend().name(), "sim");
    }

    #[test]
    fn from_env_backends_missing_from_the_build_are_unavailable_with_a_reason() {
        let compiled = |name: &str| {
            let table = [
                ("opencl", cfg!(feature = "opencl")),
                ("cuda", cfg!(feature = "cuda")),
                ("metal", cfg!(target_os = "macos")),
            ];
            table.iter().find(|(n, _)| *n == name).is_none_or(|(_, built)| *built)
        };
        for name in ["opencl", "cuda", "metal"] {
            match from_env_with(Some(name)) {
                Ok(mm) => {
                    assert!(compiled(name), "{name} opened in a build without it");
                    assert_eq!(mm.backend().name(), name);
                }
                Err(Error::BackendUnavailable { backend, reason }) => {
                    assert_eq!(backend, name);
                    assert!(!reason.trim().is_empty(), "{name}: empty reason");
                    if !compiled(name) && name != "metal" {
                        assert!(reason.contains(&format!("--features {name}")), "{name}: {reason}");
                    }
                    if name == "metal" && !cfg!(target_os = "macos") {
                        assert!(reason.contains("Apple"), "{reason}");
                    }
                }
                Err(other) => panic!("{name}: expected BackendUnavailable or success, got {other:?}"),
            }
        }
    }
}

// ---- device memory exhausted: the simulator's capacity, and ManagerOptions::device_memory_limit ----

mod out_of_memory {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A manager on a simulated device of 1 MiB, and the device.
    fn small_device() -> (Arc<SimBackend>, MemoryManager) {
        let sim = Arc::new(SimBackend::new(SimOptions { capacity: MIB, ..Default::default() }));
        let mm = MemoryManager::with_shared_backend(sim.clone(), quiet()).unwrap();
        (sim, mm)
    }

    /// `f` on a 2 MiB HostOnly buffer of a 1 MiB device (with a second one to copy from): out
    /// of memory with the whole device free, nothing changed, the device still empty.
    fn too_big(check: Check, f: fn(&MemoryManager, &mut UnifiedBuffer<u8>, &UnifiedBuffer<u8>) -> Result<()>) {
        let (sim, mm) = small_device();
        let mut big = mm.allocate_from(&vec![3u8; 2 * MIB]).unwrap();
        let src = mm.allocate_from(&vec![6u8; 2 * MIB]).unwrap();
        let (before, src_before) = (watch(&big), watch(&src));
        let c = counters(&mm);
        fails!(f(&mm, &mut big, &src), Error::OutOfMemory { backend: "sim", free, .. } if *free == MIB as u64);
        check_counters(&mm, &c, check, "2 MiB on a 1 MiB device");
        before.check(&big, "2 MiB on a 1 MiB device");
        src_before.check(&src, "the source");
        assert_eq!(sim.used(), 0);
    }

    /// `f` on a 600 KiB buffer whose device part is current (Synchronized, DeviceDirty), on a
    /// 1 MiB device: the call needs a second device block, which does not fit; nothing changed.
    fn second_block(f: fn(&mut UnifiedBuffer<u8>) -> Result<()>) {
        for state in [Synchronized, DeviceDirty] {
            let (sim, mm) = small_device();
            let mut b = mm.allocate_from(&vec![4u8; 600 << 10]).unwrap();
            if state == Synchronized {
                b.synchronize().unwrap()
            } else {
                b.mark_device_dirty().unwrap()
            }
            let used = sim.used();
            let before = watch(&b);
            let c = counters(&mm);
            fails!(f(&mut b), Error::OutOfMemory { backend: "sim", free, .. } if *free == (MIB - used) as u64);
            check_counters(&mm, &c, Check::PoolsMayMove, &format!("{state:?}"));
            before.check(&b, &format!("{state:?}"));
            assert_eq!(sim.used(), used);
        }
    }

    /// A manager on `name` allowed 1 MiB of device memory.
    fn limited(name: &str) -> MemoryManager {
        let _guard = env_lock();
        MemoryManager::with_backend_name(name, ManagerOptions { device_memory_limit: Some(MIB as u64), ..quiet() })
            .unwrap()
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "sim capacity: ensure_on_device",
            run: || too_big(Check::Everything, |_, b, _| b.ensure_on_device()),
        },
        Case { name: "sim capacity: synchronize", run: || too_big(Check::Everything, |_, b, _| b.synchronize()) },
        Case {
            name: "sim capacity: mark_device_dirty",
            run: || too_big(Check::Everything, |_, b, _| b.mark_device_dirty()),
        },
        Case {
            name: "sim capacity: synchronize_async",
            run: || too_big(Check::Everything, |_, b, _| pollster::block_on(b.synchronize_async())),
        },
        Case {
            name: "sim capacity: upload",
            run: || too_big(Check::Everything, |_, b, _| b.upload(&vec![5u8; 2 * MIB])),
        },
        Case {
            name: "sim capacity: copy_from_async",
            run: || // The data goes into a staging block first, which returns to the pool.
            too_big(Check::PoolsMayMove, |_, b, _| pollster::block_on(b.copy_from_async(&vec![5u8; 2 * MIB]))),
        },
        Case {
            name: "sim capacity: copy_from_buffer",
            run: || too_big(Check::Everything, |_, b, src| b.copy_from_buffer(src)),
        },
        Case {
            name: "sim capacity: allocate_device",
            run: || too_big(Check::Everything, |mm, _, _| mm.allocate_device::<u8>(2 * MIB).map(drop)),
        },
        Case {
            name: "sim capacity: upload needs a second block",
            run: || second_block(|b| b.upload(&vec![5u8; 600 << 10])),
        },
        Case {
            name: "sim capacity: copy_from_async needs a second block",
            run: || second_block(|b| pollster::block_on(b.copy_from_async(&vec![5u8; 600 << 10]))),
        },
        Case {
            name: "sim capacity: execute reports the upload failed",
            run: || {
                let (sim, mm) = small_device();
                let mut big = mm.allocate_from(&vec![3u8; 2 * MIB]).unwrap();
                let before = watch(&big);
                let c = counters(&mm);
                let data = vec![5u8; 2 * MIB];
                let mut batch = TransferBatch::new();
                batch.upload(&data, &mut big).unwrap();
                let report = mm.transfer_engine().execute(batch, TransferOptions::default()).unwrap();
                assert_eq!(report.failed, 1, "{report:?}");
                let msg = report.transfers[0].error.as_deref().unwrap_or_default();
                assert!(msg.starts_with("out of memory on sim"), "{msg}");
                check_counters(&mm, &c, Check::PoolsMayMove, "execute");
                before.check(&big, "execute");
                assert_eq!(sim.used(), 0);
            },
        },
        Case {
            name: "device_memory_limit: allocate on cpu",
            run: || {
                let mm = limited("cpu");
                let c = counters(&mm);
                fails!(
                    mm.allocate::<u8>(2 * MIB),
                    Error::MemoryLimitExceeded { backend: "cpu", limit, held: 0, .. } if *limit == MIB as u64
                );
                check_counters(&mm, &c, Check::Everything, "limited cpu");
            },
        },
        Case {
            name: "device_memory_limit: allocate_device on sim",
            run: || {
                let mm = limited("sim");
                let c = counters(&mm);
                fails!(
                    mm.allocate_device::<u8>(2 * MIB),
                    Error::MemoryLimitExceeded { backend: "sim", limit, held: 0, .. } if *limit == MIB as u64
                );
                check_counters(&mm, &c, Check::Everything, "limited sim");
            },
        },
        Case {
            name: "device_memory_limit: ensure_on_device on sim",
            run: || {
                let mm = limited("sim");
                let mut b = mm.allocate_from(&vec![1u8; 2 * MIB]).unwrap();
                let before = watch(&b);
                let c = counters(&mm);
                fails!(b.ensure_on_device(), Error::MemoryLimitExceeded { backend: "sim", limit, .. } if *limit == MIB as u64);
                check_counters(&mm, &c, Check::Everything, "limited sim");
                before.check(&b, "limited sim");
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }

    #[test]
    fn allocation_beyond_sim_capacity_names_requested_and_available() {
        let (sim, mm) = small_device();

        // Device memory is allocated lazily: the host part alone fits anywhere.
        let mut big = mm.allocate_from(&vec![3u8; 2 << 20]).unwrap();
        let before = snapshot(&big);
        let err = big.ensure_on_device().unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { backend: "sim", requested, free, cached: 0, .. }
                if requested == 2 << 20 && free == 1 << 20),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&(2u64 << 20).to_string()) && msg.contains(&(1u64 << 20).to_string()), "{msg}");
        assert_eq!(snapshot(&big), before);
        for r in [big.synchronize(), big.mark_device_dirty(), pollster::block_on(big.synchronize_async())] {
            assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
            assert_eq!(snapshot(&big), before);
        }
        assert_eq!(sim.used(), 0);

        // With part of the device in use, "available" is what is left.
        let mut a = mm.allocate_from(&vec![1u8; 512 << 10]).unwrap();
        a.ensure_on_device().unwrap();
        let mut b = mm.allocate_from(&vec![2u8; 768 << 10]).unwrap();
        let before_b = snapshot(&b);
        let err = b.ensure_on_device().unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { requested: 786_432, free: 524_288, .. }),
            "requested 768 KiB with 512 KiB free: {err:?}"
        );
        assert_eq!(snapshot(&b), before_b);
        // A device copy into a buffer without room fails the same way and changes nothing.
        let err = b.slice_mut(0..512 << 10).unwrap().copy_from_buffer(&a).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
        assert_eq!(snapshot(&b), before_b);
        assert_eq!(a.state(), Synchronized);
        assert_eq!(sim.used(), 512 << 10);
        drop((a, b, big));
        assert_eq!(mm.statistics().active_allocations, 0);
    }
}

// ---- units::parse_byte_count ----

mod parse_byte_count {
    use super::*;
    use dotcompute_memory::units::parse_byte_count;

    /// `text` is refused with a message containing `fragment`.
    fn refused(text: &str, fragment: &str) {
        let msg = parse_byte_count(text).expect_err(text);
        assert!(msg.contains(fragment), "{text:?}: {msg}");
    }

    pub const CASES: &[Case] = &[
        Case { name: "parse_byte_count: empty", run: || refused("", "is not a byte count") },
        Case { name: "parse_byte_count: blanks", run: || refused("   ", "is not a byte count") },
        Case { name: "parse_byte_count: a unit without a number", run: || refused("GiB", "is not a byte count") },
        Case { name: "parse_byte_count: negative", run: || refused("-1", "is not a byte count") },
        Case { name: "parse_byte_count: a fraction", run: || refused("1.5GiB", "unknown unit `.5gib`") },
        Case { name: "parse_byte_count: a word for the unit", run: || refused("12 parsecs", "unknown unit `parsecs`") },
        Case { name: "parse_byte_count: an unknown one-letter unit", run: || refused("3X", "unknown unit `x`") },
        Case {
            name: "parse_byte_count: more digits than u64 holds",
            run: || refused("99999999999999999999", "too large"),
        },
        Case { name: "parse_byte_count: overflows once scaled", run: || refused("20000000T", "too large") },
        Case { name: "parse_byte_count: zero", run: || refused("0", "zero") },
        Case { name: "parse_byte_count: zero with a unit", run: || refused("0K", "zero") },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- ops: bounds-checked host operations ----

mod ops {
    #![allow(clippy::reversed_empty_ranges)]
    use super::*;
    use dotcompute_memory::ops;

    const TEN: [u32; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

    pub const CASES: &[Case] = &[
        Case {
            name: "ops::copy_bytes: lengths differ",
            run: || {
                let mut dst = [1u8; 10];
                fails!(
                    ops::copy_bytes(&mut dst, &[2u8; 11]),
                    Error::LengthMismatch { operation: "ops::copy_bytes", expected: 10, actual: 11 }
                );
                assert_eq!(dst, [1; 10]);
            },
        },
        Case {
            name: "ops::copy: lengths differ",
            run: || {
                let mut dst = TEN;
                fails!(
                    ops::copy(&mut dst, &[2u32; 9]),
                    Error::LengthMismatch { operation: "ops::copy", expected: 10, actual: 9 }
                );
                assert_eq!(dst, TEN);
            },
        },
        Case {
            name: "ops::convert: lengths differ",
            run: || {
                let mut dst = [9.0f32; 2];
                fails!(
                    ops::convert(&mut dst, &[1i32, 2, 3]),
                    Error::LengthMismatch { operation: "ops::convert", expected: 2, actual: 3 }
                );
                assert_eq!(dst, [9.0; 2]);
            },
        },
        Case {
            name: "ops::copy_at: source does not fit",
            run: || {
                let mut dst = TEN;
                fails!(ops::copy_at(&mut dst, 8, &[1, 2, 3]), Error::OutOfRange { start: 8, end: 11, len: 10 });
                assert_eq!(dst, TEN);
            },
        },
        Case {
            name: "ops::copy_at: offset + len overflows",
            run: || {
                let mut dst = TEN;
                fails!(
                    ops::copy_at(&mut dst, usize::MAX, &[1]),
                    Error::OutOfRange { start: usize::MAX, end: usize::MAX, len: 10 }
                );
                assert_eq!(dst, TEN);
            },
        },
        Case {
            name: "ops::copy_within: source range past the end",
            run: || {
                let mut buf = TEN;
                fails!(ops::copy_within(&mut buf, 0..11, 0), Error::OutOfRange { start: 0, end: 11, len: 10 });
                assert_eq!(buf, TEN);
            },
        },
        Case {
            name: "ops::copy_within: destination past the end",
            run: || {
                let mut buf = TEN;
                fails!(ops::copy_within(&mut buf, 0..4, 7), Error::OutOfRange { start: 7, end: 11, len: 10 });
                assert_eq!(buf, TEN);
            },
        },
        Case {
            name: "ops::fill_range: past the end",
            run: || {
                let mut buf = TEN;
                fails!(ops::fill_range(&mut buf, 8..11, 1), Error::OutOfRange { start: 8, end: 11, len: 10 });
                assert_eq!(buf, TEN);
            },
        },
        Case {
            name: "ops::fill_range: reversed",
            run: || {
                let mut buf = TEN;
                fails!(ops::fill_range(&mut buf, 5..2, 1), Error::ReversedRange { start: 5, end: 2 });
                assert_eq!(buf, TEN);
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- the Backend trait, called directly ----

mod backend_calls {
    use super::*;
    use dotcompute_memory::backend;

    const PATTERN: [u8; 64] = {
        let mut p = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            p[i] = i as u8 + 1;
            i += 1;
        }
        p
    };

    /// `f` on the manager's backend and a 64-byte allocation of it holding `PATTERN`, which
    /// must still hold it afterwards.
    fn with_allocation(mm: &MemoryManager, f: fn(&dyn Backend, &DeviceMemory)) {
        let be = mm.backend();
        let m = be.allocate(64, 64).unwrap();
        be.write(&m, 0, &PATTERN).unwrap();
        f(be, &m);
        let mut back = [0u8; 64];
        be.read(&m, 0, &mut back).unwrap();
        assert_eq!(back, PATTERN, "a refused call changed the allocation");
        be.free(m).unwrap();
    }

    /// Another instance of the manager's backend (under `ENV`: a driver may read the
    /// environment).
    fn another_instance(mm: &MemoryManager) -> Arc<dyn Backend> {
        let _guard = env_lock();
        backend::open(mm.backend().name()).unwrap()
    }

    /// `f` with a 64-byte allocation of another instance of the manager's backend, which
    /// must still hold `PATTERN` afterwards.
    fn with_foreign(mm: &MemoryManager, f: fn(&dyn Backend, &DeviceMemory)) {
        let other = another_instance(mm);
        let m = other.allocate(64, 64).unwrap();
        other.write(&m, 0, &PATTERN).unwrap();
        f(mm.backend(), &m);
        let mut back = [0u8; 64];
        other.read(&m, 0, &mut back).unwrap();
        assert_eq!(back, PATTERN, "a refused call changed the other instance's allocation");
        other.free(m).unwrap();
    }

    fn out_of_range(e: &Error, start: usize, end: usize) -> bool {
        matches!(e, Error::OutOfRange { start: s, end: en, len: 64 } if (*s, *en) == (start, end))
    }

    pub const CASES: &[ManagerCase] = &[
        on_manager("Backend::allocate: alignment not a power of two", |mm| {
            fails!(mm.backend().allocate(64, 48), Error::InvalidArgument { option: "alignment", .. });
        }),
        on_manager("Backend::allocate: alignment 0", |mm| {
            fails!(mm.backend().allocate(64, 0), Error::InvalidArgument { option: "alignment", .. });
        }),
        on_manager("Backend::write: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.write(m, 62, &[9, 9, 9]), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 62, 65), "{e:?}");
            })
        }),
        on_manager("Backend::write: offset + len overflows", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.write(m, usize::MAX, &[9]), Error::OutOfRange { .. });
                assert!(out_of_range(&e, usize::MAX, usize::MAX), "{e:?}");
            })
        }),
        on_manager("Backend::write_async: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let src = [9u8; 8];
                // SAFETY: `src` outlives the call, which fails before enqueuing anything.
                let r = unsafe { be.write_async(0, m, 60, src.as_ptr(), src.len()) };
                let e = fails!(r.map(drop), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 60, 68), "{e:?}");
            })
        }),
        on_manager("Backend::read: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let mut out = [7u8; 5];
                let e = fails!(be.read(m, 60, &mut out), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 60, 65), "{e:?}");
                assert_eq!(out, [7; 5]);
            })
        }),
        on_manager("Backend::copy: source range past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.copy(m, 40, m, 0, 30), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 40, 70), "{e:?}");
            })
        }),
        on_manager("Backend::copy: destination range past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.copy(m, 0, m, 50, 20), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 50, 70), "{e:?}");
            })
        }),
        on_manager("Backend::fill: past the end", |mm| {
            with_allocation(mm, |be, m| {
                let e = fails!(be.fill(m, 10, 60, 0xEE), Error::OutOfRange { .. });
                assert!(out_of_range(&e, 10, 70), "{e:?}");
            })
        }),
        on_manager("Backend::write, fill, read: handle of another instance", |mm| {
            with_foreign(mm, |be, m| {
                fails!(be.write(m, 0, &[1; 8]), Error::InvalidHandle { backend, .. } if *backend == be.name());
                fails!(be.fill(m, 0, 8, 1), Error::InvalidHandle { .. });
                let mut out = [7u8; 8];
                fails!(be.read(m, 0, &mut out), Error::InvalidHandle { .. });
                assert_eq!(out, [7; 8]);
            })
        }),
        on_manager("Backend::copy: handle of another instance", |mm| {
            with_foreign(mm, |be, foreign| {
                let own = be.allocate(64, 64).unwrap();
                be.write(&own, 0, &PATTERN).unwrap();
                fails!(be.copy(foreign, 0, &own, 0, 8), Error::InvalidHandle { .. });
                fails!(be.copy(&own, 0, foreign, 0, 8), Error::InvalidHandle { .. });
                let mut back = [0u8; 64];
                be.read(&own, 0, &mut back).unwrap();
                assert_eq!(back, PATTERN);
                be.free(own).unwrap();
            })
        }),
        on_manager("Backend::free: handle of another instance", |mm| {
            let other = another_instance(mm);
            let m = other.allocate(64, 64).unwrap();
            // The handle is consumed; its instance frees the memory when it is dropped.
            fails!(mm.backend().free(m), Error::InvalidHandle { .. });
            let probe = other.allocate(64, 64).unwrap();
            other.free(probe).expect("the other instance still works");
        }),
    ];

    #[test]
    fn matrix() {
        run_manager_cases(CASES);
    }
}

// ---- PinnedPool::rent ----

mod pinned_pool {
    use super::*;

    /// `bytes` is refused by `rent` as `expect` says, with the pool's counters unmoved.
    fn refused(bytes: usize, expect: fn(&Error) -> bool) {
        let pool = PinnedPool::new(1 << 20);
        drop(pool.rent(4096).unwrap());
        let before = (pool.hits(), pool.misses(), pool.cached_bytes());
        let e = fails!(pool.rent(bytes), _);
        assert!(expect(&e), "{e:?}");
        assert_eq!((pool.hits(), pool.misses(), pool.cached_bytes()), before, "(hits, misses, cached bytes) moved");
    }

    pub const CASES: &[Case] = &[
        Case {
            name: "PinnedPool::rent: no size class fits",
            run: || {
                refused(usize::MAX, |e| matches!(e, Error::LengthOverflow { len: usize::MAX, element_size: 1, .. }))
            },
        },
        Case {
            name: "PinnedPool::rent: 4 EiB (no mapping that large)",
            run: || refused(1 << 62, |e| matches!(e, Error::OutOfMemory { .. } | Error::Os { .. })),
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}

// ---- MappedBuffer and MappedBufferMut ----

#[cfg(unix)]
mod mapped {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A path in the temporary directory that no other test uses; holds `contents` if given.
    fn file(tag: &str, contents: Option<&[u8]>) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dcmem-bad-{}-{tag}-{n}", std::process::id()));
        if let Some(c) = contents {
            std::fs::write(&path, c).unwrap();
        }
        path
    }

    /// Asserts `path` still holds `contents` (its size first: a refused call may have left a
    /// huge sparse file), and removes it.
    fn still_holds(path: &PathBuf, contents: &[u8]) {
        let size = std::fs::metadata(path).map(|m| m.len());
        let now = match size {
            Ok(n) if n == contents.len() as u64 => std::fs::read(path).ok(),
            _ => None,
        };
        let _ = std::fs::remove_file(path);
        assert_eq!(now.as_deref(), Some(contents), "a refused call changed the file (size now {size:?})");
    }

    const SEVEN: &[u8] = &[1, 2, 3, 4, 5, 6, 7];

    pub const CASES: &[Case] = &[
        Case {
            name: "MappedBuffer::open: no such file",
            run: || {
                let path = file("missing", None);
                // SAFETY: the call fails before anything is mapped.
                let r = unsafe { MappedBuffer::<u8>::open(&path) };
                fails!(r, Error::Os { operation: "open", errno: 2, .. });
                assert!(!path.exists());
            },
        },
        Case {
            name: "MappedBuffer::open: file size not a multiple of the element",
            run: || {
                let path = file("seven", Some(SEVEN));
                // SAFETY: nobody else touches the file; the call fails before mapping it.
                let r = unsafe { MappedBuffer::<u32>::open(&path) };
                fails!(r, Error::CastMismatch { len: 7, from_size: 1, to_size: 4, .. });
                still_holds(&path, SEVEN);
            },
        },
        Case {
            name: "MappedBufferMut::open: file size not a multiple of the element",
            run: || {
                let path = file("seven-mut", Some(SEVEN));
                // SAFETY: as above.
                let r = unsafe { MappedBufferMut::<u64>::open(&path) };
                fails!(r, Error::CastMismatch { len: 7, to_size: 8, .. });
                still_holds(&path, SEVEN);
            },
        },
        Case {
            name: "MappedBufferMut::create: len * size_of::<T>() overflows",
            run: || {
                let path = file("overflow", Some(SEVEN));
                // SAFETY: as above.
                let r = unsafe { MappedBufferMut::<u64>::create(&path, usize::MAX / 4) };
                fails!(r, Error::LengthOverflow { element_size: 8, .. });
                still_holds(&path, SEVEN);
            },
        },
        Case {
            name: "MappedBufferMut::create: directory does not exist",
            run: || {
                let path = file("dir", None).join("file");
                // SAFETY: the call fails before anything is mapped.
                let r = unsafe { MappedBufferMut::<u8>::create(&path, 16) };
                fails!(r, Error::Os { operation: "open", errno: 2, .. });
            },
        },
        Case {
            name: "MappedBufferMut::create: a size the file system refuses",
            run: || {
                let path = file("too-big", Some(SEVEN));
                // SAFETY: nobody else touches the file.
                let r = unsafe { MappedBufferMut::<u8>::create(&path, 1 << 62) };
                // ftruncate refuses it on most file systems; one that allows sparse files this
                // large (tmpfs) refuses the mapping instead.
                fails!(r, Error::Os { operation: "ftruncate" | "mmap", .. });
                still_holds(&path, SEVEN);
            },
        },
    ];

    #[test]
    fn matrix() {
        run_cases(CASES);
    }
}
