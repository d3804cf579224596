//! Several devices, one manager each: copies between them (direct between devices that reach
//! each other, staged through host memory otherwise), their faults, and peer copies in a
//! transfer batch.

mod engine;
mod faults;
mod peer;
