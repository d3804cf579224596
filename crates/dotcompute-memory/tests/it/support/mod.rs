//! Helpers the integration tests share: managers, the environment lock, skipping an unavailable
//! backend, re-running a test in a child process, a seeded generator, test data, a DLPack
//! producer, and reading memory summaries.

pub mod child;
pub mod data;
#[cfg(feature = "dlpack")]
pub mod dlpack;
pub mod env;
pub mod managers;
pub mod rng;
pub mod skip;
pub mod summary;
