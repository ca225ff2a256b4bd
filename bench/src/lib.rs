//! Benchmark tooling: the traffic generator shared by `netwatch-gen` and `netwatch-bench`.
//! Its layers, top down: `generator` (which method, live frames, threads) over `tx_ring` and
//! `socket` (the AF_PACKET methods), over `frames` (what is sent) and `spec` (the words).

mod frames;
pub mod generator;
mod socket;
mod spec;
mod tx_ring;
