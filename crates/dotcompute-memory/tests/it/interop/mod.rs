//! Hand-offs to other libraries: DLPack export and import (feature `dlpack`).

#[cfg(feature = "dlpack")]
mod dlpack;
