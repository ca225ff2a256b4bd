//! The AS and country of the addresses alerts name, from MaxMind-format databases written by
//! the test (mmdb-writer, PyPI, in the GeoLite2-ASN and GeoLite2-Country layouts), live on a
//! veth pair: a flood's alerts carry the AS numbers and countries written, its prefix alert
//! its contributors by AS, the interval reports their top sources'; a database replaced on
//! disk is picked up without a restart.

use std::{fs, thread, time::Duration};

use netwatch_tests::{
    ScratchDir, daemon::Daemon, frames::udp_flood, mmdb::write_mmdb, netns::VethPair, privileged,
};
use serde_json::Value;

/// The start line of the alert of `kind` on `subject`: among the records read so far (`seen`),
/// else read until it comes.
fn start_of(daemon: &mut Daemon, seen: &mut Vec<Value>, kind: &str, subject: &str) -> Value {
    let wanted = |r: &Value| {
        r["type"] == "alert"
            && r["kind"] == kind
            && r["subject"] == subject
            && r["state"] == "start"
    };
    if let Some(found) = seen.iter().find(|r| wanted(r)) {
        return found.clone();
    }
    seen.extend(daemon.records_until(wanted));
    seen.iter()
        .find(|r| wanted(r))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} on {subject}"))
}

#[test]
fn alerts_carry_as_and_country_and_a_replaced_database_is_taken() {
    if !privileged("alerts_carry_as_and_country_and_a_replaced_database_is_taken") {
        return;
    }
    let dir = ScratchDir::new("nwenrich");
    let (asn, country) = (dir.join("asn.mmdb"), dir.join("country.mmdb"));
    write_mmdb("asn", &asn, &["10.9.0.0/24=64500:EXAMPLE-NET"]);
    write_mmdb("country", &country, &["10.9.0.0/24=NL", "10.8.0.0/16=DE"]);
    let config = dir.join("netwatch.toml");
    fs::write(
        &config,
        format!(
            "[detect.source]\npps = 500.0\n\n[detect.prefix]\npps = 800.0\n\n[enrich]\nasn_db = \"{}\"\ncountry_db = \"{}\"\n",
            asn.display(),
            country.display()
        ),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let pair = VethPair::new(true);
    let (mut daemon, _) =
        Daemon::json_monitor(&pair, &["--config", config.to_str().unwrap_or_default()]);
    assert_eq!(
        pair.send_paced(udp_flood([10, 9, 0, 2], 1_000, Duration::from_secs(1))),
        1_000
    );
    let mut seen = Vec::new();
    let alert = start_of(&mut daemon, &mut seen, "threshold_pps", "10.9.0.2");
    let place = &alert["context"]["10.9.0.2"];
    assert_eq!(place["asn"], 64500, "{alert}");
    assert_eq!(place["as_org"], "EXAMPLE-NET");
    assert_eq!(place["country"], "NL");
    // The interval reports (what `netwatch top` shows) carry them too, for the sources they
    // list.
    let listed = seen
        .iter()
        .filter(|r| r["type"] == "interval")
        .flat_map(|r| r["top"].as_array().cloned().unwrap_or_default())
        .find(|source| source["source"] == "10.9.0.2")
        .unwrap_or_else(|| panic!("10.9.0.2 in no interval's top"));
    assert_eq!(listed["asn"], 64500, "{listed}");
    assert_eq!(listed["as_org"], "EXAMPLE-NET");
    assert_eq!(listed["country"], "NL");
    // The prefix's alert names its contributors by AS.
    let prefix = start_of(&mut daemon, &mut seen, "threshold_pps", "10.9.0.0/24");
    assert_eq!(prefix["by_as"][0]["asn"], 64500, "{prefix}");
    assert_eq!(prefix["by_as"][0]["as_org"], "EXAMPLE-NET");

    // The AS database replaced: the next alert says the new AS, without a restart.
    write_mmdb("asn", &asn, &["10.9.0.0/24=64501:OTHER-NET"]);
    thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        pair.send_paced(udp_flood([10, 9, 0, 3], 1_000, Duration::from_secs(1))),
        1_000
    );
    let alert = start_of(&mut daemon, &mut seen, "threshold_pps", "10.9.0.3");
    assert_eq!(alert["context"]["10.9.0.3"]["asn"], 64501, "{alert}");
    assert_eq!(alert["context"]["10.9.0.3"]["country"], "NL");
    let (status, _, stderr) = daemon.stop(libc::SIGTERM);
    assert!(status.success(), "{stderr:?}");
}
