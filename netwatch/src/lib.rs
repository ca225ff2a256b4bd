//! netwatch: a network monitor whose per-packet work runs in the kernel as an XDP program.
//!
//! Modules in layers, each importing only from the layers below it (no module reaches up,
//! serde's `with` paths included):
//!
//! 1. The ground floor, which uses nothing of netwatch but each other: `datapath` (the crate
//!    `netwatch-datapath`: load, attach, read and write the kernel's maps; the benchmarks and
//!    the tests use it directly), `capture` (pcap and pcapng reading),
//!    `duration` (durations as people write them, for the command line and for serde),
//!    `time_text` (RFC 3339 instants, short TTLs), `escape` (text safe for a terminal or a
//!    log), `logging`, `privilege`, `private_files`.
//! 2. The stages, in the only direction data flows: `collect` (per-interval deltas, and the
//!    combined view of several interfaces) -> `detect` (alerts) -> `mitigate` (the decisions
//!    on bans and rules, pure) and `evidence` (the decisions on captures, pure), and
//!    `inspect` (the sampled payloads); then `store` (what must survive
//!    a restart) and `report` (the sinks: console, JSON lines, alerts file, store and
//!    webhooks, metrics). A stage never calls back into an earlier one.
//! 3. Above the stages: `config` (the TOML file, every stage's section), `pipeline` (the
//!    stages run once per interval and per sample, to the sinks), `top` (the terminal view),
//!    `cli` (the command line, and the flags applied to a configuration), `control` (the
//!    control socket and its protocol, ban requests and answers included).
//! 4. Daemon wiring: `mitigation` (the mitigator wired to the datapaths, the notify commands
//!    and the metrics), `capturing` (the captures' decisions carried out on the kernels'
//!    capture maps and the pcapng files, each alert linked to its capture), `notify` (the notify commands themselves, in process groups of their
//!    own) and `session` (a configuration turned into loaded datapaths and their
//!    pipeline; it hands the pipeline's alerts to mitigation and the ban events back to the
//!    sinks).
//! 5. The commands under `cmd`, which drive a session: `monitor` from a live interface and
//!    the wall clock, `replay` from a capture and its timestamps, and the clients (`status`,
//!    `top`, `ban`, `history`, `known`, `check`).
//!
//! `config` flows down into every stage as that stage's own section.
//!
//! Public are the modules a program outside this crate drives: the binaries (`cli`, `cmd`,
//! `escape`, `logging`), the benchmarks and the integration tests (`collect`, `config`,
//! `capture`, `control`, `privilege`, `report`, `store`). The others are the crate's own.

pub mod capture;
pub(crate) mod capturing;
pub mod cli;
pub mod cmd;
pub mod collect;
pub mod config;
pub mod control;
pub(crate) mod detect;
pub(crate) mod duration;
pub(crate) mod enrich;
pub mod escape;
pub(crate) mod evidence;
pub(crate) mod inspect;
pub(crate) mod intel;
pub mod logging;
pub(crate) mod mitigate;
pub(crate) mod mitigation;
pub(crate) mod notify;
pub(crate) mod pipeline;
pub(crate) mod private_files;
pub mod privilege;
pub mod report;
pub(crate) mod session;
pub mod store;
pub(crate) mod time_text;
pub(crate) mod top;

/// The crate `netwatch-datapath` (the ground floor's kernel side), under the name every
/// module of this crate uses for it.
use netwatch_datapath as datapath;
