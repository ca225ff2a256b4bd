//! Mitigation, opt-in: bans that the kernel enforces where it counts, at XDP.
//!
//! The [`Mitigator`] decides. An alert that a rule of `[mitigate]` names bans its source or
//! the source's prefix for a time (longer for a repeat offender); `netwatch ban` adds and
//! removes bans by hand; a ban ends when its time is up. Nothing on the never-ban list (the
//! allowlist, the local networks, `mitigate.never`) is ever banned, and no more than
//! `mitigate.max_bans` bans exist at once. Every decision is a [`BanEvent`] that the report
//! stage writes everywhere an alert goes, and that the notify commands
//! ([`notify`]) receive.
//!
//! The kernel side is a [`BanTable`]: this module says which network has which index and
//! what a match meets, and never touches a map itself. In `dry-run` the kernel counts what it
//! would drop and drops nothing; with mitigation `off` (the default) no ban exists and the
//! program does not even look.

pub mod notify;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

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

/// What bans do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MitigateMode {
    /// No bans at all (the default): netwatch only watches.
    #[default]
    Off,
    /// Bans are decided, kept and reported, and the kernel counts what they would drop, but
    /// every frame passes.
    DryRun,
    /// Frames from banned networks are dropped in XDP, after they are counted.
    Drop,
}

impl MitigateMode {
    /// `off`, `dry-run` or `drop`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::DryRun => "dry-run",
            Self::Drop => "drop",
        }
    }
}

/// What a rule bans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BanSubject {
    /// The alert's source address (alerts on a source only).
    Source,
    /// The alert's prefix: a prefix alert's network, or a source alert's source in the
    /// aggregate of `detect.prefix_v4` / `detect.prefix_v6`.
    Prefix,
}

/// `[[mitigate.rules]]`: which alerts ban what, for how long.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanRule {
    /// The alert kinds that ban (at the alert's start, and at its updates while it goes on).
    pub alerts: Vec<AlertKind>,
    /// What they ban.
    pub subject: BanSubject,
    /// How long a first ban lasts; each ban of the same network within
    /// `mitigate.forget_after` lasts twice the one before.
    #[serde(with = "crate::duration")]
    pub ttl: Duration,
    /// The longest a ban of this rule lasts, however often its network offended.
    #[serde(with = "crate::duration")]
    pub max_ttl: Duration,
}

impl Default for BanRule {
    fn default() -> Self {
        Self {
            alerts: vec![
                AlertKind::ThresholdPps,
                AlertKind::ThresholdBps,
                AlertKind::SynFlood,
            ],
            subject: BanSubject::Source,
            ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[mitigate]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MitigateConfig {
    /// `off` (the default), `dry-run` or `drop`.
    pub mode: MitigateMode,
    /// Which alerts ban what. The default: a source over a per-source threshold (packets or
    /// bits) or sending a SYN flood, for 10 minutes, doubling up to a day.
    pub rules: Vec<BanRule>,
    /// Most bans at once; a ban past it is refused and reported. Room in the kernel is made
    /// at start.
    pub max_bans: u32,
    /// Addresses and networks never banned, besides `detect.unknown.allowlist` and
    /// `networks.local`.
    pub never: Vec<Cidr>,
    /// Commands run at each ban and unban, the event as one JSON line on standard input.
    pub notify: Vec<PathBuf>,
    /// How long a notify command may run before it is killed.
    #[serde(with = "crate::duration")]
    pub notify_timeout: Duration,
    /// How long `netwatch ban add` bans without `--ttl`.
    #[serde(with = "crate::duration")]
    pub manual_ttl: Duration,
    /// How long a network's past bans count toward doubling the next one.
    #[serde(with = "crate::duration")]
    pub forget_after: Duration,
}

impl Default for MitigateConfig {
    fn default() -> Self {
        Self {
            mode: MitigateMode::Off,
            rules: vec![BanRule::default()],
            max_bans: 1024,
            never: Vec::new(),
            notify: Vec::new(),
            notify_timeout: Duration::from_secs(10),
            manual_ttl: Duration::from_secs(3600),
            forget_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// The most `mitigate.max_bans` may be.
pub const MAX_BANS: u32 = 65_536;
/// The widest IPv4 network a ban may take: a /8. A wider one (a typo, `0.0.0.0/0`) would cut
/// the host off.
pub const WIDEST_V4: u8 = 8;
/// The widest IPv6 network a ban may take: a /32, an ISP's allocation.
pub const WIDEST_V6: u8 = 32;

impl MitigateConfig {
    /// Checks every value: the field and the reason of the first bad one.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |field: &str, reason: &str| Err((field.to_owned(), reason.to_owned()));
        if !(1..=MAX_BANS).contains(&self.max_bans) {
            return invalid("mitigate.max_bans", &format!("must be 1 to {MAX_BANS}"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = |name: &str| format!("mitigate.rules[{i}].{name}");
            if rule.alerts.is_empty() {
                return invalid(&field("alerts"), "names no alert kind");
            }
            if let Some(kind) = rule
                .alerts
                .iter()
                .find(|kind| matches!(kind, AlertKind::TrackingCapacity | AlertKind::Suppressed))
            {
                return invalid(
                    &field("alerts"),
                    &format!("{} names no attacker and cannot ban", kind.name()),
                );
            }
            if rule.ttl < Duration::from_secs(1) {
                return invalid(&field("ttl"), "must be at least 1s");
            }
            if rule.max_ttl < rule.ttl {
                return invalid(&field("max_ttl"), "must be at least ttl");
            }
        }
        if self.manual_ttl < Duration::from_secs(1) {
            return invalid("mitigate.manual_ttl", "must be at least 1s");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&self.notify_timeout) {
            return invalid("mitigate.notify_timeout", "must be 100ms to 10m");
        }
        for command in &self.notify {
            if !command.is_absolute() {
                return invalid(
                    "mitigate.notify",
                    &format!("{} is not an absolute path", command.display()),
                );
            }
        }
        Ok(())
    }
}

/// The kernel's ban list, for every interface watched.
pub trait BanTable {
    /// Bans `net` under `index`, its counters from zero.
    fn set(&mut self, index: u32, net: Cidr) -> Result<(), String>;
    /// Lifts the ban of `net`.
    fn clear(&mut self, net: Cidr) -> Result<(), String>;
    /// What ban `index` matched so far: packets and bytes.
    fn counts(&mut self, index: u32) -> (u64, u64);
    /// What a match meets; `None`: the kernel does not look.
    fn set_action(&mut self, action: Option<BanAction>) -> Result<(), String>;
    /// Waits until frames that found an entry cleared just before have been counted.
    fn settle(&mut self) {}
}

/// Who asked for a ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A rule, on an alert.
    Alert,
    /// `netwatch ban add`.
    Manual,
}

impl Origin {
    /// `alert` or `manual`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Manual => "manual",
        }
    }

    /// The origin a stored name stands for.
    pub fn from_name(name: &str) -> Self {
        if name == "manual" {
            Self::Manual
        } else {
            Self::Alert
        }
    }
}

/// The alert that caused a ban.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertRef {
    /// Its id (every line of the event has it).
    pub id: String,
    /// Its kind.
    pub kind: AlertKind,
}

/// What a ban is: the network, who asked for it and why, when it began and ends. The
/// store keeps these, and a ban restored at start is made of them again.
#[derive(Clone, Debug, PartialEq)]
pub struct BanTerms {
    /// The network banned (a host as /32 or /128).
    pub net: Cidr,
    /// Who asked for it.
    pub origin: Origin,
    /// Why, in words.
    pub reason: String,
    /// The alert behind it, for a ban of a rule.
    pub alert: Option<AlertRef>,
    /// The interface of that alert (`all` for a ban by hand).
    pub iface: String,
    /// When it began, since the Unix epoch.
    pub created: Duration,
    /// When it ends.
    pub expires: Duration,
    /// 1 for a first ban of the network, 2 for the next within `forget_after`, ...
    pub offence: u32,
}

/// One ban in force: its terms, its counter in the kernel and what it matched so far.
#[derive(Clone, Debug, PartialEq)]
pub struct Ban {
    /// What the ban is.
    pub terms: BanTerms,
    /// Its index in the kernel's counters.
    index: u32,
    /// Packets it matched (dropped, or in a dry run passed) so far.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Ban {
    /// A ban of `terms`, not in the kernel yet.
    fn new(terms: BanTerms) -> Self {
        Self {
            terms,
            index: 0,
            packets: 0,
            bytes: 0,
        }
    }
}

/// What happened to a ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BanChange {
    /// A network is banned.
    Ban,
    /// A ban ended.
    Unban,
    /// A ban was asked for and not made (never-ban list, `max_bans`, the kernel refused).
    Refused,
    /// A ban kept in the store was applied again at start.
    Restore,
}

impl BanChange {
    /// `ban`, `unban`, `refused` or `restore`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ban => "ban",
            Self::Unban => "unban",
            Self::Refused => "refused",
            Self::Restore => "restore",
        }
    }
}

/// One decision of the mitigator, as every report output and notify command sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct BanEvent {
    /// When, since the Unix epoch.
    pub at: Duration,
    /// What happened.
    pub change: BanChange,
    /// The network.
    pub net: Cidr,
    /// `dry-run` or `drop` at the time.
    pub mode: MitigateMode,
    /// Who asked for it.
    pub origin: Origin,
    /// Why the ban was asked for.
    pub reason: String,
    /// The alert behind it.
    pub alert: Option<AlertRef>,
    /// That alert's interface, or `all`.
    pub iface: String,
    /// When the ban began (a ban, restore or unban).
    pub created: Option<Duration>,
    /// When it ends (a ban or restore).
    pub expires: Option<Duration>,
    /// Its offence number.
    pub offence: u32,
    /// For an unban: the packets it matched over its life.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Why it ended or was refused.
    pub why: Option<String>,
}

impl BanEvent {
    fn of(ban: &Ban, change: BanChange, mode: MitigateMode, at: Duration) -> Self {
        Self {
            at,
            change,
            net: ban.terms.net,
            mode,
            origin: ban.terms.origin,
            reason: ban.terms.reason.clone(),
            alert: ban.terms.alert.clone(),
            iface: ban.terms.iface.clone(),
            created: Some(ban.terms.created),
            expires: (change != BanChange::Unban).then_some(ban.terms.expires),
            offence: ban.terms.offence,
            packets: ban.packets,
            bytes: ban.bytes,
            why: None,
        }
    }

    /// True for what the notify commands receive: bans and unbans.
    pub fn is_notified(&self) -> bool {
        matches!(self.change, BanChange::Ban | BanChange::Unban)
    }
}

/// Why `netwatch ban add` or `remove` was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BanRefusal {
    /// Mitigation is off.
    #[error("mitigation is off: set [mitigate] mode = \"dry-run\" or \"drop\" and restart")]
    Off,
    /// On the never-ban list.
    #[error("{net} is never banned: it overlaps {never} ({from})")]
    Never {
        /// The network asked for.
        net: Cidr,
        /// The never-ban network it overlaps.
        never: Cidr,
        /// Where that network is configured.
        from: &'static str,
    },
    /// `max_bans` bans exist.
    #[error("{0} bans exist, the most mitigate.max_bans allows")]
    Full(u32),
    /// Banned already.
    #[error("{net} is banned already, until {until}")]
    Exists {
        /// The network.
        net: Cidr,
        /// When that ban ends, RFC 3339.
        until: String,
    },
    /// Not banned.
    #[error("{0} is not banned (see `netwatch ban list`)")]
    NotBanned(Cidr),
    /// Wider than a ban may be.
    #[error("{net} is wider than a ban may be (/{widest} at most): it would cut this host off")]
    TooWide {
        /// The network asked for.
        net: Cidr,
        /// The shortest prefix allowed.
        widest: u8,
    },
    /// The kernel refused the entry.
    #[error("the kernel refused the ban of {net}: {reason}")]
    Kernel {
        /// The network.
        net: Cidr,
        /// What it said.
        reason: String,
    },
}

/// Decides bans, keeps those in force, and drives the kernel's list.
pub struct Mitigator {
    config: MitigateConfig,
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

/// The host network of `addr` (/32 or /128).
pub fn host(addr: IpAddr) -> Cidr {
    Cidr::of(addr, 128)
}

#[cfg(test)]
mod tests;
