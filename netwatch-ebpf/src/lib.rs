//! Empty on purpose: the programs are the binaries `netwatch-xdp` and `noop-xdp`.
#![no_std]
