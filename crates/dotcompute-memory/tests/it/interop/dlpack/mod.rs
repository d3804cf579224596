//! DLPack: buffers exported to a consumer through the raw structs, and a producer's tensors
//! imported (and refused, consuming nothing). The real consumer, NumPy, is driven by
//! `tests/python/test_dlpack.py`.

mod export;
mod import;
