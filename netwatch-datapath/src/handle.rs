//! [`Datapath`]: the loaded program and its maps, with what userspace keeps of them (the
//! mapped arrays, the sample ring, the last reclaim). Its methods live with their idea in the
//! modules above this one; the types of its fields in the modules below.

use std::{fmt, time::Duration};

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use aya_log::EbpfLogger;
use netwatch_common::{QueueJob, Settings};

use super::{
    destinations::DestinationWindows,
    overflow::Windows,
    rules::RuleTable,
    samples::{SampleRing, SampledFrame},
    slots::Slots,
    source_map::SourceMap,
};

/// The loaded netwatch program and its maps.
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) max_sources: u32,
    /// Per-CPU or shared, never `Auto`.
    pub(super) source_map: SourceMap,
    /// The sketch window packets write now.
    pub(super) epoch: u32,
    pub(super) settings: Settings,
    pub(super) samples: Option<SampleRing>,
    /// The sources' slots, mapped into this process.
    pub(super) slots: Slots,
    /// The overflow windows, mapped into this process.
    pub(super) windows: Windows,
    /// The destination windows, if loaded with room for them.
    pub(super) destinations: Option<DestinationWindows>,
    /// The job of the program that queues free slots.
    pub(super) jobs: QueueJobs,
    /// What the last snapshot's reclaim did.
    pub(super) last_reclaim: Reclaim,
    /// The kernel side's diagnostics (aya-log), read after each queueing of slots.
    pub(super) diagnostics: Option<EbpfLogger<&'static dyn log::Log>>,
    /// The kernel refused XDP metadata in a test run (before Linux 5.15).
    pub(super) no_replay_metadata: bool,
    /// Possible CPUs.
    pub(super) cpus: usize,
    /// Room for bans ([`LoadOptions::max_bans`]).
    pub(super) max_bans: u32,
    /// The program loaded: per-CPU or shared map, or the benchmarks' one without bans.
    pub(super) program: &'static str,
    /// The signature rules set, and the networks of their tries.
    pub(super) rules: RuleTable,
}

impl fmt::Debug for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datapath")
            .field("max_sources", &self.max_sources)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Takes the sample ring buffer out, for a reader of its own; `None` if taken already.
    pub fn take_samples(&mut self) -> Option<SampleRing> {
        self.samples.take()
    }

    /// Reads every waiting sample, unless the ring was taken out.
    pub fn drain_samples(&mut self, f: impl FnMut(SampledFrame)) -> usize {
        self.samples.as_mut().map_or(0, |ring| ring.drain(f))
    }
}

/// The reclaim at the end of a snapshot (see [`Datapath::snapshot`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaim {
    /// Idle sources whose addresses were deleted (their slots freed at the next snapshot).
    pub forgotten: usize,
    /// Slots cleared and put back in the free queue.
    pub freed: usize,
    /// Time it took.
    pub took: Duration,
}

/// The one-entry array of the queueing program's job, taken out of the object at load.
pub(super) type QueueJobs = Array<MapData, QueueJob>;
