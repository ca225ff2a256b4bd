//! The protocol: the request line, the answers (status, ban events, lists, errors) and
//! their JSON, and the checks of a ban request. Plain data and functions, below the server,
//! the shared state and the client.

use std::{
    collections::VecDeque,
    io::{self, Write as _},
    os::unix::net::UnixStream,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    datapath::{RuleAction, RuleProtocol},
    detect::cidr::{Cidr, CidrError},
    evidence::CaptureSubject,
    mitigate::{
        Ban, BanEvent, BanRefusal, BanTtlError, MitigateMode, RuleEvent, RuleInForce, Signature,
        check_ban_ttl,
    },
    report::{self, rfc3339},
};

/// The protocol's version: the `version` of every request and answer.
pub const PROTOCOL_VERSION: u32 = 1;

/// Subscribers at once: fewer than the clients, so that `status` and `ban` always find room.
pub(super) const MAX_SUBSCRIBERS: usize = MAX_CLIENTS - 8;

/// Clients served at once (subscribers included); more are answered `busy` and closed.
pub(super) const MAX_CLIENTS: usize = 64;

/// How long a client has to send its request line.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one write to a subscriber may block before it is given up on.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest request line read.
pub(super) const MAX_REQUEST: u64 = 4096;

/// A request line.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// `status`, `subscribe`, `ban_add`, `ban_remove`, `ban_list`, `rule_list`, `rule_add`,
    /// `rule_remove` or `capture`.
    pub request: String,
    /// For `ban_add` and `ban_remove`: the network (`ADDR` or `ADDR/LEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For `ban_add`: how long, in seconds (`mitigate.manual_ttl` without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
    /// For `ban_add`: why, in the user's words (at most [`MAX_REASON`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `rule_remove`: the rule's index (`netwatch mitigate list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// For `rule_add`: the rule (with `ttl_s`, else `mitigate.manual_ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleSpec>,
    /// For `capture`: whose frames, for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureRequest>,
}

/// A capture asked for on the socket, as `netwatch capture` sends it: a source (a host or a
/// prefix) or a destination, for a time.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Frames from this network: `ADDR` or `ADDR/LEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Frames to this network: `ADDR` or `ADDR/LEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// How long, in seconds ([`CAPTURE_DURATION`]; 10 s without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// The shortest and the longest capture by hand.
pub const CAPTURE_DURATION: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3_600);

/// A signature rule asked for on the socket, as `netwatch mitigate add` sends it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The destination network: `ADDR` or `ADDR/LEN`.
    pub destination: String,
    /// `tcp`, `udp`, `icmp` or `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The transport source port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// The transport destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    /// TCP SYN without ACK only.
    #[serde(default)]
    pub tcp_syn: bool,
    /// IP fragments only.
    #[serde(default)]
    pub fragments: bool,
    /// Rate-limit to this many packets a second; drop without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_pps: Option<u32>,
    /// Ask the upstream routers to blackhole the destination too.
    #[serde(default)]
    pub rtbh: bool,
}

/// Longest reason of a ban asked for on the socket, in characters.
pub const MAX_REASON: usize = 200;

/// How long a ban request waits for the daemon's answer.
pub(super) const BAN_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client of the control socket asks of the bans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanOp {
    /// Ban a network (a host as /32 or /128) for a time, with a reason.
    Add {
        /// The network.
        net: Cidr,
        /// How long; `mitigate.manual_ttl` without.
        ttl: Option<Duration>,
        /// Why, in the user's words.
        reason: Option<String>,
    },
    /// Lift the ban of exactly this network.
    Remove {
        /// The network.
        net: Cidr,
    },
    /// The bans in force.
    List,
    /// The signature rules in force.
    RuleList,
    /// End the signature rule of this index now.
    RuleRemove {
        /// Its index.
        index: u32,
    },
    /// Set a signature rule by hand.
    RuleAdd {
        /// What it matches.
        signature: Signature,
        /// What it does.
        action: RuleAction,
        /// Blackhole the destination upstream too.
        rtbh: bool,
        /// How long; `mitigate.manual_ttl` without.
        ttl: Option<Duration>,
    },
    /// Capture a subject's frames for a time.
    Capture {
        /// Whose.
        subject: CaptureSubject,
        /// How long.
        duration: Duration,
    },
}

/// What the daemon made of a [`BanOp`], for its answer.
#[derive(Debug)]
pub enum BanAnswer {
    /// The ban or unban done.
    Event(BanEvent),
    /// The bans in force, under the mode.
    List {
        /// The mode of mitigation.
        mode: MitigateMode,
        /// The bans.
        bans: Vec<Ban>,
    },
    /// Refused, and why.
    Refused(BanRefusal),
    /// The signature rules in force, under the mode.
    Rules {
        /// The mode of mitigation.
        mode: MitigateMode,
        /// The rules.
        rules: Vec<RuleInForce>,
    },
    /// A signature rule ended by hand.
    Rule(RuleEvent),
    /// A rule request refused, and why.
    RuleRefused(String),
    /// A capture begun: its file and its end.
    Capture {
        /// The pcapng file.
        file: std::path::PathBuf,
        /// When it ends, since the Unix epoch.
        until: Duration,
    },
}

impl BanAnswer {
    /// The answer's line: the ban event as the JSON output writes it, the list, or an error.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Event(event) => {
                let mut line = Vec::new();
                let mut answer = report::ban::write_json(&mut line, event)
                    .ok()
                    .and_then(|()| serde_json::from_slice::<serde_json::Value>(&line).ok())
                    .unwrap_or_else(|| serde_json::json!({}));
                answer["version"] = serde_json::json!(PROTOCOL_VERSION);
                answer
            }
            Self::List { mode, bans } => {
                let bans: Vec<serde_json::Value> = bans
                    .iter()
                    .map(|ban| {
                        serde_json::json!({
                            "subject": ban.terms.net.to_string(),
                            "origin": ban.terms.origin.name(),
                            "reason": ban.terms.reason,
                            "alert": ban.terms.alert,
                            "iface": ban.terms.iface,
                            "created": rfc3339(std::time::UNIX_EPOCH + ban.terms.created),
                            "expires": rfc3339(std::time::UNIX_EPOCH + ban.terms.expires),
                            "ttl_s": ban.terms.expires.saturating_sub(ban.terms.created).as_secs(),
                            "offence": ban.terms.offence,
                            "packets": ban.packets,
                            "bytes": ban.bytes,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "version": PROTOCOL_VERSION,
                    "type": "bans",
                    "mode": mode,
                    "bans": bans,
                })
            }
            Self::Refused(refusal) => error(&refusal.to_string()),
            Self::Rules { mode, rules } => serde_json::json!({
                "version": PROTOCOL_VERSION,
                "type": "rules",
                "mode": mode,
                "rules": rules.iter().map(report::rule::rule_value).collect::<Vec<_>>(),
            }),
            Self::Rule(event) => {
                let mut line = Vec::new();
                let mut answer = report::rule::write_json(&mut line, event)
                    .ok()
                    .and_then(|()| serde_json::from_slice::<serde_json::Value>(&line).ok())
                    .unwrap_or_else(|| serde_json::json!({}));
                answer["version"] = serde_json::json!(PROTOCOL_VERSION);
                answer
            }
            Self::RuleRefused(why) => error(why),
            Self::Capture { file, until } => serde_json::json!({
                "version": PROTOCOL_VERSION,
                "type": "capture",
                "file": file.display().to_string(),
                "until": rfc3339(std::time::UNIX_EPOCH + *until),
            }),
        }
    }
}

/// One attached interface, as `status` lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Its name.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// `driver` or `skb`.
    pub mode: String,
    /// `per-cpu` or `shared`.
    pub source_map: String,
    /// Slots for sources.
    pub max_sources: u32,
    /// `attached`, or `gone` while the interface is away (deleted, unplugged).
    pub state: String,
}

/// What the daemon counted, as of the last interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Packets since the start.
    pub packets: u64,
    /// Bytes since the start.
    pub bytes: u64,
    /// Packets per second in the last interval.
    pub pps: f64,
    /// Bits per second in the last interval.
    pub bps: f64,
    /// Sources holding a slot.
    pub sources_tracked: u64,
    /// Frames counted in no source since the start: non-IP, malformed, without a slot
    /// (overflow), and IP frames shorter than their header says (truncated).
    pub non_ip: u64,
    /// See `non_ip`.
    pub malformed: u64,
    /// See `non_ip`.
    pub overflow: u64,
    /// See `non_ip`.
    pub truncated: u64,
}

/// The store's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStatus {
    /// Records waiting in memory for the store (a full disk).
    pub waiting: u64,
    /// Records dropped because the writer was behind.
    pub dropped: u64,
    /// Records lost to refused writes.
    pub failed: u64,
}

/// The webhooks' state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookStatus {
    /// URLs configured.
    pub urls: usize,
    /// Records queued for them.
    pub queued: u64,
    /// URLs failing right now.
    pub down: u64,
}

/// The answer to `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// `status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The daemon's process id.
    pub pid: u32,
    /// netwatch's version.
    pub netwatch: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// Seconds since.
    pub uptime_s: f64,
    /// The collection interval.
    pub interval_ms: u64,
    /// The interfaces it is attached to.
    pub interfaces: Vec<InterfaceStatus>,
    /// What it counted.
    pub counts: Counts,
    /// The last alert lines, oldest first, as JSON objects.
    pub last_alerts: VecDeque<serde_json::Value>,
    /// The store.
    pub store: StoreStatus,
    /// The webhooks.
    pub webhook: WebhookStatus,
    /// Subscribers connected now.
    pub subscribers: usize,
    /// Subscribers dropped for falling behind, since the start.
    pub subscribers_dropped: u64,
}

/// The answer of a daemon serving as many clients (or subscribers) as it takes: `busy`,
/// which clients tell apart from every other error (no daemon, a refusal).
pub(super) fn busy(why: &str) -> serde_json::Value {
    serde_json::json!({
        "version": PROTOCOL_VERSION,
        "type": "busy",
        "error": format!("the daemon is busy: {why}; try again"),
    })
}

/// Why [`busy`]: at the client limit.
pub(super) fn too_many_clients() -> String {
    format!("it serves {MAX_CLIENTS} clients at once (subscribers, status, bans)")
}

/// Why [`busy`]: at the subscriber limit.
pub(super) fn too_many_subscribers() -> String {
    format!(
        "it has {MAX_SUBSCRIBERS} subscribers, the most it takes (status and ban still have room)"
    )
}

pub(super) fn error(reason: &str) -> serde_json::Value {
    serde_json::json!({"version": PROTOCOL_VERSION, "type": "error", "error": reason})
}

pub(super) fn write_line(stream: &mut UnixStream, value: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Why a ban request was refused before it reached the mitigator: the `error` of the answer.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(super) enum BanOpError {
    /// `ban_add` or `ban_remove` without a subject.
    #[error("{0} needs a subject (ADDR or ADDR/LEN)")]
    NoSubject(String),
    /// A subject that is not a network: what [`Cidr`]'s parser said.
    #[error(transparent)]
    Subject(#[from] CidrError),
    /// A `ttl_s` that is no length of time.
    #[error("ttl_s {0} is not a length of time in seconds")]
    TtlSeconds(f64),
    /// A TTL out of a ban's bounds.
    #[error(transparent)]
    Ttl(#[from] BanTtlError),
    /// A reason longer than [`MAX_REASON`] characters.
    #[error("reason is longer than {max} characters", max = MAX_REASON)]
    ReasonTooLong,
    /// `rule_remove` without an index.
    #[error("rule_remove needs an index (netwatch mitigate list)")]
    NoIndex,
    /// `rule_add` without a rule.
    #[error("rule_add needs a rule (at least its destination)")]
    NoRule,
    /// A rule's protocol that is none of the four.
    #[error("protocol {0:?}: tcp, udp, icmp or other")]
    Protocol(String),
    /// A rule whose fields contradict each other.
    #[error("{0}")]
    Rule(&'static str),
    /// `capture` without a source or a destination, or with both.
    #[error("capture needs a source or a destination (one of them)")]
    NoCapture,
    /// A capture's duration out of bounds.
    #[error("duration_s {0} is not 1 to 3600 seconds")]
    CaptureDuration(f64),
}

/// The ban operation a request asks for, checked.
pub(super) fn ban_op(request: &Request) -> Result<BanOp, BanOpError> {
    match request.request.as_str() {
        "ban_list" => return Ok(BanOp::List),
        "rule_list" => return Ok(BanOp::RuleList),
        "rule_remove" => {
            return request
                .index
                .map(|index| BanOp::RuleRemove { index })
                .ok_or(BanOpError::NoIndex);
        }
        "rule_add" => return rule_add(request),
        "capture" => return capture(request),
        _ => {}
    }
    let subject = request
        .subject
        .as_deref()
        .ok_or_else(|| BanOpError::NoSubject(request.request.clone()))?;
    // Raw in the JSON answer: the client escapes what it prints, once.
    let net = subject.parse::<Cidr>().map_err(BanOpError::Subject)?;
    if request.request == "ban_remove" {
        return Ok(BanOp::Remove { net });
    }
    let ttl = match request.ttl_s {
        None => None,
        Some(seconds) => Some(check_ban_ttl(
            Duration::try_from_secs_f64(seconds).map_err(|_| BanOpError::TtlSeconds(seconds))?,
        )?),
    };
    let reason = match &request.reason {
        Some(reason) if reason.chars().count() > MAX_REASON => {
            return Err(BanOpError::ReasonTooLong);
        }
        reason => reason.clone(),
    };
    Ok(BanOp::Add { net, ttl, reason })
}

/// A `capture` request, checked: a source or a destination (one of them), a network, a
/// duration within [`CAPTURE_DURATION`].
fn capture(request: &Request) -> Result<BanOp, BanOpError> {
    let spec = request.capture.as_ref().ok_or(BanOpError::NoCapture)?;
    let subject = match (&spec.source, &spec.destination) {
        (Some(source), None) => CaptureSubject::Source(source.parse::<Cidr>()?),
        (None, Some(destination)) => {
            CaptureSubject::Destination(destination.parse::<Cidr>()?, None)
        }
        _ => return Err(BanOpError::NoCapture),
    };
    let duration = match spec.duration_s {
        None => Duration::from_secs(10),
        Some(seconds) => Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|duration| CAPTURE_DURATION.contains(duration))
            .ok_or(BanOpError::CaptureDuration(seconds))?,
    };
    Ok(BanOp::Capture { subject, duration })
}

/// A `rule_add` request, checked: the destination a network, the protocol one of the four,
/// ports only with TCP or UDP (or no protocol), SYN only with TCP, a rate of 1 or more, a
/// TTL within a ban's bounds.
fn rule_add(request: &Request) -> Result<BanOp, BanOpError> {
    let spec = request.rule.as_ref().ok_or(BanOpError::NoRule)?;
    let destination = spec.destination.parse::<Cidr>()?;
    let protocol = match spec.protocol.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse::<RuleProtocol>()
                .map_err(|()| BanOpError::Protocol(name.to_owned()))?,
        ),
    };
    let ports = spec.source_port.is_some() || spec.destination_port.is_some();
    if ports && matches!(protocol, Some(RuleProtocol::Icmp | RuleProtocol::Other)) {
        return Err(BanOpError::Rule("ports need tcp or udp"));
    }
    if spec.tcp_syn && protocol.is_some_and(|protocol| protocol != RuleProtocol::Tcp) {
        return Err(BanOpError::Rule("a SYN is tcp"));
    }
    let action = match spec.rate_pps {
        None => RuleAction::Drop,
        Some(0) => return Err(BanOpError::Rule("rate_pps must be at least 1")),
        Some(pps) => RuleAction::RateLimit { pps },
    };
    let ttl = match request.ttl_s {
        None => None,
        Some(seconds) => Some(check_ban_ttl(
            Duration::try_from_secs_f64(seconds).map_err(|_| BanOpError::TtlSeconds(seconds))?,
        )?),
    };
    Ok(BanOp::RuleAdd {
        signature: Signature {
            destination,
            protocol: if spec.tcp_syn {
                Some(RuleProtocol::Tcp)
            } else {
                protocol
            },
            src_port: spec.source_port,
            dst_port: spec.destination_port,
            syn: spec.tcp_syn,
            fragment: spec.fragments,
        },
        action,
        rtbh: spec.rtbh,
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban_error(
        request: &str,
        subject: Option<&str>,
        ttl_s: Option<f64>,
        reason: usize,
    ) -> String {
        let request = Request {
            version: PROTOCOL_VERSION,
            request: request.to_owned(),
            subject: subject.map(str::to_owned),
            ttl_s,
            reason: (reason > 0).then(|| "x".repeat(reason)),
            index: None,
            rule: None,
            capture: None,
        };
        match ban_op(&request) {
            Ok(op) => panic!("accepted: {op:?}"),
            Err(err) => err.to_string(),
        }
    }

    /// The answers' `error` texts, as clients and scripts see them.
    #[test]
    fn a_bad_ban_request_says_why() {
        for (error, expected) in [
            (
                ban_error("ban_remove", None, None, 0),
                "ban_remove needs a subject (ADDR or ADDR/LEN)",
            ),
            (
                ban_error("ban_add", Some("10.0.0.1/8"), None, 0),
                "\"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?",
            ),
            (
                ban_error("ban_add", Some("192.0.2.1"), Some(-1.5), 0),
                "ttl_s -1.5 is not a length of time in seconds",
            ),
            (
                ban_error("ban_add", Some("192.0.2.1"), Some(0.5), 0),
                "a ban lasts 1s to 8784h (a leap year); 500ms is out of that",
            ),
            (
                ban_error("ban_add", Some("192.0.2.1"), None, MAX_REASON + 1),
                "reason is longer than 200 characters",
            ),
            (
                ban_error("rule_remove", None, None, 0),
                "rule_remove needs an index (netwatch mitigate list)",
            ),
            (
                ban_error("rule_add", None, None, 0),
                "rule_add needs a rule (at least its destination)",
            ),
        ] {
            assert_eq!(error, expected);
        }
        let rule_error = |spec: RuleSpec| match ban_op(&Request {
            version: PROTOCOL_VERSION,
            request: String::from("rule_add"),
            rule: Some(spec),
            ..Request::default()
        }) {
            Ok(op) => panic!("accepted: {op:?}"),
            Err(err) => err.to_string(),
        };
        let spec = |destination: &str| RuleSpec {
            destination: destination.to_owned(),
            ..RuleSpec::default()
        };
        assert_eq!(
            rule_error(spec("192.0.2.5/24")),
            "\"192.0.2.5/24\" has host bits set; did you mean 192.0.2.0/24?"
        );
        assert_eq!(
            rule_error(RuleSpec {
                protocol: Some(String::from("sctp")),
                ..spec("192.0.2.5")
            }),
            "protocol \"sctp\": tcp, udp, icmp or other"
        );
        assert_eq!(
            rule_error(RuleSpec {
                protocol: Some(String::from("icmp")),
                source_port: Some(123),
                ..spec("192.0.2.5")
            }),
            "ports need tcp or udp"
        );
        assert_eq!(
            rule_error(RuleSpec {
                protocol: Some(String::from("udp")),
                tcp_syn: true,
                ..spec("192.0.2.5")
            }),
            "a SYN is tcp"
        );
        assert_eq!(
            rule_error(RuleSpec {
                rate_pps: Some(0),
                ..spec("192.0.2.5")
            }),
            "rate_pps must be at least 1"
        );
    }

    /// A capture request names one side, a network, a duration within bounds; each mistake
    /// is one line.
    #[test]
    fn capture_requests_are_checked() {
        let capture = |source: Option<&str>, destination: Option<&str>, duration_s| {
            ban_op(&Request {
                version: PROTOCOL_VERSION,
                request: String::from("capture"),
                capture: Some(CaptureRequest {
                    source: source.map(str::to_owned),
                    destination: destination.map(str::to_owned),
                    duration_s,
                }),
                ..Request::default()
            })
            .map_err(|err| err.to_string())
        };
        match capture(Some("198.51.100.0/24"), None, None) {
            Ok(BanOp::Capture { subject, duration }) => {
                assert_eq!(subject.to_string(), "from 198.51.100.0/24");
                assert_eq!(duration, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        for (source, destination, duration, error) in [
            (None, None, None, "needs a source or a destination"),
            (Some("1.2.3.4"), Some("5.6.7.8"), None, "one of them"),
            (Some("1.2.3.4/8"), None, None, "1.2.3.4/8"),
            (None, Some("192.0.2.5"), Some(0.5), "duration_s 0.5"),
            (None, Some("192.0.2.5"), Some(7200.0), "duration_s 7200"),
        ] {
            let got = capture(source, destination, duration).unwrap_err();
            assert!(got.contains(error), "{got}");
        }
    }
}
