//! `DCMEM_REQUIRE_<NAME>`: whether the environment asks for a backend to be present.
//!
//! Test suites skip the cases of a backend that cannot be opened here (no driver, no device)
//! and print why; a run that must exercise a backend (CI with PoCL, a GPU machine) sets
//! `DCMEM_REQUIRE_OPENCL=1` or `DCMEM_REQUIRE_CUDA=1` so that a skip becomes a failure. Every
//! test file reads the flag through [`required`], so all accept the same values.

use crate::error::{Error, Result};

/// The variable for each backend name (`DCMEM_REQUIRE_` + the name in capitals).
const VARIABLES: &[(&str, &str)] = &[
    ("cpu", "DCMEM_REQUIRE_CPU"),
    ("sim", "DCMEM_REQUIRE_SIM"),
    ("opencl", "DCMEM_REQUIRE_OPENCL"),
    ("cuda", "DCMEM_REQUIRE_CUDA"),
    ("metal", "DCMEM_REQUIRE_METAL"),
];

/// The environment variable that requires backend `name`, if `name` is a backend.
pub fn variable(name: &str) -> Option<&'static str> {
    VARIABLES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.trim())).map(|(_, v)| *v)
}

/// Whether `DCMEM_REQUIRE_<NAME>` asks for backend `name`: `1`, `true`, `yes` or `on` (any
/// case) mean yes; unset, empty, `0`, `false`, `no` or `off` mean no.
///
/// ```
/// std::env::set_var("DCMEM_REQUIRE_METAL", "yes");
/// assert!(dotcompute_memory::backend::required("metal")?);
/// std::env::set_var("DCMEM_REQUIRE_METAL", "perhaps");
/// assert!(dotcompute_memory::backend::required("metal").is_err());
/// # Ok::<(), dotcompute_memory::Error>(())
/// ```
///
/// Errors: [`Error::UnknownBackend`] for a name that is not a backend; [`Error::InvalidArgument`]
/// naming the variable for any other value, or one that is not UTF-8.
pub fn required(name: &str) -> Result<bool> {
    let option = variable(name)
        .ok_or_else(|| Error::UnknownBackend { name: name.to_string(), valid: super::BACKEND_NAMES.join(", ") })?;
    let Some(raw) = std::env::var_os(option) else { return Ok(false) };
    let invalid = |value: String| Error::InvalidArgument {
        option,
        value,
        reason: "must be 1, true, yes or on to require the backend, or 0, false, no, off or empty",
    };
    let value = raw.into_string().map_err(|raw| invalid(format!("{raw:?} (not UTF-8)")))?;
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(value)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_backend_has_a_variable() {
        for name in super::super::BACKEND_NAMES {
            let var = super::variable(name).expect("variable");
            assert_eq!(var, format!("DCMEM_REQUIRE_{}", name.to_ascii_uppercase()));
        }
        assert_eq!(super::variable("vulkan"), None);
        assert!(matches!(super::required("vulkan"), Err(crate::error::Error::UnknownBackend { .. })));
    }
}
