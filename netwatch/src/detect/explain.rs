//! Alerts that explain themselves: the top contributors (sources, and prefixes for the global
//! subject) of a global or prefix rate alert, a victim's top sender prefixes, and what the
//! traffic without a slot was when it makes a large share of the interface's.
//!
//! Owns the `contributors`, `slotless` and a victim's `detail` of alerts that start or
//! update; it must not change an alert's kind, state, subject or numbers, nor any detection
//! state (it only reads the baselines). What a flood is made of is [`super::attack`]'s.

use std::{collections::HashMap, net::IpAddr};

use super::{
    alert::{Alert, AlertKind, AlertState, Contributor, SlotlessEvidence, SlotlessShare, Subject},
    cidr::Cidr,
    detector::Detector,
    state::Volume,
};
use crate::collect::Interval;

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
            if let Subject::Destination(addr) = alert.subject {
                explain_destination(interval, addr, rate, top, alert);
                continue;
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
    alert.detail = Some(format!("~{} sources", destination.sources));
    let whole = destination.stats.packets.max(1) as f64;
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
    fn shares<T: Copy>(
        list: &[(T, crate::datapath::Traffic)],
        whole: f64,
        top: usize,
    ) -> Vec<SlotlessShare<T>> {
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
