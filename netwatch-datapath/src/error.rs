//! The datapath's errors, each meant to be shown to the user as it is.

use std::io;

use aya::{EbpfError, maps::MapError, programs::ProgramError, util::KernelVersion};

use super::netlink::XdpAttached;

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
    /// A ban's index past the room loaded for bans.
    #[error("ban counter {index} is past those of the {max_bans} bans loaded (mitigate.max_bans)")]
    BanIndex {
        /// The index asked for.
        index: u32,
        /// Room for bans.
        max_bans: u32,
    },
    /// The kernel is older than [`MIN_KERNEL`](super::MIN_KERNEL).
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
    ///
    /// [`MIN_KERNEL_SHARED`]: super::MIN_KERNEL_SHARED
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
    /// The kernel gave no random bytes for the filter's seed.
    #[error("cannot draw the random seed of the filter of addresses with a slot: {0}")]
    Seed(#[source] io::Error),
    /// Reading the list of CPUs failed.
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(#[source] io::Error),
    /// Mapping the source slot arrays into memory failed.
    #[error("cannot map the source slot arrays into memory: {0}")]
    MapSlots(#[source] io::Error),
    /// A signature rule's index past the kernel's room.
    /// A capture's index past the kernel's room.
    #[error("capture {index} is past the kernel's {most} captures")]
    CaptureIndex {
        /// The index asked for.
        index: u32,
        /// Room for captures.
        most: usize,
    },
    #[error("rule {index}: the kernel holds rules 0 to {}", most.saturating_sub(1))]
    RuleIndex {
        /// The index given.
        index: u32,
        /// How many rules the kernel holds.
        most: usize,
    },
    /// More sources exempt from the rules than the kernel holds.
    #[error("{given} networks exempt from the rules; at most {most} of each family")]
    RuleExemptions {
        /// How many of one family were given.
        given: usize,
        /// The most.
        most: u32,
    },
    /// More rules that apply to one destination than the kernel checks.
    #[error("more than {most} rules would apply to {addr}/{len}; remove one first")]
    RulesPerDestination {
        /// The network.
        addr: std::net::IpAddr,
        /// Its prefix length.
        len: u8,
        /// The most.
        most: usize,
    },
    /// A signature rule's destination that is not a network.
    #[error("rule destination {addr}/{len}: not a network (host bits set, or too long a prefix)")]
    RuleDestination {
        /// The address given.
        addr: std::net::IpAddr,
        /// Its prefix length.
        len: u8,
    },
    /// A destination sampling that is not a power of two or is too sparse.
    #[error(
        "destinations sampled one frame in {given}: it must be 0 (off) or a power of two up to {most}"
    )]
    DestinationSample {
        /// What was given.
        given: u32,
        /// The sparsest.
        most: u32,
    },
    /// More local networks than the kernel side holds.
    #[error("{given} local networks; at most {most} can be set")]
    TooManyLocalNetworks {
        /// How many were given.
        given: usize,
        /// The most.
        most: usize,
    },
    /// The filler program queued fewer free slots than asked.
    #[error("queued {queued} of {slots} free slots at load time")]
    FillSlots {
        /// Slots queued.
        queued: u32,
        /// Slots asked for.
        slots: u32,
    },
    /// Reclaiming the slots of idle sources failed.
    #[error("cannot reclaim the slots of idle sources: {0}")]
    Reclaim(#[source] io::Error),
    /// The values of so many sources on so many CPUs do not fit a BPF array.
    #[error(
        "{max_sources} sources on {cpus} CPUs are too many for one per-CPU array: lower --max-sources or use --source-map shared"
    )]
    TooManySources {
        /// The capacity asked for.
        max_sources: u32,
        /// Possible CPUs.
        cpus: usize,
    },
    /// Pinning failed.
    #[error("cannot pin: {0}")]
    Pin(#[source] aya::pin::PinError),
    /// A map operation failed.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// Whether a map refused a key because it is not there: aya 0.14 says so as
/// [`MapError::KeyNotFound`] on a lookup, and as the syscall's `ENOENT` on a delete.
pub(super) fn not_found(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(err) => err.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
