//! `netwatch monitor`: attach to a live interface and run the pipeline every interval until a
//! signal.

use std::{
    io::{self, BufWriter, Write},
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::oneshot,
    time::{MissedTickBehavior, interval_at, sleep_until},
};

use crate::{
    cli::{MonitorArgs, PipelineArgs},
    config::{Config, ConfigError},
    datapath::{Attachment, Datapath, DatapathError, LoadOptions, SampleRing, Snapshot},
    detect::{Detector, KnownState},
    inspect::Inspector,
    pipeline::{History, Outputs, Pipeline},
    privilege,
    report::{
        Context,
        history::HistorySink,
        metrics::{self, Metrics},
        webhook::Deliverer,
    },
    store::{Store, StoreError},
};

/// Why monitoring (or a replay) could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The process lacks capabilities.
    #[error(
        "permission denied: netwatch needs root or the capabilities {}; missing: {}",
        "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN",
        .0.join(", ")
    )]
    NotPermitted(Vec<&'static str>),
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No interface given.
    #[error("no interface to watch: give --iface or set monitor.iface in the config")]
    NoInterface,
    /// The datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics server could not start.
    #[error("cannot serve metrics on {addr}: {source} (see --metrics-addr)")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The sample ring buffer could not be watched.
    #[error("cannot read the sample ring buffer: {0}")]
    Samples(#[source] io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// An output file could not be created.
    #[error("cannot create output file {path}: {source}")]
    Output {
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Writing a report failed (a closed pipe, a full disk).
    #[error("cannot write the report: {0}")]
    Write(#[source] io::Error),
}

/// Refuses early, with the capabilities missing, when the process cannot load BPF programs.
pub fn check_privilege() -> Result<(), MonitorError> {
    let missing = privilege::missing_capabilities();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MonitorError::NotPermitted(missing))
    }
}

/// The report and alert outputs named by the configuration.
pub fn open_outputs(config: &Config, output: Option<&Path>) -> Result<Outputs, MonitorError> {
    let create = |path: &Path, append: bool| -> Result<Box<dyn Write>, MonitorError> {
        // Alerts and reports name sources, users and URLs: for the owner alone.
        let file =
            crate::private_files::open(path, append).map_err(|source| MonitorError::Output {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Box::new(BufWriter::new(file)))
    };
    let reports = match output {
        None => Box::new(io::stdout()) as Box<dyn Write>,
        Some(path) => create(path, false)?,
    };
    let alerts = config
        .monitor
        .alerts
        .as_deref()
        .map(|path| create(path, true))
        .transpose()?;
    Ok(Outputs {
        reports,
        format: config.monitor.format,
        alerts,
    })
}

/// Opens the store, reads the known sources, and starts the thread that writes to it.
pub fn open_history(db: &Path, config: &Config) -> Result<(History, KnownState), MonitorError> {
    let store = Store::open(db)?;
    let known = store.known_state()?;
    let sink = HistorySink::start(store, config.webhook.urls.clone()).map_err(|source| {
        MonitorError::Output {
            path: db.display().to_string(),
            source,
        }
    })?;
    let history = History {
        sink,
        top: config.store.history_top,
        retention: config.store.retention,
    };
    Ok((history, known))
}

/// Starts webhook delivery when URLs are configured.
pub fn start_webhooks(db: &Path, config: &Config) -> Result<Option<Deliverer>, MonitorError> {
    if config.webhook.urls.is_empty() {
        return Ok(None);
    }
    Deliverer::start(db.to_owned(), config.webhook.clone())
        .map(Some)
        .map_err(|source| MonitorError::Output {
            path: db.display().to_string(),
            source,
        })
}

/// A prefix for alert ids that differs between runs: the start time in hex milliseconds.
pub fn run_id() -> String {
    format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    )
}

/// Runs until SIGINT, SIGTERM or `--duration`; detaches before returning.
pub async fn run(args: MonitorArgs) -> Result<(), MonitorError> {
    let MonitorArgs {
        iface,
        mode,
        force,
        duration,
        db,
        webhooks,
        pipeline: flags,
    } = args;
    let mut config = Config::load_or_default(flags.config.as_deref())?;
    config.apply_flags(&flags)?;
    if let Some(mode) = mode {
        config.monitor.mode = mode;
    }
    let iface = iface
        .or_else(|| config.monitor.iface.clone())
        .ok_or(MonitorError::NoInterface)?;
    check_privilege()?;
    // Handlers first, so that a signal arriving right after attaching still detaches cleanly.
    let mut sigint = signal(SignalKind::interrupt()).map_err(MonitorError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(MonitorError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(MonitorError::Signals)?;
    let outputs = open_outputs(&config, flags.output.as_deref())?;
    config.webhook.urls.extend(webhooks.iter().cloned());
    config.validate(flags.config.as_deref().unwrap_or(Path::new("(flags)")))?;
    let db = db.unwrap_or_else(|| config.store.path.clone());
    let (history, known) = open_history(&db, &config)?;
    let deliverer = start_webhooks(&db, &config)?;

    let metrics =
        Arc::new(
            Metrics::new(config.monitor.top).map_err(|err| MonitorError::Metrics {
                addr: config.monitor.metrics_addr.clone(),
                source: io::Error::other(err.to_string()),
            })?,
        );
    // Bound before attaching, so that a busy port fails before anything is attached; said
    // after attaching, so that a failure to attach is the only line.
    let metrics_at = if config.monitor.metrics_addr == "off" {
        None
    } else {
        let addr = config
            .monitor
            .metrics_addr
            .parse()
            .map_err(|_| MonitorError::Metrics {
                addr: config.monitor.metrics_addr.clone(),
                source: io::Error::other("not ADDRESS:PORT"),
            })?;
        let bound =
            metrics::serve(addr, Arc::clone(&metrics)).map_err(|source| MonitorError::Metrics {
                addr: config.monitor.metrics_addr.clone(),
                source,
            })?;
        Some(bound)
    };

    let mut datapath = Datapath::load(LoadOptions {
        max_sources: config.monitor.max_sources,
        source_map: config.monitor.source_map,
    })?;
    datapath.set_sketches(config.detect.scan.needs_sketches())?;
    datapath.set_sampling(&config.sampling())?;
    datapath.set_reflection_ports(&config.detect.reflection_ports)?;
    let ring = datapath
        .take_samples()
        .map(|ring| {
            // SAFETY: the ring owns its file descriptor (the map's) and keeps it open, the
            // same one, for as long as it lives, which is as long as the AsyncFd.
            unsafe { AsyncFd::register(ring) }.map_err(|err| io::Error::other(err.to_string()))
        })
        .transpose()
        .map_err(MonitorError::Samples)?;
    let attachment = datapath.attach(&iface, config.monitor.mode.into(), force)?;
    metrics.set_attach(
        &iface,
        &attachment.mode.to_string(),
        &datapath.source_map().to_string(),
        datapath.max_sources(),
    );
    announce(&attachment, &datapath);
    if let Some(bound) = metrics_at {
        eprintln!("netwatch: metrics at http://{bound}/metrics");
    }

    let context = Context {
        iface: iface.clone(),
        max_sources: datapath.max_sources(),
        top: config.monitor.top,
    };
    let run = run_id();
    let detector = Detector::new(config.detect.clone(), known, run.clone())
        .with_interval(config.monitor.interval);
    let inspector = Inspector::new(config.inspect.clone(), run);
    let mut pipeline = Pipeline::new(detector, inspector, Some(history), context, outputs)
        .with_metrics(Arc::clone(&metrics));
    let Some(mut ring) = ring else {
        return Err(MonitorError::Samples(io::Error::other(
            "sample ring already taken",
        )));
    };
    let interval = config.monitor.interval;
    let started = tokio::time::Instant::now();
    let mut ticker = interval_at(started + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = duration.map(|duration| started + duration);
    let mut reading = Reading {
        last: Instant::now(),
        failures: 0,
        snapshot: Snapshot::default(),
    };

    // A configuration being read for SIGHUP, off the collection path: a file on a slow or
    // hung filesystem delays the reload, never the intervals or a SIGTERM.
    let mut reloading: Option<oneshot::Receiver<Result<Config, MonitorError>>> = None;
    let stopped_by = loop {
        tokio::select! {
            _ = ticker.tick() => {
                tick(&mut datapath, &mut pipeline, &metrics, &mut reading, false)?;
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(MonitorError::Samples)?;
                drain(guard.get_inner_mut(), &mut pipeline)?;
                guard.clear_ready();
            }
            _ = sighup.recv() => {
                if reloading.is_some() {
                    eprintln!("netwatch: SIGHUP: the configuration is still being read for the previous one; this one is ignored");
                } else {
                    reloading = read_in_background(&flags, &webhooks);
                }
            }
            read = async {
                match reloading.as_mut() {
                    Some(read) => read.await,
                    None => std::future::pending().await,
                }
            } => {
                reloading = None;
                let applied = read
                    .unwrap_or_else(|_| Err(MonitorError::Signals(io::Error::other("the reading thread stopped"))))
                    .and_then(|new| apply(new, &config, &mut datapath, &mut pipeline));
                match applied {
                    Ok(new) => {
                        config = new;
                        eprintln!("netwatch: SIGHUP: configuration reloaded");
                    }
                    Err(err) => eprintln!(
                        "netwatch: SIGHUP: new configuration refused, the running one stays: {err}"
                    ),
                }
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            () = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => break "--duration",
        }
    };
    // The last, partial interval: nothing counted since the previous tick is left unreported.
    drain(ring.get_mut(), &mut pipeline)?;
    tick(&mut datapath, &mut pipeline, &metrics, &mut reading, true)?;
    attachment.detach()?;
    pipeline.finish();
    if let Some(deliverer) = deliverer {
        deliverer.stop();
    }
    eprintln!("netwatch: {stopped_by}: detached from {iface}");
    Ok(())
}

/// Re-reads the configuration on a thread of its own; the answer arrives on the receiver.
/// `None` (said on stderr) when no thread can be started.
fn read_in_background(
    flags: &PipelineArgs,
    webhooks: &[String],
) -> Option<oneshot::Receiver<Result<Config, MonitorError>>> {
    let (tx, rx) = oneshot::channel();
    let (flags, webhooks) = (flags.clone(), webhooks.to_vec());
    let started = std::thread::Builder::new()
        .name(String::from("reload"))
        .spawn(move || {
            let read = Config::load_or_default(flags.config.as_deref())
                .and_then(|mut config| {
                    config.apply_flags(&flags)?;
                    config.webhook.urls.extend(webhooks);
                    Ok(config)
                })
                .map_err(MonitorError::from);
            // The daemon may have stopped meanwhile: nobody to tell.
            let _ = tx.send(read);
        });
    match started {
        Ok(_) => Some(rx),
        Err(err) => {
            eprintln!("netwatch: SIGHUP: cannot start reading the configuration: {err}");
            None
        }
    }
}

/// Applies what can change without detaching: detection rules, allowlists, sampled ports and
/// rates, inspection, the number of sources listed. The program keeps running throughout, so
/// no packet goes uncounted. Settings that need a restart are named on stderr.
fn apply(
    config: Config,
    running: &Config,
    datapath: &mut Datapath,
    pipeline: &mut Pipeline,
) -> Result<Config, MonitorError> {
    datapath.set_sampling(&config.sampling())?;
    datapath.set_sketches(config.detect.scan.needs_sketches())?;
    datapath.set_reflection_ports(&config.detect.reflection_ports)?;
    pipeline.detector_mut().reconfigure(config.detect.clone());
    pipeline.inspector_mut().reconfigure(config.inspect.clone());
    pipeline.set_top(config.monitor.top);
    let (old, new) = (&running.monitor, &config.monitor);
    let restart = [
        ("monitor.iface", old.iface != new.iface),
        ("monitor.mode", old.mode != new.mode),
        ("monitor.interval", old.interval != new.interval),
        ("monitor.max_sources", old.max_sources != new.max_sources),
        ("monitor.source_map", old.source_map != new.source_map),
        ("monitor.format", old.format != new.format),
        ("monitor.alerts", old.alerts != new.alerts),
        ("store.path", running.store.path != config.store.path),
        ("webhook", running.webhook != config.webhook),
    ];
    for (field, changed) in restart {
        if changed {
            eprintln!("netwatch: SIGHUP: {field} changed; it takes effect at the next start");
        }
    }
    Ok(config)
}

/// Inspects every sample waiting in the ring.
fn drain(ring: &mut SampleRing, pipeline: &mut Pipeline) -> Result<(), MonitorError> {
    let mut frames = Vec::new();
    ring.drain(|frame| frames.push(frame));
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    for frame in &frames {
        pipeline.sample(frame, at).map_err(MonitorError::Write)?;
    }
    Ok(())
}

fn announce(attachment: &Attachment, datapath: &Datapath) {
    if let Some(replaced) = &attachment.replaced {
        eprintln!(
            "netwatch: removed XDP program {:?} (id {}) left on {}",
            replaced.name, replaced.prog_id, attachment.iface
        );
    }
    eprintln!(
        "netwatch: attached to {} (ifindex {}) in {} mode through a BPF link; up to {} sources \
         in a {} map",
        attachment.iface,
        attachment.ifindex,
        attachment.mode,
        datapath.max_sources(),
        datapath.source_map()
    );
}

/// What the ticks keep between them.
struct Reading {
    /// When the maps were last read.
    last: Instant,
    /// Reads that failed so far.
    failures: u64,
    /// The last snapshot, whose lists the next one reuses.
    snapshot: Snapshot,
}

fn tick(
    datapath: &mut Datapath,
    pipeline: &mut Pipeline,
    metrics: &Metrics,
    reading: &mut Reading,
    last: bool,
) -> Result<(), MonitorError> {
    let started = Instant::now();
    if let Err(err) = datapath.snapshot_into(&mut reading.snapshot) {
        // A failed read loses nothing: the kernel counters are cumulative, so the next
        // reading covers this interval too.
        reading.failures += 1;
        eprintln!(
            "netwatch: reading the maps failed ({} so far): {err}",
            reading.failures
        );
        return Ok(());
    }
    metrics.set_map_read(started.elapsed());
    let now = Instant::now();
    let elapsed = now - reading.last;
    reading.last = now;
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    pipeline
        .tick(&reading.snapshot, at, elapsed, last)
        .map_err(MonitorError::Write)
}
