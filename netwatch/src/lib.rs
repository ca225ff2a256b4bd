//! netwatch: a network monitor whose per-packet work runs in the kernel as an XDP program.
//!
//! Stages, each a module, in the only direction data flows:
//! `datapath` (load, attach, read the maps) -> `collect` (per-interval deltas) -> `detect`
//! (alerts) -> `report` (console, JSON lines). `pipeline` runs the last three once per
//! interval; `monitor` drives it from a live interface and the wall clock, `replay` from a
//! capture and its timestamps. A stage never calls back into an earlier one; `config` flows
//! down into all of them, and `store` keeps what must survive a restart.

pub mod capture;
pub mod cli;
pub mod collect;
pub mod config;
pub mod datapath;
pub mod detect;
pub mod history;
pub mod inspect;
pub mod known;
pub mod monitor;
pub mod pipeline;
pub mod private_files;
pub mod privilege;
pub mod replay;
pub mod report;
pub mod store;
pub mod store_command;
