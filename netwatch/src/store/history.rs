//! The history: each interval's totals and top sources, and the alerts and events (queued
//! for the webhooks as they are kept).

use std::time::Duration;

use rusqlite::params;

use super::{Store, StoreError, millis, to_i64};

/// One interval's totals, as kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalRow {
    /// End of the interval, Unix milliseconds.
    pub ts_ms: i64,
    /// Interface.
    pub iface: String,
    /// Length.
    pub interval_ms: i64,
    /// Totals and blind spots, in the order of the table's columns.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Non-IP frames.
    pub non_ip: u64,
    /// Malformed frames.
    pub malformed: u64,
    /// Overflow frames.
    pub overflow: u64,
    /// Truncated frames.
    pub truncated: u64,
    /// Samples taken.
    pub sampled: u64,
    /// Samples capped.
    pub sample_capped: u64,
    /// Samples lost to a full ring.
    pub sample_lost: u64,
    /// Map entries.
    pub sources_tracked: u64,
    /// Traffic without a slot: none, or its total row first.
    pub slotless: Vec<SlotlessRow>,
}

/// A row of the breakdown of an interval's traffic without a slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotlessRow {
    /// `total`, `wide` (IPv4 /16, IPv6 /48), `narrow` (IPv4 /24, IPv6 /56) or `target`.
    pub breakdown: &'static str,
    /// The prefix, the destination address, `other` for the rest of a list, empty for the
    /// total.
    pub subject: String,
    /// A target's kind (`syn`, `udp`, `reflected` ...).
    pub kind: Option<&'static str>,
    /// A target's port: the destination port (port 0 included, NULL for the high ports and
    /// for kinds without ports), or a reflection's service port. Rows written before port 0
    /// was told apart have NULL for it too.
    pub port: Option<u16>,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// The total's estimated distinct sources.
    pub sources_estimate: Option<u32>,
    /// The total's estimated distinct /16 (/48) prefixes.
    pub prefixes_estimate: Option<u32>,
    /// A prefix's (its first address's) or a destination's AS, where `[enrich]` knew it.
    pub asn: Option<u32>,
    /// See `asn`.
    pub as_org: Option<String>,
    /// See `asn`.
    pub country: Option<String>,
}

/// One source in one interval, as kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRow {
    /// End of the interval, Unix milliseconds.
    pub ts_ms: i64,
    /// Interface.
    pub iface: String,
    /// Length.
    pub interval_ms: i64,
    /// The source address.
    pub source: String,
    /// Counters.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// TCP frames.
    pub tcp: u64,
    /// UDP frames.
    pub udp: u64,
    /// ICMP frames.
    pub icmp: u64,
    /// Other frames.
    pub other: u64,
    /// SYN without ACK.
    pub syn: u64,
    /// Distinct destination ports.
    pub ports: u32,
    /// Distinct destination hosts.
    pub hosts: u32,
    /// IP fragments.
    pub fragments: u64,
    /// UDP answers from amplification ports.
    pub reflected: u64,
    /// Its AS and the AS's organisation, and its country, where `[enrich]` knew them.
    pub asn: Option<u32>,
    /// See `asn`.
    pub as_org: Option<String>,
    /// See `asn`.
    pub country: Option<String>,
}

/// An alert or event as kept: its JSON line and what it is indexed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingRow {
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// `alert`, `event` or `rule`.
    pub kind_of_record: &'static str,
    /// Alert kind or event name.
    pub kind: String,
    /// Subject (alerts) or client (events).
    pub subject: String,
    /// The JSON line, as reported.
    pub record: String,
    /// The attack type of a flood alert (`syn_flood`, `reflection`, ...).
    pub attack: Option<String>,
    /// How many sources an alert for many sources stands for.
    pub sources: Option<u64>,
    /// The interface it was seen on (`all`: the sum of several).
    pub iface: String,
}

/// A source's traffic summed over a period.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SourceTotal {
    /// The source.
    pub source: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Intervals it appeared in (among the top N kept).
    pub intervals: u64,
    /// Its AS, as kept with its newest row of the period (none where `[enrich]` did not
    /// know it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Its AS's organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_org: Option<String>,
    /// Its country.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl Store {
    /// Keeps one interval: its totals, its top sources, in one transaction.
    pub fn record_interval(
        &mut self,
        row: &IntervalRow,
        sources: &[SourceRow],
    ) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            tx.execute(
            "INSERT INTO intervals VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                row.ts_ms,
                row.iface,
                row.interval_ms,
                to_i64(row.packets),
                to_i64(row.bytes),
                to_i64(row.non_ip),
                to_i64(row.malformed),
                to_i64(row.overflow),
                to_i64(row.truncated),
                to_i64(row.sampled),
                to_i64(row.sample_capped),
                to_i64(row.sample_lost),
                to_i64(row.sources_tracked),
            ],
        )
        ?;
            if !row.slotless.is_empty() {
                let mut insert = tx.prepare(
                    "INSERT INTO interval_slotless
                         (ts_ms, iface, interval_ms, breakdown, subject, kind, port, packets,
                          bytes, sources_estimate, prefixes_estimate, asn, as_org, country)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )?;
                for slotless in &row.slotless {
                    insert.execute(params![
                        row.ts_ms,
                        row.iface,
                        row.interval_ms,
                        slotless.breakdown,
                        slotless.subject,
                        slotless.kind,
                        slotless.port,
                        to_i64(slotless.packets),
                        to_i64(slotless.bytes),
                        slotless.sources_estimate,
                        slotless.prefixes_estimate,
                        slotless.asn,
                        slotless.as_org,
                        slotless.country,
                    ])?;
                }
            }
            {
                let mut insert = tx.prepare(
                    "INSERT INTO interval_sources
                         (ts_ms, iface, interval_ms, source, packets, bytes, tcp, udp, icmp,
                          other, syn, ports, hosts, fragments, reflected, asn, as_org, country)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                             ?16, ?17, ?18)",
                )?;
                for source in sources {
                    insert.execute(params![
                        source.ts_ms,
                        source.iface,
                        source.interval_ms,
                        source.source,
                        to_i64(source.packets),
                        to_i64(source.bytes),
                        to_i64(source.tcp),
                        to_i64(source.udp),
                        to_i64(source.icmp),
                        to_i64(source.other),
                        to_i64(source.syn),
                        source.ports,
                        source.hosts,
                        to_i64(source.fragments),
                        to_i64(source.reflected),
                        source.asn,
                        source.as_org,
                        source.country,
                    ])?;
                }
            }
            Ok(())
        })
    }

    /// Keeps alerts and events, and queues each for every webhook URL, in one transaction:
    /// a finding is either kept and queued everywhere, or not at all.
    pub fn record_findings(
        &mut self,
        findings: &[FindingRow],
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        if findings.is_empty() {
            return Ok(());
        }
        self.in_transaction(|tx| {
            for finding in findings {
                insert_finding(tx, finding, webhooks)?;
            }
            Ok(())
        })
    }

    /// Deletes history older than `cutoff`; returns the rows removed.
    pub fn prune_history(&mut self, cutoff: Duration) -> Result<usize, StoreError> {
        let cutoff = millis(cutoff);
        let mut removed = 0;
        for table in [
            "intervals",
            "interval_sources",
            "interval_slotless",
            "findings",
        ] {
            removed += self
                .conn
                .execute(&format!("DELETE FROM {table} WHERE ts_ms < ?1"), [cutoff])
                .map_err(|err| self.sqlite(err))?;
        }
        // Bans and rules in force stay, however old: they are applied again at start.
        for table in ["bans", "rules"] {
            removed += self
                .conn
                .execute(
                    &format!("DELETE FROM {table} WHERE ended_ms IS NOT NULL AND ended_ms < ?1"),
                    [cutoff],
                )
                .map_err(|err| self.sqlite(err))?;
        }
        Ok(removed)
    }

    /// One source's intervals in `[since, until)`: (ts_ms, packets, bytes), oldest first.
    pub fn source_history(
        &self,
        source: &str,
        since: Duration,
        until: Duration,
    ) -> Result<Vec<(i64, u64, u64)>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT ts_ms, sum(packets), sum(bytes) FROM interval_sources
                 WHERE source = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 GROUP BY ts_ms ORDER BY ts_ms",
            )
            .map_err(|err| self.sqlite(err))?;
        let rows = statement
            .query_map(params![source, millis(since), millis(until)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?.max(0) as u64,
                    row.get::<_, i64>(2)?.max(0) as u64,
                ))
            })
            .map_err(|err| self.sqlite(err))?;
        rows.collect::<Result<_, _>>()
            .map_err(|err| self.sqlite(err))
    }

    /// Alert lines in `[since, until)`, oldest first, as reported (JSON).
    pub fn alerts_between(
        &self,
        since: Duration,
        until: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT record FROM findings WHERE type = 'alert' AND ts_ms >= ?1 AND ts_ms < ?2
                 ORDER BY ts_ms, rowid",
            )
            .map_err(|err| self.sqlite(err))?;
        let rows = statement
            .query_map(params![millis(since), millis(until)], |row| row.get(0))
            .map_err(|err| self.sqlite(err))?;
        rows.collect::<Result<_, _>>()
            .map_err(|err| self.sqlite(err))
    }

    /// The sources that sent the most bytes in `[since, until)`.
    pub fn top_sources(
        &self,
        since: Duration,
        until: Duration,
        limit: usize,
    ) -> Result<Vec<SourceTotal>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                // One interval is one, however many interfaces saw the source in it.
                // With max(ts_ms) the only min() or max(), SQLite takes the bare columns
                // (the AS and country) from the newest row.
                "SELECT source, sum(packets), sum(bytes), count(DISTINCT ts_ms), asn, as_org,
                        country, max(ts_ms) FROM interval_sources
                 WHERE ts_ms >= ?1 AND ts_ms < ?2 GROUP BY source
                 ORDER BY sum(bytes) DESC, source LIMIT ?3",
            )
            .map_err(|err| self.sqlite(err))?;
        let rows = statement
            .query_map(
                params![millis(since), millis(until), to_i64(limit as u64)],
                |row| {
                    Ok(SourceTotal {
                        source: row.get(0)?,
                        packets: row.get::<_, i64>(1)?.max(0) as u64,
                        bytes: row.get::<_, i64>(2)?.max(0) as u64,
                        intervals: row.get::<_, i64>(3)?.max(0) as u64,
                        asn: row.get(4)?,
                        as_org: row.get(5)?,
                        country: row.get(6)?,
                    })
                },
            )
            .map_err(|err| self.sqlite(err))?;
        rows.collect::<Result<_, _>>()
            .map_err(|err| self.sqlite(err))
    }
}

/// Keeps one alert, event or rule change and queues it for every webhook URL, within the
/// caller's transaction.
pub(super) fn insert_finding(
    tx: &rusqlite::Transaction<'_>,
    finding: &FindingRow,
    webhooks: &[String],
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO findings (ts_ms, type, kind, subject, record, attack, sources, iface)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            finding.ts_ms,
            finding.kind_of_record,
            finding.kind,
            finding.subject,
            finding.record,
            finding.attack,
            finding.sources.map(to_i64),
            finding.iface,
        ],
    )?;
    super::queue::enqueue(tx, webhooks, &finding.record)
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;

    fn store(name: &str) -> (Store, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("netwatch-history-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        (Store::open(&dir.join("h.db")).unwrap(), dir)
    }

    fn source(ts_ms: i64, source: &str, packets: u64) -> SourceRow {
        SourceRow {
            ts_ms,
            source: source.to_owned(),
            packets,
            bytes: packets * 100,
            ..SourceRow::default()
        }
    }

    #[test]
    fn history_is_queried_and_pruned() {
        let (mut store, dir) = store("prune");
        for (ts_ms, packets) in [(1_000, 5), (2_000, 7), (90_000, 11)] {
            let row = IntervalRow {
                ts_ms,
                packets,
                slotless: vec![
                    SlotlessRow {
                        breakdown: "total",
                        packets: 9,
                        sources_estimate: Some(9),
                        prefixes_estimate: Some(1),
                        ..SlotlessRow::default()
                    },
                    SlotlessRow {
                        breakdown: "target",
                        subject: String::from("10.4.0.6"),
                        kind: Some("syn"),
                        port: Some(80),
                        packets: 9,
                        ..SlotlessRow::default()
                    },
                ],
                ..IntervalRow::default()
            };
            store
                .record_interval(
                    &row,
                    &[
                        SourceRow {
                            // Its AS changed after the first interval: the newest is said.
                            asn: Some(if ts_ms == 1_000 { 64999 } else { 64500 }),
                            as_org: Some(String::from(if ts_ms == 1_000 {
                                "OLD-NET"
                            } else {
                                "EXAMPLE-NET"
                            })),
                            country: Some(String::from("NL")),
                            ..source(ts_ms, "192.0.2.1", packets)
                        },
                        source(ts_ms, "192.0.2.2", 1),
                    ],
                )
                .unwrap();
        }
        let all = Duration::from_secs(1_000);
        assert_eq!(
            store
                .source_history("192.0.2.1", Duration::ZERO, all)
                .unwrap(),
            vec![(1_000, 5, 500), (2_000, 7, 700), (90_000, 11, 1_100)]
        );
        let top = store.top_sources(Duration::ZERO, all, 2).unwrap();
        // The AS and country kept with it; none for the source `[enrich]` did not know.
        assert_eq!(
            (
                top[0].asn,
                top[0].as_org.as_deref(),
                top[0].country.as_deref()
            ),
            (Some(64500), Some("EXAMPLE-NET"), Some("NL"))
        );
        assert_eq!((top[1].asn, top[1].country.as_deref()), (None, None));
        assert_eq!(
            (top[0].source.as_str(), top[0].packets, top[0].intervals),
            ("192.0.2.1", 23, 3)
        );
        let victims: Vec<(i64, String, String, i64, i64)> = store
            .conn
            .prepare(
                "SELECT ts_ms, subject, kind, port, packets FROM interval_slotless
                 WHERE breakdown = 'target' ORDER BY ts_ms",
            )
            .unwrap()
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(victims.len(), 3);
        assert_eq!(
            victims[0],
            (1_000, "10.4.0.6".to_owned(), "syn".to_owned(), 80, 9)
        );
        // Everything before 60 s goes: two intervals with two sources and two slot-less rows
        // each.
        assert_eq!(store.prune_history(Duration::from_secs(60)).unwrap(), 10);
        assert_eq!(
            store
                .source_history("192.0.2.1", Duration::ZERO, all)
                .unwrap()
                .len(),
            1
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn findings_are_queued_per_url_and_leave_when_delivered() {
        let (mut store, dir) = store("queue");
        let finding = |n: i64| FindingRow {
            ts_ms: n,
            kind_of_record: "alert",
            kind: String::from("spike_pps"),
            subject: String::from("global"),
            record: format!("{{\"n\":{n}}}"),
            attack: None,
            sources: None,
            iface: String::from("eth0"),
        };
        let urls = [String::from("http://a/"), String::from("http://b/")];
        store
            .record_findings(&[finding(1), finding(2), finding(3)], &urls)
            .unwrap();
        assert_eq!(store.queue_len().unwrap(), 6);
        let batch = store.queued("http://a/", 2).unwrap();
        assert_eq!(
            batch.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>(),
            ["{\"n\":1}", "{\"n\":2}"]
        );
        store.delivered("http://a/", batch[1].0).unwrap();
        assert_eq!(store.queued("http://a/", 10).unwrap().len(), 1);
        assert_eq!(
            store.queued("http://b/", 10).unwrap().len(),
            3,
            "each URL has its own queue"
        );
        assert_eq!(
            store
                .alerts_between(Duration::ZERO, Duration::from_secs(1))
                .unwrap()
                .len(),
            3
        );
        let _ = fs::remove_dir_all(dir);
    }

    /// A source seen on two interfaces in the same interval: its packets add up, its
    /// intervals count once (they counted twice).
    #[test]
    fn a_source_on_two_interfaces_is_one_interval() {
        let (mut store, dir) = store("two-ifaces");
        for ts_ms in [1_000, 2_000] {
            for iface in ["eth0", "eth1"] {
                let row = IntervalRow {
                    ts_ms,
                    iface: iface.to_owned(),
                    ..IntervalRow::default()
                };
                let mut seen = source(ts_ms, "192.0.2.9", 4);
                seen.iface = iface.to_owned();
                store.record_interval(&row, &[seen]).unwrap();
            }
        }
        let top = store
            .top_sources(Duration::ZERO, Duration::from_secs(10), 5)
            .unwrap();
        assert_eq!(
            (top[0].source.as_str(), top[0].packets, top[0].intervals),
            ("192.0.2.9", 16, 2)
        );
        let _ = fs::remove_dir_all(dir);
    }
}
