//! The netwatch XDP program.
//!
//! For every frame: parse Ethernet, at most two VLAN tags, IPv4 or IPv6 (with a bounded walk
//! over extension headers) and the TCP flags; then count the frame once in the global counters
//! and once for its source address, or in exactly one blind-spot counter (non-IP, malformed,
//! overflow). The program only reads the frame and returns `XDP_PASS`, except for a frame from
//! a source the opt-in ban list holds while userspace has set [`BAN_MODE_DROP`]: that one is
//! counted as every frame, counted for its ban, and dropped. It must not log or loop without
//! bound: it runs for every packet of a busy link.
#![no_std]
#![no_main]
// Atomic add and OR on map values: the BPF target has no `Atomic*` read-modify-write methods,
// but LLVM's BPF backend implements these intrinsics.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::{
    intrinsics::{AtomicOrdering, atomic_or, atomic_xadd},
    mem::MaybeUninit,
};

mod parse;

use self::parse::{
    Class, MAX_L4_OFFSET, Parsed, Verdict, bytes, is_connection_attempt, parse, transport_ports,
};
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, xdp_action},
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, ProgramArray, Queue, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use aya_log_ebpf::{debug, warn};
use netwatch_common::{
    BAN_MODE_DROP, BAN_MODE_NONE, Counter, CpuState, DEFAULT_MAX_SOURCES,
    DEFAULT_SAMPLE_RING_BYTES, DESTINATION_BUCKETS, DESTINATION_SENDERS, DESTINATION_SOURCE_BITS,
    DestinationBucket, EARLY_REPOST_NS, EARLY_SLOTS, EarlyCount, EarlyEvent, FAMILY_IPV4,
    FAMILY_IPV6, GlobalStats, HOST_BITMAP_BITS, LocalNetworks, MAX_LOCAL_NETWORKS,
    OVERFLOW_BUCKETS, OVERFLOW_PROBES, OverflowWindow, PORT_BITMAP_BITS, PrefixCount, QueueJob,
    SAMPLE_MAX_SNAP_LEN, SAMPLE_PORT_WORDS, SAMPLE_REASON_ALL_TCP, SAMPLE_REASON_EARLY,
    SAMPLE_REASON_PORT, SOURCE_CACHE_ENTRIES, Sample, SampleHeader, Settings, SourceKey,
    SourceSketch, SourceStats, SourceValue, TARGET_FRAGMENT, TARGET_HIGH_PORTS, TARGET_ICMP,
    TARGET_OTHER, TARGET_REFLECTED, TARGET_SYN, TARGET_TCP, TARGET_UDP, TargetKey, TokenBucket,
    WIRE_LENGTH_MAGIC, WireLength, filter_probe, mix64,
};

/// Source address -> its slot in [`SOURCE_VALUES`] and [`SLOT_KEYS`]. A plain hash map: an
/// entry leaves only when userspace reclaims the slot of a source gone idle, never behind its
/// back, so that every slot in use has exactly one key. Packets only read it, except the first
/// packet of a source, which inserts. Userspace sets the capacity at load time
/// (`--max-sources`).
#[map]
static SOURCE_SLOTS: HashMap<SourceKey, u32> = HashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

/// The value of each slot, in regions of [`SLOT_CAPACITY`] slots: for [`netwatch`] one region
/// per possible CPU (CPU `c` writes slot `s` at `c * SLOT_CAPACITY + s`, with plain adds), for
/// [`netwatch_shared`] a single region updated with atomic adds. Memory-mappable: userspace
/// reads every counter in place, without the kernel walking a hash table, and clears the
/// slots it reclaims.
#[map]
static SOURCE_VALUES: Array<SourceValue> =
    Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

/// The source address of each slot, written once a packet that took the slot has put the
/// address in [`SOURCE_SLOTS`]; zero while the slot is free. Memory-mappable.
#[map]
static SLOT_KEYS: Array<SourceKey> = Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

/// The filter of addresses with a slot: three bits of one word per address
/// ([`filter_probe`]), in two halves of `1 << FILTER_WORD_BITS` words. The program sets an
/// address's bits in both before it inserts the address, and again once the slot's key is
/// written, so a clear bit means no slot; bits all set may be others'. While the free-slot
/// queue is known empty, a frame with a clear bit is overflow at once:
/// no look into the source cache, whose check reads a slot's key, nor into the address map.
/// Userspace rebuilds the half not in use from the slots' keys after a reclaim (addresses
/// taken back leave their bits behind) and switches to it. Memory-mappable.
#[map]
static SLOT_FILTER: Array<u64> = Array::with_max_entries(
    2 << netwatch_common::filter_word_bits(DEFAULT_MAX_SOURCES),
    BPF_F_MMAPABLE,
);

/// Banned IPv4 networks: the address (network byte order) to the ban's index in
/// [`BAN_COUNTS`]. Written by userspace only; looked at only while [`Settings::ban_mode`] is
/// not [`BAN_MODE_NONE`]. Userspace sets the capacity at load time (`mitigate.max_bans`).
#[map]
static BANS_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(1, 0);

/// Banned IPv6 networks, as [`BANS_V4`].
#[map]
static BANS_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1, 0);

/// The frames each ban matched, per CPU, by the ban's index: exact, as every other counter.
#[map]
static BAN_COUNTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(1, 0);

/// Slots not in use: every slot at load time, then the slots userspace takes back (both
/// queued by [`queue_free_slots`]).
#[map]
static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(DEFAULT_MAX_SOURCES, 0);

/// Traffic without a slot, broken down by source prefix and destination: two windows per
/// possible CPU ([`CpuState::windows`]), CPU `c` writing window `2c + (overflow_window & 1)`
/// while userspace reads and clears the other. Memory-mappable; userspace sets the size at
/// load time.
#[map]
static OVERFLOW_WINDOWS: Array<OverflowWindow> = Array::with_max_entries(2, BPF_F_MMAPABLE);

/// Local hosts' traffic: [`DESTINATION_BUCKETS`] buckets per window, two windows per
/// possible CPU (window `w` of CPU `c` is the `2c + w`-th run of buckets), read and cleared
/// by userspace as the overflow windows. Memory-mappable; userspace sets the size at load
/// time.
#[map]
static DESTINATIONS: Array<DestinationBucket> =
    Array::with_max_entries(2 * DESTINATION_BUCKETS as u32, BPF_F_MMAPABLE);

/// Per destination window: frames to a local host that found no bucket.
#[map]
static DESTINATION_OTHER: Array<Counter> = Array::with_max_entries(2, BPF_F_MMAPABLE);

/// The local networks, [`Settings::local_networks`] of them. Global data, as [`SETTINGS`].
#[unsafe(link_section = ".data.networks")]
#[unsafe(no_mangle)]
static mut LOCAL_NETWORKS: LocalNetworks = LocalNetworks {
    v4: [0; MAX_LOCAL_NETWORKS],
    v6: [[0; 4]; MAX_LOCAL_NETWORKS],
};

/// What [`queue_free_slots`] does, written by userspace before it runs the program.
#[map]
static QUEUE_JOB: Array<QueueJob> = Array::with_max_entries(1, 0);

/// Slots taken back, staged by userspace for [`queue_free_slots`]; u64 because userspace
/// writes them through memory, where array elements are 8 bytes apart. Memory-mappable.
#[map]
static STAGED_SLOTS: Array<u64> = Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

/// Slots per region of [`SOURCE_VALUES`]: the capacity of [`SOURCE_SLOTS`]. Set by userspace at
/// load time; read-only, so the verifier knows it.
#[unsafe(no_mangle)]
static SLOT_CAPACITY: u32 = DEFAULT_MAX_SOURCES;

/// The seed of the filter's hash, drawn by userspace at load time; read-only.
#[unsafe(no_mangle)]
static FILTER_SEED: u64 = 0;

/// The base-2 logarithm of the words of each half of [`SLOT_FILTER`]: set by userspace at load
/// time from the slots ([`netwatch_common::filter_word_bits`]); read-only.
#[unsafe(no_mangle)]
static FILTER_WORD_BITS: u32 = netwatch_common::filter_word_bits(DEFAULT_MAX_SOURCES);

/// Each CPU's counters and source cache, at index 0.
#[map]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Run-time settings, written by userspace. Global data in a section of its own, which the
/// loader makes a one-entry array map: the program reads it at a fixed address, without the
/// lookup (a few nanoseconds per packet) an entry of a map of its own would cost.
#[unsafe(link_section = ".data.settings")]
#[unsafe(no_mangle)]
static mut SETTINGS: Settings = Settings {
    epoch: 0,
    sample_rate: 0,
    sample_burst: 0,
    sample_all_tcp: 0,
    attack_types: 1,
    sample_snap_len: netwatch_common::DEFAULT_SAMPLE_SNAP_LEN,
    free_generation: 0,
    overflow_window: 0,
    local_networks: 0,
    early_packets: 0,
    early_slot_ns: 0,
    early_batch: 0,
    local_v4: 0,
    filter_half: 0,
    ban_mode: BAN_MODE_NONE,
};

/// The frames of the current early slot, all CPUs together. Global data, as [`SETTINGS`].
#[unsafe(link_section = ".data.early")]
#[unsafe(no_mangle)]
static mut EARLY: EarlyCount = EarlyCount {
    packets: 0,
    slot_start_ns: 0,
    posted_ns: 0,
    run_slots: 0,
    run_start_ns: 0,
    run_packets: 0,
};

/// Sampled frames for userspace to inspect.
#[map]
static SAMPLES: RingBuf = RingBuf::with_byte_size(DEFAULT_SAMPLE_RING_BYTES, 0);

/// Where the sampler builds a sample: header and frame, copied to [`SAMPLES`] as long as they
/// are (a reservation in the ring must have a size known when the program is verified, which
/// would make every record as large as the largest sample).
#[map]
static SAMPLE_SCRATCH: PerCpuArray<Sample> = PerCpuArray::with_max_entries(1, 0);

/// Ports whose packets are sampled: TCP words first, then UDP. Global data, as [`SETTINGS`].
#[unsafe(link_section = ".data.ports")]
#[unsafe(no_mangle)]
static mut SAMPLE_PORTS: [u64; 2 * SAMPLE_PORT_WORDS as usize] =
    [0; 2 * SAMPLE_PORT_WORDS as usize];

/// UDP source ports of amplification services (DNS, NTP, memcached ...): a datagram from one
/// of them counts as [`netwatch_common::SourceStats::reflected_packets`]. Global data, as [`SETTINGS`]; bit
/// `port % 64` of word `port / 64`.
#[unsafe(link_section = ".data.reflection")]
#[unsafe(no_mangle)]
static mut REFLECTION_PORTS: [u64; SAMPLE_PORT_WORDS as usize] = [0; SAMPLE_PORT_WORDS as usize];

/// The sampling token bucket of each CPU.
#[map]
static SAMPLE_BUCKETS: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// What the sampler needs to know of a frame, passed through a per-CPU slot.
///
/// Sampling runs in a second XDP program reached by a tail call, so that the verifier checks
/// it once, on its own: inlined after the parser, it was verified again for every parse path
/// (each IPv6 extension-header walk ends with a different, exactly known L4 offset) and the
/// whole exceeded the verifier's budget.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct SampleJob {
    l4_offset: u32,
    /// 1 for TCP, 2 for UDP.
    protocol: u32,
    /// [`SAMPLE_REASON_PORT`] or [`SAMPLE_REASON_ALL_TCP`].
    reason: u32,
}

/// Scratch slot for [`SampleJob`].
#[map]
static SAMPLE_JOBS: PerCpuArray<SampleJob> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: the sampler program, installed by userspace after loading.
#[map]
static SAMPLER: ProgramArray = ProgramArray::with_max_entries(1, 0);

const JOB_TCP: u32 = 1;
const JOB_UDP: u32 = 2;

const NANOS_PER_TOKEN: u64 = 1_000_000_000;
/// Refill at most ten seconds' worth at once, so that `elapsed * rate` cannot overflow.
const MAX_REFILL_NS: u64 = 10_000_000_000;

/// What a frame adds to its source.
struct Contribution {
    class: Class,
    syn: bool,
    fragment: bool,
    /// The UDP source port when it is an amplification service's, else 0.
    reflected_port: u16,
    len: u64,
    dst_fold: u32,
    dst_port: Option<u16>,
}

/// Counts every frame, each source in its CPU's region of [`SOURCE_VALUES`], and passes it
/// on; hands frames to sample over to the sampler.
#[xdp]
pub fn netwatch(ctx: XdpContext) -> u32 {
    run::<PerCpu, true>(&ctx)
}

/// [`netwatch`] with one value per source for all CPUs, updated with atomic adds.
#[xdp]
pub fn netwatch_shared(ctx: XdpContext) -> u32 {
    run::<Shared, true>(&ctx)
}

/// [`netwatch`] built without the ban check, never attached: the benchmarks time it beside
/// [`netwatch`] to measure what the check costs while no ban exists.
#[xdp]
pub fn netwatch_nobans(ctx: XdpContext) -> u32 {
    run::<PerCpu, false>(&ctx)
}

#[inline(always)]
fn run<T: SourceTable, const BANS: bool>(ctx: &XdpContext) -> u32 {
    // Written only for a frame with a source while bans exist: nothing to do per frame
    // otherwise but the comparison below.
    let mut banned = MaybeUninit::<Banned>::uninit();
    let mut mode = BAN_MODE_NONE;
    let sample = account::<T, BANS>(ctx, &mut banned, &mut mode);
    // Counted above as every frame, so the monitor still sees a banned source's attack and
    // the blind-spot identity holds; only then is the frame dropped. Here, after every path
    // of the count has joined, the verifier walks the check once rather than on each.
    if BANS && mode != BAN_MODE_NONE {
        // SAFETY: `account` writes `banned` whenever it sets a mode.
        let banned = unsafe { banned.assume_init_ref() };
        if count_ban(&banned.key, banned.len) && mode == BAN_MODE_DROP {
            return xdp_action::XDP_DROP;
        }
    }
    if sample {
        // SAFETY: a tail call with this program's own context. On success it does not
        // return; if the slot is empty it returns and the frame simply passes unsampled.
        unsafe { SAMPLER.tail_call(ctx, 0) };
    }
    xdp_action::XDP_PASS
}

/// What the ban check needs of a frame with a source: its address and its length.
struct Banned {
    key: SourceKey,
    len: u64,
}

/// Queues one slot of the [`QueueJob`] into [`FREE_SLOTS`] and advances the job. Userspace
/// runs it with BPF_PROG_TEST_RUN, as many times as the job has slots (it is never attached):
/// a few dozen nanoseconds per slot in the kernel instead of a syscall each.
#[xdp]
pub fn queue_free_slots(ctx: XdpContext) -> u32 {
    let Some(job) = QUEUE_JOB.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: an array element; userspace runs this program alone, on one CPU.
    let job = unsafe { &mut *job };
    if job.next >= job.end {
        return xdp_action::XDP_PASS;
    }
    let slot = if job.staged == 0 {
        job.next
    } else {
        match STAGED_SLOTS.get(job.next) {
            Some(&slot) => slot as u32,
            None => return xdp_action::XDP_PASS,
        }
    };
    // The one diagnostic of the kernel side (aya-log), written while slots are queued at
    // load and at a reclaim: never on a packet's path.
    if FREE_SLOTS.push(slot, 0).is_ok() {
        job.next += 1;
        if job.next == job.end {
            debug!(&ctx, "the kernel queued free slots up to {}", job.end);
        }
    } else if job.warned == 0 {
        // The runs left of this job would say it again: once is enough.
        job.warned = 1;
        warn!(
            &ctx,
            "the free-slot queue refused slot {}: it waits for the next reclaim", slot
        );
    }
    xdp_action::XDP_PASS
}

/// The tail of [`netwatch`] for frames that may be sampled. Always passes the frame.
#[xdp]
pub fn netwatch_sampler(ctx: XdpContext) -> u32 {
    let settings = settings();
    if let Some(state) = CPU_STATE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array.
        sample(&ctx, &settings, unsafe { &mut (*state).globals });
    }
    xdp_action::XDP_PASS
}

/// Counts the frame; true when it is a candidate for sampling (its job is written). While
/// bans exist, a frame with a source leaves what the ban check needs in `banned` and what a
/// match meets in `mode` ([`Settings::ban_mode`]).
#[inline(always)]
fn account<T: SourceTable, const BANS: bool>(
    ctx: &XdpContext,
    banned: &mut MaybeUninit<Banned>,
    mode: &mut u32,
) -> bool {
    let len = frame_len(ctx);
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return false;
    };
    let settings = settings();
    // SAFETY: a per-CPU array slot, only this CPU writes it while the program runs.
    let CpuState {
        globals,
        region,
        overflow_reflected_port,
        free_empty_at,
        windows,
        early_pending,
        _pad,
        source_cache,
    } = unsafe { &mut *state };
    globals.total_packets += 1;
    globals.total_bytes += len;
    if settings.early_packets != 0 {
        *early_pending += 1;
        if *early_pending >= settings.early_batch {
            early_check(ctx, *early_pending, &settings);
            *early_pending = 0;
        }
    }
    match parse(ctx) {
        Verdict::NonIp => {
            globals.non_ip_packets += 1;
            globals.non_ip_bytes += len;
        }
        Verdict::Malformed => {
            globals.malformed_packets += 1;
            globals.malformed_bytes += len;
        }
        Verdict::Source(parsed) => {
            if parsed.truncated {
                globals.truncated_packets += 1;
            }
            let carries_ports =
                parsed.first_fragment && matches!(parsed.class, Class::TcpFirst | Class::Udp);
            let ports = if carries_ports {
                transport_ports(ctx, parsed.l4_offset)
            } else {
                None
            };
            let typed = settings.attack_types != 0;
            let reflected_port = match ports {
                Some((src, _)) if typed && parsed.class == Class::Udp && reflection_port(src) => {
                    src
                }
                _ => 0,
            };
            let contribution = Contribution {
                class: parsed.class,
                syn: parsed.class == Class::TcpFirst
                    && is_connection_attempt(ctx, parsed.l4_offset),
                fragment: typed && parsed.fragment,
                reflected_port,
                len,
                dst_fold: parsed.dst_fold,
                dst_port: ports.map(|(_, dst)| dst),
            };
            if settings.local_networks != 0 {
                count_destination(
                    ctx,
                    &parsed,
                    &contribution,
                    &settings,
                    *windows + (settings.overflow_window & 1),
                );
            }
            if !T::count(
                &parsed.key,
                *region,
                &mut Lookup {
                    cache: source_cache,
                    free_generation: settings.free_generation,
                    free_empty_at,
                    filter_half: settings.filter_half,
                },
                &contribution,
                settings.epoch,
            ) {
                count_overflow(globals, overflow_reflected_port, &contribution);
                break_down(
                    ctx,
                    &parsed,
                    &contribution,
                    *windows + (settings.overflow_window & 1),
                );
            }
            if BANS && settings.ban_mode != BAN_MODE_NONE {
                banned.write(Banned {
                    key: parsed.key,
                    len,
                });
                *mode = settings.ban_mode;
            }
            if let Some((src, dst)) = ports
                && settings.sample_rate != 0
            {
                // The port check is here rather than in the sampler so that the frames of
                // other ports, nearly all of them on most links, do not pay for a tail call.
                let tcp = parsed.class == Class::TcpFirst;
                let words = if tcp { 0 } else { SAMPLE_PORT_WORDS };
                let reason = if port_selected(words, src) || port_selected(words, dst) {
                    SAMPLE_REASON_PORT
                } else if tcp && settings.sample_all_tcp != 0 {
                    SAMPLE_REASON_ALL_TCP
                } else {
                    return false;
                };
                if let Some(job) = SAMPLE_JOBS.get_ptr_mut(0) {
                    // SAFETY: this CPU's scratch slot.
                    unsafe {
                        *job = SampleJob {
                            l4_offset: parsed.l4_offset as u32,
                            protocol: if tcp { JOB_TCP } else { JOB_UDP },
                            reason,
                        };
                    }
                    return true;
                }
            }
        }
    }
    false
}

/// A trie key placed so that its address starts 8-aligned on the stack: LLVM merges the
/// address's bytes into 8-byte stores, which the verifier takes only at aligned offsets, and
/// the key's 4-byte prefix length comes first.
#[repr(C, align(8))]
struct AlignedKey<K> {
    _pad: u32,
    key: Key<K>,
}

/// Counts a frame from `key` for the ban whose network holds it, if one does; true then.
/// A function of its own: the verifier walks it once per state it is called in rather than
/// as part of every path through the frame's parse.
#[inline(never)]
fn count_ban(key: &SourceKey, len: u64) -> bool {
    let index = if key.family == FAMILY_IPV4 {
        let [a, b, c, d, ..] = key.addr;
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(32, [a, b, c, d]),
        };
        BANS_V4.get(&lookup.key)
    } else {
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(128, key.addr),
        };
        BANS_V6.get(&lookup.key)
    };
    let Some(&index) = index else {
        return false;
    };
    if let Some(counter) = BAN_COUNTS.get_ptr_mut(index) {
        // SAFETY: this CPU's counter of a per-CPU array.
        add_counter(unsafe { &mut *counter }, len);
    }
    true
}

/// Adds a CPU's batch of frames to the shared early count; when the count reaches the limit,
/// starts a new slot, and once slots in a row have each filled within their time for the
/// time of [`EARLY_SLOTS`] slots, says so in the sample ring (at most once per [`EARLY_REPOST_NS`]). A helper call once per limit's worth of frames,
/// an atomic add once per batch: nothing per frame but an add and a comparison.
#[inline(never)]
fn early_check(ctx: &XdpContext, batch: u32, settings: &Settings) {
    let early = &raw mut EARLY;
    // SAFETY: global data every CPU updates: the count with atomic adds; the slot's start and
    // the last post with plain stores, which may race (two CPUs starting a slot at once, a
    // batch lost to a reset), at the cost of a slot measured a little long or short.
    unsafe {
        add(&raw mut (*early).packets, u64::from(batch));
        let packets = (&raw const (*early).packets).read_volatile();
        if packets < u64::from(settings.early_packets) {
            return;
        }
        let now = bpf_ktime_get_ns();
        let start = (&raw const (*early).slot_start_ns).read_volatile();
        (&raw mut (*early).packets).write_volatile(0);
        (&raw mut (*early).slot_start_ns).write_volatile(now);
        let run_slots = &raw mut (*early).run_slots;
        let run_start = &raw mut (*early).run_start_ns;
        let run_packets = &raw mut (*early).run_packets;
        if now.wrapping_sub(start) > u64::from(settings.early_slot_ns) {
            // Too slow: a run starts again with the next slot.
            run_slots.write_volatile(0);
            return;
        }
        if run_slots.read_volatile() == 0 {
            run_start.write_volatile(start);
            run_packets.write_volatile(0);
        }
        let slots = run_slots.read_volatile() + 1;
        run_slots.write_volatile(slots);
        let packets = run_packets.read_volatile() + packets;
        run_packets.write_volatile(packets);
        let elapsed = now.wrapping_sub(run_start.read_volatile());
        // Held for the time of EARLY_SLOTS slots, every slot full in its time: a rate, not a
        // burst (which fills many slots in a few milliseconds).
        if slots < EARLY_SLOTS
            || elapsed < EARLY_SLOTS * u64::from(settings.early_slot_ns)
            || now.wrapping_sub((&raw const (*early).posted_ns).read_volatile()) < EARLY_REPOST_NS
        {
            return;
        }
        // Field by field, each store whole: merged, the compiler's stores of the zeros would
        // straddle 8-byte boundaries of the stack, which the verifier refuses.
        let mut record = core::mem::MaybeUninit::<EarlyRecord>::uninit();
        let at = record.as_mut_ptr();
        (&raw mut (*at).header.time_ns).write_volatile(now);
        (&raw mut (*at).header.ifindex).write_volatile(ctx.ingress_ifindex() as u32);
        (&raw mut (*at).header.captured_len).write_volatile(0);
        (&raw mut (*at).header.original_len).write_volatile(0);
        (&raw mut (*at).header.reason).write_volatile(SAMPLE_REASON_EARLY);
        (&raw mut (*at).event.packets).write_volatile(packets);
        (&raw mut (*at).event.elapsed_ns).write_volatile(elapsed);
        // Handed over in place: a copy would merge the stores again. Said only once it is in
        // the ring: a full ring has the next slot try again. Userspace is woken for this one
        // whatever it has left unread: it is the alert the interval would otherwise wait for.
        if SAMPLES
            .output::<EarlyRecord>(&*at, u64::from(BPF_RB_FORCE_WAKEUP))
            .is_ok()
        {
            (&raw mut (*early).posted_ns).write_volatile(now);
        }
    }
}

/// A record of the sample ring that says the early limit was crossed.
#[repr(C)]
struct EarlyRecord {
    header: SampleHeader,
    event: EarlyEvent,
}

/// The frame's length on the wire: the bytes the program sees, unless a replay put the
/// [`WireLength`] of a longer, snapped or runt captured frame in the metadata in front of it.
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> u64 {
    let meta = ctx.metadata();
    let data = ctx.data();
    if meta + size_of::<WireLength>() <= data {
        // SAFETY: the metadata holds a whole WireLength, checked just above.
        let wire = unsafe { &*(meta as *const WireLength) };
        if wire.magic == WIRE_LENGTH_MAGIC {
            return u64::from(wire.len);
        }
    }
    (ctx.data_end() - data) as u64
}

/// Counts a frame whose source has no slot in this CPU's open [`OverflowWindow`]: by wide and
/// narrow source prefix, by destination and class, and in the distinct-source and
/// distinct-prefix bitmaps. Fixed work: three tables of at most [`OVERFLOW_PROBES`] buckets
/// each and two bits, all in memory of this CPU's own.
#[inline(always)]
fn break_down(ctx: &XdpContext, parsed: &Parsed, contribution: &Contribution, window: u32) {
    let Some(window) = OVERFLOW_WINDOWS.get_ptr_mut(window) else {
        return;
    };
    // SAFETY: this CPU's open window: no other CPU writes it, and XDP runs with preemption
    // off. Userspace reads and clears only the closed one.
    let window = unsafe { &mut *window };
    let len = contribution.len;
    add_counter(&mut window.total, len);
    let [w0, w1, w2] = parsed.key.words();
    // The first eight address bytes as a number, most significant first.
    let high = u64::from_be(w0);
    let ipv4 = parsed.key.family == FAMILY_IPV4;
    let (wide, narrow) = if ipv4 {
        (
            (u64::from(FAMILY_IPV4) << 56) | (high >> 48),
            (u64::from(FAMILY_IPV4) << 56) | (high >> 40),
        )
    } else {
        (
            (u64::from(FAMILY_IPV6) << 56) | (high >> 16),
            (u64::from(FAMILY_IPV6) << 56) | (high >> 8),
        )
    };
    count_prefix(&mut window.wide, &mut window.wide_other, wide, len);
    count_prefix(&mut window.narrow, &mut window.narrow_other, narrow, len);
    set_hashed_bit(
        &mut window.sources,
        mix64(w0 ^ w1.rotate_left(23) ^ w2.rotate_left(47)),
    );
    set_hashed_bit(&mut window.prefixes, mix64(wide));
    match target_of(ctx, parsed, contribution, ipv4) {
        Some(target) => count_target(window, target, len),
        None => add_counter(&mut window.target_other, len),
    }
}

/// Counts a frame to a host of a local network in that host's bucket of this CPU's open
/// destination window: its traffic as a source's, its distinct sources and its top senders.
#[inline(always)]
fn count_destination(
    ctx: &XdpContext,
    parsed: &Parsed,
    contribution: &Contribution,
    settings: &Settings,
    window: u32,
) {
    let ipv4 = parsed.key.family == FAMILY_IPV4;
    let (a, b) = if ipv4 {
        let Some(dst) = bytes::<4>(ctx, parsed.l3_offset + 16) else {
            return;
        };
        (
            u64::from(u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]])),
            0,
        )
    } else {
        let Some(dst) = bytes::<16>(ctx, parsed.l3_offset + 24) else {
            return;
        };
        (
            u64::from_ne_bytes([
                dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], dst[6], dst[7],
            ]),
            u64::from_ne_bytes([
                dst[8], dst[9], dst[10], dst[11], dst[12], dst[13], dst[14], dst[15],
            ]),
        )
    };
    let mut local = false;
    let networks = &raw const LOCAL_NETWORKS;
    if ipv4 {
        for index in 0..MAX_LOCAL_NETWORKS {
            if index as u32 >= settings.local_v4 {
                break;
            }
            // SAFETY: an element of the global, in bounds; userspace rewrites the table
            // whole at run time, and a frame that sees a network half written counts by
            // either.
            let network = unsafe {
                core::ptr::read_volatile((&raw const (*networks).v4).cast::<u64>().add(index))
            };
            if a & (network >> 32) == network & 0xffff_ffff {
                local = true;
                break;
            }
        }
    } else {
        let v6 = settings.local_networks.saturating_sub(settings.local_v4);
        for index in 0..MAX_LOCAL_NETWORKS {
            if index as u32 >= v6 {
                break;
            }
            // SAFETY: as above.
            let [x, y, mx, my] = unsafe {
                core::ptr::read_volatile((&raw const (*networks).v6).cast::<[u64; 4]>().add(index))
            };
            if a & mx == x && b & my == y {
                local = true;
                break;
            }
        }
    }
    if !local {
        return;
    }
    // The last word of a key: the family byte, then zeros.
    let c = u64::from(parsed.key.family);
    let start =
        (mix64(a ^ b.rotate_left(17)) >> (64 - DESTINATION_BUCKETS.trailing_zeros())) as u32;
    let first = window * DESTINATION_BUCKETS as u32;
    for probe in 0..OVERFLOW_PROBES as u32 {
        let index = first + ((start + probe) & (DESTINATION_BUCKETS as u32 - 1));
        let Some(bucket) = DESTINATIONS.get_ptr_mut(index) else {
            return;
        };
        // SAFETY: an element of this CPU's open window: no other CPU writes it.
        let bucket = unsafe { &mut *bucket };
        let [x, y, z] = bucket.key.words();
        if z & 0xff == 0 {
            // A free bucket: zeroed by userspace, and again here, in case a frame of the
            // window before the last one still wrote to it after the clearing.
            bucket.stats = SourceStats::default();
            bucket.sources = [0; DESTINATION_SOURCE_BITS / 64];
            bucket.senders = [PrefixCount::default(); DESTINATION_SENDERS];
            bucket.key = SourceKey::from_u64_words([a, b, c]);
        } else if !(x == a && y == b && z == c) {
            continue;
        }
        bump_stats(&mut bucket.stats, contribution);
        let [s0, s1, s2] = parsed.key.words();
        set_hashed_bit(
            &mut bucket.sources,
            mix64(s0 ^ s1.rotate_left(23) ^ s2.rotate_left(47)),
        );
        let high = u64::from_be(s0);
        let sender = if ipv4 {
            (u64::from(FAMILY_IPV4) << 56) | (high >> 40)
        } else {
            (u64::from(FAMILY_IPV6) << 56) | (high >> 16)
        };
        count_sender(&mut bucket.senders, sender, contribution.len);
        return;
    }
    if let Some(other) = DESTINATION_OTHER.get_ptr_mut(window) {
        // SAFETY: this CPU's open window's counter.
        add_counter(unsafe { &mut *other }, contribution.len);
    }
}

/// Space-Saving: adds a frame to `key` among the senders, or gives it the place of the one
/// with the fewest packets, starting from that count.
#[inline(always)]
fn count_sender(senders: &mut [PrefixCount; DESTINATION_SENDERS], key: u64, len: u64) {
    let mut smallest = 0;
    let mut fewest = u64::MAX;
    for (index, sender) in senders.iter_mut().enumerate() {
        if sender.key == key {
            add_counter(&mut sender.traffic, len);
            return;
        }
        if sender.traffic.packets < fewest {
            fewest = sender.traffic.packets;
            smallest = index;
        }
    }
    if let Some(sender) = senders.get_mut(smallest) {
        sender.key = key;
        add_counter(&mut sender.traffic, len);
    }
}

#[inline(always)]
fn add_counter(counter: &mut Counter, len: u64) {
    counter.packets += 1;
    counter.bytes += len;
}

/// Sets the bit the top bits of `hash` name in `bitmap`.
#[inline(always)]
fn set_hashed_bit<const WORDS: usize>(bitmap: &mut [u64; WORDS], hash: u64) {
    let bits = (WORDS * 64).trailing_zeros();
    let bit = (hash >> (64 - bits)) as usize;
    if let Some(word) = bitmap.get_mut((bit >> 6) & (WORDS - 1)) {
        *word |= 1 << (bit & 63);
    }
}

/// Adds a frame to `key`'s bucket of `table`, taking a free one of the [`OVERFLOW_PROBES`]
/// from its hash's on; to `other` when those are all another key's.
#[inline(always)]
fn count_prefix(
    table: &mut [PrefixCount; OVERFLOW_BUCKETS],
    other: &mut Counter,
    key: u64,
    len: u64,
) {
    let start = (mix64(key) >> (64 - OVERFLOW_BUCKETS.trailing_zeros())) as usize;
    for probe in 0..OVERFLOW_PROBES {
        let Some(bucket) = table.get_mut((start + probe) & (OVERFLOW_BUCKETS - 1)) else {
            return;
        };
        if bucket.key == key || bucket.key == 0 {
            bucket.key = key;
            add_counter(&mut bucket.traffic, len);
            return;
        }
    }
    add_counter(other, len);
}

/// The destination and class of an overflow frame, as the words of a [`TargetKey`].
#[inline(always)]
fn target_of(
    ctx: &XdpContext,
    parsed: &Parsed,
    contribution: &Contribution,
    ipv4: bool,
) -> Option<[u64; 3]> {
    let (kind, port) = if contribution.reflected_port != 0 {
        (TARGET_REFLECTED, contribution.reflected_port)
    } else {
        // Port 0 is a port (floods aim at it); the high ports are one class, marked by the
        // first of them.
        let port = match contribution.dst_port {
            Some(port) => port.min(TARGET_HIGH_PORTS),
            None => 0,
        };
        match contribution.class {
            Class::TcpFirst if contribution.syn => (TARGET_SYN, port),
            Class::TcpFirst => (TARGET_TCP, port),
            Class::Udp if contribution.dst_port.is_some() => (TARGET_UDP, port),
            Class::Udp | Class::TcpLater => (TARGET_FRAGMENT, 0),
            Class::Icmp => (TARGET_ICMP, 0),
            Class::Other => (TARGET_OTHER, 0),
        }
    };
    let (family, a, b) = if ipv4 {
        let dst = bytes::<4>(ctx, parsed.l3_offset + 16)?;
        (
            FAMILY_IPV4,
            u64::from(u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]])),
            0,
        )
    } else {
        let dst = bytes::<16>(ctx, parsed.l3_offset + 24)?;
        (
            FAMILY_IPV6,
            u64::from_ne_bytes([
                dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], dst[6], dst[7],
            ]),
            u64::from_ne_bytes([
                dst[8], dst[9], dst[10], dst[11], dst[12], dst[13], dst[14], dst[15],
            ]),
        )
    };
    // The layout of the key's last word: family, kind, port, padding (little-endian, as the
    // BPF target and its userspace).
    let c = u64::from(family) | (u64::from(kind) << 8) | (u64::from(port) << 16);
    Some([a, b, c])
}

/// Adds a frame to its destination's bucket, as [`count_prefix`].
#[inline(always)]
fn count_target(window: &mut OverflowWindow, key: [u64; 3], len: u64) {
    let [a, b, c] = key;
    let start = (mix64(a ^ b.rotate_left(17) ^ c.rotate_left(41))
        >> (64 - OVERFLOW_BUCKETS.trailing_zeros())) as usize;
    for probe in 0..OVERFLOW_PROBES {
        let Some(bucket) = window
            .targets
            .get_mut((start + probe) & (OVERFLOW_BUCKETS - 1))
        else {
            return;
        };
        let [x, y, z] = bucket.key.words();
        // A free bucket has family 0: the low byte of its last word.
        if (x == a && y == b && z == c) || z & 0xff == 0 {
            bucket.key = TargetKey::from_words(key);
            add_counter(&mut bucket.traffic, len);
            return;
        }
    }
    add_counter(&mut window.target_other, len);
}

/// Counts a frame whose source has no slot: in the overflow totals, and in the protocol mix
/// that still types a flood from spoofed sources. Off the common path: such a frame has
/// already paid for a failed insert.
#[inline(always)]
fn count_overflow(
    globals: &mut GlobalStats,
    reflected_port: &mut u32,
    contribution: &Contribution,
) {
    globals.overflow_packets += 1;
    globals.overflow_bytes += contribution.len;
    match contribution.class {
        Class::TcpFirst | Class::TcpLater => globals.overflow_tcp_packets += 1,
        Class::Udp => globals.overflow_udp_packets += 1,
        Class::Icmp => globals.overflow_icmp_packets += 1,
        Class::Other => {}
    }
    if contribution.syn {
        globals.overflow_syn_packets += 1;
    }
    if contribution.fragment {
        globals.overflow_fragment_packets += 1;
    }
    if contribution.reflected_port != 0 {
        globals.overflow_reflected_packets += 1;
        *reflected_port = u32::from(contribution.reflected_port);
    }
}

/// Copies the frame (whose ports the main program found in the sampled set) to the ring
/// buffer if it has an L4 payload, within the token bucket's rate. Every frame that should
/// have been sampled is counted: sampled, capped, or ring full.
#[inline(always)]
fn sample(ctx: &XdpContext, settings: &Settings, globals: &mut GlobalStats) {
    let Some(job) = SAMPLE_JOBS.get(0) else {
        return;
    };
    let len = (ctx.data_end() - ctx.data()) as u64;
    let l4 = (job.l4_offset as usize) & (MAX_L4_OFFSET * 2 - 1);
    let payload_offset = match job.protocol {
        JOB_TCP => {
            let Some(tcp) = bytes::<20>(ctx, l4) else {
                return;
            };
            l4 + usize::from(tcp[12] >> 4) * 4
        }
        JOB_UDP => l4 + 8,
        _ => return,
    };
    if ctx.data() + payload_offset >= ctx.data_end() {
        return;
    }
    let reason = job.reason;
    if !take_token(settings) {
        globals.sample_capped_packets += 1;
        return;
    }
    let Some(scratch) = SAMPLE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let snap_len = u64::from(settings.sample_snap_len.max(1));
    // The copy length, written so that the verifier sees its range, 1..=SAMPLE_MAX_SNAP_LEN:
    // (n - 1) & (MAX - 1) is 0..MAX whatever it knows of n. Frames are at least 14 bytes.
    let wanted = len.min(snap_len).min(SAMPLE_MAX_SNAP_LEN as u64) as u32;
    let captured = (wanted.wrapping_sub(1) & (SAMPLE_MAX_SNAP_LEN as u32 - 1)) + 1;
    // SAFETY: `scratch` is this CPU's Sample; `data` holds SAMPLE_MAX_SNAP_LEN bytes and
    // `captured` is at most that. The record handed to the ring is the header and the
    // `captured` bytes after it, all inside the Sample.
    let sent = unsafe {
        (*scratch).header = SampleHeader {
            time_ns: bpf_ktime_get_ns(),
            ifindex: ctx.ingress_ifindex() as u32,
            captured_len: captured,
            original_len: len as u32,
            reason,
        };
        if bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            core::ptr::addr_of_mut!((*scratch).data).cast(),
            captured,
        ) != 0
        {
            globals.sample_ring_full_packets += 1;
            return;
        }
        let record = core::slice::from_raw_parts(
            scratch.cast::<u8>(),
            size_of::<SampleHeader>() + captured as usize,
        );
        SAMPLES.output::<[u8]>(record, 0)
    };
    if sent.is_err() {
        globals.sample_ring_full_packets += 1;
        return;
    }
    globals.sampled_packets += 1;
    if len > u64::from(captured) {
        globals.sample_truncated_packets += 1;
    }
}

#[inline(always)]
fn port_selected(first_word: u32, port: u16) -> bool {
    let index = (first_word + u32::from(port >> 6)) as usize & (2 * SAMPLE_PORT_WORDS as usize - 1);
    // SAFETY: an element of the global, in bounds by the mask; userspace may rewrite it at any
    // time, hence the volatile read of one whole word.
    let word =
        unsafe { core::ptr::read_volatile((&raw const SAMPLE_PORTS).cast::<u64>().add(index)) };
    word & (1 << (port & 63)) != 0
}

/// Whether UDP from source port `port` is an amplification service's answer.
#[inline(always)]
fn reflection_port(port: u16) -> bool {
    let index = usize::from(port >> 6) & (SAMPLE_PORT_WORDS as usize - 1);
    // SAFETY: an element of the global, in bounds by the mask; userspace may rewrite it at any
    // time, hence the volatile read of one whole word.
    let word =
        unsafe { core::ptr::read_volatile((&raw const REFLECTION_PORTS).cast::<u64>().add(index)) };
    word & (1 << (port & 63)) != 0
}

/// The current [`SETTINGS`].
#[inline(always)]
fn settings() -> Settings {
    // SAFETY: a global the program never writes; userspace rewrites it as a whole at run
    // time, and a read that straddles a rewrite sees each field old or new, either of which
    // is a valid setting.
    unsafe { core::ptr::read_volatile(&raw const SETTINGS) }
}

/// Takes one token from this CPU's bucket, refilling it first.
#[inline(always)]
fn take_token(settings: &Settings) -> bool {
    let Some(bucket) = SAMPLE_BUCKETS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array.
    let bucket = unsafe { &mut *bucket };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let elapsed = now.wrapping_sub(bucket.last_ns).min(MAX_REFILL_NS);
    let capacity = u64::from(settings.sample_burst.max(1)) * NANOS_PER_TOKEN;
    bucket.nano_tokens =
        (bucket.nano_tokens + elapsed * u64::from(settings.sample_rate)).min(capacity);
    bucket.last_ns = now;
    if bucket.nano_tokens >= NANOS_PER_TOKEN {
        bucket.nano_tokens -= NANOS_PER_TOKEN;
        true
    } else {
        false
    }
}

/// How sources' values are laid out: a region per CPU, or one shared region.
trait SourceTable {
    /// The first element of the region of [`SOURCE_VALUES`] this program run writes, given
    /// this CPU's [`CpuState::region`].
    fn region(cpu_region: u32) -> u32;
    /// Adds the frame to a value of this run's region.
    ///
    /// # Safety
    /// `value` points into [`SOURCE_VALUES`], in [`SourceTable::region`].
    unsafe fn bump_found(value: *mut SourceValue, contribution: &Contribution, epoch: u32);

    /// Adds the frame to its source, taking a free slot for a source not seen before; false
    /// when the source has no slot and none is free. `cache` is this CPU's source cache: a
    /// hit costs two array lookups, which the verifier inlines, instead of a hash-map lookup.
    /// `cpu_region` is this CPU's [`CpuState::region`].
    #[inline(always)]
    fn count(
        key: &SourceKey,
        cpu_region: u32,
        lookup: &mut Lookup<'_>,
        contribution: &Contribution,
        epoch: u32,
    ) -> bool {
        let region = Self::region(cpu_region);
        let Lookup {
            cache,
            free_generation,
            free_empty_at,
            filter_half,
        } = lookup;
        // A flood of new addresses once the slots are gone: most frames stop here.
        if **free_empty_at == free_generation.wrapping_add(1) && !filter_has(key, *filter_half) {
            return false;
        }
        let line = &mut cache[cache_line(key)];
        if owns(*line, key) {
            return Self::count_in(region, *line, contribution, epoch);
        }
        let Some(slot) = slot_of(key, *free_generation, free_empty_at) else {
            return false;
        };
        *line = slot;
        Self::count_in(region, slot, contribution, epoch)
    }

    /// Adds the frame to `slot` in the region that starts at element `region`.
    #[inline(always)]
    fn count_in(region: u32, slot: u32, contribution: &Contribution, epoch: u32) -> bool {
        // SAFETY: a read-only global set at load time.
        let capacity = unsafe { core::ptr::read_volatile(&SLOT_CAPACITY) };
        if slot >= capacity {
            return false;
        }
        match SOURCE_VALUES.get_ptr_mut(region + slot) {
            Some(value) => {
                // SAFETY: an element of the map, in this run's region.
                unsafe { Self::bump_found(value, contribution, epoch) };
                true
            }
            None => false,
        }
    }
}

/// Where a CPU looks a source up: its cache of recent sources' slots, and what it knows of
/// the free-slot queue.
struct Lookup<'a> {
    cache: &'a mut [u32; SOURCE_CACHE_ENTRIES as usize],
    /// [`Settings::free_generation`] as this run read it.
    free_generation: u32,
    /// This CPU's [`CpuState::free_empty_at`].
    free_empty_at: &'a mut u32,
    /// [`Settings::filter_half`] as this run read it.
    filter_half: u32,
}

/// The slot of `key`: from the address map, or a free one taken for a source not seen before;
/// `None` when it has none and none is free. A CPU that found the free queue empty does not
/// try it again until userspace has queued slots (the generation changed): during a flood of
/// spoofed sources with every slot taken, such a frame no longer takes the queue's lock.
#[inline(always)]
fn slot_of(key: &SourceKey, free_generation: u32, free_empty_at: &mut u32) -> Option<u32> {
    if let Some(slot) = SOURCE_SLOTS.get_ptr(key) {
        // SAFETY: a live map value, a u32 nobody writes after insertion.
        return Some(unsafe { *slot });
    }
    // The generation read before the pop: slots queued after it bump it, and the next frame
    // tries again.
    let marker = free_generation.wrapping_add(1);
    if *free_empty_at == marker {
        return None;
    }
    let slot = match FREE_SLOTS.pop() {
        Ok(Some(slot)) => slot,
        _ => {
            *free_empty_at = marker;
            return None;
        }
    };
    let owner = SLOT_KEYS.get_ptr_mut(slot)?;
    // Before the insert: a frame of this address on another CPU that finds it in the map
    // also finds its bits.
    filter_add(key);
    if SOURCE_SLOTS
        .insert(key, slot, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        // The key only once the slot is the source's: a cache line that names this slot
        // trusts it for whatever source its key is (see `owns`). Another CPU that finds the
        // address in the map meanwhile counts in the slot before its key is in; userspace
        // leaves such a slot for its next reading.
        // SAFETY: an element of an array map; a slot just taken, which no one else writes.
        unsafe { *owner = *key };
        // Again after the key: a rebuild of the filter that cleared the bits before reading
        // the keys finds the key, one that cleared them after finds the bits.
        filter_add(key);
        return Some(slot);
    }
    // Another CPU gave the same source a slot between the lookup and the insert: that one
    // counts, and this one, never counted in and its key never written, is free again.
    let _ = FREE_SLOTS.push(slot, 0);
    // SAFETY: as above.
    SOURCE_SLOTS.get_ptr(key).map(|slot| unsafe { *slot })
}

/// Where `key`'s bits are in a half of [`SLOT_FILTER`]: the word's index and the bits' mask.
#[inline(always)]
fn filter_place(key: &SourceKey) -> (u32, u32, u64) {
    // SAFETY: read-only globals set at load time.
    let (seed, word_bits) = unsafe {
        (
            core::ptr::read_volatile(&FILTER_SEED),
            core::ptr::read_volatile(&FILTER_WORD_BITS),
        )
    };
    let (word, mask) = filter_probe(key.words(), seed, word_bits);
    (word, word_bits, mask)
}

/// Whether `key`'s bits are all set in half `half` of [`SLOT_FILTER`].
#[inline(always)]
fn filter_has(key: &SourceKey, half: u32) -> bool {
    let (word, word_bits, mask) = filter_place(key);
    match SLOT_FILTER.get(((half & 1) << word_bits) + word) {
        Some(value) => {
            // SAFETY: an element of an array map; other CPUs may set bits in it meanwhile,
            // and a volatile read sees the word before or after.
            let value = unsafe { core::ptr::read_volatile(value) };
            value & mask == mask
        }
        None => true,
    }
}

/// Sets `key`'s bits in both halves of [`SLOT_FILTER`], atomically (other CPUs set bits in
/// the same words). A function of its own, off the paths of known sources and of those with no
/// slot: inlined twice into the insert, its hash took registers from the whole program.
#[inline(never)]
fn filter_add(key: &SourceKey) {
    let (word, word_bits, mask) = filter_place(key);
    for half in 0..2 {
        if let Some(value) = SLOT_FILTER.get_ptr_mut((half << word_bits) + word) {
            // SAFETY: an element of an array map, only ever updated with atomic ORs by the
            // program (userspace clears a half only while lookups read the other). Always
            // the atomic OR, never a read first: a locked instruction (x86-64) orders the
            // key's store before it, against userspace's clearing and reading of the keys; a
            // read could see a bit about to be cleared and skip it.
            unsafe {
                atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(value, mask);
            }
        }
    }
}

/// The cache line of `key`: a multiplicative hash of its words. Addresses that collide only
/// take turns in the line; a sender choosing colliding addresses slows itself to the
/// address-map lookup, nothing worse.
#[inline(always)]
fn cache_line(key: &SourceKey) -> usize {
    const BITS: u32 = SOURCE_CACHE_ENTRIES.trailing_zeros();
    let [a, b, c] = key.words();
    let mixed = (a ^ b.rotate_left(23) ^ c.rotate_left(47)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - BITS)) as usize & (SOURCE_CACHE_ENTRIES as usize - 1)
}

/// Whether two keys are equal, word by word (a derived comparison may become a `memcmp` call,
/// which BPF does not have).
#[inline(always)]
fn same(a: &SourceKey, b: &SourceKey) -> bool {
    let [a0, a1, a2] = a.words();
    let [b0, b1, b2] = b.words();
    a0 == b0 && a1 == b1 && a2 == b2
}

/// Whether `slot` belongs to `key`: a slot's key is written once a packet has taken the slot
/// and put the address in the address map, and stays until the slot is free again. Userspace
/// marks the key of a slot it takes back before deleting the address, and clears it before the
/// slot is free. So a cache line whose slot changed hands, or that was written for another
/// source, fails here, and the frame goes the address-map way.
#[inline(always)]
fn owns(slot: u32, key: &SourceKey) -> bool {
    match SLOT_KEYS.get(slot) {
        Some(owner) => same(owner, key),
        None => false,
    }
}

/// A region per CPU: each CPU writes its own copy of a source's value, with plain adds.
struct PerCpu;

impl SourceTable for PerCpu {
    #[inline(always)]
    fn region(cpu_region: u32) -> u32 {
        // Userspace wrote CPU number × slots, which `bpf_get_smp_processor_id` and a multiply
        // would give, at the price of a helper call on every packet.
        cpu_region
    }

    #[inline(always)]
    unsafe fn bump_found(value: *mut SourceValue, contribution: &Contribution, epoch: u32) {
        // SAFETY: this CPU's region; XDP runs with preemption off, so no other program run
        // writes it meanwhile.
        bump(unsafe { &mut *value }, contribution, epoch);
    }
}

/// One region that every CPU updates with atomic instructions.
struct Shared;

impl SourceTable for Shared {
    #[inline(always)]
    fn region(_cpu_region: u32) -> u32 {
        0
    }

    #[inline(always)]
    unsafe fn bump_found(value: *mut SourceValue, contribution: &Contribution, epoch: u32) {
        // SAFETY: a live map value; every CPU updates it only through atomics.
        unsafe { bump_shared(value, contribution, epoch) };
    }
}

#[inline(always)]
fn bump(value: &mut SourceValue, contribution: &Contribution, epoch: u32) {
    bump_stats(&mut value.stats, contribution);
    if epoch != 0 {
        mark(&mut value.sketch, epoch, contribution);
    }
}

/// Adds a frame to counters kept by one CPU.
#[inline(always)]
fn bump_stats(stats: &mut SourceStats, contribution: &Contribution) {
    // Not `packets`: every frame is in exactly one protocol count, and userspace sums them.
    stats.bytes += contribution.len;
    match contribution.class {
        Class::TcpFirst | Class::TcpLater => stats.tcp_packets += 1,
        Class::Udp => stats.udp_packets += 1,
        Class::Icmp => stats.icmp_packets += 1,
        Class::Other => stats.other_packets += 1,
    }
    if contribution.syn {
        stats.tcp_syn_packets += 1;
    }
    if contribution.fragment {
        stats.fragment_packets += 1;
    }
    if contribution.reflected_port != 0 {
        stats.reflected_packets += 1;
        stats.reflected_port = u32::from(contribution.reflected_port);
    }
}

/// [`bump`] for a value other CPUs update at the same time: every counter with an atomic add.
///
/// # Safety
/// `value` points to a live, 8-aligned map value that is only ever updated atomically.
#[inline(always)]
unsafe fn bump_shared(value: *mut SourceValue, contribution: &Contribution, epoch: u32) {
    // SAFETY: the caller's guarantee; every field is an aligned u64 or u32.
    unsafe {
        let stats = &raw mut (*value).stats;
        // Not `packets`, as in `bump`: one atomic add fewer per frame.
        add(&raw mut (*stats).bytes, contribution.len);
        add(
            match contribution.class {
                Class::TcpFirst | Class::TcpLater => &raw mut (*stats).tcp_packets,
                Class::Udp => &raw mut (*stats).udp_packets,
                Class::Icmp => &raw mut (*stats).icmp_packets,
                Class::Other => &raw mut (*stats).other_packets,
            },
            1,
        );
        if contribution.syn {
            add(&raw mut (*stats).tcp_syn_packets, 1);
        }
        if contribution.fragment {
            add(&raw mut (*stats).fragment_packets, 1);
        }
        if contribution.reflected_port != 0 {
            add(&raw mut (*stats).reflected_packets, 1);
            // Any CPU's last port will do: a reflector answers from its service's port.
            (&raw mut (*stats).reflected_port)
                .write_volatile(u32::from(contribution.reflected_port));
        }
        if epoch != 0 {
            mark_shared(&raw mut (*value).sketch, epoch, contribution);
        }
    }
}

/// An atomic add whose result is not used (BPF `lock xadd`).
///
/// # Safety
/// `counter` points to a live, aligned u64.
#[inline(always)]
unsafe fn add(counter: *mut u64, n: u64) {
    // SAFETY: the caller's guarantee. The old value is not used: BPF's plain atomic add.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

/// [`mark`] for a shared value: bits are set with atomic ORs, and only when not set already
/// (the common case, a read).
///
/// Two CPUs may both find the window stale and both clear it: a bit set by one between the
/// other's check and its clearing is lost. The window then starts a bit or two short at worst,
/// which linear counting shrugs off. (A compare-and-swap on the tag would close that gap but
/// needs BPF v3 atomics, kernel 5.12.)
///
/// # Safety
/// `sketch` points to the sketch of a live map value only ever updated atomically.
#[inline(always)]
unsafe fn mark_shared(sketch: *mut SourceSketch, epoch: u32, contribution: &Contribution) {
    const HOST_BITS: u32 = HOST_BITMAP_BITS.trailing_zeros();
    const PORT_BITS: u32 = PORT_BITMAP_BITS.trailing_zeros();
    let slot = (epoch & 1) as usize;
    // SAFETY: the caller's guarantee; `slot` is 0 or 1 and the bit indexes are masked to
    // their bitmaps' sizes.
    unsafe {
        let tag = (&raw mut (*sketch).epochs).cast::<u32>().add(slot);
        let ports = (&raw mut (*sketch).ports)
            .cast::<[u64; PORT_BITMAP_BITS / 64]>()
            .add(slot)
            .cast::<u64>();
        let hosts = (&raw mut (*sketch).hosts)
            .cast::<[u64; HOST_BITMAP_BITS / 64]>()
            .add(slot)
            .cast::<u64>();
        if tag.read_volatile() != epoch {
            tag.write_volatile(epoch);
            for word in 0..PORT_BITMAP_BITS / 64 {
                ports.add(word).write_volatile(0);
            }
            for word in 0..HOST_BITMAP_BITS / 64 {
                hosts.add(word).write_volatile(0);
            }
        }
        let bit = hash_bits(contribution.dst_fold, HOST_BITS) & (HOST_BITMAP_BITS - 1);
        set_bit(hosts.add(bit >> 6), bit);
        if let Some(port) = contribution.dst_port {
            let bit = hash_bits(u32::from(port), PORT_BITS) & (PORT_BITMAP_BITS - 1);
            set_bit(ports.add(bit >> 6), bit);
        }
    }
}

/// Sets bit `bit % 64` of `*word` with an atomic OR, unless it is set already.
///
/// # Safety
/// `word` points to a live, aligned u64 only ever updated atomically.
#[inline(always)]
unsafe fn set_bit(word: *mut u64, bit: usize) {
    let mask = 1u64 << (bit & 63);
    // SAFETY: the caller's guarantee. The old value of the OR is not used.
    unsafe {
        if word.read_volatile() & mask == 0 {
            atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word, mask);
        }
    }
}

/// The top `bits` bits of MurmurHash3's 32-bit finaliser. Linear counting needs bits that
/// look random even for sequential inputs (a scan's ports); a bare multiplicative hash spreads
/// those too evenly and the estimate comes out high.
#[inline(always)]
fn hash_bits(value: u32, bits: u32) -> usize {
    let mut h = value;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    (h >> (32 - bits)) as usize
}

/// Sets this frame's bits in the current window, opening the window if it is stale.
#[inline(always)]
fn mark(sketch: &mut SourceSketch, epoch: u32, contribution: &Contribution) {
    const HOST_BITS: u32 = HOST_BITMAP_BITS.trailing_zeros();
    const PORT_BITS: u32 = PORT_BITMAP_BITS.trailing_zeros();
    let slot = (epoch & 1) as usize;
    let (Some(tag), Some(ports), Some(hosts)) = (
        sketch.epochs.get_mut(slot),
        sketch.ports.get_mut(slot),
        sketch.hosts.get_mut(slot),
    ) else {
        return;
    };
    if *tag != epoch {
        *tag = epoch;
        *ports = [0; PORT_BITMAP_BITS / 64];
        *hosts = [0; HOST_BITMAP_BITS / 64];
    }
    let bit = hash_bits(contribution.dst_fold, HOST_BITS);
    if let Some(word) = hosts.get_mut(bit >> 6) {
        *word |= 1 << (bit & 63);
    }
    if let Some(port) = contribution.dst_port {
        let bit = hash_bits(u32::from(port), PORT_BITS);
        if let Some(word) = ports.get_mut(bit >> 6) {
            *word |= 1 << (bit & 63);
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
