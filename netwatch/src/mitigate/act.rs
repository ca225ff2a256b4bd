//! Mitigation in a running daemon: the [`Mitigator`] wired to the datapaths of every
//! interface (one ban list each, kept alike), to the pipeline's sinks, to the notify commands
//! and to the metrics.

use std::{io, sync::Arc, time::Duration};

use serde_json::{Value, json};

use super::{
    BanChange, BanEvent, BanRefusal, BanTable, BanTerms, Mitigator, NeverBan, notify::Notifier,
};
use crate::{
    config::Config,
    datapath::{BanAction, Datapath},
    detect::cidr::Cidr,
    pipeline::Pipeline,
    report::{self, metrics::Metrics, rfc3339},
};

/// What a client of the control socket asks of the bans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanOp {
    /// Ban a network (a host as /32 or /128) for a time, with a reason.
    Add {
        /// The network.
        net: Cidr,
        /// How long; `mitigate.manual_ttl` without.
        ttl: Option<Duration>,
        /// Why, in the user's words.
        reason: Option<String>,
    },
    /// Lift the ban of exactly this network.
    Remove {
        /// The network.
        net: Cidr,
    },
    /// The bans in force.
    List,
}

/// The ban lists of every interface's datapath, as one.
struct Datapaths<'a>(&'a mut [Datapath]);

impl BanTable for Datapaths<'_> {
    fn set(&mut self, index: u32, net: Cidr) -> Result<(), String> {
        for datapath in self.0.iter_mut() {
            datapath
                .set_ban(index, net.addr(), net.prefix_len())
                .map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    fn clear(&mut self, net: Cidr) -> Result<(), String> {
        let mut failed = None;
        for datapath in self.0.iter_mut() {
            if let Err(err) = datapath.clear_ban(net.addr(), net.prefix_len()) {
                failed = Some(err.to_string());
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

    fn set_action(&mut self, action: Option<BanAction>) -> Result<(), String> {
        for datapath in self.0.iter_mut() {
            datapath
                .set_ban_action(action)
                .map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    fn settle(&mut self) {
        // An XDP program runs to its end in a softirq, within microseconds of its lookup;
        // after this, no frame that found a lifted entry is still to be counted.
        std::thread::sleep(SETTLE);
    }
}

/// How long [`Datapaths::settle`] waits: a thousand times what a frame's program takes.
const SETTLE: Duration = Duration::from_millis(5);

/// Mitigation of one daemon.
pub struct Mitigation {
    mitigator: Mitigator,
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
    /// Starts mitigation for `config`: past bans toward the doubling, the store's bans in
    /// force applied again (or ended), the notify commands' thread, and the pipeline keeping
    /// its alerts for [`Mitigation::act`].
    pub fn start(
        config: &Config,
        stored: Vec<BanTerms>,
        history: Vec<(Cidr, Duration, Duration)>,
        metrics: Option<Arc<Metrics>>,
        pipeline: &mut Pipeline,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> io::Result<Self> {
        let mut mitigator = Mitigator::new(
            config.mitigate.clone(),
            &never(config),
            config.detect.prefix_v4,
            config.detect.prefix_v6,
        );
        mitigator.remember(history);
        let notifier = Notifier::start(
            config.mitigate.notify.clone(),
            config.mitigate.notify_timeout,
        )?;
        pipeline.keep_alerts();
        let mut mitigation = Self {
            mitigator,
            notifier,
            metrics,
        };
        let events = mitigation
            .mitigator
            .restore(stored, &mut Datapaths(datapaths), now);
        mitigation.report(events, pipeline, true)?;
        Ok(mitigation)
    }

    /// Acts on the alerts the pipeline reported since the last call.
    pub fn act(
        &mut self,
        pipeline: &mut Pipeline,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> io::Result<()> {
        let alerts = pipeline.take_alerts();
        let mut table = Datapaths(datapaths);
        let mut events = Vec::new();
        for (iface, alert) in &alerts {
            events.extend(self.mitigator.on_alert(iface, alert, &mut table, now));
        }
        self.report(events, pipeline, false)
    }

    /// Once an interval, after the pipeline's tick: its alerts acted on, each ban's counts
    /// read, bans whose time is up ended, and the metrics set.
    pub fn tick(
        &mut self,
        pipeline: &mut Pipeline,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> io::Result<()> {
        self.act(pipeline, datapaths, now)?;
        let events = self.mitigator.tick(&mut Datapaths(datapaths), now);
        self.report(events, pipeline, true)
    }

    /// Answers a control-socket request: the event of a ban or unban, the list, or an error.
    pub fn request(
        &mut self,
        op: BanOp,
        pipeline: &mut Pipeline,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> Value {
        let mut table = Datapaths(datapaths);
        let done = match op {
            BanOp::List => return self.list(),
            BanOp::Add { net, ttl, reason } => {
                self.mitigator.add(net, ttl, reason, &mut table, now)
            }
            BanOp::Remove { net } => self.mitigator.remove(net, &mut table, now),
        };
        match done {
            Ok(event) => {
                let mut line = Vec::new();
                let answer = report::ban::write_json(&mut line, &event)
                    .ok()
                    .and_then(|()| serde_json::from_slice::<Value>(&line).ok());
                if let Err(err) = self.report(vec![event], pipeline, false) {
                    log::warn!("reporting a ban asked for on the control socket failed: {err}");
                }
                let mut answer = answer.unwrap_or_else(|| json!({}));
                answer["version"] = json!(crate::control::PROTOCOL_VERSION);
                answer
            }
            Err(refusal) => refused(&refusal),
        }
    }

    fn list(&self) -> Value {
        let bans: Vec<Value> = self
            .mitigator
            .bans()
            .map(|ban| {
                json!({
                    "subject": ban.terms.net.to_string(),
                    "origin": ban.terms.origin.name(),
                    "reason": ban.terms.reason,
                    "alert": ban.terms.alert,
                    "iface": ban.terms.iface,
                    "created": rfc3339(std::time::UNIX_EPOCH + ban.terms.created),
                    "expires": rfc3339(std::time::UNIX_EPOCH + ban.terms.expires),
                    "ttl_s": ban.terms.expires.saturating_sub(ban.terms.created).as_secs(),
                    "offence": ban.terms.offence,
                    "packets": ban.packets,
                    "bytes": ban.bytes,
                })
            })
            .collect();
        json!({
            "version": crate::control::PROTOCOL_VERSION,
            "type": "bans",
            "mode": self.mitigator.mode(),
            "bans": bans,
        })
    }

    /// A reload: the new rules, lists and mode; bans it would refuse end. The notify
    /// commands and `max_bans` stay as they started.
    pub fn reconfigure(
        &mut self,
        config: &Config,
        pipeline: &mut Pipeline,
        datapaths: &mut [Datapath],
        now: Duration,
    ) -> io::Result<()> {
        let events = self.mitigator.reconfigure(
            config.mitigate.clone(),
            &never(config),
            &mut Datapaths(datapaths),
            now,
        );
        self.report(events, pipeline, true)
    }

    /// Runs the notify commands still queued and says what stays in force.
    pub fn finish(self) {
        let in_force = self.mitigator.bans().count();
        if in_force > 0 {
            log::info!(
                "{in_force} bans in force stay in the store and are applied again at the next start (or ended then, if their time is up); nothing is dropped meanwhile"
            );
        }
        if let Some(notifier) = self.notifier {
            notifier.stop();
        }
    }

    /// Every sink gets `events` (the store keeps each before this goes on), then the notify
    /// commands (bans and unbans), then the metrics (also each `tick`, for the counts).
    fn report(
        &mut self,
        events: Vec<BanEvent>,
        pipeline: &mut Pipeline,
        tick: bool,
    ) -> io::Result<()> {
        pipeline.report_bans(&events)?;
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

/// The answer to a refused request.
pub fn refused(refusal: &BanRefusal) -> Value {
    json!({
        "version": crate::control::PROTOCOL_VERSION,
        "type": "error",
        "error": refusal.to_string(),
    })
}
