//! The crate's environment variables, read one way: unset or blank means "not given", and a
//! value that is not valid UTF-8 is an [`Error::InvalidArgument`] naming the variable, never
//! "not given".

use crate::error::{Error, Result};

/// The value of the environment variable `name`: `None` when it is unset or blank, the value
/// as set (untrimmed) otherwise. `expected` says what the variable takes, for the error.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `name` when the value is not valid UTF-8 (its bytes
/// shown escaped).
pub(crate) fn var(name: &'static str, expected: &'static str) -> Result<Option<String>> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(raw) => match raw.into_string() {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(raw) => Err(Error::InvalidArgument {
                option: name,
                value: format!("{raw:?}, which is not valid UTF-8"),
                reason: expected,
            }),
        },
    }
}
