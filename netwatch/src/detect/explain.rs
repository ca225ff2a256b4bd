//! Alerts that explain themselves: the top contributors (sources, and prefixes for the global
//! subject) of a global or prefix rate alert, whom a flood from a sender hit (its victims), a
//! victim's top sender prefixes, a local prefix's top hosts and senders, and what the traffic
//! without a slot was when it makes a large share of the interface's.
//!
//! Owns the `contributors`, `victims`, `slotless` and a victim's `detail` of alerts that start
//! or update; it must not change an alert's kind, state, subject or numbers, nor any detection
//! state (it only reads the baselines). What a flood is made of is [`super::attack`]'s.

use std::{collections::HashMap, net::IpAddr};

use super::{
    alert::{
        Alert, AlertKind, AlertState, Contributor, SlotlessEvidence, SlotlessShare, Subject, Victim,
    },
    attack::Attack,
    cidr::Cidr,
    detector::Detector,
    state::Volume,
};
use crate::{
    collect::{Interval, Mix},
    datapath::{DestinationCount, DestinationReading, SlotlessPrefix, Traffic, add_traffic},
};

impl Detector {
    /// Names the top contributors of the global and prefix rate alerts that start or update
    /// in this interval.
    pub(super) fn explain(
        &self,
        interval: &Interval,
        volumes: &HashMap<Subject, Volume>,
        rate: &impl Fn(u64) -> f64,
        alerts: &mut [Alert],
    ) {
        let top = self.config.contributors;
        if top == 0 {
            return;
        }
        for alert in alerts.iter_mut() {
            let reported = matches!(alert.state, AlertState::Start | AlertState::Update);
            // Only while the subject is over its rule: in a quiet interval of a running event
            // the hosts its traffic reaches are the usual ones.
            if reported
                && alert.kind.is_flood()
                && !alert.subject.receives()
                && alert.observed > alert.threshold
            {
                let whole = volumes
                    .get(&alert.subject)
                    .map_or(0, |volume| volume.packets);
                alert.victims = victims(interval, alert.subject, whole, rate, top);
            }
            let rate_rule = matches!(
                alert.kind,
                AlertKind::ThresholdPps
                    | AlertKind::ThresholdBps
                    | AlertKind::SpikePps
                    | AlertKind::HeavyHitter
            );
            if !rate_rule
                || matches!(alert.subject, Subject::Source(_))
                || !matches!(alert.state, AlertState::Start | AlertState::Update)
            {
                continue;
            }
            if alert.subject == Subject::Global {
                alert.slotless = slotless_evidence(interval, top);
            }
            match alert.subject {
                Subject::Destination(addr) => {
                    explain_destination(interval, addr, rate, top, alert);
                    continue;
                }
                // In a quiet interval of its event, the prefix's hosts receive as usual.
                Subject::DestinationPrefix(cidr) if alert.observed > alert.threshold => {
                    explain_destination_prefix(interval, cidr, rate, top, alert);
                    continue;
                }
                Subject::DestinationPrefix(_) => continue,
                _ => {}
            }
            let whole = volumes.get(&alert.subject).copied().unwrap_or_default();
            // The subject's excess, in the alert's unit: over its baseline, or over the
            // threshold crossed; all of a heavy hitter's rate, which has no baseline.
            let bits = alert.kind == AlertKind::ThresholdBps;
            let reference = match alert.kind {
                AlertKind::HeavyHitter => 0.0,
                _ => alert.baseline.unwrap_or(alert.threshold),
            };
            let excess = alert.observed - reference;
            let candidates: Vec<(Subject, Volume)> = match alert.subject {
                Subject::Prefix(cidr) => interval
                    .sources
                    .iter()
                    .filter(|source| cidr.contains(source.addr))
                    .map(|source| {
                        (
                            Subject::Source(source.addr),
                            Volume {
                                packets: source.stats.packets,
                                bytes: source.stats.bytes,
                            },
                        )
                    })
                    .collect(),
                // Senders only: a destination receives the traffic it is in.
                _ => volumes
                    .iter()
                    .filter(|(subject, _)| {
                        matches!(subject, Subject::Source(_) | Subject::Prefix(_))
                    })
                    .map(|(subject, volume)| (*subject, *volume))
                    .collect(),
            };
            let largest = |(a, va): &(Subject, Volume), (b, vb): &(Subject, Volume)| {
                vb.packets
                    .cmp(&va.packets)
                    .then(vb.bytes.cmp(&va.bytes))
                    .then(a.cmp(b))
            };
            // The top of each list without sorting a million sources.
            let (mut source_list, mut prefix_list): (Vec<_>, Vec<_>) = candidates
                .into_iter()
                .partition(|(subject, _)| !matches!(subject, Subject::Prefix(_)));
            for list in [&mut source_list, &mut prefix_list] {
                if list.len() > top {
                    list.select_nth_unstable_by(top - 1, largest);
                    list.truncate(top);
                }
                list.sort_by(largest);
            }
            source_list.append(&mut prefix_list);
            let candidates = source_list;
            // Sources first, then prefixes, each list largest first.
            let mut sources = Vec::new();
            let mut prefixes = Vec::new();
            for (subject, volume) in candidates {
                let list = match subject {
                    Subject::Prefix(_) => &mut prefixes,
                    _ => &mut sources,
                };
                if list.len() >= top || volume.packets == 0 {
                    continue;
                }
                let pps = rate(volume.packets);
                let bps = rate(volume.bytes) * 8.0;
                let baseline = self
                    .series
                    .get(&subject)
                    .filter(|series| series.ewma.samples() >= self.config.spike.warmup)
                    .map(|series| series.ewma.mean());
                // Baselines are of packet rates: a contributor's excess in bits is its rate.
                let own_excess = if bits {
                    bps
                } else {
                    pps - baseline.unwrap_or(0.0)
                };
                list.push(Contributor {
                    subject,
                    packets: volume.packets,
                    bytes: volume.bytes,
                    pps,
                    bps,
                    share: volume.packets as f64 / whole.packets.max(1) as f64,
                    excess_share: (excess > 0.0).then(|| (own_excess.max(0.0) / excess).min(1.0)),
                    new: baseline.is_none(),
                });
                if sources.len() >= top && prefixes.len() >= top {
                    break;
                }
            }
            sources.append(&mut prefixes);
            alert.contributors = sources;
        }
    }
}

/// A victim's alert: how many sources hit it (in `detail`), and its top sender prefixes as
/// contributors, their counts upper bounds (see
/// [`crate::datapath::DestinationReading::senders`]).
fn explain_destination(
    interval: &Interval,
    addr: IpAddr,
    rate: &impl Fn(u64) -> f64,
    top: usize,
    alert: &mut Alert,
) {
    let Some(destination) = interval.destinations.iter().find(|d| d.addr == addr) else {
        return;
    };
    alert.detail = Some(with_rule_detail(
        alert.detail.as_deref(),
        format!("~{} sources", destination.sources),
    ));
    let whole = destination.stats.packets.max(1) as f64;
    // The host is its own alert's victim: what it received, typed, and its main port (what a
    // signature rule against the attack needs).
    let mut mix = Mix::default();
    mix.add_source(&destination.stats);
    alert.victims = vec![Victim {
        addr,
        packets: destination.stats.packets,
        pps: rate(destination.stats.packets),
        share: 1.0,
        attack: Attack::classify(&mix).map(|attack| attack.kind),
        port: destination.port,
        sampled: None,
    }];
    alert.contributors = destination
        .senders
        .iter()
        .take(top)
        .map(|(prefix, traffic)| Contributor {
            subject: Subject::Prefix(Cidr::of(prefix.addr, prefix.len)),
            packets: traffic.packets,
            bytes: traffic.bytes,
            pps: rate(traffic.packets),
            bps: rate(traffic.bytes) * 8.0,
            share: (traffic.packets as f64 / whole).min(1.0),
            excess_share: None,
            new: false,
        })
        .collect();
}

/// The rule's own words, if it had any (a new victim's), then what the explanation adds.
fn with_rule_detail(rule: Option<&str>, explained: String) -> String {
    match rule {
        Some(rule) => format!("{rule}; {explained}"),
        None => explained,
    }
}

/// A local prefix's alert: how many of its hosts received traffic (in `detail`), and as
/// contributors its top hosts then the top sender prefixes of them all (upper bounds, as a
/// host's are).
fn explain_destination_prefix(
    interval: &Interval,
    cidr: Cidr,
    rate: &impl Fn(u64) -> f64,
    top: usize,
    alert: &mut Alert,
) {
    let mut hosts: Vec<&DestinationReading> = interval
        .destinations
        .iter()
        .filter(|host| cidr.contains(host.addr) && host.stats.packets > 0)
        .collect();
    if hosts.is_empty() {
        return;
    }
    let whole = hosts
        .iter()
        .map(|host| host.stats.packets)
        .sum::<u64>()
        .max(1) as f64;
    let mut senders: HashMap<SlotlessPrefix, Traffic> = HashMap::new();
    for host in &hosts {
        for (prefix, traffic) in &host.senders {
            add_traffic(senders.entry(*prefix).or_default(), *traffic);
        }
    }
    let most = hosts.iter().map(|host| host.sources).max().unwrap_or(0);
    alert.detail = Some(with_rule_detail(
        alert.detail.as_deref(),
        format!("{} hosts hit, ~{most} sources to the busiest", hosts.len()),
    ));
    hosts.sort_by(|a, b| {
        b.stats
            .packets
            .cmp(&a.stats.packets)
            .then(a.addr.cmp(&b.addr))
    });
    let mut senders: Vec<(SlotlessPrefix, Traffic)> = senders.into_iter().collect();
    senders.sort_by(|(a, x), (b, y)| y.packets.cmp(&x.packets).then(a.cmp(b)));
    let contributor = |subject, packets: u64, bytes: u64| Contributor {
        subject,
        packets,
        bytes,
        pps: rate(packets),
        bps: rate(bytes) * 8.0,
        share: (packets as f64 / whole).min(1.0),
        excess_share: None,
        new: false,
    };
    alert.contributors = hosts
        .iter()
        .take(top)
        .map(|host| {
            contributor(
                Subject::Destination(host.addr),
                host.stats.packets,
                host.stats.bytes,
            )
        })
        .chain(senders.iter().take(top).map(|(prefix, traffic)| {
            contributor(
                Subject::Prefix(Cidr::of(prefix.addr, prefix.len)),
                traffic.packets,
                traffic.bytes,
            )
        }))
        .collect();
}

/// The least share of a subject's packets that makes a host one of its victims: the hosts
/// that merely receive their usual traffic meanwhile are left out.
const VICTIM_MIN_SHARE: f64 = 0.01;

/// Whom the traffic of a sender subject went to this interval, largest first: every local
/// host (sampled: every host) for the global subject; for a source or a prefix, the hosts whose top senders hold
/// its /24 (IPv6 /48), with what those counted.
fn victims(
    interval: &Interval,
    subject: Subject,
    whole: u64,
    rate: &impl Fn(u64) -> f64,
    top: usize,
) -> Vec<Victim> {
    // Whether a host's top sender prefix holds the subject's traffic.
    let sends = |prefix: &SlotlessPrefix| {
        let sender = Cidr::of(prefix.addr, prefix.len);
        match subject {
            Subject::Source(addr) => sender.contains(addr),
            Subject::Prefix(cidr) => sender.contains(cidr.addr()) || cidr.contains(sender.addr()),
            Subject::Global | Subject::Destination(_) | Subject::DestinationPrefix(_) => false,
        }
    };
    let from = |destination: &DestinationReading| -> u64 {
        match subject {
            Subject::Global => destination.stats.packets,
            _ => destination
                .senders
                .iter()
                .filter(|(prefix, _)| sends(prefix))
                .map(|(_, traffic)| traffic.packets)
                .sum(),
        }
    };
    let mut hit: Vec<(u64, &DestinationReading)> = interval
        .destinations
        .iter()
        .map(|destination| (from(destination), destination))
        .filter(|(packets, _)| *packets as f64 >= VICTIM_MIN_SHARE * whole as f64 && *packets > 0)
        .collect();
    hit.sort_by(|(a, x), (b, y)| b.cmp(a).then(x.addr.cmp(&y.addr)));
    hit.into_iter()
        .take(top)
        .map(|(packets, destination)| {
            let mut mix = Mix::default();
            mix.add_source(&destination.stats);
            Victim {
                addr: destination.addr,
                packets,
                pps: rate(packets),
                share: (packets as f64 / whole.max(1) as f64).min(1.0),
                attack: Attack::classify(&mix).map(|attack| attack.kind),
                port: destination.port,
                sampled: match interval.destination_count {
                    DestinationCount::Sampled(one_in) => Some(one_in),
                    DestinationCount::Off | DestinationCount::Local => None,
                },
            }
        })
        .collect()
}

/// Slot-less traffic that makes a tenth of the interface's packets or more in this
/// interval; the shares of its breakdown from the kernel's window (which may be a few frames
/// off the interval's overflow count, see [`Interval::slotless`]).
const SLOTLESS_MIN_SHARE: f64 = 0.1;

/// What the traffic without a slot of this interval was, when it matters.
fn slotless_evidence(interval: &Interval, top: usize) -> Option<SlotlessEvidence> {
    let packets = interval.delta.overflow_packets;
    let share = packets as f64 / interval.delta.total_packets.max(1) as f64;
    let breakdown = &interval.slotless;
    if packets == 0 || share < SLOTLESS_MIN_SHARE || breakdown.total.packets == 0 {
        return None;
    }
    let whole = breakdown.total.packets as f64;
    fn shares<T: Copy>(list: &[(T, Traffic)], whole: f64, top: usize) -> Vec<SlotlessShare<T>> {
        list.iter()
            .take(top)
            .map(|(what, traffic)| SlotlessShare {
                what: *what,
                packets: traffic.packets,
                share: traffic.packets as f64 / whole,
            })
            .collect()
    }
    Some(SlotlessEvidence {
        packets,
        pps: interval.rate(packets),
        share,
        sources: breakdown.sources,
        prefixes: breakdown.prefixes,
        random_sources: breakdown.sources >= 1000
            && u64::from(breakdown.sources) * 4 >= breakdown.total.packets,
        targets: shares(&breakdown.targets, whole, top.min(3)),
        prefixes_top: shares(&breakdown.wide, whole, top.min(3)),
    })
}
