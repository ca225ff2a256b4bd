//! netwatch: a network monitor whose per-packet work runs in the kernel as an XDP program.
//!
//! Stages, each a module, in the only direction data flows:
//! `datapath` (load, attach, read the maps) -> `collect` (per-interval deltas) -> `detect`
//! (alerts), and `inspect` (the sampled payloads) -> `report` (the sinks: console, JSON lines,
//! alerts file, store and webhooks, metrics). `pipeline` runs them once per interval and per
//! sample; a `session` is a configuration turned into a loaded datapath and its pipeline.
//! The commands under `cmd` drive a session: `monitor` from a live interface and the wall
//! clock, `replay` from a capture and its timestamps. A stage never calls back into an
//! earlier one; `config` flows down into all of them, and `store` keeps what must survive a
//! restart.

pub mod capture;
pub mod cli;
pub mod cmd;
pub mod collect;
pub mod config;
pub mod control;
pub mod datapath;
pub mod detect;
pub mod inspect;
pub mod logging;
pub mod mitigate;
pub mod pipeline;
pub mod private_files;
pub mod privilege;
pub mod report;
pub mod session;
pub mod store;
pub mod top;
