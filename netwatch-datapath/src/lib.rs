//! The kernel side seen from userspace: load the XDP program, attach it to an interface
//! through a BPF link, read its maps, and run it on crafted frames (`BPF_PROG_TEST_RUN`).
//!
//! This crate knows the maps' layout and nothing about what the numbers mean: collection
//! and everything after it live in later stages.
//!
//! [`Datapath`] is the loaded program and its maps (`handle`); its methods live with their
//! idea, each in a submodule:
//!
//! - `load`: the compiled objects, the kernel checks, [`LoadOptions`], loading and verifying
//!   the programs ([`Datapath::load`]);
//! - `source_map`: [`SourceMap`], per-CPU or shared values, and the entry point of each;
//! - `attach`: attaching to an interface through a BPF link ([`Attachment`]) and pinning;
//! - `settings`: the run-time settings (sampling, sketches, reflection ports, attack types,
//!   the early limit, local networks);
//! - `snapshot`: reading the counters into a [`Snapshot`] and reclaiming slots
//!   ([`Reclaim`]);
//! - `sums`: the sums of counters ([`add_source`], [`add_globals`]) and the address of a
//!   map key ([`source_addr`]), below every reader of the maps;
//! - `samples`: the sample ring ([`SampledFrame`], [`SampleRing`]);
//! - `test_run`: running the program on frames with `BPF_PROG_TEST_RUN` (tests, replay,
//!   timing);
//! - `bans`: the ban list in the kernel ([`BanAction`]);
//! - `captures`: the captures of events in the kernel ([`CaptureMaps`], taken out of the
//!   datapath by whoever runs them);
//! - `intel`: the networks the indicator feeds list ([`IntelTries`], taken out by whoever
//!   loads the feeds) and the frames they held ([`IntelReading`], in each snapshot);
//! - `slots`, `overflow`, `destinations`: the memory-mapped arrays of the sources, of the
//!   traffic without a slot and of the local hosts, and how they are read;
//! - `batch`: `BPF_MAP_DELETE_BATCH`, for the addresses of reclaimed sources;
//! - `bench`: the benchmarks' own programs (`BenchPrograms`), with the feature `bench` only;
//! - `error`: [`DatapathError`];
//! - [`netlink`]: an interface's state and XDP attachment, and its driver's XDP features.

mod attach;
mod bans;
mod batch;
#[cfg(feature = "bench")]
mod bench;
mod captures;
mod destinations;
mod error;
mod handle;
mod intel;
mod load;
pub mod netlink;
mod overflow;
mod rule_maps;
mod rules;
mod samples;
mod settings;
mod slots;
mod snapshot;
mod source_map;
mod sums;
mod test_run;

#[cfg(feature = "bench")]
pub use self::bench::{Baseline, BenchPrograms, LiveFrames};
pub use self::{
    attach::{AttachMode, AttachedMode, Attachment, ReplacedProgram},
    bans::{BanAction, ban_counters},
    captures::{CaptureCounters, CaptureMaps, CaptureSide, CaptureSpec, CapturedFrame},
    destinations::{DestinationCount, DestinationReading},
    error::DatapathError,
    handle::{Datapath, Reclaim},
    intel::{IntelHit, IntelReading, IntelSide, IntelSync, IntelTries},
    load::{LoadOptions, MIN_KERNEL, MIN_KERNEL_SHARED},
    overflow::{OverflowBreakdown, SlotlessPrefix, Target, TargetKind, Traffic, add_traffic},
    rules::{RuleAction, RuleProtocol, RuleTraffic, SignatureRule, rate_window},
    samples::{SampleRing, SampledFrame},
    settings::Sampling,
    slots::{SourceReading, Spread, linear_count},
    snapshot::Snapshot,
    source_map::SourceMap,
    sums::{add_globals, add_source, source_addr},
    test_run::REPLAY_MAX_RUN,
};
