//! The parser of the netwatch XDP programs: Ethernet, at most two VLAN tags, IPv4 or IPv6
//! (with a bounded walk over extension headers) and the L4 fields netwatch counts. It only
//! reads the frame. Shared by the netwatch program and the parse floor of the benchmarks.

use aya_ebpf::programs::XdpContext;
use netwatch_common::SourceKey;

const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IPV4: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q customer tag.
const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service tag (QinQ outer tag).
const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard QinQ outer tag still sent by some switches.
const ETH_P_QINQ1: u16 = 0x9100;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

/// Extension headers walked before giving up (RFC 8200 §4.1 recommends at most one of each
/// kind, twice for destination options: seven in all).
const MAX_IPV6_EXT_HEADERS: usize = 8;
/// The L4 offset past which the walk gives up. It also gives the verifier a bound on the
/// variable packet offset.
pub(crate) const MAX_L4_OFFSET: usize = 1024;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// What a frame is, for counting.
pub(crate) enum Verdict {
    NonIp,
    Malformed,
    Source(Parsed),
}

/// An IP frame whose source address is known.
pub(crate) struct Parsed {
    pub(crate) key: SourceKey,
    pub(crate) class: Class,
    /// Offset of the IP header.
    pub(crate) l3_offset: usize,
    /// Offset of the L4 header; meaningful only for a first fragment with a known protocol.
    pub(crate) l4_offset: usize,
    /// The first (or only) fragment: the one that carries the L4 header.
    pub(crate) first_fragment: bool,
    /// A fragment of a larger datagram, first or later: IPv4 with more-fragments set or a
    /// non-zero offset (RFC 791 §3.1), IPv6 with a fragment header (RFC 8200 §4.5).
    pub(crate) fragment: bool,
    /// Shorter than the IP header says, or an extension header is cut.
    pub(crate) truncated: bool,
    /// The destination address folded to 32 bits.
    pub(crate) dst_fold: u32,
}

/// Protocol class of a frame, as counted per source.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Class {
    /// TCP with its header in this frame (a first or only fragment).
    TcpFirst,
    /// TCP without a header here: a later fragment.
    TcpLater,
    Udp,
    Icmp,
    Other,
}

/// The source and destination ports of a TCP or UDP header at `l4_offset` (both keep them
/// in their first four bytes).
#[inline(always)]
pub(crate) fn transport_ports(ctx: &XdpContext, l4_offset: usize) -> Option<(u16, u16)> {
    let ports = bytes::<4>(ctx, l4_offset)?;
    Some((be16(ports[0], ports[1]), be16(ports[2], ports[3])))
}

/// `N` bytes at `offset`, or `None` when the frame ends before them.
///
/// The bounds check sits right next to the pointer it guards, as the verifier needs.
#[inline(always)]
pub(crate) fn bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<&[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return None;
    }
    // SAFETY: the N bytes lie inside the packet, checked just above.
    Some(unsafe { &*((start + offset) as *const [u8; N]) })
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

#[inline(always)]
pub(crate) fn is_vlan(ether_type: u16) -> bool {
    matches!(ether_type, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ1)
}

#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Verdict {
    let Some(eth) = bytes::<ETH_HLEN>(ctx, 0) else {
        return Verdict::Malformed;
    };
    let mut ether_type = be16(eth[12], eth[13]);
    let mut offset = ETH_HLEN;
    if ether_type == ETH_P_IPV4 {
        // Untagged IPv4, most frames on most links: no tag to look for.
        return parse_ipv4(ctx, offset);
    }
    // At most two tags (802.1Q, or 802.1ad + 802.1Q). A third stays unparsed: non-IP.
    if is_vlan(ether_type) {
        let Some(tag) = bytes::<4>(ctx, offset) else {
            return Verdict::Malformed;
        };
        ether_type = be16(tag[2], tag[3]);
        offset += 4;
        if is_vlan(ether_type) {
            let Some(tag) = bytes::<4>(ctx, offset) else {
                return Verdict::Malformed;
            };
            ether_type = be16(tag[2], tag[3]);
            offset += 4;
        }
    }
    match ether_type {
        ETH_P_IPV4 => parse_ipv4(ctx, offset),
        ETH_P_IPV6 => parse_ipv6(ctx, offset),
        _ => Verdict::NonIp,
    }
}

/// RFC 791 §3.1.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize) -> Verdict {
    let Some(header) = bytes::<20>(ctx, offset) else {
        return Verdict::Malformed;
    };
    let version = header[0] >> 4;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    let total_len = usize::from(be16(header[2], header[3]));
    if version != 4 || header_len < 20 || total_len < header_len {
        return Verdict::Malformed;
    }
    // Options must be there too: a header cut inside its options is not trusted. (Without
    // options, the common case, the 20 bytes checked above are the whole header.)
    if header_len > 20 && ctx.data() + offset + header_len > ctx.data_end() {
        return Verdict::Malformed;
    }
    let key = SourceKey::ipv4([header[12], header[13], header[14], header[15]]);
    // Only the first fragment (offset 0) carries the L4 header; a first fragment has
    // more-fragments (0x2000) set.
    let flags_offset = be16(header[6], header[7]);
    let first_fragment = flags_offset & 0x1fff == 0;
    let class = match header[9] {
        IPPROTO_TCP if first_fragment => Class::TcpFirst,
        IPPROTO_TCP => Class::TcpLater,
        IPPROTO_UDP => Class::Udp,
        IPPROTO_ICMP => Class::Icmp,
        _ => Class::Other,
    };
    Verdict::Source(Parsed {
        key,
        class,
        l3_offset: offset,
        l4_offset: offset + header_len,
        first_fragment,
        fragment: flags_offset & 0x3fff != 0,
        truncated: ctx.data() + offset + total_len > ctx.data_end(),
        dst_fold: u32::from_be_bytes([header[16], header[17], header[18], header[19]]),
    })
}

/// RFC 8200 §3 and §4.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Verdict {
    let Some(header) = bytes::<40>(ctx, offset) else {
        return Verdict::Malformed;
    };
    if header[0] >> 4 != 6 {
        return Verdict::Malformed;
    }
    let payload_len = usize::from(be16(header[4], header[5]));
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let key = SourceKey::ipv6(src);
    let mut dst_fold = 0u32;
    for word in header[24..40].chunks_exact(4) {
        dst_fold ^= u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    let mut next = header[6];
    let mut l4_offset = offset + 40;
    let mut truncated = ctx.data() + l4_offset + payload_len > ctx.data_end();
    let mut first_fragment = true;
    let mut fragment = false;
    let mut complete = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let header_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                let Some(ext) = bytes::<2>(ctx, l4_offset) else {
                    truncated = true;
                    break;
                };
                // AH counts its length in 4-octet units less 2 (RFC 4302 §2.2); the others
                // in 8-octet units less 1.
                let header_len = if next == IPPROTO_AH {
                    (usize::from(ext[1]) + 2) * 4
                } else {
                    (usize::from(ext[1]) + 1) * 8
                };
                next = ext[0];
                header_len
            }
            IPPROTO_FRAGMENT => {
                let Some(ext) = bytes::<8>(ctx, l4_offset) else {
                    truncated = true;
                    break;
                };
                next = ext[0];
                first_fragment = be16(ext[2], ext[3]) >> 3 == 0;
                fragment = true;
                8
            }
            _ => {
                complete = true;
                break;
            }
        };
        l4_offset += header_len;
        if l4_offset > MAX_L4_OFFSET {
            break;
        }
        // The whole extension header must be in the frame before what follows is trusted.
        if ctx.data() + l4_offset > ctx.data_end() {
            truncated = true;
            break;
        }
        if !first_fragment {
            // A later fragment: `next` names the fragmented payload, which starts elsewhere.
            complete = true;
            break;
        }
    }
    let class = if !complete {
        Class::Other
    } else {
        match next {
            IPPROTO_TCP if first_fragment => Class::TcpFirst,
            IPPROTO_TCP => Class::TcpLater,
            IPPROTO_UDP => Class::Udp,
            IPPROTO_ICMPV6 => Class::Icmp,
            _ => Class::Other,
        }
    };
    Verdict::Source(Parsed {
        key,
        class,
        l3_offset: offset,
        l4_offset: l4_offset & (MAX_L4_OFFSET * 2 - 1),
        first_fragment,
        fragment,
        truncated,
        dst_fold,
    })
}

/// TCP SYN without ACK (RFC 9293 §3.1); false when the TCP header is not all there.
#[inline(always)]
pub(crate) fn is_connection_attempt(ctx: &XdpContext, l4_offset: usize) -> bool {
    let Some(tcp) = bytes::<20>(ctx, l4_offset) else {
        return false;
    };
    let flags = tcp[13];
    flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0
}
