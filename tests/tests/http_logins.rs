//! Logins as browsers and applications send them, replayed through the real binary and the
//! real XDP program (its sampler copies whole frames): a form after a long head, a head and
//! its body in two segments, a body in two segments out of order, JSON, multipart, and a
//! retransmitted segment. Each gives exactly one credential, with its user, and its secret
//! only with `--show-secrets`.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use netwatch_tests::{
    ScratchDir,
    frames::{ACK, FrameBuilder, PSH, Transport},
    netns, netwatch_bin, privileged,
    process::{Guard, lines},
    replay::{BASE, of_type, records, replay},
    write_pcap,
};
use serde_json::Value;

const CLIENT: [u8; 4] = [192, 0, 2, 10];
const SERVER: [u8; 4] = [198, 51, 100, 80];
const USER: &str = "alice@example.com";
const SECRET: &str = "p@ss w0rd&=";

/// A browser's POST of `content_type` and `body`: a head of 650 bytes and more.
fn post(content_type: &str, body: &str) -> Vec<u8> {
    let head = format!(
        "POST /dvwa/login.php HTTP/1.1\r\nHost: 198.51.100.80\r\nConnection: keep-alive\r\nContent-Length: {}\r\nCache-Control: max-age=0\r\nOrigin: http://198.51.100.80\r\nContent-Type: {content_type}\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\nReferer: http://198.51.100.80/dvwa/login.php\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: security=impossible; PHPSESSID=0123456789abcdef0123456789abcdef; _ga=GA1.1.123456789.1700000000\r\n\r\n",
        body.len()
    );
    assert!(head.len() >= 650);
    [head.into_bytes(), body.as_bytes().to_vec()].concat()
}

fn form() -> Vec<u8> {
    post(
        "application/x-www-form-urlencoded",
        "username=alice%40example.com&password=p%40ss+w0rd%26%3D&Login=Login&user_token=4f1c",
    )
}

fn json() -> Vec<u8> {
    post(
        "application/json",
        r#"{"data":{"user":{"email":"alice@example.com","password":"p@ss w0rd&="}},"remember":true}"#,
    )
}

fn multipart() -> Vec<u8> {
    post(
        "multipart/form-data; boundary=----WebKitFormBoundaryQ1w2E3r4",
        "------WebKitFormBoundaryQ1w2E3r4\r\nContent-Disposition: form-data; name=\"login\"\r\n\r\nalice@example.com\r\n------WebKitFormBoundaryQ1w2E3r4\r\nContent-Disposition: form-data; name=\"pwd\"\r\n\r\np@ss w0rd&=\r\n------WebKitFormBoundaryQ1w2E3r4--\r\n",
    )
}

/// Where the head ends in a request: the split between the head and the body.
fn head_len(request: &[u8]) -> usize {
    request
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(request.len(), |i| i + 4)
}

/// One conversation: the client's segments of `request`, as (offset, length), in the order
/// sent, from client port `port`.
struct Case {
    name: &'static str,
    port: u16,
    request: Vec<u8>,
    segments: Vec<(usize, usize)>,
}

fn cases() -> Vec<Case> {
    let whole = |name, port, request: Vec<u8>| Case {
        name,
        port,
        segments: vec![(0, request.len())],
        request,
    };
    let form_split = form();
    let head = head_len(&form_split);
    let body = form_split.len() - head;
    let form_ooo = form();
    let middle = head + body / 2;
    let form_again = form();
    vec![
        whole("a form after a 650-byte head", 41_001, form()),
        Case {
            name: "the head in one segment, the body in the next",
            port: 41_002,
            segments: vec![(0, head), (head, body)],
            request: form_split,
        },
        Case {
            name: "the body in two segments, out of order",
            port: 41_003,
            segments: vec![
                (0, head),
                (middle, form_ooo.len() - middle),
                (head, middle - head),
            ],
            request: form_ooo,
        },
        whole("a JSON login", 41_004, json()),
        whole("a multipart login", 41_005, multipart()),
        Case {
            name: "a retransmitted segment",
            port: 41_006,
            segments: vec![(0, head), (0, head), (head, body), (head, body)],
            request: form_again,
        },
    ]
}

/// The frames of a case, each `gap` after the previous, from `start`.
fn frames_of(case: &Case, start: Duration, gap: Duration) -> Vec<(Duration, Vec<u8>)> {
    let base = 0x1000_0000u32 + u32::from(case.port) * 7;
    case.segments
        .iter()
        .enumerate()
        .map(|(i, (offset, len))| {
            let frame = FrameBuilder::ipv4(CLIENT)
                .from_port(case.port)
                .to_ipv4(SERVER)
                .to_port(80)
                .transport(Transport::Tcp(PSH | ACK))
                .seq(base.wrapping_add(*offset as u32))
                .raw_payload(&case.request[*offset..*offset + *len])
                .build();
            (start + gap * i as u32, frame.bytes)
        })
        .collect()
}

/// The credential events of a replay, as (client port, user, secret).
fn credentials(records: &[Value]) -> Vec<(u64, String, String)> {
    of_type(records, "event")
        .into_iter()
        .filter(|event| event["event"] == "credential")
        .map(|event| {
            let client = event["client"].as_str().unwrap_or("?");
            let port = client
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .unwrap_or(0);
            (
                port,
                event["user"].as_str().unwrap_or("?").to_owned(),
                event["secret"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

#[test]
fn each_login_gives_exactly_one_credential_with_its_user() {
    if !privileged("each_login_gives_exactly_one_credential_with_its_user") {
        return;
    }
    let dir = ScratchDir::new("nwlogin");
    for case in cases() {
        let frames = frames_of(&case, Duration::from_secs(BASE), Duration::from_millis(3));
        let capture = dir.join("login.pcap");
        write_pcap(&capture, &frames);
        for (show, secret) in [(false, "<redacted>"), (true, SECRET)] {
            let mut args = vec![capture.to_str().unwrap_or_default(), "--format", "json"];
            if show {
                args.push("--show-secrets");
            }
            let output = replay(&args);
            assert!(
                output.status.success(),
                "{}: {}",
                case.name,
                String::from_utf8_lossy(&output.stderr)
            );
            let records = records(&output);
            assert_eq!(
                credentials(&records),
                vec![(u64::from(case.port), USER.to_owned(), secret.to_owned())],
                "{}",
                case.name
            );
            // The request itself, once, with its whole user agent.
            let http: Vec<&Value> = of_type(&records, "event")
                .into_iter()
                .filter(|event| event["event"] == "http")
                .collect();
            assert_eq!(http.len(), 1, "{}: {http:?}", case.name);
            assert!(
                http[0]["user_agent"]
                    .as_str()
                    .is_some_and(|agent| agent.ends_with("Safari/537.36")),
                "{}: {}",
                case.name,
                http[0]
            );
        }
    }
}

#[test]
fn a_head_whose_body_never_comes_is_reported_at_the_end_without_a_credential() {
    if !privileged("a_head_whose_body_never_comes_is_reported_at_the_end_without_a_credential") {
        return;
    }
    let dir = ScratchDir::new("nwlogin");
    let request = form();
    let head = head_len(&request);
    let case = Case {
        name: "head only",
        port: 41_100,
        segments: vec![(0, head)],
        request,
    };
    let capture = dir.join("head.pcap");
    write_pcap(
        &capture,
        &frames_of(&case, Duration::from_secs(BASE), Duration::ZERO),
    );
    let output = replay(&[capture.to_str().unwrap_or_default(), "--format", "json"]);
    assert!(output.status.success());
    let records = records(&output);
    assert!(credentials(&records).is_empty());
    let http: Vec<&Value> = of_type(&records, "event")
        .into_iter()
        .filter(|event| event["event"] == "http")
        .collect();
    assert_eq!(http.len(), 1, "reported as far as it got: {records:?}");
    assert_eq!(http[0]["method"], "POST");
}

/// The same conversations live: sent over a veth pair to the monitored end, sampled by the
/// kernel (whole frames, every segment to port 80), gathered by the daemon.
#[test]
fn each_login_on_the_wire_gives_exactly_one_credential() {
    if !privileged("each_login_on_the_wire_gives_exactly_one_credential") {
        return;
    }
    let pair = netns::VethPair::new(true);
    let mut command = pair.monitor.command(&netwatch_bin().to_string_lossy());
    command
        .args(["monitor", "-i", &pair.monitor_if, "--format", "json"])
        .args(["--interval", "200ms", "--db"])
        .arg(pair.monitor.db_path())
        .arg("--control")
        .arg(pair.monitor.control_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Guard(
        command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start netwatch: {err}")),
    );
    let stdout = lines(child.0.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let stderr = lines(child.0.stderr.take().unwrap_or_else(|| panic!("no stderr")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match stderr.recv_timeout(left) {
            Ok(line) if line.contains("attached to") => break,
            Ok(_) => {}
            Err(err) => panic!("netwatch did not attach: {err}"),
        }
    }
    let cases = cases();
    let frames: Vec<Vec<u8>> = cases
        .iter()
        .flat_map(|case| frames_of(case, Duration::ZERO, Duration::ZERO))
        .map(|(_, bytes)| bytes)
        .collect();
    let count = frames.len();
    assert_eq!(pair.send(frames), count);
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while credentials(&records).len() < cases.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stdout
            .recv_timeout(left)
            .unwrap_or_else(|err| panic!("credentials so far {:?}: {err}", credentials(&records)));
        records.push(serde_json::from_str::<Value>(&line).unwrap_or_else(|err| panic!("{err}")));
    }
    // A moment more: a second credential for any login would come now.
    let settle = Instant::now() + Duration::from_millis(600);
    while let Ok(line) = stdout.recv_timeout(settle.saturating_duration_since(Instant::now())) {
        records.push(serde_json::from_str::<Value>(&line).unwrap_or_else(|err| panic!("{err}")));
    }
    let mut found = credentials(&records);
    found.sort();
    let expected: Vec<(u64, String, String)> = cases
        .iter()
        .map(|case| {
            (
                u64::from(case.port),
                USER.to_owned(),
                "<redacted>".to_owned(),
            )
        })
        .collect();
    assert_eq!(found, expected);
}
