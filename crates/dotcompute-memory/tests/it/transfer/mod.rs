//! The transfer engine (`TransferBatch`, `TransferEngine`): what it moves and how, under faults,
//! and whether it stages. Its bad inputs are in `bad_input::transfer`.

mod engine;
mod errors;
mod faults;
mod staging;
