//! The local hosts' traffic, as the kernel counts it when local networks are set: per CPU,
//! in windows that alternate with the overflow windows (see [`super::overflow`]), read,
//! added up by host and cleared at each reading. A window holds the hosts that received
//! something during one interval, so no slot is ever taken back: a host that found no bucket
//! of its window is counted in that window's `other`.

use std::{collections::HashMap, net::IpAddr, os::fd::BorrowedFd};

use netwatch_common::{
    Counter, DESTINATION_BUCKETS, DESTINATION_SENDERS, DestinationBucket, FAMILY_IPV4, SourceStats,
};

use super::{
    overflow::{SlotlessPrefix, Traffic, add_traffic},
    slots::{Mapped, linear_count},
    sums::{add_source, source_addr},
};

/// A local host and what it received during one interval, all CPUs added up.
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
}

/// The destination windows of every CPU, mapped into this process.
pub(super) struct DestinationWindows {
    buckets: Mapped<DestinationBucket>,
    other: Mapped<Counter>,
    cpus: usize,
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
        })
    }

    /// Reads and clears window `which & 1` of every CPU: the hosts, most packets first, and
    /// the traffic that found no bucket.
    pub(super) fn take(&mut self, which: u32) -> (Vec<DestinationReading>, Traffic) {
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
                let mut senders: Vec<_> = parts.senders.into_iter().collect();
                senders.sort_by(|(a, x), (b, y)| y.packets.cmp(&x.packets).then(a.cmp(b)));
                senders.truncate(DESTINATION_SENDERS);
                DestinationReading {
                    addr: source_addr(&netwatch_common::SourceKey::from_u64_words(words)),
                    stats: parts.stats,
                    sources: linear_count(&parts.sources),
                    senders,
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
        (readings, other)
    }
}
