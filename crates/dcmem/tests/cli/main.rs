//! Runs the built `dcmem` binary and checks what it prints and how it exits, one file per
//! command (`support` runs the binary; `bench_rows` checks the rows of a bench report).
//!
//! `bench` runs with the hidden `--smoke` flag (tiny sizes, three samples), so these tests
//! check the command's output format and arithmetic, never its timings.

mod backend;
mod bench;
mod bench_rows;
mod demo;
mod help;
mod info;
mod replay;
mod stats;
mod stream;
mod support;
