//! The SQLite store: the known sources and the learning state, kept across restarts.
//!
//! WAL mode, so that `netwatch known` can read while the daemon writes. The schema is
//! versioned with `PRAGMA user_version` and migrated forward at open; a file written by a newer
//! netwatch is refused rather than damaged.

use std::{
    collections::HashSet,
    fs,
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
];

const LEARNING_STARTED: &str = "learning_started_ms";

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
            fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
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
            let tx = self.conn.transaction().map_err(|err| StoreError::Sqlite {
                path: self.path.clone(),
                source: err,
            })?;
            tx.execute_batch(sql)
                .and_then(|()| tx.pragma_update(None, "user_version", index as i64 + 1))
                .and_then(|()| tx.commit())
                .map_err(|err| StoreError::Sqlite {
                    path: self.path.clone(),
                    source: err,
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
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        for change in changes {
            match change {
                KnownChange::LearningStarted(started) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                        params![LEARNING_STARTED, millis(*started).to_string()],
                    )
                    .map_err(sqlite)?;
                }
                KnownChange::Learned(addr) => {
                    insert_known(&tx, *addr, Origin::Learned, at).map_err(sqlite)?;
                }
                KnownChange::Alerted(addr) => {
                    insert_known(&tx, *addr, Origin::Alerted, at).map_err(sqlite)?;
                }
            }
        }
        tx.commit().map_err(sqlite)
    }

    /// Records that these known sources were seen at `at`.
    pub fn touch(&mut self, addrs: &[IpAddr], at: Duration) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        {
            let mut update = tx
                .prepare(
                    "UPDATE known_sources SET last_seen_ms = max(last_seen_ms, ?2) WHERE addr = ?1",
                )
                .map_err(sqlite)?;
            for addr in addrs {
                update
                    .execute(params![addr.to_string(), millis(at)])
                    .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)
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
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        let mut added = 0;
        for addr in addrs {
            added += insert_known(&tx, *addr, Origin::Manual, at).map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)?;
        Ok(added)
    }

    /// Removes these sources; returns how many were there.
    pub fn known_remove(&mut self, addrs: &[IpAddr]) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        let mut removed = 0;
        for addr in addrs {
            removed += tx
                .execute(
                    "DELETE FROM known_sources WHERE addr = ?1",
                    [addr.to_string()],
                )
                .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)?;
        Ok(removed)
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
