//! The simulated discrete device.
//!
//! Device memory lives in host `Vec`s that only this backend can see, so host and device copies
//! of a buffer really differ and every coherence transition costs a real copy. Options add a
//! capacity (allocations beyond it fail with [`Error::OutOfMemory`]), a per-operation latency,
//! a bandwidth cap, and fault injection (fail the Nth operation, or each with probability p from
//! a seeded generator; transient or permanent), so retry, out-of-memory and error paths are
//! testable without hardware. It is a test instrument, not a stand-in for a real driver.
//!
//! [`Error::OutOfMemory`]: crate::Error::OutOfMemory

mod backend;
mod device;
mod event;
mod hold;
mod options;
#[cfg(test)]
mod tests;

pub use device::SimBackend;
pub use hold::CompletionHold;
pub use options::{FaultPlan, SimOptions};
