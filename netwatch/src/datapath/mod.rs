//! The kernel side seen from userspace: load the XDP program, attach it to an interface
//! through a BPF link, read its maps, and run it on crafted frames (`BPF_PROG_TEST_RUN`).
//!
//! This module knows the maps' layout and nothing about what the numbers mean: collection
//! and everything after it live in later stages.

mod bans;
mod batch;
mod bench;
mod destinations;
mod error;
pub mod netlink;
mod overflow;
mod slots;

use std::{
    collections::HashMap,
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap as AyaHashMap, MapData, MapError, PerCpuArray, PerCpuValues, ProgramArray,
        RingBuf,
    },
    programs::{
        ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, Link as _},
        loaded_programs,
    },
    util::KernelVersion,
};
use aya_log::EbpfLogger;
use netwatch_common::{
    BAN_COUNTS_MAP, BANS_V4_MAP, BANS_V6_MAP, CPU_STATE_MAP, CpuState, DESTINATION_BUCKETS,
    DESTINATION_OTHER_MAP, DESTINATIONS_MAP, EarlyEvent, FAMILY_IPV4, FILTER_SEED_GLOBAL,
    FILTER_WORD_BITS_GLOBAL, FREE_SLOTS_MAP, GlobalStats, LOCAL_NETWORKS_MAP, LocalNetworks,
    MAX_LOCAL_NETWORKS, NO_BANS_PROGRAM_NAME, OVERFLOW_WINDOWS_MAP, PROGRAM_NAME, QUEUE_JOB_MAP,
    QUEUE_PROGRAM_NAME, QueueJob, REFLECTION_PORTS_MAP, SAMPLE_MAX_SNAP_LEN, SAMPLE_PORT_WORDS,
    SAMPLE_PORTS_MAP, SAMPLE_REASON_EARLY, SAMPLER_MAP, SAMPLER_PROGRAM_NAME, SAMPLES_MAP,
    SETTINGS_MAP, SHARED_PROGRAM_NAME, SLOT_CAPACITY_GLOBAL, SLOT_FILTER_MAP, SLOT_KEYS_MAP,
    SOURCE_SLOTS_MAP, SOURCE_VALUES_MAP, STAGED_SLOTS_MAP, SampleHeader, Settings, SourceKey,
    SourceStats, SourceValue, WIRE_LENGTH_MAGIC, WireLength,
};

pub use self::{
    bans::{BanAction, ban_counters},
    bench::{Baseline, BenchPrograms, LiveFrames},
    destinations::DestinationReading,
    error::DatapathError,
    overflow::{OverflowBreakdown, SlotlessPrefix, Target, TargetKind, Traffic, add_traffic},
    slots::{SourceReading, Spread, linear_count},
};
use self::{
    destinations::DestinationWindows,
    netlink::{LinkInfo, XdpAttached},
    overflow::Windows,
    slots::{FilterShape, Slots},
};

/// The compiled XDP programs, embedded at build time by `build.rs`.
static NETWATCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netwatch-xdp"));
static NOOP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/noop-xdp"));

/// XDP through a BPF link (`bpf_link_create` with `BPF_XDP`) arrived in Linux 5.9.
pub const MIN_KERNEL: KernelVersion = KernelVersion::new(5, 9, 0);

/// The shared source map sets sketch bits with an atomic OR (`BPF_ATOMIC | BPF_OR`), which
/// arrived in Linux 5.12.
pub const MIN_KERNEL_SHARED: KernelVersion = KernelVersion::new(5, 12, 0);

/// Lines of the verifier log kept in a rejection error: the end says why.
const VERIFIER_LOG_TAIL: usize = 25;

/// How to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Driver mode, and generic (skb) mode if the driver cannot.
    #[default]
    Auto,
    /// Driver (native) mode only.
    Driver,
    /// Generic (skb) mode only.
    Skb,
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP in the network stack: works everywhere, costs more.
    Skb,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
        })
    }
}

/// Load-time settings.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Slots for sources.
    pub max_sources: u32,
    /// Per-CPU or shared values of the sources.
    pub source_map: SourceMap,
    /// Room to count the hosts of local networks (see [`Datapath::set_local_networks`]):
    /// about 0.9 MiB of kernel memory per possible CPU. Without it, the maps have one
    /// element.
    pub destinations: bool,
    /// Room for bans (see [`Datapath::set_ban`]): 32 bytes of counters per ban and possible
    /// CPU (two counters a ban, see [`ban_counters`]), and the tries' entries as they are
    /// added. 0 (mitigation off): one element.
    pub max_bans: u32,
    /// Load the program built without the ban check (per-CPU map only): for the benchmarks,
    /// which time it beside the real one. Never for monitoring.
    pub without_ban_check: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_sources: netwatch_common::DEFAULT_MAX_SOURCES,
            source_map: SourceMap::PerCpu,
            destinations: false,
            max_bans: 0,
            without_ban_check: false,
        }
    }
}

/// How the sources' values are laid out in their slots (see [`slots`](self::slots)).
///
/// Per-CPU, each CPU adds to its own copy of a source's value (its region of the array) with
/// plain instructions: the fastest, and no cache line moves between CPUs when one source
/// floods every queue; but the array holds a value per possible CPU for every slot. Shared,
/// one value per source takes atomic adds: a few nanoseconds more per packet, and contention
/// when many CPUs count the same source at once, for an array a CPU count times smaller
/// (BENCHMARKS.md measures both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceMap {
    /// Per-CPU while its values fit in [`SourceMap::PER_CPU_BUDGET`], shared beyond (on
    /// Linux [`MIN_KERNEL_SHARED`] and newer; per-CPU always on older kernels).
    Auto,
    /// A region of the values array per possible CPU.
    PerCpu,
    /// One region, updated with atomic adds.
    Shared,
}

impl SourceMap {
    /// The most memory [`SourceMap::Auto`] lets per-CPU values take: with 2 CPUs that is
    /// over a million sources, with 64 about 43,700.
    pub const PER_CPU_BUDGET: u64 = 512 << 20;

    /// `Auto` decided for a map of `max_sources` on `cpus` possible CPUs, on a kernel that
    /// can run the shared map or not; the others as they are.
    pub fn resolve(self, max_sources: u32, cpus: usize, shared_runs: bool) -> Self {
        match self {
            Self::Auto => {
                let per_cpu_values =
                    u64::from(max_sources) * cpus as u64 * size_of::<SourceValue>() as u64;
                if per_cpu_values <= Self::PER_CPU_BUDGET || !shared_runs {
                    Self::PerCpu
                } else {
                    Self::Shared
                }
            }
            other => other,
        }
    }

    fn program(self) -> &'static str {
        match self {
            Self::Shared => SHARED_PROGRAM_NAME,
            Self::Auto | Self::PerCpu => PROGRAM_NAME,
        }
    }
}

impl fmt::Display for SourceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::PerCpu => "per-cpu",
            Self::Shared => "shared",
        })
    }
}

/// A live attachment. Dropping it closes the BPF link, which detaches the program.
#[derive(Debug)]
pub struct Attachment {
    link: FdLink,
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Mode the kernel accepted.
    pub mode: AttachedMode,
    /// A stale netwatch program (or, with force, a foreign one) removed before attaching.
    pub replaced: Option<ReplacedProgram>,
}

impl Attachment {
    /// Detaches now, reporting an error instead of ignoring it as a drop would.
    pub fn detach(self) -> Result<(), DatapathError> {
        let Self { link, .. } = self;
        link.detach().map_err(DatapathError::from)
    }
}

/// A program removed from the interface before netwatch attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplacedProgram {
    /// Kernel program id.
    pub prog_id: u32,
    /// Its name.
    pub name: String,
}

/// Counters read from the maps at one moment, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Global counters.
    pub globals: GlobalStats,
    /// Every source with a slot, in slot order, each slot once. A list rather than a map: at
    /// a million sources, building a hash map here would cost more than reading the slots.
    pub sources: Vec<SourceReading>,
    /// Slots cleared and freed after this reading (their sources were reclaimed a reading
    /// earlier): whoever takes one next starts from zero, whatever its address.
    pub released: Vec<u32>,
    /// The amplification port of the last overflow frame from one (of some CPU); 0 for none.
    pub overflow_reflected_port: u16,
    /// The overflow since the previous snapshot, broken down by source prefix and
    /// destination. Its window changes just before the globals are read: a frame without a
    /// slot counted in between is in these globals and in the next snapshot's breakdown.
    pub overflow: OverflowBreakdown,
    /// The hosts of the local networks that received something since the previous snapshot,
    /// most packets first (in windows as [`Snapshot::overflow`]); none without local
    /// networks.
    pub destinations: Vec<DestinationReading>,
    /// Frames to a local host that found no bucket of their CPU's window.
    pub destination_other: Traffic,
}

impl Snapshot {
    /// The counters of every source by address (for one address in two slots, the first).
    pub fn stats_by_source(&self) -> HashMap<SourceKey, SourceStats> {
        let mut map = HashMap::with_capacity(self.sources.len());
        for reading in &self.sources {
            map.entry(reading.key).or_insert(reading.stats);
        }
        map
    }

    /// The spread of every source that has one, by address.
    pub fn spread_by_source(&self) -> HashMap<SourceKey, Spread> {
        self.sources
            .iter()
            .filter_map(|reading| Some((reading.key, reading.spread?)))
            .collect()
    }
}

/// Which packets the program copies to the sample ring buffer, and how many per second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sampling {
    /// Samples per second per CPU; 0 turns sampling off.
    pub rate: u32,
    /// Samples that may be taken at once after a quiet spell.
    pub burst: u32,
    /// TCP ports: a packet from or to one of them is sampled.
    pub tcp_ports: Vec<u16>,
    /// UDP ports, likewise.
    pub udp_ports: Vec<u16>,
    /// Sample every TCP packet with a payload, whatever its ports.
    pub all_tcp: bool,
    /// Most bytes of a frame copied, 1 to [`SAMPLE_MAX_SNAP_LEN`].
    pub snap_len: u32,
}

/// A sampled frame as read from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledFrame {
    /// The kernel's header.
    pub header: SampleHeader,
    /// The captured bytes, from the Ethernet header on.
    pub data: Vec<u8>,
}

impl SampledFrame {
    /// Parses one ring buffer record, a [`SampleHeader`] and the captured bytes; `None` if it
    /// is shorter than its header says.
    pub fn parse(record: &[u8]) -> Option<Self> {
        let header_len = size_of::<SampleHeader>();
        if record.len() < header_len {
            return None;
        }
        // SAFETY: the record starts with a SampleHeader written by the kernel; read_unaligned
        // copes with any alignment and every bit pattern is a valid SampleHeader.
        let header = unsafe { record.as_ptr().cast::<SampleHeader>().read_unaligned() };
        if header.reason == SAMPLE_REASON_EARLY {
            let data = record.get(header_len..header_len + size_of::<EarlyEvent>())?;
            return Some(Self {
                header,
                data: data.to_vec(),
            });
        }
        let captured = (header.captured_len as usize).min(SAMPLE_MAX_SNAP_LEN);
        let data = record.get(header_len..header_len + captured)?;
        Some(Self {
            header,
            data: data.to_vec(),
        })
    }
}

impl SampledFrame {
    /// The early event this record is instead of a frame, if it is one: the interface's
    /// packet rate crossed the early limit (see [`Datapath::set_early_limit`]).
    pub fn early(&self) -> Option<EarlyEvent> {
        if self.header.reason != SAMPLE_REASON_EARLY || self.data.len() < size_of::<EarlyEvent>() {
            return None;
        }
        // SAFETY: the length is checked above; read_unaligned copes with any alignment and
        // every bit pattern is a valid EarlyEvent.
        Some(unsafe { self.data.as_ptr().cast::<EarlyEvent>().read_unaligned() })
    }
}

/// The sample ring buffer, readable on its own (for example from an async task).
pub struct SampleRing(RingBuf<MapData>);

impl SampleRing {
    /// Hands every record waiting in the ring to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(SampledFrame)) -> usize {
        let mut records = 0;
        while let Some(record) = self.0.next() {
            records += 1;
            if let Some(frame) = SampledFrame::parse(&record) {
                f(frame);
            }
        }
        records
    }
}

impl std::os::fd::AsRawFd for SampleRing {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The loaded netwatch program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    max_sources: u32,
    /// Per-CPU or shared, never `Auto`.
    source_map: SourceMap,
    /// The sketch window packets write now.
    epoch: u32,
    settings: Settings,
    samples: Option<SampleRing>,
    /// The sources' slots, mapped into this process.
    slots: Slots,
    /// The overflow windows, mapped into this process.
    windows: Windows,
    /// The destination windows, if loaded with room for them.
    destinations: Option<DestinationWindows>,
    /// The job of the program that queues free slots.
    jobs: QueueJobs,
    /// What the last snapshot's reclaim did.
    last_reclaim: Reclaim,
    /// The kernel side's diagnostics (aya-log), read after each queueing of slots.
    diagnostics: Option<EbpfLogger<&'static dyn log::Log>>,
    /// The kernel refused XDP metadata in a test run (before Linux 5.15).
    no_replay_metadata: bool,
    /// Possible CPUs.
    cpus: usize,
    /// Room for bans ([`LoadOptions::max_bans`]).
    max_bans: u32,
    /// The program loaded: per-CPU or shared map, or the benchmarks' one without bans.
    program: &'static str,
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

impl fmt::Debug for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datapath")
            .field("max_sources", &self.max_sources)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads the netwatch XDP program into the kernel (not attached yet).
    pub fn load(options: LoadOptions) -> Result<Self, DatapathError> {
        let LoadOptions {
            max_sources,
            source_map,
            destinations,
            max_bans,
            without_ban_check,
        } = options;
        let kernel = check_kernel()?;
        let cpus = aya::util::nr_cpus().map_err(|(path, err)| {
            DatapathError::Cpus(io::Error::new(err.kind(), format!("{path}: {err}")))
        })?;
        // Two windows a CPU; one bucket (never written) without local networks.
        let destination_windows = if destinations { 2 * cpus } else { 0 };
        let source_map = source_map.resolve(max_sources, cpus, kernel >= MIN_KERNEL_SHARED);
        if source_map == SourceMap::Shared && kernel < MIN_KERNEL_SHARED {
            return Err(DatapathError::SharedMapNeedsNewerKernel {
                found: kernel,
                needed: MIN_KERNEL_SHARED,
            });
        }
        // A region of values per possible CPU, or one for all.
        let regions = match source_map {
            SourceMap::Shared => 1,
            SourceMap::Auto | SourceMap::PerCpu => cpus,
        };
        let values = max_sources
            .checked_mul(regions as u32)
            .ok_or(DatapathError::TooManySources { max_sources, cpus })?;
        let program = match (without_ban_check, source_map) {
            (false, _) => source_map.program(),
            (true, SourceMap::Shared) => {
                return Err(DatapathError::Missing(
                    "a shared-map program without the ban check",
                ));
            }
            (true, _) => NO_BANS_PROGRAM_NAME,
        };
        let log_level = log::max_level() as u8;
        let filter = FilterShape::random(max_sources).map_err(DatapathError::Seed)?;
        let mut ebpf = load_object(NETWATCH_OBJECT, &[program, QUEUE_PROGRAM_NAME], |loader| {
            loader.map_max_entries(SOURCE_SLOTS_MAP, max_sources);
            loader.map_max_entries(SLOT_KEYS_MAP, max_sources);
            loader.map_max_entries(FREE_SLOTS_MAP, max_sources);
            loader.map_max_entries(STAGED_SLOTS_MAP, max_sources);
            loader.map_max_entries(SOURCE_VALUES_MAP, values);
            loader.map_max_entries(OVERFLOW_WINDOWS_MAP, 2 * cpus as u32);
            loader.map_max_entries(
                DESTINATIONS_MAP,
                (destination_windows * DESTINATION_BUCKETS).max(1) as u32,
            );
            loader.map_max_entries(DESTINATION_OTHER_MAP, destination_windows.max(1) as u32);
            loader.map_max_entries(BANS_V4_MAP, max_bans.max(1));
            loader.map_max_entries(BANS_V6_MAP, max_bans.max(1));
            loader.map_max_entries(BAN_COUNTS_MAP, ban_counters(max_bans).max(1));
            loader.map_max_entries(SLOT_FILTER_MAP, 2 * filter.words() as u32);
            loader.override_global(SLOT_CAPACITY_GLOBAL, &max_sources, true);
            loader.override_global(FILTER_SEED_GLOBAL, &filter.seed, true);
            loader.override_global(FILTER_WORD_BITS_GLOBAL, &filter.word_bits, true);
            // The kernel side writes no diagnostic the log would drop.
            loader.override_global(aya_log::LEVEL, &log_level, true);
        })?;
        let mut diagnostics = EbpfLogger::init(&mut ebpf)
            .inspect_err(|err| log::debug!("the kernel side's diagnostics are not read: {err}"))
            .ok();
        install_sampler(&mut ebpf)?;
        set_regions(&mut ebpf, cpus, if regions == 1 { 0 } else { max_sources })?;
        let ring = ebpf
            .take_map(SAMPLES_MAP)
            .ok_or(DatapathError::Missing("samples ring buffer"))?;
        let samples = Some(SampleRing(RingBuf::try_from(ring)?));
        let mut jobs = QueueJobs::try_from(
            ebpf.take_map(QUEUE_JOB_MAP)
                .ok_or(DatapathError::Missing("queue job"))?,
        )?;
        let queued = queue_slots(
            &ebpf,
            &mut jobs,
            QueueJob {
                next: 0,
                end: max_sources,
                staged: 0,
                warned: 0,
            },
        )?;
        if let Some(diagnostics) = &mut diagnostics {
            diagnostics.flush();
        }
        if queued != max_sources {
            return Err(DatapathError::FillSlots {
                queued,
                slots: max_sources,
            });
        }
        let slots = Slots::map(
            map_fd(&ebpf, SOURCE_VALUES_MAP)?,
            map_fd(&ebpf, SLOT_KEYS_MAP)?,
            map_fd(&ebpf, STAGED_SLOTS_MAP)?,
            map_fd(&ebpf, SLOT_FILTER_MAP)?,
            max_sources,
            regions,
            filter,
        )
        .map_err(DatapathError::MapSlots)?;
        let windows = Windows::map(map_fd(&ebpf, OVERFLOW_WINDOWS_MAP)?, cpus)
            .map_err(DatapathError::MapSlots)?;
        let destinations = if destinations {
            Some(
                DestinationWindows::map(
                    map_fd(&ebpf, DESTINATIONS_MAP)?,
                    map_fd(&ebpf, DESTINATION_OTHER_MAP)?,
                    cpus,
                )
                .map_err(DatapathError::MapSlots)?,
            )
        } else {
            None
        };
        let mut datapath = Self {
            ebpf,
            max_sources,
            source_map,
            epoch: 0,
            settings: Settings {
                attack_types: 1,
                sample_snap_len: netwatch_common::DEFAULT_SAMPLE_SNAP_LEN,
                ..Settings::default()
            },
            samples,
            slots,
            windows,
            destinations,
            jobs,
            last_reclaim: Reclaim::default(),
            diagnostics,
            no_replay_metadata: false,
            cpus,
            max_bans,
            program,
        };
        datapath.set_epoch(1)?;
        Ok(datapath)
    }

    /// Sets which packets are sampled and how many per second, at run time: the program
    /// keeps running and counting throughout.
    pub fn set_sampling(&mut self, sampling: &Sampling) -> Result<(), DatapathError> {
        let Sampling {
            rate,
            burst,
            tcp_ports,
            udp_ports,
            all_tcp,
            snap_len,
        } = sampling;
        let mut words = [0u64; 2 * SAMPLE_PORT_WORDS as usize];
        for (base, ports) in [(0, tcp_ports), (SAMPLE_PORT_WORDS as usize, udp_ports)] {
            for port in ports {
                words[base + usize::from(port >> 6)] |= 1 << (port & 63);
            }
        }
        let map = self
            .ebpf
            .map_mut(SAMPLE_PORTS_MAP)
            .ok_or(DatapathError::Missing("sample ports map"))?;
        // The whole bitmap at once: the kernel copies it word by word, so a packet sees each
        // word old or new while it changes.
        let mut ports: Array<&mut MapData, [u64; 2 * SAMPLE_PORT_WORDS as usize]> =
            Array::try_from(map)?;
        ports.set(0, words, 0)?;
        self.settings.sample_rate = *rate;
        self.settings.sample_burst = (*burst).max(1);
        self.settings.sample_all_tcp = u32::from(*all_tcp);
        self.settings.sample_snap_len = (*snap_len).clamp(1, SAMPLE_MAX_SNAP_LEN as u32);
        self.write_settings()
    }

    /// Sets the UDP source ports whose datagrams count as reflected (amplification answers),
    /// at run time.
    pub fn set_reflection_ports(&mut self, ports: &[u16]) -> Result<(), DatapathError> {
        let mut words = [0u64; SAMPLE_PORT_WORDS as usize];
        for port in ports {
            words[usize::from(port >> 6)] |= 1 << (port & 63);
        }
        let map = self
            .ebpf
            .map_mut(REFLECTION_PORTS_MAP)
            .ok_or(DatapathError::Missing("reflection ports map"))?;
        // The whole bitmap at once, as the sampled ports.
        let mut bitmap: Array<&mut MapData, [u64; SAMPLE_PORT_WORDS as usize]> =
            Array::try_from(map)?;
        bitmap.set(0, words, 0)?;
        Ok(())
    }

    /// Turns the per-source counting of fragments and amplification answers on (as loaded)
    /// or off, at run time. Off, attacks are typed from the protocol counts alone (SYN, UDP,
    /// ICMP floods), never as reflection or fragments.
    pub fn set_attack_types(&mut self, enabled: bool) -> Result<(), DatapathError> {
        self.settings.attack_types = u32::from(enabled);
        self.write_settings()
    }

    /// Sets the early limit of the interface's packet rate, or turns it off (`None`, as
    /// loaded): the kernel posts an [`EarlyEvent`] in the sample ring when the frames of all
    /// CPUs together have kept the limit's rate for [`netwatch_common::EARLY_SLOTS`] slots'
    /// time, each slot of 20 ms or of the time `min_packets` take at that rate if longer (at
    /// most a second); at most once a second.
    pub fn set_early_limit(
        &mut self,
        pps: Option<f64>,
        min_packets: u64,
    ) -> Result<(), DatapathError> {
        let (packets, slot_ns, batch) = early_settings(pps, min_packets, self.cpus);
        if (packets, slot_ns, batch)
            == (
                self.settings.early_packets,
                self.settings.early_slot_ns,
                self.settings.early_batch,
            )
        {
            return Ok(());
        }
        self.settings.early_packets = packets;
        self.settings.early_slot_ns = slot_ns;
        self.settings.early_batch = batch;
        self.write_settings()
    }

    /// Whether it was loaded with room for destinations ([`LoadOptions::destinations`]).
    pub fn counts_destinations(&self) -> bool {
        self.destinations.is_some()
    }

    /// Sets the local networks whose hosts are counted per destination, at run time; an empty
    /// list turns the counting off (one comparison per frame). Networks need a datapath
    /// loaded with [`LoadOptions::destinations`].
    pub fn set_local_networks(&mut self, networks: &[(IpAddr, u8)]) -> Result<(), DatapathError> {
        if networks.len() > MAX_LOCAL_NETWORKS {
            return Err(DatapathError::TooManyLocalNetworks {
                given: networks.len(),
                most: MAX_LOCAL_NETWORKS,
            });
        }
        if !networks.is_empty() && self.destinations.is_none() {
            return Err(DatapathError::Missing(
                "room for destinations (loaded without)",
            ));
        }
        let mut table = LocalNetworks::default();
        let mut v4 = 0;
        let mut v6 = 0;
        for &(addr, len) in networks {
            let (words, masks) = local_network(addr, len);
            if addr.is_ipv4() {
                table.v4[v4] = (masks[0] << 32) | (words[0] & 0xffff_ffff);
                v4 += 1;
            } else {
                table.v6[v6] = [words[0], words[1], masks[0], masks[1]];
                v6 += 1;
            }
        }
        let map = self
            .ebpf
            .map_mut(LOCAL_NETWORKS_MAP)
            .ok_or(DatapathError::Missing("local networks map"))?;
        // The whole table, then the counts: a frame never sees a network not written yet.
        let mut array: Array<&mut MapData, LocalNetworks> = Array::try_from(map)?;
        array.set(0, table, 0)?;
        self.settings.local_v4 = v4 as u32;
        self.settings.local_networks = networks.len() as u32;
        self.write_settings()
    }

    /// Takes the sample ring buffer out, for a reader of its own; `None` if taken already.
    pub fn take_samples(&mut self) -> Option<SampleRing> {
        self.samples.take()
    }

    /// Reads every waiting sample, unless the ring was taken out.
    pub fn drain_samples(&mut self, f: impl FnMut(SampledFrame)) -> usize {
        self.samples.as_mut().map_or(0, |ring| ring.drain(f))
    }

    fn write_settings(&mut self) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(SETTINGS_MAP)
            .ok_or(DatapathError::Missing("settings map"))?;
        let mut settings: Array<&mut MapData, Settings> = Array::try_from(map)?;
        settings.set(0, self.settings, 0)?;
        Ok(())
    }

    /// Turns the per-source distinct-destination sketches on or off at run time. Off, the
    /// program skips them (one comparison per packet instead of a window check and two bit
    /// sets), and snapshots carry no spread. Used when no scan rule needs them.
    pub fn set_sketches(&mut self, enabled: bool) -> Result<(), DatapathError> {
        match (enabled, self.epoch) {
            (false, 0) => Ok(()),
            (false, _) => self.set_epoch(0),
            (true, 0) => self.set_epoch(1),
            (true, _) => Ok(()),
        }
    }

    fn set_epoch(&mut self, epoch: u32) -> Result<(), DatapathError> {
        self.settings.epoch = epoch;
        self.write_settings()?;
        self.epoch = epoch;
        Ok(())
    }

    /// Slots for sources.
    pub fn max_sources(&self) -> u32 {
        self.max_sources
    }

    /// The layout of the sources' values in use (per-CPU or shared).
    pub fn source_map(&self) -> SourceMap {
        self.source_map
    }

    fn program(&self) -> Result<&Xdp, DatapathError> {
        self.ebpf
            .program(self.program)
            .ok_or(DatapathError::Missing("netwatch program"))?
            .try_into()
            .map_err(DatapathError::from)
    }

    /// Attaches to `iface` through a BPF link.
    ///
    /// A netwatch program left attached through netlink is removed first; another program is
    /// left alone and reported, unless `force`.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        force: bool,
    ) -> Result<Attachment, DatapathError> {
        let info = interface(iface)?;
        let replaced = match info.xdp {
            None => None,
            Some((attached, prog_id)) => {
                Some(clear_attachment(iface, &info, attached, prog_id, force)?)
            }
        };
        let program: &mut Xdp = self
            .ebpf
            .program_mut(self.program)
            .ok_or(DatapathError::Missing("netwatch program"))?
            .try_into()?;
        let (link_id, mode) = match mode {
            AttachMode::Driver => (
                attach_in(program, iface, info.ifindex, XdpMode::Driver, "driver")?,
                AttachedMode::Driver,
            ),
            AttachMode::Skb => (
                attach_in(program, iface, info.ifindex, XdpMode::Skb, "skb")?,
                AttachedMode::Skb,
            ),
            AttachMode::Auto => match program.attach_to_if_index(info.ifindex, XdpMode::Driver) {
                Ok(id) => (id, AttachedMode::Driver),
                Err(_) => (
                    attach_in(program, iface, info.ifindex, XdpMode::Skb, "driver or skb")?,
                    AttachedMode::Skb,
                ),
            },
        };
        let link = program.take_link(link_id)?;
        let link =
            FdLink::try_from(link).map_err(|_| DatapathError::NoBpfLink(iface.to_owned()))?;
        Ok(Attachment {
            link,
            iface: iface.to_owned(),
            ifindex: info.ifindex,
            mode,
            replaced,
        })
    }

    /// Pins the loaded program at `path` on a bpffs, so that `bpftool` or `ip link` can name
    /// it. netwatch itself never needs this; it is for inspection and for tests.
    pub fn pin_program(&mut self, path: &std::path::Path) -> Result<(), DatapathError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(self.program)
            .ok_or(DatapathError::Missing("netwatch program"))?
            .try_into()?;
        program.pin(path).map_err(DatapathError::Pin)
    }

    /// Reads the maps, summing the per-CPU regions, and closes the current sketch window:
    /// [`SourceReading::spread`] covers the traffic since the previous snapshot.
    ///
    /// Then, if free slots run low, reclaims the slots of the sources idle longest (see
    /// [`slots`](self::slots)): such a source leaves the snapshots after one more reading, and
    /// its next frame makes it a new source in a new slot.
    pub fn snapshot(&mut self) -> Result<Snapshot, DatapathError> {
        // Sized like the last reading: a million pushes onto a growing list copy it twenty
        // times over.
        let mut snapshot = Snapshot {
            globals: GlobalStats::default(),
            sources: Vec::with_capacity(self.slots.in_use()),
            released: Vec::new(),
            overflow_reflected_port: 0,
            overflow: OverflowBreakdown::default(),
            destinations: Vec::new(),
            destination_other: Traffic::default(),
        };
        self.snapshot_into(&mut snapshot)?;
        Ok(snapshot)
    }

    /// [`Datapath::snapshot`] into the lists of a past snapshot: a reader that keeps one
    /// snapshot from interval to interval writes a million readings into memory it touched
    /// already, instead of into fresh pages (at a million sources, page faults were half the
    /// time of a reading).
    pub fn snapshot_into(&mut self, snapshot: &mut Snapshot) -> Result<(), DatapathError> {
        let closing = self.epoch;
        let closing_overflow = self.settings.overflow_window;
        self.settings.overflow_window = closing_overflow.wrapping_add(1);
        if closing != 0 {
            // Epoch 0 marks windows never written (and sketches off); skip it on wrapping.
            self.set_epoch(closing.wrapping_add(1).max(1))?;
        } else {
            self.write_settings()?;
        }
        snapshot.globals = GlobalStats::default();
        snapshot.sources.clear();
        snapshot.released.clear();
        self.slots
            .read(closing, |reading| snapshot.sources.push(reading));
        // Globals after sources: a packet counted in a source read above is in the globals too.
        let state_map = self
            .ebpf
            .map(CPU_STATE_MAP)
            .ok_or(DatapathError::Missing("per-CPU state map"))?;
        let states: PerCpuArray<&MapData, CpuState> = PerCpuArray::try_from(state_map)?;
        snapshot.overflow_reflected_port = 0;
        for state in states.get(&0, 0)?.iter() {
            add_globals(&mut snapshot.globals, &state.globals);
            if state.overflow_reflected_port != 0 {
                snapshot.overflow_reflected_port = state.overflow_reflected_port as u16;
            }
        }
        snapshot.overflow = self.windows.take(closing_overflow);
        (snapshot.destinations, snapshot.destination_other) = match &mut self.destinations {
            Some(windows) => windows.take(closing_overflow),
            None => (Vec::new(), Traffic::default()),
        };
        snapshot.released = self.reclaim()?;
        Ok(())
    }

    /// Empties the breakdowns of traffic without a slot and of local hosts, both windows, as
    /// readings do, without a reading's reclaim: for benchmarks whose trials should each start
    /// from empty tables. The global counters go on: the next snapshot's breakdown then holds
    /// less than its overflow count.
    pub fn clear_overflow(&mut self) -> Result<(), DatapathError> {
        for _ in 0..2 {
            let closing = self.settings.overflow_window;
            self.settings.overflow_window = closing.wrapping_add(1);
            self.write_settings()?;
            self.windows.take(closing);
            if let Some(windows) = &mut self.destinations {
                windows.take(closing);
            }
        }
        Ok(())
    }

    /// What the last snapshot's reclaim did.
    pub fn last_reclaim(&self) -> Reclaim {
        self.last_reclaim
    }

    /// Frees the slots whose grace is over and takes back idle ones (see [`slots`]);
    /// returns the slots freed.
    fn reclaim(&mut self) -> Result<Vec<u32>, DatapathError> {
        let started = std::time::Instant::now();
        // Slots the kernel could not queue stay in quarantine and are staged again next time.
        let staged = self.slots.stage_release();
        let freed = if staged > 0 {
            let queued = queue_slots(
                &self.ebpf,
                &mut self.jobs,
                QueueJob {
                    next: 0,
                    end: staged as u32,
                    staged: 1,
                    warned: 0,
                },
            )?;
            if let Some(diagnostics) = &mut self.diagnostics {
                diagnostics.flush();
            }
            if queued > 0 {
                // CPUs that found the queue empty try it again.
                self.settings.free_generation = self.settings.free_generation.wrapping_add(1);
                self.write_settings()?;
            }
            self.slots.released(queued as usize)
        } else {
            Vec::new()
        };
        let keys = self.slots.retire_idlest();
        if !keys.is_empty() {
            let addresses = self
                .ebpf
                .map_mut(SOURCE_SLOTS_MAP)
                .ok_or(DatapathError::Missing("address map"))?;
            if let Err(err) = forget(addresses, &keys) {
                self.slots.unretire();
                return Err(DatapathError::Reclaim(err));
            }
            self.slots.quarantine_retired();
            // Their bits go from the filter: lookups move to the half rebuilt without them.
            self.settings.filter_half = self.slots.rebuild_filter();
            self.write_settings()?;
        }
        self.last_reclaim = Reclaim {
            forgotten: keys.len(),
            freed: freed.len(),
            took: started.elapsed(),
        };
        Ok(freed)
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and returns its verdict.
    ///
    /// The maps are updated as for a received frame, which is how captures are replayed and
    /// how the tests check the parser. Frames shorter than an Ethernet header are refused by
    /// the kernel (`EINVAL`).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, DatapathError> {
        run_frame(self.program()?, frame, 1).map(|(verdict, _)| verdict)
    }

    /// Runs the program once on a captured frame that was `wire_len` bytes on the wire, as
    /// [`Datapath::test_run`] does, and has it counted by that length (a [`WireLength`] in
    /// the frame's XDP metadata).
    ///
    /// What the kernel runs is cut to [`REPLAY_MAX_RUN`] bytes (it takes about 3.5 KiB in
    /// the frame and the rest in fragments, up to about 70 KiB); what a capture cut by its
    /// snap length lacks, it never had. Either way the counts carry the wire length. A frame
    /// shorter than an Ethernet header, which the kernel refuses to run, is run as an IPv4
    /// Ethernet header with nothing behind it: the program counts it as malformed, by its own
    /// length.
    pub fn replay_frame(&mut self, frame: &[u8], wire_len: u32) -> Result<u32, DatapathError> {
        const META: usize = size_of::<WireLength>();
        const ETH_HLEN: usize = 14;
        let wire_len = wire_len.max(u32::try_from(frame.len()).unwrap_or(u32::MAX));
        let frame = &frame[..frame.len().min(REPLAY_MAX_RUN)];
        let mut data = Vec::with_capacity(META + frame.len().max(ETH_HLEN));
        data.extend_from_slice(&WIRE_LENGTH_MAGIC.to_ne_bytes());
        data.extend_from_slice(&wire_len.to_ne_bytes());
        if frame.len() < ETH_HLEN {
            data.extend_from_slice(&[0; 12]);
            data.extend_from_slice(&0x0800u16.to_be_bytes());
        } else {
            data.extend_from_slice(frame);
        }
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. `data` is the length of the metadata at the start of data_in.
        let mut context = [0u8; 24];
        context[..4].copy_from_slice(&(META as u32).to_ne_bytes());
        context[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        if !self.no_replay_metadata {
            match self.program()?.test_run(TestRunOptions {
                data_in: Some(&data),
                ctx_in: Some(&context),
                ..TestRunOptions::default()
            }) {
                Ok(result) => return Ok(result.return_value),
                // Before Linux 5.15 an XDP test run takes no context: the frame is run as it
                // was captured, counted by the bytes the kernel sees. Said once.
                Err(err) if matches!(&err, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EINVAL)) =>
                {
                    log::warn!(
                        "this kernel runs no XDP metadata in a test run (Linux 5.15 does): replayed frames are counted by their captured bytes, runts are not counted, and frames over 3.5 KiB are cut"
                    );
                    self.no_replay_metadata = true;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let frame = &data[META..];
        run_frame(self.program()?, frame, 1).map(|(verdict, _)| verdict)
    }

    /// Runs the program `repeat` times on `frame`; returns the verdict and the mean time per
    /// run as the kernel measured it.
    pub fn bench(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DatapathError> {
        run_frame(self.program()?, frame, repeat)
    }
}

/// Most bytes of a captured frame [`Datapath::replay_frame`] hands to the kernel: the largest
/// IP packet behind an Ethernet header and two VLAN tags, well within what BPF_PROG_TEST_RUN
/// takes with 4 KiB pages (about 3.5 KiB in the frame and 17 pages of fragments).
pub const REPLAY_MAX_RUN: usize = 65_535 + 14 + 8;

fn run_frame(program: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DatapathError> {
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    })?;
    Ok((result.return_value, result.duration))
}

/// The running kernel's version, if netwatch can run on it.
fn check_kernel() -> Result<KernelVersion, DatapathError> {
    let found =
        KernelVersion::current().map_err(|err| DatapathError::KernelVersion(err.to_string()))?;
    if found < MIN_KERNEL {
        return Err(DatapathError::KernelTooOld {
            found,
            needed: MIN_KERNEL,
        });
    }
    Ok(found)
}

/// The one-entry array of the queueing program's job, taken out of the object at load.
type QueueJobs = Array<MapData, QueueJob>;

/// Has the kernel do `job`: writes it, runs the queueing program once per slot, and returns
/// how many slots it queued.
fn queue_slots(ebpf: &Ebpf, jobs: &mut QueueJobs, job: QueueJob) -> Result<u32, DatapathError> {
    jobs.set(0, job, 0)?;
    let program: &Xdp = ebpf
        .program(QUEUE_PROGRAM_NAME)
        .ok_or(DatapathError::Missing(QUEUE_PROGRAM_NAME))?
        .try_into()?;
    // The smallest frame the kernel takes; the program does not look at it.
    run_frame(program, &[0u8; 14], job.end - job.next)?;
    Ok(jobs.get(&0, 0)?.next - job.next)
}

/// Deletes `keys` from the address map: in batches, or one by one on kernels without batch
/// operations on hash maps.
fn forget(addresses: &mut aya::maps::Map, keys: &[SourceKey]) -> io::Result<()> {
    let aya::maps::Map::HashMap(data) = addresses else {
        return Err(io::Error::other("the address map is not a hash map"));
    };
    match batch::delete(data.fd().as_fd(), keys) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
            let mut addresses: AyaHashMap<&mut MapData, SourceKey, u32> =
                AyaHashMap::try_from(addresses).map_err(io::Error::other)?;
            for key in keys {
                match addresses.remove(key) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(err) => return Err(io::Error::other(err)),
                }
            }
            Ok(())
        }
        other => other,
    }
}

/// The descriptor of map `name`.
fn map_fd<'a>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<std::os::fd::BorrowedFd<'a>, DatapathError> {
    let map = ebpf.map(name).ok_or(DatapathError::Missing(name))?;
    match map {
        aya::maps::Map::Array(data) => Ok(data.fd().as_fd()),
        _ => Err(DatapathError::Missing(name)),
    }
}

/// Creates the maps of `object` and loads (verifies) its `programs`.
fn load_object<'a>(
    object: &[u8],
    programs: &[&'static str],
    configure: impl FnOnce(&mut EbpfLoader<'a>),
) -> Result<Ebpf, DatapathError> {
    let mut loader = EbpfLoader::new();
    configure(&mut loader);
    let mut ebpf = loader.load(object).map_err(|err| {
        if is_permission_error(&err) {
            DatapathError::NotPermitted {
                action: "creating BPF maps",
                detail: err.to_string(),
            }
        } else {
            DatapathError::Load(err)
        }
    })?;
    for &program in programs {
        let xdp: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or(DatapathError::Missing(program))?
            .try_into()?;
        verify(xdp, program)?;
    }
    Ok(ebpf)
}

/// Loads the sampler program and puts it in slot 0 of the program array the main program
/// tail-calls.
fn install_sampler(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let sampler: &mut Xdp = ebpf
        .program_mut(SAMPLER_PROGRAM_NAME)
        .ok_or(DatapathError::Missing("sampler program"))?
        .try_into()?;
    verify(sampler, SAMPLER_PROGRAM_NAME)?;
    let fd = sampler.fd()?.try_clone().map_err(|err| {
        DatapathError::Program(ProgramError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: err,
        }))
    })?;
    let map = ebpf
        .map_mut(SAMPLER_MAP)
        .ok_or(DatapathError::Missing("sampler program array"))?;
    let mut slots: ProgramArray<&mut MapData> = ProgramArray::try_from(map)?;
    slots.set(0, &fd, 0)?;
    Ok(())
}

/// Loads one program, turning a rejection into a readable error.
fn verify(xdp: &mut Xdp, program: &'static str) -> Result<(), DatapathError> {
    xdp.load().map_err(|err| match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES))
                && format!("{verifier_log:?}").trim().is_empty()
            {
                DatapathError::NotPermitted {
                    action: "loading the XDP program",
                    detail: io_error.to_string(),
                }
            } else {
                DatapathError::Verifier {
                    program,
                    reason: io_error,
                    log_tail: log_tail(&format!("{verifier_log:?}")),
                }
            }
        }
        other => other.into(),
    })
}

fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(VERIFIER_LOG_TAIL)..].join("\n")
}

fn is_permission_error(err: &EbpfError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        if err.to_string().contains("Operation not permitted") {
            return true;
        }
        source = err.source();
    }
    false
}

fn interface(iface: &str) -> Result<LinkInfo, DatapathError> {
    let info = netlink::link_info(iface).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => DatapathError::UnknownInterface(iface.to_owned()),
        _ => DatapathError::Netlink {
            iface: iface.to_owned(),
            source,
        },
    })?;
    if !info.up {
        return Err(DatapathError::InterfaceDown(iface.to_owned()));
    }
    Ok(info)
}

/// Removes a program found on the interface, if it is netwatch's own or `force` is set.
fn clear_attachment(
    iface: &str,
    info: &LinkInfo,
    attached: XdpAttached,
    prog_id: u32,
    force: bool,
) -> Result<ReplacedProgram, DatapathError> {
    let name = program_name(prog_id).unwrap_or_else(|| String::from("?"));
    if name != PROGRAM_NAME && name != SHARED_PROGRAM_NAME && !force {
        return Err(DatapathError::ForeignProgram {
            iface: iface.to_owned(),
            prog_id,
            name,
            mode: attached,
        });
    }
    match netlink::detach_xdp(info.ifindex, attached) {
        Ok(()) => Ok(ReplacedProgram { prog_id, name }),
        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => Err(DatapathError::HeldByLink {
            iface: iface.to_owned(),
            prog_id,
            name,
        }),
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Err(DatapathError::NotPermitted {
            action: "removing the XDP program already attached",
            detail: err.to_string(),
        }),
        Err(source) => Err(DatapathError::Netlink {
            iface: iface.to_owned(),
            source,
        }),
    }
}

fn program_name(prog_id: u32) -> Option<String> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|program| program.id() == prog_id)
        .and_then(|program| program.name_as_str().map(str::to_owned))
}

fn attach_in(
    program: &mut Xdp,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
    label: &'static str,
) -> Result<aya::programs::xdp::XdpLinkId, DatapathError> {
    program
        .attach_to_if_index(ifindex, mode)
        .map_err(|source| match &source {
            ProgramError::SyscallError(call)
                if matches!(call.io_error.raw_os_error(), Some(libc::EPERM)) =>
            {
                DatapathError::NotPermitted {
                    action: "attaching the XDP program",
                    detail: source.to_string(),
                }
            }
            _ => DatapathError::Attach {
                iface: iface.to_owned(),
                mode: label,
                source,
            },
        })
}

fn or_into(sum: &mut [u64], words: &[u64]) {
    for (sum, word) in sum.iter_mut().zip(words) {
        *sum |= word;
    }
}

/// Tells each CPU where its region of source values starts: CPU `c` at `c * region_len`
/// (`region_len` 0: one region for all).
fn set_regions(ebpf: &mut Ebpf, cpus: usize, region_len: u32) -> Result<(), DatapathError> {
    let map = ebpf
        .map_mut(CPU_STATE_MAP)
        .ok_or(DatapathError::Missing("per-CPU state map"))?;
    let mut states: PerCpuArray<&mut MapData, CpuState> = PerCpuArray::try_from(map)?;
    let values = (0..cpus as u32)
        .map(|cpu| CpuState {
            region: cpu * region_len,
            windows: 2 * cpu,
            ..CpuState::default()
        })
        .collect::<Vec<_>>();
    let values = PerCpuValues::try_from(values).map_err(DatapathError::Cpus)?;
    states.set(0, values, 0)?;
    Ok(())
}

/// The address a map key stands for.
pub fn source_addr(key: &SourceKey) -> IpAddr {
    if key.family == FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(
            key.addr[0],
            key.addr[1],
            key.addr[2],
            key.addr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(key.addr))
    }
}

/// The shortest early slot: a flood is said within about two of them.
const EARLY_SLOT: Duration = Duration::from_millis(20);

/// [`Settings::early_packets`], [`Settings::early_slot_ns`] and [`Settings::early_batch`] for
/// a limit of `pps` (none: off) with at least `min_packets` in a slot, on `cpus` CPUs.
fn early_settings(pps: Option<f64>, min_packets: u64, cpus: usize) -> (u32, u32, u32) {
    let Some(pps) = pps.filter(|pps| pps.is_finite() && *pps > 0.0) else {
        return (0, 0, 0);
    };
    let slot = EARLY_SLOT
        .as_secs_f64()
        .max(min_packets as f64 / pps)
        .min(1.0);
    let packets = (pps * slot).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    // A quarter of the limit pending on each CPU at most: the count lags by that much.
    let batch = (packets / (4 * cpus.max(1) as u32)).max(1);
    (packets, (slot * 1e9) as u32, batch)
}

/// A local network as the kernel matches it: the first two words of the address in memory
/// order, masked, and their masks (an IPv4 address in the low half of the first).
fn local_network(addr: IpAddr, len: u8) -> ([u64; 2], [u64; 2]) {
    let (bytes, len) = match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, u32::from(len.min(32)))
        }
        IpAddr::V6(v6) => (v6.octets(), u32::from(len.min(128))),
    };
    // The mask in network order, bit by bit from the first byte.
    let mut mask = [0u8; 16];
    for (index, byte) in mask.iter_mut().enumerate() {
        let bits = len.saturating_sub(index as u32 * 8).min(8);
        *byte = if bits == 0 { 0 } else { 0xff << (8 - bits) };
    }
    let word = |bytes: &[u8; 16], at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(word)
    };
    let mask = [word(&mask, 0), word(&mask, 8)];
    ([word(&bytes, 0) & mask[0], word(&bytes, 8) & mask[1]], mask)
}

/// Adds `stats` into `sum`; the last non-zero amplification port wins.
pub fn add_source(sum: &mut SourceStats, stats: &SourceStats) {
    let SourceStats {
        packets,
        bytes,
        tcp_packets,
        udp_packets,
        icmp_packets,
        other_packets,
        tcp_syn_packets,
        fragment_packets,
        reflected_packets,
        reflected_port,
        _pad,
    } = stats;
    sum.packets += packets;
    sum.bytes += bytes;
    sum.tcp_packets += tcp_packets;
    sum.udp_packets += udp_packets;
    sum.icmp_packets += icmp_packets;
    sum.other_packets += other_packets;
    sum.tcp_syn_packets += tcp_syn_packets;
    sum.fragment_packets += fragment_packets;
    sum.reflected_packets += reflected_packets;
    if *reflected_port != 0 {
        sum.reflected_port = *reflected_port;
    }
}

/// Adds `stats` into `sum`.
pub fn add_globals(sum: &mut GlobalStats, stats: &GlobalStats) {
    let GlobalStats {
        total_packets,
        total_bytes,
        non_ip_packets,
        non_ip_bytes,
        malformed_packets,
        malformed_bytes,
        overflow_packets,
        overflow_bytes,
        overflow_tcp_packets,
        overflow_udp_packets,
        overflow_icmp_packets,
        overflow_syn_packets,
        overflow_fragment_packets,
        overflow_reflected_packets,
        truncated_packets,
        sampled_packets,
        sample_capped_packets,
        sample_ring_full_packets,
        sample_truncated_packets,
    } = stats;
    sum.sample_truncated_packets += sample_truncated_packets;
    sum.overflow_tcp_packets += overflow_tcp_packets;
    sum.overflow_udp_packets += overflow_udp_packets;
    sum.overflow_icmp_packets += overflow_icmp_packets;
    sum.overflow_syn_packets += overflow_syn_packets;
    sum.overflow_fragment_packets += overflow_fragment_packets;
    sum.overflow_reflected_packets += overflow_reflected_packets;
    sum.sampled_packets += sampled_packets;
    sum.sample_capped_packets += sample_capped_packets;
    sum.sample_ring_full_packets += sample_ring_full_packets;
    sum.total_packets += total_packets;
    sum.total_bytes += total_bytes;
    sum.non_ip_packets += non_ip_packets;
    sum.non_ip_bytes += non_ip_bytes;
    sum.malformed_packets += malformed_packets;
    sum.malformed_bytes += malformed_bytes;
    sum.overflow_packets += overflow_packets;
    sum.overflow_bytes += overflow_bytes;
    sum.truncated_packets += truncated_packets;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_counting_estimates() {
        assert_eq!(linear_count(&[0; 4]), 0);
        // One bit set of 256: -256 ln(255/256) = 1.0
        assert_eq!(linear_count(&[1, 0, 0, 0]), 1);
        // Half the bits set: 256 ln 2 = 177.4
        assert_eq!(linear_count(&[u64::MAX, u64::MAX, 0, 0]), 177);
        // Saturated: m ln m.
        assert_eq!(linear_count(&[u64::MAX; 4]), 1420);
        assert_eq!(linear_count(&[u64::MAX; 2]), 621);
    }

    #[test]
    fn auto_source_map_is_per_cpu_while_its_values_fit_the_budget() {
        // 192-byte values: 65,536 sources take 12 MiB per CPU, so 42 CPUs fit in 512 MiB.
        assert_eq!(size_of::<SourceValue>(), 192);
        let auto = |sources, cpus| SourceMap::Auto.resolve(sources, cpus, true);
        assert_eq!(auto(65_536, 2), SourceMap::PerCpu);
        assert_eq!(auto(65_536, 42), SourceMap::PerCpu);
        assert_eq!(auto(65_536, 43), SourceMap::Shared);
        assert_eq!(auto(1 << 20, 2), SourceMap::PerCpu);
        assert_eq!(auto(1 << 20, 4), SourceMap::Shared);
        assert_eq!(auto(1_000_000, 64), SourceMap::Shared);
        // A kernel without the shared map's atomics keeps per-CPU.
        assert_eq!(
            SourceMap::Auto.resolve(1_000_000, 64, false),
            SourceMap::PerCpu
        );
        // An explicit choice stands.
        assert_eq!(
            SourceMap::PerCpu.resolve(1 << 24, 64, true),
            SourceMap::PerCpu
        );
        assert_eq!(SourceMap::Shared.resolve(1, 1, true), SourceMap::Shared);
    }
}
