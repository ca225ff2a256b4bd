//! The [`Inspector`]: the state inspection keeps between samples, and its entry points. A
//! sampled frame goes in ([`Inspector::inspect`]), its [`Findings`] come out; the end of an
//! interval gives the DNS tunnelling alerts ([`Inspector::end_interval`]); HTTP requests
//! gathered across segments are reported when they time out ([`Inspector::expire`]).
//!
//! Owns the decoding of a frame to its endpoints and payload, which end is the server, the
//! order of the protocols on one sample, the table of flow states and its bound, the HTTP
//! streams, the keyword matcher and the DNS tunnelling heuristics. It must not read a
//! credential itself (the credential decoders do, from the flow states it keeps), nor parse
//! a protocol's messages (`dns`, `http` and `text` do). Reads no clock.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use super::{
    config::InspectConfig,
    dns,
    event::{Event, EventKind, Findings},
    flow::{FlowKey, FlowState},
    http,
};
use crate::detect::alert::{Alert, AlertKind, AlertState, Severity, Subject};

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
    pub(super) config: InspectConfig,
    pub(super) flows: HashMap<FlowKey, FlowState>,
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
                    cnames: message.cnames.clone(),
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

    pub(super) fn set_flow(&mut self, key: FlowKey, state: FlowState) {
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

    pub(super) fn flow(&self, key: FlowKey) -> FlowState {
        self.flows.get(&key).cloned().unwrap_or_default()
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
            victims: Vec::new(),
            capture: None,
            intel: None,
            context: Default::default(),
            by_as: Vec::new(),
        })
    }
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
