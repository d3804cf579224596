//! The names most programs need, for one glob import: `use dotcompute_memory::prelude::*;`.
//!
//! It holds the manager, the buffer types, views, and the `MemoryBuffer`, `Element` and
//! `Backend` traits. It leaves out `Error` and `Result` (they would shadow `std`'s under a
//! glob): name them as `dotcompute_memory::{Error, Result}`.

pub use crate::backend::Backend;
pub use crate::buffer::{
    Access, AsBufferView, BufferSlice, BufferSliceMut, BufferState, DeviceView, DeviceViewMut, UnifiedBuffer,
};
pub use crate::buffer_trait::MemoryBuffer;
pub use crate::element::Element;
pub use crate::manager::{ManagerOptions, MemoryManager};
