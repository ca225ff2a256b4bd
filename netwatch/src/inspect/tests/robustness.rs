//! Any input is safe: regression inputs that once were, or could be, trouble, and property
//! tests over arbitrary frames, payloads, bodies and segment orders.

use std::time::Duration;

use proptest::prelude::*;

use super::{
    CLIENT, SERVER, T, inspector, login_request, showing_secrets, tcp_at, to_server, udp_v6,
};
use crate::inspect::{
    config::{InspectConfig, KeywordConfig},
    dns::encode_query as dns_query,
    event::EventKind,
    inspector::Inspector,
    text,
};

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
