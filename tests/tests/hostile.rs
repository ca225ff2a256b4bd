//! What a hostile sender puts in packets never reaches the admin's terminal raw, and a
//! password in a URL never reaches a file: replayed captures through the real binary.

use std::{fs, time::Duration};

use netwatch_tests::{
    ScratchDir,
    frames::{ACK, FrameBuilder, PSH, Transport},
    privileged,
    replay::{BASE, of_type, records, replay},
    write_pcap,
};

/// A segment from the client to `port` on the server, the `n`-th of its flow.
fn segment(port: u16, client_port: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    FrameBuilder::ipv4([192, 0, 2, 66])
        .from_port(client_port)
        .to_ipv4([198, 51, 100, 7])
        .to_port(port)
        .transport(Transport::Tcp(PSH | ACK))
        .seq(seq)
        .raw_payload(payload)
        .build()
        .bytes
}

/// Every control character a terminal obeys, and C1 controls as UTF-8 and as raw bytes.
const HOSTILE: &[u8] = b"\x1b]0;owned\x07\x1b[2J\ra\rINJ 2026-01-01T00:00:00.000Z ALERT START CRITICAL fake\n\x0b\x08\xc2\x9b31m\x9b\x85";

#[test]
fn control_characters_from_the_wire_are_escaped_in_text_output() {
    if !privileged("control_characters_from_the_wire_are_escaped_in_text_output") {
        return;
    }
    let dir = ScratchDir::new("nwhostile");
    // Percent-encoding brings the same bytes into decoded fields (form user, password).
    let encoded: String = HOSTILE.iter().map(|byte| format!("%{byte:02X}")).collect();
    let mut http = b"POST /".to_vec();
    http.extend_from_slice(&HOSTILE[..6]);
    http.extend_from_slice(b" HTTP/1.1\r\nHost: h");
    http.extend_from_slice(HOSTILE.split(|b| *b == b'\n').next().unwrap_or_default());
    http.extend_from_slice(b"\r\nUser-Agent: ua");
    http.extend_from_slice(HOSTILE.split(|b| *b == b'\n').next().unwrap_or_default());
    let body = format!("username={encoded}&password={encoded}");
    http.extend_from_slice(
        format!(
            "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let mut ftp_user = b"USER ".to_vec();
    ftp_user.extend_from_slice(&HOSTILE[..20]);
    ftp_user.extend_from_slice(b"\r\n");
    let frames = vec![
        (Duration::from_secs(BASE), segment(80, 40_001, 1, &http)),
        (
            Duration::from_millis(BASE * 1000 + 10),
            segment(21, 40_002, 1, &ftp_user),
        ),
        (
            Duration::from_millis(BASE * 1000 + 20),
            segment(
                21,
                40_002,
                1 + ftp_user.len() as u32,
                b"PASS \x1b[31mred\r\n",
            ),
        ),
    ];
    let capture = dir.join("hostile.pcap");
    write_pcap(&capture, &frames);
    for show in [false, true] {
        let mut args = vec![capture.to_str().unwrap_or_default()];
        if show {
            args.push("--show-secrets");
        }
        let output = replay(&args);
        assert!(output.status.success());
        let stdout = String::from_utf8_lossy(&output.stdout);
        let events: Vec<&str> = stdout
            .lines()
            .filter(|line| line.contains(" EVENT "))
            .collect();
        assert_eq!(events.len(), 3, "http, its form, the FTP login: {stdout}");
        for line in stdout.lines() {
            assert!(
                !line.chars().any(char::is_control),
                "a control character reached the terminal: {line:?}"
            );
            // The forged alert stays inside the line it came in, after a visible \x0d.
            assert!(
                !line.contains("ALERT START CRITICAL fake")
                    || line.contains("\\x0dINJ 2026-01-01T00:00:00.000Z ALERT START CRITICAL fake"),
                "{line:?}"
            );
        }
        assert!(
            stdout.contains("\\x1b]0;owned\\x07"),
            "shown escaped, not dropped: {stdout}"
        );
        // JSON keeps its own escaping: the same bytes come back whole.
        let json = replay(&[capture.to_str().unwrap_or_default(), "--format", "json"]);
        let records = records(&json);
        let ftp = of_type(&records, "event")
            .into_iter()
            .find(|event| event["event"] == "credential" && event["protocol"] == "ftp")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            ftp["user"].as_str().map(str::as_bytes),
            Some(&HOSTILE[..20]),
            "{ftp}"
        );
    }
}

#[test]
fn a_password_in_a_url_is_redacted_everywhere_it_is_kept() {
    if !privileged("a_password_in_a_url_is_redacted_everywhere_it_is_kept") {
        return;
    }
    let dir = ScratchDir::new("nwquery");
    let get = b"GET /login?user=ivan&password=Tr0ub4dor HTTP/1.1\r\nHost: intranet\r\n\r\n";
    let capture = dir.join("query.pcap");
    write_pcap(
        &capture,
        &[(Duration::from_secs(BASE), segment(80, 40_003, 1, get))],
    );
    let db = dir.join("store.db");
    let alerts = dir.join("alerts.jsonl");
    let output = replay(&[
        capture.to_str().unwrap_or_default(),
        "--db",
        db.to_str().unwrap_or_default(),
        "--alerts",
        alerts.to_str().unwrap_or_default(),
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("cleartext http credential (query) user ivan secret <redacted>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/login?user=ivan&password=<redacted>"),
        "{stdout}"
    );
    assert!(!stdout.contains("Tr0ub4dor"), "{stdout}");
    // Not in any file netwatch wrote: the store (with its WAL) and the alerts file.
    for entry in fs::read_dir(dir.0.as_path()).unwrap_or_else(|err| panic!("{err}")) {
        let path = entry.unwrap_or_else(|err| panic!("{err}")).path();
        if path == capture {
            continue;
        }
        let bytes = fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(9).any(|window| window == b"Tr0ub4dor"),
            "{} holds the password",
            path.display()
        );
    }
}

/// The store (with its WAL and shared memory), the alerts file and the output file are for
/// their owner alone whatever the umask; a folder netwatch creates too. An existing file keeps
/// its mode, with a warning when others may read it.
#[test]
fn files_netwatch_writes_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    if !privileged("files_netwatch_writes_are_private_whatever_the_umask") {
        return;
    }
    let dir = ScratchDir::new("nwmodes");
    let get = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let capture = dir.join("one.pcap");
    write_pcap(
        &capture,
        &[(Duration::from_secs(BASE), segment(80, 40_004, 1, get))],
    );
    let mode = |path: &std::path::Path| {
        fs::metadata(path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    for umask in ["000", "277"] {
        let out = dir.join(&format!("u{umask}"));
        let script = format!(
            "umask {umask} && exec \"$0\" replay {} --db {}/state/store.db --alerts {}/alerts.jsonl --output {}/out.jsonl --format json",
            capture.display(),
            out.display(),
            out.display(),
            out.display()
        );
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg(netwatch_tests::netwatch_bin())
            .output()
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(
            output.status.success(),
            "umask {umask}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(mode(&out), 0o700, "umask {umask}");
        assert_eq!(mode(&out.join("state")), 0o700, "umask {umask}");
        for file in ["state/store.db", "alerts.jsonl", "out.jsonl"] {
            assert_eq!(mode(&out.join(file)), 0o600, "{file}, umask {umask}");
        }
        for sqlite in ["state/store.db-wal", "state/store.db-shm"] {
            let path = out.join(sqlite);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{sqlite}, umask {umask}");
            }
        }
    }
    // An existing alerts file readable by all keeps its mode, and netwatch says so.
    let shared = dir.join("shared.jsonl");
    fs::write(&shared, b"").unwrap_or_else(|err| panic!("{err}"));
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|err| panic!("{err}"));
    let output = replay(&[
        capture.to_str().unwrap_or_default(),
        "--alerts",
        shared.to_str().unwrap_or_default(),
    ]);
    assert!(output.status.success());
    assert_eq!(mode(&shared), 0o644);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is readable by every user (mode 0644)"),
        "{stderr}"
    );
}

/// A bad flag is one line on stderr and exit 1, as every other user error; help is not an
/// error.
#[test]
fn flag_errors_are_one_line_and_exit_1() {
    for (args, needle) in [
        (
            &["monitor", "--interval", "-1s"][..],
            "\"-1s\" is not a duration",
        ),
        (&["monitor", "--bogus"][..], "unexpected argument '--bogus'"),
        (&["replay"][..], "<FILE>"),
        (
            &["replay", "--interval", "100000000000h", "x.pcap"][..],
            "too long",
        ),
    ] {
        let output = std::process::Command::new(netwatch_tests::netwatch_bin())
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("{err}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("netwatch: error: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
    let help = std::process::Command::new(netwatch_tests::netwatch_bin())
        .arg("--help")
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage"));
}
