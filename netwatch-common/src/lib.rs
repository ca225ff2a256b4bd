//! Types shared by the netwatch XDP program (`netwatch-ebpf`) and the userspace daemon
//! (`netwatch`): map names, map keys and values.
//!
//! Everything here is `#[repr(C)]` plain data with explicit, zeroed padding, so that the
//! kernel hashes keys byte for byte and both sides agree on every layout. This crate must not
//! hold logic: the kernel side parses and counts, userspace interprets.
#![no_std]

/// Name of the XDP program (the function name in `netwatch-ebpf`).
pub const PROGRAM_NAME: &str = "netwatch";
/// Name of the no-op XDP program used as the cost baseline in benchmarks.
pub const NOOP_PROGRAM_NAME: &str = "noop";
/// Name of the per-CPU LRU hash map: [`SourceKey`] -> [`SourceValue`].
pub const SOURCES_MAP: &str = "SOURCES";
/// Name of the per-CPU array with one [`GlobalStats`] at index 0.
pub const GLOBALS_MAP: &str = "GLOBALS";
/// Name of the array with one [`Settings`] at index 0, written by userspace at run time.
pub const SETTINGS_MAP: &str = "SETTINGS";

/// Bits in a source's bitmap of destination ports, per window.
pub const PORT_BITMAP_BITS: usize = 256;
/// Bits in a source's bitmap of destination hosts, per window.
pub const HOST_BITMAP_BITS: usize = 128;
/// Capacity of [`SOURCES_MAP`] compiled into the object; userspace sets its own at load time.
pub const DEFAULT_MAX_SOURCES: u32 = 65_536;

/// Address family of a [`SourceKey`].
pub const FAMILY_IPV4: u8 = 4;
/// Address family of a [`SourceKey`].
pub const FAMILY_IPV6: u8 = 6;

/// A source IP address, one layout for IPv4 and IPv6.
///
/// An IPv4 address fills `addr[..4]` and leaves the other twelve bytes zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// The address in network byte order.
    pub addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Always zero: the kernel compares keys as raw bytes.
    pub _pad: [u8; 3],
}

impl SourceKey {
    /// The key of an IPv4 source.
    pub const fn ipv4(octets: [u8; 4]) -> Self {
        let mut addr = [0u8; 16];
        addr[0] = octets[0];
        addr[1] = octets[1];
        addr[2] = octets[2];
        addr[3] = octets[3];
        Self {
            addr,
            family: FAMILY_IPV4,
            _pad: [0; 3],
        }
    }

    /// The key of an IPv6 source.
    pub const fn ipv6(addr: [u8; 16]) -> Self {
        Self {
            addr,
            family: FAMILY_IPV6,
            _pad: [0; 3],
        }
    }
}

/// Counters of one source on one CPU. Userspace sums the per-CPU copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames from this source.
    pub packets: u64,
    /// Their length as XDP sees it (Ethernet header included, no FCS).
    pub bytes: u64,
    /// Frames whose final IP protocol is TCP.
    pub tcp_packets: u64,
    /// Frames whose final IP protocol is UDP.
    pub udp_packets: u64,
    /// Frames whose final IP protocol is ICMP (IPv4) or ICMPv6.
    pub icmp_packets: u64,
    /// Every other frame, including IPv6 frames whose extension header chain could not be
    /// walked to its end.
    pub other_packets: u64,
    /// TCP segments with SYN set and ACK clear (connection attempts).
    pub tcp_syn_packets: u64,
}

/// Distinct destination ports and hosts of one source, estimated by linear counting
/// (Whang et al., 1990): every destination sets one bit chosen by a hash; the share of bits
/// left clear gives the count.
///
/// Two windows alternate: packets write window `epoch & 1`, resetting it first when its tag
/// is an older epoch. Userspace closes a window by advancing [`Settings::epoch`] and then
/// reads the window just closed, which the kernel will not touch until the epoch after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSketch {
    /// The epoch each window holds.
    pub epochs: [u32; 2],
    /// Destination port bitmaps (TCP and UDP first fragments).
    pub ports: [[u64; PORT_BITMAP_BITS / 64]; 2],
    /// Destination host bitmaps (every IP frame).
    pub hosts: [[u64; HOST_BITMAP_BITS / 64]; 2],
}

/// The value of [`SOURCES_MAP`]: counters and the spread sketch of one source on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceValue {
    /// Cumulative counters.
    pub stats: SourceStats,
    /// Distinct destinations per window.
    pub sketch: SourceSketch,
}

/// Run-time settings of the XDP program, at index 0 of [`SETTINGS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The current sketch window; never 0 once userspace has started (0 marks unused
    /// windows).
    pub epoch: u32,
    /// Always zero.
    pub _pad: u32,
}

/// Whole-interface counters of one CPU. Userspace sums the per-CPU copies.
///
/// Invariant, for packets and for bytes alike:
/// `sum over sources + overflow + non_ip + malformed == total`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    /// Every frame the program saw.
    pub total_packets: u64,
    /// Their bytes.
    pub total_bytes: u64,
    /// Frames whose EtherType (after at most two VLAN tags) is neither IPv4 nor IPv6.
    pub non_ip_packets: u64,
    /// Their bytes.
    pub non_ip_bytes: u64,
    /// IP frames cut short or invalid before the source address could be trusted (truncated
    /// Ethernet, VLAN or IP header; bad version, IHL or total length). Attributed to no source.
    pub malformed_packets: u64,
    /// Their bytes.
    pub malformed_bytes: u64,
    /// Frames of a source that could not be inserted in the sources map.
    pub overflow_packets: u64,
    /// Their bytes.
    pub overflow_bytes: u64,
    /// Frames attributed to a source but shorter than their IP header says, or whose headers
    /// after the IP header are cut. They are counted for their source as well.
    pub truncated_packets: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with no implicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above; every field is a u64.
    unsafe impl aya::Pod for super::SourceStats {}
    // SAFETY: as above; every field is a u64.
    unsafe impl aya::Pod for super::GlobalStats {}
    // SAFETY: as above; u32 and u64 arrays with the u32 pair first, no padding.
    unsafe impl aya::Pod for super::SourceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Settings {}
}
