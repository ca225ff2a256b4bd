//! Traffic without a slot (spoofed floods): its breakdown by source prefix and by target,
//! with no per-source state.

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array, programs::XdpContext};
use netwatch_common::{
    Counter, FAMILY_IPV4, FAMILY_IPV6, GlobalStats, OVERFLOW_BUCKETS, OVERFLOW_PROBES,
    OverflowWindow, PrefixCount, TARGET_FRAGMENT, TARGET_HIGH_PORTS, TARGET_ICMP, TARGET_OTHER,
    TARGET_REFLECTED, TARGET_SYN, TARGET_TCP, TARGET_UDP, TargetKey, mix64,
};

use crate::{
    counters::{add_counter, set_hashed_bit},
    frame::Contribution,
    parse::{Class, Parsed, bytes},
};

/// Traffic without a slot, broken down by source prefix and destination: two windows per
/// possible CPU ([`CpuState::windows`]), CPU `c` writing window `2c + (overflow_window & 1)`
/// while userspace reads and clears the other. Memory-mappable; userspace sets the size at
/// load time.
#[map]
pub(crate) static OVERFLOW_WINDOWS: Array<OverflowWindow> =
    Array::with_max_entries(2, BPF_F_MMAPABLE);

/// Counts a frame whose source has no slot in this CPU's open [`OverflowWindow`]: by wide and
/// narrow source prefix, by destination and class, and in the distinct-source and
/// distinct-prefix bitmaps. Fixed work: three tables of at most [`OVERFLOW_PROBES`] buckets
/// each and two bits, all in memory of this CPU's own.
#[inline(always)]
pub(crate) fn break_down(
    ctx: &XdpContext,
    parsed: &Parsed,
    contribution: &Contribution,
    window: u32,
) {
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

/// Adds a frame to `key`'s bucket of `table`, taking a free one of the [`OVERFLOW_PROBES`]
/// from its hash's on; to `other` when those are all another key's.
#[inline(always)]
pub(crate) fn count_prefix(
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
pub(crate) fn target_of(
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
pub(crate) fn count_target(window: &mut OverflowWindow, key: [u64; 3], len: u64) {
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
pub(crate) fn count_overflow(
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
