//! A session: a configuration turned into a loaded datapath and the pipeline behind it, with
//! its sinks. Built once by `monitor` and by `replay`, and [`Session::apply`]-ed on SIGHUP.

use std::{
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    capturing::{Captures, SharedCaptures},
    collect::COMBINED,
    config::{Config, ConfigError},
    control::{BanAnswer, BanOp, BindError},
    datapath::{Datapath, DatapathError, IntelTries, LoadOptions},
    detect::{Detector, KnownState},
    evidence::CaptureSubject,
    inspect::Inspector,
    intel::{Feed, parse},
    mitigate::{BanEvent, BanRefusal, MitigateMode, RuleEvent},
    mitigation::{Kept, Mitigation},
    pipeline::{Pipeline, Watch},
    privilege,
    report::{
        Context,
        metrics::{Metrics, MetricsSink},
        sink::{FindingsFile, Reports, Sink},
        store::{SinkCounts, StoreSink, StoreWriter},
    },
    store::{Store, StoreError},
};

/// Why a session (monitoring or a replay) could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
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
    /// The control socket could not be set up.
    #[error("control socket {path}: {reason}")]
    Control {
        /// The path.
        path: String,
        /// Why.
        #[source]
        reason: BindError,
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
pub fn check_privilege() -> Result<(), SessionError> {
    let missing = privilege::missing_capabilities();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SessionError::NotPermitted(missing))
    }
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

/// What a session is built for, besides its configuration.
pub struct Setup<'a> {
    /// What the reports name: the interfaces, or the capture's file name. One datapath is
    /// loaded for each, and with more than one the pipeline also reports their sum.
    pub names: Vec<String>,
    /// `--output`: the interval reports go there rather than to stdout.
    pub output: Option<&'a Path>,
    /// The store, if the run keeps one (else the known sources live in memory).
    pub store: Option<&'a Path>,
    /// The Prometheus metrics, if they are served.
    pub metrics: Option<Arc<Metrics>>,
    /// Act on alerts as `[mitigate]` says (a live monitor; a replay only reports).
    pub mitigate: bool,
    /// Where the events' packet captures go; `None`: no capture at all.
    pub captures: Option<PathBuf>,
    /// Live from interfaces (the captures are written by a thread of their own), or a replay
    /// (written as the frames run: the replay pumps them after each frame).
    pub live: bool,
}

/// A configuration, loaded.
pub struct Session {
    /// The configuration it runs.
    pub config: Config,
    /// The program and its maps for each name (not attached: the command decides where).
    pub datapaths: Vec<Datapath>,
    /// The stages and the sinks.
    pub pipeline: Pipeline,
    /// The store writer's counts, if the session keeps a store.
    pub store_counts: Option<Arc<SinkCounts>>,
    /// Bans, for a session that mitigates.
    pub mitigation: Option<Mitigation>,
    /// The events' packet captures, when they are taken.
    pub captures: Option<Arc<Mutex<Captures>>>,
    /// The indicator feeds as last read, and a reading under way.
    intel: IntelFiles,
    /// The run's prefix of alert ids.
    run: String,
    /// The datapaths were loaded with room for bans (mitigation was on at start).
    ban_room: bool,
    /// The configuration as it started: what the settings a reload cannot change still run
    /// with, so that a reload is told of a change against them, not against a reload before.
    started: Config,
}

impl Session {
    /// Opens the outputs and the store, loads and configures the datapath, and wires the
    /// pipeline to the sinks.
    pub fn start(config: Config, setup: Setup<'_>) -> Result<Self, SessionError> {
        let Setup {
            names,
            output,
            store,
            metrics,
            mitigate,
            captures,
            live,
        } = setup;
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let reports = match output {
            None => Box::new(io::stdout()) as Box<dyn Write>,
            Some(path) => create(path, false)?,
        };
        sinks.push(Box::new(Reports::new(reports, config.monitor.format)));
        if let Some(path) = config.monitor.alerts.as_deref() {
            sinks.push(Box::new(FindingsFile::new(create(path, true)?)));
        }
        let mut store_counts = None;
        let mut kept = None;
        let known = match store {
            Some(db) => {
                let mut store = Store::open(db)?;
                let known = store.known_state()?;
                if mitigate {
                    // Read before the writer takes the store: the bans and rules in force,
                    // and those of late toward the doubling of repeat offenders' TTLs.
                    kept = Some(Kept::read(&mut store, &config, now())?);
                }
                // Every finding is queued for each webhook URL and for the Kafka export.
                let mut queues = config.webhook.urls.clone();
                if config.export.kafka.enabled() {
                    queues.push(String::from(crate::report::kafka::QUEUE));
                }
                let writer =
                    StoreWriter::start(store, queues).map_err(|source| SessionError::Output {
                        path: db.display().to_string(),
                        source,
                    })?;
                store_counts = Some(writer.shared_counts());
                let mut sink =
                    StoreSink::new(writer, config.store.history_top, config.store.retention);
                if config.export.kafka.enabled() && config.export.kafka.intervals {
                    sink = sink.exporting_intervals();
                }
                sinks.push(Box::new(sink));
                known
            }
            None => KnownState::default(),
        };
        if let Some(metrics) = &metrics {
            sinks.push(Box::new(MetricsSink::new(
                Arc::clone(metrics),
                store_counts.clone(),
            )));
        }
        let run = run_id();
        let watch = |name: String, max_sources: u32, known: KnownState, global_only: bool| {
            let context = Context {
                iface: name,
                max_sources,
                top: config.monitor.top,
            };
            let mut detector = Detector::new(config.detect.clone(), known, run.clone())
                .with_interval(config.monitor.interval);
            if global_only {
                detector = detector.global_only();
            }
            let inspector = Inspector::new(config.inspect.clone(), run.clone());
            Watch::new(detector, inspector, context)
        };
        let mut datapaths = Vec::with_capacity(names.len());
        let mut watches = Vec::with_capacity(names.len());
        for name in &names {
            let mut datapath = Datapath::load(LoadOptions {
                max_sources: config.monitor.max_sources,
                source_map: config.monitor.source_map.into(),
                destinations: config.networks.counts_destinations(),
                max_bans: if config.mitigate.mode == MitigateMode::Off {
                    0
                } else {
                    config.mitigate.max_bans
                },
                without_ban_check: false,
            })?;
            configure(&mut datapath, &config)?;
            watches.push(watch(
                name.clone(),
                datapath.max_sources(),
                known.clone(),
                false,
            ));
            datapaths.push(datapath);
        }
        let combined = (names.len() > 1).then(|| {
            let max_sources = datapaths.iter().map(Datapath::max_sources).sum();
            watch(
                String::from(COMBINED),
                max_sources,
                KnownState::default(),
                true,
            )
        });
        let ban_room = config.mitigate.mode != MitigateMode::Off;
        let mut pipeline = Pipeline::new(watches, combined, sinks);
        let captures = captures.and_then(|dir| {
            let kernels: Vec<_> = datapaths
                .iter_mut()
                .filter_map(Datapath::take_captures)
                .collect();
            match Captures::start(
                config.capture.clone(),
                &dir,
                kernels,
                &names,
                live,
                metrics.clone(),
            ) {
                Ok(captures) => {
                    let captures = Arc::new(Mutex::new(captures));
                    pipeline.set_evidence(Box::new(SharedCaptures(Arc::clone(&captures))));
                    Some(captures)
                }
                Err(err) => {
                    // Monitoring goes on without them.
                    log::warn!("no packet captures: cannot use {}: {err}", dir.display());
                    None
                }
            }
        });
        let intel_run = run.clone();
        let tries = datapaths
            .iter_mut()
            .filter_map(Datapath::take_intel)
            .collect();
        let mut session = Self {
            started: config.clone(),
            config,
            datapaths,
            pipeline,
            store_counts,
            mitigation: None,
            captures,
            ban_room,
            intel: IntelFiles {
                tries,
                ..IntelFiles::default()
            },
            run: intel_run,
        };
        session.load_intel();
        if let Some(enricher) = crate::enrich::Enricher::open(&session.config.enrich) {
            // The longest list a report has: the console's and JSON's top, or the store's.
            let listed = session
                .config
                .monitor
                .top
                .max(session.config.store.history_top);
            session.pipeline.set_enricher(enricher, listed);
        }
        if mitigate {
            // The pipeline keeps its alerts for mitigation to act on.
            session.pipeline.keep_alerts();
            let (mitigation, bans, rules) = Mitigation::start(
                &session.config,
                kept,
                metrics,
                &mut session.datapaths,
                now(),
            )
            .map_err(SessionError::Write)?;
            session.mitigation = Some(mitigation);
            session.report_bans(&bans, true)?;
            session.report_rules(&rules, true)?;
        }
        Ok(session)
    }

    /// The notify commands in use: those of the start (they change at a restart only).
    pub fn notify_commands(&self) -> &[PathBuf] {
        &self.started.mitigate.notify
    }

    /// Reads the indicator feeds now (at the start; `replay` has no other time) and hands
    /// them to the pipeline. A file that cannot be read is said and left out; its malformed
    /// lines are counted and named by number.
    fn load_intel(&mut self) {
        if self.config.intel.files.is_empty() {
            return;
        }
        let (feed, stamps) = read_feeds(&self.config.intel.files);
        sync_tries(&feed, &mut self.intel.tries);
        self.intel.stamps = stamps;
        self.pipeline
            .set_intel(feed, self.config.intel.repeat_after, &self.run);
    }

    /// Once an interval: a feed file that changed (or a reload that names other files) is
    /// read again on a thread of its own, and taken when it is read: a large feed never
    /// holds an interval.
    pub fn follow_intel(&mut self) {
        if let Some(reading) = &self.intel.reading {
            match reading.try_recv() {
                Ok((Some((feed, stamps)), tries)) => {
                    self.intel.stamps = stamps;
                    self.intel.tries = tries;
                    self.intel.reading = None;
                    self.pipeline
                        .set_intel(feed, self.config.intel.repeat_after, &self.run);
                }
                Ok((None, tries)) => {
                    // Not again until a file changes: the stamps of what failed are kept.
                    log::warn!(
                        "intel: reading the feeds failed; the ones read before stay in force"
                    );
                    self.intel.stamps = self
                        .config
                        .intel
                        .files
                        .iter()
                        .map(|file| (file.clone(), modified(file)))
                        .collect();
                    self.intel.tries = tries;
                    self.intel.reading = None;
                    return;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    log::warn!(
                        "intel: the thread reading the feeds ended without its answer; the \
                         kernel's listed networks stay as they were"
                    );
                    self.intel.reading = None;
                }
            }
        }
        let files = &self.config.intel.files;
        let changed = self.intel.stale
            || files.len() != self.intel.stamps.len()
            || files
                .iter()
                .zip(&self.intel.stamps)
                .any(|(file, (path, stamp))| file != path || modified(file) != *stamp);
        if !changed {
            return;
        }
        self.intel.stale = false;
        let (tx, rx) = std::sync::mpsc::channel();
        let files = files.clone();
        let (give, back) = std::sync::mpsc::channel::<Vec<IntelTries>>();
        let started = std::thread::Builder::new()
            .name(String::from("intel"))
            .spawn(move || {
                let Ok(mut tries) = back.recv() else {
                    return;
                };
                log::info!("intel: a feed changed; reading them again");
                // The tries come back whatever happens to the reading.
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let (feed, stamps) = read_feeds(&files);
                    sync_tries(&feed, &mut tries);
                    (feed, stamps)
                }));
                let _ = tx.send((read.ok(), tries));
            });
        match started {
            Ok(_) => {
                // The tries go with the reading, and come back with it.
                let _ = give.send(std::mem::take(&mut self.intel.tries));
                self.intel.reading = Some(rx);
            }
            Err(err) => log::warn!("intel: cannot start reading the feeds: {err}"),
        }
    }

    /// Acts on the alerts reported since the last call (mitigation), and once an interval
    /// (`tick`) reads the bans' counts and ends those whose time is up.
    pub fn act(&mut self, tick: bool) -> Result<(), SessionError> {
        let Some(mitigation) = &mut self.mitigation else {
            return Ok(());
        };
        let alerts = self.pipeline.take_alerts();
        let (bans, rules) = mitigation.act(&alerts, &mut self.datapaths, now());
        self.report_bans(&bans, false)?;
        self.report_rules(&rules, false)?;
        if tick && let Some(mitigation) = &mut self.mitigation {
            let (bans, rules) = mitigation.tick(&mut self.datapaths, now());
            self.report_bans(&bans, true)?;
            self.report_rules(&rules, true)?;
        }
        Ok(())
    }

    /// Signature rule events to every sink, then to the notify commands and the metrics.
    fn report_rules(&mut self, events: &[RuleEvent], tick: bool) -> Result<(), SessionError> {
        self.pipeline
            .report_rules(events)
            .map_err(SessionError::Write)?;
        if let Some(mitigation) = &mut self.mitigation {
            mitigation
                .announce_rules(events, tick)
                .map_err(SessionError::Write)?;
        }
        Ok(())
    }

    /// Carries out a control-socket request about the bans; a ban or unban is reported to
    /// the sinks and the notify commands before the answer goes out.
    pub fn ban_request(&mut self, op: BanOp) -> BanAnswer {
        if let BanOp::Capture { subject, duration } = op {
            return match self.capture_request(subject, duration) {
                Ok((file, until)) => BanAnswer::Capture { file, until },
                Err(why) => BanAnswer::RuleRefused(why),
            };
        }
        let Some(mitigation) = &mut self.mitigation else {
            return BanAnswer::Refused(BanRefusal::Off);
        };
        let answer = mitigation.request(op, &mut self.datapaths, now());
        if let BanAnswer::Event(event) = &answer
            && let Err(err) = self.report_bans(std::slice::from_ref(event), false)
        {
            log::warn!("reporting a ban asked for on the control socket failed: {err}");
        }
        if let BanAnswer::Rule(event) = &answer
            && let Err(err) = self.report_rules(std::slice::from_ref(event), false)
        {
            log::warn!("reporting a rule removed on the control socket failed: {err}");
        }
        answer
    }

    /// Ban events to every sink (the store keeps each before this goes on), then to the
    /// notify commands and the metrics (also each `tick`, for the counts).
    fn report_bans(&mut self, events: &[BanEvent], tick: bool) -> Result<(), SessionError> {
        self.pipeline
            .report_bans(events)
            .map_err(SessionError::Write)?;
        if let Some(mitigation) = &mut self.mitigation {
            mitigation
                .announce(events, tick)
                .map_err(SessionError::Write)?;
        }
        Ok(())
    }

    /// A capture by hand of `subject` for `duration`: its file and its end, or why not.
    pub fn capture_request(
        &mut self,
        subject: CaptureSubject,
        duration: Duration,
    ) -> Result<(PathBuf, Duration), String> {
        let Some(captures) = &self.captures else {
            return Err(String::from(
                "captures are off: their folder could not be used (the log at the start says why)",
            ));
        };
        let mut captures = captures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (file, until) = captures.request(subject, duration, now())?;
        Ok((captures.dir().join(file), until))
    }

    /// Ends every capture: each file closed with what it holds.
    pub fn finish_captures(&mut self) {
        if let Some(captures) = self.captures.take() {
            captures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .finish();
        }
    }

    /// Ends the session's mitigation: without a store the rules in force end (reported, and
    /// told to the notify commands; with one they stay, as bans do), then the notify
    /// commands still queued run.
    pub fn finish_mitigation(&mut self) {
        if let Some(mitigation) = &mut self.mitigation {
            let events = mitigation.end_rules(&mut self.datapaths, now());
            if let Err(err) = self.report_rules(&events, false) {
                log::warn!("reporting the rules ended at the stop failed: {err}");
            }
        }
        if let Some(mitigation) = self.mitigation.take() {
            mitigation.finish();
        }
    }

    /// Applies what can change without detaching: detection rules, allowlists, sampled ports
    /// and rates, inspection, the number of sources listed. The program keeps running
    /// throughout, so no packet goes uncounted. Settings that need a restart are named in the
    /// log.
    pub fn apply(&mut self, mut config: Config) -> Result<(), SessionError> {
        for datapath in &mut self.datapaths {
            configure(datapath, &config)?;
        }
        let (old_mitigate, new_mitigate) = (&self.started.mitigate, &config.mitigate);
        let mitigate_restart = [
            (
                // The kernel's room for bans is made at start, only if needed.
                "mitigate.mode (off at start)",
                !self.ban_room && new_mitigate.mode != MitigateMode::Off,
            ),
            (
                "mitigate.max_bans",
                old_mitigate.max_bans != new_mitigate.max_bans,
            ),
            (
                "mitigate.notify",
                old_mitigate.notify != new_mitigate.notify,
            ),
            (
                "mitigate.notify_timeout",
                old_mitigate.notify_timeout != new_mitigate.notify_timeout,
            ),
        ];
        for (field, changed) in mitigate_restart {
            if changed {
                log::warn!("SIGHUP: {field} changed; it takes effect at the next start");
            }
        }
        if !self.ban_room {
            config.mitigate.mode = MitigateMode::Off;
        }
        config.mitigate.max_bans = old_mitigate.max_bans;
        if let Some(mitigation) = &mut self.mitigation {
            let (bans, rules) = mitigation.reconfigure(&config, &mut self.datapaths, now());
            self.report_bans(&bans, true)?;
            self.report_rules(&rules, true)?;
        }
        self.pipeline.reconfigure_detectors(&config.detect);
        self.pipeline.reconfigure_inspectors(&config.inspect);
        self.pipeline.set_top(config.monitor.top);
        // Against the values that run: those of the start, whatever reloads came between.
        let (running, old, new) = (&self.started, &self.started.monitor, &config.monitor);
        let restart = [
            ("monitor.iface", old.iface != new.iface),
            ("monitor.ifaces", old.ifaces != new.ifaces),
            ("monitor.mode", old.mode != new.mode),
            ("monitor.interval", old.interval != new.interval),
            ("monitor.max_sources", old.max_sources != new.max_sources),
            ("monitor.source_map", old.source_map != new.source_map),
            ("monitor.format", old.format != new.format),
            ("monitor.alerts", old.alerts != new.alerts),
            ("monitor.control", old.control != new.control),
            ("store.path", running.store.path != config.store.path),
            ("capture", running.capture != config.capture),
            ("webhook", running.webhook != config.webhook),
            (
                // The kernel's room for destinations is made at load, only if needed.
                "networks (no destination counted at start)",
                !running.networks.counts_destinations() && config.networks.counts_destinations(),
            ),
        ];
        for (field, changed) in restart {
            if changed {
                log::warn!("SIGHUP: {field} changed; it takes effect at the next start");
            }
        }
        if self.config.intel != config.intel {
            // Read again at the next tick, with the new settings (no file at all included).
            self.intel.stale = true;
        }
        self.config = config;
        Ok(())
    }
}

/// Now, since the Unix epoch.
fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The program's run-time settings from `config`: sketches, sampling, amplification ports.
fn configure(datapath: &mut Datapath, config: &Config) -> Result<(), DatapathError> {
    datapath.set_sketches(config.detect.scan.needs_sketches())?;
    datapath.set_sampling(&config.sampling())?;
    datapath.set_reflection_ports(&config.detect.reflection_ports)?;
    if datapath.counts_destinations() {
        datapath.set_local_networks(&config.networks.local_networks())?;
        datapath.set_destination_sample(config.networks.sample_destinations)?;
    }
    Ok(())
}

/// An output file for the owner alone (alerts and reports name sources, users and URLs).
fn create(path: &Path, append: bool) -> Result<Box<dyn Write>, SessionError> {
    let file = crate::private_files::open(path, append).map_err(|source| SessionError::Output {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Box::new(BufWriter::new(file)))
}

/// The indicator feeds as last read: each file and its modification time; a reading under
/// way.
#[derive(Debug, Default)]
struct IntelFiles {
    stamps: Stamps,
    /// The settings changed (a reload): read again whatever the files say.
    stale: bool,
    /// The kernel's tries of listed networks, one per datapath (with the reading while one
    /// is under way).
    tries: Vec<IntelTries>,
    /// The reading under way: the feeds and their stamps (none if the reading failed), and
    /// the tries back.
    reading: Option<std::sync::mpsc::Receiver<FeedReading>>,
}

/// What a reading of the feeds hands back: the feeds and their stamps (none if it failed),
/// and the tries it took.
type FeedReading = (Option<(Feed, Stamps)>, Vec<IntelTries>);

/// Each feed file and its modification time when it was read.
type Stamps = Vec<(PathBuf, Option<SystemTime>)>;

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// Makes each datapath's tries hold the feed's networks, and says what changed.
fn sync_tries(feed: &Feed, tries: &mut [IntelTries]) {
    if tries.is_empty() {
        return;
    }
    let networks = feed.networks();
    for trie in tries {
        match trie.set(&networks) {
            Ok(sync) => {
                if sync.added + sync.removed > 0 {
                    log::info!(
                        "intel: {} networks matched in the kernel ({} added, {} removed, in {} ms)",
                        sync.held,
                        sync.added,
                        sync.removed,
                        sync.took.as_millis()
                    );
                }
                if sync.refused > 0 {
                    log::warn!(
                        "intel: the kernel had no room for {} listed networks (at most {} per \
                         family): traffic from or to them is not matched",
                        sync.refused,
                        netwatch_common::INTEL_MAX_NETWORKS
                    );
                }
            }
            Err(err) => log::warn!(
                "intel: cannot write the listed networks into the kernel: {err}; \
                 they are written again at the next change"
            ),
        }
    }
}

/// Reads every feed: the indicators of all, and each file's modification time. Each file's
/// load is said in a line: its indicators, its malformed lines (the first few by number),
/// those of types not matched; a file that cannot be read is said and left out.
fn read_feeds(files: &[PathBuf]) -> (Feed, Stamps) {
    let mut indicators = Vec::new();
    let mut stamps = Vec::new();
    for file in files {
        let stamp = modified(file);
        stamps.push((file.clone(), stamp));
        let text = match std::fs::read(file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) => {
                log::warn!("intel: cannot read {}: {err}; left out", file.display());
                continue;
            }
        };
        let (found, report) = parse(&text);
        let malformed = if report.malformed == 0 {
            String::new()
        } else {
            let lines: Vec<String> = report.malformed_lines.iter().map(u64::to_string).collect();
            format!(
                "; {} malformed lines left out (line {}{})",
                report.malformed,
                lines.join(", "),
                if report.malformed > lines.len() as u64 {
                    ", ..."
                } else {
                    ""
                }
            )
        };
        let unsupported = if report.unsupported == 0 {
            String::new()
        } else {
            format!(
                "; {} of types not matched (Intel::EMAIL, ...)",
                report.unsupported
            )
        };
        log::info!(
            "intel: {}: {} indicators{malformed}{unsupported}",
            file.display(),
            report.loaded
        );
        indicators.extend(found);
    }
    (Feed::new(indicators), stamps)
}
