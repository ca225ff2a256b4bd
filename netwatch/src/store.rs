//! The SQLite store: the known sources and the learning state, kept across restarts.
//!
//! WAL mode, so that `netwatch known` can read while the daemon writes. The schema is
//! versioned with `PRAGMA user_version` and migrated forward at open; a file written by a newer
//! netwatch is refused rather than damaged.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::detect::{KnownChange, KnownState};

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: known sources and learning state.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     );
     CREATE TABLE known_sources (
         addr          TEXT PRIMARY KEY,
         origin        TEXT NOT NULL CHECK (origin IN ('learned', 'manual', 'alerted')),
         first_seen_ms INTEGER NOT NULL,
         last_seen_ms  INTEGER NOT NULL
     );",
    // 2: history of intervals, top sources, alerts and events; the webhook queue.
    "CREATE TABLE intervals (
         ts_ms           INTEGER NOT NULL,
         iface           TEXT NOT NULL,
         interval_ms     INTEGER NOT NULL,
         packets         INTEGER NOT NULL,
         bytes           INTEGER NOT NULL,
         non_ip          INTEGER NOT NULL,
         malformed       INTEGER NOT NULL,
         overflow        INTEGER NOT NULL,
         truncated       INTEGER NOT NULL,
         sampled         INTEGER NOT NULL,
         sample_capped   INTEGER NOT NULL,
         sample_lost     INTEGER NOT NULL,
         sources_tracked INTEGER NOT NULL
     );
     CREATE INDEX intervals_ts ON intervals (ts_ms);
     CREATE TABLE interval_sources (
         ts_ms       INTEGER NOT NULL,
         iface       TEXT NOT NULL,
         interval_ms INTEGER NOT NULL,
         source      TEXT NOT NULL,
         packets     INTEGER NOT NULL,
         bytes       INTEGER NOT NULL,
         tcp         INTEGER NOT NULL,
         udp         INTEGER NOT NULL,
         icmp        INTEGER NOT NULL,
         other       INTEGER NOT NULL,
         syn         INTEGER NOT NULL,
         ports       INTEGER NOT NULL,
         hosts       INTEGER NOT NULL
     );
     CREATE INDEX interval_sources_ts ON interval_sources (ts_ms);
     CREATE INDEX interval_sources_source ON interval_sources (source, ts_ms);
     CREATE TABLE findings (
         ts_ms   INTEGER NOT NULL,
         type    TEXT NOT NULL CHECK (type IN ('alert', 'event')),
         kind    TEXT NOT NULL,
         subject TEXT NOT NULL,
         record  TEXT NOT NULL
     );
     CREATE INDEX findings_ts ON findings (ts_ms);
     CREATE TABLE webhook_queue (
         id     INTEGER PRIMARY KEY AUTOINCREMENT,
         url    TEXT NOT NULL,
         record TEXT NOT NULL
     );
     CREATE INDEX webhook_queue_url ON webhook_queue (url, id);",
    // 3: what an alert's traffic is and how many sources it stands for; fragments and
    // reflection answers per source. Rows from before read as none.
    "ALTER TABLE findings ADD COLUMN attack TEXT;
     ALTER TABLE findings ADD COLUMN sources INTEGER;
     CREATE INDEX findings_attack ON findings (attack, ts_ms) WHERE attack IS NOT NULL;
     ALTER TABLE interval_sources ADD COLUMN fragments INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE interval_sources ADD COLUMN reflected INTEGER NOT NULL DEFAULT 0;",
];

const LEARNING_STARTED: &str = "learning_started_ms";
/// Bytes the write-ahead log is truncated to after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the folder failed.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// SQLite said no.
    #[error("store {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file is from a newer netwatch.
    #[error("store {path} has schema version {found}; this netwatch knows up to {known}")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: usize,
    },
    /// A row that cannot be read back.
    #[error("store {path}: bad address {addr:?} in known_sources")]
    BadAddress {
        /// The file.
        path: PathBuf,
        /// The text.
        addr: String,
    },
}

/// How a source became known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Seen during the learning period.
    Learned,
    /// Added with `netwatch known add`.
    Manual,
    /// Reported once as unknown.
    Alerted,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Self::Learned => "learned",
            Self::Manual => "manual",
            Self::Alerted => "alerted",
        }
    }
}

/// One known source, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownSource {
    /// The address.
    pub addr: IpAddr,
    /// `learned`, `manual` or `alerted`.
    pub origin: String,
    /// Unix milliseconds.
    pub first_seen_ms: i64,
    /// Unix milliseconds.
    pub last_seen_ms: i64,
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn millis(at: Duration) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating the file and its folder if needed) and migrates.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            crate::private_files::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        // The store holds user names, URLs and DNS names: created 0600, and SQLite gives its
        // WAL and shared-memory files the mode of the database.
        crate::private_files::prepare(path).map_err(|source| StoreError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        if let Err(err) = conn.pragma_update(None, "journal_mode", "WAL") {
            // The write-ahead log's index lives in a shared-memory file beside the store,
            // which SQLite cannot size on a full disk: the store would not even open, and a
            // restart after the disk filled would fail. Opened with an exclusive lock, SQLite
            // keeps that index in the process's own memory instead. Reads work, refused
            // writes wait in memory (see report::history) until there is room; other
            // readers (`netwatch history`) wait until this run ends.
            drop(conn);
            conn = Connection::open(path).map_err(sqlite)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
                .map_err(sqlite)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sqlite)?;
            eprintln!(
                "netwatch: store {}: {err} (a full disk?): opened with an exclusive lock, without its shared-memory file; `netwatch history` on it waits until this run ends",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        // After a checkpoint the write-ahead log shrinks back to this: it never keeps the
        // disk it took at a peak.
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(sqlite)?;
        let mut store = Self {
            conn,
            path: path.to_owned(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in a transaction and commits it; an error in `f` rolls everything back.
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let path = &self.path;
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        let value = f(&tx).map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        Ok(value)
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|err| self.sqlite(err))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version = self.schema_version()?;
        let known = MIGRATIONS.len();
        if version > known as i64 {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            self.in_transaction(|tx| {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", index as i64 + 1)
            })?;
        }
        Ok(())
    }

    /// What detection starts from.
    pub fn known_state(&self) -> Result<KnownState, StoreError> {
        let learning_started = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [LEARNING_STARTED],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(|err| self.sqlite(err))?
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(Duration::from_millis);
        let known = self
            .known_list()?
            .into_iter()
            .map(|source| source.addr)
            .collect::<HashSet<_>>();
        Ok(KnownState {
            known,
            learning_started,
        })
    }

    /// Keeps detection's changes, in one transaction.
    pub fn apply(&mut self, changes: &[KnownChange], at: Duration) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.in_transaction(|tx| {
            for change in changes {
                match change {
                    KnownChange::LearningStarted(started) => {
                        tx.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                            params![LEARNING_STARTED, millis(*started).to_string()],
                        )?;
                    }
                    KnownChange::Learned(addr) => {
                        insert_known(tx, *addr, Origin::Learned, at)?;
                    }
                    KnownChange::Alerted(addr) => {
                        insert_known(tx, *addr, Origin::Alerted, at)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Records that these known sources were seen at `at`.
    pub fn touch(&mut self, addrs: &[IpAddr], at: Duration) -> Result<(), StoreError> {
        self.in_transaction(|tx| {
            let mut update = tx.prepare(
                "UPDATE known_sources SET last_seen_ms = max(last_seen_ms, ?2) WHERE addr = ?1",
            )?;
            for addr in addrs {
                update.execute(params![addr.to_string(), millis(at)])?;
            }
            Ok(())
        })
    }

    /// Every known source, by address.
    pub fn known_list(&self) -> Result<Vec<KnownSource>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT addr, origin, first_seen_ms, last_seen_ms FROM known_sources ORDER BY addr",
            )
            .map_err(|err| self.sqlite(err))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(|err| self.sqlite(err))?;
        let mut sources = Vec::new();
        for row in rows {
            let (addr, origin, first_seen_ms, last_seen_ms) =
                row.map_err(|err| self.sqlite(err))?;
            let parsed = addr.parse().map_err(|_| StoreError::BadAddress {
                path: self.path.clone(),
                addr: addr.clone(),
            })?;
            sources.push(KnownSource {
                addr: parsed,
                origin,
                first_seen_ms,
                last_seen_ms,
            });
        }
        Ok(sources)
    }

    /// Adds sources by hand; returns how many were new.
    pub fn known_add(&mut self, addrs: &[IpAddr], at: Duration) -> Result<usize, StoreError> {
        self.in_transaction(|tx| {
            let mut added = 0;
            for addr in addrs {
                added += insert_known(tx, *addr, Origin::Manual, at)?;
            }
            Ok(added)
        })
    }

    /// Removes these sources; returns how many were there.
    pub fn known_remove(&mut self, addrs: &[IpAddr]) -> Result<usize, StoreError> {
        self.in_transaction(|tx| {
            let mut removed = 0;
            for addr in addrs {
                removed += tx.execute(
                    "DELETE FROM known_sources WHERE addr = ?1",
                    [addr.to_string()],
                )?;
            }
            Ok(removed)
        })
    }

    /// Removes sources not seen since `cutoff`; returns how many.
    pub fn known_prune(&mut self, cutoff: Duration) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM known_sources WHERE last_seen_ms < ?1",
                [millis(cutoff)],
            )
            .map_err(|err| self.sqlite(err))
    }
}

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
}

/// An alert or event as kept: its JSON line and what it is indexed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingRow {
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// `alert` or `event`.
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
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
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
            {
                let mut insert = tx.prepare(
                    "INSERT INTO interval_sources
                         (ts_ms, iface, interval_ms, source, packets, bytes, tcp, udp, icmp,
                          other, syn, ports, hosts, fragments, reflected)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
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
                tx.execute(
                    "INSERT INTO findings (ts_ms, type, kind, subject, record, attack, sources)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        finding.ts_ms,
                        finding.kind_of_record,
                        finding.kind,
                        finding.subject,
                        finding.record,
                        finding.attack,
                        finding.sources.map(to_i64),
                    ],
                )?;
                for url in webhooks {
                    tx.execute(
                        "INSERT INTO webhook_queue (url, record) VALUES (?1, ?2)",
                        params![url, finding.record],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Deletes history older than `cutoff`; returns the rows removed.
    pub fn prune_history(&mut self, cutoff: Duration) -> Result<usize, StoreError> {
        let cutoff = millis(cutoff);
        let mut removed = 0;
        for table in ["intervals", "interval_sources", "findings"] {
            removed += self
                .conn
                .execute(&format!("DELETE FROM {table} WHERE ts_ms < ?1"), [cutoff])
                .map_err(|err| self.sqlite(err))?;
        }
        Ok(removed)
    }

    /// The oldest queued records for `url`, at most `limit`: (id, JSON line).
    pub fn queued(&self, url: &str, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT id, record FROM webhook_queue WHERE url = ?1 ORDER BY id LIMIT ?2")
            .map_err(|err| self.sqlite(err))?;
        let rows = statement
            .query_map(params![url, to_i64(limit as u64)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(|err| self.sqlite(err))?;
        rows.collect::<Result<_, _>>()
            .map_err(|err| self.sqlite(err))
    }

    /// The batch for `url` that was sent and not yet acknowledged: its last record's id, so
    /// that a retry, after a restart too, sends exactly the same records under the same
    /// idempotency key.
    pub fn in_flight(&self, url: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("webhook_in_flight {url}")],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map(|value| value.and_then(|value| value.parse().ok()))
            .map_err(|err| self.sqlite(err))
    }

    /// Records the batch for `url` that is about to be sent (`Some(last id)`), or that it was
    /// acknowledged (`None`).
    pub fn set_in_flight(&self, url: &str, last_id: Option<i64>) -> Result<(), StoreError> {
        let key = format!("webhook_in_flight {url}");
        match last_id {
            Some(last_id) => self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, last_id.to_string()],
            ),
            None => self
                .conn
                .execute("DELETE FROM meta WHERE key = ?1", params![key]),
        }
        .map(drop)
        .map_err(|err| self.sqlite(err))
    }

    /// Writes the write-ahead log back into the database and truncates it: what a full disk
    /// needs first. Best effort; a failure changes nothing.
    pub fn shrink_journal(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }

    /// Forgets queued records up to `last_id` for `url`, once delivered.
    pub fn delivered(&self, url: &str, last_id: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM webhook_queue WHERE url = ?1 AND id <= ?2",
                params![url, last_id],
            )
            .map_err(|err| self.sqlite(err))
    }

    /// Records still waiting for a webhook.
    pub fn queue_len(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM webhook_queue", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|count| count.max(0) as u64)
            .map_err(|err| self.sqlite(err))
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
                "SELECT source, sum(packets), sum(bytes), count(*) FROM interval_sources
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
                    })
                },
            )
            .map_err(|err| self.sqlite(err))?;
        rows.collect::<Result<_, _>>()
            .map_err(|err| self.sqlite(err))
    }
}

/// Inserts a known source unless it is there; returns 1 if inserted.
fn insert_known(
    conn: &Connection,
    addr: IpAddr,
    origin: Origin,
    at: Duration,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR IGNORE INTO known_sources (addr, origin, first_seen_ms, last_seen_ms)
         VALUES (?1, ?2, ?3, ?3)",
        params![addr.to_string(), origin.as_str(), millis(at)],
    )
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "netwatch-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir.join("sub/netwatch.db")
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn known_set_survives_reopening() {
        let path = temp_db("reopen");
        {
            let mut store = Store::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
            store
                .apply(
                    &[
                        KnownChange::LearningStarted(Duration::from_secs(100)),
                        KnownChange::Learned(addr("192.0.2.1")),
                        KnownChange::Alerted(addr("2001:db8::1")),
                    ],
                    Duration::from_secs(101),
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let state = store.known_state().unwrap();
        assert_eq!(state.learning_started, Some(Duration::from_secs(100)));
        assert_eq!(
            state.known,
            [addr("192.0.2.1"), addr("2001:db8::1")]
                .into_iter()
                .collect()
        );
        let listed = store.known_list().unwrap();
        assert_eq!(listed[0].origin, "learned");
        assert_eq!(listed[1].origin, "alerted");
        let _ = fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn add_remove_and_prune() {
        let path = temp_db("edit");
        let mut store = Store::open(&path).unwrap();
        let a = addr("198.51.100.1");
        let b = addr("198.51.100.2");
        assert_eq!(
            store.known_add(&[a, b], Duration::from_secs(10)).unwrap(),
            2
        );
        assert_eq!(store.known_add(&[a], Duration::from_secs(11)).unwrap(), 0);
        store.touch(&[b], Duration::from_secs(500)).unwrap();
        assert_eq!(store.known_prune(Duration::from_secs(100)).unwrap(), 1);
        assert_eq!(store.known_list().unwrap()[0].addr, b);
        assert_eq!(store.known_remove(&[b, a]).unwrap(), 1);
        assert!(store.known_list().unwrap().is_empty());
        let _ = fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn the_store_and_its_journal_files_are_for_their_owner_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = temp_db("modes");
        let mut store = Store::open(&path).unwrap();
        store
            .apply(
                &[KnownChange::LearningStarted(Duration::from_secs(1))],
                Duration::from_secs(1),
            )
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            let mode = fs::metadata(&file)
                .unwrap_or_else(|err| panic!("{}: {err}", file.display()))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        let dir = path.parent().unwrap();
        assert_eq!(
            fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(store);
        let _ = fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_store_of_version_2_is_migrated_forward_with_its_rows() {
        let path = temp_db("v2");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO findings VALUES (1, 'alert', 'spike_pps', 'global', '{}')",
                [],
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        store
            .record_findings(
                &[FindingRow {
                    ts_ms: 2,
                    kind_of_record: "alert",
                    kind: "heavy_hitter".into(),
                    subject: "192.0.2.0/24".into(),
                    record: "{}".into(),
                    attack: Some("reflection".into()),
                    sources: Some(200),
                }],
                &[],
            )
            .unwrap();
        let rows: Vec<(i64, Option<String>, Option<i64>)> = store
            .conn
            .prepare("SELECT ts_ms, attack, sources FROM findings ORDER BY ts_ms")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [(1, None, None), (2, Some("reflection".into()), Some(200))]
        );
        let _ = fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let path = temp_db("newer");
        {
            let store = Store::open(&path).unwrap();
            store.conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        let _ = fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}

#[cfg(test)]
mod history_tests {
    use std::fs;

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
                ..IntervalRow::default()
            };
            store
                .record_interval(
                    &row,
                    &[
                        source(ts_ms, "192.0.2.1", packets),
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
        let top = store.top_sources(Duration::ZERO, all, 1).unwrap();
        assert_eq!(
            (top[0].source.as_str(), top[0].packets, top[0].intervals),
            ("192.0.2.1", 23, 3)
        );
        // Everything before 60 s goes: two intervals with two sources each.
        assert_eq!(store.prune_history(Duration::from_secs(60)).unwrap(), 6);
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
}
