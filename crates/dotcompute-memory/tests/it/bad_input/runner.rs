//! The three kinds of case and their runners: a bad call on a buffer (run on a cpu, a sim and, where
//! available, an OpenCL manager, once on a buffer in each coherence state, next to bystander
//! buffers of the same and of another manager), a bad call on a manager (next to a buffer of it in
//! each state), and a case that checks what it touches itself. A failing case is named (with
//! backend and state) and the others still run.

use super::unchanged::{check_counters, counters, watch, Before, Check, Counters};
use crate::support::managers::{cpu, open, opencl, quiet, sim};
use dotcompute_memory::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use BufferState::*;

/// A cpu and a sim manager (and OpenCL where available), for checks that must hold on unified
/// and discrete memory alike.
pub fn managers() -> Vec<MemoryManager> {
    let mut v = vec![cpu(), sim()];
    v.extend(opencl("the bad-input cases", quiet()));
    v
}

/// A buffer holding `data` in each state: HostOnly, HostDirty, Synchronized, DeviceDirty and
/// DeviceOnly.
pub fn in_every_state<T: Element + PartialEq>(mm: &MemoryManager, data: &[T]) -> Vec<UnifiedBuffer<T>> {
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
pub fn buffers_in_every_state(mm: &MemoryManager) -> Vec<UnifiedBuffer<u32>> {
    let data: Vec<u32> = (100..110).collect();
    in_every_state(mm, &data)
}

/// The other buffers a buffer case may use, which must not change either.
pub struct Fixture {
    pub mm: MemoryManager,
    /// Another manager on the same backend.
    pub other: MemoryManager,
    /// 7 elements of `mm` (HostOnly).
    pub short: UnifiedBuffer<u32>,
    /// 12 elements of `mm` (HostOnly).
    pub long: UnifiedBuffer<u32>,
    /// 10 elements of `other`, DeviceDirty.
    pub foreign: UnifiedBuffer<u32>,
}

pub struct FixtureBefore {
    pub short: Before<u32>,
    pub long: Before<u32>,
    pub foreign: Before<u32>,
    pub other: Counters,
}

impl Fixture {
    pub fn new(mm: &MemoryManager) -> Self {
        let other = open(mm.backend().name()).unwrap();
        let short = mm.allocate_from(&[7u32; 7]).unwrap();
        let long = mm.allocate_from(&[8u32; 12]).unwrap();
        let mut foreign = other.allocate_from(&[9u32; 10]).unwrap();
        foreign.mark_device_dirty().unwrap();
        Fixture { mm: mm.clone(), other, short, long, foreign }
    }

    /// Reads the fixture's buffers (host reads of `mm`'s buffers move no manager counter).
    pub fn watch(&self) -> FixtureBefore {
        let (short, long, foreign) = (watch(&self.short), watch(&self.long), watch(&self.foreign));
        FixtureBefore { short, long, foreign, other: counters(&self.other) }
    }
}

impl FixtureBefore {
    pub fn check(&self, fx: &Fixture, at: &str) {
        check_counters(&fx.other, &self.other, Check::Everything, &format!("{at} (the other manager)"));
        self.foreign.check(&fx.foreign, &format!("{at} (the other manager's buffer)"));
        self.short.check(&fx.short, &format!("{at} (the 7-element bystander)"));
        self.long.check(&fx.long, &format!("{at} (the 12-element bystander)"));
    }
}

pub type BufferFn = fn(&Fixture, &mut UnifiedBuffer<u32>);

/// A bad call on a buffer of 10 u32 (100..110), run once per manager and state.
pub struct BufferCase {
    pub name: &'static str,
    /// Run only on a buffer in this state.
    pub only: Option<BufferState>,
    pub check: Check,
    pub run: BufferFn,
}

pub const fn case(name: &'static str, run: BufferFn) -> BufferCase {
    BufferCase { name, only: None, check: Check::Everything, run }
}

pub fn run_buffer_cases(cases: &[BufferCase]) {
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
pub struct ManagerCase {
    pub name: &'static str,
    pub check: Check,
    pub run: fn(&MemoryManager),
}

pub const fn on_manager(name: &'static str, run: fn(&MemoryManager)) -> ManagerCase {
    ManagerCase { name, check: Check::Everything, run }
}

pub fn run_manager_cases(cases: &[ManagerCase]) {
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
pub struct Case {
    pub name: &'static str,
    pub run: fn(),
}

pub fn run_cases(cases: &[Case]) {
    let mut failed = Vec::new();
    for case in cases {
        if catch_unwind(case.run).is_err() {
            eprintln!("FAILED: {}", case.name);
            failed.push(case.name);
        }
    }
    assert!(failed.is_empty(), "{} failed (messages above):\n{}", failed.len(), failed.join("\n"));
}
