//! Captures of events (the evidence of an attack): the frames of each capture's subject (a
//! source network, or a destination network with a filter such as "UDP from port 123"),
//! one in N of them on each CPU after each CPU's first few, copied to a ring of their own,
//! so that captures never take the room inspection's samples need. Looked at only while a
//! capture exists, in two programs of their own, tail-called: the first parses the frame and
//! looks its addresses up in the tries; for a frame some capture may keep it writes what the
//! captures compare into a per-CPU [`CaptureJob`] and tail-calls the second, which decides
//! for each capture and copies the frame. Apart, the second is verified once: behind the
//! parse, its loop was walked again for every way through the parse, past the verifier's
//! budget. Either then does what the main program would have done after it: the ban check,
//! the rules, the sampler.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray, ProgramArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use netwatch_common::{
    CAPTURE_BY_DESTINATION, CAPTURE_BY_SOURCE, CAPTURE_MAX_SNAP_LEN, CaptureCounts, CaptureGlobals,
    CaptureHeader, CaptureRecord, CaptureSet, CaptureSlot, DEFAULT_CAPTURE_RING_BYTES, FAMILY_IPV4,
    MAX_CAPTURES, RULE_MATCH_DST_PORT, RULE_MATCH_FRAGMENT, RULE_MATCH_IN_USE, RULE_MATCH_LENGTH,
    RULE_MATCH_PROTOCOL, RULE_MATCH_SRC_PORT, RULE_MATCH_SYN, Rule, SourceKey,
};

use crate::{
    bans::AlignedKey,
    parse::{Parsed, bytes},
    rules::signature_of,
};

/// The capture check, tail-called by the main program while a capture exists: slot 0 holds
/// [`netwatch_capture`](crate::netwatch_capture), slot 1
/// [`netwatch_capture_sampled`](crate::netwatch_capture_sampled).
#[map]
pub(crate) static CAPTURE_CHECK: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// Capture sources, IPv4: a network (network byte order) to the captures whose source network
/// holds it, those of every shorter network included, so that the longest match alone
/// gives them all. Written by userspace only.
#[map]
pub(crate) static CAPTURE_SOURCES_V4: LpmTrie<[u8; 4], CaptureSet> =
    LpmTrie::with_max_entries(MAX_CAPTURES as u32, 0);

/// Capture sources, IPv6, as [`CAPTURE_SOURCES_V4`].
#[map]
pub(crate) static CAPTURE_SOURCES_V6: LpmTrie<[u8; 16], CaptureSet> =
    LpmTrie::with_max_entries(MAX_CAPTURES as u32, 0);

/// Capture destinations, IPv4, as [`CAPTURE_SOURCES_V4`].
#[map]
pub(crate) static CAPTURE_DESTINATIONS_V4: LpmTrie<[u8; 4], CaptureSet> =
    LpmTrie::with_max_entries(MAX_CAPTURES as u32, 0);

/// Capture destinations, IPv6.
#[map]
pub(crate) static CAPTURE_DESTINATIONS_V6: LpmTrie<[u8; 16], CaptureSet> =
    LpmTrie::with_max_entries(MAX_CAPTURES as u32, 0);

/// The captures by index.
#[map]
pub(crate) static CAPTURE_SLOTS: Array<CaptureSlot> =
    Array::with_max_entries(MAX_CAPTURES as u32, 0);

/// What each capture saw, kept and lost, per CPU, by index.
#[map]
pub(crate) static CAPTURE_COUNTS: PerCpuArray<CaptureCounts> =
    PerCpuArray::with_max_entries(MAX_CAPTURES as u32, 0);

/// The captured frames.
#[map]
pub(crate) static CAPTURE_RING: RingBuf = RingBuf::with_byte_size(DEFAULT_CAPTURE_RING_BYTES, 0);

/// Where a captured frame is built before it is copied to the ring, as long as it is.
#[map]
pub(crate) static CAPTURE_SCRATCH: PerCpuArray<CaptureRecord> = PerCpuArray::with_max_entries(1, 0);

/// The second capture program, [`netwatch_capture_keep`](crate::netwatch_capture_keep), in
/// slot 0.
#[map]
pub(crate) static CAPTURE_KEEP: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What the first capture program hands the second, per CPU.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct CaptureJob {
    /// The frame's source, for the ban check after.
    pub(crate) key: SourceKey,
    /// The frame's length.
    pub(crate) len: u64,
    /// The captures its addresses are in.
    pub(crate) set: u32,
    /// Its IP length (header's), for a filter.
    pub(crate) ip_len: u32,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) protocol: u8,
    pub(crate) syn: u8,
    pub(crate) fragment: u8,
    /// Non-zero: the ports are known.
    pub(crate) has_ports: u8,
    /// Non-zero: the frame is to be sampled for inspection after.
    pub(crate) sampled: u32,
    pub(crate) _pad: u32,
}

/// The [`CaptureJob`] of each CPU.
#[map]
pub(crate) static CAPTURE_JOBS: PerCpuArray<CaptureJob> = PerCpuArray::with_max_entries(1, 0);

/// Whether a capture exists, and its snap length. Global data, written by userspace.
#[unsafe(link_section = ".data.captures")]
#[unsafe(no_mangle)]
pub(crate) static mut CAPTURE_GLOBALS: CaptureGlobals = CaptureGlobals {
    active: 0,
    snap_len: 0,
};

/// Whether any capture exists: [`CaptureGlobals::active`], read alone.
#[inline(always)]
pub(crate) fn captures_in_force() -> bool {
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    unsafe { (&raw const CAPTURE_GLOBALS.active).read_volatile() != 0 }
}

/// Whether a frame from `key` to `dst` (its destination address for IPv4, folded for IPv6)
/// may be some capture's, as the main program tells from what it parsed: its source is in a
/// capture's network, or its IPv4 destination is; an IPv6 destination is left to the
/// capture program, which has the whole address. A frame that may not goes on without the
/// capture program's tail call and second parse.
#[inline(always)]
pub(crate) fn may_capture(key: &SourceKey, dst: u32) -> bool {
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    let active = unsafe { (&raw const CAPTURE_GLOBALS.active).read_volatile() };
    let ipv4 = key.family == FAMILY_IPV4;
    if active & CAPTURE_BY_SOURCE != 0 {
        let found = if ipv4 {
            let [a, b, c, d, ..] = key.addr;
            let lookup = AlignedKey {
                _pad: 0,
                key: Key::new(32, [a, b, c, d]),
            };
            CAPTURE_SOURCES_V4.get(&lookup.key).is_some()
        } else {
            let lookup = AlignedKey {
                _pad: 0,
                key: Key::new(128, key.addr),
            };
            CAPTURE_SOURCES_V6.get(&lookup.key).is_some()
        };
        if found {
            return true;
        }
    }
    if active & CAPTURE_BY_DESTINATION != 0 {
        if !ipv4 {
            return true;
        }
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(32, dst.to_be_bytes()),
        };
        return CAPTURE_DESTINATIONS_V4.get(&lookup.key).is_some();
    }
    false
}

/// The captures the frame's addresses are in; when there are some, what they compare is
/// written into this CPU's [`CaptureJob`] (false when there is none, or no job).
#[inline(always)]
pub(crate) fn find(ctx: &XdpContext, parsed: &Parsed, len: u64, sampled: bool) -> bool {
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    let active = unsafe { (&raw const CAPTURE_GLOBALS.active).read_volatile() };
    let ipv4 = parsed.key.family == FAMILY_IPV4;
    let mut set = 0u32;
    if active & CAPTURE_BY_SOURCE != 0 {
        set |= by_source(parsed, ipv4);
    }
    if active & CAPTURE_BY_DESTINATION != 0 {
        set |= by_destination(ctx, parsed, ipv4);
    }
    if set == 0 {
        return false;
    }
    let Some(job) = CAPTURE_JOBS.get_ptr_mut(0) else {
        return false;
    };
    let signature = signature_of(ctx, parsed, ipv4);
    // SAFETY: this CPU's job.
    unsafe {
        *job = CaptureJob {
            key: parsed.key,
            len,
            set,
            ip_len: signature.ip_len,
            src_port: signature.src_port,
            dst_port: signature.dst_port,
            protocol: signature.protocol,
            syn: u8::from(signature.syn),
            fragment: u8::from(signature.fragment),
            has_ports: u8::from(signature.has_ports),
            sampled: u32::from(sampled),
            _pad: 0,
        };
    }
    true
}

/// Hands the frame of this CPU's [`CaptureJob`] to every capture that keeps it: its
/// subject's, if its filter matches and its turn has come on this CPU. Each capture counts
/// what it saw, kept and lost. The job, or `None`.
///
/// Every value the loop tests is read again from map memory where it is tested (volatile, so
/// that the compiler keeps it there): the verifier does not follow map memory, while in a
/// register each test would teach it a fact (a bit of the set, a field of the frame) and
/// split its walk, doubling it at every one of the 32 turns.
#[inline(always)]
pub(crate) fn keep(ctx: &XdpContext) -> Option<CaptureJob> {
    let job = CAPTURE_JOBS.get_ptr_mut(0)?;
    let scratch = CAPTURE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's job and scratch record, per-CPU map values; the reads and writes
    // below stay inside them.
    unsafe {
        (*scratch).header.captures = 0;
        // One turn per capture of the set, lowest index first (most often there is one):
        // the set's bits are taken off one by one, in the job's memory.
        for _ in 0..MAX_CAPTURES {
            let rest = (&raw const (*job).set).read_volatile();
            if rest == 0 {
                break;
            }
            (&raw mut (*job).set).write_volatile(rest & (rest - 1));
            let index = lowest_bit(rest);
            let Some(slot) = CAPTURE_SLOTS.get(index) else {
                break;
            };
            if !filter_matches(&slot.filter, job) {
                continue;
            }
            let Some(counts) = CAPTURE_COUNTS.get_ptr_mut(index) else {
                break;
            };
            let seen = (*counts).seen;
            (*counts).seen = seen + 1;
            if seen < u64::from(slot.first) || seen & u64::from(slot.every_mask) == 0 {
                (*counts).taken += 1;
                let kept = (&raw const (*scratch).header.captures).read_volatile();
                (&raw mut (*scratch).header.captures).write_volatile(kept | 1 << index);
            }
        }
        let kept = (&raw const (*scratch).header.captures).read_volatile();
        if kept != 0 && !send(ctx, scratch, (*job).len) {
            // The ring had no room: what was kept is lost instead.
            for index in 0..MAX_CAPTURES as u32 {
                let kept = (&raw const (*scratch).header.captures).read_volatile();
                if (kept >> index) & 1 == 0 {
                    continue;
                }
                if let Some(counts) = CAPTURE_COUNTS.get_ptr_mut(index) {
                    (*counts).taken -= 1;
                    (*counts).lost += 1;
                }
            }
        }
        Some(*job)
    }
}

/// The index of the lowest bit set in `bits` (not 0): a de Bruijn sequence's table, the BPF
/// instruction set having no count of trailing zeros.
#[inline(always)]
fn lowest_bit(bits: u32) -> u32 {
    const TABLE: [u8; 32] = [
        0, 1, 28, 2, 29, 14, 24, 3, 30, 22, 20, 15, 25, 17, 4, 8, 31, 27, 13, 23, 21, 19, 16, 7,
        26, 12, 18, 6, 11, 5, 10, 9,
    ];
    let isolated = bits & bits.wrapping_neg();
    let slot = (isolated.wrapping_mul(0x077C_B531) >> 27) as usize & 31;
    TABLE.get(slot).copied().map_or(0, u32::from)
}

/// Whether the frame of `job` matches every field `filter` names ([`matches`], its fields
/// read from the job where they are tested).
///
/// # Safety
///
/// `job` points at this CPU's job.
#[inline(always)]
unsafe fn filter_matches(filter: &Rule, job: *const CaptureJob) -> bool {
    // SAFETY: the caller's.
    let read = |field: *const u8| unsafe { field.read_volatile() };
    let fields = filter.matches;
    if fields & RULE_MATCH_IN_USE == 0 {
        return false;
    }
    // SAFETY: fields of the job, read where they are tested.
    unsafe {
        if fields & RULE_MATCH_PROTOCOL != 0 && filter.protocol != read(&raw const (*job).protocol)
        {
            return false;
        }
        if fields & (RULE_MATCH_SRC_PORT | RULE_MATCH_DST_PORT) != 0 {
            if read(&raw const (*job).has_ports) == 0 {
                return false;
            }
            if fields & RULE_MATCH_SRC_PORT != 0
                && filter.src_port != (&raw const (*job).src_port).read_volatile()
            {
                return false;
            }
            if fields & RULE_MATCH_DST_PORT != 0
                && filter.dst_port != (&raw const (*job).dst_port).read_volatile()
            {
                return false;
            }
        }
        if fields & RULE_MATCH_SYN != 0 && read(&raw const (*job).syn) == 0 {
            return false;
        }
        if fields & RULE_MATCH_FRAGMENT != 0 && read(&raw const (*job).fragment) == 0 {
            return false;
        }
        if fields & RULE_MATCH_LENGTH != 0 {
            let ip_len = (&raw const (*job).ip_len).read_volatile();
            if ip_len < u32::from(filter.min_len) || ip_len > u32::from(filter.max_len) {
                return false;
            }
        }
    }
    true
}

/// The captures of the frame's source network.
#[inline(always)]
fn by_source(parsed: &Parsed, ipv4: bool) -> u32 {
    let set = if ipv4 {
        let [a, b, c, d, ..] = parsed.key.addr;
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(32, [a, b, c, d]),
        };
        CAPTURE_SOURCES_V4.get(&lookup.key)
    } else {
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(128, parsed.key.addr),
        };
        CAPTURE_SOURCES_V6.get(&lookup.key)
    };
    set.map_or(0, |set| set.captures)
}

/// The captures of the frame's destination network.
#[inline(always)]
fn by_destination(ctx: &XdpContext, parsed: &Parsed, ipv4: bool) -> u32 {
    let l3 = parsed.l3_offset;
    let set = if ipv4 {
        let Some(&[a, b, c, d]) = bytes::<4>(ctx, l3 + 16) else {
            return 0;
        };
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(32, [a, b, c, d]),
        };
        CAPTURE_DESTINATIONS_V4.get(&lookup.key)
    } else {
        let Some(dst) = bytes::<16>(ctx, l3 + 24) else {
            return 0;
        };
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(128, *dst),
        };
        CAPTURE_DESTINATIONS_V6.get(&lookup.key)
    };
    set.map_or(0, |set| set.captures)
}

/// Copies the frame's first bytes (the snap length's) to the ring, behind the header whose
/// captures are set already; false when the ring had no room (or the copy failed).
#[inline(always)]
fn send(ctx: &XdpContext, scratch: *mut CaptureRecord, len: u64) -> bool {
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    let snap_len = unsafe { (&raw const CAPTURE_GLOBALS.snap_len).read_volatile() };
    // The copy length, written so that the verifier sees its range, 1..=CAPTURE_MAX_SNAP_LEN
    // (as the sampler's). Frames are at least 14 bytes.
    let wanted = len
        .min(u64::from(snap_len.max(1)))
        .min(CAPTURE_MAX_SNAP_LEN as u64) as u32;
    let captured = (wanted.wrapping_sub(1) & (CAPTURE_MAX_SNAP_LEN as u32 - 1)) + 1;
    // SAFETY: `scratch` is this CPU's record; `data` holds CAPTURE_MAX_SNAP_LEN bytes and
    // `captured` is at most that. The ring gets the header and the `captured` bytes after it.
    unsafe {
        (*scratch).header = CaptureHeader {
            time_ns: bpf_ktime_get_ns(),
            captures: (*scratch).header.captures,
            ifindex: ctx.ingress_ifindex() as u32,
            captured_len: captured,
            original_len: len as u32,
        };
        if bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            core::ptr::addr_of_mut!((*scratch).data).cast(),
            captured,
        ) != 0
        {
            return false;
        }
        let record = core::slice::from_raw_parts(
            scratch.cast::<u8>(),
            size_of::<CaptureHeader>() + captured as usize,
        );
        CAPTURE_RING.output::<[u8]>(record, 0).is_ok()
    }
}
