//! Per-thread state around the `thread_local` crate's thread ids, shared by the statistics
//! shards and the object pool's per-thread slots.
//!
//! That crate gives a thread's id back in a thread-local destructor; a `ThreadLocal` looked up
//! after that takes a new id and touches the destroyed guard, which panics, and a panic
//! unwinding out of a thread-local destructor aborts the process. A buffer or pooled object
//! kept in a thread-local is dropped in such a destructor, possibly after the id's.
//!
//! Thread-local destructors run in reverse order of registration, so a thread becomes *ready*
//! by first taking the id (any `ThreadLocal` access) and then registering [`EXIT_GUARD`]: the
//! guard is destroyed before the id is given back and marks the thread as *exiting*; from then
//! on callers use their shared, thread-independent paths. Per-thread state registered after
//! the guard (the buffer magazine's exit flush) is destroyed while the id is still valid.
//!
//! A thread that was never ready may first need an id inside such a late destructor: taking it
//! then panics inside the crate, which [`become_ready`] catches (the panic message is still
//! printed), leaving the thread exiting.
//!
//! # Why `catch_unwind`, and why it is sound
//!
//! A thread that is not ready cannot tell, short of trying, whether the crate's id guard for
//! it is still to come or already destroyed: the crate has no lookup that takes an id without
//! panicking and keeps its per-thread state private, and std cannot say whether thread-local
//! destruction has begun. An exit guard of ours only helps once registered, i.e. once ready.
//!
//! The caught panic leaves nothing half-done (as of `thread_local` 1.1.10): it is raised by
//! `LocalKey::with` on the crate's destroyed guard in `thread_id::get_slow`, after the id
//! manager's lock was released (nothing is poisoned) and the new id stored in the thread's id
//! cell, and before the `ThreadLocal` itself is touched. That id is never given back (its
//! guard could not be registered), so no other thread can get it, and later lookups on this
//! thread by other users of the crate take it without panicking. The panic is caught inside
//! the destructor, so nothing unwinds out of one.
//!
//! Built with `panic = "abort"`, that panic aborts the process instead: a thread whose first
//! use of a manager's statistics or an object pool is in a thread-local destructor that runs
//! after the crate's id guard for that thread (registered by any other user of the crate on
//! that thread, after the destructor's own thread-local) takes the process down. Threads that
//! became ready before their exit began are not affected.

use std::cell::Cell;

/// Not ready yet: no per-thread state of ours exists for this thread.
const FRESH: u8 = 0;
/// The thread has its id and the exit guard; per-thread state may be used.
pub(crate) const READY: u8 = 1;
/// Thread-local destructors have reached the exit guard: use shared paths only.
const EXITING: u8 = 2;

thread_local! {
    static THREAD_STATE: Cell<u8> = const { Cell::new(FRESH) };
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Marks the thread as exiting when thread-local destructors reach it.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = THREAD_STATE.try_with(|s| s.set(EXITING));
    }
}

/// This thread's state: [`FRESH`], [`READY`] or [`EXITING`].
#[inline]
pub(crate) fn state() -> u8 {
    THREAD_STATE.get()
}

/// `use_id()` (a `ThreadLocal` lookup) when the thread is ready, or after making a fresh
/// thread ready with it; `None` once the thread is exiting.
#[inline]
pub(crate) fn when_ready<R>(use_id: impl FnOnce() -> R) -> Option<R> {
    match state() {
        READY => Some(use_id()),
        FRESH => become_ready(use_id),
        _ => None,
    }
}

/// Makes a fresh thread ready: runs `take_id` (a `ThreadLocal` access, which takes the id),
/// then registers the exit guard. `None` (and the thread counts as exiting) when that is no
/// longer possible because thread-local destructors are running.
#[cold]
fn become_ready<R>(take_id: impl FnOnce() -> R) -> Option<R> {
    // Unwind-safe: the one expected panic leaves every structure whole (see the module docs).
    let Ok(value) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(take_id)) else {
        THREAD_STATE.set(EXITING);
        return None;
    };
    if EXIT_GUARD.try_with(|_| ()).is_err() {
        THREAD_STATE.set(EXITING);
        return None;
    }
    THREAD_STATE.set(READY);
    Some(value)
}
