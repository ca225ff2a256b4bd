//! IPv4 and IPv6 networks: parsing `192.0.2.0/24`, membership, and the prefix of an address.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// The host `addr` alone: a /32 or a /128.
    pub fn host(addr: IpAddr) -> Self {
        Self::of(addr, if addr.is_ipv4() { 32 } else { 128 })
    }

    /// The network of `len` bits that holds `addr`; `len` is capped at the family's width.
    pub fn of(addr: IpAddr, len: u8) -> Self {
        match addr {
            IpAddr::V4(v4) => {
                let len = len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Self {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    len,
                }
            }
            IpAddr::V6(v6) => {
                let len = len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Self {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    len,
                }
            }
        }
    }

    /// True when `addr` is in this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && Self::of(addr, self.len) == *self
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a text is not a network. The text is shown escaped (it may come from a hostile local
/// client): the message goes to logs, terminals and control-socket answers as it is.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No IP address before the `/`.
    #[error("\"{0}\" is not an IP address or network")]
    NotAnAddress(String),
    /// A prefix length that is not plain decimal digits within the family's width.
    #[error("\"{shown}\": prefix length must be 0 to {width}")]
    Length {
        /// The text, escaped.
        shown: String,
        /// 32 or 128.
        width: u8,
    },
    /// Bits set past the prefix length.
    #[error("\"{shown}\" has host bits set; did you mean {meant}?")]
    HostBits {
        /// The text, escaped.
        shown: String,
        /// The network that holds the address.
        meant: Cidr,
    },
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/LEN`, or a bare address (a host network), strictly: no white space, a length of
    /// plain decimal digits without a sign or a leading zero. Host bits must be clear, so
    /// that a typo like `10.0.0.1/8` is caught rather than silently widened. An IPv4-mapped
    /// IPv6 network (`::ffff:10.0.0.1`, `::ffff:10.0.0.0/104`) is the IPv4 network it maps:
    /// that is how its packets arrive and are counted, so that is what matches them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Escaped here, once: the message goes to logs, terminals and control-socket answers.
        let shown = crate::escape::escape(text);
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::NotAnAddress(shown.to_string()))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => width,
            Some(len) => {
                let digits = !len.is_empty()
                    && len.bytes().all(|b| b.is_ascii_digit())
                    && (len == "0" || !len.starts_with('0'));
                digits
                    .then(|| len.parse::<u8>().ok())
                    .flatten()
                    .filter(|len| *len <= width)
                    .ok_or_else(|| CidrError::Length {
                        shown: shown.to_string(),
                        width,
                    })?
            }
        };
        let cidr = Self::of(addr, len);
        if cidr.addr != addr {
            return Err(CidrError::HostBits {
                shown: shown.into_owned(),
                meant: cidr,
            });
        }
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
            && len >= 96
        {
            return Ok(Self::of(IpAddr::V4(v4), len - 96));
        }
        Ok(cidr)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn prefixes_of_addresses() {
        let addr: IpAddr = "192.0.2.77".parse().unwrap();
        assert_eq!(Cidr::of(addr, 24).to_string(), "192.0.2.0/24");
        assert_eq!(Cidr::of(addr, 0).to_string(), "0.0.0.0/0");
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(Cidr::of(v6, 64).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Cidr::of(v6, 200).prefix_len(), 128);
    }

    #[test]
    fn membership_respects_family_and_length() {
        let net = cidr("10.20.0.0/16");
        assert!(net.contains("10.20.255.1".parse().unwrap()));
        assert!(!net.contains("10.21.0.1".parse().unwrap()));
        assert!(!net.contains("::ffff:10.20.0.1".parse().unwrap()));
        assert!(cidr("::/0").contains("2001:db8::1".parse().unwrap()));
        assert!(cidr("192.0.2.9").contains("192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn bad_networks_say_why() {
        assert!(
            "10.0.0.1/8"
                .parse::<Cidr>()
                .unwrap_err()
                .to_string()
                .contains("10.0.0.0/8")
        );
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .to_string()
                .contains("0 to 32")
        );
        assert!("host.example/24".parse::<Cidr>().is_err());
    }

    /// No white space, no sign, no leading zero, no empty length: what is not plainly a
    /// network is refused, not guessed at.
    #[test]
    fn loose_forms_are_refused() {
        for text in [
            "203.0.113.8 /32",
            "203.0.113.8/ 32",
            " 203.0.113.8",
            "203.0.113.8\t",
            "203.0.113.8/+32",
            "203.0.113.8/032",
            "203.0.113.8/",
            "203.0.113.8/32/32",
            "/32",
        ] {
            assert!(text.parse::<Cidr>().is_err(), "{text:?} was taken");
        }
        assert_eq!(cidr("10.0.0.0/8").prefix_len(), 8);
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
    }

    /// An IPv4-mapped IPv6 network is the IPv4 network it maps, so a never-ban list and the
    /// kernel's IPv4 tries see it as what it is.
    #[test]
    fn ipv4_mapped_networks_are_ipv4() {
        assert_eq!(cidr("::ffff:10.203.0.1"), cidr("10.203.0.1"));
        assert_eq!(cidr("::ffff:10.203.0.0/112"), cidr("10.203.0.0/16"));
        assert_eq!(cidr("::ffff:0:0/96"), cidr("0.0.0.0/0"));
        // Shorter than the mapped range: an IPv6 network like any other.
        assert!(cidr("::/64").addr().is_ipv6());
    }

    /// An outsider's bytes in a refused network are escaped in the message, once.
    #[test]
    fn a_refusal_escapes_what_it_quotes_once() {
        let err = "10.0.0.\u{1b}[2J".parse::<Cidr>().unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains("10.0.0.\\x1b[2J"), "{err}");
        assert!(!err.contains("\\\\"), "{err}");
    }
}
