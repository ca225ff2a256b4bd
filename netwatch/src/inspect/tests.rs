//! Inspection of crafted frames, built with etherparse's packet builder.

use std::{net::SocketAddr, time::Duration};

use etherparse::{PacketBuilder, VlanId};
use proptest::prelude::*;

use super::*;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT: [u8; 4] = [192, 0, 2, 10];
const SERVER: [u8; 4] = [198, 51, 100, 20];
const T: Duration = Duration::from_secs(1_000);

/// One end of a test flow: address and port.
type End = ([u8; 4], u16);

thread_local! {
    /// The next sequence number of each direction of each flow the tests send, so that the
    /// segments of a flow follow each other as a real sender's do.
    static NEXT_SEQ: std::cell::RefCell<HashMap<(End, End), u32>> =
        std::cell::RefCell::default();
}

fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let seq = NEXT_SEQ.with(|next| {
        let mut next = next.borrow_mut();
        let seq = next.entry((src, dst)).or_insert(1);
        let this = *seq;
        *seq = seq.wrapping_add(payload.len() as u32);
        this
    });
    tcp_at(src, dst, seq, payload)
}

/// A segment with its sequence number given.
fn tcp_at(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 65535)
        .psh()
        .ack(1);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn to_server(port: u16, payload: &[u8]) -> Vec<u8> {
    tcp((CLIENT, 40_000), (SERVER, port), payload)
}

fn udp_v6(src: u16, dst: u16, payload: &[u8], vlan: bool) -> Vec<u8> {
    let client = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let server = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x35,
    ];
    let mut frame = Vec::new();
    if vlan {
        let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(VlanId::try_new(7).unwrap())
            .ipv6(client, server, 64)
            .udp(src, dst);
        builder.write(&mut frame, payload).unwrap();
    } else {
        let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(client, server, 64)
            .udp(src, dst);
        builder.write(&mut frame, payload).unwrap();
    }
    frame
}

fn inspector() -> Inspector {
    Inspector::new(InspectConfig::default(), String::from("t"))
}

/// An inspector that prints secrets (`show_secrets`).
fn showing_secrets() -> Inspector {
    Inspector::new(
        InspectConfig {
            show_secrets: true,
            ..InspectConfig::default()
        },
        String::from("t"),
    )
}

fn events(inspector: &mut Inspector, frames: &[Vec<u8>]) -> Vec<EventKind> {
    frames
        .iter()
        .flat_map(|frame| inspector.inspect(frame, T).events)
        .map(|event| event.kind)
        .collect()
}

fn credential(
    protocol: &'static str,
    mechanism: &'static str,
    user: &str,
    secret: &str,
) -> EventKind {
    EventKind::Credential {
        protocol,
        mechanism,
        user: Some(user.to_owned()),
        secret: secret.to_owned(),
    }
}

#[test]
fn ftp_user_then_pass_across_samples_is_one_redacted_credential() {
    let mut inspector = inspector();
    let found = events(
        &mut inspector,
        &[
            to_server(21, b"USER alice\r\n"),
            to_server(21, b"PASS hunter2\r\n"),
        ],
    );
    assert_eq!(
        found,
        vec![credential("ftp", "USER/PASS", "alice", "<redacted>")]
    );
}

#[test]
fn secrets_show_only_when_asked() {
    let mut inspector = showing_secrets();
    let found = events(
        &mut inspector,
        &[to_server(110, b"USER bob\r\nPASS s3cret\r\n")],
    );
    assert_eq!(
        found,
        vec![credential("pop3", "USER/PASS", "bob", "s3cret")]
    );
}

#[test]
fn anonymous_ftp_is_no_credential() {
    let mut inspector = inspector();
    let found = events(
        &mut inspector,
        &[
            to_server(21, b"USER anonymous\r\n"),
            to_server(21, b"PASS guest@example.com\r\n"),
        ],
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn server_replies_are_not_read_as_commands() {
    let mut inspector = inspector();
    let reply = tcp((SERVER, 110), (CLIENT, 40_000), b"USER x\r\nPASS y\r\n");
    assert!(events(&mut inspector, &[reply]).is_empty());
}

#[test]
fn imap_login_with_quoted_strings() {
    let mut inspector = inspector();
    let found = events(
        &mut inspector,
        &[to_server(143, b"a001 LOGIN \"carol smith\" \"pa ss\"\r\n")],
    );
    assert_eq!(
        found,
        vec![credential("imap", "LOGIN", "carol smith", "<redacted>")]
    );
}

#[test]
fn imap_authenticate_plain_on_the_next_line() {
    let mut inspector = inspector();
    let found = events(
        &mut inspector,
        &[
            to_server(143, b"a002 AUTHENTICATE PLAIN\r\n"),
            to_server(143, b"AGNhcm9sAHB3\r\n"),
        ],
    );
    assert_eq!(
        found,
        vec![credential("imap", "AUTH PLAIN", "carol", "<redacted>")]
    );
}

#[test]
fn smtp_auth_plain_inline_and_login_over_three_lines() {
    let mut inspector = inspector();
    let plain = events(
        &mut inspector,
        &[to_server(587, b"AUTH PLAIN AGJvYgBzM2NyM3Q=\r\n")],
    );
    assert_eq!(
        plain,
        vec![credential("smtp", "AUTH PLAIN", "bob", "<redacted>")]
    );
    let login = events(
        &mut inspector,
        &[
            to_server(25, b"EHLO me\r\n"),
            to_server(25, b"AUTH LOGIN\r\n"),
            to_server(25, b"ZGF2ZQ==\r\n"),
            to_server(25, b"cGFzc3dvcmQ=\r\n"),
        ],
    );
    assert_eq!(
        login,
        vec![credential("smtp", "AUTH LOGIN", "dave", "<redacted>")]
    );
}

#[test]
fn smtp_without_auth_gives_nothing() {
    let mut inspector = inspector();
    let found = events(
        &mut inspector,
        &[to_server(
            25,
            b"EHLO client\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
        )],
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn http_requests_basic_auth_and_forms() {
    let mut inspector = inspector();
    let get = to_server(
        80,
        b"GET /admin HTTP/1.1\r\nHost: router.lan\r\nUser-Agent: curl/8.5\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n",
    );
    let login = to_server(
        8080,
        b"POST /login HTTP/1.1\r\nHost: app\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nusername=eve&passwd=letmein",
    );
    let comment = to_server(
        80,
        b"POST /comment HTTP/1.1\r\nHost: blog\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nname=eve&comment=hello",
    );
    let found = events(&mut inspector, &[get, login, comment]);
    assert_eq!(
        found,
        vec![
            EventKind::Http {
                method: "GET".into(),
                host: Some("router.lan".into()),
                path: "/admin".into(),
                user_agent: Some("curl/8.5".into()),
            },
            credential("http", "Basic", "admin", "<redacted>"),
            EventKind::Http {
                method: "POST".into(),
                host: Some("app".into()),
                path: "/login".into(),
                user_agent: None,
            },
            credential("http", "form", "eve", "<redacted>"),
            EventKind::Http {
                method: "POST".into(),
                host: Some("blog".into()),
                path: "/comment".into(),
                user_agent: None,
            },
        ]
    );
}

use super::dns::encode_query as dns_query;

#[test]
fn dns_queries_and_answers_over_ipv4_ipv6_vlan_and_tcp() {
    let mut inspector = inspector();
    let v4 = {
        let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(CLIENT, SERVER, 64)
            .udp(5353, 53);
        let mut frame = Vec::new();
        builder
            .write(&mut frame, &dns_query("example.com", 1))
            .unwrap();
        frame
    };
    let mut answer = dns_query("missing.example", 28);
    answer[2] = 0x81;
    answer[3] = 0x83;
    let v6_answer = udp_v6(53, 5353, &answer, false);
    let vlan = udp_v6(5353, 53, &dns_query("tagged.example", 16), true);
    let mut over_tcp = Vec::new();
    let message = dns_query("zone.example", 252);
    over_tcp.extend_from_slice(&(message.len() as u16).to_be_bytes());
    over_tcp.extend_from_slice(&message);
    let tcp = to_server(53, &over_tcp);
    let findings: Vec<Event> = [v4, v6_answer, vlan, tcp]
        .iter()
        .flat_map(|frame| inspector.inspect(frame, T).events)
        .collect();
    let names: Vec<(String, String, bool, Option<String>, &str)> = findings
        .iter()
        .map(|event| match &event.kind {
            EventKind::Dns {
                name,
                qtype,
                response,
                rcode,
                transport,
            } => (
                name.clone(),
                qtype.clone(),
                *response,
                rcode.clone(),
                *transport,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("example.com".into(), "A".into(), false, None, "udp"),
            (
                "missing.example".into(),
                "AAAA".into(),
                true,
                Some("NXDOMAIN".into()),
                "udp"
            ),
            ("tagged.example".into(), "TXT".into(), false, None, "udp"),
            ("zone.example".into(), "AXFR".into(), false, None, "tcp"),
        ]
    );
    // The answer's client is the asker, the end not on port 53 (this frame goes from
    // [2001:db8::1]:53 to [2001:db8::35]:5353).
    assert_eq!(
        findings[1].server,
        "[2001:db8::1]:53".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        findings[1].client,
        "[2001:db8::35]:5353".parse::<SocketAddr>().unwrap()
    );
}

fn dns_from(source: [u8; 4], name: &str) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(source, SERVER, 64)
        .udp(5353, 53);
    let mut frame = Vec::new();
    builder.write(&mut frame, &dns_query(name, 16)).unwrap();
    frame
}

#[test]
fn random_long_labels_alert_as_dns_tunnel_once() {
    let mut inspector = inspector();
    let mut alerts = Vec::new();
    for i in 0..5 {
        let name = format!("x{i}q8zk3v9w2m7p1r6t0y5u4e3o2i1a9s8d7.tunnel.example");
        alerts.extend(inspector.inspect(&dns_from(CLIENT, &name), T).alerts);
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::DnsTunnel);
    assert_eq!(alerts[0].detail.as_deref(), Some("domain tunnel.example"));
    // Ordinary names do not.
    let mut inspector = inspector_fresh();
    let plain: Vec<Alert> = ["www.example.com", "mail.google.com", "a.root-servers.net"]
        .iter()
        .flat_map(|name| inspector.inspect(&dns_from(CLIENT, name), T).alerts)
        .collect();
    assert!(plain.is_empty(), "{plain:?}");
}

fn inspector_fresh() -> Inspector {
    inspector()
}

#[test]
fn many_subdomains_of_one_domain_alert_at_the_end_of_the_interval() {
    let mut inspector = inspector();
    for i in 0..60 {
        let findings = inspector.inspect(&dns_from(CLIENT, &format!("h{i}.exfil.example")), T);
        assert!(findings.alerts.is_empty());
    }
    // Another source with few names says nothing.
    for i in 0..10 {
        inspector.inspect(
            &dns_from([192, 0, 2, 99], &format!("h{i}.exfil.example")),
            T,
        );
    }
    let alerts = inspector.end_interval(T, Duration::from_secs(1));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].subject, Subject::Source(CLIENT.into()));
    assert_eq!(alerts[0].observed, 51.0);
    // A new interval starts from zero.
    assert!(inspector.end_interval(T, Duration::from_secs(1)).is_empty());
}

#[test]
fn keywords_are_off_by_default_and_once_per_flow_when_on() {
    let frame = to_server(4444, b"login: user\r\npassword: x\r\n");
    assert!(events(&mut inspector(), std::slice::from_ref(&frame)).is_empty());
    let mut inspector = Inspector::new(
        InspectConfig {
            keywords: KeywordConfig {
                enabled: true,
                words: vec!["user".into(), "PASS".into()],
            },
            ..InspectConfig::default()
        },
        "t".into(),
    );
    let found = events(&mut inspector, &[frame.clone(), frame]);
    assert_eq!(
        found,
        vec![
            EventKind::Keyword {
                keyword: "user".into()
            },
            EventKind::Keyword {
                keyword: "PASS".into()
            },
        ]
    );
}

#[test]
fn flow_state_is_bounded() {
    let mut inspector = Inspector::new(
        InspectConfig {
            max_flows: 3,
            ..InspectConfig::default()
        },
        "t".into(),
    );
    for port in 0..10u16 {
        let frame = tcp((CLIENT, 1000 + port), (SERVER, 21), b"USER someone\r\n");
        inspector.inspect(&frame, T);
    }
    assert!(inspector.flows.len() <= 3);
    // The oldest flow was forgotten: its PASS has no user.
    let pass = tcp((CLIENT, 1000), (SERVER, 21), b"PASS x\r\n");
    let found = events(&mut inspector, &[pass]);
    assert!(
        matches!(&found[..], [EventKind::Credential { user: None, .. }]),
        "{found:?}"
    );
}

/// Inputs that once were, or could be, trouble: kept as regression tests.
#[test]
fn regression_inputs_do_not_panic() {
    let mut inspector = Inspector::new(
        InspectConfig {
            keywords: KeywordConfig {
                enabled: true,
                words: vec![String::new(), "x".into()],
            },
            ..InspectConfig::default()
        },
        "t".into(),
    );
    let mut pointer_loop = dns_query("a", 1);
    let at = pointer_loop.len() - 5;
    pointer_loop[12] = 0xc0;
    pointer_loop[13] = 12;
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 13],
        vec![0xff; 14],
        to_server(53, &[0x00]),
        to_server(53, &[0x00, 0x05, 0xab]),
        udp_v6(5353, 53, &pointer_loop[..at], false),
        to_server(143, b"a LOGIN \"unterminated\r\n"),
        to_server(25, b"AUTH PLAIN ====\r\n"),
        to_server(25, b"AUTH LOGIN \xff\xfe\r\n"),
        to_server(80, b"POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\npassword=%zz%"),
        to_server(80, b"GET"),
        to_server(21, b"\xff\xff\r\nPASS"),
    ];
    for case in cases {
        let _ = inspector.inspect(&case, T);
    }
    let _ = inspector.end_interval(T, Duration::from_secs(1));
}

fn to_client(port: u16, payload: &[u8]) -> Vec<u8> {
    tcp((SERVER, port), (CLIENT, 40_000), payload)
}

/// One segment per keystroke, as a Telnet client in character mode sends them; a 255 byte
/// goes as IAC IAC, in one segment.
fn keystrokes(typed: &[u8]) -> Vec<Vec<u8>> {
    let mut segments = Vec::new();
    let mut bytes = typed.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        if byte == 255 && bytes.peek() == Some(&255) {
            bytes.next();
            segments.push(to_server(23, &[255, 255]));
        } else {
            segments.push(to_server(23, &[byte]));
        }
    }
    segments
}

/// A Telnet session as a client sends it: option negotiation, then one keystroke per segment
/// (a line ends with CR NUL), the server echoing and prompting in between.
fn telnet_login(user: &[u8], password: &[u8]) -> Vec<Vec<u8>> {
    // IAC DO ECHO, IAC WILL NAWS, IAC SB NAWS 0 80 0 24 IAC SE
    let mut frames = vec![
        to_client(23, &[255, 253, 1]),
        to_server(23, &[255, 251, 31, 255, 250, 31, 0, 80, 0, 24, 255, 240]),
        to_client(23, b"\r\nDebian GNU/Linux 12\r\nhost login: "),
    ];
    for key in user {
        frames.push(to_server(23, &[*key]));
        frames.push(to_client(23, &[*key]));
    }
    frames.push(to_server(23, b"\r\0"));
    frames.push(to_client(23, b"\r\nPassword: "));
    // The password is not echoed.
    frames.extend(keystrokes(password));
    frames.push(to_server(23, b"\r\0"));
    frames.push(to_client(23, b"\r\nLast login: never\r\n$ "));
    frames
}

#[test]
fn a_telnet_login_typed_a_key_at_a_time_is_one_credential() {
    let mut inspector = inspector();
    let mut frames = telnet_login(b"alice", b"s3cret");
    // At the shell: nothing typed there is a login.
    frames.extend(keystrokes(b"passwd\r"));
    assert_eq!(
        events(&mut inspector, &frames),
        vec![credential("telnet", "login", "alice", "<redacted>")]
    );
}

#[test]
fn a_telnet_password_is_read_as_edited_and_shown_only_when_asked() {
    let mut inspector = showing_secrets();
    // "bob" typed as "bpb", two backspaces, "ob"; the password typed with a delete, and
    // IAC IAC standing for a 255 byte.
    let frames = telnet_login(b"bpb\x08\x08ob", b"pw\x7fass\xff\xff1");
    assert_eq!(
        events(&mut inspector, &frames),
        vec![credential("telnet", "login", "bob", "pass\u{ff}1")]
    );
}

#[test]
fn telnet_keystrokes_without_a_login_prompt_are_no_credential() {
    let mut inspector = inspector();
    let mut frames = vec![to_client(23, b"$ ")];
    frames.extend(keystrokes(b"cat notes\r"));
    frames.push(to_client(23, b"Password: "));
    // A password prompt with no login before it still reads the secret, without a user.
    frames.push(to_server(23, b"hunter2\r\n"));
    assert_eq!(
        events(&mut inspector, &frames),
        vec![EventKind::Credential {
            protocol: "telnet",
            mechanism: "login",
            user: None,
            secret: String::from("<redacted>"),
        }]
    );
}

#[test]
fn telnet_commands_are_taken_out_of_the_data() {
    assert_eq!(
        text::telnet_data(&[
            b'a', 255, 255, 255, 251, 1, b'b', 255, 250, 24, 0, 255, 240, b'c'
        ]),
        vec![b'a', 255, b'b', b'c']
    );
    // A subnegotiation cut by the end of the sample, and a lone IAC at the end.
    assert_eq!(text::telnet_data(&[b'x', 255, 250, 24, 1]), vec![b'x']);
    assert_eq!(text::telnet_data(&[b'y', 255]), vec![b'y']);
    assert_eq!(
        text::telnet_prompt(b"\r\nhost login: "),
        Some(text::TelnetPrompt::User)
    );
    assert_eq!(
        text::telnet_prompt(b"Password:"),
        Some(text::TelnetPrompt::Password)
    );
    assert_eq!(text::telnet_prompt(b"Welcome\r\n$ "), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Any bytes at all.
    #[test]
    fn arbitrary_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut inspector = inspector();
        let _ = inspector.inspect(&frame, T);
    }

    /// Valid headers with any payload, on every inspected port: the parsers get real work.
    #[test]
    fn arbitrary_payloads_never_panic(
        port in proptest::sample::select(vec![21u16, 23, 25, 53, 80, 110, 143, 587, 8080]),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        udp in any::<bool>(),
    ) {
        let mut inspector = inspector();
        let frame = if udp { udp_v6(5353, port, &payload, false) } else { to_server(port, &payload) };
        let _ = inspector.inspect(&frame, T);
        let _ = inspector.end_interval(T, Duration::from_secs(1));
    }

    /// Text-like payloads, closer to what the parsers look for.
    #[test]
    fn command_like_payloads_never_panic(
        port in proptest::sample::select(vec![21u16, 25, 80, 110, 143]),
        payload in "(USER|PASS|AUTH PLAIN|AUTH LOGIN|a LOGIN|APOP|GET / HTTP/1.1|POST /x HTTP/1.1)[ -~\r\n=\"%]{0,120}",
    ) {
        let mut inspector = inspector();
        let _ = inspector.inspect(&to_server(port, payload.as_bytes()), T);
        let _ = inspector.inspect(&to_server(port, payload.as_bytes()), T);
    }

    /// A login cut at any points into segments sent in any order, some twice: exactly one
    /// credential, with the user and the secret, once the last gap is filled.
    #[test]
    fn a_login_in_segments_in_any_order_is_one_credential(
        cuts in proptest::collection::btree_set(1usize..700, 0..6),
        order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        body_kind in 0usize..3,
        base in any::<u32>(),
    ) {
        let request = login_request(body_kind);
        let mut bounds = vec![0];
        bounds.extend(cuts.into_iter().filter(|cut| *cut < request.len()));
        bounds.push(request.len());
        let mut segments: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        // The first segment first (following starts at a request line), then the rest in
        // the order drawn, then every one again: duplicates are retransmissions.
        let mut rest = segments.split_off(1);
        for index in &order {
            if !rest.is_empty() {
                let i = index.index(rest.len());
                let taken = rest.remove(i);
                segments.push(taken);
            }
        }
        segments.extend(rest);
        let again = segments.clone();
        segments.extend(again);
        let mut inspector = showing_secrets();
        let client = (CLIENT, 41_000);
        let server = (SERVER, 80);
        let mut found = Vec::new();
        for (start, end) in segments {
            let frame = tcp_at(client, server, base.wrapping_add(start as u32), &request[start..end]);
            found.extend(inspector.inspect(&frame, T).events.into_iter().map(|e| e.kind));
        }
        found.extend(inspector.expire(T, true).into_iter().map(|e| e.kind));
        let credentials: Vec<&EventKind> = found
            .iter()
            .filter(|kind| matches!(kind, EventKind::Credential { .. }))
            .collect();
        prop_assert_eq!(credentials.len(), 1, "{:?}", found);
        let EventKind::Credential { user, secret, .. } = credentials[0] else {
            unreachable!()
        };
        prop_assert_eq!(user.as_deref(), Some("alice@example.com"));
        prop_assert_eq!(secret.as_str(), "p@ss w0rd&=");
    }

    /// Bodies of every kind the HTTP parsers read, with any bytes in them.
    #[test]
    fn arbitrary_http_bodies_never_panic(
        content_type in proptest::sample::select(vec![
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=XyZ",
            "multipart/form-data; boundary=",
            "application/json",
            "text/plain",
        ]),
        authorization in "(Basic|Bearer|Digest|Negotiate)[ -~]{0,60}",
        body in proptest::collection::vec(any::<u8>(), 0..300),
        chunked in any::<bool>(),
        split in 0usize..400,
    ) {
        let mut request = format!(
            "POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: {authorization}\r\nContent-Type: {content_type}\r\n"
        )
        .into_bytes();
        if chunked {
            request.extend_from_slice(format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n", body.len()).as_bytes());
            request.extend_from_slice(&body);
            request.extend_from_slice(b"\r\n0\r\n\r\n");
        } else {
            request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            request.extend_from_slice(&body);
        }
        let split = split.min(request.len());
        let mut inspector = inspector();
        let (first, second) = request.split_at(split);
        let client = (CLIENT, 42_000);
        let _ = inspector.inspect(&tcp_at(client, (SERVER, 80), 9, first), T);
        let _ = inspector.inspect(&tcp_at(client, (SERVER, 80), 9 + split as u32, second), T);
        let _ = inspector.expire(T, true);
        let _ = text::json_credentials(&body);
        let _ = text::multipart_fields(content_type, &body);
        let _ = text::digest_params(&String::from_utf8_lossy(&body));
    }
}

/// A login as a browser sends it, in one of three body encodings: a head of 650 bytes and
/// more (a long user agent, cookies), then the body.
fn login_request(body_kind: usize) -> Vec<u8> {
    let (content_type, body) = match body_kind {
        0 => (
            String::from("application/x-www-form-urlencoded"),
            String::from("username=alice%40example.com&password=p%40ss+w0rd%26%3D&Login=Login"),
        ),
        1 => (
            String::from("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"),
            String::from(
                "------WebKitFormBoundary7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nalice@example.com\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\np@ss w0rd&=\r\n------WebKitFormBoundary7MA4YWxkTrZu0gW--\r\n",
            ),
        ),
        _ => (
            String::from("application/json;charset=UTF-8"),
            String::from(
                r#"{"session":{"remember":true},"credentials":{"login":"alice@example.com","auth":{"pwd":"p@ss w0rd&="}}}"#,
            ),
        ),
    };
    let head = format!(
        "POST /dvwa/login.php HTTP/1.1\r\nHost: 10.9.9.9\r\nConnection: keep-alive\r\nContent-Length: {}\r\nCache-Control: max-age=0\r\nUpgrade-Insecure-Requests: 1\r\nOrigin: http://10.9.9.9\r\nContent-Type: {content_type}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\nReferer: http://10.9.9.9/dvwa/login.php\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: security=impossible; PHPSESSID=0123456789abcdef0123456789abcdef; _ga=GA1.1.123456789.1700000000\r\n\r\n",
        body.len()
    );
    assert!(head.len() >= 650, "{}", head.len());
    [head.into_bytes(), body.into_bytes()].concat()
}

#[test]
fn a_browser_login_in_one_segment_gives_its_credential_and_whole_user_agent() {
    for (kind, mechanism) in [(0, "form"), (1, "multipart"), (2, "json")] {
        let mut inspector = showing_secrets();
        let request = login_request(kind);
        let found = events(&mut inspector, &[to_server(80, &request)]);
        assert_eq!(found.len(), 2, "{found:?}");
        let EventKind::Http { user_agent, .. } = &found[0] else {
            panic!("{found:?}");
        };
        assert!(
            user_agent
                .as_deref()
                .is_some_and(|ua| ua.ends_with("Safari/537.36")),
            "{user_agent:?}"
        );
        assert_eq!(
            found[1],
            credential("http", mechanism, "alice@example.com", "p@ss w0rd&="),
            "{mechanism}"
        );
    }
}

#[test]
fn bearer_tokens_and_digest_responses_are_credentials() {
    let mut inspector = inspector();
    let bearer = to_server(
        80,
        b"GET /api/me HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig\r\n\r\n",
    );
    let digest = to_server(
        80,
        b"GET /dir/index.html HTTP/1.1\r\nHost: localhost\r\nAuthorization: Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"\r\n\r\n",
    );
    let found = events(&mut inspector, &[bearer, digest]);
    let credentials: Vec<&EventKind> = found
        .iter()
        .filter(|kind| matches!(kind, EventKind::Credential { .. }))
        .collect();
    assert_eq!(
        credentials,
        [
            &EventKind::Credential {
                protocol: "http",
                mechanism: "Bearer",
                user: None,
                secret: "<redacted>".into(),
            },
            &credential("http", "Digest", "Mufasa", "<redacted>"),
        ]
    );
    let mut showing = showing_secrets();
    let digest = to_server(
        80,
        b"GET / HTTP/1.1\r\nAuthorization: Digest username=\"a\\\"b\", response=\"abc123\"\r\n\r\n",
    );
    assert_eq!(
        events(&mut showing, &[digest])[1],
        credential("http", "Digest", "a\"b", "abc123")
    );
}

#[test]
fn a_body_that_never_comes_is_reported_at_the_timeout_without_a_credential() {
    let mut inspector = inspector();
    let head = to_server(
        80,
        b"POST /login HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\n",
    );
    assert!(
        events(&mut inspector, &[head]).is_empty(),
        "waits for the body"
    );
    assert!(
        inspector
            .expire(T + Duration::from_secs(5), false)
            .is_empty()
    );
    let late = inspector.expire(T + Duration::from_secs(10), false);
    assert_eq!(late.len(), 1);
    assert!(matches!(late[0].kind, EventKind::Http { .. }));
}

#[test]
fn http_fields_are_cut_at_their_documented_bounds() {
    let mut inspector = inspector();
    let path = "/".repeat(5000);
    let agent = "A".repeat(3000);
    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\nUser-Agent: {agent}\r\n\r\n");
    let found = events(&mut inspector, &[to_server(80, request.as_bytes())]);
    let EventKind::Http {
        path, user_agent, ..
    } = &found[0]
    else {
        panic!("{found:?}");
    };
    assert_eq!(path.len(), text::MAX_PATH);
    assert_eq!(
        user_agent.as_deref().map(str::len),
        Some(text::MAX_USER_AGENT)
    );
}

#[test]
fn a_password_in_a_query_string_is_redacted_and_reported() {
    let request = to_server(
        80,
        b"GET /login?user=ivan&password=hunter2&next=%2F HTTP/1.1\r\nHost: app\r\n\r\n",
    );
    let found = events(&mut inspector(), std::slice::from_ref(&request));
    assert_eq!(
        found,
        vec![
            EventKind::Http {
                method: "GET".into(),
                host: Some("app".into()),
                path: "/login?user=ivan&password=<redacted>&next=%2F".into(),
                user_agent: None,
            },
            credential("http", "query", "ivan", "<redacted>"),
        ]
    );
    let shown = events(&mut showing_secrets(), &[request]);
    assert_eq!(shown[1], credential("http", "query", "ivan", "hunter2"));
    let EventKind::Http { path, .. } = &shown[0] else {
        panic!("{shown:?}");
    };
    assert!(path.contains("hunter2"), "shown when asked: {path}");
    // A query without a password field is left alone.
    let search = to_server(80, b"GET /search?q=pass HTTP/1.1\r\n\r\n");
    assert_eq!(events(&mut inspector(), &[search]).len(), 1);
}
