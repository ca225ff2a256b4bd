//! Threat intelligence in the kernel: the networks the indicator feeds list (addresses and
//! subnets), in one LPM trie per family, looked up against each frame's source and
//! destination only while a feed lists one. The main program looks the staged addresses up
//! (two lookups); for a frame a trie holds it tail-calls [`netwatch_intel`](crate::netwatch_intel),
//! which parses the frame again and counts it per listed network, side and peer in the
//! current window's hash map, as the overflow's windows alternate at each reading. So a frame
//! from or to a listed address is seen whatever it carries: no payload, no sampled port, no
//! slot. The program then does what the main program does after: the capture, the ban check,
//! the rules, the sampler.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, LpmTrie, PerCpuArray, ProgramArray, lpm_trie::Key},
    programs::XdpContext,
};
use netwatch_common::{
    FAMILY_IPV4, FAMILY_IPV6, INTEL_MAX_HITS, INTEL_MAX_NETWORKS, INTEL_SIDE_DESTINATION,
    INTEL_SIDE_SOURCE, INTEL_V4, INTEL_V6, IntelCounts, IntelGlobals, IntelHitCount, IntelHitKey,
    SourceKey,
};

use crate::{
    bans::AlignedKey,
    counters::{add, add_counter},
    maps::SETTINGS,
    parse::{Parsed, bytes},
};

/// `BPF_F_NO_PREALLOC`: a trie (which requires it) or a hash map takes memory as it fills.
const NO_PREALLOC: u32 = 1;

/// The indicator check: slot 0 holds [`netwatch_intel`](crate::netwatch_intel), slot 1
/// [`netwatch_intel_sampled`](crate::netwatch_intel_sampled).
#[map]
pub(crate) static INTEL_CHECK: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// Listed IPv4 networks (network byte order) to their prefix length. Written by userspace
/// only.
#[map]
pub(crate) static INTEL_NETS_V4: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(INTEL_MAX_NETWORKS, NO_PREALLOC);

/// Listed IPv6 networks, as [`INTEL_NETS_V4`].
#[map]
pub(crate) static INTEL_NETS_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(INTEL_MAX_NETWORKS, NO_PREALLOC);

/// The matches of window 0 (`overflow_window` even), emptied by userspace after it closes.
#[map]
pub(crate) static INTEL_HITS_0: HashMap<IntelHitKey, IntelHitCount> =
    HashMap::with_max_entries(INTEL_MAX_HITS, NO_PREALLOC);

/// The matches of window 1.
#[map]
pub(crate) static INTEL_HITS_1: HashMap<IntelHitKey, IntelHitCount> =
    HashMap::with_max_entries(INTEL_MAX_HITS, NO_PREALLOC);

/// Per CPU: the frames a listed network holds, and those no window had room for.
#[map]
pub(crate) static INTEL_COUNTS: PerCpuArray<IntelCounts> = PerCpuArray::with_max_entries(1, 0);

/// Which tries hold a network. Global data, written by userspace.
#[unsafe(link_section = ".data.intel")]
#[unsafe(no_mangle)]
pub(crate) static mut INTEL_GLOBALS: IntelGlobals = IntelGlobals { active: 0 };

/// [`IntelGlobals::active`], read alone: 0 while no feed lists an address.
#[inline(always)]
pub(crate) fn intel_active() -> u32 {
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    unsafe { (&raw const INTEL_GLOBALS.active).read_volatile() }
}

#[inline(always)]
fn listed_v4(addr: [u8; 4]) -> Option<u32> {
    let lookup = AlignedKey {
        _pad: 0,
        key: Key::new(32, addr),
    };
    INTEL_NETS_V4.get(&lookup.key).copied()
}

#[inline(always)]
fn listed_v6(addr: &[u8; 16]) -> Option<u32> {
    let lookup = AlignedKey {
        _pad: 0,
        key: Key::new(128, *addr),
    };
    INTEL_NETS_V6.get(&lookup.key).copied()
}

/// The IPv6 destination of the frame whose IP header is at `l3`, in the frame (a copy on
/// the stack, in an `Option`, would sit off the alignment the verifier wants).
#[inline(always)]
fn ipv6_destination(ctx: &XdpContext, l3: usize) -> Option<&[u8; 16]> {
    // The parser puts the IP header after at most two tags: a bound for the verifier.
    if l3 > 64 {
        return None;
    }
    bytes::<16>(ctx, l3 + 24)
}

/// Whether a listed network holds the frame's source `key` or its destination (`dst` for
/// IPv4, read from the frame at `l3` for IPv6), as the main program tells from what it
/// staged; `active` is [`intel_active`], not 0.
#[inline(always)]
pub(crate) fn may_be_listed(
    ctx: &XdpContext,
    key: &SourceKey,
    dst: u32,
    l3: usize,
    active: u32,
) -> bool {
    if key.family == FAMILY_IPV4 {
        if active & INTEL_V4 == 0 {
            return false;
        }
        let [a, b, c, d, ..] = key.addr;
        return listed_v4([a, b, c, d]).is_some() || listed_v4(dst.to_be_bytes()).is_some();
    }
    if active & INTEL_V6 == 0 {
        return false;
    }
    if listed_v6(&key.addr).is_some() {
        return true;
    }
    match ipv6_destination(ctx, l3) {
        Some(dst) => listed_v6(dst).is_some(),
        None => false,
    }
}

/// A match as it is built: in a per-CPU map value rather than on the stack, where LLVM
/// merges the key's byte stores into wider ones the verifier refuses off their alignment.
#[repr(C)]
pub(crate) struct IntelScratch {
    key: IntelHitKey,
    first: IntelHitCount,
}

/// Each CPU's [`IntelScratch`].
#[map]
pub(crate) static INTEL_SCRATCH: PerCpuArray<IntelScratch> = PerCpuArray::with_max_entries(1, 0);

/// Counts the frame for each listed network that holds its source or its destination.
#[inline(always)]
pub(crate) fn record(ctx: &XdpContext, parsed: &Parsed, len: u64) {
    let active = intel_active();
    let Some(scratch) = INTEL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array, used by this program run alone.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    let window = unsafe { (&raw const SETTINGS.overflow_window).read_volatile() } & 1;
    scratch.key = IntelHitKey::default();
    if parsed.key.family == FAMILY_IPV4 {
        if active & INTEL_V4 == 0 {
            return;
        }
        let [a, b, c, d, ..] = parsed.key.addr;
        let source = [a, b, c, d];
        let dst = parsed.dst_fold.to_be_bytes();
        scratch.key.family = FAMILY_IPV4;
        if let Some(prefix_len) = listed_v4(source) {
            scratch.first.example = [0; 16];
            scratch.first.example[..4].copy_from_slice(&source);
            scratch.key.peer[..4].copy_from_slice(&dst);
            scratch.key.prefix_len = prefix_len as u8;
            scratch.key.side = INTEL_SIDE_SOURCE;
            hit(scratch, window, len);
        }
        if let Some(prefix_len) = listed_v4(dst) {
            scratch.first.example = [0; 16];
            scratch.first.example[..4].copy_from_slice(&dst);
            scratch.key.peer[..4].copy_from_slice(&source);
            scratch.key.prefix_len = prefix_len as u8;
            scratch.key.side = INTEL_SIDE_DESTINATION;
            hit(scratch, window, len);
        }
        return;
    }
    if active & INTEL_V6 == 0 {
        return;
    }
    scratch.key.family = FAMILY_IPV6;
    let dst = ipv6_destination(ctx, parsed.l3_offset);
    if let Some(prefix_len) = listed_v6(&parsed.key.addr) {
        scratch.first.example = parsed.key.addr;
        scratch.key.peer = match dst {
            Some(dst) => *dst,
            None => [0; 16],
        };
        scratch.key.prefix_len = prefix_len as u8;
        scratch.key.side = INTEL_SIDE_SOURCE;
        hit(scratch, window, len);
    }
    if let Some(dst) = dst
        && let Some(prefix_len) = listed_v6(dst)
    {
        scratch.first.example = *dst;
        scratch.key.peer = parsed.key.addr;
        scratch.key.prefix_len = prefix_len as u8;
        scratch.key.side = INTEL_SIDE_DESTINATION;
        hit(scratch, window, len);
    }
}

/// `addr` with the bits past `prefix_len` cleared.
#[inline(always)]
fn masked(addr: &[u8; 16], prefix_len: u32, out: &mut [u8; 16]) {
    let mut word = 0;
    while word < 4 {
        let bits = prefix_len.saturating_sub(word as u32 * 32).min(32);
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        let at = word * 4;
        let value = u32::from_be_bytes([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]]) & mask;
        let [a, b, c, d] = value.to_be_bytes();
        out[at] = a;
        out[at + 1] = b;
        out[at + 2] = c;
        out[at + 3] = d;
        word += 1;
    }
}

/// Counts the match in `scratch` (its key's network not written yet; the listed address in
/// `first.example`) in the window's map; in the CPU's counters when the map has no room. A
/// function of its own: the verifier walks it once per state it is called in.
#[inline(never)]
fn hit(scratch: &mut IntelScratch, window: u32, len: u64) {
    masked(
        &scratch.first.example,
        u32::from(scratch.key.prefix_len),
        &mut scratch.key.network,
    );
    scratch.first.packets = 1;
    scratch.first.bytes = len;
    let recorded = if window == 0 {
        count_hit(&INTEL_HITS_0, scratch, len)
    } else {
        count_hit(&INTEL_HITS_1, scratch, len)
    };
    if let Some(counts) = INTEL_COUNTS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array.
        let counts = unsafe { &mut *counts };
        add_counter(&mut counts.listed, len);
        if !recorded {
            add_counter(&mut counts.unrecorded, len);
        }
    }
}

/// Adds the frame to the scratch key's count in `hits`, making it (from `first`) if need be;
/// false when the map is full.
// The key and value are handed to the helpers where they are, in the map value, not copied
// to the stack first.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
fn count_hit(hits: &HashMap<IntelHitKey, IntelHitCount>, scratch: &IntelScratch, len: u64) -> bool {
    let add_to = |value: *mut IntelHitCount| {
        // SAFETY: a live map value, 8-aligned, that every CPU updates only through atomics.
        unsafe {
            add(&raw mut (*value).packets, 1);
            add(&raw mut (*value).bytes, len);
        }
    };
    if let Some(value) = hits.get_ptr_mut(&scratch.key) {
        add_to(value);
        return true;
    }
    if hits
        .insert(&scratch.key, &scratch.first, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return true;
    }
    // Another CPU may have made it in between.
    match hits.get_ptr_mut(&scratch.key) {
        Some(value) => {
            add_to(value);
            true
        }
        None => false,
    }
}
