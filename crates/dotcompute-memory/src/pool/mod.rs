//! Pools: size classes, the free-block caches the manager allocates through, and the pool
//! context (`context::ManagerShared`) that a manager shares with its buffers and transfer
//! engines, with the options it is built from, the staging blocks it hands out and the
//! transfer measurements it keeps.
//!
//! Everything here is safe Rust; the memory it caches is owned by `HostBlock` and backend
//! handles, whose own modules hold the unsafe parts.
#![deny(unsafe_code)]

pub(crate) mod arena;
pub mod array;
pub(crate) mod cache;
pub(crate) mod context;
pub(crate) mod device;
pub(crate) mod expandable;
pub(crate) mod handed_out;
pub mod object;
pub(crate) mod options;
pub(crate) mod segregated_fit;
pub(crate) mod size_class;
pub(crate) mod snapshot;
pub(crate) mod staging;
pub(crate) mod summary;
pub(crate) mod tuning;
