//! The mitigator's decisions against a table that records what the kernel would be told.
//! The kernel side itself is tested on real maps (tests/tests/datapath.rs, tests/tests/bans.rs).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use super::{
    ban::{AlertRef, BanChange, BanRefusal, BanTable, BanTerms, Origin},
    config::{BanRule, BanSubject, MitigateConfig, MitigateMode},
    mitigator::{Mitigator, NeverBan},
};
use crate::{
    datapath::{BanAction, DatapathError},
    detect::{
        alert::{Alert, AlertKind, AlertState, Severity, Subject},
        cidr::Cidr,
    },
};

/// What the kernel would hold: network -> index, counts per index, and the action.
#[derive(Default)]
struct Table {
    entries: BTreeMap<Cidr, u32>,
    counts: BTreeMap<u32, (u64, u64)>,
    action: Option<BanAction>,
    refuse: bool,
}

impl BanTable for Table {
    fn set(&mut self, index: u32, net: Cidr) -> Result<(), DatapathError> {
        if self.refuse {
            return Err(DatapathError::BanIndex { index, max_bans: 0 });
        }
        self.counts.insert(index, (0, 0));
        self.entries.insert(net, index);
        Ok(())
    }
    fn clear(&mut self, net: Cidr) -> Result<(), DatapathError> {
        self.entries.remove(&net);
        Ok(())
    }
    fn counts(&mut self, index: u32) -> (u64, u64) {
        self.counts.get(&index).copied().unwrap_or_default()
    }
    fn set_action(&mut self, action: Option<BanAction>) -> Result<(), DatapathError> {
        self.action = action;
        Ok(())
    }
}

fn net(text: &str) -> Cidr {
    text.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(1_800_000_000 + s)
}

fn alert(id: &str, kind: AlertKind, state: AlertState, subject: Subject) -> Alert {
    Alert {
        id: id.to_owned(),
        kind,
        state,
        severity: Severity::Warning,
        subject,
        observed: 5000.0,
        baseline: None,
        threshold: 1000.0,
        at: secs(0),
        interval: Duration::from_secs(1),
        started: secs(0),
        peak: 5000.0,
        packets: 5000,
        bytes: 500_000,
        detail: None,
        contributors: Vec::new(),
        attack: None,
        members: None,
        slotless: None,
        victims: Vec::new(),
        capture: None,
        intel: None,
        context: Default::default(),
        by_as: Vec::new(),
    }
}

fn source(addr: &str) -> Subject {
    Subject::Source(addr.parse().unwrap())
}

fn mitigator(mode: MitigateMode, never: &[Cidr], local: &[Cidr]) -> Mitigator {
    let config = MitigateConfig {
        mode,
        never: never.to_vec(),
        max_bans: 3,
        ..MitigateConfig::default()
    };
    Mitigator::new(
        config,
        &NeverBan {
            allowlist: &[],
            local,
        },
        24,
        64,
    )
}

/// A source over its threshold is banned as a host for the rule's TTL; the kernel gets the
/// entry and is told to drop; the alert's updates ban nothing more; at the TTL the ban ends
/// with what it dropped, and the kernel stops looking.
#[test]
fn a_threshold_alert_bans_its_source_until_the_ttl() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table::default();
    let start = alert(
        "a1",
        AlertKind::ThresholdPps,
        AlertState::Start,
        source("10.9.0.2"),
    );
    let events = m.on_alert("veth0", &start, &mut table, secs(0));
    assert_eq!(events.len(), 1, "{events:?}");
    let ban = &events[0];
    assert_eq!(ban.change, BanChange::Ban);
    assert_eq!(ban.net, net("10.9.0.2/32"));
    assert_eq!(ban.mode, MitigateMode::Drop);
    assert_eq!(ban.expires, Some(secs(600)));
    assert_eq!(ban.offence, 1);
    assert_eq!(ban.iface, "veth0");
    assert_eq!(
        ban.alert,
        Some(AlertRef {
            id: String::from("a1"),
            kind: AlertKind::ThresholdPps,
            capture: None,
        })
    );
    assert_eq!(ban.reason, "threshold_pps 10.9.0.2 5000 pkt/s over 1000");
    assert_eq!(table.entries.get(&net("10.9.0.2/32")), Some(&0));
    assert_eq!(table.action, Some(BanAction::Drop));

    let update = alert(
        "a1",
        AlertKind::ThresholdPps,
        AlertState::Update,
        source("10.9.0.2"),
    );
    assert!(m.on_alert("veth0", &update, &mut table, secs(5)).is_empty());

    table.counts.insert(0, (1234, 56_789));
    assert!(m.tick(&mut table, secs(599)).is_empty());
    assert_eq!(m.bans().next().unwrap().packets, 1234);
    let ended = m.tick(&mut table, secs(600));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].change, BanChange::Unban);
    assert_eq!(ended[0].why.as_deref(), Some("expired"));
    assert_eq!((ended[0].packets, ended[0].bytes), (1234, 56_789));
    assert!(table.entries.is_empty());
    assert_eq!(table.action, None);
}

/// An indicator's alert bans its listed source when a rule names `intel`; never the local
/// host of one seen otherwise (a host that sent to a listed address, or looked one up).
#[test]
fn intel_alerts_ban_listed_sources_only() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    m.config.rules = vec![BanRule {
        alerts: vec![AlertKind::Intel],
        ..BanRule::default()
    }];
    let mut table = Table::default();
    let intel = |id: &str, subject: &str, seen: &'static str| {
        let mut alert = alert(id, AlertKind::Intel, AlertState::Instant, source(subject));
        alert.intel = Some(crate::detect::alert::IntelMatch {
            indicator: String::from("203.0.113.0/24"),
            indicator_type: "Intel::SUBNET",
            seen,
            value: String::from("203.0.113.9"),
            feed: String::from("feodo"),
            desc: String::from("C2 range"),
            host: Some("10.0.0.7".parse().unwrap()),
            matches: 1,
        });
        alert
    };
    for seen in ["destination", "dns_name"] {
        let local = intel("i1", "10.0.0.7", seen);
        assert!(
            m.on_alert("veth0", &local, &mut table, secs(0)).is_empty(),
            "{seen}"
        );
    }
    let listed = intel("i2", "203.0.113.9", "source");
    let events = m.on_alert("veth0", &listed, &mut table, secs(0));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].net, net("203.0.113.9/32"));
}

/// A repeat offender's ban lasts twice the one before, up to the rule's maximum; after
/// `forget_after` without a ban it starts over.
#[test]
fn repeat_offenders_get_doubled_ttls_up_to_the_maximum() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    m.config.rules[0].max_ttl = Duration::from_secs(1800);
    let mut table = Table::default();
    let mut at = 0;
    let mut ttls = Vec::new();
    for round in 0..4 {
        let start = alert(
            &format!("a{round}"),
            AlertKind::ThresholdPps,
            AlertState::Start,
            source("10.9.0.2"),
        );
        let events = m.on_alert("veth0", &start, &mut table, secs(at));
        let expires = events[0].expires.unwrap();
        ttls.push(expires - secs(at));
        at = expires.as_secs() - secs(0).as_secs();
        assert_eq!(m.tick(&mut table, secs(at)).len(), 1);
    }
    assert_eq!(
        ttls,
        [600, 1200, 1800, 1800].map(Duration::from_secs).to_vec()
    );
    // A day and more later the count starts over.
    let late = at + 24 * 3600 + 1;
    let start = alert(
        "late",
        AlertKind::ThresholdPps,
        AlertState::Start,
        source("10.9.0.2"),
    );
    let events = m.on_alert("veth0", &start, &mut table, secs(late));
    assert_eq!(events[0].offence, 1);
    assert_eq!(events[0].expires, Some(secs(late + 600)));
}

/// Nothing that overlaps the never-ban list is banned, by a rule or by hand; the refusal of
/// an alert's ban is said once for the whole alert event.
#[test]
fn the_never_ban_list_is_never_banned() {
    let mut m = mitigator(
        MitigateMode::Drop,
        &[net("10.9.0.7/32")],
        &[net("10.0.0.0/24")],
    );
    let mut table = Table::default();
    for (id, subject) in [("n1", source("10.9.0.7")), ("n2", source("10.0.0.5"))] {
        let start = alert(id, AlertKind::ThresholdPps, AlertState::Start, subject);
        let events = m.on_alert("veth0", &start, &mut table, secs(0));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].change, BanChange::Refused, "{events:?}");
        assert!(events[0].why.as_deref().unwrap().contains("never banned"));
        let update = alert(id, AlertKind::ThresholdPps, AlertState::Update, subject);
        assert!(m.on_alert("veth0", &update, &mut table, secs(1)).is_empty());
    }
    assert_eq!(
        m.add(net("10.9.0.0/24"), None, None, &mut table, secs(0)),
        Err(BanRefusal::Never {
            net: net("10.9.0.0/24"),
            never: net("10.9.0.7/32"),
            from: "mitigate.never"
        })
    );
    assert!(table.entries.is_empty());
    assert_eq!(table.action, None);
}

/// An IPv4-mapped subject is the IPv4 network it maps: refused when the never list holds it
/// (it slipped past), banned as IPv4 otherwise (a ban of it matched nothing); special
/// addresses are refused by hand and by a rule alike (issue 30).
#[test]
fn mapped_subjects_are_ipv4_and_special_ones_are_refused() {
    let mut m = mitigator(MitigateMode::Drop, &[net("10.203.0.0/16")], &[]);
    let mut table = Table::default();
    assert!(matches!(
        m.add(net("::ffff:10.203.0.1"), None, None, &mut table, secs(0)),
        Err(BanRefusal::Never { .. })
    ));
    let banned = m
        .add(net("::ffff:10.9.0.7"), None, None, &mut table, secs(0))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(banned.net, net("10.9.0.7/32"));
    assert!(
        table.entries.contains_key(&net("10.9.0.7/32")),
        "{:?}",
        table.entries
    );
    for special in [
        "0.0.0.0",
        "::",
        "127.0.0.1",
        "::1",
        "169.254.1.1",
        "fe80::1",
        "224.0.0.9",
        "ff02::1",
        "255.255.255.255",
        "0.0.0.0/8",
    ] {
        assert!(
            matches!(
                m.add(net(special), None, None, &mut table, secs(0)),
                Err(BanRefusal::Special { .. })
            ),
            "{special}"
        );
    }
    let start = alert(
        "s1",
        AlertKind::ThresholdPps,
        AlertState::Start,
        source("127.0.0.1"),
    );
    let events = m.on_alert("veth0", &start, &mut table, secs(0));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].change, BanChange::Refused, "{events:?}");
    assert_eq!(table.entries.len(), 1, "{:?}", table.entries);
}

/// Past `max_bans` a ban is refused and reported; the ones in force stay.
#[test]
fn max_bans_refuses_and_reports() {
    let mut m = mitigator(MitigateMode::DryRun, &[], &[]);
    let mut table = Table::default();
    for i in 1..=4u8 {
        let start = alert(
            &format!("f{i}"),
            AlertKind::SynFlood,
            AlertState::Start,
            Subject::Source(IpAddr::from([10, 9, 0, i])),
        );
        let events = m.on_alert("veth0", &start, &mut table, secs(0));
        let expected = if i <= 3 {
            BanChange::Ban
        } else {
            BanChange::Refused
        };
        assert_eq!(events[0].change, expected, "{events:?}");
    }
    assert_eq!(table.entries.len(), 3);
    assert_eq!(table.action, Some(BanAction::Count));
    assert_eq!(
        m.add(net("10.8.0.0/16"), None, None, &mut table, secs(0)),
        Err(BanRefusal::Full(3))
    );
}

/// Manual bans: added with a TTL and a reason, refused twice, removed by hand with their
/// counts; an index is taken again only after a whole interval.
#[test]
fn manual_bans_and_index_reuse() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table::default();
    let added = m
        .add(
            net("2001:db8::/48"),
            Some(Duration::from_secs(60)),
            Some(String::from("scanner")),
            &mut table,
            secs(0),
        )
        .unwrap();
    assert_eq!(added.origin, Origin::Manual);
    assert_eq!(added.reason, "scanner");
    assert_eq!(added.expires, Some(secs(60)));
    assert!(matches!(
        m.add(net("2001:db8::/48"), None, None, &mut table, secs(1)),
        Err(BanRefusal::Exists { .. })
    ));
    table.counts.insert(0, (7, 700));
    let removed = m.remove(net("2001:db8::/48"), &mut table, secs(2)).unwrap();
    assert_eq!(removed.change, BanChange::Unban);
    assert_eq!(removed.why.as_deref(), Some("removed by hand"));
    assert_eq!((removed.packets, removed.bytes), (7, 700));
    assert_eq!(
        m.remove(net("2001:db8::/48"), &mut table, secs(3)),
        Err(BanRefusal::NotBanned(net("2001:db8::/48")))
    );
    // Index 0 is cooling: the next ban takes 1; after two ticks 0 is free again.
    m.add(net("192.0.2.1/32"), None, None, &mut table, secs(3))
        .unwrap();
    assert_eq!(table.entries.get(&net("192.0.2.1/32")), Some(&1));
    m.tick(&mut table, secs(4));
    m.tick(&mut table, secs(5));
    m.add(net("192.0.2.2/32"), None, None, &mut table, secs(5))
        .unwrap();
    assert_eq!(table.entries.get(&net("192.0.2.2/32")), Some(&0));
}

/// Mitigation off: alerts ban nothing and `ban add` is refused.
#[test]
fn off_bans_nothing() {
    let mut m = mitigator(MitigateMode::Off, &[], &[]);
    let mut table = Table::default();
    let start = alert(
        "o1",
        AlertKind::ThresholdPps,
        AlertState::Start,
        source("10.9.0.2"),
    );
    assert!(m.on_alert("veth0", &start, &mut table, secs(0)).is_empty());
    assert_eq!(
        m.add(net("10.9.0.2/32"), None, None, &mut table, secs(0)),
        Err(BanRefusal::Off)
    );
    assert!(table.entries.is_empty());
}

/// Rules: a prefix rule bans a source alert's /24 and a prefix alert's network; a source rule
/// ignores prefix alerts; global and destination alerts ban nothing; an alert's end bans
/// nothing; a ban covered by a wider one is not made.
#[test]
fn rules_pick_the_subject() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    m.config.max_bans = 10;
    m.config.rules = vec![
        BanRule {
            alerts: vec![AlertKind::PortScan],
            subject: BanSubject::Prefix,
            ..BanRule::default()
        },
        BanRule {
            alerts: vec![AlertKind::SpikePps],
            ..BanRule::default()
        },
    ];
    let mut table = Table::default();
    let scan = alert(
        "p1",
        AlertKind::PortScan,
        AlertState::Start,
        source("198.51.100.9"),
    );
    assert_eq!(
        m.on_alert("veth0", &scan, &mut table, secs(0))[0].net,
        net("198.51.100.0/24")
    );
    // Covered by the /24.
    let inside = alert(
        "p2",
        AlertKind::SpikePps,
        AlertState::Start,
        source("198.51.100.20"),
    );
    assert!(m.on_alert("veth0", &inside, &mut table, secs(0)).is_empty());
    let prefix = alert(
        "p3",
        AlertKind::PortScan,
        AlertState::Start,
        Subject::Prefix(net("203.0.113.0/24")),
    );
    assert_eq!(
        m.on_alert("veth0", &prefix, &mut table, secs(0))[0].net,
        net("203.0.113.0/24")
    );
    for subject in [
        Subject::Prefix(net("192.0.2.0/24")),
        Subject::Global,
        Subject::Destination("10.0.0.1".parse().unwrap()),
    ] {
        let spike = alert("p4", AlertKind::SpikePps, AlertState::Start, subject);
        assert!(m.on_alert("veth0", &spike, &mut table, secs(0)).is_empty());
    }
    let end = alert(
        "p5",
        AlertKind::SpikePps,
        AlertState::End,
        source("192.0.2.1"),
    );
    assert!(m.on_alert("veth0", &end, &mut table, secs(0)).is_empty());
    let other = alert(
        "p6",
        AlertKind::HostSweep,
        AlertState::Start,
        source("192.0.2.1"),
    );
    assert!(m.on_alert("veth0", &other, &mut table, secs(0)).is_empty());
    assert_eq!(table.entries.len(), 2);
}

/// At start, the store's bans still in force are applied again (`restore`, not notified)
/// and those whose time ran out meanwhile end (`unban`, notified).
#[test]
fn restore_applies_live_bans_and_ends_expired_ones() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table::default();
    let stored = |addr: &str, expires| BanTerms {
        net: net(addr),
        origin: Origin::Alert,
        reason: String::from("threshold_pps"),
        alert: None,
        iface: String::from("veth0"),
        created: secs(0),
        expires: secs(expires),
        offence: 2,
    };
    let events = m.restore(
        vec![stored("10.9.0.2/32", 100), stored("10.9.0.3/32", 10)],
        &mut table,
        secs(50),
    );
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].change, BanChange::Restore);
    assert!(!events[0].is_notified());
    assert_eq!(events[0].expires, Some(secs(100)));
    assert_eq!(events[1].change, BanChange::Unban);
    assert!(events[1].is_notified());
    assert_eq!(
        events[1].why.as_deref(),
        Some("expired while netwatch was stopped")
    );
    assert_eq!(
        table.entries.keys().copied().collect::<Vec<_>>(),
        [net("10.9.0.2/32")]
    );
    assert_eq!(table.action, Some(BanAction::Drop));
}

/// A reload that turns mitigation off ends every ban; one that puts a banned network on the
/// never-ban list ends that ban.
#[test]
fn a_reload_ends_the_bans_it_would_refuse() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table::default();
    for addr in ["10.9.0.2/32", "10.9.0.3/32"] {
        m.add(net(addr), None, None, &mut table, secs(0)).unwrap();
    }
    let mut config = m.config.clone();
    config.never = vec![net("10.9.0.2/32")];
    let no_more = NeverBan {
        allowlist: &[],
        local: &[],
    };
    let events = m.reconfigure(config.clone(), &no_more, &mut table, secs(1));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].net, net("10.9.0.2/32"));
    config.mode = MitigateMode::Off;
    let events = m.reconfigure(config, &no_more, &mut table, secs(2));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].why.as_deref(), Some("mitigation turned off"));
    assert!(table.entries.is_empty());
    assert_eq!(table.action, None);
}

/// A ban the kernel refuses is reported and leaves nothing behind.
#[test]
fn a_kernel_refusal_is_reported() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table {
        refuse: true,
        ..Table::default()
    };
    let start = alert(
        "k1",
        AlertKind::ThresholdBps,
        AlertState::Start,
        source("10.9.0.2"),
    );
    let events = m.on_alert("veth0", &start, &mut table, secs(0));
    assert_eq!(events[0].change, BanChange::Refused);
    // The datapath's own words, after the mitigator's.
    let refused = DatapathError::BanIndex {
        index: 0,
        max_bans: 0,
    };
    assert_eq!(
        events[0].why,
        Some(format!(
            "the kernel refused the ban of 10.9.0.2/32: {refused}"
        ))
    );
    assert_eq!(m.bans().count(), 0);
    assert_eq!(table.action, None);
}

#[test]
fn config_is_validated() {
    let ok = MitigateConfig::default();
    assert!(ok.validate().is_ok());
    let bad = MitigateConfig {
        rules: vec![BanRule {
            alerts: vec![AlertKind::Suppressed],
            ..BanRule::default()
        }],
        ..MitigateConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "mitigate.rules[0].alerts");
    let bad = MitigateConfig {
        rules: vec![BanRule {
            max_ttl: Duration::from_secs(1),
            ..BanRule::default()
        }],
        ..MitigateConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "mitigate.rules[0].max_ttl");
    let bad = MitigateConfig {
        max_bans: 0,
        ..MitigateConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "mitigate.max_bans");
    let bad = MitigateConfig {
        notify: vec![PathBuf::from("notify.sh")],
        ..MitigateConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "mitigate.notify");
}

/// Bans ended and made again faster than their counters cool down: past the kernel's room for
/// counters (two a ban) a ban is refused, never given a counter the maps do not have.
#[test]
fn counters_cooling_down_are_never_handed_out_past_the_maps() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table::default();
    let mut refused = 0;
    for i in 0..20u8 {
        let net = Cidr::of(IpAddr::from([10, 9, 1, i]), 32);
        match m.add(net, None, None, &mut table, secs(0)) {
            Ok(_) => {
                m.remove(net, &mut table, secs(0)).unwrap();
            }
            Err(BanRefusal::Full(3)) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    // Six counters for three bans, none back from cooling (no tick): six bans, then refusals.
    assert_eq!(refused, 14);
    assert!(
        table.counts.keys().all(|index| *index < 6),
        "{:?}",
        table.counts
    );
    m.tick(&mut table, secs(1));
    m.tick(&mut table, secs(2));
    m.add(net("10.9.2.1/32"), None, None, &mut table, secs(2))
        .unwrap();
}

/// Nothing wider than a /8 (IPv4) or a /32 (IPv6) is banned: it would cut the host off.
#[test]
fn bans_wider_than_allowed_are_refused() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table::default();
    for wide in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/31"] {
        assert!(
            matches!(
                m.add(net(wide), None, None, &mut table, secs(0)),
                Err(BanRefusal::TooWide { .. })
            ),
            "{wide}"
        );
    }
    m.add(net("10.0.0.0/8"), None, None, &mut table, secs(0))
        .unwrap();
    m.add(net("2001:db8::/32"), None, None, &mut table, secs(0))
        .unwrap();
}

/// A ban restored at start was counted when it began (the store's history says so): it does
/// not count again, so the network's next ban doubles once, not twice.
#[test]
fn a_restored_ban_is_not_a_new_offence() {
    let mut m = mitigator(MitigateMode::Drop, &[], &[]);
    let mut table = Table::default();
    m.remember([(net("10.9.0.2/32"), secs(0), secs(600))]);
    let events = m.restore(
        vec![BanTerms {
            net: net("10.9.0.2/32"),
            origin: Origin::Alert,
            reason: String::from("threshold_pps"),
            alert: None,
            iface: String::from("veth0"),
            created: secs(0),
            expires: secs(600),
            offence: 1,
        }],
        &mut table,
        secs(10),
    );
    assert_eq!(events[0].change, BanChange::Restore);
    assert_eq!(m.tick(&mut table, secs(600)).len(), 1);
    let start = alert(
        "r2",
        AlertKind::ThresholdPps,
        AlertState::Start,
        source("10.9.0.2"),
    );
    let events = m.on_alert("veth0", &start, &mut table, secs(700));
    assert_eq!(events[0].offence, 2);
    assert_eq!(events[0].expires, Some(secs(700 + 1200)));
}
