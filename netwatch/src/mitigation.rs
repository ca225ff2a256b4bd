//! Mitigation in a running daemon: the [`Mitigator`] wired to the datapaths of every
//! interface (one ban list each, kept alike), to the notify commands and to the metrics.
//! Daemon wiring beside [`session`](crate::session), which hands it the pipeline's alerts and
//! hands the ban events it returns to the pipeline's sinks first; the decisions are the
//! `mitigate` stage's, the answers to the control socket's requests the `control` module's.

use std::{io, sync::Arc, time::Duration};

use crate::{
    config::Config,
    control::{BanAnswer, BanOp},
    datapath::{BanAction, Datapath, DatapathError, RuleTraffic, SignatureRule},
    detect::{alert::Alert, cidr::Cidr},
    mitigate::{
        BanChange, BanEvent, BanTable, BanTerms, Mitigator, NeverBan, RuleEvent, RuleInForce,
        RuleKeeper, RuleTable, Signature,
    },
    notify::Notifier,
    report::{self, metrics::Metrics},
    store::{Store, StoreError},
};

/// The ban lists of every interface's datapath, as one.
struct Datapaths<'a>(&'a mut [Datapath]);

impl BanTable for Datapaths<'_> {
    fn set(&mut self, index: u32, net: Cidr) -> Result<(), DatapathError> {
        for datapath in self.0.iter_mut() {
            datapath.set_ban(index, net.addr(), net.prefix_len())?;
        }
        Ok(())
    }

    /// Lifts the ban everywhere it can; the error is the last interface's that failed.
    fn clear(&mut self, net: Cidr) -> Result<(), DatapathError> {
        let mut failed = None;
        for datapath in self.0.iter_mut() {
            if let Err(err) = datapath.clear_ban(net.addr(), net.prefix_len()) {
                failed = Some(err);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn counts(&mut self, index: u32) -> (u64, u64) {
        self.0.iter().fold((0, 0), |(packets, bytes), datapath| {
            match datapath.ban_counts(index) {
                Ok(counts) => (packets + counts.packets, bytes + counts.bytes),
                Err(err) => {
                    log::warn!("reading the counters of ban {index} failed: {err}");
                    (packets, bytes)
                }
            }
        })
    }

    fn set_action(&mut self, action: Option<BanAction>) -> Result<(), DatapathError> {
        for datapath in self.0.iter_mut() {
            datapath.set_ban_action(action)?;
        }
        Ok(())
    }

    fn settle(&mut self) {
        // An XDP program runs to its end in a softirq, within microseconds of its lookup;
        // after this, no frame that found a lifted entry is still to be counted.
        std::thread::sleep(SETTLE);
    }
}

impl RuleTable for Datapaths<'_> {
    fn set(&mut self, index: u32, rule: SignatureRule) -> Result<(), DatapathError> {
        for datapath in self.0.iter_mut() {
            datapath.set_rule(index, rule)?;
        }
        Ok(())
    }

    /// Removes the rule everywhere it can; the error is the last interface's that failed.
    fn clear(&mut self, index: u32) -> Result<(), DatapathError> {
        let mut failed = None;
        for datapath in self.0.iter_mut() {
            if let Err(err) = datapath.clear_rule(index) {
                failed = Some(err);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn counts(&mut self, index: u32) -> RuleTraffic {
        let mut sum = RuleTraffic::default();
        for datapath in self.0.iter() {
            match datapath.rule_counts(index) {
                Ok(counts) => sum.add(counts.matched, counts.dropped),
                Err(err) => log::warn!("reading the counters of rule {index} failed: {err}"),
            }
        }
        sum
    }

    fn exempt(&mut self, sources: &[Cidr]) -> Result<(), DatapathError> {
        let networks: Vec<_> = sources
            .iter()
            .map(|cidr| (cidr.addr(), cidr.prefix_len()))
            .collect();
        for datapath in self.0.iter_mut() {
            datapath.set_rule_exemptions(&networks)?;
        }
        Ok(())
    }
}

/// How long [`Datapaths::settle`] waits: a thousand times what a frame's program takes.
const SETTLE: Duration = Duration::from_millis(5);

/// What the store kept of mitigation: the bans and rules in force at the last stop, and the
/// past ones toward the doubling of repeat offenders' TTLs. Empty without a store.
#[derive(Debug, Default)]
pub struct Kept {
    /// The bans in force.
    pub bans: Vec<BanTerms>,
    /// Past bans within `forget_after`: network, start, end.
    pub ban_history: Vec<(Cidr, Duration, Duration)>,
    /// The rules in force.
    pub rules: Vec<RuleInForce>,
    /// Past rules within `forget_after`: signature, start.
    pub rule_history: Vec<(Signature, Duration)>,
}

impl Kept {
    /// Reads what `store` kept, before the writer takes it.
    pub fn read(store: &mut Store, config: &Config, now: Duration) -> Result<Self, StoreError> {
        let since = now.saturating_sub(config.mitigate.forget_after);
        Ok(Self {
            bans: store.open_bans()?,
            ban_history: store.ban_history(since)?,
            rules: store.open_rules()?,
            rule_history: store.rule_history(since)?,
        })
    }
}

/// Mitigation of one daemon.
pub struct Mitigation {
    mitigator: Mitigator,
    rules: RuleKeeper,
    /// Whether a store keeps the rules in force across a stop (else they end at the stop).
    keeps_rules: bool,
    notifier: Option<Notifier>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Mitigation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitigation")
            .field("mitigator", &self.mitigator)
            .finish_non_exhaustive()
    }
}

fn never(config: &Config) -> NeverBan<'_> {
    NeverBan {
        allowlist: &config.detect.unknown.allowlist,
        local: &config.networks.local,
    }
}

impl Mitigation {
    /// Starts mitigation for `config`: past bans and rules toward the doubling, the store's
    /// bans and rules in force applied again (or ended), and the notify commands' thread.
    /// `kept` is `None` without a store: the rules then end at the stop. Returns the events
    /// of the bans and rules restored or ended, for the sinks and then
    /// [`Mitigation::announce`] and [`Mitigation::announce_rules`].
    pub fn start(
        config: &Config,
        kept: Option<Kept>,
        metrics: Option<Arc<Metrics>>,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> io::Result<(Self, Vec<BanEvent>, Vec<RuleEvent>)> {
        let keeps_rules = kept.is_some();
        let kept = kept.unwrap_or_default();
        let mut mitigator = Mitigator::new(
            config.mitigate.clone(),
            &never(config),
            config.detect.prefix_v4,
            config.detect.prefix_v6,
        );
        mitigator.remember(kept.ban_history);
        let mut rules = RuleKeeper::new(config.mitigate.clone());
        rules.remember(kept.rule_history);
        let notifier = Notifier::start(
            config.mitigate.notify.clone(),
            config.mitigate.notify_timeout,
        )?;
        let bans = mitigator.restore(kept.bans, &mut Datapaths(datapaths), now);
        let restored = rules.restore(kept.rules, &mut Datapaths(datapaths), now);
        Ok((
            Self {
                mitigator,
                rules,
                keeps_rules,
                notifier,
                metrics,
            },
            bans,
            restored,
        ))
    }

    /// Acts on `alerts` (each with its interface): the events of the bans and of the
    /// signature rules they brought.
    pub fn act(
        &mut self,
        alerts: &[(String, Alert)],
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> (Vec<BanEvent>, Vec<RuleEvent>) {
        let mut table = Datapaths(datapaths);
        let mut bans = Vec::new();
        let mut rules = Vec::new();
        for (iface, alert) in alerts {
            bans.extend(self.mitigator.on_alert(iface, alert, &mut table, now));
            rules.extend(self.rules.on_alert(iface, alert, &mut table, now));
        }
        (bans, rules)
    }

    /// Once an interval: each ban's and rule's counts read, and those whose time is up
    /// ended.
    pub fn tick(
        &mut self,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> (Vec<BanEvent>, Vec<RuleEvent>) {
        let mut table = Datapaths(datapaths);
        (
            self.mitigator.tick(&mut table, now),
            self.rules.tick(&mut table, now),
        )
    }

    /// Carries out a control-socket request: the event of a ban or unban, or of a rule
    /// removed by hand, a list, or the refusal. The caller reports an event to the sinks and
    /// then announces it, before the answer goes out.
    pub fn request(&mut self, op: BanOp, datapaths: &mut [Datapath], now: Duration) -> BanAnswer {
        let mut table = Datapaths(datapaths);
        let done = match op {
            BanOp::List => {
                return BanAnswer::List {
                    mode: self.mitigator.mode(),
                    bans: self.mitigator.bans().cloned().collect(),
                };
            }
            BanOp::Add { net, ttl, reason } => {
                self.mitigator.add(net, ttl, reason, &mut table, now)
            }
            BanOp::Remove { net } => self.mitigator.remove(net, &mut table, now),
            BanOp::RuleList => {
                return BanAnswer::Rules {
                    mode: self.mitigator.mode(),
                    rules: self.rules.rules().cloned().collect(),
                };
            }
            BanOp::RuleAdd {
                signature,
                action,
                rtbh,
                ttl,
            } => {
                return match self
                    .rules
                    .add(signature, action, rtbh, ttl, &mut table, now)
                {
                    Ok(event) => BanAnswer::Rule(event),
                    Err(why) => BanAnswer::RuleRefused(why),
                };
            }
            // The session's, never here.
            BanOp::Capture { .. } => {
                return BanAnswer::RuleRefused(String::from("captures are not mitigation's"));
            }
            BanOp::RuleRemove { index } => {
                return match self.rules.remove(index, &mut table, now) {
                    Some(event) => BanAnswer::Rule(event),
                    None => BanAnswer::RuleRefused(format!(
                        "no rule {index} in force (netwatch mitigate list)"
                    )),
                };
            }
        };
        match done {
            Ok(event) => BanAnswer::Event(event),
            Err(refusal) => BanAnswer::Refused(refusal),
        }
    }

    /// A reload: the new rules, lists and mode; the events of the bans it ends (those it
    /// would refuse). The notify commands and `max_bans` stay as they started.
    pub fn reconfigure(
        &mut self,
        config: &Config,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> (Vec<BanEvent>, Vec<RuleEvent>) {
        let rules = self
            .rules
            .reconfigure(config.mitigate.clone(), &mut Datapaths(datapaths), now);
        let bans = self.mitigator.reconfigure(
            config.mitigate.clone(),
            &never(config),
            &mut Datapaths(datapaths),
            now,
        );
        (bans, rules)
    }

    /// At a stop: with a store the rules in force stay in it (and upstream), to be set again
    /// at the next start, as bans are; without one every rule ends, and their events go to
    /// the sinks and the notify commands, which withdraw what they announced (nothing would
    /// withdraw it later).
    pub fn end_rules(&mut self, datapaths: &mut [Datapath], now: Duration) -> Vec<RuleEvent> {
        if self.keeps_rules {
            return Vec::new();
        }
        self.rules.end_all(
            "netwatch stopped (no store keeps its rules)",
            &mut Datapaths(datapaths),
            now,
        )
    }

    /// After the sinks have rule `events`: the notify commands get the rules set, extended
    /// and removed, then the metrics are set (also at each `tick`, for the counts).
    pub fn announce_rules(&mut self, events: &[RuleEvent], tick: bool) -> io::Result<()> {
        if let Some(notifier) = &self.notifier {
            for event in events.iter().filter(|event| event.is_notified()) {
                let mut line = Vec::new();
                report::rule::write_json(&mut line, event)?;
                notifier.send(&line);
            }
        }
        if let Some(metrics) = &self.metrics
            && (tick || !events.is_empty())
        {
            let rules: Vec<(String, u64, u64)> = self
                .rules
                .rules()
                .map(|rule| {
                    (
                        rule.signature.to_string(),
                        rule.traffic.matched.packets,
                        rule.traffic.dropped.packets,
                    )
                })
                .collect();
            metrics.set_rules(&rules);
        }
        Ok(())
    }

    /// Runs the notify commands still queued and says what stays in force.
    pub fn finish(self) {
        let in_force = self.mitigator.bans().count();
        if in_force > 0 {
            log::info!(
                "{in_force} bans in force stay in the store and are applied again at the next start (or ended then, if their time is up); nothing is dropped meanwhile"
            );
        }
        let rules = self.rules.rules().count();
        if rules > 0 {
            log::info!(
                "{rules} signature rules in force stay in the store and upstream (what the notify commands announced), and are set again at the next start (or ended and withdrawn then, if their time is up); netwatch mitigate remove ends one before a stop"
            );
        }
        if let Some(notifier) = self.notifier {
            notifier.stop();
        }
    }

    /// After the sinks have `events` (the store keeps each before this is called): the
    /// notify commands get the bans and unbans, then the metrics are set (also at each
    /// `tick`, for the counts).
    pub fn announce(&mut self, events: &[BanEvent], tick: bool) -> io::Result<()> {
        if let Some(notifier) = &self.notifier {
            for event in events.iter().filter(|event| event.is_notified()) {
                let mut line = Vec::new();
                report::ban::write_json(&mut line, event)?;
                notifier.send(&line);
            }
        }
        if let Some(metrics) = &self.metrics
            && (tick || !events.is_empty())
        {
            let bans: Vec<(String, u64, u64)> = self
                .mitigator
                .bans()
                .map(|ban| (ban.terms.net.to_string(), ban.packets, ban.bytes))
                .collect();
            let ended: Vec<(String, u64, u64)> = events
                .iter()
                .filter(|event| event.change == BanChange::Unban)
                .map(|event| (event.net.to_string(), event.packets, event.bytes))
                .collect();
            metrics.set_bans(self.mitigator.mode().name(), &bans, &ended);
        }
        Ok(())
    }
}
