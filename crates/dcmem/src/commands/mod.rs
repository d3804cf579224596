//! The commands besides `bench`: `info`, `demo`, `stats`, `stream` and `replay`, one file each.

/// Appends a formatted line to a `String` (writing to a `String` cannot fail).
macro_rules! say {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => { { let _ = writeln!($out, $($arg)*); } };
}

pub mod demo;
pub mod info;
pub mod replay;
pub mod stats;
pub mod stream;

use crate::CliResult;
use dotcompute_memory::{ManagerOptions, MemoryManager};

/// A manager on the backend called `backend`, with no maintenance thread (the commands are
/// short).
fn manager(backend: &str) -> CliResult<MemoryManager> {
    Ok(MemoryManager::with_backend_name(backend, ManagerOptions::default().with_maintenance_interval(None))?)
}
