//! The kernel side seen from userspace: load the XDP program, attach it to an interface
//! through a BPF link, read its maps, and run it on crafted frames (`BPF_PROG_TEST_RUN`).
//!
//! This module knows the maps' layout and nothing about what the numbers mean: collection
//! and everything after it live in later stages.

mod batch;
pub mod netlink;

use std::{collections::HashMap, fmt, io, os::fd::AsFd as _, time::Duration};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap as AyaHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, ProgramArray,
        RingBuf,
    },
    programs::{
        ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, Link as _},
        loaded_programs,
    },
    util::KernelVersion,
};
use netwatch_common::{
    GLOBALS_MAP, GlobalStats, HOST_BITMAP_BITS, LOOKUP_FLOOR_PROGRAM_NAME, NOOP_PROGRAM_NAME,
    PORT_BITMAP_BITS, PROGRAM_NAME, SAMPLE_PORT_WORDS, SAMPLE_PORTS_MAP, SAMPLE_SNAP_LEN,
    SAMPLER_MAP, SAMPLER_PROGRAM_NAME, SAMPLES_MAP, SETTINGS_MAP, SHARED_PROGRAM_NAME,
    SHARED_SOURCES_MAP, SOURCES_MAP, Sample, SampleHeader, Settings, SourceKey, SourceStats,
    SourceValue,
};

use self::netlink::{LinkInfo, XdpAttached};

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

/// Errors of the datapath. Each one is meant to be shown to the user as it is.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// Missing privilege.
    #[error(
        "permission denied while {action}: netwatch needs root, or the capabilities CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON ({detail})"
    )]
    NotPermitted {
        /// What was being done.
        action: &'static str,
        /// What the kernel said.
        detail: String,
    },
    /// The kernel is older than [`MIN_KERNEL`].
    #[error(
        "kernel {found} is too old: netwatch attaches XDP through BPF links, which need Linux {needed} or newer"
    )]
    KernelTooOld {
        /// The running kernel.
        found: KernelVersion,
        /// The oldest kernel that works.
        needed: KernelVersion,
    },
    /// `--source-map shared` on a kernel older than [`MIN_KERNEL_SHARED`].
    #[error(
        "kernel {found} is too old for the shared source map, whose atomic ORs need Linux {needed} or newer: use --source-map per-cpu (or auto)"
    )]
    SharedMapNeedsNewerKernel {
        /// The running kernel.
        found: KernelVersion,
        /// The oldest kernel that works.
        needed: KernelVersion,
    },
    /// The running kernel's version could not be read.
    #[error("cannot read the kernel version: {0}")]
    KernelVersion(String),
    /// No interface of that name in this network namespace.
    #[error("unknown interface {0:?} (see `ip link`)")]
    UnknownInterface(String),
    /// The interface exists but is administratively down.
    #[error("interface {0:?} is down: bring it up first (`ip link set {0} up`)")]
    InterfaceDown(String),
    /// Another program is attached and `--force` was not given.
    #[error(
        "interface {iface:?} already has XDP program {name:?} (id {prog_id}, {mode:?} mode) attached; netwatch leaves it alone unless --force is given"
    )]
    ForeignProgram {
        /// The interface.
        iface: String,
        /// Kernel program id.
        prog_id: u32,
        /// Its name, as the kernel knows it.
        name: String,
        /// How it is attached.
        mode: XdpAttached,
    },
    /// A program attached through a BPF link of another live process.
    #[error(
        "interface {iface:?} has XDP program {name:?} (id {prog_id}) held by a BPF link of another process (another netwatch?); stop that process first"
    )]
    HeldByLink {
        /// The interface.
        iface: String,
        /// Kernel program id.
        prog_id: u32,
        /// Its name.
        name: String,
    },
    /// The verifier rejected the program.
    #[error(
        "the kernel verifier rejected XDP program {program:?} ({reason}); end of the verifier log:\n{log_tail}"
    )]
    Verifier {
        /// Program name.
        program: &'static str,
        /// The syscall's error.
        reason: io::Error,
        /// The last lines of the verifier log.
        log_tail: String,
    },
    /// Attaching failed in every mode tried.
    #[error("cannot attach XDP to {iface:?} in {mode} mode: {source}")]
    Attach {
        /// The interface.
        iface: String,
        /// The mode(s) tried.
        mode: &'static str,
        /// Why.
        source: ProgramError,
    },
    /// The kernel attached through netlink instead of a BPF link.
    #[error(
        "the kernel refused a BPF link for XDP on {0:?}; netwatch does not fall back to netlink attachment, which would outlive a crash"
    )]
    NoBpfLink(String),
    /// A netlink request failed.
    #[error("netlink request for interface {iface:?} failed: {source}")]
    Netlink {
        /// The interface.
        iface: String,
        /// Why.
        source: io::Error,
    },
    /// Loading the object failed.
    #[error("cannot load the eBPF object: {0}")]
    Load(#[source] EbpfError),
    /// A program or map is missing from the object: a build problem.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// Another program error.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// Reading the sources map failed.
    #[error("cannot read the sources map: {0}")]
    Harvest(#[source] io::Error),
    /// Pinning failed.
    #[error("cannot pin: {0}")]
    Pin(#[source] aya::pin::PinError),
    /// A map operation failed.
    #[error(transparent)]
    Map(#[from] MapError),
}

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
    /// Capacity of the per-source map.
    pub max_sources: u32,
    /// Which kind of per-source map.
    pub source_map: SourceMap,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_sources: netwatch_common::DEFAULT_MAX_SOURCES,
            source_map: SourceMap::PerCpu,
        }
    }
}

/// The kind of map sources are counted in.
///
/// Per-CPU, each CPU adds to its own copy of a source's value with plain instructions: the
/// fastest, and no cache line moves between CPUs when one source floods every queue; but the
/// map holds a value per possible CPU for every source. Shared, one value per source takes
/// atomic adds: a few nanoseconds more per packet, and contention when many CPUs count the
/// same source at once, for a map a CPU count times smaller (BENCHMARKS.md measures both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceMap {
    /// Per-CPU while its values fit in [`SourceMap::PER_CPU_BUDGET`], shared beyond (on
    /// Linux [`MIN_KERNEL_SHARED`] and newer; per-CPU always on older kernels).
    Auto,
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
    PerCpu,
    /// `BPF_MAP_TYPE_LRU_HASH` with atomic adds.
    Shared,
}

impl SourceMap {
    /// The most memory [`SourceMap::Auto`] lets per-CPU values take: with 2 CPUs that is
    /// over a million sources, with 64 about 52,000.
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
    /// Every source in the map, in the order the map was read. A list rather than a map: at a
    /// million sources, building a hash map here cost more than reading the kernel's map. A
    /// source can appear twice when the map was read entry by entry and changed meanwhile
    /// (the walk restarts when its cursor is evicted); the batch read meets each once.
    pub sources: Vec<SourceReading>,
}

/// One source as read from the map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceReading {
    /// The source.
    pub key: SourceKey,
    /// Its cumulative counters, summed over CPUs.
    pub stats: SourceStats,
    /// Its distinct destinations since the previous snapshot, if it sent anything since then
    /// and sketches are on.
    pub spread: Option<Spread>,
}

impl Snapshot {
    /// The counters of every source by address (the first reading of a source met twice).
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

/// Distinct destinations of one source during one window, estimated by linear counting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    /// Distinct destination ports (TCP and UDP).
    pub ports: u32,
    /// Distinct destination addresses.
    pub hosts: u32,
}

/// Linear counting (Whang, Vander-Zanden, Taylor 1990): `n = -m ln(zeros / m)`. With every
/// bit set the estimate saturates at `m ln m` (1,420 for 256 bits, 621 for 128): "this many or
/// more".
pub fn linear_count(words: &[u64]) -> u32 {
    let bits = (words.len() * 64) as f64;
    let zeros: u32 = words.iter().map(|word| word.count_zeros()).sum();
    if zeros == 0 {
        return (bits * bits.ln()).round() as u32;
    }
    (-bits * (f64::from(zeros) / bits).ln()).round() as u32
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
    /// Parses one ring buffer record; `None` if it is not a whole [`Sample`].
    pub fn parse(record: &[u8]) -> Option<Self> {
        if record.len() < size_of::<Sample>() {
            return None;
        }
        // SAFETY: the record holds a whole Sample, written by the kernel; read_unaligned copes
        // with any alignment and every bit pattern is a valid Sample.
        let sample: Sample = unsafe { record.as_ptr().cast::<Sample>().read_unaligned() };
        let captured = (sample.header.captured_len as usize).min(SAMPLE_SNAP_LEN);
        Some(Self {
            header: sample.header,
            data: sample.data[..captured].to_vec(),
        })
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
    harvest: Harvest,
    /// Possible CPUs: the number of values of a per-CPU entry.
    cpus: usize,
    /// Sources in the last snapshot.
    last_sources: usize,
    /// Time the last batch harvest spent in the kernel.
    last_kernel_read: Duration,
}

/// How the sources map is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Harvest {
    /// `BPF_MAP_LOOKUP_BATCH`: thousands of entries per syscall.
    Batch,
    /// `get_next_key` and a lookup per entry: what older kernels allow.
    PerKey,
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
        } = options;
        let kernel = check_kernel()?;
        let cpus = aya::util::nr_cpus().map_err(|(path, err)| {
            DatapathError::Harvest(io::Error::new(err.kind(), format!("{path}: {err}")))
        })?;
        let source_map = source_map.resolve(max_sources, cpus, kernel >= MIN_KERNEL_SHARED);
        if source_map == SourceMap::Shared && kernel < MIN_KERNEL_SHARED {
            return Err(DatapathError::SharedMapNeedsNewerKernel {
                found: kernel,
                needed: MIN_KERNEL_SHARED,
            });
        }
        // Both maps are in the object and both are created; the one not used gets one entry.
        let (per_cpu_entries, shared_entries) = match source_map {
            SourceMap::Shared => (1, max_sources),
            SourceMap::Auto | SourceMap::PerCpu => (max_sources, 1),
        };
        let mut ebpf = load_object(NETWATCH_OBJECT, &[source_map.program()], |loader| {
            loader.map_max_entries(SOURCES_MAP, per_cpu_entries);
            loader.map_max_entries(SHARED_SOURCES_MAP, shared_entries);
        })?;
        install_sampler(&mut ebpf)?;
        let ring = ebpf
            .take_map(SAMPLES_MAP)
            .ok_or(DatapathError::Missing("samples ring buffer"))?;
        let samples = Some(SampleRing(RingBuf::try_from(ring)?));
        let mut datapath = Self {
            ebpf,
            max_sources,
            source_map,
            epoch: 0,
            settings: Settings::default(),
            samples,
            harvest: Harvest::Batch,
            cpus,
            last_sources: 0,
            last_kernel_read: Duration::ZERO,
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
        } = sampling;
        let mut words = vec![0u64; 2 * SAMPLE_PORT_WORDS as usize];
        for (base, ports) in [(0, tcp_ports), (SAMPLE_PORT_WORDS as usize, udp_ports)] {
            for port in ports {
                words[base + usize::from(port >> 6)] |= 1 << (port & 63);
            }
        }
        let map = self
            .ebpf
            .map_mut(SAMPLE_PORTS_MAP)
            .ok_or(DatapathError::Missing("sample ports map"))?;
        let mut ports: Array<&mut MapData, u64> = Array::try_from(map)?;
        for (index, word) in words.iter().enumerate() {
            // Only words that change, so that a reload touches a handful of entries.
            if ports.get(&(index as u32), 0)? != *word {
                ports.set(index as u32, *word, 0)?;
            }
        }
        self.settings.sample_rate = *rate;
        self.settings.sample_burst = (*burst).max(1);
        self.settings.sample_all_tcp = u32::from(*all_tcp);
        self.write_settings()
    }

    /// Chooses how the sources map is read (batch unless the kernel lacks it); for the
    /// benchmark that compares both.
    pub fn set_harvest(&mut self, harvest: Harvest) {
        self.harvest = harvest;
    }

    /// Time the last snapshot's batch harvest spent in the kernel's `BPF_MAP_LOOKUP_BATCH`
    /// calls (the rest of [`Datapath::snapshot`] is userspace work); zero for per-key reads.
    pub fn last_kernel_read(&self) -> Duration {
        self.last_kernel_read
    }

    /// How the sources map is read now.
    pub fn harvest(&self) -> Harvest {
        self.harvest
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

    /// Capacity of the per-source map.
    pub fn max_sources(&self) -> u32 {
        self.max_sources
    }

    /// The kind of per-source map in use (per-CPU or shared).
    pub fn source_map(&self) -> SourceMap {
        self.source_map
    }

    fn program(&self) -> Result<&Xdp, DatapathError> {
        self.ebpf
            .program(self.source_map.program())
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
            .program_mut(self.source_map.program())
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
            .program_mut(self.source_map.program())
            .ok_or(DatapathError::Missing("netwatch program"))?
            .try_into()?;
        program.pin(path).map_err(DatapathError::Pin)
    }

    /// Reads the maps, summing the per-CPU values, and closes the current sketch window:
    /// [`SourceReading::spread`] covers the traffic since the previous snapshot.
    ///
    /// Sources evicted while the map is walked are skipped.
    pub fn snapshot(&mut self) -> Result<Snapshot, DatapathError> {
        let closing = self.epoch;
        if closing != 0 {
            // Epoch 0 marks windows never written (and sketches off); skip it on wrapping.
            self.set_epoch(closing.wrapping_add(1).max(1))?;
        }
        let slot = (closing & 1) as usize;

        // Sized like the last reading: a million pushes onto a growing list copy it twenty
        // times over.
        let mut snapshot = Snapshot {
            globals: GlobalStats::default(),
            sources: Vec::with_capacity(self.last_sources),
        };
        let mut fold = |key: SourceKey, per_cpu: &[SourceValue]| {
            let mut sum = SourceStats::default();
            let mut ports = [0u64; PORT_BITMAP_BITS / 64];
            let mut hosts = [0u64; HOST_BITMAP_BITS / 64];
            let mut marked = false;
            for value in per_cpu {
                add_source(&mut sum, &value.stats);
                if closing != 0 && value.sketch.epochs[slot] == closing {
                    marked = true;
                    or_into(&mut ports, &value.sketch.ports[slot]);
                    or_into(&mut hosts, &value.sketch.hosts[slot]);
                }
            }
            snapshot.sources.push(SourceReading {
                key,
                stats: sum,
                spread: marked.then(|| Spread {
                    ports: linear_count(&ports),
                    hosts: linear_count(&hosts),
                }),
            });
        };
        let (name, values_per_entry) = match self.source_map {
            SourceMap::Shared => (SHARED_SOURCES_MAP, 1),
            SourceMap::Auto | SourceMap::PerCpu => (SOURCES_MAP, self.cpus),
        };
        let sources_map = self
            .ebpf
            .map(name)
            .ok_or(DatapathError::Missing("sources map"))?;
        let batched = match (&self.harvest, sources_map) {
            (
                Harvest::Batch,
                aya::maps::Map::PerCpuLruHashMap(data) | aya::maps::Map::LruHashMap(data),
            ) => batch::for_each(data.fd().as_fd(), values_per_entry, &mut fold),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        if let Ok(in_kernel) = batched {
            self.last_kernel_read = in_kernel;
        }
        if let Err(err) = batched {
            if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) {
                return Err(DatapathError::Harvest(err));
            }
            // No batch operations on this kernel (or asked not to): one entry at a time.
            self.harvest = Harvest::PerKey;
            self.last_kernel_read = Duration::ZERO;
            if self.source_map == SourceMap::Shared {
                let sources: AyaHashMap<&MapData, SourceKey, SourceValue> =
                    AyaHashMap::try_from(sources_map)?;
                for entry in sources.iter() {
                    match entry {
                        Ok((key, value)) => fold(key, &[value]),
                        Err(MapError::KeyNotFound) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
            } else {
                let sources: PerCpuHashMap<&MapData, SourceKey, SourceValue> =
                    PerCpuHashMap::try_from(sources_map)?;
                for entry in sources.iter() {
                    let (key, per_cpu) = match entry {
                        Ok(entry) => entry,
                        Err(MapError::KeyNotFound) => continue,
                        Err(err) => return Err(err.into()),
                    };
                    let values: Vec<SourceValue> = per_cpu.iter().copied().collect();
                    fold(key, &values);
                }
            }
        }
        // Globals after sources: a packet counted in a source read above is in the globals too.
        let globals_map = self
            .ebpf
            .map(GLOBALS_MAP)
            .ok_or(DatapathError::Missing("globals map"))?;
        let globals: PerCpuArray<&MapData, GlobalStats> = PerCpuArray::try_from(globals_map)?;
        for stats in globals.get(&0, 0)?.iter() {
            add_globals(&mut snapshot.globals, stats);
        }
        self.last_sources = snapshot.sources.len();
        Ok(snapshot)
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and returns its verdict.
    ///
    /// The maps are updated as for a received frame, which is how captures are replayed and
    /// how the tests check the parser. Frames shorter than an Ethernet header are refused by
    /// the kernel (`EINVAL`).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, DatapathError> {
        run_frame(self.program()?, frame, 1).map(|(verdict, _)| verdict)
    }

    /// Runs the program `repeat` times on `frame`; returns the verdict and the mean time per
    /// run as the kernel measured it.
    pub fn bench(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DatapathError> {
        run_frame(self.program()?, frame, repeat)
    }
}

/// The baselines of the cost benchmarks: the XDP_PASS no-op and the lookup floor (one hash
/// lookup of a fixed source per frame), both from `netwatch-ebpf/src/bin/noop.rs`.
pub struct NoopProgram {
    ebpf: Ebpf,
}

impl NoopProgram {
    /// Loads it.
    pub fn load() -> Result<Self, DatapathError> {
        check_kernel()?;
        Ok(Self {
            ebpf: load_object(
                NOOP_OBJECT,
                &[NOOP_PROGRAM_NAME, LOOKUP_FLOOR_PROGRAM_NAME],
                |_| {},
            )?,
        })
    }

    /// Attaches it to `ifindex` (a stand-in for another tool's program, in tests).
    pub fn attach(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(NOOP_PROGRAM_NAME)
            .ok_or(DatapathError::Missing("noop program"))?
            .try_into()?;
        program.attach_to_if_index(ifindex, XdpMode::Skb)?;
        Ok(())
    }

    /// As [`Datapath::bench`], for the no-op.
    pub fn bench(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DatapathError> {
        self.run(NOOP_PROGRAM_NAME, frame, repeat)
    }

    /// As [`Datapath::bench`], for the lookup floor.
    pub fn bench_lookup_floor(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        self.run(LOOKUP_FLOOR_PROGRAM_NAME, frame, repeat)
    }

    fn run(
        &self,
        name: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()?;
        run_frame(program, frame, repeat)
    }
}

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

/// Creates the maps of `object` and loads (verifies) its `programs`.
fn load_object(
    object: &[u8],
    programs: &[&'static str],
    configure: impl FnOnce(&mut EbpfLoader<'_>),
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

fn add_source(sum: &mut SourceStats, stats: &SourceStats) {
    let SourceStats {
        packets,
        bytes,
        tcp_packets,
        udp_packets,
        icmp_packets,
        other_packets,
        tcp_syn_packets,
    } = stats;
    sum.packets += packets;
    sum.bytes += bytes;
    sum.tcp_packets += tcp_packets;
    sum.udp_packets += udp_packets;
    sum.icmp_packets += icmp_packets;
    sum.other_packets += other_packets;
    sum.tcp_syn_packets += tcp_syn_packets;
}

fn add_globals(sum: &mut GlobalStats, stats: &GlobalStats) {
    let GlobalStats {
        total_packets,
        total_bytes,
        non_ip_packets,
        non_ip_bytes,
        malformed_packets,
        malformed_bytes,
        overflow_packets,
        overflow_bytes,
        truncated_packets,
        sampled_packets,
        sample_capped_packets,
        sample_ring_full_packets,
    } = stats;
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
        // 160-byte values: 65,536 sources take 10 MiB per CPU, so 51 CPUs fit in 512 MiB.
        assert_eq!(size_of::<SourceValue>(), 160);
        let auto = |sources, cpus| SourceMap::Auto.resolve(sources, cpus, true);
        assert_eq!(auto(65_536, 2), SourceMap::PerCpu);
        assert_eq!(auto(65_536, 51), SourceMap::PerCpu);
        assert_eq!(auto(65_536, 52), SourceMap::Shared);
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
