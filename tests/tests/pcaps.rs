//! Every real capture in tests/pcaps, fed frame by frame through the loaded XDP program:
//! per-source packets and bytes must equal `ground-truth.tsv` exactly.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::IpAddr,
};

use netwatch::{capture::CaptureReader, collect::source_addr};
use netwatch_datapath::{Datapath, LoadOptions};
use netwatch_tests::{assert_invariant, pcaps_dir, privileged};

/// file -> source ("non-ip" for non-IP frames) -> (packets, bytes)
type Truth = BTreeMap<String, BTreeMap<String, (u64, u64)>>;

fn ground_truth() -> Truth {
    let path = pcaps_dir().join("ground-truth.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut truth = Truth::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, source, packets, bytes] = fields[..] else {
            panic!("{}:{}: expected 4 fields: {line:?}", path.display(), i + 1);
        };
        let number = |text: &str| -> u64 {
            text.parse()
                .unwrap_or_else(|err| panic!("{}:{}: {text:?}: {err}", path.display(), i + 1))
        };
        truth
            .entry(file.to_owned())
            .or_default()
            .insert(source.to_owned(), (number(packets), number(bytes)));
    }
    truth
}

#[test]
fn every_capture_counts_like_ground_truth() {
    if !privileged("every_capture_counts_like_ground_truth") {
        return;
    }
    let truth = ground_truth();
    let on_disk: BTreeSet<String> = fs::read_dir(pcaps_dir())
        .unwrap_or_else(|err| panic!("{}: {err}", pcaps_dir().display()))
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".pcap") || name.ends_with(".pcapng"))
        .collect();
    let listed: BTreeSet<String> = truth.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "captures on disk and in ground-truth.tsv differ"
    );
    assert!(listed.len() >= 16, "only {} captures", listed.len());

    for (file, sources) in &truth {
        let mut datapath =
            Datapath::load(LoadOptions::default()).unwrap_or_else(|err| panic!("load: {err}"));
        let path = pcaps_dir().join(file);
        let reader = CaptureReader::open(&path).unwrap_or_else(|err| panic!("{err}"));
        let mut frames = 0u64;
        for frame in reader {
            let frame = frame.unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(
                frame.data.len() as u32,
                frame.original_len,
                "{file}: frame {} is truncated in the capture",
                frame.number
            );
            datapath
                .test_run(&frame.data)
                .unwrap_or_else(|err| panic!("{file}: frame {}: {err}", frame.number));
            frames += 1;
        }
        let snapshot = datapath.snapshot().unwrap_or_else(|err| panic!("{err}"));
        assert_invariant(&snapshot, file);

        let mut actual: BTreeMap<String, (u64, u64)> = snapshot
            .stats_by_source()
            .iter()
            .map(|(key, stats)| (source_addr(key).to_string(), (stats.packets, stats.bytes)))
            .collect();
        let g = &snapshot.globals;
        if g.non_ip_packets > 0 {
            actual.insert("non-ip".into(), (g.non_ip_packets, g.non_ip_bytes));
        }
        // Ground truth writes addresses as tshark does; compare them as addresses.
        let normalise = |map: &BTreeMap<String, (u64, u64)>| -> BTreeMap<String, (u64, u64)> {
            map.iter()
                .map(|(source, counts)| {
                    let source = source
                        .parse::<IpAddr>()
                        .map_or_else(|_| source.clone(), |addr| addr.to_string());
                    (source, *counts)
                })
                .collect()
        };
        assert_eq!(normalise(&actual), normalise(sources), "{file}");
        assert_eq!(g.malformed_packets, 0, "{file}: malformed frames");
        assert_eq!(g.overflow_packets, 0, "{file}: overflow");
        assert_eq!(g.total_packets, frames, "{file}: frames seen");
    }
}
