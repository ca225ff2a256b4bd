//! Events (credentials, HTTP requests, DNS, keywords), as a console line and as a JSON line.

use std::{
    io::{self, Write},
    time::UNIX_EPOCH,
};

use serde::Serialize;

use super::{escape, rfc3339};
use crate::inspect::{Event, EventKind};

#[derive(Serialize)]
struct EventRecord<'a> {
    #[serde(rename = "type")]
    kind_of_record: &'static str,
    time: String,
    unix_ms: u128,
    iface: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// One JSON object on one line.
pub fn write_json(out: &mut impl Write, iface: &str, event: &Event) -> io::Result<()> {
    let record = EventRecord {
        kind_of_record: "event",
        time: rfc3339(UNIX_EPOCH + event.at),
        unix_ms: event.at.as_millis(),
        iface,
        event,
    };
    serde_json::to_writer(&mut *out, &record).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// One line for people.
pub fn write_line(out: &mut impl Write, iface: &str, event: &Event) -> io::Result<()> {
    write!(
        out,
        "{} EVENT {} {} -> {} on {iface}: ",
        rfc3339(UNIX_EPOCH + event.at),
        event.kind.name(),
        event.client,
        event.server
    )?;
    match &event.kind {
        EventKind::Credential {
            protocol,
            mechanism,
            user,
            secret,
        } => write!(
            out,
            "cleartext {protocol} credential ({mechanism}) user {} secret {}",
            escape(user.as_deref().unwrap_or("?")),
            escape(secret)
        )?,
        EventKind::Http {
            method,
            host,
            path,
            user_agent,
        } => write!(
            out,
            "{} {}{} ({})",
            escape(method),
            escape(host.as_deref().unwrap_or("")),
            escape(path),
            escape(user_agent.as_deref().unwrap_or("no user agent"))
        )?,
        EventKind::Dns {
            name,
            qtype,
            response,
            rcode,
            cnames,
            transport,
        } => {
            // Names are in presentation format already: odd bytes as \DDD (dns.rs).
            if *response {
                write!(
                    out,
                    "answer {name} {qtype} {} over {transport}",
                    rcode.as_deref().unwrap_or("?")
                )?;
                for target in cnames {
                    write!(out, " (CNAME {target})")?;
                }
            } else {
                write!(out, "query {name} {qtype} over {transport}")?;
            }
        }
        EventKind::Keyword { keyword } => write!(out, "keyword {keyword:?} in a TCP payload")?,
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn credential_json_and_line() {
        let event = Event {
            at: Duration::from_secs(1_795_314_601),
            client: "192.0.2.1:40000".parse().unwrap(),
            server: "198.51.100.2:21".parse().unwrap(),
            kind: EventKind::Credential {
                protocol: "ftp",
                mechanism: "USER/PASS",
                user: Some("alice".into()),
                secret: "<redacted>".into(),
            },
        };
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &event).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["type"], "event");
        assert_eq!(value["event"], "credential");
        assert_eq!(value["protocol"], "ftp");
        assert_eq!(value["user"], "alice");
        assert_eq!(value["secret"], "<redacted>");
        assert_eq!(value["client"], "192.0.2.1:40000");
        assert_eq!(value["server"], "198.51.100.2:21");
        assert_eq!(value["time"], "2026-11-22T02:30:01.000Z");
        let mut line = Vec::new();
        write_line(&mut line, "eth0", &event).unwrap();
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.ends_with("EVENT credential 192.0.2.1:40000 -> 198.51.100.2:21 on eth0: cleartext ftp credential (USER/PASS) user alice secret <redacted>\n"),
            "{line}"
        );
    }
}
