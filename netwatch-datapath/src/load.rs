//! Loading: the compiled objects, the kernels netwatch runs on, the load-time options
//! ([`LoadOptions`], [`SourceMap`]) and [`Datapath::load`], which creates the maps, verifies
//! the programs, has the kernel fill the queue of free slots and maps the arrays into this
//! process; a verifier's rejection or a missing privilege becomes a readable error. The
//! benchmarks' programs (`BenchPrograms`, feature `bench`) load through the same
//! [`load_object`].

use std::{io, os::fd::AsFd as _};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuValues, ProgramArray, RingBuf},
    programs::{ProgramError, Xdp},
    util::KernelVersion,
};
use aya_log::EbpfLogger;
use netwatch_common::{
    BAN_COUNTS_MAP, BANS_V4_MAP, BANS_V6_MAP, CAPTURE_CHECK_MAP, CAPTURE_KEEP_MAP,
    CAPTURE_KEEP_PROGRAM_NAME, CAPTURE_PROGRAM_NAME, CAPTURE_SAMPLED_PROGRAM_NAME, CPU_STATE_MAP,
    CpuState, DESTINATION_BUCKETS, DESTINATION_OTHER_MAP, DESTINATIONS_MAP, FILTER_SEED_GLOBAL,
    FILTER_WORD_BITS_GLOBAL, FREE_SLOTS_MAP, INTEL_CHECK_MAP, INTEL_PROGRAM_NAME,
    INTEL_SAMPLED_PROGRAM_NAME, MAX_RULES, NO_BANS_PROGRAM_NAME, OVERFLOW_WINDOWS_MAP,
    QUEUE_JOB_MAP, QUEUE_PROGRAM_NAME, QueueJob, RULE_CHECK_MAP, RULES_PROGRAM_NAME,
    RULES_SAMPLED_PROGRAM_NAME, RULES_V4_MAP, RULES_V6_MAP, SAMPLER_MAP, SAMPLER_PROGRAM_NAME,
    SAMPLES_MAP, SLOT_CAPACITY_GLOBAL, SLOT_FILTER_MAP, SLOT_KEYS_MAP, SOURCE_SLOTS_MAP,
    SOURCE_VALUES_MAP, STAGED_SLOTS_MAP, Settings,
};

use super::{
    bans::ban_counters,
    destinations::DestinationWindows,
    error::DatapathError,
    handle::Datapath,
    handle::{QueueJobs, Reclaim},
    overflow::Windows,
    rules::RuleTable,
    samples::SampleRing,
    slots::{FilterShape, Slots},
    snapshot::queue_slots,
    source_map::SourceMap,
};

/// The compiled XDP programs, embedded at build time by `build.rs`.
static NETWATCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netwatch-xdp"));
/// The benchmarks' programs, with the feature `bench` only.
#[cfg(feature = "bench")]
pub(super) static NOOP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/noop-xdp"));

/// XDP through a BPF link (`bpf_link_create` with `BPF_XDP`) arrived in Linux 5.9.
pub const MIN_KERNEL: KernelVersion = KernelVersion::new(5, 9, 0);

/// The shared source map sets sketch bits with an atomic OR (`BPF_ATOMIC | BPF_OR`), which
/// arrived in Linux 5.12.
pub const MIN_KERNEL_SHARED: KernelVersion = KernelVersion::new(5, 12, 0);

/// Lines of the verifier log kept in a rejection error: the end says why.
const VERIFIER_LOG_TAIL: usize = 25;

/// Load-time settings.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Slots for sources.
    pub max_sources: u32,
    /// Per-CPU or shared values of the sources.
    pub source_map: SourceMap,
    /// Room to count the hosts of local networks (see [`Datapath::set_local_networks`]):
    /// about 1 MiB of kernel memory per possible CPU. Without it, the maps have one
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
            // A network per rule, and /0 for the rules of any destination.
            loader.map_max_entries(RULES_V4_MAP, MAX_RULES as u32 + 1);
            loader.map_max_entries(RULES_V6_MAP, MAX_RULES as u32 + 1);
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
        install_tails(&mut ebpf)?;
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
            rules: RuleTable::default(),
        };
        datapath.set_epoch(1)?;
        Ok(datapath)
    }

    /// Whether it was loaded with room for destinations ([`LoadOptions::destinations`]).
    pub fn counts_destinations(&self) -> bool {
        self.destinations.is_some()
    }

    /// Slots for sources.
    pub fn max_sources(&self) -> u32 {
        self.max_sources
    }

    /// The layout of the sources' values in use (per-CPU or shared).
    pub fn source_map(&self) -> SourceMap {
        self.source_map
    }
}

/// The running kernel's version, if netwatch can run on it.
pub(super) fn check_kernel() -> Result<KernelVersion, DatapathError> {
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
pub(super) fn load_object<'a>(
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

/// Loads the sampler program, the rules' check, the capture and the indicators' check (both
/// of each), each in its
/// slot of the program array the main program (or another tail) tail-calls it through.
fn install_tails(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    for (program, map, slot, what) in [
        (
            SAMPLER_PROGRAM_NAME,
            SAMPLER_MAP,
            0,
            "sampler program array",
        ),
        (
            RULES_PROGRAM_NAME,
            RULE_CHECK_MAP,
            0,
            "rules' program array",
        ),
        (
            RULES_SAMPLED_PROGRAM_NAME,
            RULE_CHECK_MAP,
            1,
            "rules' program array",
        ),
        (
            CAPTURE_PROGRAM_NAME,
            CAPTURE_CHECK_MAP,
            0,
            "captures' program array",
        ),
        (
            CAPTURE_SAMPLED_PROGRAM_NAME,
            CAPTURE_CHECK_MAP,
            1,
            "captures' program array",
        ),
        (
            CAPTURE_KEEP_PROGRAM_NAME,
            CAPTURE_KEEP_MAP,
            0,
            "captures' second program array",
        ),
        (
            INTEL_PROGRAM_NAME,
            INTEL_CHECK_MAP,
            0,
            "indicators' program array",
        ),
        (
            INTEL_SAMPLED_PROGRAM_NAME,
            INTEL_CHECK_MAP,
            1,
            "indicators' program array",
        ),
    ] {
        install_tail(ebpf, program, map, slot, what)?;
    }
    Ok(())
}

/// Loads `program` and puts it in slot `slot` of the program array `map` (`what`, for
/// errors).
fn install_tail(
    ebpf: &mut Ebpf,
    program: &'static str,
    map: &str,
    slot: u32,
    what: &'static str,
) -> Result<(), DatapathError> {
    let sampler: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or(DatapathError::Missing(program))?
        .try_into()?;
    verify(sampler, program)?;
    let fd = sampler.fd()?.try_clone().map_err(|err| {
        DatapathError::Program(ProgramError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: err,
        }))
    })?;
    let map = ebpf.map_mut(map).ok_or(DatapathError::Missing(what))?;
    let mut slots: ProgramArray<&mut MapData> = ProgramArray::try_from(map)?;
    slots.set(slot, &fd, 0)?;
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
