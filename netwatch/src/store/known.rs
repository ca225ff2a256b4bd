//! The known sources and the learning state.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{LEARNING_STARTED, Store, StoreError, millis};
use crate::detect::{KnownChange, KnownState};

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

impl Store {
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
