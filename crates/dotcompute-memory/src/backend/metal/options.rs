//! How to open a `MetalBackend`: `MetalOptions`, the storage mode its allocations use, and
//! the `DCMEM_METAL_STORAGE` variable.

use crate::error::{Error, Result};

/// Environment variable choosing the storage mode: `auto`, `shared` or `private`.
pub const ENV_STORAGE: &str = "DCMEM_METAL_STORAGE";

/// Where a Metal backend's allocations live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetalStorage {
    /// Shared storage where the device has unified memory (`hasUnifiedMemory`, every Apple
    /// silicon GPU), private storage elsewhere.
    #[default]
    Auto,
    /// `MTLResourceStorageModeShared`: memory the CPU and the GPU both address. The backend is
    /// unified: the host reads and writes allocations in place and nothing is copied.
    Shared,
    /// `MTLResourceStorageModePrivate`: memory only the GPU addresses. Every transfer is a blit
    /// through a shared-storage staging buffer, as on a discrete device.
    Private,
}

impl MetalStorage {
    /// Parses `auto`, `shared` or `private` (case-insensitive, surrounding blanks ignored).
    ///
    /// Errors: [`Error::InvalidArgument`] naming [`ENV_STORAGE`] and the value.
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(MetalStorage::Auto),
            "shared" => Ok(MetalStorage::Shared),
            "private" => Ok(MetalStorage::Private),
            _ => Err(Error::InvalidArgument {
                option: ENV_STORAGE,
                value: value.to_string(),
                reason: "expected auto, shared or private",
            }),
        }
    }

    /// The mode's name as [`MetalStorage::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            MetalStorage::Auto => "auto",
            MetalStorage::Shared => "shared",
            MetalStorage::Private => "private",
        }
    }
}

/// How to open a [`MetalBackend`](super::MetalBackend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetalOptions {
    /// Storage mode of the allocations (default [`MetalStorage::Auto`]).
    pub storage: MetalStorage,
    /// Number of command queues (default 2; 0 is treated as 1).
    pub queues: usize,
}

crate::setters::with_setters!(MetalOptions {
    with_storage => storage: MetalStorage,
    with_queues => queues: usize,
});

impl Default for MetalOptions {
    fn default() -> Self {
        MetalOptions { storage: MetalStorage::Auto, queues: 2 }
    }
}

impl MetalOptions {
    /// Defaults, with the storage mode taken from `DCMEM_METAL_STORAGE` (unset or blank means
    /// [`MetalStorage::Auto`]).
    ///
    /// Errors: [`Error::InvalidArgument`] naming the variable when its value is not UTF-8 or
    /// not one of the modes.
    pub fn from_env() -> Result<Self> {
        let storage = match crate::environment::var(ENV_STORAGE, "expected auto, shared or private")? {
            Some(value) => MetalStorage::parse(&value)?,
            None => MetalStorage::Auto,
        };
        Ok(MetalOptions { storage, ..Default::default() })
    }
}
