//! Inspection: from sampled frames to events (cleartext credentials, HTTP requests, DNS
//! queries and answers, keyword hits) and to DNS tunnelling alerts.
//!
//! Pure code: frames in, findings out. Frames are decoded with etherparse (VLAN, IPv4, IPv6,
//! extension headers), laxly, because a sample holds only the first bytes of a frame. Any input
//! is safe: nothing here indexes without a check, and a fuzz test holds it to that.

pub mod dns;
pub mod http;
pub mod text;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use serde::{Deserialize, Serialize};

use crate::detect::alert::{Alert, AlertKind, AlertState, Severity, Subject};

/// What is sampled and what is looked for. Every field has a default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectConfig {
    /// Off switch for sampling and inspection.
    pub enabled: bool,
    /// Samples per second per CPU (the kernel's token bucket).
    pub rate: u32,
    /// Samples that may be taken at once after a quiet spell.
    pub burst: u32,
    /// TCP ports sampled, either end of the packet.
    pub tcp_ports: Vec<u16>,
    /// UDP ports sampled.
    pub udp_ports: Vec<u16>,
    /// Print credentials' secrets instead of `<redacted>` (also `--show-secrets`).
    pub show_secrets: bool,
    /// The keyword matcher.
    pub keywords: KeywordConfig,
    /// DNS tunnelling heuristics.
    pub dns_tunnel: DnsTunnelConfig,
    /// Flows whose state (an FTP user waiting for its PASS, an HTTP request waiting for its
    /// body, ...) is remembered.
    pub max_flows: usize,
    /// Most bytes of a sampled frame the kernel copies (up to 8,192); a longer frame is cut
    /// there and counted as truncated.
    pub snap_len: u32,
    /// Most bytes of one HTTP request (head and body) gathered across segments.
    pub follow_bytes: usize,
    /// An HTTP request whose rest has not come within this long is reported as it is.
    #[serde(with = "crate::duration")]
    pub follow_timeout: Duration,
}

impl Default for InspectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate: 1_000,
            burst: 2_000,
            tcp_ports: vec![21, 23, 25, 53, 80, 110, 143, 587, 8080],
            udp_ports: vec![53],
            show_secrets: false,
            keywords: KeywordConfig::default(),
            dns_tunnel: DnsTunnelConfig::default(),
            max_flows: 10_000,
            snap_len: netwatch_common::DEFAULT_SAMPLE_SNAP_LEN,
            follow_bytes: 65_536,
            follow_timeout: Duration::from_secs(10),
        }
    }
}

/// The rule some scripts use: a keyword anywhere in a TCP payload. Off by default; on, the
/// kernel samples every TCP payload (within the rate).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeywordConfig {
    /// Off switch.
    pub enabled: bool,
    /// Matched case-insensitively.
    pub words: Vec<String>,
}

impl Default for KeywordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            words: vec![String::from("user"), String::from("pass")],
        }
    }
}

/// DNS tunnelling: data smuggled in query names looks long, random, and spread over many
/// subdomains of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTunnelConfig {
    /// Off switch.
    pub enabled: bool,
    /// A query name this long or longer is suspicious.
    pub max_name_len: usize,
    /// A label of at least `min_label_len` characters with at least this Shannon entropy
    /// (bits per character) is suspicious.
    pub entropy_bits: f64,
    /// See `entropy_bits`.
    pub min_label_len: usize,
    /// Distinct subdomains of one domain from one source in one interval that alert.
    pub subdomains: usize,
    /// Time before the same source and domain may alert again.
    #[serde(with = "crate::duration")]
    pub quiet: Duration,
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_name_len: 100,
            entropy_bits: 4.0,
            min_label_len: 24,
            subdomains: 50,
            quiet: Duration::from_secs(600),
        }
    }
}

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

/// What is remembered of a client->server flow between samples.
#[derive(Clone, Debug, Default)]
enum FlowState {
    #[default]
    Idle,
    /// FTP or POP3 USER seen.
    UserSent(String),
    /// SMTP AUTH PLAIN or IMAP AUTHENTICATE PLAIN without its initial response.
    PlainPending,
    /// SMTP AUTH LOGIN: waiting for the user name.
    LoginUserPending,
    /// SMTP AUTH LOGIN: user known, waiting for the password.
    LoginPasswordPending(String),
    /// Telnet: the server asked for a login; the user name typed so far.
    TelnetUser(String),
    /// Telnet: the user name typed, waiting for the password prompt.
    TelnetUserTyped(String),
    /// Telnet: the server asked for the password; the user, and the secret typed so far.
    TelnetPassword(Option<String>, String),
}

/// Characters of a Telnet user name or password kept at most: a line longer than this is
/// not a login.
const TELNET_LINE_MAX: usize = 256;

type FlowKey = (SocketAddr, SocketAddr);

/// Decoded sample.
struct Decoded<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    tcp: bool,
    /// TCP's sequence number of the payload's first byte (0 for UDP).
    seq: u32,
    payload: &'a [u8],
}

/// Inspection state.
pub struct Inspector {
    config: InspectConfig,
    flows: HashMap<FlowKey, FlowState>,
    flow_order: VecDeque<FlowKey>,
    subdomains: HashMap<(IpAddr, String), HashSet<String>>,
    quiet_until: HashMap<(IpAddr, String), Duration>,
    keywords_seen: HashSet<(FlowKey, String)>,
    /// HTTP requests being gathered across segments.
    streams: http::Streams,
    run: String,
    next_id: u64,
    undecodable: u64,
}

const REDACTED: &str = "<redacted>";

impl Inspector {
    /// An inspector; `run` prefixes alert ids.
    pub fn new(config: InspectConfig, run: String) -> Self {
        Self {
            streams: http::Streams::new(
                config.max_flows,
                config.follow_bytes,
                config.follow_timeout,
            ),
            config,
            flows: HashMap::new(),
            flow_order: VecDeque::new(),
            subdomains: HashMap::new(),
            quiet_until: HashMap::new(),
            keywords_seen: HashSet::new(),
            run,
            next_id: 1,
            undecodable: 0,
        }
    }

    /// Replaces the configuration (hot reload); flow state is kept.
    pub fn reconfigure(&mut self, config: InspectConfig) {
        self.streams
            .set_bounds(config.max_flows, config.follow_bytes, config.follow_timeout);
        self.config = config;
    }

    /// HTTP requests dropped, cut or timed out while gathered across segments.
    pub fn stream_counts(&self) -> http::StreamCounts {
        self.streams.counts()
    }

    /// Reports the HTTP requests whose rest did not come in time (every one waiting, with
    /// `all`: at the end of a capture or at shutdown), as far as they got.
    pub fn expire(&mut self, at: Duration, all: bool) -> Vec<Event> {
        let mut events = Vec::new();
        for http::Gathered {
            key: (client, server),
            request,
        } in self.streams.expire(at, all)
        {
            let mut found = Vec::new();
            self.http(&request, &mut found);
            events.extend(found.into_iter().map(|kind| Event {
                at,
                client,
                server,
                kind,
            }));
        }
        events
    }

    /// Samples that held no TCP or UDP payload netwatch could decode.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Inspects one sampled frame seen at `at`.
    pub fn inspect(&mut self, frame: &[u8], at: Duration) -> Findings {
        let mut findings = Findings::default();
        let Some(decoded) = decode(frame) else {
            self.undecodable += 1;
            return findings;
        };
        let (client, server) = self.orient(&decoded);
        let from_client = client == decoded.src;
        let port = server.port();
        let payload = decoded.payload;
        let mut event = |kind| {
            findings.events.push(Event {
                at,
                client,
                server,
                kind,
            })
        };
        if port == 53 {
            // DNS over TCP puts a two-byte length first (RFC 1035 §4.2.2). Senders split it
            // from the message in odd ways (dns_tcp.pcapng has one length byte per segment),
            // so a segment may start with two, none or one of its bytes.
            let message = if decoded.tcp {
                [2, 0, 1]
                    .into_iter()
                    .find_map(|skip| payload.get(skip..).and_then(dns::parse))
            } else {
                dns::parse(payload)
            };
            if let Some(message) = message {
                let dns = EventKind::Dns {
                    name: message.name.clone(),
                    qtype: dns::type_name(message.qtype),
                    response: message.response,
                    rcode: message.response.then(|| dns::rcode_name(message.rcode)),
                    transport: if decoded.tcp { "tcp" } else { "udp" },
                };
                event(dns);
                if !message.response {
                    self.dns_tunnel(client.ip(), &message.name, at, &mut findings);
                }
            }
        } else if decoded.tcp {
            let key = (client, server);
            let mut found = Vec::new();
            let mut gathered = Vec::new();
            if port == 23 {
                // Telnet: the server's prompts say what the client's keystrokes are.
                self.telnet(key, from_client, payload, &mut found);
            } else if from_client {
                match port {
                    21 | 110 => self.user_pass(key, port, payload, &mut found),
                    143 => self.imap(key, payload, &mut found),
                    25 | 587 => self.smtp(key, payload, &mut found),
                    _ => {}
                }
                for http::Gathered { key, request } in
                    self.streams.segment(key, decoded.seq, payload, at)
                {
                    let mut kinds = Vec::new();
                    self.http(&request, &mut kinds);
                    // A flow pushed out of the table may be another's.
                    let (client, server) = key;
                    gathered.extend(kinds.into_iter().map(|kind| Event {
                        at,
                        client,
                        server,
                        kind,
                    }));
                }
            }
            if from_client && self.config.keywords.enabled {
                self.keywords(key, payload, &mut found);
            }
            findings.events.extend(gathered);
            findings.events.extend(found.into_iter().map(|kind| Event {
                at,
                client,
                server,
                kind,
            }));
        }
        findings
    }

    /// Closes an interval: DNS names seen per source and domain are counted and forgotten.
    pub fn end_interval(&mut self, at: Duration, elapsed: Duration) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let config = self.config.dns_tunnel;
        let counts: Vec<((IpAddr, String), usize)> = self
            .subdomains
            .drain()
            .map(|(key, names)| (key, names.len()))
            .collect();
        for ((source, domain), count) in counts {
            if config.enabled
                && count >= config.subdomains
                && let Some(alert) = self.tunnel_alert(
                    source,
                    &domain,
                    count as f64,
                    config.subdomains as f64,
                    at,
                    elapsed,
                )
            {
                alerts.push(alert);
            }
        }
        alerts.sort_by_key(|alert| alert.subject);
        self.quiet_until.retain(|_, until| *until > at);
        alerts
    }

    /// Client and server: the end on a sampled (well-known) port is the server.
    fn orient(&self, decoded: &Decoded<'_>) -> (SocketAddr, SocketAddr) {
        let ports = if decoded.tcp {
            &self.config.tcp_ports
        } else {
            &self.config.udp_ports
        };
        if !ports.contains(&decoded.dst.port()) && ports.contains(&decoded.src.port()) {
            (decoded.dst, decoded.src)
        } else {
            (decoded.src, decoded.dst)
        }
    }

    fn secret(&self, secret: &str) -> String {
        if self.config.show_secrets {
            secret.to_owned()
        } else {
            REDACTED.to_owned()
        }
    }

    fn set_flow(&mut self, key: FlowKey, state: FlowState) {
        if matches!(state, FlowState::Idle) {
            self.flows.remove(&key);
            return;
        }
        if self.flows.insert(key, state).is_none() {
            self.flow_order.push_back(key);
            while self.flows.len() > self.config.max_flows {
                let Some(oldest) = self.flow_order.pop_front() else {
                    break;
                };
                self.flows.remove(&oldest);
            }
        }
        // Keys of flows removed since are dropped from the order lazily.
        if self.flow_order.len() > 2 * self.config.max_flows.max(1) {
            let flows = &self.flows;
            self.flow_order.retain(|key| flows.contains_key(key));
        }
    }

    fn flow(&self, key: FlowKey) -> FlowState {
        self.flows.get(&key).cloned().unwrap_or_default()
    }

    /// FTP and POP3: USER then PASS.
    fn user_pass(&mut self, key: FlowKey, port: u16, payload: &[u8], found: &mut Vec<EventKind>) {
        let protocol = if port == 21 { "ftp" } else { "pop3" };
        for line in text::lines(payload) {
            let (word, rest) = text::command(line);
            match word.as_str() {
                "USER" if !rest.is_empty() => {
                    self.set_flow(key, FlowState::UserSent(rest.to_owned()))
                }
                "PASS" => {
                    let user = match self.flow(key) {
                        FlowState::UserSent(user) => Some(user),
                        _ => None,
                    };
                    // FTP's anonymous login sends an e-mail address as a courtesy, not a secret.
                    if port == 21 && user.as_deref().is_some_and(is_anonymous) {
                        self.set_flow(key, FlowState::Idle);
                        continue;
                    }
                    found.push(EventKind::Credential {
                        protocol,
                        mechanism: "USER/PASS",
                        user,
                        secret: self.secret(rest),
                    });
                    self.set_flow(key, FlowState::Idle);
                }
                "APOP" if port == 110 => {
                    if let Some((user, digest)) = rest.split_once(' ') {
                        found.push(EventKind::Credential {
                            protocol,
                            mechanism: "APOP",
                            user: Some(user.to_owned()),
                            secret: self.secret(digest.trim()),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Telnet (RFC 854): a login is the line the client types after the server's `login:`
    /// prompt, then the line after `Password:`. Clients send a keystroke or a line per
    /// segment; the line is gathered across samples (backspace and delete edit it), Telnet
    /// commands taken out.
    fn telnet(
        &mut self,
        key: FlowKey,
        from_client: bool,
        payload: &[u8],
        found: &mut Vec<EventKind>,
    ) {
        let data = text::telnet_data(payload);
        if !from_client {
            match text::telnet_prompt(&data) {
                Some(text::TelnetPrompt::User) => {
                    self.set_flow(key, FlowState::TelnetUser(String::new()));
                }
                Some(text::TelnetPrompt::Password) => {
                    let user = match self.flow(key) {
                        FlowState::TelnetUserTyped(user) => Some(user),
                        _ => None,
                    };
                    self.set_flow(key, FlowState::TelnetPassword(user, String::new()));
                }
                None => {}
            }
            return;
        }
        for byte in data {
            let (mut typed, password_for) = match self.flow(key) {
                FlowState::TelnetUser(typed) => (typed, None),
                FlowState::TelnetPassword(user, typed) => (typed, Some(user)),
                // Not at a prompt: nothing typed here is a login.
                _ => return,
            };
            match byte {
                b'\r' | b'\n' if typed.is_empty() => continue,
                b'\r' | b'\n' => {
                    match password_for {
                        None => self.set_flow(key, FlowState::TelnetUserTyped(typed)),
                        Some(user) => {
                            found.push(EventKind::Credential {
                                protocol: "telnet",
                                mechanism: "login",
                                user,
                                secret: self.secret(&typed),
                            });
                            self.set_flow(key, FlowState::Idle);
                        }
                    }
                    continue;
                }
                // Backspace and delete.
                0x08 | 0x7f => {
                    typed.pop();
                }
                0 => continue,
                _ if typed.len() >= TELNET_LINE_MAX => {
                    self.set_flow(key, FlowState::Idle);
                    return;
                }
                _ => typed.push(char::from(byte)),
            }
            let state = match password_for {
                None => FlowState::TelnetUser(typed),
                Some(user) => FlowState::TelnetPassword(user, typed),
            };
            self.set_flow(key, state);
        }
    }

    /// IMAP: `tag LOGIN user pass`, `tag AUTHENTICATE PLAIN [initial]`.
    fn imap(&mut self, key: FlowKey, payload: &[u8], found: &mut Vec<EventKind>) {
        for line in text::lines(payload) {
            if matches!(self.flow(key), FlowState::PlainPending) {
                self.sasl_plain_line(key, "imap", line, found);
                continue;
            }
            let Some((_tag, rest)) = line.split_once(' ') else {
                continue;
            };
            let (word, args) = text::command(rest);
            match word.as_str() {
                "LOGIN" => {
                    if let Some((user, rest)) = text::imap_astring(args)
                        && let Some((password, _)) = text::imap_astring(rest)
                    {
                        found.push(EventKind::Credential {
                            protocol: "imap",
                            mechanism: "LOGIN",
                            user: Some(user),
                            secret: self.secret(&password),
                        });
                    }
                }
                "AUTHENTICATE" => {
                    let (mechanism, initial) = text::command(args);
                    if mechanism == "PLAIN" {
                        if initial.is_empty() {
                            self.set_flow(key, FlowState::PlainPending);
                        } else {
                            self.sasl_plain_line(key, "imap", initial, found);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// SMTP: AUTH PLAIN and AUTH LOGIN (RFC 4954), over one or several client lines.
    fn smtp(&mut self, key: FlowKey, payload: &[u8], found: &mut Vec<EventKind>) {
        for line in text::lines(payload) {
            match self.flow(key) {
                FlowState::PlainPending => {
                    self.sasl_plain_line(key, "smtp", line, found);
                    continue;
                }
                FlowState::LoginUserPending => {
                    let user = text::base64_decode(line)
                        .map(|user| String::from_utf8_lossy(&user).into_owned());
                    match user {
                        Some(user) => self.set_flow(key, FlowState::LoginPasswordPending(user)),
                        None => self.set_flow(key, FlowState::Idle),
                    }
                    continue;
                }
                FlowState::LoginPasswordPending(user) => {
                    if let Some(password) = text::base64_decode(line) {
                        found.push(EventKind::Credential {
                            protocol: "smtp",
                            mechanism: "AUTH LOGIN",
                            user: Some(user),
                            secret: self.secret(&String::from_utf8_lossy(&password)),
                        });
                    }
                    self.set_flow(key, FlowState::Idle);
                    continue;
                }
                _ => {}
            }
            let (word, rest) = text::command(line);
            if word != "AUTH" {
                continue;
            }
            let (mechanism, initial) = text::command(rest);
            match (mechanism.as_str(), initial.is_empty()) {
                ("PLAIN", true) => self.set_flow(key, FlowState::PlainPending),
                ("PLAIN", false) => self.sasl_plain_line(key, "smtp", initial, found),
                ("LOGIN", true) => self.set_flow(key, FlowState::LoginUserPending),
                ("LOGIN", false) => {
                    let user = text::base64_decode(initial)
                        .map(|user| String::from_utf8_lossy(&user).into_owned());
                    if let Some(user) = user {
                        self.set_flow(key, FlowState::LoginPasswordPending(user));
                    }
                }
                _ => {}
            }
        }
    }

    fn sasl_plain_line(
        &mut self,
        key: FlowKey,
        protocol: &'static str,
        line: &str,
        found: &mut Vec<EventKind>,
    ) {
        self.set_flow(key, FlowState::Idle);
        if let Some((user, password)) = text::base64_decode(line)
            .as_deref()
            .and_then(text::sasl_plain)
        {
            found.push(EventKind::Credential {
                protocol,
                mechanism: "AUTH PLAIN",
                user: Some(user),
                secret: self.secret(&password),
            });
        }
    }

    fn http(&self, request: &text::HttpRequest, found: &mut Vec<EventKind>) {
        // A password in the query string (`GET /login?user=ivan&password=...`) is redacted
        // in the path as anywhere else, and reported as a credential.
        let (redacted_path, in_query) = text::query_credentials(&request.path, REDACTED);
        let path = if self.config.show_secrets {
            request.path.clone()
        } else {
            redacted_path
        };
        found.push(EventKind::Http {
            method: request.method.clone(),
            host: request.host.clone(),
            path,
            user_agent: request.user_agent.clone(),
        });
        let credential = |mechanism, user: Option<String>, secret: &str| EventKind::Credential {
            protocol: "http",
            mechanism,
            user,
            secret: self.secret(secret),
        };
        if let Some((user, password)) = in_query {
            found.push(credential("query", user, &password));
        }
        if let Some(authorization) = request.authorization.as_deref() {
            let (scheme, value) = authorization.split_once(' ').unwrap_or((authorization, ""));
            match scheme.to_ascii_lowercase().as_str() {
                "basic" => {
                    if let Some(decoded) = text::base64_decode(value) {
                        let decoded = String::from_utf8_lossy(&decoded).into_owned();
                        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
                        found.push(credential("Basic", Some(user.to_owned()), password));
                    }
                }
                // A token, not a password: whoever holds it is the user.
                "bearer" if !value.trim().is_empty() => {
                    found.push(credential("Bearer", None, value.trim()));
                }
                // A challenge response (RFC 7616): not the password, but what replays or
                // cracks it.
                "digest" => {
                    let params = text::digest_params(value);
                    let param = |wanted: &str| {
                        params
                            .iter()
                            .find(|(name, _)| name == wanted)
                            .map(|(_, value)| value.clone())
                    };
                    if let Some(response) = param("response") {
                        found.push(credential("Digest", param("username"), &response));
                    }
                }
                _ => {}
            }
        }
        let content_type = request
            .content_type
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let fields = if content_type.starts_with("application/x-www-form-urlencoded") {
            Some(("form", text::form_fields(&request.body)))
        } else if content_type.starts_with("multipart/form-data") {
            let original = request.content_type.as_deref().unwrap_or("");
            Some(("multipart", text::multipart_fields(original, &request.body)))
        } else {
            None
        };
        if let Some((mechanism, fields)) = fields {
            let user = fields
                .iter()
                .find(|(name, _)| text::is_user_field(name))
                .map(|(_, value)| value.clone());
            if let Some((_, password)) = fields
                .iter()
                .find(|(name, _)| text::is_password_field(name))
            {
                found.push(credential(mechanism, user, password));
            }
        } else if (content_type.contains("json") || request.body.first() == Some(&b'{'))
            && let Some((user, password)) = text::json_credentials(&request.body)
        {
            found.push(credential("json", user, &password));
        }
    }

    fn keywords(&mut self, key: FlowKey, payload: &[u8], found: &mut Vec<EventKind>) {
        let lower = payload.to_ascii_lowercase();
        for word in &self.config.keywords.words {
            let needle = word.to_ascii_lowercase();
            if needle.is_empty() || !lower.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                continue;
            }
            // Once per flow and keyword: the point is to see the flow, not every packet.
            if self.keywords_seen.len() < self.config.max_flows
                && self.keywords_seen.insert((key, needle.clone()))
            {
                found.push(EventKind::Keyword {
                    keyword: word.clone(),
                });
            }
        }
    }

    fn dns_tunnel(&mut self, source: IpAddr, name: &str, at: Duration, findings: &mut Findings) {
        let config = self.config.dns_tunnel;
        if !config.enabled {
            return;
        }
        let domain = dns::base_domain(name).to_owned();
        let long = name.len() >= config.max_name_len;
        let random = name.split('.').find(|label| {
            label.len() >= config.min_label_len && dns::entropy(label) >= config.entropy_bits
        });
        let subdomain = name
            .strip_suffix(domain.as_str())
            .unwrap_or(name)
            .trim_end_matches('.')
            .to_owned();
        if !subdomain.is_empty() {
            let names = self.subdomains.entry((source, domain.clone())).or_default();
            // Bounded: past the alert threshold more names add nothing.
            if names.len() <= config.subdomains {
                names.insert(subdomain);
            }
        }
        let (observed, threshold) = if long {
            (name.len() as f64, config.max_name_len as f64)
        } else if let Some(label) = random {
            (dns::entropy(label), config.entropy_bits)
        } else {
            return;
        };
        if let Some(alert) =
            self.tunnel_alert(source, &domain, observed, threshold, at, Duration::ZERO)
        {
            findings.alerts.push(alert);
        }
    }

    fn tunnel_alert(
        &mut self,
        source: IpAddr,
        domain: &str,
        observed: f64,
        threshold: f64,
        at: Duration,
        interval: Duration,
    ) -> Option<Alert> {
        let key = (source, domain.to_owned());
        if self.quiet_until.get(&key).is_some_and(|until| at < *until) {
            return None;
        }
        self.quiet_until
            .insert(key, at + self.config.dns_tunnel.quiet);
        let id = format!("{}-i{}", self.run, self.next_id);
        self.next_id += 1;
        Some(Alert {
            id,
            kind: AlertKind::DnsTunnel,
            state: AlertState::Instant,
            severity: Severity::Warning,
            subject: Subject::Source(source),
            observed,
            baseline: None,
            threshold,
            at,
            interval,
            started: at.saturating_sub(interval),
            peak: observed,
            packets: 0,
            bytes: 0,
            detail: Some(format!("domain {domain}")),
            contributors: Vec::new(),
            attack: None,
            members: None,
            slotless: None,
        })
    }
}

fn is_anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

/// The TCP or UDP payload of a frame, with its endpoints.
fn decode(frame: &[u8]) -> Option<Decoded<'_>> {
    let packet = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst) = match packet.net.as_ref()? {
        LaxNetSlice::Ipv4(ip) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        LaxNetSlice::Ipv6(ip) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        LaxNetSlice::Arp(_) => return None,
    };
    let (src_port, dst_port, tcp, seq, payload) = match packet.transport? {
        TransportSlice::Tcp(tcp) => (
            tcp.source_port(),
            tcp.destination_port(),
            true,
            tcp.sequence_number(),
            tcp.payload(),
        ),
        TransportSlice::Udp(udp) => (
            udp.source_port(),
            udp.destination_port(),
            false,
            0,
            udp.payload(),
        ),
        _ => return None,
    };
    (!payload.is_empty()).then_some(Decoded {
        src: SocketAddr::new(src, src_port),
        dst: SocketAddr::new(dst, dst_port),
        tcp,
        seq,
        payload,
    })
}

#[cfg(test)]
mod tests;
