//! `netwatch replay FILE`: a capture through the real XDP program (BPF_PROG_TEST_RUN), with
//! the collection interval driven by the capture's timestamps, then the same collect, detect
//! and report stages as live monitoring.

use std::time::Duration;

use crate::{
    capture::{CaptureError, CaptureReader},
    cli::ReplayArgs,
    config::Config,
    datapath::Datapath,
    pipeline::{Pipeline, Tally},
    session::{Session, SessionError, Setup, check_privilege},
};

/// Empty intervals replayed one by one across a gap in the capture; a longer gap is reported
/// as one long, quiet interval.
const MAX_EMPTY_INTERVALS: u64 = 3_600;

/// An Ethernet header: a shorter captured frame is a runt.
const ETH_HLEN: usize = 14;

/// Frames the kernel refused that are named one by one on stderr; the rest are counted.
const REFUSED_SHOWN: u64 = 3;

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Frames run through the program.
    pub frames: u64,
    /// Frames shorter than an Ethernet header: counted as malformed, by their own length.
    pub runts: u64,
    /// Frames the kernel refused to run (none is expected: a refusal is a bug or a kernel
    /// limit, named on stderr).
    pub refused: u64,
    /// Pipeline counts.
    pub tally: Tally,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Before or around the pipeline.
    #[error(transparent)]
    Monitor(#[from] SessionError),
    /// The capture: everything read before the error has been reported.
    #[error("{error} (the {frames} frames before it were replayed and reported)")]
    Capture {
        /// What went wrong.
        error: CaptureError,
        /// Frames replayed before.
        frames: u64,
    },
}

/// Replays the file; returns what it did.
pub fn run(args: ReplayArgs) -> Result<ReplaySummary, ReplayError> {
    let ReplayArgs {
        file,
        db,
        pipeline: flags,
    } = args;
    let mut config =
        Config::load_or_default(flags.config.as_deref()).map_err(SessionError::from)?;
    flags.apply(&mut config).map_err(SessionError::from)?;
    check_privilege()?;
    let reader =
        CaptureReader::open(&file).map_err(|error| ReplayError::Capture { error, frames: 0 })?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let interval = config.monitor.interval;
    let captures = (!config.capture.dir.as_os_str().is_empty()).then(|| config.capture.dir.clone());
    let Session {
        mut datapaths,
        mut pipeline,
        captures,
        ..
    } = Session::start(
        config,
        Setup {
            names: vec![name],
            output: flags.output.as_deref(),
            store: db.as_deref(),
            metrics: None,
            mitigate: false,
            captures,
            live: false,
        },
    )?;
    let Some(mut datapath) = datapaths.pop() else {
        return Err(SessionError::NoInterface.into());
    };

    let mut summary = ReplaySummary::default();
    // End of the interval being filled, on the capture clock.
    let mut boundary: Option<Duration> = None;
    let mut last_time = Duration::ZERO;
    let mut failure = None;
    for frame in reader {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        let end = *boundary.get_or_insert(frame.timestamp + interval);
        if frame.timestamp >= end {
            // A clock that leaps (a capture spliced from two, a reset clock) is no quiet
            // period: said once, and crossed in one quiet interval rather than hours of them.
            let jump = frame.timestamp.saturating_sub(last_time)
                > interval.saturating_mul(2 * MAX_EMPTY_INTERVALS as u32);
            if jump && summary.frames > 0 {
                log::warn!(
                    "{}: frame {} is {:.0} s after the frame before it: a time jump, reported as one quiet interval, not as traffic",
                    file.display(),
                    frame.number,
                    frame.timestamp.saturating_sub(last_time).as_secs_f64()
                );
            }
            boundary = Some(close_intervals(
                &mut datapath,
                &mut pipeline,
                end,
                frame.timestamp,
                interval,
                jump,
            )?);
        }
        last_time = last_time.max(frame.timestamp);
        match datapath.replay_frame(&frame.data, frame.original_len) {
            Ok(_) => {
                summary.frames += 1;
                if frame.data.len() < ETH_HLEN {
                    summary.runts += 1;
                }
                // What the captures kept of it is written at once, as are the samples
                // inspected, on the capture's clock.
                if let Some(captures) = &captures {
                    lock(captures).pump(frame.timestamp);
                }
                let mut samples = Vec::new();
                datapath.drain_samples(|sample| samples.push(sample));
                for sample in &samples {
                    pipeline
                        .sample(0, sample, frame.timestamp)
                        .map_err(SessionError::Write)?;
                }
            }
            Err(err) => {
                summary.refused += 1;
                // The first few by number; the rest only counted, in one line at the end: a
                // capture of ten thousand empty frames is not ten thousand lines.
                if summary.refused <= REFUSED_SHOWN {
                    log::warn!(
                        "{}: frame {} ({} bytes) not replayed: {err}",
                        file.display(),
                        frame.number,
                        frame.data.len()
                    );
                }
            }
        }
    }
    // The last, partial interval.
    if let Some(end) = boundary {
        let start = end.saturating_sub(interval);
        let elapsed = last_time
            .saturating_sub(start)
            .max(Duration::from_millis(1));
        let snapshot = datapath.snapshot().map_err(SessionError::from)?;
        pipeline
            .tick(0, &snapshot, start + elapsed, elapsed, true)
            .map_err(SessionError::Write)?;
    }
    if let Some(captures) = &captures {
        lock(captures).finish();
    }
    summary.tally = pipeline.tally();
    pipeline.finish();
    if summary.refused > REFUSED_SHOWN {
        log::warn!(
            "{}: {} more frames refused by the kernel",
            file.display(),
            summary.refused - REFUSED_SHOWN
        );
    }
    match failure {
        Some(error) => Err(ReplayError::Capture {
            error,
            frames: summary.frames,
        }),
        None => Ok(summary),
    }
}

/// Closes every interval that ends at or before `now`, starting with the one ending at `end`;
/// returns the end of the interval `now` falls in. After a `jump` of the capture's clock the
/// gap is one quiet interval at once.
fn close_intervals(
    datapath: &mut Datapath,
    pipeline: &mut Pipeline,
    mut end: Duration,
    now: Duration,
    interval: Duration,
    jump: bool,
) -> Result<Duration, SessionError> {
    let quiet_ones = if jump { 1 } else { MAX_EMPTY_INTERVALS };
    let mut empty = 0u64;
    while now >= end {
        let elapsed = if empty >= quiet_ones {
            // Skip the rest of a long gap in one quiet interval.
            let skipped = (now - end).as_nanos() / interval.as_nanos().max(1) + 1;
            let skipped = u32::try_from(skipped).unwrap_or(u32::MAX);
            let elapsed = interval * skipped;
            end += elapsed - interval;
            elapsed
        } else {
            interval
        };
        let snapshot = datapath.snapshot()?;
        pipeline
            .tick(0, &snapshot, end, elapsed, false)
            .map_err(SessionError::Write)?;
        end += interval;
        empty += 1;
    }
    Ok(end)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
