//! The [`IntelWatch`]: what an indicator feed says of the traffic. The decoders' events are
//! matched as they come (a DNS name and the names its answer's CNAME records lead to, an HTTP
//! host, URL and user agent, against the domains, URLs and user agents listed; the server
//! against the addresses), and each interval's matches in the kernel (the frames from or to
//! a listed network, per local host), so that traffic from or to a listed address is seen
//! with no payload and no sampled port. A match is an `intel` alert, once per local host and
//! indicator per `repeat_after`, with the matches in between counted in the next one, so
//! that a beaconing host does not bury the console.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use super::feed::{Feed, Indicator};
use crate::{
    collect::Interval,
    datapath::{IntelHit, IntelSide},
    detect::alert::{Alert, AlertKind, AlertState, IntelMatch, Severity, Subject},
    inspect::{Event, EventKind},
};

/// (Local host, indicator) pairs remembered at most; past it the oldest are
/// forgotten (an alert again for them is the cost).
const REMEMBERED: usize = 65_536;

/// Matches the traffic against a feed and says so, without repeating itself.
#[derive(Debug)]
pub struct IntelWatch {
    feed: Feed,
    repeat_after: Duration,
    /// Per (host, indicator): when it was last said, and the matches since.
    said: HashMap<(IpAddr, String), (Duration, u64)>,
    run: String,
    next_id: u64,
}

impl IntelWatch {
    /// A watch over `feed`; alert ids start with `run`.
    pub fn new(feed: Feed, repeat_after: Duration, run: String) -> Self {
        Self {
            feed,
            repeat_after,
            said: HashMap::new(),
            run,
            next_id: 0,
        }
    }

    /// A new feed (a reload): what was said stays said.
    pub fn set_feed(&mut self, feed: Feed, repeat_after: Duration) {
        self.feed = feed;
        self.repeat_after = repeat_after;
    }

    /// The alerts an event calls for.
    pub fn event(&mut self, event: &Event, at: Duration) -> Vec<Alert> {
        if self.feed.is_empty() {
            return Vec::new();
        }
        let host = event.client.ip();
        let mut found: Vec<(Indicator, &'static str, String)> = Vec::new();
        match &event.kind {
            EventKind::Dns { name, cnames, .. } => {
                if let Some(indicator) = self.feed.domain(name) {
                    found.push((indicator.clone(), "dns_name", name.clone()));
                }
                // The names an answer leads to: a listed domain behind an innocent one.
                for target in cnames {
                    if let Some(indicator) = self.feed.domain(target) {
                        found.push((indicator.clone(), "dns_cname", target.clone()));
                    }
                }
            }
            EventKind::Http {
                host: http_host,
                path,
                user_agent,
                ..
            } => {
                if let Some(http_host) = http_host {
                    let bare = http_host
                        .rsplit_once(':')
                        .filter(|(_, port)| port.parse::<u16>().is_ok())
                        .map_or(http_host.as_str(), |(name, _)| name);
                    if let Some(indicator) = self.feed.url(bare, path) {
                        found.push((indicator.clone(), "url", format!("{bare}{path}")));
                    } else if let Some(indicator) = self.feed.domain(bare) {
                        found.push((indicator.clone(), "http_host", bare.to_owned()));
                    }
                }
                if let Some(agent) = user_agent
                    && let Some(indicator) = self.feed.software(agent)
                {
                    found.push((indicator.clone(), "user_agent", agent.clone()));
                }
            }
            EventKind::Credential { .. } | EventKind::Keyword { .. } => {}
        }
        // The server itself may be listed.
        if let Some(indicator) = self.feed.address(event.server.ip()) {
            found.push((
                indicator.clone(),
                "destination",
                event.server.ip().to_string(),
            ));
        }
        found
            .into_iter()
            .filter_map(|(indicator, seen, value)| {
                self.matched(host, &indicator, seen, value, at, 1)
            })
            .collect()
    }

    /// The alerts an interval's matches in the kernel call for: each listed network's frames
    /// with a peer (the local host), whatever they carry.
    pub fn interval(&mut self, interval: &Interval, at: Duration) -> Vec<Alert> {
        if !self.feed.has_networks() {
            return Vec::new();
        }
        let found: Vec<(IntelHit, Indicator)> = interval
            .intel
            .hits
            .iter()
            .filter_map(|hit| {
                let (addr, len) = hit.network;
                self.feed
                    .network(addr, len)
                    .or_else(|| self.feed.address(hit.example))
                    .map(|indicator| (*hit, indicator.clone()))
            })
            .collect();
        found
            .into_iter()
            .filter_map(|(hit, indicator)| {
                let seen = match hit.side {
                    IntelSide::Source => "source",
                    IntelSide::Destination => "destination",
                };
                let mut alert = self.matched(
                    hit.peer,
                    &indicator,
                    seen,
                    hit.example.to_string(),
                    at,
                    hit.traffic.packets,
                )?;
                // A listed source is the alert's subject (what a ban would be of); the local
                // host it reached stays in `intel.host`.
                if hit.side == IntelSide::Source {
                    alert.subject = Subject::Source(hit.example);
                }
                alert.packets = hit.traffic.packets;
                alert.bytes = hit.traffic.bytes;
                Some(alert)
            })
            .collect()
    }

    /// One match: an alert unless the same was said within `repeat_after`.
    fn matched(
        &mut self,
        host: IpAddr,
        indicator: &Indicator,
        seen: &'static str,
        value: String,
        at: Duration,
        matches: u64,
    ) -> Option<Alert> {
        if self.said.len() >= REMEMBERED {
            let repeat = self.repeat_after;
            self.said
                .retain(|_, (last, _)| at.saturating_sub(*last) < repeat);
            if self.said.len() >= REMEMBERED {
                self.said.clear();
            }
        }
        let key = (host, indicator.value.clone());
        let entry = self.said.entry(key).or_insert((Duration::ZERO, 0));
        entry.1 += matches;
        if entry.0 != Duration::ZERO && at.saturating_sub(entry.0) < self.repeat_after {
            return None;
        }
        let matches = entry.1;
        *entry = (at, 0);
        self.next_id += 1;
        Some(Alert {
            id: format!("{}-i{}", self.run, self.next_id),
            kind: AlertKind::Intel,
            state: AlertState::Instant,
            severity: Severity::Critical,
            subject: Subject::Source(host),
            observed: matches as f64,
            baseline: None,
            threshold: 1.0,
            at,
            interval: Duration::ZERO,
            started: at,
            peak: matches as f64,
            packets: 0,
            bytes: 0,
            detail: Some(format!(
                "{} {} ({}) seen as {seen}: {}{}",
                indicator.kind.name(),
                indicator.value,
                indicator.source,
                indicator.desc,
                if matches > 1 {
                    format!("; {matches} matches since it was last said")
                } else {
                    String::new()
                }
            )),
            contributors: Vec::new(),
            attack: None,
            members: None,
            slotless: None,
            victims: Vec::new(),
            capture: None,
            intel: Some(IntelMatch {
                indicator: indicator.value.clone(),
                indicator_type: indicator.kind.name(),
                seen,
                value,
                feed: indicator.source.to_string(),
                desc: indicator.desc.to_string(),
                host: Some(host),
                matches,
            }),
            context: Default::default(),
            by_as: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::intel::feed::parse;

    fn watch() -> IntelWatch {
        let (indicators, _) = parse(
            "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n\
             evil.example\tIntel::DOMAIN\tabuse.ch\tloader\n\
             198.51.100.0/24\tIntel::SUBNET\tfeodo\tC2 range\n",
        );
        IntelWatch::new(
            Feed::new(indicators),
            Duration::from_secs(3600),
            String::from("r"),
        )
    }

    fn dns(name: &str) -> Event {
        Event {
            at: Duration::from_secs(10),
            client: "10.0.0.5:5353".parse::<SocketAddr>().unwrap(),
            server: "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
            kind: EventKind::Dns {
                name: name.to_owned(),
                qtype: String::from("A"),
                response: false,
                rcode: None,
                cnames: Vec::new(),
                transport: "udp",
            },
        }
    }

    /// A subdomain of a listed domain alerts once per host and indicator within the hour,
    /// the next alert counting the matches in between; an unlisted name nothing.
    #[test]
    fn a_host_beaconing_is_said_once_an_hour_with_its_count() {
        let mut watch = watch();
        let secs = Duration::from_secs;
        let first = watch.event(&dns("x.evil.example"), secs(10));
        assert_eq!(first.len(), 1);
        let intel = first[0].intel.clone().unwrap();
        assert_eq!(
            (
                intel.indicator.as_str(),
                intel.seen,
                intel.feed.as_str(),
                intel.matches
            ),
            ("evil.example", "dns_name", "abuse.ch", 1)
        );
        assert_eq!(intel.host, Some("10.0.0.5".parse().unwrap()));
        for minute in 1..60 {
            assert!(
                watch
                    .event(&dns("y.evil.example"), secs(10 + minute * 60))
                    .is_empty()
            );
        }
        assert!(watch.event(&dns("good.example"), secs(20)).is_empty());
        let again = watch.event(&dns("x.evil.example"), secs(3_610));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].intel.as_ref().map(|i| i.matches), Some(60));
    }

    /// An answer whose CNAME leads to a listed domain alerts, for its client, as `dns_cname`;
    /// one whose chain stays clean does not.
    #[test]
    fn a_cname_to_a_listed_domain_is_matched() {
        let mut watch = watch();
        let answer = |cnames: &[&str]| {
            let mut event = dns("www.shop.example");
            if let EventKind::Dns {
                response,
                cnames: targets,
                ..
            } = &mut event.kind
            {
                *response = true;
                *targets = cnames.iter().map(|name| (*name).to_owned()).collect();
            }
            event
        };
        assert!(
            watch
                .event(&answer(&["shop.cdn.example"]), Duration::from_secs(5))
                .is_empty()
        );
        let alerts = watch.event(
            &answer(&["shop.cdn.example", "edge.evil.example"]),
            Duration::from_secs(6),
        );
        assert_eq!(alerts.len(), 1);
        let intel = alerts[0].intel.clone().unwrap();
        assert_eq!(
            (intel.seen, intel.value.as_str(), intel.indicator.as_str()),
            ("dns_cname", "edge.evil.example", "evil.example")
        );
        assert_eq!(intel.host, Some("10.0.0.5".parse().unwrap()));
    }
}
