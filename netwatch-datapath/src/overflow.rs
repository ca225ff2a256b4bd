//! Traffic without a slot, as the kernel breaks it down: per CPU, in two windows that
//! alternate at each reading ([`netwatch_common::OverflowWindow`]). Userspace advances the
//! window, then reads every CPU's closed one, adds them up and clears them for their next
//! turn. A frame a CPU was counting while the window changed lands in the window it read,
//! closed or not: one cleared a moment later loses at most that frame's few counts, one not
//! yet read is read two readings on.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::BorrowedFd,
};

use netwatch_common::{
    Counter, FAMILY_IPV4, OverflowWindow, PrefixCount, TARGET_FRAGMENT, TARGET_HIGH_PORTS,
    TARGET_ICMP, TARGET_OTHER, TARGET_REFLECTED, TARGET_SYN, TARGET_TCP, TARGET_UDP, TargetKey,
};

use super::slots::{Mapped, linear_count};

/// A source prefix without slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotlessPrefix {
    /// The network address.
    pub addr: IpAddr,
    /// Its length: 16 or 24 for IPv4, 48 or 56 for IPv6.
    pub len: u8,
}

impl SlotlessPrefix {
    /// The prefix of a kernel key (family in the top byte, the prefix's bits right-aligned
    /// below it); `wide` for /16 and /48, else /24 and /56.
    pub(super) fn from_key(key: u64, wide: bool) -> Option<Self> {
        let family = (key >> 56) as u8;
        let bits = key & ((1 << 56) - 1);
        match (family, wide) {
            (FAMILY_IPV4, true) => Some(Self::v4((bits as u32) << 16, 16)),
            (FAMILY_IPV4, false) => Some(Self::v4((bits as u32) << 8, 24)),
            (0, _) => None,
            (_, true) => Some(Self::v6(bits << 16, 48)),
            (_, false) => Some(Self::v6(bits << 8, 56)),
        }
    }

    fn v4(addr: u32, len: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::from(addr)),
            len,
        }
    }

    fn v6(high: u64, len: u8) -> Self {
        Self {
            addr: IpAddr::V6(Ipv6Addr::from(u128::from(high) << 64)),
            len,
        }
    }
}

impl fmt::Display for SlotlessPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What traffic without a slot is, toward its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetKind {
    /// TCP SYN without ACK.
    Syn,
    /// Other TCP.
    Tcp,
    /// UDP not from an amplification port.
    Udp,
    /// UDP from an amplification port (the port is the service's).
    Reflected,
    /// ICMP or ICMPv6.
    Icmp,
    /// Later fragments, whose transport header is in an earlier frame.
    Fragment,
    /// Any other IP protocol.
    Other,
}

impl TargetKind {
    fn from_kernel(kind: u8) -> Option<Self> {
        Some(match kind {
            TARGET_SYN => Self::Syn,
            TARGET_TCP => Self::Tcp,
            TARGET_UDP => Self::Udp,
            TARGET_REFLECTED => Self::Reflected,
            TARGET_ICMP => Self::Icmp,
            TARGET_FRAGMENT => Self::Fragment,
            TARGET_OTHER => Self::Other,
            _ => return None,
        })
    }

    /// The name used in JSON, the store and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Reflected => "reflected",
            Self::Icmp => "icmp",
            Self::Fragment => "fragment",
            Self::Other => "other",
        }
    }
}

/// A destination of traffic without a slot: address, kind and port class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The destination address.
    pub addr: IpAddr,
    /// What the traffic is.
    pub kind: TargetKind,
    /// The destination port (TCP, UDP), port 0 included; `None` for the ports from
    /// [`netwatch_common::TARGET_HIGH_PORTS`] on, one class, and for kinds without ports. For
    /// [`TargetKind::Reflected`], the amplification service's port the traffic comes from.
    pub port: Option<u16>,
}

impl Target {
    fn from_key(key: &TargetKey) -> Option<Self> {
        let kind = TargetKind::from_kernel(key.kind)?;
        let addr = match key.family {
            0 => return None,
            FAMILY_IPV4 => IpAddr::V4(Ipv4Addr::new(
                key.addr[0],
                key.addr[1],
                key.addr[2],
                key.addr[3],
            )),
            _ => IpAddr::V6(Ipv6Addr::from(key.addr)),
        };
        let port = match kind {
            TargetKind::Syn | TargetKind::Tcp | TargetKind::Udp => {
                (key.port < TARGET_HIGH_PORTS).then_some(key.port)
            }
            TargetKind::Reflected => Some(key.port),
            TargetKind::Icmp | TargetKind::Fragment | TargetKind::Other => None,
        };
        Some(Self { addr, kind, port })
    }

    /// The port as it is said: the number, `high` for the high ports' class; `None` for kinds
    /// without ports.
    pub fn port_name(&self) -> Option<String> {
        match (self.kind, self.port) {
            (_, Some(port)) => Some(port.to_string()),
            (TargetKind::Syn | TargetKind::Tcp | TargetKind::Udp, None) => {
                Some(String::from("high"))
            }
            (_, None) => None,
        }
    }
}

/// "10.4.0.6 udp:443", "10.4.0.6 udp:0", "10.4.0.6 syn:80", "10.4.0.6 udp:high",
/// "10.4.0.6 udp from :53 (reflection)", "10.4.0.6 icmp".
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = match self.addr {
            IpAddr::V6(addr) => format!("[{addr}]"),
            IpAddr::V4(addr) => addr.to_string(),
        };
        match (self.kind, self.port_name()) {
            (TargetKind::Reflected, Some(port)) => {
                write!(f, "{addr} udp from :{port} (reflection)")
            }
            (kind, Some(port)) => write!(f, "{addr} {}:{port}", kind.name()),
            (kind, None) => write!(f, "{addr} {}", kind.name()),
        }
    }
}

/// Packets and bytes.
pub type Traffic = Counter;

/// The overflow of one window, all CPUs added up. In each of the three lists, its entries
/// and its `other` add up to `total`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverflowBreakdown {
    /// Every frame without a slot in the window.
    pub total: Traffic,
    /// By IPv4 /16 and IPv6 /48, most packets first.
    pub wide: Vec<(SlotlessPrefix, Traffic)>,
    /// Frames whose wide prefix found no bucket in its CPU's table.
    pub wide_other: Traffic,
    /// By IPv4 /24 and IPv6 /56, most packets first.
    pub narrow: Vec<(SlotlessPrefix, Traffic)>,
    /// Frames whose narrow prefix found no bucket.
    pub narrow_other: Traffic,
    /// By destination and class, most packets first.
    pub targets: Vec<(Target, Traffic)>,
    /// Frames whose destination found no bucket.
    pub target_other: Traffic,
    /// Distinct source addresses, estimated (linear counting over 65,536 bits: within a few
    /// percent up to a few hundred thousand).
    pub sources: u32,
    /// Distinct wide prefixes, estimated likewise over 16,384 bits.
    pub prefixes: u32,
}

impl OverflowBreakdown {
    /// Adds the breakdown of another interface read at the same time. Its distinct sources
    /// and prefixes are added too: an upper bound, a spoofed address being rarely the same on
    /// two links.
    pub fn absorb(&mut self, other: &OverflowBreakdown) {
        fn merge<K: Ord + Copy + std::hash::Hash>(
            into: &mut Vec<(K, Traffic)>,
            from: &[(K, Traffic)],
        ) {
            if from.is_empty() {
                return;
            }
            let mut map: HashMap<K, Traffic> = into.drain(..).collect();
            for &(key, traffic) in from {
                add_traffic(map.entry(key).or_default(), traffic);
            }
            *into = sorted(map);
        }
        add_traffic(&mut self.total, other.total);
        merge(&mut self.wide, &other.wide);
        add_traffic(&mut self.wide_other, other.wide_other);
        merge(&mut self.narrow, &other.narrow);
        add_traffic(&mut self.narrow_other, other.narrow_other);
        merge(&mut self.targets, &other.targets);
        add_traffic(&mut self.target_other, other.target_other);
        self.sources += other.sources;
        self.prefixes += other.prefixes;
    }
}

/// Adds `part` to `sum`.
pub fn add_traffic(sum: &mut Traffic, part: Traffic) {
    sum.packets += part.packets;
    sum.bytes += part.bytes;
}

/// Most packets first, then most bytes, then by key.
fn sorted<K: Ord + Copy + std::hash::Hash>(map: HashMap<K, Traffic>) -> Vec<(K, Traffic)> {
    let mut list: Vec<_> = map.into_iter().collect();
    list.sort_by(|(a, x), (b, y)| {
        y.packets
            .cmp(&x.packets)
            .then(y.bytes.cmp(&x.bytes))
            .then(a.cmp(b))
    });
    list
}

/// Adds up windows of several CPUs.
#[derive(Default)]
struct Merge {
    total: Traffic,
    wide: HashMap<SlotlessPrefix, Traffic>,
    wide_other: Traffic,
    narrow: HashMap<SlotlessPrefix, Traffic>,
    narrow_other: Traffic,
    targets: HashMap<Target, Traffic>,
    target_other: Traffic,
    sources: Vec<u64>,
    prefixes: Vec<u64>,
}

impl Merge {
    fn add(&mut self, window: &OverflowWindow) {
        add_traffic(&mut self.total, window.total);
        add_traffic(&mut self.wide_other, window.wide_other);
        add_traffic(&mut self.narrow_other, window.narrow_other);
        add_traffic(&mut self.target_other, window.target_other);
        for (table, map, other, wide) in [
            (&window.wide, &mut self.wide, &mut self.wide_other, true),
            (
                &window.narrow,
                &mut self.narrow,
                &mut self.narrow_other,
                false,
            ),
        ] {
            for &PrefixCount { key, traffic } in table {
                if traffic.packets == 0 {
                    continue;
                }
                match SlotlessPrefix::from_key(key, wide) {
                    Some(prefix) => add_traffic(map.entry(prefix).or_default(), traffic),
                    None => add_traffic(other, traffic),
                }
            }
        }
        for bucket in &window.targets {
            if bucket.traffic.packets == 0 {
                continue;
            }
            match Target::from_key(&bucket.key) {
                Some(target) => {
                    add_traffic(self.targets.entry(target).or_default(), bucket.traffic)
                }
                None => add_traffic(&mut self.target_other, bucket.traffic),
            }
        }
        or_into(&mut self.sources, &window.sources);
        or_into(&mut self.prefixes, &window.prefixes);
    }

    fn finish(self) -> OverflowBreakdown {
        if self.total.packets == 0 {
            return OverflowBreakdown::default();
        }
        OverflowBreakdown {
            total: self.total,
            wide: sorted(self.wide),
            wide_other: self.wide_other,
            narrow: sorted(self.narrow),
            narrow_other: self.narrow_other,
            targets: sorted(self.targets),
            target_other: self.target_other,
            sources: linear_count(&self.sources),
            prefixes: linear_count(&self.prefixes),
        }
    }
}

fn or_into(sum: &mut Vec<u64>, words: &[u64]) {
    if sum.is_empty() {
        sum.extend_from_slice(words);
    } else {
        for (sum, word) in sum.iter_mut().zip(words) {
            *sum |= word;
        }
    }
}

/// The windows of every CPU, mapped into this process.
pub(super) struct Windows {
    mapped: Mapped<OverflowWindow>,
    cpus: usize,
}

impl Windows {
    /// Maps the windows of `cpus` CPUs (two each) of the array map `fd`.
    pub(super) fn map(fd: BorrowedFd<'_>, cpus: usize) -> std::io::Result<Self> {
        Ok(Self {
            mapped: Mapped::new(fd, 2 * cpus)?,
            cpus,
        })
    }

    /// Reads and clears window `which & 1` of every CPU: the one closed by the caller, who
    /// moved the kernel on to the other.
    pub(super) fn take(&mut self, which: u32) -> OverflowBreakdown {
        let mut merge = Merge::default();
        for cpu in 0..self.cpus {
            let index = 2 * cpu + (which & 1) as usize;
            // SAFETY: an element of the live mapping, of a plain-data type; a window is
            // read whole only when its total says it was written.
            let total = unsafe { (&raw const (*self.mapped.at(index)).total).read_volatile() };
            if total.packets == 0 {
                continue;
            }
            // SAFETY: as above. 33 KiB, read once per CPU and reading at most.
            let window = Box::new(unsafe { self.mapped.at(index).read_volatile() });
            merge.add(&window);
            self.mapped.write(index, OverflowWindow::default());
        }
        merge.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(packets: u64) -> Traffic {
        Traffic {
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn kernel_keys_become_prefixes() {
        let v4 = (u64::from(FAMILY_IPV4) << 56) | 0x0a04;
        assert_eq!(
            SlotlessPrefix::from_key(v4, true).map(|p| p.to_string()),
            Some("10.4.0.0/16".to_owned())
        );
        let v4 = (u64::from(FAMILY_IPV4) << 56) | 0x0a_04_07;
        assert_eq!(
            SlotlessPrefix::from_key(v4, false).map(|p| p.to_string()),
            Some("10.4.7.0/24".to_owned())
        );
        let v6 = (6u64 << 56) | 0x2001_0db8_0042;
        assert_eq!(
            SlotlessPrefix::from_key(v6, true).map(|p| p.to_string()),
            Some("2001:db8:42::/48".to_owned())
        );
        let v6 = (6u64 << 56) | 0x20_01_0d_b8_00_42_17;
        assert_eq!(
            SlotlessPrefix::from_key(v6, false).map(|p| p.to_string()),
            Some("2001:db8:42:1700::/56".to_owned())
        );
        assert_eq!(SlotlessPrefix::from_key(0, true), None);
    }

    #[test]
    fn windows_of_several_cpus_add_up_and_keep_their_identity() {
        let mut a = OverflowWindow::default();
        let mut b = OverflowWindow::default();
        let key = (u64::from(FAMILY_IPV4) << 56) | 0xcb00;
        a.wide[3] = PrefixCount {
            key,
            traffic: traffic(5),
        };
        b.wide[200] = PrefixCount {
            key,
            traffic: traffic(7),
        };
        b.wide_other = traffic(1);
        a.narrow_other = traffic(5);
        b.narrow_other = traffic(8);
        let mut target = TargetKey {
            family: FAMILY_IPV4,
            kind: TARGET_UDP,
            port: 443,
            ..TargetKey::default()
        };
        target.addr[..4].copy_from_slice(&[10, 4, 0, 6]);
        a.targets[9] = netwatch_common::TargetCount {
            key: target,
            traffic: traffic(5),
        };
        b.targets[1] = netwatch_common::TargetCount {
            key: target,
            traffic: traffic(8),
        };
        a.total = traffic(5);
        b.total = traffic(8);
        a.sources[0] = 0b1011;
        b.sources[0] = 0b0110;
        let mut merge = Merge::default();
        merge.add(&a);
        merge.add(&b);
        let breakdown = merge.finish();
        assert_eq!(breakdown.total, traffic(13));
        assert_eq!(breakdown.wide.len(), 1);
        assert_eq!(breakdown.wide[0].0.to_string(), "203.0.0.0/16");
        assert_eq!(breakdown.wide[0].1, traffic(12));
        assert_eq!(breakdown.wide_other, traffic(1));
        assert_eq!(breakdown.narrow_other, traffic(13));
        assert_eq!(breakdown.targets.len(), 1);
        assert_eq!(breakdown.targets[0].0.to_string(), "10.4.0.6 udp:443");
        assert_eq!(breakdown.targets[0].1, traffic(13));
        // Four distinct bits set of 65,536: four sources.
        assert_eq!(breakdown.sources, 4);
    }

    #[test]
    fn targets_say_what_they_are() {
        let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let show = |kind, port| Target { addr, kind, port }.to_string();
        assert_eq!(show(TargetKind::Syn, Some(80)), "192.0.2.9 syn:80");
        assert_eq!(show(TargetKind::Udp, None), "192.0.2.9 udp:high");
        assert_eq!(show(TargetKind::Udp, Some(0)), "192.0.2.9 udp:0");
        assert_eq!(
            show(TargetKind::Reflected, Some(53)),
            "192.0.2.9 udp from :53 (reflection)"
        );
        assert_eq!(show(TargetKind::Icmp, None), "192.0.2.9 icmp");
        let v6 = Target {
            addr: "2001:db8::6".parse().unwrap(),
            kind: TargetKind::Udp,
            port: Some(53),
        };
        assert_eq!(v6.to_string(), "[2001:db8::6] udp:53");
    }

    /// The kernel's key: port 0 is port 0, the high ports' class is marked by its first
    /// port, and kinds without ports have none.
    #[test]
    fn ports_from_the_kernel_keep_port_0_apart_from_the_high_ports() {
        let key = |kind, port| TargetKey {
            family: FAMILY_IPV4,
            kind,
            port,
            addr: [192, 0, 2, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..TargetKey::default()
        };
        let port = |kind, port| Target::from_key(&key(kind, port)).map(|target| target.port);
        assert_eq!(port(TARGET_UDP, 0), Some(Some(0)));
        assert_eq!(port(TARGET_UDP, 443), Some(Some(443)));
        assert_eq!(port(TARGET_UDP, TARGET_HIGH_PORTS - 1), Some(Some(32_767)));
        assert_eq!(port(TARGET_SYN, TARGET_HIGH_PORTS), Some(None));
        assert_eq!(port(TARGET_REFLECTED, 53), Some(Some(53)));
        assert_eq!(port(TARGET_ICMP, 0), Some(None));
    }
}
