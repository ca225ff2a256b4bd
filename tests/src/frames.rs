//! Crafted Ethernet frames, each with the offsets that decide what the XDP program must make
//! of it, so a test can predict the counters for every truncation of the frame.

use netwatch_common::{GlobalStats, SourceKey, SourceStats};

use crate::Expected;

/// TCP flags.
pub const SYN: u8 = 0x02;
/// TCP flags.
pub const ACK: u8 = 0x10;
/// TCP flags.
pub const PSH: u8 = 0x08;

/// 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ service tag) protocol identifier.
pub const TPID_8021AD: u16 = 0x88a8;

/// The transport layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A 20-byte TCP header with these flags.
    Tcp(u8),
    /// An 8-byte UDP header.
    Udp,
    /// An ICMP (IPv4) or ICMPv6 echo request header.
    Icmp,
    /// No header: the payload follows the IP header(s) under this protocol number.
    Raw(u8),
}

/// An IPv6 extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, 8 bytes times `units`.
    HopByHop(u8),
    /// Routing header, 8 bytes times `units`.
    Routing(u8),
    /// Destination options, 8 bytes times `units`.
    DestOpts(u8),
    /// Authentication header with this many 4-byte words of ICV.
    Auth(u8),
    /// Fragment header: offset in 8-byte units, more-fragments flag.
    Fragment(u16, bool),
}

#[derive(Clone, Debug)]
enum Net {
    Ipv4 {
        src: [u8; 4],
        options: usize,
        fragment_offset: u16,
        more_fragments: bool,
    },
    Ipv6 {
        src: [u8; 16],
        ext: Vec<Ext>,
    },
    Arp,
}

/// Builds a frame: `FrameBuilder::ipv4([10,0,0,1]).vlan(..).transport(..).payload(..).build()`.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    tags: Vec<(u16, u16)>,
    net: Net,
    transport: Transport,
    payload: usize,
    raw: Option<Vec<u8>>,
    dst_port: Option<u16>,
    dst_host: u8,
    dst_v4: Option<[u8; 4]>,
    src_port: u16,
    seq: u32,
}

/// What the XDP program must make of a frame, by the length of the prefix it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Model {
    /// Not IP once `l3_start` bytes are there (before that: malformed).
    NonIp {
        /// End of the Ethernet header and tags.
        l3_start: usize,
    },
    /// IP.
    Ip {
        /// The source.
        source: SourceKey,
        /// The source is trusted from this length on (whole IP header); before: malformed.
        header_end: usize,
        /// The protocol class is known from this length on (end of the extension headers);
        /// before: `other`.
        class_ready: usize,
        /// The class once known.
        class: Class,
        /// For a SYN without ACK in a first fragment: the length from which the TCP header is
        /// all there.
        syn_ready: Option<usize>,
        /// For a fragment: the length from which the program knows it is one (the IPv4
        /// header, or the first IPv6 fragment header, all there).
        fragment_ready: Option<usize>,
        /// For UDP in a first fragment: the source port, and the length from which the
        /// program reads it.
        udp_source_port: Option<(u16, usize)>,
    },
}

/// Protocol class, as the per-source counters split it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP or ICMPv6.
    Icmp,
    /// Anything else.
    Other,
}

/// A frame and what the program must count for it.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The bytes on the wire (no FCS).
    pub bytes: Vec<u8>,
    /// The prediction.
    pub model: Model,
}

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const DST_V4: [u8; 4] = [192, 0, 2, 254];
const DST_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
];

impl FrameBuilder {
    /// An IPv4 frame from `src` (UDP with no payload until told otherwise).
    pub fn ipv4(src: [u8; 4]) -> Self {
        Self::new(Net::Ipv4 {
            src,
            options: 0,
            fragment_offset: 0,
            more_fragments: false,
        })
    }

    /// An IPv6 frame from `src`.
    pub fn ipv6(src: [u8; 16]) -> Self {
        Self::new(Net::Ipv6 {
            src,
            ext: Vec::new(),
        })
    }

    /// An ARP request.
    pub fn arp() -> Self {
        Self::new(Net::Arp)
    }

    fn new(net: Net) -> Self {
        Self {
            tags: Vec::new(),
            net,
            transport: Transport::Udp,
            payload: 0,
            raw: None,
            dst_port: None,
            dst_host: 254,
            dst_v4: None,
            src_port: 40_000,
            seq: 1,
        }
    }

    /// Sets the TCP sequence number (default 1).
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// Sets the TCP or UDP source port (default 40000).
    pub fn from_port(mut self, port: u16) -> Self {
        self.src_port = port;
        self
    }

    /// Sets the whole IPv4 destination address (default 192.0.2.254, see
    /// [`FrameBuilder::to_host`]): for the server's side of a conversation.
    pub fn to_ipv4(mut self, addr: [u8; 4]) -> Self {
        self.dst_v4 = Some(addr);
        self
    }

    /// The IPv4 destination: 192.0.2.`last` unless set whole.
    fn ipv4_destination(&self) -> [u8; 4] {
        self.dst_v4.unwrap_or(Self::ipv4_host(self.dst_host))
    }

    /// The IPv4 address a frame built with [`FrameBuilder::to_host`]`(last)` goes to.
    pub fn ipv4_host(last: u8) -> [u8; 4] {
        let mut addr = DST_V4;
        addr[3] = last;
        addr
    }

    /// Sets the TCP or UDP destination port (default 80 for TCP, 53 for UDP).
    pub fn to_port(mut self, port: u16) -> Self {
        self.dst_port = Some(port);
        self
    }

    /// Sets the last byte of the destination address (default 254).
    pub fn to_host(mut self, last: u8) -> Self {
        self.dst_host = last;
        self
    }

    /// Adds a VLAN tag (outermost first).
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.tags.push((tpid, vid));
        self
    }

    /// Sets the transport layer.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the payload length (filled with letters).
    pub fn payload(mut self, len: usize) -> Self {
        self.payload = len;
        self
    }

    /// Sets the payload bytes.
    pub fn raw_payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.len();
        self.raw = Some(bytes.to_vec());
        self
    }

    /// IPv4 options of `len` bytes (a multiple of 4, at most 40).
    pub fn ipv4_options(mut self, len: usize) -> Self {
        assert!(
            len.is_multiple_of(4) && len <= 40,
            "bad IPv4 options length {len}"
        );
        if let Net::Ipv4 { options, .. } = &mut self.net {
            *options = len;
        }
        self
    }

    /// Makes an IPv4 frame a fragment.
    pub fn ipv4_fragment(mut self, offset_units: u16, more: bool) -> Self {
        if let Net::Ipv4 {
            fragment_offset,
            more_fragments,
            ..
        } = &mut self.net
        {
            *fragment_offset = offset_units;
            *more_fragments = more;
        }
        self
    }

    /// Appends an IPv6 extension header.
    pub fn ext(mut self, header: Ext) -> Self {
        if let Net::Ipv6 { ext, .. } = &mut self.net {
            ext.push(header);
        }
        self
    }

    /// The frame and its model.
    pub fn build(&self) -> Frame {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&DST_MAC);
        bytes.extend_from_slice(&SRC_MAC);
        for (tpid, vid) in &self.tags {
            bytes.extend_from_slice(&tpid.to_be_bytes());
            bytes.extend_from_slice(&vid.to_be_bytes());
        }
        let ether_type: u16 = match self.net {
            Net::Ipv4 { .. } => 0x0800,
            Net::Ipv6 { .. } => 0x86dd,
            Net::Arp => 0x0806,
        };
        bytes.extend_from_slice(&ether_type.to_be_bytes());
        let l3_start = bytes.len();
        let is_v6 = matches!(self.net, Net::Ipv6 { .. });
        let (l4, proto) = self.l4(is_v6);
        let model = match &self.net {
            Net::Arp => {
                bytes.extend_from_slice(&arp_request());
                Model::NonIp { l3_start }
            }
            Net::Ipv4 {
                src,
                options,
                fragment_offset,
                more_fragments,
            } => {
                let header_len = 20 + options;
                let total_len = header_len + l4.len();
                let mut header = vec![0u8; header_len];
                header[0] = 0x40 | (header_len / 4) as u8;
                header[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
                header[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
                let flags = fragment_offset | if *more_fragments { 0x2000 } else { 0 };
                header[6..8].copy_from_slice(&flags.to_be_bytes());
                header[8] = 64;
                header[9] = proto;
                header[12..16].copy_from_slice(src);
                header[16..20].copy_from_slice(&self.ipv4_destination());
                // NOP options, then End of Option List (RFC 791).
                for byte in &mut header[20..] {
                    *byte = 1;
                }
                if let Some(last) = header.get_mut(header_len - 1).filter(|_| *options > 0) {
                    *last = 0;
                }
                let checksum = internet_checksum(&header);
                header[10..12].copy_from_slice(&checksum.to_be_bytes());
                bytes.extend_from_slice(&header);
                let header_end = l3_start + header_len;
                bytes.extend_from_slice(&l4);
                Model::Ip {
                    source: SourceKey::ipv4(*src),
                    header_end,
                    class_ready: header_end,
                    class: class_of(proto, false),
                    syn_ready: self.syn_ready(*fragment_offset == 0, header_end),
                    fragment_ready: (*fragment_offset != 0 || *more_fragments)
                        .then_some(header_end),
                    udp_source_port: self.udp_source_port(*fragment_offset == 0, header_end),
                }
            }
            Net::Ipv6 { src, ext } => {
                let mut chain = Vec::new();
                let mut first_fragment = true;
                let mut fragment_end = None;
                for (i, header) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(proto, ext_number);
                    match header {
                        Ext::HopByHop(units) | Ext::Routing(units) | Ext::DestOpts(units) => {
                            let len = usize::from(*units) * 8;
                            let mut h = vec![0u8; len];
                            h[0] = next;
                            h[1] = units - 1;
                            if matches!(header, Ext::Routing(_)) {
                                h[2] = 4; // Segment Routing, nothing left to route
                            } else {
                                // A PadN option filling the rest (RFC 8200 §4.2).
                                h[2] = 1;
                                h[3] = (len - 4) as u8;
                            }
                            chain.extend_from_slice(&h);
                        }
                        Ext::Auth(words) => {
                            let len = 12 + usize::from(*words) * 4;
                            let mut h = vec![0u8; len];
                            h[0] = next;
                            h[1] = (len / 4 - 2) as u8;
                            chain.extend_from_slice(&h);
                        }
                        Ext::Fragment(offset, more) => {
                            let field = (offset << 3) | u16::from(*more);
                            chain.push(next);
                            chain.push(0);
                            chain.extend_from_slice(&field.to_be_bytes());
                            chain.extend_from_slice(&0xfeed_beefu32.to_be_bytes());
                            first_fragment &= *offset == 0;
                            fragment_end.get_or_insert(chain.len());
                        }
                    }
                }
                let payload_len = chain.len() + l4.len();
                bytes.extend_from_slice(&[0x60, 0, 0, 0]);
                bytes.extend_from_slice(&(payload_len as u16).to_be_bytes());
                bytes.push(ext.first().map_or(proto, ext_number));
                bytes.push(64);
                bytes.extend_from_slice(src);
                bytes.extend_from_slice(&DST_V6);
                let last = bytes.len() - 1;
                bytes[last] = self.dst_host;
                let header_end = bytes.len();
                bytes.extend_from_slice(&chain);
                let class_ready = bytes.len();
                bytes.extend_from_slice(&l4);
                Model::Ip {
                    source: SourceKey::ipv6(*src),
                    header_end,
                    class_ready,
                    class: class_of(proto, true),
                    syn_ready: self.syn_ready(first_fragment, class_ready),
                    fragment_ready: fragment_end.map(|end| header_end + end),
                    udp_source_port: self.udp_source_port(first_fragment, class_ready),
                }
            }
        };
        Frame { bytes, model }
    }

    /// The transport header and payload, and the IP protocol number.
    fn l4(&self, is_v6: bool) -> (Vec<u8>, u8) {
        let payload: Vec<u8> = self
            .raw
            .clone()
            .unwrap_or_else(|| (0..self.payload).map(|i| b'a' + (i % 26) as u8).collect());
        let mut l4 = Vec::new();
        let proto = match self.transport {
            Transport::Tcp(flags) => {
                l4.extend_from_slice(&self.src_port.to_be_bytes());
                l4.extend_from_slice(&self.dst_port.unwrap_or(80).to_be_bytes());
                l4.extend_from_slice(&self.seq.to_be_bytes());
                l4.extend_from_slice(&0u32.to_be_bytes());
                l4.push(5 << 4);
                l4.push(flags);
                l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
                6
            }
            Transport::Udp => {
                l4.extend_from_slice(&self.src_port.to_be_bytes());
                l4.extend_from_slice(&self.dst_port.unwrap_or(53).to_be_bytes());
                l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                17
            }
            Transport::Icmp => {
                l4.extend_from_slice(&[if is_v6 { 128 } else { 8 }, 0, 0, 0, 0, 1, 0, 1]);
                if is_v6 { 58 } else { 1 }
            }
            Transport::Raw(proto) => proto,
        };
        l4.extend_from_slice(&payload);
        (l4, proto)
    }

    fn udp_source_port(&self, first_fragment: bool, l4_start: usize) -> Option<(u16, usize)> {
        (first_fragment && matches!(self.transport, Transport::Udp))
            .then_some((self.src_port, l4_start + 4))
    }

    fn syn_ready(&self, first_fragment: bool, l4_start: usize) -> Option<usize> {
        match self.transport {
            Transport::Tcp(flags) if first_fragment && flags & SYN != 0 && flags & ACK == 0 => {
                Some(l4_start + 20)
            }
            _ => None,
        }
    }
}

fn ext_number(header: &Ext) -> u8 {
    match header {
        Ext::HopByHop(_) => 0,
        Ext::Routing(_) => 43,
        Ext::Fragment(..) => 44,
        Ext::Auth(_) => 51,
        Ext::DestOpts(_) => 60,
    }
}

fn class_of(proto: u8, is_v6: bool) -> Class {
    match (proto, is_v6) {
        (6, _) => Class::Tcp,
        (17, _) => Class::Udp,
        (1, false) | (58, true) => Class::Icmp,
        _ => Class::Other,
    }
}

fn arp_request() -> [u8; 28] {
    let mut arp = [0u8; 28];
    arp[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp[8..14].copy_from_slice(&SRC_MAC);
    arp[14..18].copy_from_slice(&[192, 0, 2, 1]);
    arp[24..28].copy_from_slice(&DST_V4);
    arp
}

/// RFC 1071 checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Frame {
    /// Adds to `expected` what the program must count for the first `len` bytes of the frame.
    pub fn expect_prefix(&self, len: usize, expected: &mut Expected) {
        assert!(len >= 14 && len <= self.bytes.len());
        let bytes = len as u64;
        let g: &mut GlobalStats = &mut expected.globals;
        g.total_packets += 1;
        g.total_bytes += bytes;
        match &self.model {
            Model::NonIp { l3_start } if len >= *l3_start => {
                g.non_ip_packets += 1;
                g.non_ip_bytes += bytes;
            }
            Model::Ip {
                source,
                header_end,
                class_ready,
                class,
                syn_ready,
                fragment_ready,
                udp_source_port,
            } if len >= *header_end => {
                if len < self.bytes.len() {
                    g.truncated_packets += 1;
                }
                let stats: &mut SourceStats = expected.sources.entry(*source).or_default();
                stats.packets += 1;
                stats.bytes += bytes;
                let class = if len >= *class_ready {
                    *class
                } else {
                    Class::Other
                };
                match class {
                    Class::Tcp => stats.tcp_packets += 1,
                    Class::Udp => stats.udp_packets += 1,
                    Class::Icmp => stats.icmp_packets += 1,
                    Class::Other => stats.other_packets += 1,
                }
                if syn_ready.is_some_and(|ready| len >= ready) {
                    stats.tcp_syn_packets += 1;
                }
                if fragment_ready.is_some_and(|ready| len >= ready) {
                    stats.fragment_packets += 1;
                }
                if let Some((port, ready)) = udp_source_port
                    && class == Class::Udp
                    && len >= *ready
                    && expected.reflection_ports.contains(port)
                {
                    stats.reflected_packets += 1;
                    stats.reflected_port = u32::from(*port);
                }
            }
            _ => {
                g.malformed_packets += 1;
                g.malformed_bytes += bytes;
            }
        }
    }

    /// Adds the whole frame to `expected`.
    pub fn expect(&self, expected: &mut Expected) {
        self.expect_prefix(self.bytes.len(), expected);
    }
}

/// `count` UDP frames of 60 payload bytes from `src` to 10.0.1.1 port 7000, evenly over
/// `over`, each with its offset: a flood for `VethPair::send_paced`.
pub fn udp_flood(
    src: [u8; 4],
    count: u32,
    over: std::time::Duration,
) -> Vec<(std::time::Duration, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                over * i / count,
                FrameBuilder::ipv4(src)
                    .to_ipv4([10, 0, 1, 1])
                    .to_port(7_000)
                    .payload(60)
                    .build()
                    .bytes,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let frame = FrameBuilder::ipv4([10, 0, 0, 1]).ipv4_options(8).build();
        let header = &frame.bytes[14..14 + 28];
        assert_eq!(internet_checksum(header), 0);
    }

    #[test]
    fn model_offsets_follow_the_headers() {
        let frame = FrameBuilder::ipv6([0x20; 16])
            .vlan(TPID_8021AD, 1)
            .vlan(TPID_8021Q, 2)
            .ext(Ext::HopByHop(1))
            .ext(Ext::Fragment(0, true))
            .transport(Transport::Tcp(SYN))
            .build();
        let Model::Ip {
            header_end,
            class_ready,
            syn_ready,
            class,
            ..
        } = frame.model
        else {
            panic!("not IP: {:?}", frame.model);
        };
        assert_eq!(header_end, 22 + 40);
        assert_eq!(class_ready, 22 + 40 + 16);
        assert_eq!(syn_ready, Some(22 + 40 + 16 + 20));
        assert_eq!(class, Class::Tcp);
        assert_eq!(frame.bytes.len(), 22 + 40 + 16 + 20);
    }

    #[test]
    fn later_fragments_carry_no_syn() {
        let frame = FrameBuilder::ipv4([10, 0, 0, 1])
            .transport(Transport::Tcp(SYN))
            .ipv4_fragment(10, false)
            .build();
        assert!(matches!(
            frame.model,
            Model::Ip {
                syn_ready: None,
                ..
            }
        ));
    }
}
