//! The [`RuleKeeper`]: the signature rules in force and every decision on them. An alert on
//! a victim that `[[mitigate.signatures]]` names sets a rule against its attack's signature
//! ([`RuleKeeper::on_alert`]), for a time that doubles when the same signature comes back
//! within `mitigate.forget_after`; a tick ends the rules whose time is up. In `dry-run` the
//! kernel counts what a rule matches and drops nothing. A victim on
//! `mitigate.never_destinations` gets no rule, a source on `mitigate.exempt_sources` passes
//! every rule. A refusal (the list, the kernel's room) is said once per alert event.
//!
//! It must not touch a map itself (it tells a [`RuleTable`]), read a clock, nor report or
//! notify (the caller does, from the [`RuleEvent`]s it returns).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use serde::Serialize;

use super::{
    ban::{AlertRef, Origin},
    config::{MitigateConfig, MitigateMode, SignatureAction, SignatureRuleConfig},
    signature::{Signature, SignatureAttack, signatures_of},
};
use crate::{
    datapath::{DatapathError, RuleAction, RuleTraffic, SignatureRule},
    detect::{alert::Alert, cidr::Cidr},
};

/// The kernel's signature rules, for every interface watched.
pub trait RuleTable {
    /// Sets rule `index`, its counters from zero.
    fn set(&mut self, index: u32, rule: SignatureRule) -> Result<(), DatapathError>;
    /// Removes rule `index`.
    fn clear(&mut self, index: u32) -> Result<(), DatapathError>;
    /// What rule `index` matched and dropped so far.
    fn counts(&mut self, index: u32) -> RuleTraffic;
    /// Sets the sources no rule applies to.
    fn exempt(&mut self, sources: &[Cidr]) -> Result<(), DatapathError>;
}

/// Most rules at once: the kernel's room.
pub const MAX_RULES: u32 = netwatch_common::MAX_RULES as u32;

/// Distinct alerts remembered as refused (their updates say nothing again).
const REFUSED_MEMORY: usize = 4_096;
/// Signatures whose past rules are remembered for the doubling, at most.
const OFFENCE_MEMORY: usize = 65_536;

/// A rule in force.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleInForce {
    /// Its index in the kernel.
    pub index: u32,
    /// What it matches.
    pub signature: Signature,
    /// The attack it answers; `None` for a rule added by hand.
    pub attack: Option<SignatureAttack>,
    /// What it does (in `drop` mode; `dry-run` only counts).
    pub action: RuleAction,
    /// The mode it was set in: `drop`, or `dry-run` (the kernel counts only). Its events
    /// carry this one, so that a script withdraws what it announced whatever the mode now.
    pub mode: MitigateMode,
    /// Ask for a blackhole of the victim upstream too.
    pub rtbh: bool,
    /// Who asked for it.
    pub origin: Origin,
    /// The alert behind it.
    pub alert: Option<AlertRef>,
    /// That alert's interface.
    pub iface: String,
    /// When it began, since the Unix epoch.
    pub created: Duration,
    /// When it ends.
    pub expires: Duration,
    /// How many rules of this signature, this one included, within `forget_after`.
    pub offence: u32,
    /// What it matched and dropped so far (at the last tick).
    pub traffic: RuleTraffic,
}

/// What happened to a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleChange {
    /// Set.
    Add,
    /// Its attack goes on: its end moved later.
    Extend,
    /// Ended (its time is up).
    Remove,
    /// Not set, and why.
    Refuse,
    /// Set again at a start, from the store: still in force, and announced again (the
    /// routers may have lost it meanwhile).
    Restore,
}

impl RuleChange {
    /// `add`, `extend`, `remove`, `refuse` or `restore`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Extend => "extend",
            Self::Remove => "remove",
            Self::Refuse => "refuse",
            Self::Restore => "restore",
        }
    }
}

/// A decision on a rule, as every output and the notify commands see it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleEvent {
    /// When, since the Unix epoch.
    pub at: Duration,
    /// What happened.
    pub change: RuleChange,
    /// `dry-run` or `drop` at the time.
    pub mode: MitigateMode,
    /// The rule (for a refusal: the one asked for, index 0).
    pub rule: RuleInForce,
    /// Why it was refused.
    pub why: Option<String>,
}

impl RuleEvent {
    /// Whether the notify commands get it: a rule set, extended, removed or restored (a
    /// refusal is for the operator only).
    pub fn is_notified(&self) -> bool {
        self.change != RuleChange::Refuse
    }
}

/// Decides signature rules, keeps those in force, and drives the kernel's table.
#[derive(Debug)]
pub struct RuleKeeper {
    config: MitigateConfig,
    rules: BTreeMap<Signature, RuleInForce>,
    /// Past rules of each signature: how many, and the last one's start.
    offences: HashMap<Signature, (u32, Duration)>,
    /// Alerts whose rule was refused already.
    refused: HashSet<String>,
    /// The exemptions the kernel was last given.
    exempt: Option<Vec<Cidr>>,
}

impl RuleKeeper {
    /// A keeper for `config`.
    pub fn new(config: MitigateConfig) -> Self {
        Self {
            config,
            rules: BTreeMap::new(),
            offences: HashMap::new(),
            refused: HashSet::new(),
            exempt: None,
        }
    }

    /// The rules in force, by signature.
    pub fn rules(&self) -> impl Iterator<Item = &RuleInForce> {
        self.rules.values()
    }

    /// The rules an alert calls for: set (or extended, while the attack goes on), or
    /// refused once.
    pub fn on_alert(
        &mut self,
        iface: &str,
        alert: &Alert,
        table: &mut dyn RuleTable,
        now: Duration,
    ) -> Vec<RuleEvent> {
        if self.config.mode == MitigateMode::Off || self.config.signatures.is_empty() {
            return Vec::new();
        }
        self.sync_exemptions(table);
        let mut events = Vec::new();
        for (signature, attack) in signatures_of(alert) {
            let Some(terms) = self
                .config
                .signatures
                .iter()
                .find(|terms| terms.attacks.contains(&attack))
                .cloned()
            else {
                continue;
            };
            if let Some(rule) = self.rules.get_mut(&signature) {
                // The attack goes on: the rule lasts its time again from now.
                let ttl = ttl_of(&terms, rule.offence);
                if now + ttl > rule.expires {
                    rule.expires = now + ttl;
                    events.push(self.event(&signature, RuleChange::Extend, now, None));
                }
                continue;
            }
            let offence = self.prior_offences(&signature, now) + 1;
            let rule = RuleInForce {
                index: 0,
                signature,
                attack: Some(attack),
                action: match terms.action {
                    SignatureAction::Drop => RuleAction::Drop,
                    SignatureAction::RateLimit => RuleAction::RateLimit { pps: terms.pps },
                },
                mode: self.config.mode,
                rtbh: terms.rtbh,
                origin: Origin::Alert,
                alert: Some(AlertRef {
                    id: alert.id.clone(),
                    kind: alert.kind,
                    capture: alert.capture.as_ref().map(|capture| capture.file.clone()),
                }),
                iface: iface.to_owned(),
                created: now,
                expires: now + ttl_of(&terms, offence),
                offence,
                traffic: RuleTraffic::default(),
            };
            match self.admit(rule, table, true) {
                Ok(event) => events.push(event),
                Err(event) => {
                    // Said once per alert event: its updates would say it again.
                    if self.refused.len() >= REFUSED_MEMORY {
                        self.refused.clear();
                    }
                    let key = format!("{}/{}", alert.id, event.rule.signature);
                    if self.refused.insert(key) {
                        events.push(*event);
                    }
                }
            }
        }
        events
    }

    /// Once an interval: each rule's counts read, and the rules whose time is up ended.
    pub fn tick(&mut self, table: &mut dyn RuleTable, now: Duration) -> Vec<RuleEvent> {
        for rule in self.rules.values_mut() {
            rule.traffic = table.counts(rule.index);
        }
        let ended: Vec<Signature> = self
            .rules
            .values()
            .filter(|rule| rule.expires <= now)
            .map(|rule| rule.signature)
            .collect();
        let mut events = Vec::new();
        for signature in ended {
            if let Some(rule) = self.rules.remove(&signature) {
                if let Err(err) = table.clear(rule.index) {
                    log::warn!(
                        "removing the rule {} from the kernel failed: {err}",
                        rule.signature
                    );
                }
                events.push(RuleEvent {
                    at: now,
                    change: RuleChange::Remove,
                    mode: rule.mode,
                    rule,
                    why: Some(String::from("its time is up")),
                });
            }
        }
        events
    }

    /// Sets a rule by hand: `signature` with `action` for `ttl` (`mitigate.manual_ttl`
    /// without), or why not.
    pub fn add(
        &mut self,
        signature: Signature,
        action: RuleAction,
        rtbh: bool,
        ttl: Option<Duration>,
        table: &mut dyn RuleTable,
        now: Duration,
    ) -> Result<RuleEvent, String> {
        if self.config.mode == MitigateMode::Off {
            return Err(String::from("mitigation is off (mitigate.mode)"));
        }
        if let Some(rule) = self.rules.get(&signature) {
            return Err(format!(
                "a rule of this signature is in force already (index {})",
                rule.index
            ));
        }
        self.sync_exemptions(table);
        let rule = RuleInForce {
            index: 0,
            signature,
            attack: None,
            action,
            mode: self.config.mode,
            rtbh,
            origin: Origin::Manual,
            alert: None,
            iface: String::from("all"),
            created: now,
            expires: now + ttl.unwrap_or(self.config.manual_ttl),
            offence: 1,
            traffic: RuleTraffic::default(),
        };
        self.admit(rule, table, false)
            .map_err(|refused| refused.why.unwrap_or_else(|| String::from("refused")))
    }

    /// Ends the rule of `index` now, by hand; `None` when no rule has it.
    pub fn remove(
        &mut self,
        index: u32,
        table: &mut dyn RuleTable,
        now: Duration,
    ) -> Option<RuleEvent> {
        let signature = self
            .rules
            .values()
            .find(|rule| rule.index == index)
            .map(|rule| rule.signature)?;
        self.end(&signature, "removed by hand", table, now)
    }

    /// Ends every rule now (netwatch stops with no store to keep them in, so that the notify
    /// commands withdraw what they announced: nothing would withdraw it later).
    pub fn end_all(
        &mut self,
        why: &str,
        table: &mut dyn RuleTable,
        now: Duration,
    ) -> Vec<RuleEvent> {
        let all: Vec<Signature> = self.rules.keys().copied().collect();
        all.into_iter()
            .filter_map(|signature| self.end(&signature, why, table, now))
            .collect()
    }

    /// Ends the rule of `signature`: out of the kernel, and its event.
    fn end(
        &mut self,
        signature: &Signature,
        why: &str,
        table: &mut dyn RuleTable,
        now: Duration,
    ) -> Option<RuleEvent> {
        let mut rule = self.rules.remove(signature)?;
        rule.traffic = table.counts(rule.index);
        if let Err(err) = table.clear(rule.index) {
            log::warn!(
                "removing the rule {} from the kernel failed: {err}",
                rule.signature
            );
        }
        Some(RuleEvent {
            at: now,
            change: RuleChange::Remove,
            mode: rule.mode,
            rule,
            why: Some(why.to_owned()),
        })
    }

    /// A reload: the new settings. With mitigation off every rule ends, and so does a rule
    /// whose victim is now on `never_destinations`; a rule set in another mode than the new
    /// one is set again in it (its removal in the old mode, then its addition in the new,
    /// so that the notify commands withdraw or announce it); the kernel gets the new
    /// exemptions. The others keep their terms and end in their time.
    pub fn reconfigure(
        &mut self,
        config: MitigateConfig,
        table: &mut dyn RuleTable,
        now: Duration,
    ) -> Vec<RuleEvent> {
        self.config = config;
        self.exempt = None;
        let mut events = Vec::new();
        if self.config.mode == MitigateMode::Off {
            return self.end_all("mitigation is off", table, now);
        }
        self.sync_exemptions(table);
        let never: Vec<Signature> = self
            .rules
            .keys()
            .filter(|signature| {
                self.config.never_destinations.iter().any(|never| {
                    never.contains(signature.destination.addr())
                        || signature.destination.contains(never.addr())
                })
            })
            .copied()
            .collect();
        for signature in never {
            events.extend(self.end(
                &signature,
                "its destination is on mitigate.never_destinations now",
                table,
                now,
            ));
        }
        events.extend(self.carry_into_mode(table, now));
        events
    }

    /// Sets every rule set in another mode than the configuration's again in it: its
    /// removal in the old mode, then its addition in the new, so that the notify commands
    /// withdraw or announce it.
    fn carry_into_mode(&mut self, table: &mut dyn RuleTable, now: Duration) -> Vec<RuleEvent> {
        let other_mode: Vec<Signature> = self
            .rules
            .values()
            .filter(|rule| rule.mode != self.config.mode)
            .map(|rule| rule.signature)
            .collect();
        let mut events = Vec::new();
        for signature in other_mode {
            let Some(ended) = self.end(&signature, "the mode changed", table, now) else {
                continue;
            };
            let mut rule = ended.rule.clone();
            events.push(ended);
            rule.mode = self.config.mode;
            rule.traffic = RuleTraffic::default();
            rule.created = now;
            match self.admit(rule, table, false) {
                Ok(event) => events.push(event),
                Err(event) => events.push(*event),
            }
        }
        events
    }

    /// Past rules (their signature and start, oldest first) toward the doubling of a
    /// signature's TTL, as the store kept them.
    pub fn remember(&mut self, past: impl IntoIterator<Item = (Signature, Duration)>) {
        for (signature, created) in past {
            self.offence(signature, created);
        }
    }

    /// Applies the rules the store kept in force at the last stop (or crash): those still
    /// in time are set again (a `restore`, which the notify commands announce again, since
    /// the routers may have lost them meanwhile), in the configuration's mode; those whose
    /// time ran out while netwatch was stopped, or that the configuration refuses now, end
    /// (a `remove`, withdrawn upstream). The kernel's counters start from zero.
    pub fn restore(
        &mut self,
        stored: Vec<RuleInForce>,
        table: &mut dyn RuleTable,
        now: Duration,
    ) -> Vec<RuleEvent> {
        let ended = |rule: RuleInForce, why: String| RuleEvent {
            at: now,
            change: RuleChange::Remove,
            mode: rule.mode,
            rule,
            why: Some(why),
        };
        if self.config.mode == MitigateMode::Off {
            return stored
                .into_iter()
                .map(|rule| ended(rule, String::from("mitigation is off")))
                .collect();
        }
        self.sync_exemptions(table);
        let mut events = Vec::new();
        for mut rule in stored {
            if rule.expires <= now {
                events.push(ended(
                    rule,
                    String::from("its time ran out while netwatch was stopped"),
                ));
                continue;
            }
            if self.rules.contains_key(&rule.signature) {
                continue;
            }
            rule.traffic = RuleTraffic::default();
            match self.admit(rule, table, false) {
                Ok(mut event) => {
                    event.change = RuleChange::Restore;
                    event.at = now;
                    events.push(event);
                }
                Err(refused) => {
                    let why = refused.why.unwrap_or_default();
                    events.push(ended(refused.rule, format!("not set again: {why}")));
                }
            }
        }
        events.extend(self.carry_into_mode(table, now));
        events
    }

    /// Tells the kernel the exempt sources, when they changed.
    fn sync_exemptions(&mut self, table: &mut dyn RuleTable) {
        if self.exempt.as_ref() == Some(&self.config.exempt_sources) {
            return;
        }
        match table.exempt(&self.config.exempt_sources) {
            Ok(()) => self.exempt = Some(self.config.exempt_sources.clone()),
            Err(err) => log::warn!("setting mitigate.exempt_sources in the kernel failed: {err}"),
        }
    }

    /// Sets `rule` in the kernel under a free index, or says why not; a `new` one counts
    /// toward its signature's doubling (a rule set again in a new mode does not).
    fn admit(
        &mut self,
        mut rule: RuleInForce,
        table: &mut dyn RuleTable,
        new: bool,
    ) -> Result<RuleEvent, Box<RuleEvent>> {
        let mode = self.config.mode;
        let refuse = |rule: RuleInForce, why: String| {
            Box::new(RuleEvent {
                at: rule.created,
                change: RuleChange::Refuse,
                mode,
                rule,
                why: Some(why),
            })
        };
        let destination = rule.signature.destination;
        if let Some(never) =
            self.config.never_destinations.iter().find(|never| {
                never.contains(destination.addr()) || destination.contains(never.addr())
            })
        {
            let why = format!("{destination} is on mitigate.never_destinations ({never})");
            return Err(refuse(rule, why));
        }
        let widest = if destination.addr().is_ipv4() {
            super::config::WIDEST_V4
        } else {
            super::config::WIDEST_V6
        };
        if destination.prefix_len() < widest {
            let why = format!("{destination} is wider than a rule may take (/{widest})");
            return Err(refuse(rule, why));
        }
        let taken: HashSet<u32> = self.rules.values().map(|rule| rule.index).collect();
        let Some(index) = (0..MAX_RULES).find(|index| !taken.contains(index)) else {
            let why = format!("the kernel holds {MAX_RULES} rules, all in force");
            return Err(refuse(rule, why));
        };
        rule.index = index;
        let action = match rule.mode {
            MitigateMode::Drop => rule.action,
            MitigateMode::DryRun | MitigateMode::Off => RuleAction::Count,
        };
        if let Err(err) = table.set(index, rule.signature.rule(action)) {
            return Err(refuse(rule, format!("the kernel refused it: {err}")));
        }
        if new {
            self.offence(rule.signature, rule.created);
        }
        let signature = rule.signature;
        let at = rule.created;
        self.rules.insert(signature, rule);
        Ok(self.event(&signature, RuleChange::Add, at, None))
    }

    fn event(
        &self,
        signature: &Signature,
        change: RuleChange,
        at: Duration,
        why: Option<String>,
    ) -> RuleEvent {
        let rule = self.rules[signature].clone();
        RuleEvent {
            at,
            change,
            mode: rule.mode,
            rule,
            why,
        }
    }

    /// Rules of `signature` within `forget_after` before `now`.
    fn prior_offences(&self, signature: &Signature, now: Duration) -> u32 {
        match self.offences.get(signature) {
            Some((count, last)) if now.saturating_sub(*last) < self.config.forget_after => *count,
            _ => 0,
        }
    }

    fn offence(&mut self, signature: Signature, at: Duration) {
        let forget = self.config.forget_after;
        if self.offences.len() >= OFFENCE_MEMORY && !self.offences.contains_key(&signature) {
            self.offences
                .retain(|_, (_, last)| at.saturating_sub(*last) < forget);
            if self.offences.len() >= OFFENCE_MEMORY {
                self.offences.clear();
            }
        }
        let entry = self.offences.entry(signature).or_insert((0, at));
        if at.saturating_sub(entry.1) >= forget {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = at;
    }
}

/// A rule's time: `ttl` doubled for each earlier rule of its signature, at most `max_ttl`.
fn ttl_of(terms: &SignatureRuleConfig, offence: u32) -> Duration {
    let doublings = offence.saturating_sub(1).min(32);
    terms
        .ttl
        .saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
        .min(terms.max_ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{
        alert::{AlertKind, AlertState, Severity, Subject, Victim},
        attack::AttackType,
    };

    /// The kernel's table, as the keeper drives it.
    #[derive(Default)]
    struct Kernel {
        rules: BTreeMap<u32, SignatureRule>,
        exempt: Vec<Vec<Cidr>>,
        refuse: bool,
    }

    impl RuleTable for Kernel {
        fn set(&mut self, index: u32, rule: SignatureRule) -> Result<(), DatapathError> {
            if self.refuse {
                return Err(DatapathError::RuleIndex { index, most: 0 });
            }
            self.rules.insert(index, rule);
            Ok(())
        }
        fn clear(&mut self, index: u32) -> Result<(), DatapathError> {
            self.rules.remove(&index);
            Ok(())
        }
        fn counts(&mut self, _index: u32) -> RuleTraffic {
            RuleTraffic::default()
        }
        fn exempt(&mut self, sources: &[Cidr]) -> Result<(), DatapathError> {
            self.exempt.push(sources.to_vec());
            Ok(())
        }
    }

    fn config(mode: MitigateMode) -> MitigateConfig {
        MitigateConfig {
            mode,
            signatures: vec![
                SignatureRuleConfig::default(),
                SignatureRuleConfig {
                    attacks: vec![SignatureAttack::SynFlood],
                    action: SignatureAction::RateLimit,
                    pps: 500,
                    ..SignatureRuleConfig::default()
                },
            ],
            exempt_sources: vec!["198.51.100.53/32".parse().unwrap()],
            ..MitigateConfig::default()
        }
    }

    /// A spike on the interface whose main victim receives NTP answers (and a second one
    /// SYNs to port 443).
    fn ntp_alert(id: &str, state: AlertState, victim: &str) -> Alert {
        let hit = |addr: &str, attack, port| Victim {
            addr: addr.parse().unwrap(),
            packets: 50_000,
            pps: 5_000.0,
            share: 0.45,
            attack: Some(attack),
            port,
            sampled: None,
        };
        Alert {
            id: id.to_owned(),
            kind: AlertKind::SpikePps,
            state,
            severity: Severity::Critical,
            subject: Subject::Global,
            observed: 11_000.0,
            baseline: Some(300.0),
            threshold: 1_000.0,
            at: Duration::from_secs(1_000),
            interval: Duration::from_secs(1),
            started: Duration::from_secs(1_000),
            peak: 11_000.0,
            packets: 110_000,
            bytes: 44_000_000,
            detail: None,
            contributors: Vec::new(),
            attack: None,
            members: None,
            slotless: None,
            victims: vec![
                hit(victim, AttackType::Reflection(123), Some(40_000)),
                hit("192.0.2.9", AttackType::SynFlood, Some(443)),
            ],
            capture: None,
            intel: None,
            context: Default::default(),
            by_as: Vec::new(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A flood's victims get their signatures' rules, with the configured action; its
    /// updates extend them; at their time they end, from the kernel too; the same attack
    /// again within `forget_after` gets twice the time.
    #[test]
    fn an_attack_sets_its_rules_until_their_time_and_a_repeat_doubles_it() {
        let mut keeper = RuleKeeper::new(config(MitigateMode::Drop));
        let mut kernel = Kernel::default();
        let events = keeper.on_alert(
            "eth0",
            &ntp_alert("a-1", AlertState::Start, "192.0.2.5"),
            &mut kernel,
            secs(1_000),
        );
        let said: Vec<(RuleChange, String, u32, Duration)> = events
            .iter()
            .map(|e| {
                (
                    e.change,
                    e.rule.signature.to_string(),
                    e.rule.index,
                    e.rule.expires,
                )
            })
            .collect();
        assert_eq!(
            said,
            [
                (
                    RuleChange::Add,
                    String::from("udp from port 123 to 192.0.2.5/32"),
                    0,
                    secs(1_600)
                ),
                (
                    RuleChange::Add,
                    String::from("tcp syn to 192.0.2.9/32 port 443"),
                    1,
                    secs(1_600)
                ),
            ]
        );
        assert_eq!(kernel.rules[&0].action, RuleAction::Drop);
        assert_eq!(kernel.rules[&1].action, RuleAction::RateLimit { pps: 500 });
        assert_eq!(kernel.exempt, [vec!["198.51.100.53/32".parse().unwrap()]]);
        // An update 5 minutes on: both last 10 minutes from then.
        let events = keeper.on_alert(
            "eth0",
            &ntp_alert("a-1", AlertState::Update, "192.0.2.5"),
            &mut kernel,
            secs(1_300),
        );
        assert_eq!(events.len(), 2);
        assert!(
            events
                .iter()
                .all(|e| e.change == RuleChange::Extend && e.rule.expires == secs(1_900))
        );
        // The end of the alert changes nothing; the time does.
        assert!(keeper.tick(&mut kernel, secs(1_899)).is_empty());
        let ended = keeper.tick(&mut kernel, secs(1_900));
        assert_eq!(ended.len(), 2);
        assert!(ended.iter().all(|e| e.change == RuleChange::Remove));
        assert!(kernel.rules.is_empty());
        // Back an hour later: twice as long.
        let events = keeper.on_alert(
            "eth0",
            &ntp_alert("a-2", AlertState::Start, "192.0.2.5"),
            &mut kernel,
            secs(5_000),
        );
        assert_eq!(events[0].rule.offence, 2);
        assert_eq!(events[0].rule.expires, secs(6_200));
    }

    /// In dry-run the kernel counts what the rules match and drops nothing; with mitigation
    /// off, or no `[[mitigate.signatures]]`, no rule is set.
    #[test]
    fn dry_run_counts_and_off_sets_nothing() {
        let mut keeper = RuleKeeper::new(config(MitigateMode::DryRun));
        let mut kernel = Kernel::default();
        let alert = ntp_alert("a-1", AlertState::Start, "192.0.2.5");
        let events = keeper.on_alert("eth0", &alert, &mut kernel, secs(1_000));
        assert_eq!(events.len(), 2);
        assert!(
            kernel
                .rules
                .values()
                .all(|rule| rule.action == RuleAction::Count)
        );
        for config in [
            config(MitigateMode::Off),
            MitigateConfig {
                signatures: Vec::new(),
                ..config(MitigateMode::Drop)
            },
        ] {
            let mut keeper = RuleKeeper::new(config);
            let mut kernel = Kernel::default();
            assert!(
                keeper
                    .on_alert("eth0", &alert, &mut kernel, secs(1_000))
                    .is_empty()
            );
            assert!(kernel.rules.is_empty());
        }
    }

    /// A victim on `never_destinations`, a full kernel and a kernel that refuses: each said
    /// once per alert event, whatever its updates.
    #[test]
    fn refusals_are_said_once_per_alert() {
        let mut keeper = RuleKeeper::new(MitigateConfig {
            never_destinations: vec!["192.0.2.0/28".parse().unwrap()],
            ..config(MitigateMode::Drop)
        });
        let mut kernel = Kernel::default();
        let mut said = Vec::new();
        for (state, at) in [(AlertState::Start, 1_000), (AlertState::Update, 1_010)] {
            for event in keeper.on_alert(
                "eth0",
                &ntp_alert("a-1", state, "192.0.2.5"),
                &mut kernel,
                secs(at),
            ) {
                said.push((event.change, event.why.unwrap_or_default()));
            }
        }
        assert_eq!(
            said,
            [
                (
                    RuleChange::Refuse,
                    String::from("192.0.2.5/32 is on mitigate.never_destinations (192.0.2.0/28)")
                ),
                (
                    RuleChange::Refuse,
                    String::from("192.0.2.9/32 is on mitigate.never_destinations (192.0.2.0/28)")
                ),
            ]
        );
        // A kernel that says no: the rule is not kept.
        let mut keeper = RuleKeeper::new(config(MitigateMode::Drop));
        let mut kernel = Kernel {
            refuse: true,
            ..Kernel::default()
        };
        let events = keeper.on_alert(
            "eth0",
            &ntp_alert("a-1", AlertState::Start, "192.0.2.5"),
            &mut kernel,
            secs(1_000),
        );
        assert!(events.iter().all(|e| {
            e.change == RuleChange::Refuse
                && e.why
                    .as_deref()
                    .is_some_and(|why| why.starts_with("the kernel refused it"))
        }));
        assert_eq!(keeper.rules().count(), 0);
        // A full kernel: 63 victims of NTP answers, and the one of SYNs they all share.
        let mut keeper = RuleKeeper::new(config(MitigateMode::Drop));
        let mut kernel = Kernel::default();
        for i in 0..MAX_RULES - 1 {
            let victim = format!("10.0.0.{}", 1 + i);
            keeper.on_alert(
                "eth0",
                &ntp_alert(&format!("b-{i}"), AlertState::Start, &victim),
                &mut kernel,
                secs(1_000),
            );
        }
        assert_eq!(kernel.rules.len(), 64);
        let events = keeper.on_alert(
            "eth0",
            &ntp_alert("c-1", AlertState::Start, "10.9.9.9"),
            &mut kernel,
            secs(1_000),
        );
        assert_eq!(events[0].change, RuleChange::Refuse);
        assert_eq!(
            events[0].why.as_deref(),
            Some("the kernel holds 64 rules, all in force")
        );
    }

    /// A reload into dry-run takes each rule back in the mode it was set in (so a script
    /// withdraws what it announced) and sets it again counting only; one into `off`, or a
    /// victim newly on `never_destinations`, ends it; a stop ends every rule.
    #[test]
    fn a_reload_carries_the_rules_into_the_new_mode_or_ends_them() {
        let mut keeper = RuleKeeper::new(config(MitigateMode::Drop));
        let mut kernel = Kernel::default();
        keeper.on_alert(
            "eth0",
            &ntp_alert("a-1", AlertState::Start, "192.0.2.5"),
            &mut kernel,
            secs(1_000),
        );
        assert_eq!(kernel.rules.len(), 2);
        let events = keeper.reconfigure(config(MitigateMode::DryRun), &mut kernel, secs(1_100));
        let said: Vec<(RuleChange, MitigateMode)> =
            events.iter().map(|e| (e.change, e.mode)).collect();
        assert_eq!(
            said,
            [
                (RuleChange::Remove, MitigateMode::Drop),
                (RuleChange::Add, MitigateMode::DryRun),
                (RuleChange::Remove, MitigateMode::Drop),
                (RuleChange::Add, MitigateMode::DryRun),
            ]
        );
        assert!(
            kernel
                .rules
                .values()
                .all(|rule| rule.action == RuleAction::Count)
        );
        // Still the first offence, and the same end.
        assert!(
            keeper
                .rules()
                .all(|rule| rule.offence == 1 && rule.expires == secs(1_600))
        );
        let events = keeper.reconfigure(
            MitigateConfig {
                never_destinations: vec!["192.0.2.9/32".parse().unwrap()],
                ..config(MitigateMode::DryRun)
            },
            &mut kernel,
            secs(1_200),
        );
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].rule.signature.destination.to_string(),
            "192.0.2.9/32"
        );
        assert_eq!(kernel.rules.len(), 1);
        let events = keeper.reconfigure(config(MitigateMode::Off), &mut kernel, secs(1_300));
        assert_eq!(events.len(), 1);
        assert!(kernel.rules.is_empty());
        // A stop ends what is left.
        let mut keeper = RuleKeeper::new(config(MitigateMode::Drop));
        keeper.on_alert(
            "eth0",
            &ntp_alert("a-1", AlertState::Start, "192.0.2.5"),
            &mut kernel,
            secs(1_000),
        );
        let events = keeper.end_all("netwatch stopped", &mut kernel, secs(1_010));
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(
            |e| e.change == RuleChange::Remove && e.why.as_deref() == Some("netwatch stopped")
        ));
        assert!(kernel.rules.is_empty() && keeper.rules().count() == 0);
    }

    /// The rules a store kept come back at a start: those in time set again in the kernel (a
    /// `restore`, with their end and offence), whatever index they had; one whose time ran
    /// out while netwatch was stopped, or whose victim is now on `never_destinations`, ends
    /// (a `remove`, in the mode it was announced in); one kept in dry-run goes into the
    /// configuration's mode; with mitigation off all end. Past rules count toward the
    /// doubling.
    #[test]
    fn a_start_sets_the_kept_rules_again_and_ends_the_expired() {
        let mut first = RuleKeeper::new(config(MitigateMode::Drop));
        let mut kernel = Kernel::default();
        first.on_alert(
            "eth0",
            &ntp_alert("a-1", AlertState::Start, "192.0.2.5"),
            &mut kernel,
            secs(1_000),
        );
        let mut kept: Vec<RuleInForce> = first.rules().cloned().collect();
        assert_eq!(kept.len(), 2);
        // The SYN rule would have ended at 1,100 s; the NTP one at 1,600 s.
        kept[1].expires = secs(1_100);
        assert_eq!(
            kept[1].signature.to_string(),
            "tcp syn to 192.0.2.9/32 port 443"
        );
        // A third to a host now never given a rule; a fourth kept in dry-run.
        let mut never = kept[0].clone();
        never.signature.destination = "192.0.2.66/32".parse().unwrap();
        let mut dry = kept[0].clone();
        dry.signature.destination = "192.0.2.97/32".parse().unwrap();
        dry.mode = MitigateMode::DryRun;
        kept.extend([never, dry]);
        for rule in &mut kept {
            rule.index = 40;
        }
        let restart = |mode| {
            RuleKeeper::new(MitigateConfig {
                never_destinations: vec!["192.0.2.64/28".parse().unwrap()],
                ..config(mode)
            })
        };
        let mut kernel = Kernel::default();
        let mut keeper = restart(MitigateMode::Drop);
        let events = keeper.restore(kept.clone(), &mut kernel, secs(1_200));
        let said: Vec<(RuleChange, String, MitigateMode, Option<&str>)> = events
            .iter()
            .map(|e| {
                (
                    e.change,
                    e.rule.signature.destination.to_string(),
                    e.mode,
                    e.why.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            said,
            [
                (
                    RuleChange::Restore,
                    String::from("192.0.2.5/32"),
                    MitigateMode::Drop,
                    None
                ),
                (
                    RuleChange::Remove,
                    String::from("192.0.2.9/32"),
                    MitigateMode::Drop,
                    Some("its time ran out while netwatch was stopped")
                ),
                (
                    RuleChange::Remove,
                    String::from("192.0.2.66/32"),
                    MitigateMode::Drop,
                    Some(
                        "not set again: 192.0.2.66/32 is on mitigate.never_destinations (192.0.2.64/28)"
                    )
                ),
                (
                    RuleChange::Restore,
                    String::from("192.0.2.97/32"),
                    MitigateMode::DryRun,
                    None
                ),
                (
                    RuleChange::Remove,
                    String::from("192.0.2.97/32"),
                    MitigateMode::DryRun,
                    Some("the mode changed")
                ),
                (
                    RuleChange::Add,
                    String::from("192.0.2.97/32"),
                    MitigateMode::Drop,
                    None
                ),
            ]
        );
        // In the kernel from index 0, dropping; the NTP rule ends when it would have.
        assert_eq!(kernel.rules.len(), 2);
        assert!(
            kernel
                .rules
                .values()
                .all(|rule| rule.action == RuleAction::Drop)
        );
        let ntp = keeper.rules().find(|rule| rule.index == 0).unwrap();
        assert_eq!(
            (ntp.signature.to_string().as_str(), ntp.expires, ntp.offence),
            ("udp from port 123 to 192.0.2.5/32", secs(1_600), 1)
        );
        assert_eq!(keeper.tick(&mut kernel, secs(1_600)).len(), 2);
        // With mitigation off, every kept rule ends and nothing is set.
        let mut kernel = Kernel::default();
        let events = restart(MitigateMode::Off).restore(kept, &mut kernel, secs(1_200));
        assert_eq!(events.len(), 4);
        assert!(events.iter().all(
            |e| e.change == RuleChange::Remove && e.why.as_deref() == Some("mitigation is off")
        ));
        assert!(kernel.rules.is_empty());
        // Remembered past rules double the next one's time.
        let mut keeper = restart(MitigateMode::Drop);
        let ntp: Signature = first
            .rules()
            .find(|rule| rule.index == 0)
            .unwrap()
            .signature;
        keeper.remember([(ntp, secs(1_000))]);
        let events = keeper.on_alert(
            "eth0",
            &ntp_alert("a-2", AlertState::Start, "192.0.2.5"),
            &mut kernel,
            secs(3_000),
        );
        assert_eq!(
            (events[0].rule.offence, events[0].rule.expires),
            (2, secs(4_200))
        );
    }
}
