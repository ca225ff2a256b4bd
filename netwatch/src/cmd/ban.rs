//! `netwatch ban`: adds, removes and lists the bans of the running daemon, through its control
//! socket. The daemon owns the bans (the kernel's list, the store, the reports); without a
//! daemon there is nothing to ban in, and the command says so in one line.

use std::io::{self, Write};

use serde_json::Value;

use crate::{
    cli::{BanAction, BanArgs},
    control::{self, ClientError, PROTOCOL_VERSION, Request},
    report::escape,
};

/// Sends the request and prints the answer.
pub fn run(args: BanArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let BanArgs {
        config,
        control,
        action,
    } = args;
    let path = control::socket_path(control, config.as_deref())?;
    let (request, json) = match action {
        BanAction::Add {
            subject,
            ttl,
            reason,
        } => (
            Request {
                request: String::from("ban_add"),
                subject: Some(subject),
                ttl_s: ttl.map(|ttl| ttl.as_secs_f64()),
                reason,
                ..Request::default()
            },
            false,
        ),
        BanAction::Remove { subject } => (
            Request {
                request: String::from("ban_remove"),
                subject: Some(subject),
                ..Request::default()
            },
            false,
        ),
        BanAction::List { json } => (
            Request {
                request: String::from("ban_list"),
                ..Request::default()
            },
            json,
        ),
    };
    let request = Request {
        version: PROTOCOL_VERSION,
        ..request
    };
    let (line, answer) = control::ask_answer(
        &path,
        &request,
        "bans live in a running daemon (netwatch monitor), see --control",
    )?;
    match answer["type"].as_str() {
        Some("ban") => {
            let field = |name: &str| escape(answer[name].as_str().unwrap_or("-")).into_owned();
            if answer["action"] == "unban" {
                writeln!(
                    out,
                    "unbanned {}: {} packets, {} bytes matched while banned",
                    field("subject"),
                    answer["packets"].as_u64().unwrap_or(0),
                    answer["bytes"].as_u64().unwrap_or(0)
                )?;
            } else {
                writeln!(
                    out,
                    "banned {} until {} ({})",
                    field("subject"),
                    field("expires"),
                    field("mode")
                )?;
            }
            Ok(())
        }
        Some("bans") if json => {
            writeln!(out, "{}", line.trim_end())?;
            Ok(())
        }
        Some("bans") => write_list(out, &answer).map_err(Into::into),
        _ => Err(ClientError::answer(&path, &line)),
    }
}

fn write_list(out: &mut impl Write, answer: &Value) -> io::Result<()> {
    let bans = answer["bans"].as_array().cloned().unwrap_or_default();
    let mode = answer["mode"].as_str().unwrap_or("?");
    if bans.is_empty() {
        return writeln!(out, "no bans in force (mode {})", escape(mode));
    }
    writeln!(
        out,
        "{:<43} {:<7} {:<24} {:>12} {:>14}  REASON",
        "SUBJECT", "ORIGIN", "EXPIRES", "PACKETS", "BYTES"
    )?;
    for ban in &bans {
        let field = |name: &str| escape(ban[name].as_str().unwrap_or("-")).into_owned();
        writeln!(
            out,
            "{:<43} {:<7} {:<24} {:>12} {:>14}  {}",
            field("subject"),
            field("origin"),
            field("expires"),
            ban["packets"].as_u64().unwrap_or(0),
            ban["bytes"].as_u64().unwrap_or(0),
            field("reason")
        )?;
    }
    writeln!(out, "{} bans in force, mode {}", bans.len(), escape(mode))
}
