//! `netwatch history`: answers from the store's history: a source's traffic over a period,
//! the alerts of a period, the top sources of a period; as a table or JSON lines.

use std::{
    io::{self, Write},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    cli::{HistoryArgs, HistoryQuery},
    cmd::store::{StoreCommandError, open_store_and_captures},
    report::{escape, rfc3339},
};

/// Runs one query against the store, writing the answer to `out`.
pub fn run(args: HistoryArgs, out: &mut impl Write) -> Result<(), StoreCommandError> {
    let HistoryArgs {
        config,
        db,
        since,
        until,
        json,
        query,
    } = args;
    let (store, captures) = open_store_and_captures(config.as_deref(), db.as_deref())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let from = now.saturating_sub(since);
    let to = now.saturating_sub(until.unwrap_or_default()) + Duration::from_millis(1);
    let time = |ms: i64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
    match query {
        HistoryQuery::Source { addr } => {
            let rows = store.source_history(&addr.to_string(), from, to)?;
            if !json {
                writeln!(out, "{:<24} {:>12} {:>14}", "TIME", "PACKETS", "BYTES")?;
            }
            let (mut packets, mut bytes) = (0, 0);
            for (ts_ms, p, b) in &rows {
                packets += p;
                bytes += b;
                if json {
                    let record = serde_json::json!({
                        "time": time(*ts_ms), "source": addr.to_string(), "packets": p, "bytes": b,
                    });
                    writeln!(out, "{record}")?;
                } else {
                    writeln!(out, "{:<24} {p:>12} {b:>14}", time(*ts_ms))?;
                }
            }
            if !json {
                writeln!(
                    out,
                    "{addr}: {packets} packets, {bytes} bytes in {} intervals where it was among the top sources kept",
                    rows.len()
                )?;
            }
        }
        HistoryQuery::Alerts => {
            let alerts = store.alerts_between(from, to)?;
            for record in &alerts {
                if json {
                    writeln!(out, "{record}")?;
                } else {
                    let value: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
                    // The store is a file anyone with access may have written: every field is
                    // escaped like wire data.
                    let field =
                        |name: &str| escape(value[name].as_str().unwrap_or("?")).into_owned();
                    write!(
                        out,
                        "{} {} {} {} {} {} {} (threshold {})",
                        field("time"),
                        field("state"),
                        field("severity"),
                        field("kind"),
                        field("subject"),
                        value["observed"],
                        escape(value["unit"].as_str().unwrap_or("")),
                        value["threshold"],
                    )?;
                    // The subject's AS and country, when the daemon had the databases.
                    let place = &value["context"][value["subject"].as_str().unwrap_or("")];
                    if let Some(asn) = place["asn"].as_u64() {
                        write!(
                            out,
                            "; AS{asn} {}",
                            escape(place["as_org"].as_str().unwrap_or("?"))
                        )?;
                    }
                    if let Some(country) = place["country"].as_str() {
                        write!(out, " {}", escape(country))?;
                    }
                    // The event's capture, where the daemon keeps them.
                    if let Some(file) = value["capture"]["file"].as_str() {
                        write!(
                            out,
                            "; capture {} ({} frames)",
                            escape(&captures.join(file).display().to_string()),
                            value["capture"]["frames"].as_u64().unwrap_or(0)
                        )?;
                    }
                    writeln!(out)?;
                }
            }
            if !json {
                writeln!(out, "{} alerts", alerts.len())?;
            }
        }
        HistoryQuery::Top { limit } => {
            let top = store.top_sources(from, to, limit)?;
            if !json {
                writeln!(
                    out,
                    "{:<39} {:>12} {:>14} {:>10}  AS / CC",
                    "SOURCE", "PACKETS", "BYTES", "INTERVALS"
                )?;
            }
            for source in &top {
                if json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(source).map_err(io::Error::other)?
                    )?;
                } else {
                    let place = [
                        source.asn.map(|asn| format!("AS{asn}")),
                        source.as_org.as_deref().map(|org| escape(org).into_owned()),
                        source.country.as_deref().map(|cc| escape(cc).into_owned()),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                    writeln!(
                        out,
                        "{:<39} {:>12} {:>14} {:>10}  {place}",
                        escape(&source.source),
                        source.packets,
                        source.bytes,
                        source.intervals
                    )?;
                }
            }
        }
    }
    Ok(())
}
