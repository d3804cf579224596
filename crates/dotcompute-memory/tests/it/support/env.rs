//! The process's environment, shared by every test of this binary: `DCMEM_*` variables are
//! process-global, so every test that sets them, and every opening of a driver that reads them
//! (backends by name, `from_env`, OpenCL device selectors), holds [`lock`].

use std::ffi::{OsStr, OsString};
use std::sync::{Mutex, MutexGuard};

static ENV: Mutex<()> = Mutex::new(());

/// The environment lock (a test that panicked while holding it does not poison it for the rest).
pub fn lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets (`Some`) or removes (`None`) one variable.
pub fn set(var: &str, value: Option<&OsStr>) {
    match value {
        Some(v) => std::env::set_var(var, v),
        None => std::env::remove_var(var),
    }
}

/// Variables set (or removed) for the guard's lifetime, then restored; the caller holds
/// [`lock`].
#[cfg_attr(not(feature = "opencl"), allow(dead_code))] // Used by the OpenCL tests.
pub struct Vars(Vec<(&'static str, Option<OsString>)>);

#[cfg_attr(not(feature = "opencl"), allow(dead_code))]
impl Vars {
    /// Sets each variable to its value (`None`: removes it), remembering what it was.
    pub fn set(vars: &[(&'static str, Option<&str>)]) -> Self {
        let saved = vars.iter().map(|(k, _)| (*k, std::env::var_os(k))).collect();
        for (k, v) in vars {
            set(k, v.map(OsStr::new));
        }
        Vars(saved)
    }
}

impl Drop for Vars {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            set(k, v.as_deref());
        }
    }
}
