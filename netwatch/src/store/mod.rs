//! The SQLite store: what must survive a restart. One file, one connection, split by concern:
//! [`known`] (the known sources and the learning state), [`history`] (intervals, their top
//! sources, alerts and events), [`bans`] and [`rules`] (mitigation, from start to end, the
//! ones in force set again at start) and [`queue`] (records waiting for the webhooks).
//!
//! WAL mode, so that `netwatch known` can read while the daemon writes. The schema is
//! versioned with `PRAGMA user_version` and migrated forward at open; a file written by a newer
//! netwatch is refused rather than damaged.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rusqlite::Connection;

pub use self::{
    bans::{BanRecord, BanRow},
    history::{FindingRow, IntervalRow, SlotlessRow, SourceRow, SourceTotal},
    known::{KnownSource, Origin},
    queue::KAFKA_QUEUE,
    rules::RuleRecord,
};

mod bans;
mod history;
mod known;
mod queue;
mod rules;

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
    // 4: the interface of each alert and event (`all`: the sum of several), as intervals
    // have it. Rows from before read as none (their JSON record has it).
    "ALTER TABLE findings ADD COLUMN iface TEXT;",
    // 5: traffic without a source slot, per interval: its total with the estimated distinct
    // sources and /16 (/48) prefixes, and its top prefixes and destinations, each list's rest
    // in a row whose subject is `other`.
    "CREATE TABLE interval_slotless (
         ts_ms             INTEGER NOT NULL,
         iface             TEXT NOT NULL,
         interval_ms       INTEGER NOT NULL,
         breakdown         TEXT NOT NULL
                           CHECK (breakdown IN ('total', 'wide', 'narrow', 'target')),
         subject           TEXT NOT NULL,
         kind              TEXT,
         port              INTEGER,
         packets           INTEGER NOT NULL,
         bytes             INTEGER NOT NULL,
         sources_estimate  INTEGER,
         prefixes_estimate INTEGER
     );
     CREATE INDEX interval_slotless_ts ON interval_slotless (ts_ms);
     CREATE INDEX interval_slotless_subject ON interval_slotless (subject, ts_ms);",
    // 6: bans, each from its start to its end: the ones without an end are in force, and
    // are applied again at start.
    "CREATE TABLE bans (
         subject    TEXT NOT NULL,
         mode       TEXT NOT NULL,
         origin     TEXT NOT NULL CHECK (origin IN ('alert', 'manual')),
         reason     TEXT NOT NULL,
         alert_id   TEXT,
         alert_kind TEXT,
         iface      TEXT NOT NULL,
         offence    INTEGER NOT NULL,
         created_ms INTEGER NOT NULL,
         expires_ms INTEGER NOT NULL,
         ended_ms   INTEGER,
         ended_why  TEXT,
         packets    INTEGER NOT NULL DEFAULT 0,
         bytes      INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX bans_open ON bans (subject) WHERE ended_ms IS NULL;
     CREATE INDEX bans_created ON bans (created_ms);",
    // 7: signature rules, each from its start to its end, as bans: the ones without an end
    // are in force, and are set again at start. Their events are findings too: the table is
    // made again to let them in (SQLite cannot change a CHECK in place).
    "CREATE TABLE findings_7 (
         ts_ms   INTEGER NOT NULL,
         type    TEXT NOT NULL CHECK (type IN ('alert', 'event', 'rule')),
         kind    TEXT NOT NULL,
         subject TEXT NOT NULL,
         record  TEXT NOT NULL,
         attack  TEXT,
         sources INTEGER,
         iface   TEXT
     );
     INSERT INTO findings_7 (ts_ms, type, kind, subject, record, attack, sources, iface)
         SELECT ts_ms, type, kind, subject, record, attack, sources, iface FROM findings;
     DROP TABLE findings;
     ALTER TABLE findings_7 RENAME TO findings;
     CREATE INDEX findings_ts ON findings (ts_ms);
     CREATE INDEX findings_attack ON findings (attack, ts_ms) WHERE attack IS NOT NULL;
     CREATE TABLE rules (
         signature        TEXT NOT NULL,
         destination      TEXT NOT NULL,
         protocol         TEXT CHECK (protocol IN ('tcp', 'udp', 'icmp', 'other')),
         source_port      INTEGER,
         destination_port INTEGER,
         tcp_syn          INTEGER NOT NULL,
         fragments        INTEGER NOT NULL,
         action           TEXT NOT NULL CHECK (action IN ('drop', 'rate-limit')),
         rate_pps         INTEGER,
         rtbh             INTEGER NOT NULL,
         attack           TEXT,
         mode             TEXT NOT NULL,
         origin           TEXT NOT NULL CHECK (origin IN ('alert', 'manual')),
         alert_id         TEXT,
         alert_kind       TEXT,
         iface            TEXT NOT NULL,
         offence          INTEGER NOT NULL,
         created_ms       INTEGER NOT NULL,
         expires_ms       INTEGER NOT NULL,
         ended_ms         INTEGER,
         ended_why        TEXT,
         matched_packets  INTEGER NOT NULL DEFAULT 0,
         matched_bytes    INTEGER NOT NULL DEFAULT 0,
         dropped_packets  INTEGER NOT NULL DEFAULT 0,
         dropped_bytes    INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX rules_open ON rules (signature) WHERE ended_ms IS NULL;
     CREATE INDEX rules_created ON rules (created_ms);",
    // 8: the AS and country of each top source, and of each prefix and destination of the
    // traffic without a slot, where `[enrich]` knew them. Rows from before read as unknown.
    "ALTER TABLE interval_sources ADD COLUMN asn INTEGER;
     ALTER TABLE interval_sources ADD COLUMN as_org TEXT;
     ALTER TABLE interval_sources ADD COLUMN country TEXT;
     ALTER TABLE interval_slotless ADD COLUMN asn INTEGER;
     ALTER TABLE interval_slotless ADD COLUMN as_org TEXT;
     ALTER TABLE interval_slotless ADD COLUMN country TEXT;",
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
            let full = matches!(
                &err,
                rusqlite::Error::SqliteFailure(failure, _)
                    if matches!(
                        failure.code,
                        rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure
                    )
            );
            if !full {
                return Err(sqlite(err));
            }
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
            log::warn!(
                "store {}: {err} (a full disk?): opened with an exclusive lock, without its shared-memory file; `netwatch history` on it, and webhook delivery, wait until this run ends (alerts stay queued in the store for the next)",
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

    /// Writes the write-ahead log back into the database and truncates it: what a full disk
    /// needs first. Best effort; a failure changes nothing.
    pub fn shrink_journal(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

/// A name as serde writes it (an alert kind, a mode), read back from a row.
fn by_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::{fs, net::IpAddr};

    use super::*;
    use crate::detect::KnownChange;

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
                    iface: "eth1".into(),
                }],
                &[],
            )
            .unwrap();
        // ts_ms, attack, sources, iface.
        type Row = (i64, Option<String>, Option<i64>, Option<String>);
        let rows: Vec<Row> = store
            .conn
            .prepare("SELECT ts_ms, attack, sources, iface FROM findings ORDER BY ts_ms")
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, None, None, None),
                (2, Some("reflection".into()), Some(200), Some("eth1".into()))
            ]
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
