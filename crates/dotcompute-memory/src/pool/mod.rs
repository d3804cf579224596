//! Pools: size classes and the free-block caches the manager allocates through.
//!
//! Everything here is safe Rust; the memory it caches is owned by `HostBlock` and backend
//! handles, whose own modules hold the unsafe parts.
#![deny(unsafe_code)]

pub(crate) mod arena;
pub mod array;
pub(crate) mod cache;
pub(crate) mod context;
pub(crate) mod device;
pub(crate) mod magazine;
pub mod object;
pub(crate) mod options;
pub mod size_class;
pub mod snapshot;
pub(crate) mod staging;
