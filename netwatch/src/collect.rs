//! Turns successive map snapshots into per-interval deltas.
//!
//! The kernel keeps cumulative counters; this stage remembers the previous reading of every
//! source and subtracts. It is pure: snapshots in, intervals out, no kernel access, so every
//! corner (eviction, re-insertion, counters read mid-update) is unit-tested without root.

use std::{cmp::Reverse, collections::BTreeMap, net::IpAddr, time::Duration};

use netwatch_common::{GlobalStats, SourceKey, SourceStats};

pub use crate::datapath::source_addr;
use crate::datapath::{
    DestinationCount, DestinationReading, IntelReading, OverflowBreakdown, Snapshot, SourceReading,
    Spread, Traffic, add_traffic,
};

/// The name of the combined view of several interfaces in every record. Linux cannot have an
/// interface called so (`/proc/sys/net/ipv4/conf/all` is taken).
pub const COMBINED: &str = "all";

/// The traffic of one source during one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDelta {
    /// The source address.
    pub addr: IpAddr,
    /// What it sent during the interval.
    pub stats: SourceStats,
    /// How many distinct destinations it reached during the interval.
    pub spread: Spread,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    /// Frames.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One collection interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// Time since the previous reading.
    pub elapsed: Duration,
    /// Global counters during the interval.
    pub delta: GlobalStats,
    /// Global counters since the program was loaded.
    pub cumulative: GlobalStats,
    /// Every source that sent something during the interval, most bytes first.
    pub sources: Vec<SourceDelta>,
    /// Sources holding a slot at this reading.
    pub tracked_sources: usize,
    /// Sources whose slot was reclaimed (they were idle and slots ran low) since the last
    /// reading.
    pub evicted_sources: u64,
    /// Traffic in the total that no source reading has accounted for yet: frames that arrived
    /// while the map was read (they are attributed next interval). A gauge, not a delta. Zero
    /// on a link at rest.
    pub unattributed: Volume,
    /// [`Interval::unattributed`] at the previous reading: traffic an earlier interval's
    /// total counted and this interval's sources may hold. With it the interval adds up on
    /// its own: `sources + overflow + non_ip + malformed == total + unattributed_before -
    /// unattributed`, for packets and for bytes.
    pub unattributed_before: Volume,
    /// The amplification port of the last overflow frame from one; 0 for none.
    pub overflow_reflected_port: u16,
    /// Traffic without a slot, by source prefix and destination (see
    /// [`Snapshot::overflow`]: its window is the interval, give or take the frames counted
    /// while it changed).
    pub slotless: OverflowBreakdown,
    /// How [`Interval::destinations`] were counted: exactly for the local networks, as a
    /// sample of every destination (estimates), or not at all.
    pub destination_count: DestinationCount,
    /// The hosts of the local networks (sampled: any hosts) that received something, most
    /// packets first (see [`Snapshot::destinations`]); empty when not counted.
    pub destinations: Vec<DestinationReading>,
    /// Frames to a local host that found no room to be counted per host.
    pub destination_other: Traffic,
    /// The frames from or to listed networks, per network, side and peer (see
    /// [`Snapshot::intel`]); its `listed` and `unrecorded` counters are the interval's.
    pub intel: IntelReading,
}

/// What traffic is made of: the protocol counts (every frame in exactly one of tcp, udp,
/// icmp, other) and, within them, SYNs, fragments and answers from amplification ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mix {
    /// Frames.
    pub packets: u64,
    /// TCP frames.
    pub tcp: u64,
    /// UDP frames.
    pub udp: u64,
    /// ICMP and ICMPv6 frames.
    pub icmp: u64,
    /// Other IP frames.
    pub other: u64,
    /// TCP SYN without ACK.
    pub syn: u64,
    /// IP fragments.
    pub fragments: u64,
    /// UDP frames from an amplification port, by that port.
    pub reflected: BTreeMap<u16, u64>,
}

impl Mix {
    /// Adds one source's counters.
    pub fn add_source(&mut self, stats: &SourceStats) {
        self.packets += stats.packets;
        self.tcp += stats.tcp_packets;
        self.udp += stats.udp_packets;
        self.icmp += stats.icmp_packets;
        self.other += stats.other_packets;
        self.syn += stats.tcp_syn_packets;
        self.fragments += stats.fragment_packets;
        if stats.reflected_packets > 0 {
            let port = u16::try_from(stats.reflected_port).unwrap_or(0);
            *self.reflected.entry(port).or_default() += stats.reflected_packets;
        }
    }

    /// Adds another mix.
    pub fn add(&mut self, other: &Mix) {
        self.packets += other.packets;
        self.tcp += other.tcp;
        self.udp += other.udp;
        self.icmp += other.icmp;
        self.other += other.other;
        self.syn += other.syn;
        self.fragments += other.fragments;
        for (port, packets) in &other.reflected {
            *self.reflected.entry(*port).or_default() += packets;
        }
    }

    /// Frames from amplification ports, whatever the port.
    pub fn reflected_packets(&self) -> u64 {
        self.reflected.values().sum()
    }
}

impl Interval {
    /// The sum of intervals read at the same time on several interfaces: the totals added, a
    /// source seen on more than one interface counted once with what it sent on each (its
    /// spread the largest, the distinct destinations of one interface being a lower bound of
    /// the whole), most bytes first. The elapsed time is the longest.
    pub fn combine(parts: &[Interval]) -> Interval {
        let mut sum = Interval::default();
        let mut index: std::collections::HashMap<IpAddr, usize> = std::collections::HashMap::new();
        for part in parts {
            sum.elapsed = sum.elapsed.max(part.elapsed);
            crate::datapath::add_globals(&mut sum.delta, &part.delta);
            crate::datapath::add_globals(&mut sum.cumulative, &part.cumulative);
            sum.tracked_sources += part.tracked_sources;
            sum.evicted_sources += part.evicted_sources;
            sum.unattributed.packets += part.unattributed.packets;
            sum.unattributed.bytes += part.unattributed.bytes;
            sum.unattributed_before.packets += part.unattributed_before.packets;
            sum.unattributed_before.bytes += part.unattributed_before.bytes;
            if part.overflow_reflected_port != 0 {
                sum.overflow_reflected_port = part.overflow_reflected_port;
            }
            sum.slotless.absorb(&part.slotless);
            add_traffic(&mut sum.destination_other, part.destination_other);
            // The counters add up; the matches are each interface's (alerts come from them).
            add_traffic(&mut sum.intel.listed, part.intel.listed);
            add_traffic(&mut sum.intel.unrecorded, part.intel.unrecorded);
            // The interfaces share one configuration: they count destinations alike.
            if sum.destination_count == DestinationCount::Off {
                sum.destination_count = part.destination_count;
            }
            for destination in &part.destinations {
                match sum
                    .destinations
                    .iter_mut()
                    .find(|into| into.addr == destination.addr)
                {
                    Some(into) => into.absorb(destination),
                    None => sum.destinations.push(destination.clone()),
                }
            }
            for source in &part.sources {
                match index.get(&source.addr) {
                    Some(&at) => {
                        let into = &mut sum.sources[at];
                        crate::datapath::add_source(&mut into.stats, &source.stats);
                        into.spread.ports = into.spread.ports.max(source.spread.ports);
                        into.spread.hosts = into.spread.hosts.max(source.spread.hosts);
                    }
                    None => {
                        index.insert(source.addr, sum.sources.len());
                        sum.sources.push(source.clone());
                    }
                }
            }
        }
        sum.sources
            .sort_unstable_by_key(|d| (Reverse(d.stats.bytes), Reverse(d.stats.packets), d.addr));
        sum.destinations
            .sort_by_key(|d| (Reverse(d.stats.packets), Reverse(d.stats.bytes), d.addr));
        sum
    }

    /// The mix of the traffic of every source and of the overflow (traffic without a slot):
    /// the whole interface's IP traffic.
    pub fn mix(&self) -> Mix {
        let mut mix = Mix::default();
        for source in &self.sources {
            mix.add_source(&source.stats);
        }
        let delta = &self.delta;
        mix.packets += delta.overflow_packets;
        mix.tcp += delta.overflow_tcp_packets;
        mix.udp += delta.overflow_udp_packets;
        mix.icmp += delta.overflow_icmp_packets;
        mix.other += delta.overflow_packets.saturating_sub(
            delta.overflow_tcp_packets + delta.overflow_udp_packets + delta.overflow_icmp_packets,
        );
        mix.syn += delta.overflow_syn_packets;
        mix.fragments += delta.overflow_fragment_packets;
        if delta.overflow_reflected_packets > 0 {
            *mix.reflected
                .entry(self.overflow_reflected_port)
                .or_default() += delta.overflow_reflected_packets;
        }
        mix
    }

    /// Packets per second over the interval for a count.
    pub fn rate(&self, count: u64) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    }
}

/// The last reading of a slot.
#[derive(Clone, Copy, Debug, Default)]
struct Last {
    key: SourceKey,
    stats: SourceStats,
    /// [`Collector::reading`] when it was read; 0 for never.
    reading: u64,
}

/// Remembers the previous reading.
#[derive(Debug, Default)]
pub struct Collector {
    /// The last reading of each slot, indexed by slot: the kernel hands slots out densely from
    /// 0, so a source's last reading is found by an index, not a hash, a million times per
    /// interval.
    last_sources: Vec<Last>,
    /// Sources in the previous reading.
    previous: usize,
    /// Number of the current reading, to tell the slots met in the previous one.
    reading: u64,
    last_globals: GlobalStats,
    /// Sum of all source deltas handed out so far.
    attributed: Volume,
    /// The unattributed gauge of the last reading.
    last_unattributed: Volume,
    /// The list of a past interval, given back by [`Collector::recycle`]: a million deltas
    /// written into memory already touched rather than into fresh pages each interval.
    spare: Vec<SourceDelta>,
    /// The indicator check's counters at the last reading.
    last_intel: (Traffic, Traffic),
}

impl Collector {
    /// A collector that has seen nothing: the first interval counts from zero, which is right
    /// for maps that were created empty when the program was loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Computes the interval that ends with `snapshot`.
    pub fn update(&mut self, snapshot: &Snapshot, elapsed: Duration) -> Interval {
        let Snapshot {
            globals,
            sources,
            released,
            overflow_reflected_port,
            overflow,
            destination_count,
            destinations,
            destination_other,
            intel,
        } = snapshot;
        let globals = *globals;
        let since = |now: Traffic, then: Traffic| Traffic {
            packets: now.packets.saturating_sub(then.packets),
            bytes: now.bytes.saturating_sub(then.bytes),
        };
        let intel = IntelReading {
            hits: intel.hits.clone(),
            listed: since(intel.listed, self.last_intel.0),
            unrecorded: since(intel.unrecorded, self.last_intel.1),
        };
        self.last_intel = (snapshot.intel.listed, snapshot.intel.unrecorded);
        let mut deltas = std::mem::take(&mut self.spare);
        deltas.clear();
        let mut evicted_now = 0u64;
        self.reading += 1;
        let reading = self.reading;
        // Sources of the last reading met again in this one; the others have left the map.
        let mut met_again = 0usize;
        let mut tracked_sources = 0usize;
        for SourceReading {
            slot,
            key,
            stats: current,
            spread,
        } in sources.iter().copied()
        {
            let index = slot as usize;
            if index >= self.last_sources.len() {
                self.last_sources.resize(index + 1, Last::default());
            }
            let last = &mut self.last_sources[index];
            let delta = if last.reading + 1 == reading && last.key == key {
                met_again += 1;
                source_delta(&current, &last.stats).unwrap_or_else(|| {
                    // Counters went down, which a slot in use never does: count what is
                    // there as new rather than invent a delta.
                    evicted_now += 1;
                    current
                })
            } else {
                current
            };
            *last = Last {
                key,
                stats: current,
                reading,
            };
            tracked_sources += 1;
            if delta.packets > 0 {
                self.attributed.packets += delta.packets;
                self.attributed.bytes += delta.bytes;
                deltas.push(SourceDelta {
                    addr: source_addr(&key),
                    stats: delta,
                    spread: spread.unwrap_or_default(),
                });
            }
        }
        // Slots cleared after this reading: whoever takes one next starts from zero.
        for &slot in released {
            if let Some(last) = self.last_sources.get_mut(slot as usize) {
                last.reading = 0;
            }
        }
        evicted_now += (self.previous - met_again) as u64;
        self.previous = tracked_sources;
        // Addresses are unique, so the order is total and an unstable sort is deterministic.
        deltas.sort_unstable_by_key(|d| (Reverse(d.stats.bytes), Reverse(d.stats.packets), d.addr));

        let delta = globals_delta(&globals, &self.last_globals);
        let unattributed = Volume {
            packets: globals.total_packets.saturating_sub(
                self.attributed.packets
                    + globals.non_ip_packets
                    + globals.malformed_packets
                    + globals.overflow_packets,
            ),
            bytes: globals.total_bytes.saturating_sub(
                self.attributed.bytes
                    + globals.non_ip_bytes
                    + globals.malformed_bytes
                    + globals.overflow_bytes,
            ),
        };
        self.last_globals = globals;
        let unattributed_before = std::mem::replace(&mut self.last_unattributed, unattributed);
        Interval {
            elapsed,
            delta,
            cumulative: globals,
            sources: deltas,
            tracked_sources,
            evicted_sources: evicted_now,
            unattributed,
            unattributed_before,
            overflow_reflected_port: if delta.overflow_reflected_packets > 0 {
                *overflow_reflected_port
            } else {
                0
            },
            slotless: overflow.clone(),
            destination_count: *destination_count,
            destinations: destinations.clone(),
            destination_other: *destination_other,
            intel,
        }
    }
}

impl Collector {
    /// Takes back the list of an interval that is done with, for the next one to fill.
    pub fn recycle(&mut self, interval: Interval) {
        self.spare = interval.sources;
    }
}

/// `current - last` field by field, or `None` if any counter went down.
fn source_delta(current: &SourceStats, last: &SourceStats) -> Option<SourceStats> {
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
    } = current;
    Some(SourceStats {
        packets: packets.checked_sub(last.packets)?,
        bytes: bytes.checked_sub(last.bytes)?,
        tcp_packets: tcp_packets.checked_sub(last.tcp_packets)?,
        udp_packets: udp_packets.checked_sub(last.udp_packets)?,
        icmp_packets: icmp_packets.checked_sub(last.icmp_packets)?,
        other_packets: other_packets.checked_sub(last.other_packets)?,
        tcp_syn_packets: tcp_syn_packets.checked_sub(last.tcp_syn_packets)?,
        fragment_packets: fragment_packets.checked_sub(last.fragment_packets)?,
        reflected_packets: reflected_packets.checked_sub(last.reflected_packets)?,
        // Not a counter: the port as last written.
        reflected_port: *reflected_port,
        _pad: 0,
    })
}

/// Global counters only grow (the array is never cleared), so saturating is only a guard.
fn globals_delta(current: &GlobalStats, last: &GlobalStats) -> GlobalStats {
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
    } = current;
    let since = |now: &u64, then: u64| now.saturating_sub(then);
    GlobalStats {
        overflow_tcp_packets: since(overflow_tcp_packets, last.overflow_tcp_packets),
        overflow_udp_packets: since(overflow_udp_packets, last.overflow_udp_packets),
        overflow_icmp_packets: since(overflow_icmp_packets, last.overflow_icmp_packets),
        overflow_syn_packets: since(overflow_syn_packets, last.overflow_syn_packets),
        overflow_fragment_packets: since(overflow_fragment_packets, last.overflow_fragment_packets),
        overflow_reflected_packets: since(
            overflow_reflected_packets,
            last.overflow_reflected_packets,
        ),
        sampled_packets: sampled_packets.saturating_sub(last.sampled_packets),
        sample_capped_packets: sample_capped_packets.saturating_sub(last.sample_capped_packets),
        sample_truncated_packets: since(sample_truncated_packets, last.sample_truncated_packets),
        sample_ring_full_packets: sample_ring_full_packets
            .saturating_sub(last.sample_ring_full_packets),
        total_packets: total_packets.saturating_sub(last.total_packets),
        total_bytes: total_bytes.saturating_sub(last.total_bytes),
        non_ip_packets: non_ip_packets.saturating_sub(last.non_ip_packets),
        non_ip_bytes: non_ip_bytes.saturating_sub(last.non_ip_bytes),
        malformed_packets: malformed_packets.saturating_sub(last.malformed_packets),
        malformed_bytes: malformed_bytes.saturating_sub(last.malformed_bytes),
        overflow_packets: overflow_packets.saturating_sub(last.overflow_packets),
        overflow_bytes: overflow_bytes.saturating_sub(last.overflow_bytes),
        truncated_packets: truncated_packets.saturating_sub(last.truncated_packets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(packets: u64, bytes: u64) -> SourceStats {
        SourceStats {
            packets,
            bytes,
            udp_packets: packets,
            ..SourceStats::default()
        }
    }

    fn globals(total: u64, bytes: u64) -> GlobalStats {
        GlobalStats {
            total_packets: total,
            total_bytes: bytes,
            ..GlobalStats::default()
        }
    }

    fn snapshot(total: (u64, u64), sources: &[(SourceKey, SourceStats)]) -> Snapshot {
        Snapshot {
            globals: globals(total.0, total.1),
            sources: sources
                .iter()
                .enumerate()
                .map(|(slot, &(key, stats))| SourceReading {
                    slot: slot as u32,
                    key,
                    stats,
                    spread: None,
                })
                .collect(),
            released: Vec::new(),
            overflow_reflected_port: 0,
            overflow: Default::default(),
            destination_count: Default::default(),
            destinations: Vec::new(),
            destination_other: Default::default(),
            intel: Default::default(),
        }
    }

    const A: SourceKey = SourceKey::ipv4([10, 0, 0, 1]);
    const B: SourceKey = SourceKey::ipv4([10, 0, 0, 2]);
    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn deltas_subtract_the_previous_reading() {
        let mut collector = Collector::new();
        let first = collector.update(&snapshot((10, 1000), &[(A, stats(10, 1000))]), SECOND);
        assert_eq!(first.sources[0].stats.packets, 10);
        let second = collector.update(&snapshot((25, 2500), &[(A, stats(25, 2500))]), SECOND);
        assert_eq!(second.sources.len(), 1);
        assert_eq!(second.sources[0].stats, stats(15, 1500));
        assert_eq!(second.delta.total_packets, 15);
        assert_eq!(second.unattributed, Volume::default());
        assert_eq!(second.evicted_sources, 0);
    }

    /// A slot that changes hands between readings starts its new source from zero, and the
    /// old source counts as evicted.
    #[test]
    fn a_slot_taken_by_another_source_starts_from_zero() {
        let mut collector = Collector::new();
        collector.update(&snapshot((10, 1000), &[(A, stats(10, 1000))]), SECOND);
        let next = collector.update(&snapshot((13, 1300), &[(B, stats(3, 300))]), SECOND);
        assert_eq!(next.sources.len(), 1);
        assert_eq!(next.sources[0].addr, source_addr(&B));
        assert_eq!(next.sources[0].stats, stats(3, 300));
        assert_eq!(next.evicted_sources, 1, "A lost its slot");
        assert_eq!(next.unattributed, Volume::default());
    }

    /// A released slot taken again by the same address, with more than it had: everything in
    /// it is new, though the address and the slot are the same.
    #[test]
    fn a_released_slot_taken_again_by_the_same_source_starts_from_zero() {
        let mut collector = Collector::new();
        let mut first = snapshot((10, 1000), &[(A, stats(10, 1000))]);
        first.released = vec![0];
        collector.update(&first, SECOND);
        let next = collector.update(&snapshot((25, 2500), &[(A, stats(15, 1500))]), SECOND);
        assert_eq!(next.sources[0].stats, stats(15, 1500));
        assert_eq!(next.evicted_sources, 1);
        assert_eq!(next.unattributed, Volume::default());
    }

    /// A source seen two readings ago, not in the last one, is not continued from its old
    /// counts.
    #[test]
    fn only_the_previous_reading_continues() {
        let mut collector = Collector::new();
        collector.update(&snapshot((10, 1000), &[(A, stats(10, 1000))]), SECOND);
        collector.update(&snapshot((10, 1000), &[]), SECOND);
        let third = collector.update(&snapshot((22, 2200), &[(A, stats(12, 1200))]), SECOND);
        assert_eq!(third.sources[0].stats, stats(12, 1200));
    }

    #[test]
    fn idle_sources_are_not_listed() {
        let mut collector = Collector::new();
        collector.update(&snapshot((5, 500), &[(A, stats(5, 500))]), SECOND);
        let next = collector.update(&snapshot((5, 500), &[(A, stats(5, 500))]), SECOND);
        assert!(next.sources.is_empty());
        assert_eq!(next.tracked_sources, 1);
    }

    #[test]
    fn recreated_entry_never_gives_a_negative_or_inflated_delta() {
        let mut collector = Collector::new();
        collector.update(&snapshot((100, 10_000), &[(A, stats(100, 10_000))]), SECOND);
        // A was evicted after 20 more packets and re-created with 3.
        let next = collector.update(&snapshot((123, 12_300), &[(A, stats(3, 300))]), SECOND);
        assert_eq!(next.sources[0].stats, stats(3, 300));
        assert_eq!(next.evicted_sources, 1);
        // The 20 packets lost with the old entry show up as unattributed, not as A's.
        assert_eq!(
            next.unattributed,
            Volume {
                packets: 20,
                bytes: 2000
            }
        );
    }

    #[test]
    fn a_vanished_source_counts_as_evicted_and_its_loss_as_unattributed() {
        let mut collector = Collector::new();
        collector.update(
            &snapshot((15, 1500), &[(A, stats(10, 1000)), (B, stats(5, 500))]),
            SECOND,
        );
        let next = collector.update(&snapshot((18, 1800), &[(A, stats(11, 1100))]), SECOND);
        assert_eq!(next.evicted_sources, 1);
        assert_eq!(next.sources.len(), 1);
        assert_eq!(next.unattributed.packets, 2);
    }

    #[test]
    fn sources_sort_by_bytes_then_packets() {
        let mut collector = Collector::new();
        let interval = collector.update(
            &snapshot((7, 700), &[(A, stats(2, 200)), (B, stats(5, 500))]),
            SECOND,
        );
        let order: Vec<IpAddr> = interval.sources.iter().map(|s| s.addr).collect();
        assert_eq!(order, vec![source_addr(&B), source_addr(&A)]);
    }

    #[test]
    fn blind_spots_balance_the_total() {
        let mut collector = Collector::new();
        let mut snap = snapshot((10, 1000), &[(A, stats(6, 600))]);
        snap.globals.non_ip_packets = 2;
        snap.globals.non_ip_bytes = 200;
        snap.globals.malformed_packets = 1;
        snap.globals.malformed_bytes = 100;
        snap.globals.overflow_packets = 1;
        snap.globals.overflow_bytes = 100;
        let interval = collector.update(&snap, SECOND);
        assert_eq!(interval.unattributed, Volume::default());
    }

    #[test]
    fn addresses_convert_for_both_families() {
        assert_eq!(source_addr(&A).to_string(), "10.0.0.1");
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[2] = 0x0d;
        v6[3] = 0xb8;
        v6[15] = 1;
        assert_eq!(source_addr(&SourceKey::ipv6(v6)).to_string(), "2001:db8::1");
    }

    #[test]
    fn rate_uses_the_measured_interval() {
        let mut collector = Collector::new();
        let interval = collector.update(&snapshot((0, 0), &[]), Duration::from_millis(500));
        assert_eq!(interval.rate(100), 200.0);
    }
}
