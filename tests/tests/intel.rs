//! Threat intelligence: a Zeek-format feed matched against replays of captures written here,
//! through the real binary and the real XDP program: a DNS query for a subdomain of a listed
//! domain, an answer whose CNAME leads to one, an HTTP request to a listed URL with a listed user agent, and frames from a listed
//! network with no payload at all each alert once, with the feed's metadata and the host
//! involved; a host beaconing alerts once; unlisted traffic raises nothing; a malformed feed
//! line is said by number and the rest of the feed works. Live on a veth pair, frames from a
//! listed subnet with no payload are matched by the kernel, and a replaced feed is taken.

use std::{fs, process::Output, thread, time::Duration};

use netwatch_tests::{
    ScratchDir,
    daemon::Daemon,
    frames::{ACK, FrameBuilder, PSH, Transport},
    netns::VethPair,
    privileged,
    replay::{BASE, of_type, records, replay, write_case},
};
use serde_json::Value;

/// A DNS query for `name`.
fn dns_query(name: &str) -> Vec<u8> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(u8::try_from(label.len()).unwrap_or(0));
        query.extend(label.bytes());
    }
    query.push(0);
    query.extend([0, 1, 0, 1]);
    query
}

/// A DNS answer to `name` (an A query) whose answer is a CNAME to `target`, then `target`'s
/// address.
fn dns_cname_answer(name: &str, target: &str) -> Vec<u8> {
    let mut message = dns_query(name);
    message[2] = 0x81;
    message[3] = 0x80;
    message[7] = 2;
    message.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60]);
    let mut rdata = Vec::new();
    for label in target.split('.') {
        rdata.push(u8::try_from(label.len()).unwrap_or(0));
        rdata.extend(label.bytes());
    }
    rdata.push(0);
    let target_at = u16::try_from(message.len() + 2).unwrap_or(0);
    message.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    message.extend_from_slice(&rdata);
    message.extend_from_slice(&(0xc000 | target_at).to_be_bytes());
    message.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    message
}

const FEED: &str = "#separator \\x09\n\
    #fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n\
    evil.example\tIntel::DOMAIN\tabuse.ch\tloader domain\n\
    dl.bad.example/payload.bin\tIntel::URL\turlhaus\tpayload\n\
    Mozilla/4.0 (EvilBot)\tIntel::SOFTWARE\tcustom\tbot user agent\n\
    203.0.113.0/24\tIntel::SUBNET\tfeodo\tC2 range\n\
    198.51.100.77\tIntel::ADDR\tfeodo\tC2 server\n\
    2001:db8:bad::/48\tIntel::SUBNET\tspamhaus\tv6 range\n\
    2001:db8::fe\tIntel::ADDR\tfeodo\tv6 C2\n\
    this line is broken\n\
    bad@evil.example\tIntel::EMAIL\tcustom\tphisher\n";

/// Replays `frames` with [`FEED`] (spikes and unknown sources not looked for): its output,
/// and its stderr as text; it must succeed.
fn replay_with_feed(dir: &ScratchDir, frames: Vec<(Duration, Vec<u8>)>) -> (Output, String) {
    let feed = dir.join("feed.intel");
    fs::write(&feed, FEED).unwrap_or_else(|err| panic!("{err}"));
    let (capture, config) = write_case(
        dir,
        frames,
        &format!(
            "[intel]\nfiles = [\"{}\"]\n\n[detect.spike]\nenabled = false\n\n[detect.unknown]\nenabled = false\n",
            feed.display()
        ),
    );
    let output = replay(&[
        capture.to_str().unwrap_or_default(),
        "--config",
        config.to_str().unwrap_or_default(),
        "--format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (output, stderr)
}

#[test]
fn listed_names_urls_agents_and_networks_alert_once_each() {
    if !privileged("listed_names_urls_agents_and_networks_alert_once_each") {
        return;
    }
    let dir = ScratchDir::new("nwintel");
    let at = |ms: u64| Duration::from_millis(BASE * 1_000 + ms);
    let mut frames = Vec::new();
    // A host beaconing: a query for a subdomain of a listed domain every second.
    for second in 0..10 {
        frames.push((
            at(second * 1_000),
            FrameBuilder::ipv4([10, 0, 0, 5])
                .to_ipv4([10, 0, 0, 1])
                .from_port(5_353)
                .to_port(53)
                .raw_payload(&dns_query("x.evil.example"))
                .build()
                .bytes,
        ));
    }
    // An innocent name answered with a CNAME to a listed domain's subdomain.
    frames.push((
        at(2_200),
        FrameBuilder::ipv4([10, 0, 0, 1])
            .to_ipv4([10, 0, 0, 12])
            .from_port(53)
            .to_port(5_353)
            .raw_payload(&dns_cname_answer(
                "www.shop.example",
                "edge.cdn.evil.example",
            ))
            .build()
            .bytes,
    ));
    // A request to a listed URL with a listed user agent.
    frames.push((
        at(2_500),
        FrameBuilder::ipv4([10, 0, 0, 6])
            .to_ipv4([10, 0, 0, 80])
            .transport(Transport::Tcp(PSH | ACK))
            .from_port(40_000)
            .to_port(80)
            .raw_payload(
                b"GET /payload.bin HTTP/1.1\r\nHost: dl.bad.example\r\nUser-Agent: Mozilla/4.0 (EvilBot)\r\n\r\n",
            )
            .build()
            .bytes,
    ));
    // Frames from a listed network, no payload at all, on no sampled port.
    for i in 0..5 {
        frames.push((
            at(3_000 + i * 10),
            FrameBuilder::ipv4([203, 0, 113, 9])
                .to_ipv4([10, 0, 0, 7])
                .to_port(9_999)
                .payload(0)
                .build()
                .bytes,
        ));
    }
    // A local host sending to a listed address, no payload (the listed side: destination).
    for i in 0..3 {
        frames.push((
            at(3_100 + i * 10),
            FrameBuilder::ipv4([10, 0, 0, 11])
                .to_ipv4([198, 51, 100, 77])
                .to_port(4_444)
                .transport(Transport::Tcp(ACK))
                .build()
                .bytes,
        ));
    }
    // IPv6: from a listed /48, and to a listed address.
    let mut v6 = [
        0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ];
    frames.push((
        at(3_200),
        FrameBuilder::ipv6(v6).to_host(7).payload(0).build().bytes,
    ));
    v6[4] = 0;
    v6[5] = 0x42;
    frames.push((at(3_300), FrameBuilder::ipv6(v6).payload(0).build().bytes));
    // Unlisted: a query, a request, a source.
    frames.push((
        at(4_000),
        FrameBuilder::ipv4([10, 0, 0, 8])
            .to_ipv4([10, 0, 0, 1])
            .from_port(5_353)
            .to_port(53)
            .raw_payload(&dns_query("notevil.example"))
            .build()
            .bytes,
    ));
    frames.push((
        at(4_500),
        FrameBuilder::ipv4([10, 0, 0, 9])
            .to_ipv4([10, 0, 0, 80])
            .transport(Transport::Tcp(PSH | ACK))
            .from_port(40_001)
            .to_port(80)
            .raw_payload(
                b"GET /index.html HTTP/1.1\r\nHost: good.example\r\nUser-Agent: curl/8\r\n\r\n",
            )
            .build()
            .bytes,
    ));
    let (output, stderr) = replay_with_feed(&dir, frames);
    // The load said, the malformed line by number, the email indicator as not matched.
    assert!(
        stderr.contains("7 indicators; 1 malformed lines left out (line 10)")
            && stderr.contains("1 of types not matched"),
        "{stderr}"
    );
    let records = records(&output);
    let intel: Vec<&Value> = of_type(&records, "alert")
        .into_iter()
        .filter(|a| a["kind"] == "intel")
        .collect();
    let seen: Vec<(String, String, String, String, String)> = intel
        .iter()
        .map(|a| {
            let text = |key: &str| a["intel"][key].as_str().unwrap_or("-").to_owned();
            (
                text("seen"),
                text("indicator"),
                text("feed"),
                text("desc"),
                text("host"),
            )
        })
        .collect();
    let row = |seen: &str, indicator: &str, feed: &str, desc: &str, host: &str| {
        (
            seen.to_owned(),
            indicator.to_owned(),
            feed.to_owned(),
            desc.to_owned(),
            host.to_owned(),
        )
    };
    let mut expected = vec![
        row(
            "dns_name",
            "evil.example",
            "abuse.ch",
            "loader domain",
            "10.0.0.5",
        ),
        row(
            "dns_cname",
            "evil.example",
            "abuse.ch",
            "loader domain",
            "10.0.0.12",
        ),
        row(
            "url",
            "dl.bad.example/payload.bin",
            "urlhaus",
            "payload",
            "10.0.0.6",
        ),
        row(
            "user_agent",
            "Mozilla/4.0 (EvilBot)",
            "custom",
            "bot user agent",
            "10.0.0.6",
        ),
        row("source", "203.0.113.0/24", "feodo", "C2 range", "10.0.0.7"),
        row(
            "destination",
            "198.51.100.77/32",
            "feodo",
            "C2 server",
            "10.0.0.11",
        ),
        row(
            "source",
            "2001:db8:bad::/48",
            "spamhaus",
            "v6 range",
            "2001:db8::7",
        ),
        row(
            "destination",
            "2001:db8::fe/128",
            "feodo",
            "v6 C2",
            "2001:db8:42::1",
        ),
    ];
    let mut got = seen.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "one alert each, and nothing unlisted");
    let dns = intel
        .iter()
        .find(|a| a["intel"]["seen"] == "dns_name")
        .unwrap_or_else(|| panic!("no dns"));
    assert_eq!(dns["intel"]["value"], "x.evil.example");
    assert_eq!(dns["intel"]["indicator_type"], "Intel::DOMAIN");
    assert_eq!(dns["subject"], "10.0.0.5");
    let source = intel
        .iter()
        .find(|a| a["intel"]["seen"] == "source" && a["intel"]["feed"] == "feodo")
        .unwrap_or_else(|| panic!("no source"));
    // The listed address seen is the subject and the value, the local host its frames went
    // to the host; the frames counted in the kernel, though none carried a byte of payload.
    assert_eq!(source["subject"], "203.0.113.9");
    assert_eq!(source["intel"]["value"], "203.0.113.9");
    assert_eq!(source["intel"]["host"], "10.0.0.7");
    assert_eq!(source["intel"]["matches"], 5);
    assert_eq!(source["packets"], 5);
}

/// Live on a veth pair: frames from a listed subnet with no payload at all, on no sampled
/// port, are matched by the kernel's trie and alert with the local host they went to; the
/// feed replaced on disk is taken without a restart: the network it no longer lists is no
/// longer matched, the one it lists now is.
#[test]
fn a_listed_subnet_is_matched_live_and_a_replaced_feed_is_taken() {
    if !privileged("a_listed_subnet_is_matched_live_and_a_replaced_feed_is_taken") {
        return;
    }
    let dir = ScratchDir::new("nwlive");
    let feed = dir.join("live.intel");
    let write_feed = |network: &str| {
        let fresh = dir.join("live.intel.new");
        fs::write(
            &fresh,
            format!(
                "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n\
                 {network}\tIntel::SUBNET\tfeodo\tC2 range\n"
            ),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        fs::rename(&fresh, &feed).unwrap_or_else(|err| panic!("{err}"));
    };
    write_feed("10.66.0.0/16");
    let config = dir.join("netwatch.toml");
    fs::write(
        &config,
        format!(
            "[intel]\nfiles = [\"{}\"]\n\n[detect.spike]\nenabled = false\n\n[detect.unknown]\nenabled = false\n",
            feed.display()
        ),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let pair = VethPair::new(true);
    let (mut daemon, _) =
        Daemon::json_monitor(&pair, &["--config", config.to_str().unwrap_or_default()]);
    let bare = |src: [u8; 4], count: usize| -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                FrameBuilder::ipv4(src)
                    .to_ipv4([10, 0, 1, 1])
                    .to_port(9_999)
                    .transport(Transport::Tcp(ACK))
                    .build()
                    .bytes
            })
            .collect()
    };
    let intel_from = |value: &'static str| {
        move |r: &Value| {
            r["type"] == "alert" && r["kind"] == "intel" && r["intel"]["value"] == value
        }
    };
    assert_eq!(pair.send(bare([10, 66, 3, 4], 200)), 200);
    let seen = daemon.records_until(intel_from("10.66.3.4"));
    let alert = seen
        .last()
        .unwrap_or_else(|| panic!("no intel alert"))
        .clone();
    assert_eq!(alert["subject"], "10.66.3.4", "{alert}");
    assert_eq!(alert["intel"]["host"], "10.0.1.1");
    assert_eq!(alert["intel"]["seen"], "source");
    assert_eq!(alert["intel"]["indicator"], "10.66.0.0/16");
    assert_eq!(alert["intel"]["indicator_type"], "Intel::SUBNET");
    let packets = alert["packets"].as_u64().unwrap_or(0);
    assert!((1..=200).contains(&packets), "{alert}");
    assert_eq!(alert["intel"]["matches"].as_u64(), Some(packets));

    // The feed replaced: one network out, another in, taken at the next interval.
    write_feed("10.77.0.0/16");
    daemon.wait_stderr("1 networks matched in the kernel (1 added, 1 removed");
    assert_eq!(pair.send(bare([10, 66, 3, 5], 50)), 50);
    thread::sleep(Duration::from_millis(600));
    assert_eq!(pair.send(bare([10, 77, 1, 1], 50)), 50);
    let mut records = seen;
    records.extend(daemon.records_until(intel_from("10.77.1.1")));
    let (status, rest, stderr) = daemon.stop(libc::SIGTERM);
    assert!(status.success(), "{stderr:?}");
    records.extend(
        rest.iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok()),
    );
    // The kernel's own count of listed frames: the first 200 and the 50 of the network
    // listed now, none of the network no longer listed.
    let listed: u64 = records
        .iter()
        .filter(|r| r["type"] == "interval")
        .filter_map(|r| r["intel"]["listed_packets"].as_u64())
        .sum();
    assert_eq!(
        listed, 250,
        "a network no longer listed still matched, or a frame was lost"
    );
}

/// A listed network's frames to more local hosts in one interval than the kernel's table of
/// matches holds: the first table-full of hosts alert, one each; the frames past it are
/// counted and said, never lost silently.
#[test]
fn a_full_table_of_matches_is_counted_and_said() {
    if !privileged("a_full_table_of_matches_is_counted_and_said") {
        return;
    }
    let dir = ScratchDir::new("nwfull");
    let table = netwatch_common::INTEL_MAX_HITS as usize;
    let extra = 300;
    let frames: Vec<(Duration, Vec<u8>)> = (0..table + extra)
        .map(|i| {
            let [_, _, hi, lo] = (i as u32).to_be_bytes();
            (
                Duration::from_millis(BASE * 1_000 + (i / 200) as u64),
                FrameBuilder::ipv4([203, 0, 113, 9])
                    .to_ipv4([10, 1, hi, lo])
                    .to_port(9_999)
                    .build()
                    .bytes,
            )
        })
        .collect();
    let frame_len = frames[0].1.len();
    let (output, stderr) = replay_with_feed(&dir, frames);
    assert!(
        stderr.contains(&format!(
            "{extra} frames ({} bytes) of listed networks found the kernel's table of matches full",
            extra * frame_len
        )),
        "{stderr}"
    );
    // One alert per host the table held: those over the interval's cap of alert lines are
    // counted in its `suppressed` alert.
    let records = records(&output);
    let alerts = of_type(&records, "alert");
    let said = alerts
        .iter()
        .filter(|a| a["kind"] == "intel" && a["intel"]["seen"] == "source")
        .count();
    let suppressed: usize = alerts
        .iter()
        .filter(|a| a["kind"] == "suppressed")
        .filter_map(|a| {
            a["detail"]
                .as_str()?
                .split(", ")
                .find_map(|part| part.strip_prefix("intel "))?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(said > 0, "{alerts:?}");
    assert_eq!(
        said + suppressed,
        table,
        "one alert per host the table held"
    );
}
