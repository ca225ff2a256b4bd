//! `netwatch known`: list, add, remove and prune the known sources in the store.

use std::{
    io::Write,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    cli::{KnownAction, KnownArgs},
    cmd::store::{StoreCommandError, open_store},
    report::rfc3339,
};

/// Runs one `known` action, writing its answer to `out`.
pub fn run(args: KnownArgs, out: &mut impl Write) -> Result<(), StoreCommandError> {
    let KnownArgs { config, db, action } = args;
    let mut store = open_store(config.as_deref(), db.as_deref())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match action {
        KnownAction::List { json } => {
            let sources = store.known_list()?;
            if !json {
                writeln!(
                    out,
                    "{:<39} {:<8} {:<24} LAST SEEN",
                    "SOURCE", "ORIGIN", "FIRST SEEN"
                )?;
            }
            for source in &sources {
                let time = |ms: i64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
                if json {
                    let record = serde_json::json!({
                        "source": source.addr.to_string(),
                        "origin": source.origin,
                        "first_seen": time(source.first_seen_ms),
                        "last_seen": time(source.last_seen_ms),
                    });
                    writeln!(out, "{record}")?;
                } else {
                    writeln!(
                        out,
                        "{:<39} {:<8} {:<24} {}",
                        source.addr.to_string(),
                        source.origin,
                        time(source.first_seen_ms),
                        time(source.last_seen_ms)
                    )?;
                }
            }
            if !json {
                writeln!(out, "{} known sources", sources.len())?;
            }
        }
        KnownAction::Add { addrs } => {
            let added = store.known_add(&addrs, now)?;
            writeln!(
                out,
                "added {added} of {} (the others were known)",
                addrs.len()
            )?;
        }
        KnownAction::Remove { addrs } => {
            let removed = store.known_remove(&addrs)?;
            writeln!(out, "removed {removed} of {}", addrs.len())?;
        }
        KnownAction::Prune { older_than } => {
            let removed = store.known_prune(now.saturating_sub(older_than))?;
            writeln!(out, "pruned {removed} sources not seen for {older_than:?}")?;
        }
    }
    Ok(())
}
