//! Signatures: what the frames of an attack have in common that a rule in XDP can match,
//! derived from an alert's victim and the attack's type. Against reflected and spoofed
//! floods a source ban does nothing; a signature names *what* the traffic is and *whom* it
//! hits:
//!
//! - a reflection: UDP from the service's port to the victim;
//! - a SYN flood: TCP SYNs to the victim (and its port, when one holds the flood);
//! - fragments: IP fragments to the victim;
//! - a UDP flood: UDP to the victim's port (never all of a host's UDP: too wide);
//! - an ICMP flood: ICMP to the victim.
//!
//! Plain data and pure functions: no rule in force here, no kernel map.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    datapath::{RuleAction, RuleProtocol, SignatureRule},
    detect::{
        alert::{Alert, AlertState, Subject},
        attack::AttackType,
        cidr::Cidr,
    },
};

/// The attack types a signature rule can answer, as `[[mitigate.signatures]] attacks` names
/// them (their names in alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureAttack {
    /// UDP answers of an amplification service.
    Reflection,
    /// TCP SYNs.
    SynFlood,
    /// IP fragments.
    IpFragments,
    /// UDP to one port.
    UdpFlood,
    /// ICMP.
    IcmpFlood,
}

impl SignatureAttack {
    /// The type of an alert's attack, if a signature can answer it.
    pub fn of(attack: AttackType) -> Option<Self> {
        match attack {
            AttackType::Reflection(_) => Some(Self::Reflection),
            AttackType::SynFlood => Some(Self::SynFlood),
            AttackType::Fragments => Some(Self::IpFragments),
            AttackType::UdpFlood => Some(Self::UdpFlood),
            AttackType::IcmpFlood => Some(Self::IcmpFlood),
            AttackType::TcpFlood | AttackType::Mixed => None,
        }
    }

    /// Its name in the configuration and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reflection => "reflection",
            Self::SynFlood => "syn_flood",
            Self::IpFragments => "ip_fragments",
            Self::UdpFlood => "udp_flood",
            Self::IcmpFlood => "icmp_flood",
        }
    }
}

/// What a signature rule matches: the victim (a host or a network) and what the attack's
/// frames are. Its action is the mitigator's to choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    /// The victim.
    pub destination: Cidr,
    /// The protocol.
    pub protocol: Option<RuleProtocol>,
    /// The transport source port (a reflected service's).
    pub src_port: Option<u16>,
    /// The transport destination port.
    pub dst_port: Option<u16>,
    /// TCP SYNs without ACK only.
    pub syn: bool,
    /// IP fragments only.
    pub fragment: bool,
}

impl Signature {
    /// The signature of an attack of type `attack` on `destination`, whose frames go to
    /// `port` (when one port holds them); `None` when no signature is narrow enough (a TCP or
    /// mixed flood, a UDP flood over many ports).
    pub fn of(attack: AttackType, destination: Cidr, port: Option<u16>) -> Option<Self> {
        let none = Self {
            destination,
            protocol: None,
            src_port: None,
            dst_port: None,
            syn: false,
            fragment: false,
        };
        match attack {
            AttackType::Reflection(service) => Some(Self {
                protocol: Some(RuleProtocol::Udp),
                src_port: Some(service),
                ..none
            }),
            AttackType::SynFlood => Some(Self {
                protocol: Some(RuleProtocol::Tcp),
                dst_port: port,
                syn: true,
                ..none
            }),
            AttackType::Fragments => Some(Self {
                fragment: true,
                ..none
            }),
            AttackType::UdpFlood => port.map(|port| Self {
                protocol: Some(RuleProtocol::Udp),
                dst_port: Some(port),
                ..none
            }),
            AttackType::IcmpFlood => Some(Self {
                protocol: Some(RuleProtocol::Icmp),
                ..none
            }),
            AttackType::TcpFlood | AttackType::Mixed => None,
        }
    }

    /// The kernel's rule for this signature and `action`.
    pub fn rule(&self, action: RuleAction) -> SignatureRule {
        let Self {
            destination,
            protocol,
            src_port,
            dst_port,
            syn,
            fragment,
        } = *self;
        SignatureRule {
            destination: Some((destination.addr(), destination.prefix_len())),
            protocol,
            src_port,
            dst_port,
            syn,
            fragment,
            length: None,
            action,
        }
    }
}

/// `udp from port 123 to 192.0.2.5/32`, `tcp syn to 192.0.2.6/32 port 443`,
/// `fragments to 192.0.2.0/24`.
impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        if let Some(protocol) = self.protocol {
            words.push(protocol.to_string());
        }
        if self.syn {
            words.push(String::from("syn"));
        }
        if self.fragment {
            words.push(String::from("fragments"));
        }
        if words.is_empty() {
            words.push(String::from("any"));
        }
        if let Some(port) = self.src_port {
            words.push(format!("from port {port}"));
        }
        words.push(format!("to {}", self.destination));
        if let Some(port) = self.dst_port {
            words.push(format!("port {port}"));
        }
        f.write_str(&words.join(" "))
    }
}

/// The least share of a sender alert's packets that makes a victim worth a rule of its own.
pub const VICTIM_SHARE: f64 = 0.2;

/// The signatures an alert calls for, with the type each answers: a victim's own alert
/// (scope `destination` or `destination_prefix`) gives one for its subject; an alert on a
/// sender (the interface, a prefix, a source) one for each victim that received a fifth of
/// its packets or more. Only flood alerts at their start and updates.
pub fn signatures_of(alert: &Alert) -> Vec<(Signature, SignatureAttack)> {
    if !alert.kind.is_flood() || !matches!(alert.state, AlertState::Start | AlertState::Update) {
        return Vec::new();
    }
    let host = Cidr::host;
    let mut found = Vec::new();
    let mut add = |attack: AttackType, destination: Cidr, port: Option<u16>| {
        if let (Some(signature), Some(kind)) = (
            Signature::of(attack, destination, port),
            SignatureAttack::of(attack),
        ) && !found.iter().any(|(known, _)| *known == signature)
        {
            found.push((signature, kind));
        }
    };
    match alert.subject {
        Subject::Destination(addr) => {
            if let Some(attack) = &alert.attack {
                let port = alert
                    .victims
                    .iter()
                    .find(|victim| victim.addr == addr)
                    .and_then(|victim| victim.port);
                add(attack.kind, host(addr), port);
            }
        }
        Subject::DestinationPrefix(cidr) => {
            // A port that every named host shares is the prefix's.
            if let Some(attack) = &alert.attack {
                let mut ports = alert.victims.iter().map(|victim| victim.port);
                let first = ports.next().flatten();
                let port = first.filter(|_| ports.all(|port| port == first));
                add(attack.kind, cidr, port);
            }
        }
        Subject::Global | Subject::Source(_) | Subject::Prefix(_) => {
            for victim in alert.victims.iter().filter(|v| v.share >= VICTIM_SHARE) {
                if let Some(attack) = victim.attack {
                    add(attack, host(victim.addr), victim.port);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::detect::{
        alert::{AlertKind, Severity, Victim},
        attack::Attack,
    };

    fn victim(addr: &str, share: f64, attack: Option<AttackType>, port: Option<u16>) -> Victim {
        Victim {
            addr: addr.parse().unwrap(),
            packets: 1000,
            pps: 1000.0,
            share,
            attack,
            port,
            sampled: None,
        }
    }

    fn alert(subject: Subject, attack: Option<AttackType>, victims: Vec<Victim>) -> Alert {
        Alert {
            id: String::from("a-1"),
            kind: AlertKind::SpikePps,
            state: AlertState::Start,
            severity: Severity::Critical,
            subject,
            observed: 9000.0,
            baseline: Some(100.0),
            threshold: 400.0,
            at: Duration::from_secs(1_000),
            interval: Duration::from_secs(1),
            started: Duration::from_secs(1_000),
            peak: 9000.0,
            packets: 9000,
            bytes: 900_000,
            detail: None,
            contributors: Vec::new(),
            attack: attack.map(|kind| Attack {
                kind,
                share: 0.95,
                mix: Default::default(),
            }),
            members: None,
            slotless: None,
            victims,
            capture: None,
            intel: None,
            context: Default::default(),
            by_as: Vec::new(),
        }
    }

    fn said(alert: &Alert) -> Vec<String> {
        signatures_of(alert)
            .iter()
            .map(|(signature, attack)| format!("{} ({})", signature, attack.name()))
            .collect()
    }

    /// Each type its signature, on the victim: the service port of a reflection, the port of
    /// a SYN or UDP flood, nothing for a flood a signature cannot narrow.
    #[test]
    fn each_attack_type_gives_its_signature_on_its_victim() {
        let global = alert(
            Subject::Global,
            Some(AttackType::Mixed),
            vec![
                victim(
                    "192.0.2.5",
                    0.4,
                    Some(AttackType::Reflection(123)),
                    Some(40_000),
                ),
                victim("192.0.2.6", 0.3, Some(AttackType::SynFlood), Some(443)),
                victim("192.0.2.7", 0.2, Some(AttackType::Fragments), None),
                victim(
                    "2001:db8::9",
                    0.25,
                    Some(AttackType::UdpFlood),
                    Some(27_015),
                ),
                victim("192.0.2.8", 0.5, Some(AttackType::UdpFlood), None),
                victim("192.0.2.10", 0.5, Some(AttackType::TcpFlood), Some(80)),
                victim("192.0.2.11", 0.19, Some(AttackType::IcmpFlood), None),
            ],
        );
        assert_eq!(
            said(&global),
            [
                "udp from port 123 to 192.0.2.5/32 (reflection)",
                "tcp syn to 192.0.2.6/32 port 443 (syn_flood)",
                "fragments to 192.0.2.7/32 (ip_fragments)",
                "udp to 2001:db8::9/128 port 27015 (udp_flood)",
            ]
        );
    }

    /// A victim's own alert and a prefix's: the subject is the destination; a prefix's port is
    /// one its hosts share. Ends and non-flood alerts give none.
    #[test]
    fn a_victims_alert_names_its_subject() {
        let host = alert(
            Subject::Destination("192.0.2.5".parse().unwrap()),
            Some(AttackType::SynFlood),
            vec![victim(
                "192.0.2.5",
                1.0,
                Some(AttackType::SynFlood),
                Some(22),
            )],
        );
        assert_eq!(said(&host), ["tcp syn to 192.0.2.5/32 port 22 (syn_flood)"]);
        let prefix = alert(
            Subject::DestinationPrefix("192.0.2.0/24".parse().unwrap()),
            Some(AttackType::UdpFlood),
            vec![
                victim("192.0.2.1", 0.1, Some(AttackType::UdpFlood), Some(53)),
                victim("192.0.2.2", 0.1, Some(AttackType::UdpFlood), Some(53)),
            ],
        );
        assert_eq!(said(&prefix), ["udp to 192.0.2.0/24 port 53 (udp_flood)"]);
        let spread = alert(
            Subject::DestinationPrefix("192.0.2.0/24".parse().unwrap()),
            Some(AttackType::UdpFlood),
            vec![
                victim("192.0.2.1", 0.1, Some(AttackType::UdpFlood), Some(53)),
                victim("192.0.2.2", 0.1, Some(AttackType::UdpFlood), Some(54)),
            ],
        );
        assert!(said(&spread).is_empty(), "UDP to a whole /24 is too wide");
        let ended = Alert {
            state: AlertState::End,
            ..host.clone()
        };
        assert!(said(&ended).is_empty());
        let scan = Alert {
            kind: AlertKind::PortScan,
            ..host
        };
        assert!(said(&scan).is_empty());
    }

    /// The kernel's rule carries every field of the signature and the action asked.
    #[test]
    fn a_signature_becomes_the_kernels_rule() {
        let signature = Signature::of(
            AttackType::Reflection(11211),
            "192.0.2.0/24".parse().unwrap(),
            Some(5),
        )
        .unwrap();
        let rule = signature.rule(RuleAction::RateLimit { pps: 100 });
        assert_eq!(
            rule,
            SignatureRule {
                destination: Some(("192.0.2.0".parse().unwrap(), 24)),
                protocol: Some(RuleProtocol::Udp),
                src_port: Some(11211),
                dst_port: None,
                syn: false,
                fragment: false,
                length: None,
                action: RuleAction::RateLimit { pps: 100 },
            }
        );
    }
}
