//! Names of shared segments: what a name may be, checked before any system call.

use crate::error::{Error, Result};

/// Longest accepted name in bytes (POSIX shm names are file names; macOS allows 31 bytes
/// including the leading slash).
pub const MAX_NAME_LEN: usize = if cfg!(target_os = "macos") { 30 } else { 250 };

/// Checks a shared-memory name: non-empty, at most [`MAX_NAME_LEN`] bytes, no `/` or NUL,
/// not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: String| Err(Error::SharedName { name: name.to_string(), reason });
    if name.is_empty() {
        return bad("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return bad(format!("the name is {} bytes long; at most {MAX_NAME_LEN} are allowed", name.len()));
    }
    if let Some(pos) = name.find('/') {
        return bad(format!("it contains '/' (at byte {pos}); names are single path components"));
    }
    if name.contains('\0') {
        return bad("it contains a NUL byte".into());
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not names".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for (name, fragment) in
            [("", "empty"), ("a/b", "'/'"), ("nul\0", "NUL"), ("..", "not names"), (&"x".repeat(300)[..], "300 bytes")]
        {
            let err = validate_name(name).unwrap_err();
            assert!(matches!(err, Error::SharedName { .. }), "{err:?}");
            assert!(err.to_string().contains(fragment), "{err}");
        }
        validate_name("dcmem-test.1").unwrap();
    }
}
