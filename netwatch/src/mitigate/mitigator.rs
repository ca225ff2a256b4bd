//! The [`Mitigator`]: the bans in force, and every decision on them. An alert that a rule
//! names bans ([`Mitigator::on_alert`]), `netwatch ban` adds and removes by hand, a tick ends
//! the bans whose time is up, a start restores the stored ones, a reload ends the ones the new
//! settings refuse. Owns the never-ban list ([`NeverBan`]), the doubling of a repeat
//! offender's ban, the counter indexes and their cooling down, and what a match meets in the
//! kernel.
//!
//! It must not touch a map itself (it tells a [`BanTable`]), read a clock (the time is
//! given), nor report or notify (the caller does, from the [`BanEvent`]s it returns).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    time::Duration,
};

use super::{
    ban::{AlertRef, Ban, BanChange, BanEvent, BanRefusal, BanTable, BanTerms, Origin, special},
    config::{BanSubject, MitigateConfig, MitigateMode, WIDEST_V4, WIDEST_V6},
};
use crate::{
    datapath::{BanAction, ban_counters},
    detect::{
        alert::{Alert, AlertKind, AlertState, Subject},
        cidr::Cidr,
    },
};

/// Distinct alerts remembered as refused, so that an event's updates do not repeat the
/// refusal; past it the memory starts over.
const REFUSED_MEMORY: usize = 4_096;
/// Networks whose past bans are remembered for the doubling, at most.
const OFFENCE_MEMORY: usize = 65_536;

/// Decides bans, keeps those in force, and drives the kernel's list.
pub struct Mitigator {
    pub(super) config: MitigateConfig,
    /// Networks never banned, with where each is configured.
    never: Vec<(Cidr, &'static str)>,
    prefix_v4: u8,
    prefix_v6: u8,
    bans: BTreeMap<Cidr, Ban>,
    /// Counter indexes free to take.
    free: Vec<u32>,
    /// The next index never taken.
    next_index: u32,
    /// Indexes of bans ended since the last tick, then those ended before it: an index is
    /// taken again only once a whole interval has passed, so that a frame that found the old
    /// ban just before it was lifted never counts for a new one.
    retiring: Vec<u32>,
    cooling: Vec<u32>,
    /// Past bans of each network: how many, and the last one's start.
    offences: HashMap<Cidr, (u32, Duration)>,
    /// Alerts whose ban was refused already.
    refused: HashSet<String>,
    /// What the kernel was last told a match meets.
    action: Option<Option<BanAction>>,
}

impl fmt::Debug for Mitigator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mitigator")
            .field("mode", &self.config.mode)
            .field("bans", &self.bans.len())
            .finish_non_exhaustive()
    }
}

/// Where the never-ban networks come from, for messages.
pub struct NeverBan<'a> {
    /// `detect.unknown.allowlist`.
    pub allowlist: &'a [Cidr],
    /// `networks.local`.
    pub local: &'a [Cidr],
}

impl Mitigator {
    /// A mitigator for `config`; `prefix_v4`/`prefix_v6` are detection's aggregates.
    pub fn new(config: MitigateConfig, never: &NeverBan<'_>, prefix_v4: u8, prefix_v6: u8) -> Self {
        let mut mitigator = Self {
            config,
            never: Vec::new(),
            prefix_v4,
            prefix_v6,
            bans: BTreeMap::new(),
            free: Vec::new(),
            next_index: 0,
            retiring: Vec::new(),
            cooling: Vec::new(),
            offences: HashMap::new(),
            refused: HashSet::new(),
            action: None,
        };
        mitigator.set_never(never);
        mitigator
    }

    fn set_never(&mut self, never: &NeverBan<'_>) {
        self.never = self
            .config
            .never
            .iter()
            .map(|net| (*net, "mitigate.never"))
            .chain(
                never
                    .allowlist
                    .iter()
                    .map(|net| (*net, "detect.unknown.allowlist")),
            )
            .chain(never.local.iter().map(|net| (*net, "networks.local")))
            .collect();
    }

    /// The mode.
    pub fn mode(&self) -> MitigateMode {
        self.config.mode
    }

    /// The bans in force, by network.
    pub fn bans(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values()
    }

    /// Remembers past bans (network, start, end) toward the doubling, e.g. from the store.
    pub fn remember(&mut self, past: impl IntoIterator<Item = (Cidr, Duration, Duration)>) {
        for (net, created, expires) in past {
            self.offence(net, created, expires);
        }
    }

    /// Counts a ban of `net` from `created` to `expires`: a network is forgotten
    /// `forget_after` after its last ban's end, so that the longest bans count too.
    fn offence(&mut self, net: Cidr, created: Duration, expires: Duration) -> u32 {
        let forget = self.config.forget_after;
        if self.offences.len() >= OFFENCE_MEMORY && !self.offences.contains_key(&net) {
            self.offences
                .retain(|_, (_, last)| created.saturating_sub(*last) < forget);
            if self.offences.len() >= OFFENCE_MEMORY {
                self.offences.clear();
            }
        }
        let entry = self.offences.entry(net).or_insert((0, expires));
        if created.saturating_sub(entry.1) >= forget {
            *entry = (0, expires);
        }
        entry.0 += 1;
        entry.1 = entry.1.max(expires);
        entry.0
    }

    fn prior_offences(&self, net: Cidr, now: Duration) -> u32 {
        match self.offences.get(&net) {
            Some((count, last)) if now.saturating_sub(*last) < self.config.forget_after => *count,
            _ => 0,
        }
    }

    /// The never-ban network `net` overlaps, if any.
    fn never_banned(&self, net: Cidr) -> Option<(Cidr, &'static str)> {
        self.never
            .iter()
            .find(|(never, _)| overlaps(*never, net))
            .copied()
    }

    /// The ban in force that covers all of `net`, if any.
    fn covered(&self, net: Cidr) -> Option<&Ban> {
        self.bans.values().find(|ban| {
            ban.terms.net.prefix_len() <= net.prefix_len() && ban.terms.net.contains(net.addr())
        })
    }

    /// The bans `alert` causes under the rules (none with mitigation off, at an alert's end,
    /// or for a subject banned already), applied to `table`.
    pub fn on_alert(
        &mut self,
        iface: &str,
        alert: &Alert,
        table: &mut dyn BanTable,
        now: Duration,
    ) -> Vec<BanEvent> {
        if self.config.mode == MitigateMode::Off || alert.state == AlertState::End {
            return Vec::new();
        }
        // An indicator's alert is about a listed source only when its frames came from it;
        // else its subject is a local host, which a ban would cut off.
        if alert.kind == AlertKind::Intel && alert.intel.as_ref().is_none_or(|m| m.seen != "source")
        {
            return Vec::new();
        }
        let Some((net, rule)) = self.config.rules.iter().find_map(|rule| {
            if !rule.alerts.contains(&alert.kind) {
                return None;
            }
            let net = match (alert.subject, rule.subject) {
                (Subject::Source(addr), BanSubject::Source) => Cidr::of(addr, 128),
                (Subject::Source(addr), BanSubject::Prefix) => Cidr::of(
                    addr,
                    if addr.is_ipv4() {
                        self.prefix_v4
                    } else {
                        self.prefix_v6
                    },
                ),
                (Subject::Prefix(cidr), BanSubject::Prefix) => cidr,
                _ => return None,
            };
            Some((net, rule.clone()))
        }) else {
            return Vec::new();
        };
        if self.covered(net).is_some() {
            return Vec::new();
        }
        let offence = self.prior_offences(net, now) + 1;
        let doublings = offence.saturating_sub(1).min(32);
        let ttl = rule
            .ttl
            .saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .min(rule.max_ttl);
        let reason = alert_reason(alert);
        let ban = Ban::new(BanTerms {
            net,
            origin: Origin::Alert,
            reason,
            alert: Some(AlertRef {
                id: alert.id.clone(),
                kind: alert.kind,
                capture: alert.capture.as_ref().map(|capture| capture.file.clone()),
            }),
            iface: iface.to_owned(),
            created: now,
            expires: now + ttl,
            offence,
        });
        match self.admit(ban, true, table) {
            Ok(event) => vec![event],
            Err(refused) => {
                let (ban, refusal) = *refused;
                // Said once per alert event: its updates would say it again.
                if self.refused.len() >= REFUSED_MEMORY {
                    self.refused.clear();
                }
                if self.refused.insert(alert.id.clone()) {
                    let mut event = BanEvent::of(&ban, BanChange::Refused, self.config.mode, now);
                    event.created = None;
                    event.expires = None;
                    event.why = Some(refusal.to_string());
                    vec![event]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Bans `net` by hand for `ttl` (`mitigate.manual_ttl` without one).
    pub fn add(
        &mut self,
        net: Cidr,
        ttl: Option<Duration>,
        reason: Option<String>,
        table: &mut dyn BanTable,
        now: Duration,
    ) -> Result<BanEvent, BanRefusal> {
        if self.config.mode == MitigateMode::Off {
            return Err(BanRefusal::Off);
        }
        if let Some(ban) = self.bans.get(&net) {
            return Err(BanRefusal::Exists {
                net,
                until: crate::time_text::rfc3339(std::time::UNIX_EPOCH + ban.terms.expires),
            });
        }
        let offence = self.prior_offences(net, now) + 1;
        let ban = Ban::new(BanTerms {
            net,
            origin: Origin::Manual,
            reason: reason.unwrap_or_else(|| String::from("banned by hand")),
            alert: None,
            iface: String::from(crate::collect::COMBINED),
            created: now,
            expires: now + ttl.unwrap_or(self.config.manual_ttl),
            offence,
        });
        self.admit(ban, true, table).map_err(|refused| refused.1)
    }

    /// Lifts the ban of exactly `net` by hand.
    pub fn remove(
        &mut self,
        net: Cidr,
        table: &mut dyn BanTable,
        now: Duration,
    ) -> Result<BanEvent, BanRefusal> {
        if !self.bans.contains_key(&net) {
            return Err(BanRefusal::NotBanned(net));
        }
        let event = self
            .end(vec![(net, String::from("removed by hand"))], table, now)
            .pop();
        self.update_action(table);
        event.ok_or(BanRefusal::NotBanned(net))
    }

    /// Checks `ban` against the never-ban list, the widest network allowed and `max_bans`,
    /// gives it an index and puts it in the kernel. A `new` ban counts as an offence; one
    /// restored from the store was counted when it began.
    fn admit(
        &mut self,
        mut ban: Ban,
        new: bool,
        table: &mut dyn BanTable,
    ) -> Result<BanEvent, Box<(Ban, BanRefusal)>> {
        if let Some((never, from)) = self.never_banned(ban.terms.net) {
            let net = ban.terms.net;
            return Err(Box::new((ban, BanRefusal::Never { net, never, from })));
        }
        if let Some(what) = special(ban.terms.net) {
            let net = ban.terms.net;
            return Err(Box::new((ban, BanRefusal::Special { net, what })));
        }
        let widest = if ban.terms.net.addr().is_ipv4() {
            WIDEST_V4
        } else {
            WIDEST_V6
        };
        if ban.terms.net.prefix_len() < widest {
            let net = ban.terms.net;
            return Err(Box::new((ban, BanRefusal::TooWide { net, widest })));
        }
        if self.bans.len() >= self.config.max_bans as usize {
            return Err(Box::new((ban, BanRefusal::Full(self.config.max_bans))));
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None if self.next_index < ban_counters(self.config.max_bans) => {
                self.next_index += 1;
                self.next_index - 1
            }
            None => {
                // Every counter is in use or still cooling down from a ban that just ended.
                return Err(Box::new((ban, BanRefusal::Full(self.config.max_bans))));
            }
        };
        ban.index = index;
        if let Err(reason) = table.set(index, ban.terms.net) {
            self.free.push(index);
            // A half-made entry (one interface of several) must not stay behind.
            let _ = table.clear(ban.terms.net);
            let net = ban.terms.net;
            let reason = reason.to_string();
            return Err(Box::new((ban, BanRefusal::Kernel { net, reason })));
        }
        if new {
            self.offence(ban.terms.net, ban.terms.created, ban.terms.expires);
        }
        let event = BanEvent::of(&ban, BanChange::Ban, self.config.mode, ban.terms.created);
        self.bans.insert(ban.terms.net, ban);
        self.update_action(table);
        Ok(event)
    }

    /// Ends the bans of `nets`, each with its `why`: out of the kernel first, then, once the
    /// frames that found them have been counted, their last counts read, so that the events'
    /// totals are final.
    fn end(
        &mut self,
        nets: Vec<(Cidr, String)>,
        table: &mut dyn BanTable,
        now: Duration,
    ) -> Vec<BanEvent> {
        let mut ended = Vec::with_capacity(nets.len());
        for (net, why) in nets {
            let Some(ban) = self.bans.remove(&net) else {
                continue;
            };
            let cleared = table.clear(net);
            ended.push((ban, why, cleared));
        }
        if ended.is_empty() {
            return Vec::new();
        }
        table.settle();
        ended
            .into_iter()
            .map(|(mut ban, why, cleared)| {
                let (packets, bytes) = table.counts(ban.index);
                ban.packets = ban.packets.max(packets);
                ban.bytes = ban.bytes.max(bytes);
                match cleared {
                    Ok(()) => self.retiring.push(ban.index),
                    // The entry may still match: its counter is never handed to another ban.
                    Err(reason) => log::error!(
                        "lifting the ban of {} in the kernel failed: {reason}; its counter {} is left out of use",
                        ban.terms.net,
                        ban.index
                    ),
                }
                let mut event = BanEvent::of(&ban, BanChange::Unban, self.config.mode, now);
                event.why = Some(why);
                event
            })
            .collect()
    }

    /// Once an interval: indexes cool down, each ban's counts are read, and bans whose time is
    /// up end.
    pub fn tick(&mut self, table: &mut dyn BanTable, now: Duration) -> Vec<BanEvent> {
        self.free.append(&mut self.cooling);
        std::mem::swap(&mut self.cooling, &mut self.retiring);
        for ban in self.bans.values_mut() {
            let (packets, bytes) = table.counts(ban.index);
            ban.packets = packets;
            ban.bytes = bytes;
        }
        let due: Vec<(Cidr, String)> = self
            .bans
            .values()
            .filter(|ban| ban.terms.expires <= now)
            .map(|ban| (ban.terms.net, String::from("expired")))
            .collect();
        let events = self.end(due, table, now);
        self.update_action(table);
        events
    }

    /// Applies the bans the store kept: those still in force again (a `restore`), those whose
    /// time ran out while netwatch was stopped ended (an `unban`).
    pub fn restore(
        &mut self,
        stored: Vec<BanTerms>,
        table: &mut dyn BanTable,
        now: Duration,
    ) -> Vec<BanEvent> {
        let mut events = Vec::new();
        for terms in stored {
            let ban = Ban::new(terms);
            let mode = self.config.mode;
            let ended = |why: String| {
                let mut event = BanEvent::of(&ban, BanChange::Unban, mode, now);
                event.why = Some(why);
                event
            };
            if self.config.mode == MitigateMode::Off {
                events.push(ended(String::from("mitigation is off")));
                continue;
            }
            if ban.terms.expires <= now {
                events.push(ended(String::from("expired while netwatch was stopped")));
                continue;
            }
            if self.bans.contains_key(&ban.terms.net) {
                continue;
            }
            match self.admit(ban.clone(), false, table) {
                Ok(mut event) => {
                    event.change = BanChange::Restore;
                    event.at = now;
                    events.push(event);
                }
                Err(refused) => events.push(ended(format!("not applied again: {}", refused.1))),
            }
        }
        events
    }

    /// Takes a new configuration (a reload): bans that it would refuse end, all of them when
    /// mitigation is turned off. `max_bans` only shrinks what is admitted from now on.
    pub fn reconfigure(
        &mut self,
        config: MitigateConfig,
        never: &NeverBan<'_>,
        table: &mut dyn BanTable,
        now: Duration,
    ) -> Vec<BanEvent> {
        self.config = config;
        self.set_never(never);
        let refused: Vec<(Cidr, String)> = self
            .bans
            .keys()
            .filter_map(|net| {
                let why = if self.config.mode == MitigateMode::Off {
                    String::from("mitigation turned off")
                } else {
                    let (never, from) = self.never_banned(*net)?;
                    format!("never banned now: it overlaps {never} ({from})")
                };
                Some((*net, why))
            })
            .collect();
        let events = self.end(refused, table, now);
        self.update_action(table);
        events
    }

    /// What a match should meet now.
    fn wanted_action(&self) -> Option<BanAction> {
        if self.bans.is_empty() {
            return None;
        }
        match self.config.mode {
            MitigateMode::Off => None,
            MitigateMode::DryRun => Some(BanAction::Count),
            MitigateMode::Drop => Some(BanAction::Drop),
        }
    }

    fn update_action(&mut self, table: &mut dyn BanTable) {
        let wanted = self.wanted_action();
        if self.action == Some(wanted) {
            return;
        }
        match table.set_action(wanted) {
            Ok(()) => self.action = Some(wanted),
            Err(reason) => log::error!("setting what bans do in the kernel failed: {reason}"),
        }
    }
}

/// True when the networks share an address.
fn overlaps(a: Cidr, b: Cidr) -> bool {
    a.addr().is_ipv4() == b.addr().is_ipv4() && (a.contains(b.addr()) || b.contains(a.addr()))
}

/// An alert's kind, subject and rate, in words: the reason of its ban.
fn alert_reason(alert: &Alert) -> String {
    format!(
        "{} {} {:.0} {} over {:.0}",
        alert.kind.name(),
        alert.subject,
        alert.observed,
        alert.kind.unit(),
        alert.threshold
    )
}
