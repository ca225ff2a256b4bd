//! The local hosts' traffic, as the kernel counts it when local networks are set (or a
//! sample of every destination's when none is, see [`DestinationCount`]): per CPU, in
//! windows that alternate with the overflow windows (see [`super::overflow`]), read, added
//! up by host and cleared at each reading. A window holds the hosts that received something
//! during one interval, so no slot is ever taken back: a host that found no bucket of its
//! window is counted in that window's `other`.

use std::{collections::HashMap, net::IpAddr, os::fd::BorrowedFd};

use netwatch_common::{
    Counter, DESTINATION_BUCKETS, DESTINATION_SENDERS, DestinationBucket, FAMILY_IPV4, SourceStats,
};

use super::{
    overflow::{SlotlessPrefix, Traffic, add_traffic},
    slots::{Mapped, linear_count},
    sums::{add_source, source_addr},
};

/// How the kernel counted the destinations of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DestinationCount {
    /// Not at all: no local network, no sampling (or no room for destinations).
    #[default]
    Off,
    /// Every frame to a host of the local networks, exactly.
    Local,
    /// One frame in this many to any destination, at random gaps (see
    /// [`netwatch_common::Settings::destination_sample`]); the readings' counters are scaled
    /// back up by it, so they are estimates, and their distinct sources lower bounds.
    Sampled(u32),
}

impl DestinationCount {
    /// What a counted frame stands for.
    pub fn scale(self) -> u64 {
        match self {
            Self::Off | Self::Local => 1,
            Self::Sampled(one_in) => u64::from(one_in.max(1)),
        }
    }
}

/// A host and what it received during one interval, all CPUs added up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationReading {
    /// The host.
    pub addr: IpAddr,
    /// Its traffic, counted as a source's is (`packets` is the sum of the protocol counts).
    pub stats: SourceStats,
    /// Distinct sources that sent to it, estimated (linear counting over 256 bits of each
    /// CPU, ORed: saturates near 1,400, "this many or more").
    pub sources: u32,
    /// Its top senders by IPv4 /24 and IPv6 /48, most packets first. Counts are upper bounds
    /// (Space-Saving, see [`netwatch_common::DestinationBucket::senders`]).
    pub senders: Vec<(SlotlessPrefix, Traffic)>,
    /// The destination port that won the kernel's majority vote (see
    /// [`netwatch_common::DestinationBucket::port`]) with votes, a lower bound of its
    /// frames, of a quarter of the host's TCP and UDP frames or more: a port with well over
    /// half of them is named; `None` when no port is (a flood over random ports, a mix of a
    /// few, traffic without ports).
    pub port: Option<u16>,
}

impl DestinationReading {
    /// Adds what the same host received on another interface: counters added, the largest
    /// count of sources (a lower bound of the whole), the senders merged.
    pub fn absorb(&mut self, other: &DestinationReading) {
        add_source(&mut self.stats, &other.stats);
        self.sources = self.sources.max(other.sources);
        for &(prefix, traffic) in &other.senders {
            match self.senders.iter_mut().find(|(into, _)| *into == prefix) {
                Some((_, into)) => add_traffic(into, traffic),
                None => self.senders.push((prefix, traffic)),
            }
        }
        self.senders
            .sort_by(|(a, x), (b, y)| y.packets.cmp(&x.packets).then(a.cmp(b)));
        self.senders.truncate(DESTINATION_SENDERS);
        self.port = self.port.or(other.port);
    }
}

/// The prefix of a sender's key: a /24 for IPv4, a /48 for IPv6.
fn sender_prefix(key: u64) -> Option<SlotlessPrefix> {
    let wide = (key >> 56) as u8 != FAMILY_IPV4;
    SlotlessPrefix::from_key(key, wide)
}

/// One host's parts of the CPUs, while they are added up.
#[derive(Default)]
struct Parts {
    stats: SourceStats,
    sources: [u64; 4],
    senders: HashMap<SlotlessPrefix, Traffic>,
    /// Votes per port, added over the CPUs (each a lower bound of the port's frames there).
    ports: HashMap<u32, u64>,
    /// Votes per amplification service, likewise.
    services: HashMap<u32, u64>,
}

/// The destination windows of every CPU, mapped into this process.
pub(super) struct DestinationWindows {
    buckets: Mapped<DestinationBucket>,
    other: Mapped<Counter>,
    cpus: usize,
    /// How each window (by the parity of its number) was counted when it opened.
    counting: [DestinationCount; 2],
}

impl DestinationWindows {
    /// Maps the windows of `cpus` CPUs (two each) of the maps `buckets` and `other`.
    pub(super) fn map(
        buckets: BorrowedFd<'_>,
        other: BorrowedFd<'_>,
        cpus: usize,
    ) -> std::io::Result<Self> {
        Ok(Self {
            buckets: Mapped::new(buckets, 2 * cpus * DESTINATION_BUCKETS)?,
            other: Mapped::new(other, 2 * cpus)?,
            cpus,
            counting: [DestinationCount::Off; 2],
        })
    }

    /// Notes how the kernel counts window `which & 1`, which opens now.
    pub(super) fn open(&mut self, which: u32, counting: DestinationCount) {
        self.counting[(which & 1) as usize] = counting;
    }

    /// Reads and clears window `which & 1` of every CPU: how it was counted, the hosts, most
    /// packets first, and the traffic that found no bucket (counters scaled up when
    /// sampled).
    pub(super) fn take(
        &mut self,
        which: u32,
    ) -> (DestinationCount, Vec<DestinationReading>, Traffic) {
        let counting = self.counting[(which & 1) as usize];
        let scale = counting.scale();
        let mut hosts: HashMap<[u64; 3], Parts> = HashMap::new();
        let mut other = Traffic::default();
        for cpu in 0..self.cpus {
            let window = 2 * cpu + (which & 1) as usize;
            // SAFETY: an element of the live mapping, of a plain-data type.
            let missed = unsafe { self.other.at(window).read_volatile() };
            if missed.packets > 0 {
                add_traffic(&mut other, missed);
                self.other.write(window, Counter::default());
            }
            let first = window * DESTINATION_BUCKETS;
            for index in first..first + DESTINATION_BUCKETS {
                // SAFETY: as above; the key first, the whole bucket only when it is taken.
                let key = unsafe { (&raw const (*self.buckets.at(index)).key).read_volatile() };
                if key.family == 0 {
                    continue;
                }
                // SAFETY: as above.
                let bucket = unsafe { self.buckets.at(index).read_volatile() };
                let parts = hosts.entry(key.words()).or_default();
                add_source(&mut parts.stats, &bucket.stats);
                for (sum, word) in parts.sources.iter_mut().zip(bucket.sources) {
                    *sum |= word;
                }
                if bucket.port_votes > 0 {
                    *parts.ports.entry(bucket.port).or_default() += u64::from(bucket.port_votes);
                }
                if bucket.service_votes > 0 {
                    *parts.services.entry(bucket.service).or_default() +=
                        u64::from(bucket.service_votes);
                }
                for sender in bucket.senders.iter().take(DESTINATION_SENDERS) {
                    if sender.traffic.packets == 0 {
                        continue;
                    }
                    if let Some(prefix) = sender_prefix(sender.key) {
                        add_traffic(parts.senders.entry(prefix).or_default(), sender.traffic);
                    }
                }
                self.buckets.write(index, DestinationBucket::default());
            }
        }
        let mut readings: Vec<DestinationReading> = hosts
            .into_iter()
            .map(|(words, mut parts)| {
                let stats = &mut parts.stats;
                stats.packets = stats.tcp_packets
                    + stats.udp_packets
                    + stats.icmp_packets
                    + stats.other_packets;
                // Votes are a lower bound of a port's frames: a port with a quarter of the
                // frames that carry one is the host's.
                let with_ports = stats.tcp_packets + stats.udp_packets;
                let port = parts
                    .ports
                    .iter()
                    .max_by(|(a, x), (b, y)| x.cmp(y).then(b.cmp(a)))
                    .filter(|(_, votes)| 4 * **votes >= with_ports && **votes > 0)
                    .and_then(|(port, _)| u16::try_from(*port).ok());
                // The service that won the votes, rather than whichever answered last.
                if let Some((&service, _)) = parts
                    .services
                    .iter()
                    .max_by(|(a, x), (b, y)| x.cmp(y).then(b.cmp(a)))
                {
                    stats.reflected_port = service;
                }
                scale_stats(&mut parts.stats, scale);
                let mut senders: Vec<_> = parts
                    .senders
                    .into_iter()
                    .map(|(prefix, traffic)| (prefix, scale_traffic(traffic, scale)))
                    .collect();
                senders.sort_by(|(a, x), (b, y)| y.packets.cmp(&x.packets).then(a.cmp(b)));
                senders.truncate(DESTINATION_SENDERS);
                DestinationReading {
                    addr: source_addr(&netwatch_common::SourceKey::from_u64_words(words)),
                    stats: parts.stats,
                    sources: linear_count(&parts.sources),
                    senders,
                    port,
                }
            })
            .collect();
        readings.sort_by(|a, b| {
            b.stats
                .packets
                .cmp(&a.stats.packets)
                .then(b.stats.bytes.cmp(&a.stats.bytes))
                .then(a.addr.cmp(&b.addr))
        });
        (counting, readings, scale_traffic(other, scale))
    }
}

/// A sampled window's counters as estimates of the whole: every count times `scale`.
fn scale_stats(stats: &mut SourceStats, scale: u64) {
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
        reflected_port: _,
        _pad,
    } = stats;
    for count in [
        packets,
        bytes,
        tcp_packets,
        udp_packets,
        icmp_packets,
        other_packets,
        tcp_syn_packets,
        fragment_packets,
        reflected_packets,
    ] {
        *count = count.saturating_mul(scale);
    }
}

/// As [`scale_stats`], for a packet and byte count.
fn scale_traffic(traffic: Traffic, scale: u64) -> Traffic {
    Traffic {
        packets: traffic.packets.saturating_mul(scale),
        bytes: traffic.bytes.saturating_mul(scale),
    }
}
