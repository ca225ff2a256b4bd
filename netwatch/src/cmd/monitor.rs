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
    control::{BanCall, Control, ControlServer, ControlSink, InterfaceStatus},
    datapath::{Attachment, Datapath, SampleRing, Snapshot},
    escape::escape_escaped,
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
    flags.apply(&mut config)?;
    if let Some(mode) = mode {
        config.monitor.mode = mode;
    }
    let mut ifaces = if iface.is_empty() {
        config.monitor.interfaces()
    } else {
        iface
    };
    // `-i eth0 -i eth0` is one interface.
    let mut seen = std::collections::HashSet::new();
    ifaces.retain(|iface| seen.insert(iface.clone()));
    if ifaces.is_empty() {
        return Err(SessionError::NoInterface);
    }
    check_privilege()?;
    // Handlers first, so that a signal arriving right after attaching still detaches cleanly.
    let mut sigint = signal(SignalKind::interrupt()).map_err(SessionError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(SessionError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(SessionError::Signals)?;
    config.webhook.urls.extend(webhooks.iter().cloned());
    config.validate(flags.config.as_deref().unwrap_or(Path::new("(flags)")))?;
    let db = db.unwrap_or_else(|| config.store.path.clone());
    let capture_dir = config.capture.dir_beside(&db);
    // Bound before anything is loaded: a second daemon on the same socket stops here, with
    // one line, and leaves the first alone.
    let control = Control::new(config.monitor.interval);
    let control_server = match config.monitor.control.as_str() {
        "off" => None,
        path => Some(
            ControlServer::bind(Path::new(path), Arc::clone(&control)).map_err(|reason| {
                SessionError::Control {
                    path: path.to_owned(),
                    reason,
                }
            })?,
        ),
    };
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
            names: ifaces.clone(),
            output: flags.output.as_deref(),
            store: Some(&db),
            metrics: Some(Arc::clone(&metrics)),
            mitigate: true,
            captures: Some(capture_dir),
            live: true,
        },
    )?;
    let deliverer = start_webhooks(&db, &session.config)?;
    let exporter = if session.config.export.kafka.enabled() {
        Some(
            crate::report::kafka::Exporter::start(
                db.clone(),
                session.config.export.kafka.clone(),
                Some(Arc::clone(&metrics)),
            )
            .map_err(SessionError::Write)?,
        )
    } else {
        None
    };
    session
        .pipeline
        .add_sink(Box::new(ControlSink::new(Arc::clone(&control))));
    // Ban requests from the control socket, answered by this loop, which owns the bans.
    let (bans, mut ban_calls) = tokio::sync::mpsc::channel::<BanCall>(16);
    control.serve_bans(bans);
    control.watch(
        session.store_counts.clone(),
        deliverer.as_ref().map(Deliverer::state),
    );
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

    let mode = config.monitor.mode.into();
    let mut links = Vec::with_capacity(ifaces.len());
    for (index, iface) in ifaces.iter().enumerate() {
        let datapath = &mut session.datapaths[index];
        let ring = datapath
            .take_samples()
            .ok_or_else(|| SessionError::Samples(io::Error::other("sample ring already taken")))?;
        // SAFETY: the ring owns its file descriptor (the map's) and keeps it open, the same
        // one, for as long as it lives, which is as long as the AsyncFd.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|err| SessionError::Samples(io::Error::other(err.to_string())))?;
        // An interface that fails to attach stops the start; those attached before it are
        // detached as their links drop.
        let attachment = datapath.attach(iface, mode, force)?;
        metrics.set_attach(
            iface,
            &attachment.mode.to_string(),
            &datapath.source_map().to_string(),
            datapath.max_sources(),
        );
        announce(&attachment, datapath);
        control.attached(InterfaceStatus {
            iface: iface.clone(),
            ifindex: attachment.ifindex,
            mode: attachment.mode.to_string(),
            source_map: datapath.source_map().to_string(),
            max_sources: datapath.max_sources(),
            state: String::from("attached"),
        });
        links.push(Link {
            iface: iface.clone(),
            ifindex: attachment.ifindex,
            attachment: Some(attachment),
            ring,
            reading: Reading {
                last: Instant::now(),
                failures: 0,
                snapshot: Snapshot::default(),
            },
            attach_failed: false,
        });
    }
    // The early limit from the start when a global threshold gives one; a spike's, once the
    // baseline is warm, from the ticks.
    for (index, datapath) in session.datapaths.iter_mut().enumerate() {
        let limit = session.pipeline.early_limit(index);
        datapath.set_early_limit(limit, session.config.detect.min_packets)?;
    }
    if let Some(server) = &control_server {
        log::info!("control socket at {}", server.path().display());
    }
    if let Some(bound) = metrics_at {
        log::info!("metrics at http://{bound}/metrics");
    }

    let interval = config.monitor.interval;
    let started = tokio::time::Instant::now();
    let mut ticker = interval_at(started + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = duration.map(|duration| started + duration);

    // A configuration being read for SIGHUP, off the collection path: a file on a slow or
    // hung filesystem delays the reload, never the intervals or a SIGTERM.
    let mut reloading: Option<oneshot::Receiver<Result<Config, SessionError>>> = None;
    // Where the next look at the sample rings starts: each interface's turn comes.
    let mut next_ring = 0;
    let stopped_by = loop {
        tokio::select! {
            _ = ticker.tick() => {
                follow_interfaces(&mut session, &mut links, &control, &metrics, mode, force);
                tick(&mut session, &mut links, &metrics, false)?;
                session.act(true)?;
                session.follow_intel();
            }
            index = samples_ready(&mut links, &mut next_ring) => {
                drain(index, links[index].ring.get_mut(), &mut session.pipeline)?;
                session.act(false)?;
            }
            Some(call) = ban_calls.recv() => {
                let answer = session.ban_request(call.op.clone());
                call.answer(&answer);
            }
            _ = sighup.recv() => {
                if reloading.is_some() {
                    log::warn!("SIGHUP: the configuration is still being read for the previous one; this one is ignored");
                } else {
                    reloading = read_in_background(&flags, &webhooks, session.notify_commands());
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
                    // A file's bytes may be anything: quoted in the error, escaped here.
                    Err(err) => log::warn!(
                        "SIGHUP: new configuration refused, the running one stays: {}",
                        escape_escaped(&err.to_string())
                    ),
                }
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            () = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => break "--duration",
        }
    };
    // The last, partial interval: nothing counted since the previous tick is left unreported.
    for (index, link) in links.iter_mut().enumerate() {
        drain(index, link.ring.get_mut(), &mut session.pipeline)?;
    }
    tick(&mut session, &mut links, &metrics, true)?;
    let mut detached = Vec::new();
    for link in &mut links {
        if let Some(attachment) = link.attachment.take() {
            attachment.detach()?;
            detached.push(link.iface.clone());
        }
    }
    session.finish_mitigation();
    session.finish_captures();
    session.pipeline.finish();
    if let Some(deliverer) = deliverer {
        deliverer.stop();
    }
    // After the store's writer has kept everything: what is queued goes out, a few seconds
    // at most; the rest waits for the next start.
    if let Some(exporter) = exporter {
        exporter.stop();
    }
    log::info!("{stopped_by}: detached from {}", detached.join(", "));
    Ok(())
}

/// One interface watched.
struct Link {
    iface: String,
    /// Its index when it was attached.
    ifindex: u32,
    /// `None` while the interface is gone.
    attachment: Option<Attachment>,
    ring: AsyncFd<SampleRing>,
    reading: Reading,
    /// A re-attach failed since the interface came back: said once.
    attach_failed: bool,
}

/// The index of a link whose sample ring has records, its readiness cleared (what arrives
/// while it is drained makes it ready again). The look starts at `next` and goes round, so
/// that a busy first interface never keeps the others' rings waiting.
async fn samples_ready(links: &mut [Link], next: &mut usize) -> usize {
    let count = links.len();
    std::future::poll_fn(|cx| {
        for turn in 0..count {
            let index = (*next + turn) % count;
            if let std::task::Poll::Ready(Ok(mut guard)) = links[index].ring.poll_read_ready_mut(cx)
            {
                guard.clear_ready();
                *next = (index + 1) % count;
                return std::task::Poll::Ready(index);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// An interface that went away (deleted, unplugged, renamed) is reported and its link
/// dropped; the others go on. When an interface of that name is there again, the program is
/// attached to it again. Its counters carry on: they live in the maps, not on the interface.
fn follow_interfaces(
    session: &mut Session,
    links: &mut [Link],
    control: &Control,
    metrics: &Metrics,
    mode: crate::datapath::AttachMode,
    force: bool,
) {
    for (index, link) in links.iter_mut().enumerate() {
        let now = ifindex_of(&link.iface);
        match (&link.attachment, now) {
            (Some(_), Some(ifindex)) if ifindex == link.ifindex => {}
            (Some(_), _) => {
                // The kernel took the program off with the interface; the link is dead.
                drop(link.attachment.take());
                link.attach_failed = false;
                log::warn!(
                    "{} went away (ifindex {} is gone): detached; the other interfaces are still watched, and it is attached again if it comes back",
                    link.iface,
                    link.ifindex
                );
                control.set_state(&link.iface, "gone", link.ifindex, "");
            }
            (None, Some(_)) => match session.datapaths[index].attach(&link.iface, mode, force) {
                Ok(attachment) => {
                    log::info!(
                        "{} is back (ifindex {}): attached again in {} mode",
                        link.iface,
                        attachment.ifindex,
                        attachment.mode
                    );
                    link.ifindex = attachment.ifindex;
                    let datapath = &session.datapaths[index];
                    metrics.set_attach(
                        &link.iface,
                        &attachment.mode.to_string(),
                        &datapath.source_map().to_string(),
                        datapath.max_sources(),
                    );
                    control.set_state(
                        &link.iface,
                        "attached",
                        attachment.ifindex,
                        &attachment.mode.to_string(),
                    );
                    link.attachment = Some(attachment);
                }
                Err(err) => {
                    if !link.attach_failed {
                        log::warn!("{} is back but cannot be attached yet: {err}", link.iface);
                        link.attach_failed = true;
                    }
                }
            },
            (None, None) => {}
        }
    }
}

/// The index of the interface named `iface` now, if there is one.
fn ifindex_of(iface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(iface).ok()?;
    // SAFETY: a NUL-terminated name; the call only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Re-reads the configuration on a thread of its own; the answer arrives on the receiver.
/// `None` (said on stderr) when no thread can be started.
fn read_in_background(
    flags: &PipelineArgs,
    webhooks: &[String],
    notify: &[std::path::PathBuf],
) -> Option<oneshot::Receiver<Result<Config, SessionError>>> {
    let (tx, rx) = oneshot::channel();
    let (flags, webhooks, notify) = (flags.clone(), webhooks.to_vec(), notify.to_vec());
    let started = std::thread::Builder::new()
        .name(String::from("reload"))
        .spawn(move || {
            let read = Config::load_or_default(flags.config.as_deref())
                .and_then(|mut config| {
                    flags.apply(&mut config)?;
                    config.webhook.urls.extend(webhooks);
                    Ok(config)
                })
                .map_err(SessionError::from);
            // The notify commands in use (they change at a restart only) and those the new
            // file names, looked at here, off the collection: a hung filesystem delays this
            // thread only.
            let named = read
                .as_ref()
                .map_or(&[][..], |config| &config.mitigate.notify[..]);
            let mut checked = std::collections::BTreeSet::new();
            for command in notify.iter().chain(named) {
                if checked.insert(command.clone())
                    && let Some(problem) = crate::notify::check_command(command)
                {
                    log::warn!("SIGHUP: {problem}");
                }
            }
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

/// Inspects every sample waiting in the ring of link `index`.
fn drain(index: usize, ring: &mut SampleRing, pipeline: &mut Pipeline) -> Result<(), SessionError> {
    let mut frames = Vec::new();
    ring.drain(|frame| frames.push(frame));
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    for frame in &frames {
        pipeline
            .sample(index, frame, at)
            .map_err(SessionError::Write)?;
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
    links: &mut [Link],
    metrics: &Metrics,
    last: bool,
) -> Result<(), SessionError> {
    // One time for the round: the interfaces' records of an interval share it (the store
    // groups them by it).
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    for (index, link) in links.iter_mut().enumerate() {
        let reading = &mut link.reading;
        let started = Instant::now();
        if let Err(err) = session.datapaths[index].snapshot_into(&mut reading.snapshot) {
            // A failed read loses nothing: the kernel counters are cumulative, so the next
            // reading covers this interval too.
            reading.failures += 1;
            log::warn!(
                "{}: reading the maps failed ({} so far): {err}",
                link.iface,
                reading.failures
            );
            continue;
        }
        metrics.set_map_read(&link.iface, started.elapsed());
        let now = Instant::now();
        let elapsed = now - reading.last;
        reading.last = now;
        session
            .pipeline
            .tick(index, &reading.snapshot, at, elapsed, last)
            .map_err(SessionError::Write)?;
        // The detector's limit after this interval, for the kernel to say at once when the
        // rate goes over it (a settings write only when it changed).
        let limit = session.pipeline.early_limit(index);
        let min_packets = session.config.detect.min_packets;
        if let Err(err) = session.datapaths[index].set_early_limit(limit, min_packets) {
            log::warn!("{}: setting the early limit failed: {err}", link.iface);
        }
    }
    session
        .pipeline
        .combine(at, last)
        .map_err(SessionError::Write)
}
