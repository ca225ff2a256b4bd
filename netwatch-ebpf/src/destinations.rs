//! Destinations in the local networks (the victim view): per-host buckets, their senders,
//! and the traffic to local hosts without a bucket. With no local network set, the same
//! buckets hold a sample of every destination (one frame in [`Settings::destination_sample`]).

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array, programs::XdpContext};
use netwatch_common::{
    Counter, DESTINATION_BUCKETS, DESTINATION_SENDERS, DESTINATION_SOURCE_BITS, DestinationBucket,
    FAMILY_IPV4, FAMILY_IPV6, LocalNetworks, MAX_LOCAL_NETWORKS, OVERFLOW_PROBES, PrefixCount,
    Settings, SourceKey, SourceStats, mix64,
};

use crate::{
    counters::{add_counter, bump_stats, set_hashed_bit},
    frame::Contribution,
    parse::{Parsed, bytes},
};

/// Local hosts' traffic: [`DESTINATION_BUCKETS`] buckets per window, two windows per
/// possible CPU (window `w` of CPU `c` is the `2c + w`-th run of buckets), read and cleared
/// by userspace as the overflow windows. Memory-mappable; userspace sets the size at load
/// time.
#[map]
pub(crate) static DESTINATIONS: Array<DestinationBucket> =
    Array::with_max_entries(2 * DESTINATION_BUCKETS as u32, BPF_F_MMAPABLE);

/// Per destination window: frames to a local host that found no bucket.
#[map]
pub(crate) static DESTINATION_OTHER: Array<Counter> = Array::with_max_entries(2, BPF_F_MMAPABLE);

/// The local networks, [`Settings::local_networks`] of them. Global data, as [`SETTINGS`](crate::maps::SETTINGS).
#[unsafe(link_section = ".data.networks")]
#[unsafe(no_mangle)]
pub(crate) static mut LOCAL_NETWORKS: LocalNetworks = LocalNetworks {
    v4: [0; MAX_LOCAL_NETWORKS],
    v6: [[0; 4]; MAX_LOCAL_NETWORKS],
};

/// Counts a frame to a host of a local network (to any host, while destinations are sampled)
/// in that host's bucket of this CPU's open destination window: its traffic as a source's,
/// its distinct sources, its top senders and its main destination port.
#[inline(always)]
pub(crate) fn count_destination(
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
    // Sampled (no local network): every destination is counted.
    let mut local = settings.local_networks == 0;
    let networks = &raw const LOCAL_NETWORKS;
    if local {
        // Nothing to compare.
    } else if ipv4 {
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
            bucket.port = 0;
            bucket.port_votes = 0;
            bucket.service = 0;
            bucket.service_votes = 0;
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
        if let Some(port) = contribution.dst_port {
            vote(&mut bucket.port, &mut bucket.port_votes, u32::from(port));
        }
        if contribution.reflected_port != 0 {
            let service = u32::from(contribution.reflected_port);
            vote(&mut bucket.service, &mut bucket.service_votes, service);
        }
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
pub(crate) fn count_sender(senders: &mut [PrefixCount; DESTINATION_SENDERS], key: u64, len: u64) {
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

/// A majority vote (see [`DestinationBucket::port`]): `value` for the candidate `chosen`.
/// The same value adds a vote; another takes one away, or the candidate's place when it has
/// none.
#[inline(always)]
fn vote(chosen: &mut u32, votes: &mut u32, value: u32) {
    if *chosen == value {
        *votes += 1;
    } else if *votes == 0 {
        *chosen = value;
        *votes = 1;
    } else {
        *votes -= 1;
    }
}

/// Whether this frame is one of those counted per destination while they are sampled: one
/// in [`Settings::destination_sample`] (`N`, a power of two), after a random skip of
/// `N - 1` frames on average, so that no periodic pattern of the traffic (a flood's frame
/// between two others, say) decides what is seen. The skip is a countdown per CPU: a
/// comparison and a subtraction per frame, the draw only for the frames counted.
#[inline(always)]
pub(crate) fn sample_destination(skip: &mut u32, random: &mut u32, settings: &Settings) -> bool {
    if *skip != 0 {
        *skip -= 1;
        return false;
    }
    // A Weyl sequence, mixed (the finalizer of MurmurHash3's 32-bit hash).
    *random = random.wrapping_add(0x9e37_79b9);
    let mut x = *random;
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^= x >> 16;
    // Two uniform numbers below N from separate bits (N ≤ 4096): their sum averages N - 1.
    let mask = settings.destination_sample.wrapping_sub(1) & 0xfff;
    *skip = (x & mask) + ((x >> 20) & mask);
    true
}
