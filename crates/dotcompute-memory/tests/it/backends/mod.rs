//! The backends with real drivers, beyond the conformance suite: OpenCL (PoCL in CI) and CUDA
//! (skipped with a reason where there is no GPU). Empty in a build without their features.

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "opencl")]
mod opencl;
