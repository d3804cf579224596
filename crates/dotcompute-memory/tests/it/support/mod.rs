//! Helpers the integration tests share: managers, the environment lock, skipping an unavailable
//! backend, re-running a test in a child process, a seeded generator and test data.

pub mod child;
pub mod data;
pub mod env;
pub mod managers;
pub mod rng;
pub mod skip;
