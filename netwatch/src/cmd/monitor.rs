//! `netwatch monitor`: attach to a live interface and run the pipeline every interval until a
//! signal.

use std::{
    io,
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
    config::Config,
    datapath::{Attachment, Datapath, SampleRing, Snapshot},
    pipeline::Pipeline,
    report::{
        metrics::{self, Metrics},
        webhook::Deliverer,
    },
    session::{Session, SessionError, Setup, check_privilege},
};

/// Starts webhook delivery when URLs are configured.
pub fn start_webhooks(db: &Path, config: &Config) -> Result<Option<Deliverer>, SessionError> {
    if config.webhook.urls.is_empty() {
        return Ok(None);
    }
    Deliverer::start(db.to_owned(), config.webhook.clone())
        .map(Some)
        .map_err(|source| SessionError::Output {
            path: db.display().to_string(),
            source,
        })
}

/// Runs until SIGINT, SIGTERM or `--duration`; detaches before returning.
pub async fn run(args: MonitorArgs) -> Result<(), SessionError> {
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
        .ok_or(SessionError::NoInterface)?;
    check_privilege()?;
    // Handlers first, so that a signal arriving right after attaching still detaches cleanly.
    let mut sigint = signal(SignalKind::interrupt()).map_err(SessionError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(SessionError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(SessionError::Signals)?;
    config.webhook.urls.extend(webhooks.iter().cloned());
    config.validate(flags.config.as_deref().unwrap_or(Path::new("(flags)")))?;
    let db = db.unwrap_or_else(|| config.store.path.clone());
    let metrics =
        Arc::new(
            Metrics::new(config.monitor.top).map_err(|err| SessionError::Metrics {
                addr: config.monitor.metrics_addr.clone(),
                source: io::Error::other(err.to_string()),
            })?,
        );
    let mut session = Session::start(
        config,
        Setup {
            name: iface.clone(),
            output: flags.output.as_deref(),
            store: Some(&db),
            metrics: Some(Arc::clone(&metrics)),
        },
    )?;
    let deliverer = start_webhooks(&db, &session.config)?;
    let config = &session.config;
    // Bound before attaching, so that a busy port fails before anything is attached; said
    // after attaching, so that a failure to attach is the only line.
    let metrics_at = if config.monitor.metrics_addr == "off" {
        None
    } else {
        let addr = config
            .monitor
            .metrics_addr
            .parse()
            .map_err(|_| SessionError::Metrics {
                addr: config.monitor.metrics_addr.clone(),
                source: io::Error::other("not ADDRESS:PORT"),
            })?;
        let bound =
            metrics::serve(addr, Arc::clone(&metrics)).map_err(|source| SessionError::Metrics {
                addr: config.monitor.metrics_addr.clone(),
                source,
            })?;
        Some(bound)
    };

    let ring = session
        .datapath
        .take_samples()
        .map(|ring| {
            // SAFETY: the ring owns its file descriptor (the map's) and keeps it open, the
            // same one, for as long as it lives, which is as long as the AsyncFd.
            unsafe { AsyncFd::register(ring) }.map_err(|err| io::Error::other(err.to_string()))
        })
        .transpose()
        .map_err(SessionError::Samples)?;
    let attachment = session
        .datapath
        .attach(&iface, config.monitor.mode.into(), force)?;
    metrics.set_attach(
        &iface,
        &attachment.mode.to_string(),
        &session.datapath.source_map().to_string(),
        session.datapath.max_sources(),
    );
    announce(&attachment, &session.datapath);
    if let Some(bound) = metrics_at {
        log::info!("metrics at http://{bound}/metrics");
    }

    let Some(mut ring) = ring else {
        return Err(SessionError::Samples(io::Error::other(
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
    let mut reloading: Option<oneshot::Receiver<Result<Config, SessionError>>> = None;
    let stopped_by = loop {
        tokio::select! {
            _ = ticker.tick() => {
                tick(&mut session, &metrics, &mut reading, false)?;
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(SessionError::Samples)?;
                drain(guard.get_inner_mut(), &mut session.pipeline)?;
                guard.clear_ready();
            }
            _ = sighup.recv() => {
                if reloading.is_some() {
                    log::warn!("SIGHUP: the configuration is still being read for the previous one; this one is ignored");
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
                    .unwrap_or_else(|_| Err(SessionError::Signals(io::Error::other("the reading thread stopped"))))
                    .and_then(|new| session.apply(new));
                match applied {
                    Ok(()) => log::info!("SIGHUP: configuration reloaded"),
                    Err(err) => log::warn!(
                        "SIGHUP: new configuration refused, the running one stays: {err}"
                    ),
                }
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            () = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => break "--duration",
        }
    };
    // The last, partial interval: nothing counted since the previous tick is left unreported.
    drain(ring.get_mut(), &mut session.pipeline)?;
    tick(&mut session, &metrics, &mut reading, true)?;
    attachment.detach()?;
    session.pipeline.finish();
    if let Some(deliverer) = deliverer {
        deliverer.stop();
    }
    log::info!("{stopped_by}: detached from {iface}");
    Ok(())
}

/// Re-reads the configuration on a thread of its own; the answer arrives on the receiver.
/// `None` (said on stderr) when no thread can be started.
fn read_in_background(
    flags: &PipelineArgs,
    webhooks: &[String],
) -> Option<oneshot::Receiver<Result<Config, SessionError>>> {
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
                .map_err(SessionError::from);
            // The daemon may have stopped meanwhile: nobody to tell.
            let _ = tx.send(read);
        });
    match started {
        Ok(_) => Some(rx),
        Err(err) => {
            log::error!("SIGHUP: cannot start reading the configuration: {err}");
            None
        }
    }
}

/// Inspects every sample waiting in the ring.
fn drain(ring: &mut SampleRing, pipeline: &mut Pipeline) -> Result<(), SessionError> {
    let mut frames = Vec::new();
    ring.drain(|frame| frames.push(frame));
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    for frame in &frames {
        pipeline.sample(frame, at).map_err(SessionError::Write)?;
    }
    Ok(())
}

fn announce(attachment: &Attachment, datapath: &Datapath) {
    if let Some(replaced) = &attachment.replaced {
        log::warn!(
            "removed XDP program {:?} (id {}) left on {}",
            replaced.name,
            replaced.prog_id,
            attachment.iface
        );
    }
    log::info!(
        "attached to {} (ifindex {}) in {} mode through a BPF link; up to {} sources \
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
    session: &mut Session,
    metrics: &Metrics,
    reading: &mut Reading,
    last: bool,
) -> Result<(), SessionError> {
    let started = Instant::now();
    if let Err(err) = session.datapath.snapshot_into(&mut reading.snapshot) {
        // A failed read loses nothing: the kernel counters are cumulative, so the next
        // reading covers this interval too.
        reading.failures += 1;
        log::warn!(
            "reading the maps failed ({} so far): {err}",
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
    session
        .pipeline
        .tick(&reading.snapshot, at, elapsed, last)
        .map_err(SessionError::Write)
}
