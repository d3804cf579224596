//! `UnifiedBuffer`: the coherence table, device views, the model-based test, failures injected at
//! every backend call, buffers shared by many threads, and the `MemoryBuffer` trait on every
//! implementation.

mod coherence;
mod device_views;
mod fault_sweep;
mod model;
mod prefetch;
mod threads;
mod trait_impls;
mod write_states;
