//! What the last manager handle ends: the background maintenance thread, and the recycle epoch
//! of the per-thread magazines.

use crate::pool::context::ManagerShared;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Stops and joins the maintenance thread when the last manager handle goes.
pub(super) struct Maintenance {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    /// Starts a thread that runs a maintenance pass on `shared` every `interval` until the last
    /// handle goes (or the context is gone). A thread that cannot be spawned means no background
    /// maintenance; `run_maintenance` still works.
    pub(super) fn start(shared: &Arc<ManagerShared>, interval: Duration) -> Arc<Maintenance> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak = Arc::downgrade(shared);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dcmem-maintenance-{}", shared.id))
            .spawn(move || loop {
                let (lock, cvar) = &*stop2;
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let (guard, _) =
                    cvar.wait_timeout_while(guard, interval, |stopped| !*stopped).unwrap_or_else(|p| p.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                match weak.upgrade() {
                    Some(shared) => {
                        shared.maintain();
                    }
                    None => return,
                }
            })
            .ok();
        Arc::new(Maintenance { stop, thread })
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Closes the manager's recycle epoch when the last handle is dropped (see `buffer::magazine`):
/// buffers dropped from then on return their memory to the shared caches, so the manager is
/// released with its last buffer. Then writes the allocation trace to its file, if it has one.
pub(super) struct LastHandle(pub(super) Arc<ManagerShared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.close();
        write_trace(&self.0);
    }
}

/// Writes the manager's trace to `TraceOptions::file`; a failure is one line on stderr (this
/// runs in a drop, with no caller to return an error to).
fn write_trace(shared: &ManagerShared) {
    let file = shared.options.trace.as_ref().and_then(|t| t.file.as_ref());
    let (Some(recorder), Some(file)) = (&shared.trace, file) else { return };
    if let Err(e) = recorder.snapshot().write_to_file(file) {
        eprintln!("dotcompute-memory: could not write the allocation trace to `{}`: {e}", file.display());
    }
}
