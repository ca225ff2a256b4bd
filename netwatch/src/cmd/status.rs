//! `netwatch status`: asks the running daemon, through its control socket, what it sees.

use std::{
    io::{self, Write},
    path::Path,
};

use crate::{
    cli::StatusArgs,
    control::{self, ClientError, PROTOCOL_VERSION, Request, Status},
    report::escape,
};

/// Asks and prints, as a summary or (`--json`) the status object itself.
pub fn run(args: StatusArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let StatusArgs {
        config,
        control,
        json,
    } = args;
    let path = control::socket_path(control, config.as_deref())?;
    let answer = control::ask(
        &path,
        &Request {
            version: PROTOCOL_VERSION,
            request: String::from("status"),
            ..Request::default()
        },
        "is it running? see --control",
    )?;
    let status: Status =
        serde_json::from_str(&answer).map_err(|_| ClientError::answer(&path, &answer))?;
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
