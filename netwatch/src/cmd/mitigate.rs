//! `netwatch mitigate`: lists, adds and removes the signature rules of the running daemon,
//! through its control socket. The daemon owns the rules (the kernel's table, the reports, the notify
//! commands); without a daemon there are none, and the command says so in one line.

use std::io::{self, Write};

use serde_json::Value;

use crate::{
    cli::{MitigateAction, MitigateArgs},
    control::{self, ClientError, PROTOCOL_VERSION, Request, RuleSpec},
    report::escape,
};

/// Sends the request and prints the answer.
pub fn run(args: MitigateArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let MitigateArgs {
        config,
        control,
        action,
    } = args;
    let path = control::socket_path(control, config.as_deref())?;
    let (request, json) = match action {
        MitigateAction::List { json } => (
            Request {
                request: String::from("rule_list"),
                ..Request::default()
            },
            json,
        ),
        MitigateAction::Add {
            destination,
            protocol,
            source_port,
            destination_port,
            syn,
            fragments,
            rate_limit,
            ttl,
            rtbh,
        } => (
            Request {
                request: String::from("rule_add"),
                ttl_s: ttl.map(|ttl| ttl.as_secs_f64()),
                rule: Some(RuleSpec {
                    destination,
                    protocol,
                    source_port,
                    destination_port,
                    tcp_syn: syn,
                    fragments,
                    rate_pps: rate_limit,
                    rtbh,
                }),
                ..Request::default()
            },
            false,
        ),
        MitigateAction::Remove { index } => (
            Request {
                request: String::from("rule_remove"),
                index: Some(index),
                ..Request::default()
            },
            false,
        ),
    };
    let request = Request {
        version: PROTOCOL_VERSION,
        ..request
    };
    let (line, answer) = control::ask_answer(
        &path,
        &request,
        "rules live in a running daemon (netwatch monitor), see --control",
    )?;
    match answer["type"].as_str() {
        Some("rule") if answer["change"] == "add" => {
            writeln!(
                out,
                "added rule {}: {} until {} ({})",
                answer["index"].as_u64().unwrap_or(0),
                escape(answer["signature"].as_str().unwrap_or("-")),
                escape(answer["expires"].as_str().unwrap_or("-")),
                escape(answer["mode"].as_str().unwrap_or("-"))
            )?;
            Ok(())
        }
        Some("rule") => {
            writeln!(
                out,
                "removed rule {} ({}): {} packets matched, {} dropped",
                answer["index"].as_u64().unwrap_or(0),
                escape(answer["signature"].as_str().unwrap_or("-")),
                answer["matched_packets"].as_u64().unwrap_or(0),
                answer["dropped_packets"].as_u64().unwrap_or(0)
            )?;
            Ok(())
        }
        Some("rules") if json => {
            writeln!(out, "{}", line.trim_end())?;
            Ok(())
        }
        Some("rules") => write_list(out, &answer).map_err(Into::into),
        _ => Err(ClientError::answer(&path, &line)),
    }
}

fn write_list(out: &mut impl Write, answer: &Value) -> io::Result<()> {
    let rules = answer["rules"].as_array().cloned().unwrap_or_default();
    let mode = answer["mode"].as_str().unwrap_or("?");
    if rules.is_empty() {
        return writeln!(out, "no signature rules in force (mode {})", escape(mode));
    }
    writeln!(
        out,
        "{:>5}  {:<10} {:<24} {:>12} {:>12}  SIGNATURE",
        "INDEX", "ACTION", "EXPIRES", "MATCHED", "DROPPED"
    )?;
    for rule in &rules {
        let field = |name: &str| escape(rule[name].as_str().unwrap_or("-")).into_owned();
        let action = match rule["rate_pps"].as_u64() {
            Some(pps) => format!("{pps} pkt/s"),
            None => field("action"),
        };
        writeln!(
            out,
            "{:>5}  {:<10} {:<24} {:>12} {:>12}  {}",
            rule["index"].as_u64().unwrap_or(0),
            action,
            field("expires"),
            rule["matched_packets"].as_u64().unwrap_or(0),
            rule["dropped_packets"].as_u64().unwrap_or(0),
            field("signature"),
        )?;
    }
    writeln!(out, "{} rules in force, mode {}", rules.len(), escape(mode))
}
