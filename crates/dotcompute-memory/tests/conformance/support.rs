//! Opening backends by name, skipping the unavailable ones, and small helpers shared by cases.

use dotcompute_memory::*;
use std::fmt::Debug;
use std::io::Write;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// What a case gets: the backend's name and a manager on it.
pub struct Ctx {
    /// Backend name as in `BACKEND_NAMES`.
    pub name: &'static str,
    /// The case being run (for messages).
    pub case: &'static str,
    /// A manager on the backend, with default pooling and no maintenance thread.
    pub mm: MemoryManager,
}

impl Ctx {
    /// True when host and device share memory (no transition copies).
    pub fn unified(&self) -> bool {
        self.mm.backend().is_unified()
    }

    /// Another manager on the same backend (a separate instance), or `None` if that cannot be
    /// opened although the first could (printed, not a failure).
    pub fn another_manager(&self) -> Option<MemoryManager> {
        match MemoryManager::with_backend_name(self.name, options()) {
            Ok(mm) => Some(mm),
            Err(e) => {
                eprintln!("[{}/{}] a second manager could not be opened: {e}", self.name, self.case);
                None
            }
        }
    }

    /// Prefix for assertion messages.
    pub fn at(&self) -> String {
        format!("[{}/{}]", self.name, self.case)
    }
}

/// Manager options for the suite: defaults, without the background maintenance thread.
pub fn options() -> ManagerOptions {
    ManagerOptions::default().with_maintenance_interval(None)
}

/// True when `DCMEM_REQUIRE_<NAME>` asks for the backend to be present.
pub fn required(name: &str) -> bool {
    dotcompute_memory::backend::required(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Opens `name` and runs `case` on it; skips (with the reason printed) when the backend is
/// unavailable and not required. A failure's message names the backend and the case.
pub fn run(name: &'static str, case: &'static str, f: fn(&Ctx)) {
    let mm = match MemoryManager::with_backend_name(name, options()) {
        Ok(mm) => mm,
        Err(Error::BackendUnavailable { backend, reason }) => {
            assert_eq!(backend, name, "BackendUnavailable names another backend");
            assert!(!reason.trim().is_empty(), "[{name}] BackendUnavailable without a reason");
            if required(name) {
                panic!(
                    "[{name}/{case}] DCMEM_REQUIRE_{}=1 but the backend is unavailable: {reason}",
                    name.to_ascii_uppercase()
                );
            }
            // Once per backend, written to the real stderr past the test harness's output
            // capture, so the reason shows in every run without repeating for every case.
            static REPORTED: Mutex<Vec<&str>> = Mutex::new(Vec::new());
            let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
            if !reported.contains(&name) {
                reported.push(name);
                let _ = writeln!(std::io::stderr(), "conformance: backend `{name}` skipped (unavailable): {reason}");
            }
            eprintln!("[{name}/{case}] skipped: backend unavailable: {reason}");
            return;
        }
        Err(e) => panic!("[{name}/{case}] opening the backend failed with an unexpected error: {e:?}"),
    };
    assert_eq!(mm.backend().name(), name, "with_backend_name({name}) opened another backend");
    let ctx = Ctx { name, case, mm };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(&ctx))) {
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(non-string panic)");
        eprintln!("[{name}/{case}] FAILED: {msg}");
        resume_unwind(payload);
    }
    let s = ctx.mm.statistics();
    assert_eq!(s.active_allocations, 0, "[{name}/{case}] buffers still alive after the case: {s:#?}");
}

/// `n` bytes of data with a period of 4099 (a prime, so no power-of-two offset error hides).
pub fn bytes(n: usize, seed: u8) -> Vec<u8> {
    const PERIOD: usize = 4099;
    let mut v: Vec<u8> = (0..PERIOD.min(n))
        .map(|i| (i as u32).wrapping_mul(131).wrapping_add(seed as u32 * 17).wrapping_add(i as u32 >> 8) as u8)
        .collect();
    while v.len() < n {
        // v.len() is a multiple of PERIOD here, so copying a prefix keeps the pattern.
        let k = (n - v.len()).min(v.len());
        v.extend_from_within(..k);
    }
    v
}

/// Asserts two slices are equal, reporting the first difference instead of printing both.
#[track_caller]
pub fn same<T: PartialEq + Debug>(what: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    // Slice equality runs in the (optimised) standard library, fast even in debug builds.
    if got == want {
        return;
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at index {i} of {}: got {:?}, want {:?}", got.len(), got[i], want[i]);
    }
}

/// A buffer holding `data` in `state`.
pub fn in_state<T: Element>(mm: &MemoryManager, data: &[T], state: BufferState) -> UnifiedBuffer<T> {
    if state == BufferState::DeviceOnly {
        let src = mm.allocate_from(data).unwrap();
        let mut b = mm.allocate_device::<T>(data.len()).unwrap();
        b.copy_from_buffer(&src).unwrap();
        assert_eq!(b.state(), state);
        return b;
    }
    let mut b = mm.allocate_from(data).unwrap();
    match state {
        BufferState::HostOnly => {}
        BufferState::HostDirty => {
            b.ensure_on_device().unwrap();
            b.copy_from(data).unwrap();
        }
        BufferState::Synchronized => b.ensure_on_device().unwrap(),
        BufferState::DeviceDirty => b.mark_device_dirty().unwrap(),
        BufferState::DeviceOnly => unreachable!("handled above"),
    }
    assert_eq!(b.state(), state);
    b
}

/// Every state, in the column order of the coherence table.
pub const STATES: [BufferState; 5] = [
    BufferState::HostOnly,
    BufferState::HostDirty,
    BufferState::Synchronized,
    BufferState::DeviceDirty,
    BufferState::DeviceOnly,
];

/// Everything a failed call must leave unchanged.
#[derive(Debug, PartialEq)]
pub struct Snapshot<T> {
    pub state: BufferState,
    pub epochs: (u64, u64),
    pub contents: Vec<T>,
}

pub fn snapshot<T: Element>(b: &UnifiedBuffer<T>) -> Snapshot<T> {
    let (state, epochs) = (b.state(), b.epochs());
    let contents = b.to_vec().unwrap();
    Snapshot { state, epochs, contents }
}

/// Transfers a buffer made, per direction: (host-to-device, device-to-host, device-to-device).
pub fn transfers(m: &BufferMetrics) -> (u64, u64, u64) {
    (m.host_to_device, m.device_to_host, m.device_to_device)
}
