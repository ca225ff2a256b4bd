//! Attack types: what a flood is made of, named from the kernel's counters.
//!
//! Every frame is in one protocol count (TCP, UDP, ICMP, other); within them the kernel also
//! counts TCP SYNs without ACK, IP fragments, and UDP datagrams from the source ports of
//! amplification services (the answers a reflection attack aims at its victim). A flood is
//! typed by the part that makes up most of it, in this order: reflection (by service), IP
//! fragments, SYN, then UDP, ICMP or TCP alone; anything else is `mixed`.

use std::fmt;

use serde::{Serialize, Serializer, ser::SerializeStruct as _};

use crate::collect::Mix;

/// UDP source ports of services abused for reflection and amplification, with their names:
/// the default of `[detect] reflection_ports` (US-CERT TA14-017A and later advisories).
pub const DEFAULT_REFLECTION_PORTS: [(u16, &str); 8] = [
    (19, "chargen"),
    (53, "dns"),
    (123, "ntp"),
    (161, "snmp"),
    (389, "cldap"),
    (1900, "ssdp"),
    (3702, "ws-discovery"),
    (11211, "memcached"),
];

/// The name of an amplification service by its port, `None` for a port of the user's own list.
pub fn service_name(port: u16) -> Option<&'static str> {
    DEFAULT_REFLECTION_PORTS
        .iter()
        .find(|(known, _)| *known == port)
        .map(|(_, name)| *name)
}

/// A share of the traffic at or above which a part names the flood.
const DOMINANT: f64 = 0.5;
/// A share at or above which one protocol alone names the flood.
const PROTOCOL_DOMINANT: f64 = 0.6;

/// What a flood is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttackType {
    /// UDP answers from an amplification service's port.
    Reflection(u16),
    /// IP fragments.
    Fragments,
    /// TCP SYN without ACK.
    SynFlood,
    /// UDP, not from an amplification port.
    UdpFlood,
    /// ICMP or ICMPv6.
    IcmpFlood,
    /// TCP other than SYNs (ACK, RST, data).
    TcpFlood,
    /// No part makes up most of it.
    Mixed,
}

impl AttackType {
    /// The name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reflection(_) => "reflection",
            Self::Fragments => "ip_fragments",
            Self::SynFlood => "syn_flood",
            Self::UdpFlood => "udp_flood",
            Self::IcmpFlood => "icmp_flood",
            Self::TcpFlood => "tcp_flood",
            Self::Mixed => "mixed",
        }
    }
}

impl fmt::Display for AttackType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reflection(port) => match service_name(*port) {
                Some(name) => write!(
                    f,
                    "{} reflection (UDP from port {port})",
                    name.to_uppercase()
                ),
                None => write!(f, "UDP reflection from port {port}"),
            },
            Self::Fragments => f.write_str("IP fragment flood"),
            Self::SynFlood => f.write_str("SYN flood"),
            Self::UdpFlood => f.write_str("UDP flood"),
            Self::IcmpFlood => f.write_str("ICMP flood"),
            Self::TcpFlood => f.write_str("TCP flood (no SYN)"),
            Self::Mixed => f.write_str("mixed traffic"),
        }
    }
}

/// A flood's type, the share of its packets that type accounts for, and the whole mix.
#[derive(Clone, Debug, PartialEq)]
pub struct Attack {
    /// The type.
    pub kind: AttackType,
    /// Share of the packets of the type (0 to 1); for `mixed`, of the largest protocol.
    pub share: f64,
    /// What the traffic was made of.
    pub mix: Mix,
}

impl Attack {
    /// Types the traffic of `mix`; `None` for no traffic.
    pub fn classify(mix: &Mix) -> Option<Self> {
        if mix.packets == 0 {
            return None;
        }
        let share = |count: u64| count as f64 / mix.packets as f64;
        // Only a first fragment carries the source port: the later fragments of large
        // answers (DNS, CLDAP) count as fragments, not as reflected. They are taken as the
        // answers' tails while there are no more than eight per answer.
        let reflected = mix.reflected_packets();
        let tails = mix
            .fragments
            .min(mix.udp.saturating_sub(reflected))
            .min(reflected.saturating_mul(8));
        let reflected = reflected + tails;
        let (kind, count) = if share(reflected) >= DOMINANT {
            let (port, _) = mix
                .reflected
                .iter()
                .max_by_key(|(port, packets)| (**packets, std::cmp::Reverse(**port)))
                .map(|(port, packets)| (*port, *packets))
                .unwrap_or_default();
            (AttackType::Reflection(port), reflected)
        } else if share(mix.fragments) >= DOMINANT {
            (AttackType::Fragments, mix.fragments)
        } else if share(mix.syn) >= DOMINANT {
            (AttackType::SynFlood, mix.syn)
        } else if share(mix.udp) >= PROTOCOL_DOMINANT {
            (AttackType::UdpFlood, mix.udp)
        } else if share(mix.icmp) >= PROTOCOL_DOMINANT {
            (AttackType::IcmpFlood, mix.icmp)
        } else if share(mix.tcp) >= PROTOCOL_DOMINANT {
            (AttackType::TcpFlood, mix.tcp)
        } else {
            let largest = mix.tcp.max(mix.udp).max(mix.icmp).max(mix.other);
            (AttackType::Mixed, largest)
        };
        Some(Self {
            kind,
            share: share(count),
            mix: mix.clone(),
        })
    }
}

impl Serialize for Attack {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Reflected {
            port: u16,
            service: Option<&'static str>,
            packets: u64,
        }
        #[derive(Serialize)]
        struct MixRecord {
            packets: u64,
            tcp: u64,
            udp: u64,
            icmp: u64,
            other: u64,
            syn: u64,
            fragments: u64,
            reflected: Vec<Reflected>,
        }
        let Mix {
            packets,
            tcp,
            udp,
            icmp,
            other,
            syn,
            fragments,
            reflected,
        } = &self.mix;
        let (port, service) = match self.kind {
            AttackType::Reflection(port) => (Some(port), service_name(port)),
            _ => (None, None),
        };
        let mut record = serializer.serialize_struct("Attack", 6)?;
        record.serialize_field("type", self.kind.name())?;
        record.serialize_field("label", &self.kind.to_string())?;
        record.serialize_field("port", &port)?;
        record.serialize_field("service", &service)?;
        record.serialize_field("share", &((self.share * 1000.0).round() / 1000.0))?;
        record.serialize_field(
            "mix",
            &MixRecord {
                packets: *packets,
                tcp: *tcp,
                udp: *udp,
                icmp: *icmp,
                other: *other,
                syn: *syn,
                fragments: *fragments,
                reflected: reflected
                    .iter()
                    .map(|(port, packets)| Reflected {
                        port: *port,
                        service: service_name(*port),
                        packets: *packets,
                    })
                    .collect(),
            },
        )?;
        record.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(tcp: u64, udp: u64, icmp: u64) -> Mix {
        Mix {
            packets: tcp + udp + icmp,
            tcp,
            udp,
            icmp,
            ..Mix::default()
        }
    }

    #[test]
    fn the_largest_part_names_the_flood() {
        let mut ntp = mix(10, 990, 0);
        ntp.reflected.insert(123, 900);
        ntp.reflected.insert(53, 50);
        let attack = Attack::classify(&ntp).unwrap();
        assert_eq!(attack.kind, AttackType::Reflection(123));
        assert_eq!(attack.share, 0.95);
        assert_eq!(
            attack.kind.to_string(),
            "NTP reflection (UDP from port 123)"
        );

        let mut syn = mix(1000, 0, 0);
        syn.syn = 990;
        assert_eq!(Attack::classify(&syn).unwrap().kind, AttackType::SynFlood);
        let mut fragments = mix(0, 800, 200);
        fragments.fragments = 700;
        assert_eq!(
            Attack::classify(&fragments).unwrap().kind,
            AttackType::Fragments
        );
        assert_eq!(
            Attack::classify(&mix(0, 700, 300)).unwrap().kind,
            AttackType::UdpFlood
        );
        assert_eq!(
            Attack::classify(&mix(100, 0, 900)).unwrap().kind,
            AttackType::IcmpFlood
        );
        assert_eq!(
            Attack::classify(&mix(900, 100, 0)).unwrap().kind,
            AttackType::TcpFlood
        );
        let mixed = Attack::classify(&mix(400, 350, 250)).unwrap();
        assert_eq!((mixed.kind, mixed.share), (AttackType::Mixed, 0.4));
        assert_eq!(Attack::classify(&Mix::default()), None);
    }

    #[test]
    fn large_answers_in_fragments_are_reflection_not_fragments() {
        // DNS answers of 4,000 bytes: three fragments each, the first with the port.
        let mut dns = mix(0, 3000, 0);
        dns.reflected.insert(53, 1000);
        dns.fragments = 3000;
        let attack = Attack::classify(&dns).unwrap();
        assert_eq!(attack.kind, AttackType::Reflection(53));
        assert_eq!(attack.share, 1.0);
        // A fragment flood with a little DNS in it is a fragment flood.
        let mut flood = mix(0, 3000, 0);
        flood.reflected.insert(53, 10);
        flood.fragments = 2900;
        assert_eq!(
            Attack::classify(&flood).unwrap().kind,
            AttackType::Fragments
        );
    }

    #[test]
    fn a_port_of_the_users_list_is_named_by_number() {
        let mut other = mix(0, 100, 0);
        other.reflected.insert(27015, 100);
        let attack = Attack::classify(&other).unwrap();
        assert_eq!(attack.kind.to_string(), "UDP reflection from port 27015");
        let json = serde_json::to_value(&attack).unwrap();
        assert_eq!(json["type"], "reflection");
        assert_eq!(json["port"], 27015);
        assert_eq!(json["service"], serde_json::Value::Null);
        assert_eq!(json["mix"]["reflected"][0]["packets"], 100);
    }
}
