//! `netwatch monitor`: attach to a live interface and report every interval until a signal.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    time::{Instant, SystemTime},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval_at, sleep_until},
};

use crate::{
    cli::MonitorArgs,
    collect::Collector,
    datapath::{Attachment, Datapath, DatapathError, LoadOptions},
    privilege,
    report::{self, Context},
};

/// Why monitoring could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The process lacks capabilities.
    #[error(
        "permission denied: netwatch needs root or the capabilities {}; missing: {}",
        "CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN",
        .0.join(", ")
    )]
    NotPermitted(Vec<&'static str>),
    /// The datapath failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// The output file could not be created.
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

/// Runs until SIGINT, SIGTERM or `--duration`; detaches before returning.
pub async fn run(args: MonitorArgs) -> Result<(), MonitorError> {
    let MonitorArgs {
        iface,
        mode,
        interval,
        max_sources,
        top,
        format,
        force,
        duration,
        output,
    } = args;
    let missing = privilege::missing_capabilities();
    if !missing.is_empty() {
        return Err(MonitorError::NotPermitted(missing));
    }
    // Handlers first, so that a signal arriving right after attaching still detaches cleanly.
    let mut sigint = signal(SignalKind::interrupt()).map_err(MonitorError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(MonitorError::Signals)?;
    let mut out: Box<dyn Write> = match &output {
        None => Box::new(io::stdout()),
        Some(path) => Box::new(BufWriter::new(File::create(path).map_err(|source| {
            MonitorError::Output {
                path: path.display().to_string(),
                source,
            }
        })?)),
    };

    let mut datapath = Datapath::load(LoadOptions { max_sources })?;
    let attachment = datapath.attach(&iface, mode.into(), force)?;
    announce(&attachment, datapath.max_sources());

    let context = Context {
        iface: iface.clone(),
        max_sources: datapath.max_sources(),
        top,
    };
    let mut collector = Collector::new();
    let started = tokio::time::Instant::now();
    let mut ticker = interval_at(started + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = duration.map(|duration| started + duration);
    let mut last_read = Instant::now();
    let mut read_failures = 0u64;

    let stopped_by = loop {
        tokio::select! {
            _ = ticker.tick() => {
                report_once(&mut datapath, &mut collector, &mut last_read, &mut out, format, &context, false, &mut read_failures)?;
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            () = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => break "--duration",
        }
    };
    // The last, partial interval: nothing counted since the previous tick is left unreported.
    report_once(
        &mut datapath,
        &mut collector,
        &mut last_read,
        &mut out,
        format,
        &context,
        true,
        &mut read_failures,
    )?;
    attachment.detach()?;
    eprintln!("netwatch: {stopped_by}: detached from {iface}");
    Ok(())
}

fn announce(attachment: &Attachment, max_sources: u32) {
    if let Some(replaced) = &attachment.replaced {
        eprintln!(
            "netwatch: removed XDP program {:?} (id {}) left on {}",
            replaced.name, replaced.prog_id, attachment.iface
        );
    }
    eprintln!(
        "netwatch: attached to {} (ifindex {}) in {} mode through a BPF link; up to {} sources",
        attachment.iface, attachment.ifindex, attachment.mode, max_sources
    );
}

#[expect(
    clippy::too_many_arguments,
    reason = "the loop's state, passed apart so the borrow of each is plain"
)]
fn report_once(
    datapath: &mut Datapath,
    collector: &mut Collector,
    last_read: &mut Instant,
    out: &mut impl Write,
    format: report::Format,
    context: &Context,
    last: bool,
    read_failures: &mut u64,
) -> Result<(), MonitorError> {
    let snapshot = match datapath.snapshot() {
        Ok(snapshot) => snapshot,
        Err(err) => {
            // A failed read loses nothing: the kernel counters are cumulative, so the next
            // reading covers this interval too.
            *read_failures += 1;
            eprintln!("netwatch: reading the maps failed ({read_failures} so far): {err}");
            return Ok(());
        }
    };
    let now = Instant::now();
    let interval = collector.update(snapshot, now - *last_read);
    *last_read = now;
    report::write_interval(out, format, context, SystemTime::now(), &interval, last)
        .map_err(MonitorError::Write)
}
