//! DNS: queries and answers over UDP and TCP, IPv4, IPv6 and VLANs, and the DNS tunnelling
//! alerts (long or random names, many subdomains of one domain).

use std::{net::SocketAddr, time::Duration};

use etherparse::PacketBuilder;

use super::{CLIENT, MAC_A, MAC_B, SERVER, T, inspector, to_server, udp_v6};
use crate::{
    detect::alert::{Alert, AlertKind, Subject},
    inspect::{
        dns::encode_query as dns_query,
        event::{Event, EventKind},
        inspector::Inspector,
    },
};

#[test]
fn dns_queries_and_answers_over_ipv4_ipv6_vlan_and_tcp() {
    let mut inspector = inspector();
    let v4 = {
        let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(CLIENT, SERVER, 64)
            .udp(5353, 53);
        let mut frame = Vec::new();
        builder
            .write(&mut frame, &dns_query("example.com", 1))
            .unwrap();
        frame
    };
    let mut answer = dns_query("missing.example", 28);
    answer[2] = 0x81;
    answer[3] = 0x83;
    let v6_answer = udp_v6(53, 5353, &answer, false);
    let vlan = udp_v6(5353, 53, &dns_query("tagged.example", 16), true);
    let mut over_tcp = Vec::new();
    let message = dns_query("zone.example", 252);
    over_tcp.extend_from_slice(&(message.len() as u16).to_be_bytes());
    over_tcp.extend_from_slice(&message);
    let tcp = to_server(53, &over_tcp);
    let findings: Vec<Event> = [v4, v6_answer, vlan, tcp]
        .iter()
        .flat_map(|frame| inspector.inspect(frame, T).events)
        .collect();
    let names: Vec<(String, String, bool, Option<String>, &str)> = findings
        .iter()
        .map(|event| match &event.kind {
            EventKind::Dns {
                name,
                qtype,
                response,
                rcode,
                transport,
                ..
            } => (
                name.clone(),
                qtype.clone(),
                *response,
                rcode.clone(),
                *transport,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("example.com".into(), "A".into(), false, None, "udp"),
            (
                "missing.example".into(),
                "AAAA".into(),
                true,
                Some("NXDOMAIN".into()),
                "udp"
            ),
            ("tagged.example".into(), "TXT".into(), false, None, "udp"),
            ("zone.example".into(), "AXFR".into(), false, None, "tcp"),
        ]
    );
    // The answer's client is the asker, the end not on port 53 (this frame goes from
    // [2001:db8::1]:53 to [2001:db8::35]:5353).
    assert_eq!(
        findings[1].server,
        "[2001:db8::1]:53".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        findings[1].client,
        "[2001:db8::35]:5353".parse::<SocketAddr>().unwrap()
    );
}

fn dns_from(source: [u8; 4], name: &str) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(source, SERVER, 64)
        .udp(5353, 53);
    let mut frame = Vec::new();
    builder.write(&mut frame, &dns_query(name, 16)).unwrap();
    frame
}

#[test]
fn random_long_labels_alert_as_dns_tunnel_once() {
    let mut inspector = inspector();
    let mut alerts = Vec::new();
    for i in 0..5 {
        let name = format!("x{i}q8zk3v9w2m7p1r6t0y5u4e3o2i1a9s8d7.tunnel.example");
        alerts.extend(inspector.inspect(&dns_from(CLIENT, &name), T).alerts);
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::DnsTunnel);
    assert_eq!(alerts[0].detail.as_deref(), Some("domain tunnel.example"));
    // Ordinary names do not.
    let mut inspector = inspector_fresh();
    let plain: Vec<Alert> = ["www.example.com", "mail.google.com", "a.root-servers.net"]
        .iter()
        .flat_map(|name| inspector.inspect(&dns_from(CLIENT, name), T).alerts)
        .collect();
    assert!(plain.is_empty(), "{plain:?}");
}

fn inspector_fresh() -> Inspector {
    inspector()
}

#[test]
fn many_subdomains_of_one_domain_alert_at_the_end_of_the_interval() {
    let mut inspector = inspector();
    for i in 0..60 {
        let findings = inspector.inspect(&dns_from(CLIENT, &format!("h{i}.exfil.example")), T);
        assert!(findings.alerts.is_empty());
    }
    // Another source with few names says nothing.
    for i in 0..10 {
        inspector.inspect(
            &dns_from([192, 0, 2, 99], &format!("h{i}.exfil.example")),
            T,
        );
    }
    let alerts = inspector.end_interval(T, Duration::from_secs(1));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].subject, Subject::Source(CLIENT.into()));
    assert_eq!(alerts[0].observed, 51.0);
    // A new interval starts from zero.
    assert!(inspector.end_interval(T, Duration::from_secs(1)).is_empty());
}
