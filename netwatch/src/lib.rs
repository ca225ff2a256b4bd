//! netwatch: a network monitor whose per-packet work runs in the kernel as an XDP program.
//!
//! Stages, each a module, in the only direction data flows:
//! `datapath` (load, attach, read the maps) -> `collect` (per-interval deltas) -> `report`
//! (console, JSON lines). `monitor` wires them together for a live interface. A stage never
//! calls back into an earlier one.

pub mod capture;
pub mod cli;
pub mod collect;
pub mod config;
pub mod datapath;
pub mod detect;
pub mod known;
pub mod monitor;
pub mod pipeline;
pub mod privilege;
pub mod replay;
pub mod report;
pub mod store;
