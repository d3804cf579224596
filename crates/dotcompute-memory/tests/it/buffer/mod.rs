//! `UnifiedBuffer`: the coherence table, device views, the model-based test, failures injected at
//! every backend call, and buffers shared by many threads.

mod coherence;
mod device_views;
mod fault_sweep;
mod model;
mod threads;
mod write_states;
