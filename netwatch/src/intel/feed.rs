//! Indicator feeds in the Zeek Intel framework's format: tab-separated, a `#fields` line
//! naming the columns (`indicator`, `indicator_type`, `meta.source`, `meta.desc`, ...), one
//! indicator a line. Read into a [`Feed`] that answers, for an address, a domain (and its
//! subdomains), a URL or a user agent, which indicator it is. A malformed line is counted and
//! named by its number (the first few), and never stops the load.
//!
//! Plain data and pure functions: the files are read by the caller.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use crate::detect::cidr::Cidr;

/// What kind of thing an indicator is, by its `indicator_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndicatorType {
    /// `Intel::ADDR`: an address.
    Addr,
    /// `Intel::SUBNET`: a network.
    Subnet,
    /// `Intel::DOMAIN`: a domain and its subdomains.
    Domain,
    /// `Intel::URL`: a URL, `host/path` (a scheme, if written, is left out).
    Url,
    /// `Intel::SOFTWARE`: a user agent, whole.
    Software,
}

impl IndicatorType {
    /// As Zeek writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Addr => "Intel::ADDR",
            Self::Subnet => "Intel::SUBNET",
            Self::Domain => "Intel::DOMAIN",
            Self::Url => "Intel::URL",
            Self::Software => "Intel::SOFTWARE",
        }
    }

    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "Intel::ADDR" => Self::Addr,
            "Intel::SUBNET" => Self::Subnet,
            "Intel::DOMAIN" => Self::Domain,
            "Intel::URL" => Self::Url,
            "Intel::SOFTWARE" => Self::Software,
            _ => return None,
        })
    }
}

/// One indicator and what its feed says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indicator {
    /// As the feed writes it.
    pub value: String,
    /// Its type.
    pub kind: IndicatorType,
    /// `meta.source`: shared by every indicator of the same words (a feed repeats them on
    /// each line; a million copies of them were half the memory of a large feed).
    pub source: Arc<str>,
    /// `meta.desc` (empty when the feed has none), shared as `source`.
    pub desc: Arc<str>,
}

/// What a load read of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Indicators taken.
    pub loaded: u64,
    /// Lines that are no indicator (a missing column, an address that does not parse).
    pub malformed: u64,
    /// The first few of them, by number (1-based).
    pub malformed_lines: Vec<u64>,
    /// Indicators of a type netwatch does not match (`Intel::EMAIL`, `Intel::FILE_HASH`...).
    pub unsupported: u64,
}

/// Malformed lines named at most.
const NAMED_LINES: usize = 5;

/// Reads one file's text; the indicators and what the read found.
pub fn parse(text: &str) -> (Vec<Indicator>, LoadReport) {
    let mut report = LoadReport::default();
    let mut indicators = Vec::new();
    let mut columns: Option<HashMap<String, usize>> = None;
    let mut words: HashSet<Arc<str>> = HashSet::new();
    let mut intern = |text: &str| -> Arc<str> {
        if let Some(shared) = words.get(text) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(text);
        words.insert(Arc::clone(&shared));
        shared
    };
    for (number, line) in text.lines().enumerate() {
        let number = number as u64 + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(fields) = line.strip_prefix("#fields") {
            columns = Some(
                fields
                    .split('\t')
                    .filter(|field| !field.is_empty())
                    .enumerate()
                    .map(|(index, name)| (name.trim().to_owned(), index))
                    .collect(),
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let mut bad = || {
            report.malformed += 1;
            if report.malformed_lines.len() < NAMED_LINES {
                report.malformed_lines.push(number);
            }
        };
        let Some(columns) = &columns else {
            bad();
            continue;
        };
        let cells: Vec<&str> = line.split('\t').collect();
        let cell = |name: &str| {
            columns
                .get(name)
                .and_then(|index| cells.get(*index))
                .map(|cell| cell.trim())
                .filter(|cell| !cell.is_empty() && *cell != "-")
        };
        let (Some(value), Some(kind)) = (cell("indicator"), cell("indicator_type")) else {
            bad();
            continue;
        };
        let Some(kind) = IndicatorType::of(kind) else {
            if kind.starts_with("Intel::") {
                report.unsupported += 1;
            } else {
                bad();
            }
            continue;
        };
        let value = match kind {
            IndicatorType::Addr | IndicatorType::Subnet => {
                let parsed = if kind == IndicatorType::Addr {
                    value
                        .parse::<IpAddr>()
                        .ok()
                        .map(|addr| Cidr::host(addr).to_string())
                } else {
                    value.parse::<Cidr>().ok().map(|net| net.to_string())
                };
                let Some(parsed) = parsed else {
                    bad();
                    continue;
                };
                parsed
            }
            IndicatorType::Domain => domain(value),
            IndicatorType::Url => url(value),
            IndicatorType::Software => value.to_owned(),
        };
        indicators.push(Indicator {
            value,
            kind,
            source: intern(cell("meta.source").unwrap_or("")),
            desc: intern(cell("meta.desc").unwrap_or("")),
        });
        report.loaded += 1;
    }
    (indicators, report)
}

/// A domain as it is compared: lower case, no trailing dot.
fn domain(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A URL as it is compared: no scheme, the host in lower case, the path as it is.
fn url(text: &str) -> String {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(text);
    match rest.split_once('/') {
        Some((host, path)) => format!("{}/{path}", domain(host)),
        None => domain(rest),
    }
}

/// Every indicator loaded, looked up by what it is.
#[derive(Debug, Default)]
pub struct Feed {
    indicators: Vec<Indicator>,
    /// Networks by prefix length (only the lengths in use are tried), per family.
    networks: BTreeMap<(bool, u8), HashMap<IpAddr, usize>>,
    domains: HashMap<String, usize>,
    urls: HashMap<String, usize>,
    software: HashMap<String, usize>,
}

impl Feed {
    /// A feed of `indicators`; for one value listed twice, the first wins.
    pub fn new(indicators: Vec<Indicator>) -> Self {
        let mut feed = Self::default();
        for (index, indicator) in indicators.iter().enumerate() {
            match indicator.kind {
                IndicatorType::Addr | IndicatorType::Subnet => {
                    if let Ok(net) = indicator.value.parse::<Cidr>() {
                        feed.networks
                            .entry((net.addr().is_ipv4(), net.prefix_len()))
                            .or_default()
                            .entry(net.addr())
                            .or_insert(index);
                    }
                }
                IndicatorType::Domain => {
                    feed.domains.entry(indicator.value.clone()).or_insert(index);
                }
                IndicatorType::Url => {
                    feed.urls.entry(indicator.value.clone()).or_insert(index);
                }
                IndicatorType::Software => {
                    feed.software
                        .entry(indicator.value.clone())
                        .or_insert(index);
                }
            }
        }
        feed.indicators = indicators;
        feed
    }

    /// Whether none is loaded.
    pub fn is_empty(&self) -> bool {
        self.indicators.is_empty()
    }

    /// Whether address indicators are loaded.
    pub fn has_networks(&self) -> bool {
        !self.networks.is_empty()
    }

    /// Every listed network (address and prefix length), sorted: what the kernel's tries
    /// hold.
    pub fn networks(&self) -> Vec<(IpAddr, u8)> {
        let mut networks: Vec<(IpAddr, u8)> = self
            .networks
            .iter()
            .flat_map(|((_, len), nets)| nets.keys().map(move |addr| (*addr, *len)))
            .collect();
        networks.sort_unstable();
        networks
    }

    /// The indicator of the listed network `addr`/`len` itself (a match the kernel reports).
    pub fn network(&self, addr: IpAddr, len: u8) -> Option<&Indicator> {
        self.networks
            .get(&(addr.is_ipv4(), len))
            .and_then(|nets| nets.get(&addr))
            .map(|index| &self.indicators[*index])
    }

    /// The indicator of the longest listed network that holds `addr`.
    pub fn address(&self, addr: IpAddr) -> Option<&Indicator> {
        let ipv4 = addr.is_ipv4();
        self.networks
            .iter()
            .rev()
            .filter(|((family, _), _)| *family == ipv4)
            .find_map(|((_, len), nets)| nets.get(&Cidr::of(addr, *len).addr()))
            .map(|index| &self.indicators[*index])
    }

    /// The indicator of `name` or of a domain it is under (`a.b.evil.example` is under
    /// `evil.example`).
    pub fn domain(&self, name: &str) -> Option<&Indicator> {
        let name = domain(name);
        let mut rest = name.as_str();
        loop {
            if let Some(index) = self.domains.get(rest) {
                return Some(&self.indicators[*index]);
            }
            rest = rest.split_once('.')?.1;
        }
    }

    /// The indicator of the URL `host` + `path`.
    pub fn url(&self, host: &str, path: &str) -> Option<&Indicator> {
        let path = path.trim_start_matches('/');
        let key = url(&format!("{host}/{path}"));
        self.urls
            .get(&key)
            .or_else(|| self.urls.get(key.trim_end_matches('/')))
            .map(|index| &self.indicators[*index])
    }

    /// The indicator of a user agent, whole.
    pub fn software(&self, user_agent: &str) -> Option<&Indicator> {
        self.software
            .get(user_agent)
            .map(|index| &self.indicators[*index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = "#separator \\x09\n\
        #fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n\
        198.51.100.7\tIntel::ADDR\tabuse.ch\tC2 server\n\
        203.0.113.0/24\tIntel::SUBNET\tfeodo\tbotnet range\n\
        evil.example\tIntel::DOMAIN\tabuse.ch\tloader domain\n\
        http://dl.bad.example/payload.bin\tIntel::URL\turlhaus\tpayload\n\
        Mozilla/4.0 (EvilBot)\tIntel::SOFTWARE\tcustom\tbot user agent\n\
        bad@evil.example\tIntel::EMAIL\tcustom\tphisher\n\
        not-an-address\tIntel::ADDR\tbroken\t-\n\
        only-one-column\n\
        203.0.113.9\tIntel::ADDR\tfeodo\t-\n";

    /// Each type is read; an unsupported one counted, malformed lines counted and named, the
    /// rest loaded; lookups find domains by suffix, URLs without their scheme, networks by
    /// longest prefix.
    #[test]
    fn a_zeek_feed_is_read_and_looked_up() {
        let (indicators, report) = parse(FEED);
        assert_eq!(report.loaded, 6);
        assert_eq!(report.unsupported, 1);
        assert_eq!(report.malformed, 2);
        assert_eq!(report.malformed_lines, [9, 10]);
        let feed = Feed::new(indicators);
        let value = |found: Option<&Indicator>| found.map(|i| i.value.clone());
        assert_eq!(
            value(feed.address("198.51.100.7".parse().unwrap())),
            Some(String::from("198.51.100.7/32"))
        );
        assert_eq!(
            value(feed.address("203.0.113.9".parse().unwrap())),
            Some(String::from("203.0.113.9/32")),
            "the longest prefix"
        );
        assert_eq!(
            value(feed.address("203.0.113.10".parse().unwrap())),
            Some(String::from("203.0.113.0/24"))
        );
        assert_eq!(feed.address("198.51.100.8".parse().unwrap()), None);
        assert_eq!(
            feed.domain("cdn.Evil.Example.").map(|i| &*i.desc),
            Some("loader domain")
        );
        assert_eq!(feed.domain("notevil.example"), None);
        assert_eq!(
            feed.url("dl.bad.example", "/payload.bin")
                .map(|i| &*i.source),
            Some("urlhaus")
        );
        assert_eq!(feed.url("dl.bad.example", "/other"), None);
        assert!(feed.software("Mozilla/4.0 (EvilBot)").is_some());
        assert!(feed.software("Mozilla/5.0").is_none());
        // A line before any #fields is malformed, the rest of the file still read.
        let (_, report) =
            parse("x\tIntel::ADDR\n#fields\tindicator\tindicator_type\n10.0.0.1\tIntel::ADDR\n");
        assert_eq!((report.loaded, report.malformed), (1, 1));
    }
}
