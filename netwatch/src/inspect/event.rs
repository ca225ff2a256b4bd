//! What inspection gives: an [`Event`] (a finding about traffic, what it says in
//! [`EventKind`]) and the [`Findings`] of one sample or one interval.
//!
//! Plain data, as the report stage sees it: it decodes nothing and decides nothing (the
//! inspector and the decoders do); it imports nothing else of this module.

use std::{net::SocketAddr, time::Duration};

use serde::Serialize;

use crate::detect::alert::Alert;

/// One finding about traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// When (capture time in replay).
    #[serde(skip)]
    pub at: Duration,
    /// The client end.
    pub client: SocketAddr,
    /// The server end.
    pub server: SocketAddr,
    /// What was found.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an event says.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A user name and secret sent in the clear.
    Credential {
        /// ftp, pop3, imap, smtp, telnet, http.
        protocol: &'static str,
        /// How: USER/PASS, LOGIN, AUTH PLAIN, AUTH LOGIN, login (Telnet), Basic, form.
        mechanism: &'static str,
        /// The user name, when the sample shows it.
        user: Option<String>,
        /// The secret, or `<redacted>`.
        secret: String,
    },
    /// An HTTP request.
    Http {
        /// GET, POST, ...
        method: String,
        /// `Host`.
        host: Option<String>,
        /// The request target.
        path: String,
        /// `User-Agent`.
        user_agent: Option<String>,
    },
    /// A DNS query or answer.
    Dns {
        /// The first question's name.
        name: String,
        /// Its type.
        qtype: String,
        /// An answer rather than a query.
        response: bool,
        /// The answer's response code.
        rcode: Option<String>,
        /// The names the answer's CNAME records point to (empty for a query).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        cnames: Vec<String>,
        /// udp or tcp.
        transport: &'static str,
    },
    /// A configured keyword in a TCP payload.
    Keyword {
        /// The keyword.
        keyword: String,
    },
}

impl EventKind {
    /// The `event` name in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Credential { .. } => "credential",
            Self::Http { .. } => "http",
            Self::Dns { .. } => "dns",
            Self::Keyword { .. } => "keyword",
        }
    }
}

/// What one sample, or the end of an interval, gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    /// Events.
    pub events: Vec<Event>,
    /// Alerts (DNS tunnelling).
    pub alerts: Vec<Alert>,
}
