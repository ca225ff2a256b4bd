//! The files that run netwatch as a service: the systemd unit passes `systemd-analyze
//! verify` and grants exactly the capabilities netwatch checks for, and every metric the
//! Grafana dashboard queries is one netwatch exports.

use std::{collections::BTreeSet, fs, path::PathBuf, process::Command, time::Duration};

use netwatch::{
    collect::{Interval, SourceDelta, Volume},
    datapath::Spread,
    report::metrics::Metrics,
};
use netwatch_common::{GlobalStats, SourceStats};
use netwatch_tests::{ScratchDir, netwatch_bin};

fn packaging(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

#[test]
fn the_systemd_unit_verifies_and_grants_only_what_netwatch_needs() {
    let unit =
        fs::read_to_string(packaging("netwatch.service")).unwrap_or_else(|err| panic!("{err}"));
    let caps = |key: &str| -> BTreeSet<String> {
        unit.lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let needed: BTreeSet<String> = ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(caps("CapabilityBoundingSet="), needed);
    assert_eq!(caps("AmbientCapabilities="), needed);
    // netwatch's own check asks for the same set.
    assert_eq!(
        netwatch::privilege::missing_capabilities_of(0)
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        needed
    );

    // systemd checks the unit against the built binary.
    let dir = ScratchDir::new("nwunit");
    let unit_path = dir.join("netwatch.service");
    fs::write(
        &unit_path,
        unit.replace("/usr/local/bin/netwatch", &netwatch_bin().to_string_lossy()),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap_or_else(|err| panic!("systemd-analyze: {err}"));
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(packaging("grafana-dashboard.json"))
            .unwrap_or_else(|err| panic!("{err}")),
    )
    .unwrap_or_else(|err| panic!("the dashboard is not JSON: {err}"));
    // A running netwatch: attached, one interval with one source seen.
    let metrics = Metrics::new(10).unwrap_or_else(|err| panic!("{err}"));
    metrics.set_attach("eth0", "driver", "per-cpu", 1024);
    metrics.observe_interval(
        "eth0",
        &Interval {
            elapsed: Duration::from_secs(1),
            delta: GlobalStats::default(),
            cumulative: GlobalStats::default(),
            sources: vec![SourceDelta {
                addr: "192.0.2.1".parse().unwrap_or_else(|err| panic!("{err}")),
                stats: SourceStats {
                    packets: 1,
                    bytes: 60,
                    ..SourceStats::default()
                },
                spread: Spread::default(),
            }],
            tracked_sources: 1,
            evicted_sources: 0,
            unattributed: Volume::default(),
            unattributed_before: Volume::default(),
            overflow_reflected_port: 0,
            slotless: Default::default(),
            destinations: Vec::new(),
            destination_other: Default::default(),
        },
    );
    let exported = metrics.render();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("netwatch_") {
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for metric in &queried {
        assert!(
            exported.contains(&format!("# TYPE {metric} ")),
            "the dashboard queries {metric}, which netwatch does not export"
        );
    }
}
