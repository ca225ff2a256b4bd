//! Bans, each a row from its start to its end: the ones without an end are in force and are
//! applied again at start, so that the kernel and the store never disagree after a crash
//! (the kernel's list goes with the process; the store's stays). Each ban event is also
//! queued for the webhooks, in the same transaction.

use std::time::Duration;

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError, millis, to_i64};
use crate::{
    detect::{alert::AlertKind, cidr::Cidr},
    mitigate::{AlertRef, BanTerms, Origin},
};

/// A ban's start, as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRow {
    /// The network.
    pub subject: String,
    /// `dry-run` or `drop`.
    pub mode: &'static str,
    /// `alert` or `manual`.
    pub origin: &'static str,
    /// Why.
    pub reason: String,
    /// The alert behind it.
    pub alert_id: Option<String>,
    /// Its kind.
    pub alert_kind: Option<&'static str>,
    /// Its interface, or `all`.
    pub iface: String,
    /// Offence number.
    pub offence: u32,
    /// Start, Unix milliseconds.
    pub created_ms: i64,
    /// End as set, Unix milliseconds.
    pub expires_ms: i64,
}

/// What a ban event changes in the store; every one is queued for the webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanRecord {
    /// A ban began.
    Start(BanRow, String),
    /// The ban of `subject` in force ended.
    End {
        /// The network.
        subject: String,
        /// When, Unix milliseconds.
        ended_ms: i64,
        /// Why.
        why: String,
        /// Packets it matched.
        packets: u64,
        /// Their bytes.
        bytes: u64,
        /// The event's JSON line.
        json: String,
    },
    /// Nothing to keep but the event for the webhooks (a refusal, a restore).
    Note(String),
}

impl Store {
    /// Keeps a ban event and queues it for every webhook URL, in one transaction.
    pub fn record_ban(
        &mut self,
        record: &BanRecord,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            let json = match record {
                BanRecord::Start(row, json) => {
                    tx.execute(
                        "INSERT INTO bans (subject, mode, origin, reason, alert_id, alert_kind,
                                           iface, offence, created_ms, expires_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                        params![
                            row.subject,
                            row.mode,
                            row.origin,
                            row.reason,
                            row.alert_id,
                            row.alert_kind,
                            row.iface,
                            row.offence,
                            row.created_ms,
                            row.expires_ms
                        ],
                    )?;
                    json
                }
                BanRecord::End {
                    subject,
                    ended_ms,
                    why,
                    packets,
                    bytes,
                    json,
                } => {
                    tx.execute(
                        "UPDATE bans SET ended_ms = ?2, ended_why = ?3, packets = ?4, bytes = ?5
                         WHERE subject = ?1 AND ended_ms IS NULL",
                        params![subject, ended_ms, why, to_i64(*packets), to_i64(*bytes)],
                    )?;
                    json
                }
                BanRecord::Note(json) => json,
            };
            super::queue::enqueue(tx, webhooks, json.trim_end())
        })
    }

    /// The bans without an end, oldest first. A row that cannot be read back (a network that
    /// does not parse) is ended here, and said.
    pub fn open_bans(&mut self) -> Result<Vec<BanTerms>, StoreError> {
        let rows = {
            let mut statement = self
                .conn
                .prepare(
                    "SELECT rowid, subject, origin, reason, alert_id, alert_kind, iface, offence,
                            created_ms, expires_ms
                     FROM bans WHERE ended_ms IS NULL ORDER BY created_ms",
                )
                .map_err(|err| self.sqlite(err))?;
            statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, String>(6)?,
                        row.get::<_, u32>(7)?,
                        row.get::<_, i64>(8)?,
                        row.get::<_, i64>(9)?,
                    ))
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|err| self.sqlite(err))?
        };
        let mut bans = Vec::with_capacity(rows.len());
        for (
            rowid,
            subject,
            origin,
            reason,
            alert_id,
            alert_kind,
            iface,
            offence,
            created,
            expires,
        ) in rows
        {
            let Ok(net) = subject.parse::<Cidr>() else {
                log::warn!("store: ban row {rowid} names no network ({subject:?}); ended");
                self.conn
                    .execute(
                        "UPDATE bans SET ended_ms = created_ms, ended_why = 'unreadable' WHERE rowid = ?1",
                        [rowid],
                    )
                    .map_err(|err| self.sqlite(err))?;
                continue;
            };
            let alert = alert_id.zip(alert_kind.as_deref().and_then(super::by_name::<AlertKind>));
            bans.push(BanTerms {
                net,
                origin: Origin::from_name(&origin),
                reason,
                alert: alert.map(|(id, kind)| AlertRef {
                    id,
                    kind,
                    capture: None,
                }),
                iface,
                created: Duration::from_millis(u64::try_from(created).unwrap_or(0)),
                expires: Duration::from_millis(u64::try_from(expires).unwrap_or(0)),
                offence,
            });
        }
        Ok(bans)
    }

    /// The bans that ended (or end) at `since` or later: network, start and end, toward the
    /// doubling of repeat offenders' TTLs.
    pub fn ban_history(
        &self,
        since: Duration,
    ) -> Result<Vec<(Cidr, Duration, Duration)>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT subject, created_ms, expires_ms FROM bans
                 WHERE MIN(expires_ms, COALESCE(ended_ms, expires_ms)) >= ?1",
            )
            .map_err(|err| self.sqlite(err))?;
        let rows = statement
            .query_map([millis(since)], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|err| self.sqlite(err))?;
        let at = |ms: i64| Some(Duration::from_millis(u64::try_from(ms).ok()?));
        Ok(rows
            .into_iter()
            .filter_map(|(subject, created, expires)| {
                Some((subject.parse().ok()?, at(created)?, at(expires)?))
            })
            .collect())
    }

    /// The ban of `subject` in force, if any: its row's start, for tests and tools.
    pub fn ban_in_force(&self, subject: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT created_ms FROM bans WHERE subject = ?1 AND ended_ms IS NULL",
                [subject],
                |row| row.get(0),
            )
            .optional()
            .map_err(|err| self.sqlite(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(subject: &str, created_ms: i64, expires_ms: i64) -> BanRow {
        BanRow {
            subject: subject.to_owned(),
            mode: "drop",
            origin: "alert",
            reason: String::from("threshold_pps"),
            alert_id: Some(String::from("r-1")),
            alert_kind: Some("threshold_pps"),
            iface: String::from("eth0"),
            offence: 1,
            created_ms,
            expires_ms,
        }
    }

    /// A ban's start and end are kept, each event queued for every webhook; the open ones
    /// read back as they were, and the history counts every start.
    #[test]
    fn bans_are_kept_from_start_to_end() {
        let path = std::env::temp_dir().join(format!("netwatch-bans-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut store = Store::open(&path).unwrap();
        let hooks = [String::from("https://siem.example/a")];
        store
            .record_ban(
                &BanRecord::Start(row("10.9.0.2/32", 1_000, 601_000), "{\"a\":1}\n".into()),
                &hooks,
            )
            .unwrap();
        store
            .record_ban(
                &BanRecord::Start(row("10.9.0.3/32", 2_000, 3_000), "{\"a\":2}".into()),
                &hooks,
            )
            .unwrap();
        store
            .record_ban(
                &BanRecord::End {
                    subject: String::from("10.9.0.3/32"),
                    ended_ms: 3_000,
                    why: String::from("expired"),
                    packets: 5,
                    bytes: 500,
                    json: String::from("{\"a\":3}"),
                },
                &hooks,
            )
            .unwrap();
        store
            .record_ban(&BanRecord::Note(String::from("{\"a\":4}")), &hooks)
            .unwrap();
        let open = store.open_bans().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].net, "10.9.0.2/32".parse().unwrap());
        assert_eq!(open[0].expires, Duration::from_millis(601_000));
        assert_eq!(
            open[0].alert,
            Some(AlertRef {
                id: String::from("r-1"),
                kind: AlertKind::ThresholdPps,
                capture: None,
            })
        );
        assert_eq!(store.ban_in_force("10.9.0.3/32").unwrap(), None);
        // The first ends at 601 s, the second ended at 3 s.
        let history = |since_ms| store.ban_history(Duration::from_millis(since_ms)).unwrap();
        assert_eq!(history(3_500).len(), 1);
        assert_eq!(history(2_500).len(), 2);
        let queued: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM webhook_queue", [], |row| row.get(0))
            .unwrap();
        assert_eq!(queued, 4);
        let (packets, why): (i64, String) = store
            .conn
            .query_row(
                "SELECT packets, ended_why FROM bans WHERE subject = '10.9.0.3/32'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((packets, why.as_str()), (5, "expired"));
        drop(store);
        let _ = std::fs::remove_file(&path);
    }
}
