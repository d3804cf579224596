//! The native operations a row can be set against, and their baseline labels.

/// Which native operation a row is set against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NativeOp {
    /// Host to device, blocking.
    Write,
    /// Device to host, blocking.
    Read,
    /// Device to device, waited for.
    Copy,
    /// A fresh allocation and its release, nothing written.
    Alloc,
}

impl NativeOp {
    /// The baseline column's text.
    #[cfg_attr(not(feature = "opencl"), allow(dead_code))]
    pub(super) fn label(self) -> &'static str {
        match self {
            NativeOp::Write => "raw opencl3 clEnqueueWriteBuffer (blocking), Vec<u8> to device",
            NativeOp::Read => "raw opencl3 clEnqueueReadBuffer (blocking), device to Vec<u8>",
            NativeOp::Copy => "raw opencl3 clEnqueueCopyBuffer between two buffers, waited for",
            NativeOp::Alloc => {
                "raw opencl3 clCreateBuffer + release (plain: no fill, no wait; the driver may commit the memory \
                 lazily)"
            }
        }
    }
}
