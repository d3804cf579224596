//! `dcmem`: command-line front end of dotcompute-memory (placeholder until the CLI lands).
fn main() {}
