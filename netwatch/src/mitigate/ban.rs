//! What a ban is and what is said of it: the kernel's side as the mitigator sees it
//! ([`BanTable`]), who asked for a ban ([`Origin`], [`AlertRef`]), its terms ([`BanTerms`]),
//! a ban in force ([`Ban`]), the decisions reported ([`BanChange`], [`BanEvent`]), the reasons
//! a ban is refused ([`BanRefusal`]), and a host's network ([`host`]).
//!
//! Plain data: it decides no ban and keeps none in force (the mitigator does), and never
//! touches a map itself; of this module it imports only the mode, from the settings.

use std::time::Duration;

use serde::Serialize;

use super::config::MitigateMode;
use crate::{
    datapath::{BanAction, DatapathError},
    detect::{alert::AlertKind, cidr::Cidr},
};

/// The kernel's ban list, for every interface watched.
pub trait BanTable {
    /// Bans `net` under `index`, its counters from zero.
    fn set(&mut self, index: u32, net: Cidr) -> Result<(), DatapathError>;
    /// Lifts the ban of `net`.
    fn clear(&mut self, net: Cidr) -> Result<(), DatapathError>;
    /// What ban `index` matched so far: packets and bytes.
    fn counts(&mut self, index: u32) -> (u64, u64);
    /// What a match meets; `None`: the kernel does not look.
    fn set_action(&mut self, action: Option<BanAction>) -> Result<(), DatapathError>;
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
    /// Its event's packet capture (a file in the captures' folder), when it has one; not
    /// kept across a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
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
    pub(super) index: u32,
    /// Packets it matched (dropped, or in a dry run passed) so far.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Ban {
    /// A ban of `terms`, not in the kernel yet.
    pub(super) fn new(terms: BanTerms) -> Self {
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
    pub(super) fn of(ban: &Ban, change: BanChange, mode: MitigateMode, at: Duration) -> Self {
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
    /// An address no traffic worth banning comes from: unspecified, loopback, multicast,
    /// broadcast or link-local.
    #[error(
        "{net} is {what}: no attack comes from there that a ban could stop, and a ban could cut this host off its own network"
    )]
    Special {
        /// The network asked for.
        net: Cidr,
        /// Which kind of address it is.
        what: &'static str,
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

/// The kind of special address `net` lies within, if any: unspecified, loopback,
/// multicast, broadcast or link-local (RFC 1122, RFC 3927, RFC 4291, RFC 5771).
pub fn special(net: Cidr) -> Option<&'static str> {
    const SPECIAL: [(&str, &str); 9] = [
        ("0.0.0.0/8", "unspecified (\"this network\", RFC 1122)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "the broadcast address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    ];
    SPECIAL.iter().find_map(|(range, what)| {
        let range: Cidr = range.parse().ok()?;
        (range.contains(net.addr()) && net.prefix_len() >= range.prefix_len()).then_some(*what)
    })
}
