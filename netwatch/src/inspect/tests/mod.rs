//! Inspection of crafted frames, built with etherparse's packet builder.
//!
//! This file owns the frames and the helpers every family of tests shares (TCP and UDP
//! frames, inspectors, the events of a run, a browser's login request); the tests are in one
//! file per family: `credentials` (FTP, POP3, IMAP, SMTP, Telnet and the bound on flow
//! state), `http`, `dns` (events and tunnelling), `keywords`, and `robustness` (inputs that
//! must not panic, and the property tests). A test drives the inspector through its entry
//! points and reads what comes out (and, for its bound, the size of the flow table); it must
//! not change what the inspector does.

mod credentials;
mod dns;
mod http;
mod keywords;
mod robustness;

use std::{collections::HashMap, time::Duration};

use etherparse::{PacketBuilder, VlanId};

use super::{config::InspectConfig, event::EventKind, inspector::Inspector};

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
