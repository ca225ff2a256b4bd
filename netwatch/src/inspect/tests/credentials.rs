//! Cleartext credentials: FTP, POP3, IMAP and SMTP logins, Telnet logins typed a key at a
//! time, and the bound on the flow state they keep. Must not test HTTP (`http` does).

use super::{CLIENT, SERVER, T, credential, events, inspector, showing_secrets, tcp, to_server};
use crate::inspect::{config::InspectConfig, event::EventKind, inspector::Inspector, text};

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
