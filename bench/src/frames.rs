//! The frames the generator sends: source `n`'s frame is its family's template with the
//! address of `n` written in (and for IPv4 the header checksum made right again), so that N
//! sources are exactly N addresses whatever the frame count.

use netwatch_tests::frames::{FrameBuilder, TPID_8021AD, TPID_8021Q, Transport, internet_checksum};

use crate::spec::Spec;

/// The source address of source number `n`: 10.0.0.0 + `n` for IPv4 (the first octet
/// 10 + `n / 2^24` modulo 100), 2001:db8:beef:: + `n` for IPv6.
pub fn source_of(spec: &Spec, n: u32) -> std::net::IpAddr {
    let bytes = n.to_be_bytes();
    if is_ipv6(spec, n) {
        let mut addr = IPV6_BASE;
        addr[12..16].copy_from_slice(&bytes);
        std::net::IpAddr::from(addr)
    } else {
        std::net::IpAddr::from([10 + bytes[0] % 100, bytes[1], bytes[2], bytes[3]])
    }
}

const IPV6_BASE: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn is_ipv6(spec: &Spec, n: u32) -> bool {
    (n % 100) < u32::from(spec.ipv6_percent)
}

/// The frame of source 0 of one family: the template the others are written from.
pub(crate) fn template(spec: &Spec, ipv6: bool) -> Vec<u8> {
    let mut builder = if ipv6 {
        FrameBuilder::ipv6(IPV6_BASE)
    } else {
        FrameBuilder::ipv4([10, 0, 0, 0])
    };
    if spec.vlan_tags >= 2 {
        builder = builder.vlan(TPID_8021AD, 100);
    }
    if spec.vlan_tags >= 1 {
        builder = builder.vlan(TPID_8021Q, 200);
    }
    // UDP to the discard port: counted, not sampled.
    let builder = builder.transport(Transport::Udp).to_port(9);
    let headers = builder.clone().build().bytes.len();
    builder
        .payload(spec.size.saturating_sub(headers))
        .build()
        .bytes
}

/// The frames of a spec: a template per family, and where each keeps its source address.
pub(crate) struct Frames {
    spec: Spec,
    ipv4: Vec<u8>,
    ipv6: Vec<u8>,
    /// Offset of the IP header in both templates (after the VLAN tags).
    l3: usize,
}

impl Frames {
    pub(crate) fn new(spec: &Spec) -> Self {
        Self {
            spec: spec.clone(),
            ipv4: template(spec, false),
            ipv6: template(spec, true),
            l3: 14 + 4 * usize::from(spec.vlan_tags.min(2)),
        }
    }

    /// The longest frame of either family.
    pub(crate) fn longest(&self) -> usize {
        self.ipv4.len().max(self.ipv6.len())
    }

    /// The length of source `n`'s frame.
    pub(crate) fn len(&self, n: u32) -> usize {
        if is_ipv6(&self.spec, n) {
            self.ipv6.len()
        } else {
            self.ipv4.len()
        }
    }

    /// Writes source `n`'s frame into `out` (which it resizes): its family's template with
    /// the source address of `n`, and for IPv4 the header checksum made right again.
    pub(crate) fn write(&self, n: u32, out: &mut Vec<u8>) {
        out.clear();
        out.resize(self.len(n), 0);
        self.write_into(n, out);
    }

    /// As [`Frames::write`], into a buffer of exactly [`Frames::len`] bytes.
    pub(crate) fn write_into(&self, n: u32, out: &mut [u8]) {
        let l3 = self.l3;
        match source_of(&self.spec, n) {
            std::net::IpAddr::V6(addr) => {
                out.copy_from_slice(&self.ipv6);
                out[l3 + 8..l3 + 24].copy_from_slice(&addr.octets());
            }
            std::net::IpAddr::V4(addr) => {
                out.copy_from_slice(&self.ipv4);
                out[l3 + 12..l3 + 16].copy_from_slice(&addr.octets());
                out[l3 + 10..l3 + 12].fill(0);
                let checksum = internet_checksum(&out[l3..l3 + 20]);
                out[l3 + 10..l3 + 12].copy_from_slice(&checksum.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::*;
    use crate::spec::Method;

    fn spec(sources: u32, ipv6_percent: u8) -> Spec {
        Spec {
            count: 0,
            duration: Duration::ZERO,
            rate: 0,
            size: 64,
            ipv6_percent,
            vlan_tags: 1,
            sources,
            method: Method::Sendmmsg,
            threads: 1,
            batch: 64,
        }
    }

    /// 3,000,000 frames from 1,000,000 sources come from exactly 1,000,000 addresses, each
    /// three times (it was 3,000,000 addresses: past 65,536 templates the frame's index was
    /// written, not its source's).
    #[test]
    fn n_sources_are_exactly_n_addresses_whatever_the_frame_count() {
        for ipv6_percent in [0, 30] {
            let spec = spec(1_000_000, ipv6_percent);
            let frames = Frames::new(&spec);
            let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
            let mut buffer = Vec::new();
            for i in 0..3_000_000u64 {
                frames.write((i % u64::from(spec.sources)) as u32, &mut buffer);
                // The source address, whichever family: 16 bytes from the IP header's start
                // at 8 (IPv6) or 4 from 12 (IPv4), behind one VLAN tag.
                let source = if buffer[16..18] == [0x86, 0xdd] {
                    buffer[26..42].to_vec()
                } else {
                    buffer[30..34].to_vec()
                };
                *seen.entry(source).or_default() += 1;
            }
            assert_eq!(seen.len(), 1_000_000, "{ipv6_percent}% IPv6");
            assert!(
                seen.values().all(|&count| count == 3),
                "{ipv6_percent}% IPv6"
            );
        }
    }

    /// Each frame is its source's as [`source_of`] says, with a valid IPv4 header.
    #[test]
    fn a_frame_carries_its_sources_address_and_a_valid_checksum() {
        let spec = spec(1 << 25, 50);
        let frames = Frames::new(&spec);
        let mut buffer = Vec::new();
        for n in [
            0,
            1,
            49,
            50,
            99,
            65_535,
            65_536,
            (1 << 24) + 7,
            (1 << 25) - 1,
        ] {
            frames.write(n, &mut buffer);
            let parsed = etherparse::SlicedPacket::from_ethernet(&buffer)
                .unwrap_or_else(|err| panic!("{n}: {err}"));
            let source = match parsed.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    assert_eq!(internet_checksum(ip.header().slice()), 0, "{n}");
                    std::net::IpAddr::from(ip.header().source())
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => {
                    std::net::IpAddr::from(ip.header().source())
                }
                other => panic!("{n}: {other:?}"),
            };
            assert_eq!(source, source_of(&spec, n), "{n}");
            assert_eq!(source.is_ipv6(), n % 100 < 50, "{n}");
        }
        // Sources a whole 2^24 apart are told apart by the first octet.
        assert_ne!(source_of(&spec, 5), source_of(&spec, (1 << 24) + 5));
    }
}
