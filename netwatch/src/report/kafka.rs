//! Export to Kafka, for fleets: every record a sensor reports (intervals, alerts, events,
//! bans and rules), the same JSON objects as `--format json` with the sensor's id added,
//! produced from the store's durable queue (the one the webhooks use) by a thread of its own,
//! oldest first, with librdkafka's idempotent producer. A record leaves the queue only once
//! the brokers acknowledged it, so brokers that are down, unreachable or refusing lose
//! nothing: it goes out, in order, once they are back, across a restart too. The queue is
//! bounded (`queue_max`); past it the oldest records go, counted and said. A slow broker
//! never delays an interval: the pipeline only queues.
//!
//! Topics are named by kind with a schema version (`netwatch.intervals.v1`,
//! `netwatch.alerts.v1`, `netwatch.events.v1`, `netwatch.mitigation.v1`); keys order what
//! belongs together: an alert's event id, the interface of an interval or an event, a ban's
//! network, a rule's signature.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, ClientContext,
    config::RDKafkaLogLevel,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext},
};
use serde_json::Value;

use super::{
    metrics::Metrics,
    queue_reader::{Worker, open_queue, wait},
};
use crate::store::Store;

/// The queue's name for the Kafka export (the store's).
pub const QUEUE: &str = crate::store::KAFKA_QUEUE;

/// The schema version in every topic's name.
pub const SCHEMA: &str = "v1";

/// `[export.kafka]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// The brokers, `HOST:PORT`; none: no export (the default).
    pub brokers: Vec<String>,
    /// This sensor's id in every record; empty: the host's name.
    pub sensor: String,
    /// The topics' common prefix: `PREFIX.intervals.v1` and so on.
    pub topic_prefix: String,
    /// Interval records too (alerts, events, bans and rules always).
    pub intervals: bool,
    /// Records waiting in the store at most; past it the oldest go, counted and said.
    pub queue_max: u64,
    /// Records per batch handed to the producer, whose acknowledgement is awaited.
    pub batch: usize,
    /// librdkafka settings passed through as they are: `security.protocol`,
    /// `ssl.ca.location`, `sasl.mechanism`, `sasl.username`, `compression.type`... Secrets
    /// come from the environment: `NETWATCH_KAFKA_SASL_PASSWORD` and
    /// `NETWATCH_KAFKA_SSL_KEY_PASSWORD` win over the file.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            sensor: String::new(),
            topic_prefix: String::from("netwatch"),
            intervals: true,
            queue_max: 1_000_000,
            batch: 500,
            properties: BTreeMap::new(),
        }
    }
}

/// The settings netwatch sets itself: what the export's guarantees rest on.
const OWN_PROPERTIES: [&str; 6] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "max.in.flight.requests.per.connection",
    "message.timeout.ms",
    "client.id",
];

impl KafkaConfig {
    /// Whether records are exported.
    pub fn enabled(&self) -> bool {
        !self.brokers.is_empty()
    }

    /// Checks the values; the field and why not.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |field: &str, reason: String| Err((format!("export.kafka.{field}"), reason));
        for broker in &self.brokers {
            let ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return invalid("brokers", format!("{broker:?} is not HOST:PORT"));
            }
        }
        let safe = |text: &str| {
            !text.is_empty()
                && text.len() <= 200
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !safe(&self.topic_prefix) {
            return invalid(
                "topic_prefix",
                String::from("must be letters, digits, '.', '_' or '-' (at most 200)"),
            );
        }
        if !self.sensor.is_empty() && !safe(&self.sensor) {
            return invalid(
                "sensor",
                String::from("must be letters, digits, '.', '_' or '-' (at most 200)"),
            );
        }
        if self.queue_max < 1_000 {
            return invalid("queue_max", String::from("must be at least 1000"));
        }
        if !(1..=10_000).contains(&self.batch) {
            return invalid("batch", String::from("must be 1 to 10000"));
        }
        if let Some(own) = self
            .properties
            .keys()
            .find(|key| OWN_PROPERTIES.contains(&key.as_str()))
        {
            return invalid(
                "properties",
                format!("{own} is netwatch's to set (brokers, and the idempotent producer)"),
            );
        }
        Ok(())
    }

    /// The sensor's id: the configured one, else the host's name.
    pub fn sensor_id(&self) -> String {
        if !self.sensor.is_empty() {
            return self.sensor.clone();
        }
        let mut name = [0u8; 256];
        // SAFETY: a buffer of the length given, which the call fills NUL-terminated.
        let done = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
        let len = name.iter().position(|byte| *byte == 0).unwrap_or(0);
        if done == 0 && len > 0 {
            String::from_utf8_lossy(&name[..len]).into_owned()
        } else {
            String::from("netwatch")
        }
    }

    /// The topic of a record of JSON `type` `kind`, and its key; `None` for a record not
    /// exported.
    pub fn route(&self, record: &Value) -> Option<(String, String)> {
        let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
        let (kind, key) = match record["type"].as_str()? {
            "interval" => ("intervals", text("iface")),
            "alert" => ("alerts", text("id")),
            "event" => ("events", text("iface")),
            "ban" => ("mitigation", text("subject")),
            "rule" => ("mitigation", text("signature")),
            _ => return None,
        };
        Some((format!("{}.{kind}.{SCHEMA}", self.topic_prefix), key))
    }
}

/// What the export stands at, for the metrics.
#[derive(Debug, Default)]
pub struct KafkaState {
    /// Records waiting in the store.
    pub queued: AtomicU64,
    /// Records the brokers acknowledged since the start.
    pub sent: AtomicU64,
    /// Records dropped for the queue's bound since the start.
    pub dropped: AtomicU64,
    /// Whether the brokers take records now.
    pub up: AtomicBool,
}

/// The producer's context: librdkafka's logs to debug (its retries would fill the log while
/// brokers are down; the export says an outage once), its errors kept for that line, and
/// each delivery's result by queue id.
struct Context {
    last_error: Mutex<Option<String>>,
    deliveries: Mutex<Vec<(i64, Result<(), String>)>>,
}

impl ClientContext for Context {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        log::debug!(target: "librdkafka", "{fac} {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<i64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err.to_string()),
        };
        self.deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((*id, outcome));
    }
}

/// The export thread.
pub struct Exporter {
    worker: Worker,
}

/// How long a stop waits for the records queued to go out.
const DRAIN_AT_STOP: Duration = Duration::from_secs(5);

impl Exporter {
    /// Starts producing what the store at `db` queues for Kafka; errs when librdkafka
    /// refuses the settings (a property it does not know, say).
    pub fn start(
        db: PathBuf,
        config: KafkaConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> std::io::Result<Self> {
        let sensor = config.sensor_id();
        let mut client = ClientConfig::new();
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        for (variable, property) in [
            ("NETWATCH_KAFKA_SASL_PASSWORD", "sasl.password"),
            ("NETWATCH_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
        ] {
            if let Ok(secret) = std::env::var(variable) {
                client.set(property, secret);
            }
        }
        if !config.properties.contains_key("compression.type")
            && !config.properties.contains_key("compression.codec")
        {
            // Batches compress well (records of one kind look alike): a sixteenth of their
            // size (bench/scripts/record_sizes.py).
            client.set("compression.type", "gzip");
        }
        client
            .set("bootstrap.servers", config.brokers.join(","))
            .set("client.id", format!("netwatch-{sensor}"))
            // Order kept, each record once, as the brokers see it, whatever the retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            // A batch not acknowledged in this time stays queued and is produced again.
            .set("message.timeout.ms", "10000");
        let context = Context {
            last_error: Mutex::new(None),
            deliveries: Mutex::new(Vec::new()),
        };
        let producer: BaseProducer<Context> = client
            .create_with_context(context)
            .map_err(|err| std::io::Error::other(format!("export.kafka: {err}")))?;
        let worker = Worker::spawn("kafka", move |stop| {
            export(
                &db,
                &config,
                &sensor,
                &producer,
                stop,
                &KafkaState::default(),
                metrics.as_deref(),
            );
        })?;
        Ok(Self { worker })
    }

    /// Stops once what is queued went out, or after a few seconds; what is left stays
    /// queued for the next start.
    pub fn stop(self) {
        self.worker.stop();
    }
}

/// Brokers that refuse: since when.
struct Outage {
    since: Instant,
}

fn export(
    db: &std::path::Path,
    config: &KafkaConfig,
    sensor: &str,
    producer: &BaseProducer<Context>,
    stop: &AtomicBool,
    state: &KafkaState,
    metrics: Option<&Metrics>,
) {
    let Some(store) = open_queue(db, "the kafka export", stop) else {
        return;
    };
    let mut outage: Option<Outage> = None;
    let mut backoff = Duration::ZERO;
    let mut stopping: Option<Instant> = None;
    let mut counted: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) && stopping.is_none() {
            stopping = Some(Instant::now());
        }
        if stopping.is_some_and(|at| at.elapsed() >= DRAIN_AT_STOP) {
            break;
        }
        if counted.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            counted = Some(Instant::now());
            bound(&store, config, state);
            if let Some(metrics) = metrics {
                metrics.set_export(
                    QUEUE,
                    state.queued.load(Ordering::Relaxed),
                    state.sent.load(Ordering::Relaxed),
                    state.dropped.load(Ordering::Relaxed),
                    state.up.load(Ordering::Relaxed),
                );
            }
        }
        let batch = match store.queued(QUEUE, config.batch) {
            Ok(batch) => batch,
            Err(err) => {
                log::warn!("kafka queue: {err}");
                if wait(Duration::from_secs(1), stop) && stopping.is_some() {
                    break;
                }
                continue;
            }
        };
        if batch.is_empty() {
            if stopping.is_some() {
                break;
            }
            wait(Duration::from_millis(100), stop);
            continue;
        }
        match produce(producer, config, sensor, &batch) {
            Ok(last) => {
                if let Err(err) = store.delivered(QUEUE, last) {
                    log::warn!("kafka queue: {err}");
                }
                let sent = batch.iter().filter(|(id, _)| *id <= last).count() as u64;
                state.sent.fetch_add(sent, Ordering::Relaxed);
                state.up.store(true, Ordering::Relaxed);
                backoff = Duration::ZERO;
                if let Some(down) = outage.take() {
                    log::info!(
                        "kafka: the brokers take records again after {:.0}s; what waited in the store goes out in order",
                        down.since.elapsed().as_secs_f64()
                    );
                }
            }
            Err((last, reason)) => {
                if let Some(last) = last {
                    // What the brokers took before the first refusal leaves the queue.
                    let _ = store.delivered(QUEUE, last);
                    let sent = batch.iter().filter(|(id, _)| *id <= last).count() as u64;
                    state.sent.fetch_add(sent, Ordering::Relaxed);
                }
                state.up.store(false, Ordering::Relaxed);
                if outage.is_none() {
                    let reason = producer
                        .context()
                        .last_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take()
                        .unwrap_or(reason);
                    log::warn!(
                        "kafka: the brokers ({}) do not take records ({reason}); they wait in the store, {} of them, nothing is lost until {} wait (export.kafka.queue_max)",
                        config.brokers.join(","),
                        store.queue_len_of(QUEUE).unwrap_or(0),
                        config.queue_max
                    );
                    outage = Some(Outage {
                        since: Instant::now(),
                    });
                }
                backoff = (backoff * 2)
                    .max(Duration::from_millis(500))
                    .min(Duration::from_secs(5));
                if stopping.is_some() {
                    break;
                }
                wait(backoff, stop);
            }
        }
    }
    if let Some(metrics) = metrics {
        bound(&store, config, state);
        metrics.set_export(
            QUEUE,
            state.queued.load(Ordering::Relaxed),
            state.sent.load(Ordering::Relaxed),
            state.dropped.load(Ordering::Relaxed),
            state.up.load(Ordering::Relaxed),
        );
    }
}

/// Produces a batch and waits for its acknowledgements: the last id acknowledged with every
/// one before it, or the last such id (if any) and why not all.
#[allow(clippy::type_complexity)]
fn produce(
    producer: &BaseProducer<Context>,
    config: &KafkaConfig,
    sensor: &str,
    batch: &[(i64, String)],
) -> Result<i64, (Option<i64>, String)> {
    producer
        .context()
        .deliveries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    let mut handed = Vec::with_capacity(batch.len());
    let mut refused = None;
    for (id, line) in batch {
        let Ok(mut record) = serde_json::from_str::<Value>(line) else {
            // Unreadable (a store written by hand): acknowledged, not sent, said.
            log::warn!("kafka queue: record {id} is no JSON object; left out");
            handed.push((*id, true));
            continue;
        };
        let Some((topic, key)) = config.route(&record) else {
            handed.push((*id, true));
            continue;
        };
        if !config.intervals && record["type"] == "interval" {
            handed.push((*id, true));
            continue;
        }
        record["sensor"] = Value::String(sensor.to_owned());
        let payload = record.to_string();
        let sequence = id.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "netwatch-queue-id",
            value: Some(sequence.as_str()),
        });
        let mut pending = BaseRecord::with_opaque_to(&topic, Box::new(*id))
            .key(key.as_str())
            .payload(payload.as_str())
            .headers(headers);
        // The producer's own buffer full: served, then tried again.
        let sent = loop {
            match producer.send(pending) {
                Ok(()) => break Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    producer.poll(Duration::from_millis(100));
                    pending = back;
                }
                Err((err, _)) => break Err(err.to_string()),
            }
        };
        if let Err(why) = sent {
            refused = Some(why);
            break;
        }
        handed.push((*id, false));
    }
    // Waits for every acknowledgement, or the message timeout.
    let _ = producer.flush(Duration::from_secs(15));
    let deliveries: BTreeMap<i64, Result<(), String>> = producer
        .context()
        .deliveries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .drain(..)
        .collect();
    let mut last = None;
    for (id, skipped) in &handed {
        if *skipped {
            last = Some(*id);
            continue;
        }
        match deliveries.get(id) {
            Some(Ok(())) => last = Some(*id),
            Some(Err(reason)) => return Err((last, reason.clone())),
            None => return Err((last, String::from("no acknowledgement in time"))),
        }
    }
    match (refused, last) {
        (Some(why), last) => Err((last, why)),
        (None, Some(last)) => Ok(last),
        (None, None) => Err((None, String::from("nothing acknowledged"))),
    }
}

/// Keeps the queue within `queue_max`: the oldest go, counted and said (once per 10,000).
fn bound(store: &Store, config: &KafkaConfig, state: &KafkaState) {
    let queued = store.queue_len_of(QUEUE).unwrap_or(0);
    if queued > config.queue_max {
        let over = queued - config.queue_max;
        match store.drop_oldest(QUEUE, over) {
            Ok(dropped) => {
                let before = state.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                if before / 10_000 != (before + dropped as u64) / 10_000 || before == 0 {
                    log::warn!(
                        "kafka: {} records dropped so far, the oldest, for the queue's bound of {} (export.kafka.queue_max): the brokers have been away long",
                        before + dropped as u64,
                        config.queue_max
                    );
                }
            }
            Err(err) => log::warn!("kafka queue: {err}"),
        }
    }
    state
        .queued
        .store(queued.min(config.queue_max), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of record goes to its topic under its key; the configuration's checks name
    /// their field.
    #[test]
    fn records_are_routed_by_kind_and_settings_checked() {
        let config = KafkaConfig {
            brokers: vec![String::from("127.0.0.1:9092")],
            ..KafkaConfig::default()
        };
        let route = |record: Value| config.route(&record);
        assert_eq!(
            route(serde_json::json!({"type": "interval", "iface": "eth0"})),
            Some((String::from("netwatch.intervals.v1"), String::from("eth0")))
        );
        assert_eq!(
            route(serde_json::json!({"type": "alert", "id": "a-1"})),
            Some((String::from("netwatch.alerts.v1"), String::from("a-1")))
        );
        assert_eq!(
            route(serde_json::json!({"type": "ban", "subject": "10.0.0.1/32"})),
            Some((
                String::from("netwatch.mitigation.v1"),
                String::from("10.0.0.1/32")
            ))
        );
        assert_eq!(route(serde_json::json!({"type": "status"})), None);
        config.validate().unwrap();
        for (bad, field) in [
            (
                KafkaConfig {
                    brokers: vec![String::from("kafka")],
                    ..KafkaConfig::default()
                },
                "export.kafka.brokers",
            ),
            (
                KafkaConfig {
                    topic_prefix: String::from("a b"),
                    ..KafkaConfig::default()
                },
                "export.kafka.topic_prefix",
            ),
            (
                KafkaConfig {
                    properties: BTreeMap::from([(
                        String::from("enable.idempotence"),
                        String::from("false"),
                    )]),
                    ..KafkaConfig::default()
                },
                "export.kafka.properties",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().0, field);
        }
        assert!(!KafkaConfig::default().sensor_id().is_empty());
    }
}
