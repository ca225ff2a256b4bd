//! Signature rules, each a row from its start to its end, as bans are: the ones without an
//! end are in force, set again at start (the kernel's rules go with the process, the
//! routers' Flowspec routes and the store's rows stay). Each rule event is also a finding
//! (history, and the webhooks' queue), in the same transaction.

use std::time::Duration;

use rusqlite::{OptionalExtension as _, params};

use super::{FindingRow, Store, StoreError, by_name, millis, to_i64};
use crate::{
    datapath::{RuleAction, RuleProtocol, RuleTraffic},
    detect::{alert::AlertKind, cidr::Cidr},
    mitigate::{AlertRef, MitigateMode, Origin, RuleInForce, Signature, SignatureAttack},
};

/// What a rule event changes in the `rules` table.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleRecord {
    /// A rule began.
    Start(Box<RuleInForce>),
    /// The rule of `signature` in force lasts until `expires`.
    Extend {
        /// Its signature, as text.
        signature: String,
        /// Its new end.
        expires: Duration,
    },
    /// The rule of `signature` in force ended.
    End {
        /// Its signature, as text.
        signature: String,
        /// When.
        ended: Duration,
        /// Why.
        why: String,
        /// What it matched and dropped.
        traffic: RuleTraffic,
    },
    /// Nothing changes in the table (a refusal, a restore): the finding only.
    Note,
}

impl Store {
    /// Keeps a rule event: its change to the `rules` table and its finding, queued for every
    /// webhook URL, in one transaction.
    pub fn record_rule(
        &mut self,
        record: &RuleRecord,
        finding: &FindingRow,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            match record {
                RuleRecord::Start(rule) => {
                    let signature = &rule.signature;
                    let (action, rate) = match rule.action {
                        RuleAction::Drop | RuleAction::Count => ("drop", None),
                        RuleAction::RateLimit { pps } => ("rate-limit", Some(pps)),
                    };
                    tx.execute(
                        "INSERT INTO rules (signature, destination, protocol, source_port,
                                            destination_port, tcp_syn, fragments, action,
                                            rate_pps, rtbh, attack, mode, origin, alert_id,
                                            alert_kind, iface, offence, created_ms, expires_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                                 ?15, ?16, ?17, ?18, ?19)",
                        params![
                            signature.to_string(),
                            signature.destination.to_string(),
                            signature.protocol.map(|protocol| protocol.to_string()),
                            signature.src_port,
                            signature.dst_port,
                            signature.syn,
                            signature.fragment,
                            action,
                            rate,
                            rule.rtbh,
                            rule.attack.map(SignatureAttack::name),
                            rule.mode.name(),
                            rule.origin.name(),
                            rule.alert.as_ref().map(|alert| alert.id.as_str()),
                            rule.alert.as_ref().map(|alert| alert.kind.name()),
                            rule.iface,
                            rule.offence,
                            millis(rule.created),
                            millis(rule.expires),
                        ],
                    )?;
                }
                RuleRecord::Extend { signature, expires } => {
                    tx.execute(
                        "UPDATE rules SET expires_ms = ?2 WHERE signature = ?1 AND ended_ms IS NULL",
                        params![signature, millis(*expires)],
                    )?;
                }
                RuleRecord::End {
                    signature,
                    ended,
                    why,
                    traffic,
                } => {
                    tx.execute(
                        "UPDATE rules SET ended_ms = ?2, ended_why = ?3, matched_packets = ?4,
                                          matched_bytes = ?5, dropped_packets = ?6,
                                          dropped_bytes = ?7
                         WHERE signature = ?1 AND ended_ms IS NULL",
                        params![
                            signature,
                            millis(*ended),
                            why,
                            to_i64(traffic.matched.packets),
                            to_i64(traffic.matched.bytes),
                            to_i64(traffic.dropped.packets),
                            to_i64(traffic.dropped.bytes),
                        ],
                    )?;
                }
                RuleRecord::Note => {}
            }
            super::history::insert_finding(tx, finding, webhooks)
        })
    }

    /// The rules without an end, oldest first, with what they matched until their last
    /// change. A row that cannot be read back (a network, a protocol or a mode that does not
    /// parse) is ended here, and said.
    pub fn open_rules(&mut self) -> Result<Vec<RuleInForce>, StoreError> {
        let rows = {
            let mut statement = self
                .conn
                .prepare(
                    "SELECT rowid, destination, protocol, source_port, destination_port, tcp_syn,
                            fragments, action, rate_pps, rtbh, attack, mode, origin, alert_id,
                            alert_kind, iface, offence, created_ms, expires_ms
                     FROM rules WHERE ended_ms IS NULL ORDER BY created_ms",
                )
                .map_err(|err| self.sqlite(err))?;
            statement
                .query_map([], |row| {
                    let at = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                    let rowid: i64 = row.get(0)?;
                    let destination: String = row.get(1)?;
                    let protocol: Option<String> = row.get(2)?;
                    let action: String = row.get(7)?;
                    let rate: Option<u32> = row.get(8)?;
                    let attack: Option<String> = row.get(10)?;
                    let mode: String = row.get(11)?;
                    let alert_id: Option<String> = row.get(13)?;
                    let alert_kind: Option<String> = row.get(14)?;
                    let read = || -> Result<RuleInForce, String> {
                        let destination = destination
                            .parse::<Cidr>()
                            .map_err(|_| format!("destination {destination:?}"))?;
                        let protocol = match &protocol {
                            None => None,
                            Some(name) => Some(
                                name.parse::<RuleProtocol>()
                                    .map_err(|()| format!("protocol {name:?}"))?,
                            ),
                        };
                        let action = match (action.as_str(), rate) {
                            ("drop", _) => RuleAction::Drop,
                            ("rate-limit", Some(pps)) if pps > 0 => RuleAction::RateLimit { pps },
                            _ => return Err(format!("action {action:?} at {rate:?} pkt/s")),
                        };
                        let mode = by_name::<MitigateMode>(&mode)
                            .filter(|mode| *mode != MitigateMode::Off)
                            .ok_or_else(|| format!("mode {mode:?}"))?;
                        let attack = match &attack {
                            None => None,
                            Some(name) => Some(
                                by_name::<SignatureAttack>(name)
                                    .ok_or_else(|| format!("attack {name:?}"))?,
                            ),
                        };
                        let alert = alert_id
                            .clone()
                            .zip(alert_kind.as_deref().and_then(by_name::<AlertKind>))
                            .map(|(id, kind)| AlertRef {
                                id,
                                kind,
                                capture: None,
                            });
                        Ok(RuleInForce {
                            index: 0,
                            signature: Signature {
                                destination,
                                protocol,
                                src_port: row.get(3).map_err(|err| err.to_string())?,
                                dst_port: row.get(4).map_err(|err| err.to_string())?,
                                syn: row.get(5).map_err(|err| err.to_string())?,
                                fragment: row.get(6).map_err(|err| err.to_string())?,
                            },
                            attack,
                            action,
                            mode,
                            rtbh: row.get(9).map_err(|err| err.to_string())?,
                            origin: Origin::from_name(
                                &row.get::<_, String>(12).map_err(|err| err.to_string())?,
                            ),
                            alert,
                            iface: row.get(15).map_err(|err| err.to_string())?,
                            created: at(row.get(17).map_err(|err| err.to_string())?),
                            expires: at(row.get(18).map_err(|err| err.to_string())?),
                            offence: row.get(16).map_err(|err| err.to_string())?,
                            traffic: RuleTraffic::default(),
                        })
                    };
                    Ok((rowid, read()))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|err| self.sqlite(err))?
        };
        let mut rules = Vec::with_capacity(rows.len());
        for (rowid, read) in rows {
            match read {
                Ok(rule) => rules.push(rule),
                Err(what) => {
                    log::warn!("store: rule row {rowid} has an unreadable {what}; ended");
                    self.conn
                        .execute(
                            "UPDATE rules SET ended_ms = created_ms, ended_why = 'unreadable' WHERE rowid = ?1",
                            [rowid],
                        )
                        .map_err(|err| self.sqlite(err))?;
                }
            }
        }
        Ok(rules)
    }

    /// The signatures of the rules that began at `since` or later, and when, oldest first:
    /// toward the doubling of a repeated signature's TTL. The open ones are among them.
    pub fn rule_history(&self, since: Duration) -> Result<Vec<(Signature, Duration)>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT destination, protocol, source_port, destination_port, tcp_syn, fragments,
                        created_ms
                 FROM rules WHERE created_ms >= ?1 ORDER BY created_ms",
            )
            .map_err(|err| self.sqlite(err))?;
        let rows = statement
            .query_map([millis(since)], |row| {
                let destination: String = row.get(0)?;
                let protocol: Option<String> = row.get(1)?;
                let created: i64 = row.get(6)?;
                let signature = destination.parse::<Cidr>().ok().and_then(|destination| {
                    let protocol = match protocol {
                        None => None,
                        Some(name) => Some(name.parse::<RuleProtocol>().ok()?),
                    };
                    Some(Signature {
                        destination,
                        protocol,
                        src_port: row.get(2).ok()?,
                        dst_port: row.get(3).ok()?,
                        syn: row.get(4).ok()?,
                        fragment: row.get(5).ok()?,
                    })
                });
                Ok(signature.zip(u64::try_from(created).ok().map(Duration::from_millis)))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|err| self.sqlite(err))?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// The start and end of the rule of `signature` in force, for tests and tools; `None`
    /// when no rule of it is in force.
    pub fn rule_in_force(&self, signature: &str) -> Result<Option<(i64, i64)>, StoreError> {
        self.conn
            .query_row(
                "SELECT created_ms, expires_ms FROM rules WHERE signature = ?1 AND ended_ms IS NULL",
                [signature],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|err| self.sqlite(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::Traffic;

    fn finding(kind: &str) -> FindingRow {
        FindingRow {
            ts_ms: 1_000,
            kind_of_record: "rule",
            kind: kind.to_owned(),
            subject: String::from("udp from port 123 to 192.0.2.5/32"),
            record: format!("{{\"change\":\"{kind}\"}}"),
            attack: Some(String::from("reflection")),
            sources: None,
            iface: String::from("eth0"),
        }
    }

    fn rule(destination: &str, created: u64, expires: u64) -> RuleInForce {
        RuleInForce {
            index: 3,
            signature: Signature {
                destination: destination.parse().unwrap(),
                protocol: Some(RuleProtocol::Udp),
                src_port: Some(123),
                dst_port: None,
                syn: false,
                fragment: false,
            },
            attack: Some(SignatureAttack::Reflection),
            action: RuleAction::RateLimit { pps: 500 },
            mode: MitigateMode::Drop,
            rtbh: true,
            origin: Origin::Alert,
            alert: Some(AlertRef {
                id: String::from("a-1"),
                kind: AlertKind::SpikePps,
                capture: None,
            }),
            iface: String::from("eth0"),
            created: Duration::from_secs(created),
            expires: Duration::from_secs(expires),
            offence: 2,
            traffic: RuleTraffic::default(),
        }
    }

    /// A rule's start, extension and end are kept with their findings (each queued for the
    /// webhooks); the open ones read back as they were set (but their kernel index and
    /// counters); a row that does not read back is ended, not set; the history has every
    /// start.
    #[test]
    fn rules_are_kept_from_start_to_end() {
        let path = std::env::temp_dir().join(format!("netwatch-rules-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut store = Store::open(&path).unwrap();
        let hooks = [String::from("https://siem.example/a")];
        let live = rule("192.0.2.5/32", 1_000, 1_600);
        let ended = rule("192.0.2.6/32", 1_010, 1_610);
        for start in [&live, &ended] {
            store
                .record_rule(
                    &RuleRecord::Start(Box::new(start.clone())),
                    &finding("add"),
                    &hooks,
                )
                .unwrap();
        }
        store
            .record_rule(
                &RuleRecord::Extend {
                    signature: live.signature.to_string(),
                    expires: Duration::from_secs(1_900),
                },
                &finding("extend"),
                &hooks,
            )
            .unwrap();
        let traffic = RuleTraffic {
            matched: Traffic {
                packets: 9,
                bytes: 900,
            },
            dropped: Traffic {
                packets: 7,
                bytes: 700,
            },
        };
        store
            .record_rule(
                &RuleRecord::End {
                    signature: ended.signature.to_string(),
                    ended: Duration::from_secs(1_200),
                    why: String::from("removed by hand"),
                    traffic,
                },
                &finding("remove"),
                &hooks,
            )
            .unwrap();
        store
            .record_rule(&RuleRecord::Note, &finding("refuse"), &hooks)
            .unwrap();
        // A row a hand (or a bug) broke.
        store
            .conn
            .execute(
                "INSERT INTO rules (signature, destination, protocol, tcp_syn, fragments, action,
                                    rtbh, mode, origin, iface, offence, created_ms, expires_ms)
                 VALUES ('x', '192.0.2.300/32', 'udp', 0, 0, 'drop', 0, 'drop', 'manual', 'all',
                         1, 1020000, 9000000)",
                [],
            )
            .unwrap();
        let open = store.open_rules().unwrap();
        let mut expected = live.clone();
        expected.index = 0;
        expected.expires = Duration::from_secs(1_900);
        assert_eq!(open, [expected]);
        assert_eq!(
            store.rule_in_force(&live.signature.to_string()).unwrap(),
            Some((1_000_000, 1_900_000))
        );
        assert_eq!(
            store.rule_in_force(&ended.signature.to_string()).unwrap(),
            None
        );
        assert_eq!(store.rule_in_force("x").unwrap(), None);
        let (dropped, why): (i64, String) = store
            .conn
            .query_row(
                "SELECT dropped_packets, ended_why FROM rules WHERE destination = '192.0.2.6/32'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((dropped, why.as_str()), (7, "removed by hand"));
        let count = |store: &Store, sql: &str| -> i64 {
            store.conn.query_row(sql, [], |row| row.get(0)).unwrap()
        };
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM findings WHERE type = 'rule'"),
            5
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM webhook_queue"), 5);
        let history = store.rule_history(Duration::from_secs(1_005)).unwrap();
        assert_eq!(history, [(ended.signature, Duration::from_secs(1_010))]);
        assert_eq!(store.rule_history(Duration::ZERO).unwrap().len(), 2);
        // Pruning takes the ended rows, never one in force.
        store.prune_history(Duration::from_secs(100_000)).unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM rules"), 1);
        assert_eq!(store.open_rules().unwrap().len(), 1);
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}
