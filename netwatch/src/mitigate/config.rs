//! The settings of `[mitigate]`: what bans do ([`MitigateMode`]), which alerts ban what for
//! how long ([`BanRule`], [`BanSubject`]), the section itself ([`MitigateConfig`]), its
//! defaults and its validation, and the bounds a ban must keep ([`MAX_BANS`], [`WIDEST_V4`],
//! [`WIDEST_V6`]).
//!
//! Plain data and checks: it decides no ban, holds no ban in force and never touches the
//! kernel's list (the mitigator does); of this module it imports only the attack types a
//! signature rule names.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::signature::SignatureAttack;
use crate::detect::{alert::AlertKind, cidr::Cidr};

/// The shortest and the longest a ban by hand may last, the same for `netwatch ban --ttl`
/// and a control-socket request: a second to a leap year.
pub const BAN_TTL: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(366 * 86_400);

/// A ban's TTL out of [`BAN_TTL`], with the one message both ways of asking give.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a ban lasts 1s to 8784h (a leap year); {} is out of that", asked(.ttl))]
pub struct BanTtlError {
    /// The TTL asked for.
    pub ttl: Duration,
}

/// A TTL out of [`BAN_TTL`] as its message shows it: under a second as [`Duration`]'s
/// `Debug` writes it (`500ms`), else in the words of a ban's TTL.
fn asked(ttl: &Duration) -> String {
    if *ttl < Duration::from_secs(1) {
        format!("{ttl:?}")
    } else {
        crate::time_text::ttl_text(*ttl)
    }
}

/// A ban's TTL checked against [`BAN_TTL`].
pub fn check_ban_ttl(ttl: Duration) -> Result<Duration, BanTtlError> {
    if BAN_TTL.contains(&ttl) {
        Ok(ttl)
    } else {
        Err(BanTtlError { ttl })
    }
}

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

/// What a signature rule does to the frames it matches (dry-run mode counts them only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAction {
    /// Drops them.
    #[default]
    Drop,
    /// Passes `pps` of them a second, drops the rest: for floods real clients take part in
    /// (SYNs).
    RateLimit,
}

/// `[[mitigate.signatures]]`: which attacks on a victim become a signature rule in XDP (see
/// [`super::signature`]), what it does and for how long.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignatureRuleConfig {
    /// The attack types it answers.
    pub attacks: Vec<SignatureAttack>,
    /// What the rule does.
    pub action: SignatureAction,
    /// The rate a `rate-limit` rule passes, in packets a second.
    pub pps: u32,
    /// How long a first rule lasts; each rule of the same signature within
    /// `mitigate.forget_after` lasts twice the one before.
    #[serde(with = "crate::duration")]
    pub ttl: Duration,
    /// The longest a rule lasts, however often its signature came back.
    #[serde(with = "crate::duration")]
    pub max_ttl: Duration,
    /// Ask the upstream routers to blackhole the victim too (RTBH, RFC 7999): the notify
    /// commands get `"rtbh": true`. It drops all the victim's traffic upstream, which saves
    /// the link and completes the attack for the victim: never by default.
    pub rtbh: bool,
}

impl Default for SignatureRuleConfig {
    fn default() -> Self {
        Self {
            attacks: vec![
                SignatureAttack::Reflection,
                SignatureAttack::IpFragments,
                SignatureAttack::UdpFlood,
            ],
            action: SignatureAction::Drop,
            pps: 1_000,
            ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(24 * 3600),
            rtbh: false,
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
    /// Which attacks on a victim become signature rules. None by default.
    pub signatures: Vec<SignatureRuleConfig>,
    /// Destinations no signature rule is ever set for.
    pub never_destinations: Vec<Cidr>,
    /// Sources whose frames no signature rule drops or counts (a victim's own NTP or DNS
    /// servers, say), at most [`netwatch_common::MAX_RULE_EXEMPTIONS`] of each family.
    pub exempt_sources: Vec<Cidr>,
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
            signatures: Vec::new(),
            never_destinations: Vec::new(),
            exempt_sources: Vec::new(),
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
        for (i, rule) in self.signatures.iter().enumerate() {
            let field = |name: &str| format!("mitigate.signatures[{i}].{name}");
            if rule.attacks.is_empty() {
                return invalid(&field("attacks"), "names no attack type");
            }
            if rule.action == SignatureAction::RateLimit && rule.pps == 0 {
                return invalid(&field("pps"), "must be at least 1 for rate-limit");
            }
            if rule.ttl < Duration::from_secs(1) {
                return invalid(&field("ttl"), "must be at least 1s");
            }
            if rule.max_ttl < rule.ttl {
                return invalid(&field("max_ttl"), "must be at least ttl");
            }
        }
        for family in [true, false] {
            let count = self
                .exempt_sources
                .iter()
                .filter(|cidr| cidr.addr().is_ipv4() == family)
                .count();
            if count > netwatch_common::MAX_RULE_EXEMPTIONS as usize {
                return invalid(
                    "mitigate.exempt_sources",
                    &format!(
                        "at most {} networks of each family",
                        netwatch_common::MAX_RULE_EXEMPTIONS
                    ),
                );
            }
        }
        if let Err(reason) = check_ban_ttl(self.manual_ttl) {
            return invalid("mitigate.manual_ttl", &reason.to_string());
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
