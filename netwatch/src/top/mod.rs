//! `netwatch top`'s model: what the daemon's stream has said (interval records, alerts,
//! events), what the user asked for (sort, filter, view, selection), and the rows that follow.
//! Pure: records and keys in, rows out; the terminal is [`view`]'s, the socket the command's.

pub mod view;

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::IpAddr,
};

use serde_json::Value;

use crate::detect::cidr::Cidr;

/// Intervals of history kept per interface and per source (the sparklines).
pub const HISTORY: usize = 300;
/// Alerts and events kept for their panes.
const KEPT: usize = 100;
/// Sources whose rate history is kept, at most (beyond, those listed now).
const SOURCES_KEPT: usize = 4_096;

/// A column the table sorts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// The address (or prefix), ascending.
    Source,
    /// Packets per second.
    Pps,
    /// Bits per second.
    Bps,
    /// TCP SYN per interval.
    Syn,
    /// Distinct destination ports.
    Ports,
    /// Distinct destination hosts.
    Hosts,
}

impl Column {
    /// Every column, in the order of the table and of the keys 1 to 6.
    pub const ALL: [Column; 6] = [
        Column::Source,
        Column::Pps,
        Column::Bps,
        Column::Syn,
        Column::Ports,
        Column::Hosts,
    ];

    /// Its header in the view of destinations: their distinct sources (SRCS) in the column
    /// of hosts.
    pub fn title_for(self, destinations: bool) -> &'static str {
        match (self, destinations) {
            (Column::Source, true) => "DESTINATION",
            (Column::Hosts, true) => "SRCS",
            _ => self.title(),
        }
    }

    /// Its header.
    pub fn title(self) -> &'static str {
        match self {
            Column::Source => "SOURCE",
            Column::Pps => "PKT/S",
            Column::Bps => "BIT/S",
            Column::Syn => "SYN",
            Column::Ports => "PORTS",
            Column::Hosts => "HOSTS",
        }
    }
}

/// One row of the table: a source, or a prefix of several.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// The address or prefix.
    pub name: String,
    /// Packets per second.
    pub pps: f64,
    /// Bits per second.
    pub bps: f64,
    /// Packets by protocol.
    pub tcp: u64,
    /// See `tcp`.
    pub udp: u64,
    /// See `tcp`.
    pub icmp: u64,
    /// See `tcp`.
    pub other: u64,
    /// TCP SYN without ACK.
    pub syn: u64,
    /// Distinct destination ports (the largest of a prefix's sources).
    pub ports: u64,
    /// Distinct destination hosts (the largest of a prefix's sources).
    pub hosts: u64,
    /// Named by an unknown-source alert: not among the sources netwatch knows.
    pub new: bool,
    /// Its AS and country (`AS64500 NL`), when the daemon's `[enrich]` knows them; a
    /// prefix's when all its sources agree.
    pub place: String,
    /// Its AS's organisation, for the details.
    pub as_org: String,
}

impl Row {
    fn key(&self, column: Column) -> f64 {
        match column {
            Column::Source => 0.0,
            Column::Pps => self.pps,
            Column::Bps => self.bps,
            Column::Syn => self.syn as f64,
            Column::Ports => self.ports as f64,
            Column::Hosts => self.hosts as f64,
        }
    }

    /// The protocol mix as percentages of TCP, UDP, ICMP and other.
    pub fn mix(&self) -> [u64; 4] {
        let total = (self.tcp + self.udp + self.icmp + self.other).max(1);
        [self.tcp, self.udp, self.icmp, self.other].map(|n| (n * 100 + total / 2) / total)
    }
}

/// One interface's stream (or `all`, the sum).
#[derive(Clone, Debug, Default)]
pub struct Interface {
    /// The last interval record.
    pub last: Option<Value>,
    /// Packets per second of the last intervals, oldest first.
    pub pps: VecDeque<u64>,
    /// XDP mode, from the daemon's status.
    pub mode: String,
}

/// What the user is typing into the filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input(pub String);

/// What a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing visible.
    None,
    /// Redraw.
    Redraw,
    /// Leave.
    Quit,
}

/// A key, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Tab.
    Tab,
    /// Up arrow.
    Up,
    /// Down arrow.
    Down,
    /// Ctrl-C.
    Interrupt,
}

/// Everything `top` shows.
#[derive(Debug)]
pub struct Model {
    /// Interfaces by name, `all` included when the daemon watches several.
    pub interfaces: BTreeMap<String, Interface>,
    /// The interface shown.
    pub current: Option<String>,
    /// The daemon's status when `top` connected (pid, start, interfaces).
    pub status: Option<Value>,
    /// Latest alerts, newest last.
    pub alerts: VecDeque<Value>,
    /// Latest events, newest last.
    pub events: VecDeque<Value>,
    /// Sources named by unknown-source alerts.
    pub new_sources: HashSet<String>,
    /// Packets per second of each source seen, for its details.
    pub source_pps: HashMap<String, VecDeque<f64>>,
    /// The column the table is sorted by.
    pub sort: Column,
    /// Prefixes instead of sources.
    pub prefixes: bool,
    /// The hosts of the local networks (or, sampled, any destinations: what they receive)
    /// instead of the sources.
    pub destinations: bool,
    /// The filter in force: a CIDR, or a part of an address.
    pub filter: Option<String>,
    /// The filter being typed.
    pub input: Option<Input>,
    /// Updates are held.
    pub paused: bool,
    /// The selected row.
    pub selected: usize,
    /// The details of the selected row are shown.
    pub details: bool,
    /// The daemon stopped (the stream ended).
    pub gone: bool,
    /// The signature rules in force, by index: the last `add` or `extend` record of each,
    /// until its `remove`.
    pub rules: BTreeMap<u64, Value>,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            interfaces: BTreeMap::new(),
            current: None,
            status: None,
            alerts: VecDeque::new(),
            events: VecDeque::new(),
            new_sources: HashSet::new(),
            source_pps: HashMap::new(),
            sort: Column::Pps,
            prefixes: false,
            destinations: false,
            filter: None,
            input: None,
            paused: false,
            selected: 0,
            details: false,
            gone: false,
            rules: BTreeMap::new(),
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, value: T, bound: usize) {
    if queue.len() == bound {
        queue.pop_front();
    }
    queue.push_back(value);
}

impl Model {
    /// The daemon's status: its interfaces and their modes.
    pub fn set_status(&mut self, status: Value) {
        for interface in status["interfaces"].as_array().into_iter().flatten() {
            if let Some(name) = interface["iface"].as_str() {
                let entry = self.interfaces.entry(name.to_owned()).or_default();
                entry.mode = interface["mode"].as_str().unwrap_or("").to_owned();
                if self.current.is_none() {
                    self.current = Some(name.to_owned());
                }
            }
        }
        self.status = Some(status);
        self.gone = false;
    }

    /// One record of the stream.
    pub fn apply(&mut self, record: Value) {
        match record["type"].as_str() {
            Some("interval") if !self.paused => {
                let Some(iface) = record["iface"].as_str().map(str::to_owned) else {
                    return;
                };
                // With several interfaces the sum is what one watches first.
                if self.current.is_none()
                    || (iface == "all" && !self.interfaces.contains_key("all"))
                {
                    self.current = Some(iface.clone());
                }
                let entry = self.interfaces.entry(iface.clone()).or_default();
                push_bounded(
                    &mut entry.pps,
                    record["pps"].as_f64().unwrap_or(0.0).round() as u64,
                    HISTORY,
                );
                if iface != "all" {
                    for source in record["top"].as_array().into_iter().flatten() {
                        if let Some(name) = source["source"].as_str() {
                            let history = self.source_pps.entry(name.to_owned()).or_default();
                            push_bounded(history, source["pps"].as_f64().unwrap_or(0.0), HISTORY);
                        }
                    }
                    // Bounded under a flood of spoofed sources: past a few thousand, only the
                    // sources listed now keep their history.
                    if self.source_pps.len() > SOURCES_KEPT {
                        let listed: HashSet<&str> = record["top"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s["source"].as_str())
                            .collect();
                        self.source_pps
                            .retain(|name, _| listed.contains(name.as_str()));
                    }
                }
                entry.last = Some(record);
            }
            Some("alert") => {
                if record["kind"] == "unknown_source" {
                    if let Some(subject) = record["subject"].as_str() {
                        self.new_sources.insert(subject.to_owned());
                    }
                    for member in record["sources"]["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        if let Some(member) = member.as_str() {
                            self.new_sources.insert(member.to_owned());
                        }
                    }
                }
                push_bounded(&mut self.alerts, record, KEPT);
            }
            Some("event") => push_bounded(&mut self.events, record, KEPT),
            // Rules in force by index, and each change among the alerts, where the attack
            // that set it is.
            Some("rule") => {
                let index = record["index"].as_u64().unwrap_or(u64::MAX);
                match record["change"].as_str() {
                    Some("add" | "extend" | "restore") => {
                        self.rules.insert(index, record.clone());
                    }
                    Some("remove") => {
                        self.rules.remove(&index);
                    }
                    _ => {}
                }
                if record["change"] != "extend" {
                    push_bounded(&mut self.alerts, record, KEPT);
                }
            }
            _ => {}
        }
    }

    /// The interface shown.
    pub fn interface(&self) -> Option<(&str, &Interface)> {
        let name = self.current.as_deref()?;
        Some((name, self.interfaces.get(name)?))
    }

    /// The rows of the table: sources (or prefixes) of the interface shown, filtered, sorted.
    pub fn rows(&self) -> Vec<Row> {
        let Some((_, interface)) = self.interface() else {
            return Vec::new();
        };
        let Some(last) = &interface.last else {
            return Vec::new();
        };
        let (list, name_field) = if self.destinations {
            ("destinations", "destination")
        } else {
            ("top", "source")
        };
        let sources = last[list].as_array().cloned().unwrap_or_default();
        let mut rows: Vec<Row> = sources
            .iter()
            .filter_map(|source| {
                let name = source[name_field].as_str()?.to_owned();
                let n = |field: &str| source[field].as_u64().unwrap_or(0);
                let place = [
                    source["asn"].as_u64().map(|asn| format!("AS{asn}")),
                    source["country"].as_str().map(str::to_owned),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
                Some(Row {
                    place,
                    as_org: source["as_org"].as_str().unwrap_or_default().to_owned(),
                    new: self.new_sources.contains(&name),
                    pps: source["pps"].as_f64().unwrap_or(0.0),
                    bps: source["bps"].as_f64().unwrap_or(0.0),
                    tcp: n("tcp"),
                    udp: n("udp"),
                    icmp: n("icmp"),
                    other: n("other"),
                    syn: n("syn"),
                    ports: n("ports"),
                    // A destination's column of hosts is that of its sources.
                    hosts: if self.destinations {
                        n("sources_estimate")
                    } else {
                        n("hosts")
                    },
                    name,
                })
            })
            .collect();
        if self.prefixes && !self.destinations {
            rows = by_prefix(rows);
        }
        if let Some(filter) = &self.filter {
            rows.retain(|row| matches(filter, &row.name));
        }
        let sort = self.sort;
        rows.sort_by(|a, b| match sort {
            Column::Source => sort_key(&a.name).cmp(&sort_key(&b.name)),
            _ => b
                .key(sort)
                .partial_cmp(&a.key(sort))
                .unwrap_or(Ordering::Equal)
                .then_with(|| sort_key(&a.name).cmp(&sort_key(&b.name))),
        });
        rows
    }

    /// Handles a key.
    pub fn key(&mut self, key: Key) -> Action {
        if let Some(input) = &mut self.input {
            match key {
                Key::Enter => {
                    let text = input.0.trim().to_owned();
                    self.filter = (!text.is_empty()).then_some(text);
                    self.input = None;
                    self.selected = 0;
                }
                Key::Esc => self.input = None,
                Key::Backspace => {
                    input.0.pop();
                }
                Key::Char(c) if !c.is_control() && input.0.len() < 64 => input.0.push(c),
                Key::Interrupt => return Action::Quit,
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        match key {
            Key::Char('q') | Key::Interrupt => return Action::Quit,
            Key::Char('s') => {
                let at = Column::ALL
                    .iter()
                    .position(|c| *c == self.sort)
                    .unwrap_or(0);
                self.sort = Column::ALL[(at + 1) % Column::ALL.len()];
            }
            Key::Char(c @ '1'..='6') => {
                self.sort = Column::ALL[usize::from(c as u8 - b'1')];
            }
            Key::Char('/') => self.input = Some(Input(self.filter.clone().unwrap_or_default())),
            Key::Char('p') => self.paused = !self.paused,
            Key::Char('x') => {
                self.prefixes = !self.prefixes;
                self.destinations = false;
                self.selected = 0;
            }
            Key::Char('d') => {
                self.destinations = !self.destinations;
                self.selected = 0;
            }
            Key::Esc => {
                if self.details {
                    self.details = false;
                } else {
                    self.filter = None;
                }
            }
            Key::Enter => self.details = !self.details,
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => {
                self.selected = (self.selected + 1).min(self.rows().len().saturating_sub(1))
            }
            Key::Tab => {
                let names: Vec<&String> = self.interfaces.keys().collect();
                if !names.is_empty() {
                    let at = self
                        .current
                        .as_ref()
                        .and_then(|current| names.iter().position(|n| *n == current))
                        .map_or(0, |at| (at + 1) % names.len());
                    self.current = Some(names[at].clone());
                    self.selected = 0;
                }
            }
            _ => return Action::None,
        }
        Action::Redraw
    }

    /// The alerts that name `name` (as subject or contributor), newest first.
    pub fn alerts_about(&self, name: &str) -> Vec<&Value> {
        self.alerts
            .iter()
            .rev()
            .filter(|alert| {
                alert["subject"] == name
                    || alert["contributors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["subject"] == name)
            })
            .collect()
    }

    /// The events whose client is `name`, newest first.
    pub fn events_about(&self, name: &str) -> Vec<&Value> {
        self.events
            .iter()
            .rev()
            .filter(|event| {
                event["client"]
                    .as_str()
                    .and_then(|client| client.parse::<std::net::SocketAddr>().ok())
                    .is_some_and(|client| client.ip().to_string() == name)
            })
            .collect()
    }
}

/// An address sorts numerically, and before anything that is not one.
fn sort_key(name: &str) -> (u8, Option<IpAddr>, String) {
    let addr = name
        .split('/')
        .next()
        .and_then(|a| a.parse::<IpAddr>().ok());
    (u8::from(addr.is_none()), addr, name.to_owned())
}

/// Whether `name` passes `filter`: inside it when it is a CIDR or an address, else containing
/// it.
pub fn matches(filter: &str, name: &str) -> bool {
    let addr = name
        .split('/')
        .next()
        .and_then(|a| a.parse::<IpAddr>().ok());
    match (filter.parse::<Cidr>(), addr) {
        (Ok(cidr), Some(addr)) => cidr.contains(addr),
        _ => name.contains(filter),
    }
}

/// Sources summed by /24 (IPv4) or /64 (IPv6).
fn by_prefix(rows: Vec<Row>) -> Vec<Row> {
    let mut prefixes: BTreeMap<String, Row> = BTreeMap::new();
    for row in rows {
        let Ok(addr) = row.name.parse::<IpAddr>() else {
            continue;
        };
        let prefix = match addr {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!(
                    "{}/64",
                    std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)
                )
            }
        };
        let sum = prefixes.entry(prefix.clone()).or_insert_with(|| Row {
            name: prefix,
            place: row.place.clone(),
            as_org: row.as_org.clone(),
            ..Row::default()
        });
        if sum.place != row.place {
            sum.place.clear();
            sum.as_org.clear();
        }
        sum.pps += row.pps;
        sum.bps += row.bps;
        sum.tcp += row.tcp;
        sum.udp += row.udp;
        sum.icmp += row.icmp;
        sum.other += row.other;
        sum.syn += row.syn;
        sum.ports = sum.ports.max(row.ports);
        sum.hosts = sum.hosts.max(row.hosts);
        sum.new |= row.new;
    }
    prefixes.into_values().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn interval(iface: &str, sources: &[(&str, f64, u64)]) -> Value {
        json!({
            "type": "interval", "iface": iface, "pps": 100.0,
            "top": sources.iter().map(|(s, pps, syn)| json!({
                "source": s, "pps": pps, "bps": pps * 800.0, "syn": syn, "tcp": syn, "udp": 1,
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn rows_sort_filter_and_group() {
        let mut model = Model::default();
        model.apply(interval(
            "eth0",
            &[
                ("10.0.0.2", 50.0, 9),
                ("10.0.0.1", 500.0, 0),
                ("192.0.2.7", 5.0, 1),
            ],
        ));
        let names =
            |model: &Model| -> Vec<String> { model.rows().into_iter().map(|r| r.name).collect() };
        assert_eq!(names(&model), ["10.0.0.1", "10.0.0.2", "192.0.2.7"]);
        model.key(Key::Char('4'));
        assert_eq!(names(&model), ["10.0.0.2", "192.0.2.7", "10.0.0.1"]);
        model.key(Key::Char('/'));
        for c in "192.0.2.0/24".chars() {
            model.key(Key::Char(c));
        }
        assert_eq!(
            names(&model),
            ["10.0.0.2", "192.0.2.7", "10.0.0.1"],
            "not yet applied"
        );
        model.key(Key::Enter);
        assert_eq!(names(&model), ["192.0.2.7"]);
        model.key(Key::Esc);
        model.key(Key::Char('x'));
        model.key(Key::Char('1'));
        assert_eq!(names(&model), ["10.0.0.0/24", "192.0.2.0/24"]);
        assert_eq!(model.rows()[0].pps, 550.0);
        assert_eq!(model.key(Key::Char('q')), Action::Quit);
    }

    /// A source's AS and country, as the daemon's record says them; a prefix keeps them only
    /// when its sources agree.
    #[test]
    fn rows_carry_the_as_and_country() {
        let mut model = Model::default();
        let mut record = interval(
            "eth0",
            &[
                ("10.9.0.2", 50.0, 0),
                ("10.9.0.3", 40.0, 0),
                ("10.8.0.1", 5.0, 0),
            ],
        );
        for (i, (asn, country)) in [(64500, "NL"), (64500, "NL"), (64501, "DE")]
            .into_iter()
            .enumerate()
        {
            record["top"][i]["asn"] = json!(asn);
            record["top"][i]["as_org"] = json!("EXAMPLE-NET");
            record["top"][i]["country"] = json!(country);
        }
        record["top"][2]
            .as_object_mut()
            .map(|source| source.remove("asn"));
        model.apply(record);
        let places: Vec<(String, String)> = model
            .rows()
            .into_iter()
            .map(|row| (row.name, row.place))
            .collect();
        assert_eq!(
            places,
            [
                (String::from("10.9.0.2"), String::from("AS64500 NL")),
                (String::from("10.9.0.3"), String::from("AS64500 NL")),
                (String::from("10.8.0.1"), String::from("DE")),
            ]
        );
        model.key(Key::Char('x'));
        let prefix = &model.rows()[0];
        assert_eq!(
            (prefix.name.as_str(), prefix.place.as_str()),
            ("10.9.0.0/24", "AS64500 NL")
        );
    }

    #[test]
    fn d_shows_the_local_hosts_and_their_sources() {
        let mut model = Model::default();
        let mut record = interval("eth0", &[("10.0.0.1", 500.0, 0)]);
        record["destinations"] = json!([
            {"destination": "192.0.2.5", "pps": 40.0, "bps": 3200.0, "tcp": 40, "udp": 0,
             "icmp": 0, "other": 0, "syn": 40, "sources_estimate": 37},
            {"destination": "192.0.2.6", "pps": 900.0, "bps": 72000.0, "tcp": 0, "udp": 900,
             "icmp": 0, "other": 0, "syn": 0, "sources_estimate": 3},
        ]);
        model.apply(record);
        model.key(Key::Char('d'));
        let rows = model.rows();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["192.0.2.6", "192.0.2.5"]);
        assert_eq!((rows[1].syn, rows[1].hosts), (40, 37));
        assert_eq!(Column::Hosts.title_for(model.destinations), "SRCS");
        model.key(Key::Char('d'));
        assert_eq!(model.rows()[0].name, "10.0.0.1");
        assert_eq!(Column::Hosts.title_for(model.destinations), "HOSTS");
    }

    #[test]
    fn pause_holds_the_table_and_tab_switches_interfaces() {
        let mut model = Model::default();
        model.apply(interval("eth0", &[("10.0.0.1", 1.0, 0)]));
        model.apply(interval("eth1", &[("10.9.0.1", 1.0, 0)]));
        model.apply(interval(
            "all",
            &[("10.0.0.1", 1.0, 0), ("10.9.0.1", 1.0, 0)],
        ));
        assert_eq!(model.current.as_deref(), Some("all"));
        model.key(Key::Tab);
        assert_eq!(model.current.as_deref(), Some("eth0"));
        model.key(Key::Char('p'));
        model.apply(interval("eth0", &[("10.0.0.3", 1.0, 0)]));
        assert_eq!(model.rows()[0].name, "10.0.0.1");
        model.key(Key::Char('p'));
        model.apply(interval("eth0", &[("10.0.0.3", 1.0, 0)]));
        assert_eq!(model.rows()[0].name, "10.0.0.3");
    }
}
