//! The webhook queue: records waiting for each URL, and the batch in flight.

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError, to_i64};

/// The queue's name for the Kafka export, beside the webhooks' URLs.
pub const KAFKA_QUEUE: &str = "kafka";

/// Queues `record` (a JSON line) for every webhook URL, in the caller's transaction: a record
/// is kept and queued everywhere, or not at all.
pub(super) fn enqueue(
    tx: &rusqlite::Transaction<'_>,
    webhooks: &[String],
    record: &str,
) -> rusqlite::Result<()> {
    for url in webhooks {
        tx.execute(
            "INSERT INTO webhook_queue (url, record) VALUES (?1, ?2)",
            params![url, record],
        )?;
    }
    Ok(())
}

impl Store {
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

    /// Forgets queued records up to `last_id` for `url`, once delivered.
    pub fn delivered(&self, url: &str, last_id: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM webhook_queue WHERE url = ?1 AND id <= ?2",
                params![url, last_id],
            )
            .map_err(|err| self.sqlite(err))
    }

    /// Records waiting for `url` (a webhook, or an exporter's queue).
    pub fn queue_len_of(&self, url: &str) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM webhook_queue WHERE url = ?1",
                [url],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| count.max(0) as u64)
            .map_err(|err| self.sqlite(err))
    }

    /// Forgets the `count` oldest records queued for `url` (a bound reached): how many.
    pub fn drop_oldest(&self, url: &str, count: u64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM webhook_queue WHERE id IN
                     (SELECT id FROM webhook_queue WHERE url = ?1 ORDER BY id LIMIT ?2)",
                params![url, to_i64(count)],
            )
            .map_err(|err| self.sqlite(err))
    }

    /// Queues `record` for `url` alone (an exporter's, such as an interval for Kafka).
    pub fn enqueue_one(&mut self, url: &str, record: &str) -> Result<(), StoreError> {
        self.in_transaction(|tx| enqueue(tx, &[url.to_owned()], record))
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
}
