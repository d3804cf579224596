//! The run's environment (backend, faults, scarcity), error classification, and observing a
//! buffer against the model's candidates.

use super::*;

pub(crate) struct Env {
    /// The simulated device, when that is the backend.
    pub(crate) sim: Option<Arc<SimBackend>>,
    /// Backend calls may fail by injection.
    pub(crate) faults: bool,
    /// Allocations may fail for lack of memory (small device or a manager limit).
    pub(crate) scarce: bool,
}

pub(crate) fn is_injected(e: &Error) -> bool {
    matches!(e, Error::Backend { backend: "sim", message, .. } if message.contains("injected"))
}

pub(crate) enum ErrClass {
    Predicted(Want),
    /// A fault or shortage the environment allows anywhere.
    Environment,
}

pub(crate) fn classify(env: &Env, e: &Error, ctx: &dyn Fn() -> String) -> ErrClass {
    match e {
        Error::LengthMismatch { .. } => ErrClass::Predicted(Want::LengthMismatch),
        Error::ConcurrentModification { .. } => ErrClass::Predicted(Want::Conflict),
        e if env.faults && is_injected(e) => ErrClass::Environment,
        Error::OutOfMemory { .. } | Error::MemoryLimitExceeded { .. } if env.scarce => ErrClass::Environment,
        other => panic!("{}: unexpected error {other:?}", ctx()),
    }
}

/// A buffer and what the model allows it to be: one expectation, or several while an
/// asynchronous transfer that was not awaited may still be pending (it completes or fails when
/// a later call settles it).
pub(crate) struct Slot {
    pub(crate) buf: UnifiedBuffer<u32>,
    pub(crate) cands: Vec<Expect>,
    /// A transfer may be pending: reading would settle it, so the buffer is not observed.
    pub(crate) pending: bool,
}

pub(crate) fn dedup(v: Vec<Expect>) -> Vec<Expect> {
    let mut out: Vec<Expect> = Vec::with_capacity(v.len());
    for e in v {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// What the buffer holds now, read without changing it (injected read faults are retried and
/// must change nothing).
pub(crate) fn observe(env: &Env, buf: &UnifiedBuffer<u32>, settled: bool, ctx: &dyn Fn() -> String) -> Expect {
    let before = (buf.state(), buf.epochs());
    for _ in 0..256 {
        match buf.to_vec() {
            Ok(data) => {
                let now = Expect { data, state: buf.state(), epochs: Some(buf.epochs()) };
                if settled {
                    assert_eq!((now.state, now.epochs.unwrap()), before, "{}: to_vec changed the buffer", ctx());
                }
                return now;
            }
            Err(e) if env.faults && is_injected(&e) => {
                if settled {
                    assert_eq!((buf.state(), buf.epochs()), before, "{}: a failed read changed the buffer", ctx());
                }
            }
            Err(e) => panic!("{}: reading the buffer failed: {e:?}", ctx()),
        }
    }
    panic!("{}: 256 injected read faults in a row", ctx())
}

/// Checks a settled buffer against its candidates and collapses them to what it is.
pub(crate) fn check(env: &Env, slot: &mut Slot, ctx: &dyn Fn() -> String) {
    if slot.pending {
        return;
    }
    let seen = observe(env, &slot.buf, true, ctx);
    assert!(
        slot.cands.iter().any(|c| c.allows(&seen)),
        "{}: the buffer is {seen:?}; the model allows only {:?}",
        ctx(),
        slot.cands
    );
    slot.cands = vec![seen];
}

/// The candidates after a call that returned `result`, given what the model expects of each
/// (empty when none allows that result).
pub(crate) fn next_cands(
    env: &Env,
    cands: &[Expect],
    result: &Result<Option<Vec<u32>>>,
    expect: &dyn Fn(&Expect) -> Outcome,
    ctx: &dyn Fn() -> String,
) -> Vec<Expect> {
    let next: Vec<Expect> = match result {
        Ok(got) => cands
            .iter()
            .filter_map(|c| match expect(c) {
                Outcome::Ok(n, ret) if ret.is_none() || ret == *got => Some(n),
                _ => None,
            })
            .collect(),
        Err(e) => {
            let class = classify(env, e, ctx);
            cands
                .iter()
                .filter(|c| match (expect(c), &class) {
                    (Outcome::Fail(w), ErrClass::Predicted(got)) => w == *got,
                    (_, ErrClass::Environment) => true,
                    (Outcome::Ok(..), ErrClass::Predicted(_)) => false,
                })
                .cloned()
                .collect()
        }
    };
    dedup(next)
}

/// [`next_cands`], which must leave at least one candidate.
pub(crate) fn next_cands_checked(
    env: &Env,
    cands: &[Expect],
    result: &Result<Option<Vec<u32>>>,
    expect: &dyn Fn(&Expect) -> Outcome,
    ctx: &dyn Fn() -> String,
) -> Vec<Expect> {
    let next = next_cands(env, cands, result, expect, ctx);
    assert!(!next.is_empty(), "{}: returned {result:?}, which no expectation allows; the model had {cands:?}", ctx());
    next
}
