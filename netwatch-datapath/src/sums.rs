//! Sums of the kernel's counters, and the address a map key stands for: plain functions on
//! the shared types, which every reader of the maps uses and which use none of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch_common::{FAMILY_IPV4, GlobalStats, SourceKey, SourceStats};

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
