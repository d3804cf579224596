//! OpenCL failures as crate errors: a driver error code with its CL name, an unavailable
//! platform, and which codes mean out of memory.

use crate::error::Error;
use opencl3::error_codes::{error_text, CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_HOST_MEMORY, CL_OUT_OF_RESOURCES};
use opencl3::types::cl_int;

/// The backend's name in errors and descriptions.
pub(super) const BACKEND: &str = "opencl";

/// The crate error for a failed OpenCL call.
pub(super) fn cl_error(operation: &'static str, code: cl_int) -> Error {
    let name = error_text(code);
    let message = if name == "UNKNOWN_ERROR" { format!("unknown OpenCL error {code}") } else { name.to_string() };
    Error::Backend {
        backend: BACKEND,
        operation,
        code: i64::from(code),
        message,
        transient: matches!(code, CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY | CL_MEM_OBJECT_ALLOCATION_FAILURE),
    }
}

pub(super) fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable { backend: BACKEND.to_string(), reason }
}

pub(super) fn is_oom(code: cl_int) -> bool {
    matches!(code, CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY | CL_MEM_OBJECT_ALLOCATION_FAILURE)
}
