//! Delivery of alerts and events to SIEM webhooks: JSON batches POSTed from the durable queue
//! in the SQLite store, oldest first, with a timeout and exponential backoff. A record leaves
//! the queue only once its URL answered 2xx, so a SIEM that is down loses nothing: everything
//! is delivered, in order, when it is back, even across a restart of netwatch.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use ureq::tls::{PemItem, RootCerts, TlsConfig, parse_pem};

use super::queue_reader::{Worker, open_queue};
use crate::store::Store;

/// Webhook settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where to POST (http:// or https://); `--webhook` adds more.
    pub urls: Vec<String>,
    /// Bearer token; the environment variable NETWATCH_WEBHOOK_TOKEN wins over it. Never on
    /// the command line, where other users could read it.
    pub token: Option<String>,
    /// Time allowed for one POST.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// Records per POST at most.
    pub batch: usize,
    /// Longest wait between two attempts while a URL fails.
    #[serde(with = "crate::duration")]
    pub max_backoff: Duration,
    /// A PEM file of the CA certificates that `https://` URLs must chain to, instead of the
    /// public roots built in: for a SIEM whose certificate comes from an internal CA.
    pub ca_file: Option<PathBuf>,
    /// Send the bearer token to `http://` URLs, in clear text; refused otherwise.
    pub allow_insecure: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            token: None,
            timeout: Duration::from_secs(5),
            batch: 100,
            max_backoff: Duration::from_secs(30),
            ca_file: None,
            allow_insecure: false,
        }
    }
}

impl WebhookConfig {
    /// How to check the SIEM's certificate: against the CA certificates of
    /// [`WebhookConfig::ca_file`] if set, else against the public roots built in. Errs, saying
    /// why, when the file cannot be read or holds no certificate.
    pub fn tls(&self) -> Result<TlsConfig, CaFileError> {
        let Some(path) = &self.ca_file else {
            return Ok(TlsConfig::default());
        };
        let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
            path: path.clone(),
            source,
        })?;
        let mut certificates = Vec::new();
        for item in parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
                Ok(_) => {}
                Err(source) => {
                    return Err(CaFileError::Pem {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        if certificates.is_empty() {
            return Err(CaFileError::NoCertificate(path.clone()));
        }
        Ok(TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&certificates))
            .build())
    }

    /// The token to send: the environment's, else the file's.
    pub fn effective_token(&self) -> Option<String> {
        std::env::var("NETWATCH_WEBHOOK_TOKEN")
            .ok()
            .filter(|token| !token.is_empty())
            .or_else(|| self.token.clone())
    }
}

/// Why [`WebhookConfig::ca_file`] cannot be used. Each message starts with or names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM.
    #[error("{}: {source}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: ureq::Error,
    },
    /// The file holds no certificate (other PEM items, or nothing).
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
}

/// What delivery stands at, for `netwatch status`.
#[derive(Debug, Default)]
pub struct WebhookState {
    /// URLs configured.
    pub urls: usize,
    /// Records queued for them, as of the last pass.
    pub queued: AtomicU64,
    /// URLs failing now.
    pub down: AtomicU64,
}

/// The delivery thread.
pub struct Deliverer {
    worker: Worker,
    state: Arc<WebhookState>,
}

impl Deliverer {
    /// Starts delivering what the store at `db` queues for `config.urls`.
    /// Errs if the CA file of `config` cannot be used (see [`WebhookConfig::tls`]).
    pub fn start(db: PathBuf, config: WebhookConfig) -> std::io::Result<Self> {
        let tls = config
            .tls()
            .map_err(|reason| std::io::Error::other(format!("webhook.ca_file: {reason}")))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        let state = Arc::new(WebhookState {
            urls: config.urls.len(),
            ..WebhookState::default()
        });
        let shared = Arc::clone(&state);
        let worker = Worker::spawn("webhook", move |stop| {
            deliver(&db, &config, &agent, stop, &shared);
        })?;
        Ok(Self { worker, state })
    }

    /// Where delivery stands.
    pub fn state(&self) -> Arc<WebhookState> {
        Arc::clone(&self.state)
    }

    /// Stops after the POST in flight; what is left stays queued for the next start.
    pub fn stop(self) {
        self.worker.stop();
    }
}

const IDLE: Duration = Duration::from_millis(200);

/// A URL that fails: since when, and how many attempts failed. Only its start and its end
/// are logged, not every retry.
#[derive(Clone, Copy, Debug)]
struct Outage {
    since: std::time::Instant,
    attempts: u64,
}

fn deliver(
    db: &std::path::Path,
    config: &WebhookConfig,
    agent: &ureq::Agent,
    stop: &AtomicBool,
    state: &WebhookState,
) {
    let Some(store) = open_queue(db, "webhook delivery", stop) else {
        return;
    };
    let token = config.effective_token();
    let mut backoff: Vec<Duration> = vec![Duration::ZERO; config.urls.len()];
    let mut outages: Vec<Option<Outage>> = vec![None; config.urls.len()];
    let mut counted: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut sent_any = false;
        for (index, url) in config.urls.iter().enumerate() {
            let batch = match store.queued(url, config.batch.max(1)) {
                Ok(batch) => batch,
                Err(err) => {
                    log::warn!("webhook queue: {err}");
                    continue;
                }
            };
            // A batch sent and not acknowledged (by this run or one before it) is sent again
            // as it was: the same records under the same key, whatever was queued since.
            let in_flight = store.in_flight(url).unwrap_or(None);
            let batch: Vec<(i64, String)> = match in_flight {
                Some(last) if batch.first().is_some_and(|(id, _)| *id <= last) => {
                    batch.into_iter().filter(|(id, _)| *id <= last).collect()
                }
                _ => batch,
            };
            let Some(last_id) = batch.last().map(|(id, _)| *id) else {
                continue;
            };
            let first_id = batch.first().map_or(last_id, |(id, _)| *id);
            if in_flight != Some(last_id)
                && let Err(err) = store.set_in_flight(url, Some(last_id))
            {
                log::warn!("webhook queue: {err}");
            }
            let body = format!(
                "[{}]",
                batch
                    .iter()
                    .map(|(_, record)| record.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut request = agent
                .post(url)
                .header("Content-Type", "application/json")
                // Lets a receiver drop a batch it already has, if an answer got lost.
                .header("Idempotency-Key", format!("netwatch-{first_id}-{last_id}"));
            if let Some(token) = &token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let outcome = match request.send(body.as_str()) {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("answered {}", response.status())),
                Err(err) => Err(err.to_string()),
            };
            match outcome {
                Ok(()) => {
                    if let Err(err) = store
                        .delivered(url, last_id)
                        .and_then(|_| store.set_in_flight(url, None))
                    {
                        log::warn!("webhook queue: {err}");
                    }
                    if let Some(outage) = outages[index].take() {
                        let queued = queued_for(&store, &config.urls);
                        log::info!(
                            "webhook {url} is back after {:.0}s down and {} failed attempts; delivering the {queued} records queued meanwhile",
                            outage.since.elapsed().as_secs_f64(),
                            outage.attempts
                        );
                    }
                    backoff[index] = Duration::ZERO;
                    sent_any = true;
                }
                Err(reason) => {
                    let queued = queued_for(&store, &config.urls);
                    backoff[index] = (backoff[index] * 2)
                        .max(Duration::from_millis(500))
                        .min(config.max_backoff);
                    match &mut outages[index] {
                        Some(outage) => outage.attempts += 1,
                        None => {
                            log::warn!(
                                "webhook {url} is down ({reason}); {queued} records queued, nothing is lost; retrying with backoff up to {:?}",
                                config.max_backoff
                            );
                            outages[index] = Some(Outage {
                                since: std::time::Instant::now(),
                                attempts: 1,
                            });
                        }
                    }
                }
            }
        }
        // Counted once a second at most: a count walks the queue.
        if counted.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            counted = Some(std::time::Instant::now());
            state
                .queued
                .store(queued_for(&store, &config.urls), Ordering::Relaxed);
        }
        state.down.store(
            outages.iter().filter(|outage| outage.is_some()).count() as u64,
            Ordering::Relaxed,
        );
        if !sent_any {
            let wait = backoff
                .iter()
                .copied()
                .filter(|wait| !wait.is_zero())
                .min()
                .unwrap_or(IDLE);
            super::queue_reader::wait(wait, stop);
        }
    }
}

/// Records waiting for these URLs (the queue also holds the exporters').
fn queued_for(store: &Store, urls: &[String]) -> u64 {
    urls.iter()
        .map(|url| store.queue_len_of(url).unwrap_or(0))
        .sum()
}
