//! `netwatch status`: asks the running daemon, through its control socket, what it sees.

use std::{
    io::{self, BufRead as _, Write},
    path::{Path, PathBuf},
};

use crate::{
    cli::StatusArgs,
    config::ConfigError,
    control::{self, Status},
    report::escape,
};

/// Why `status` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No daemon answers.
    #[error("no netwatch daemon answers on {path}: {source} (is it running? see --control)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The daemon answered with something else than a status.
    #[error("the daemon on {path} answered: {answer}")]
    Answer {
        /// The socket.
        path: PathBuf,
        /// What it said (escaped).
        answer: String,
    },
    /// Writing the answer.
    #[error("cannot write: {0}")]
    Write(#[from] io::Error),
}

/// Asks and prints, as a summary or (`--json`) the status object itself.
pub fn run(args: StatusArgs, out: &mut impl Write) -> Result<(), StatusError> {
    let StatusArgs {
        config,
        control,
        json,
    } = args;
    let path = control::socket_path(control, config.as_deref())?;
    let connect = |source| StatusError::Connect {
        path: path.clone(),
        source,
    };
    let mut answer = String::new();
    control::connect(&path, "status")
        .and_then(|mut reader| reader.read_line(&mut answer))
        .map_err(connect)?;
    let status: Status = match serde_json::from_str(&answer) {
        Ok(status) => status,
        Err(_) => {
            return Err(StatusError::Answer {
                path,
                answer: escape(answer.trim_end()).into_owned(),
            });
        }
    };
    if json {
        writeln!(out, "{}", answer.trim_end())?;
    } else {
        write_summary(out, &status, &path)?;
    }
    Ok(())
}

fn write_summary(out: &mut impl Write, status: &Status, path: &Path) -> io::Result<()> {
    let uptime = status.uptime_s as u64;
    writeln!(
        out,
        "netwatch {} (pid {}) up {}h{:02}m{:02}s since {}, every {} ms, on {}",
        escape(&status.netwatch),
        status.pid,
        uptime / 3600,
        uptime / 60 % 60,
        uptime % 60,
        escape(&status.started),
        status.interval_ms,
        path.display()
    )?;
    for interface in &status.interfaces {
        writeln!(
            out,
            "  {} (ifindex {}, {}): {} mode, {} source map of {} slots",
            escape(&interface.iface),
            interface.ifindex,
            escape(&interface.state),
            escape(&interface.mode),
            escape(&interface.source_map),
            interface.max_sources
        )?;
    }
    let counts = &status.counts;
    writeln!(
        out,
        "traffic: {} packets, {} bytes since the start; {:.0} pkt/s, {:.0} bit/s in the last interval; {} sources tracked",
        counts.packets, counts.bytes, counts.pps, counts.bps, counts.sources_tracked
    )?;
    writeln!(
        out,
        "blind spots: {} non-IP, {} malformed, {} without a slot, {} truncated",
        counts.non_ip, counts.malformed, counts.overflow, counts.truncated
    )?;
    let store = &status.store;
    writeln!(
        out,
        "store: {} records waiting for the disk, {} dropped, {} lost",
        store.waiting, store.dropped, store.failed
    )?;
    let webhook = &status.webhook;
    writeln!(
        out,
        "webhooks: {} URLs, {} down, {} records queued",
        webhook.urls, webhook.down, webhook.queued
    )?;
    writeln!(
        out,
        "subscribers: {} connected, {} dropped for falling behind",
        status.subscribers, status.subscribers_dropped
    )?;
    if status.last_alerts.is_empty() {
        writeln!(out, "no alerts yet")?;
    } else {
        writeln!(out, "last alerts:")?;
        for alert in &status.last_alerts {
            let field = |name: &str| escape(alert[name].as_str().unwrap_or("-")).into_owned();
            writeln!(
                out,
                "  {} {} {} {} {}",
                field("time"),
                field("severity"),
                field("kind"),
                field("state"),
                field("subject")
            )?;
        }
    }
    Ok(())
}
