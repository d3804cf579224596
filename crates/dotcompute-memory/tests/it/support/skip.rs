//! Skipping the tests of a backend that cannot be opened here, or failing them when the
//! environment requires that backend (`DCMEM_REQUIRE_<NAME>`, read by
//! `dotcompute_memory::backend::required`).

use std::fmt::Display;
use std::io::Write;

/// Reports that `backend` is unavailable for `test`: a panic when the environment requires
/// the backend (or sets the flag to a value that is not a yes or a no), otherwise a line
/// written to the process's stderr directly, past the test harness's output capture, so
/// `cargo test` shows every skip and its reason.
pub fn unavailable(backend: &str, test: &str, reason: &dyn Display) {
    match dotcompute_memory::backend::required(backend) {
        Ok(false) => {
            let _ = writeln!(std::io::stderr(), "skipped {test}: the {backend} backend is unavailable: {reason}");
        }
        Ok(true) => panic!(
            "{}=1 requires the {backend} backend, but it is unavailable: {reason}",
            dotcompute_memory::backend::required_variable(backend).unwrap_or("DCMEM_REQUIRE_*")
        ),
        Err(e) => panic!("{e}"),
    }
}
