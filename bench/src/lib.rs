//! Benchmark tooling: the traffic generator shared by `netwatch-gen` and `netwatch-bench`.

pub mod generator;
