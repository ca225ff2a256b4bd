//! The SIEM webhook against a real local HTTP server that is stopped for a while and started
//! again: every alert and event arrives exactly once, in order, with the bearer token.

use std::{
    io::{BufRead as _, BufReader, Read, Write},
    net::TcpListener,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use netwatch_tests::{
    ScratchDir,
    frames::{ACK, FrameBuilder, PSH, Transport},
    netns::{Netns, VethPair},
    netwatch_bin, privileged,
    process::{Guard, lines, succeed},
};
use serde_json::Value;

const SIEM: &str = "127.0.0.1:8088";
const TOKEN: &str = "s3cr3t-token";

/// What the SIEM received: every record of every batch, with the Authorization header.
#[derive(Default)]
struct Received {
    records: Vec<Value>,
    authorizations: Vec<String>,
    /// Every attempt, failed ones too: its Idempotency-Key and its records.
    attempts: Vec<(String, Vec<Value>)>,
    /// Attempts still to refuse with a 500.
    refuse: usize,
}

/// A minimal HTTP server that accepts POSTs of JSON arrays, inside a namespace, until told
/// to stop (then its port is closed); over TLS when given a TLS configuration.
fn listen(
    netns: &Netns,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> thread::JoinHandle<()> {
    netns.spawn(move || {
        let listener = TcpListener::bind(SIEM).unwrap_or_else(|err| panic!("bind {SIEM}: {err}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|err| panic!("{err}"));
        while !stop.load(Ordering::Relaxed) {
            let Ok((stream, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(20));
                continue;
            };
            stream
                .set_nonblocking(false)
                .unwrap_or_else(|err| panic!("{err}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap_or_else(|err| panic!("{err}"));
            match &tls {
                None => serve(stream, &received),
                Some(config) => {
                    let connection = rustls::ServerConnection::new(Arc::clone(config))
                        .unwrap_or_else(|err| panic!("{err}"));
                    serve(rustls::StreamOwned::new(connection, stream), &received);
                }
            }
        }
    })
}

/// Reads one POST from `stream` into `received` and answers 200. A client that goes away
/// before its request (one that refused the server's certificate, say) is let go.
fn serve(stream: impl Read + Write, received: &Mutex<Received>) {
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut authorization = String::new();
    let mut key = String::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            authorization = line["authorization:".len()..].trim().to_owned();
        }
        if lower.starts_with("idempotency-key:") {
            key = line["idempotency-key:".len()..].trim().to_owned();
        }
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .unwrap_or_else(|err| panic!("body: {err}"));
    let batch: Vec<Value> =
        serde_json::from_slice(&body).unwrap_or_else(|err| panic!("not a JSON array: {err}"));
    let refused = {
        let mut received = received.lock().unwrap_or_else(|err| panic!("{err}"));
        received.attempts.push((key, batch.clone()));
        if received.refuse > 0 {
            received.refuse -= 1;
            true
        } else {
            received.records.extend(batch);
            received.authorizations.push(authorization);
            false
        }
    };
    let stream = reader.get_mut();
    if refused {
        let _ = stream.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = stream.flush();
        return;
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.flush();
}

type Lines = mpsc::Receiver<String>;

/// netwatch monitoring the pair's monitored end, posting to the SIEM at `scheme://SIEM`;
/// its output lines.
fn start_netwatch(
    pair: &VethPair,
    config: &std::path::Path,
    scheme: &str,
) -> (Guard, Lines, Lines) {
    let mut netwatch = Guard(
        pair.monitor
            .command(&netwatch_bin().to_string_lossy())
            .args([
                "monitor",
                "-i",
                &pair.monitor_if,
                "--format",
                "json",
                "--interval",
                "200ms",
            ])
            .args([
                "--metrics-addr",
                "off",
                "--webhook",
                &format!("{scheme}://{SIEM}/hook"),
            ])
            .arg("--config")
            .arg(config)
            .arg("--db")
            .arg(pair.monitor.db_path())
            .arg("--control")
            .arg(pair.monitor.control_path())
            .env("NETWATCH_WEBHOOK_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("netwatch: {err}")),
    );
    let out = netwatch
        .0
        .stdout
        .take()
        .unwrap_or_else(|| panic!("no stdout"));
    let err = netwatch
        .0
        .stderr
        .take()
        .unwrap_or_else(|| panic!("no stderr"));
    (netwatch, lines(out), lines(err))
}

fn wait_line(lines: &Lines, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|err| panic!("no {needle:?}: {err}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// Alerts and events among output lines, until there are `wanted`.
fn collect_findings(lines: &Lines, findings: &mut Vec<Value>, wanted: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while findings.len() < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|err| panic!("only {} findings: {err}", findings.len()));
        let record: Value = serde_json::from_str(&line).unwrap_or_default();
        if record["type"] == "alert" || record["type"] == "event" {
            findings.push(record);
        }
    }
}

/// A burst from its own source: a threshold alert that starts and ends, and an FTP login.
fn burst(last: u8) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = (0..40)
        .map(|_| {
            FrameBuilder::ipv4([10, 5, 5, last])
                .payload(20)
                .build()
                .bytes
        })
        .collect();
    frames.push(
        FrameBuilder::ipv4([10, 5, 5, last])
            .transport(Transport::Tcp(PSH | ACK))
            .to_port(21)
            .raw_payload(b"USER u\r\nPASS p\r\n")
            .build()
            .bytes,
    );
    frames
}

/// The SIEMs here listen on loopback, most over plain HTTP: the token may go in clear text.
const CONFIG: &str = "[detect]\nsource = { pps = 5.0 }\nend_after = 1\n[detect.spike]\nenabled = false\n[detect.unknown]\nenabled = false\n[webhook]\nmax_backoff = \"1s\"\nallow_insecure = true\n";

/// The SIEM of one test: what it received, and its server while it runs.
struct Siem<'a> {
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    server: Option<thread::JoinHandle<()>>,
    netns: &'a Netns,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl<'a> Siem<'a> {
    /// Starts one in `netns`, over TLS when given a configuration.
    fn start(netns: &'a Netns, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let mut siem = Self {
            received: Arc::default(),
            stop: Arc::default(),
            server: None,
            netns,
            tls,
        };
        siem.resume();
        siem
    }

    /// Starts the server again after [`Siem::halt`]; what it received stays.
    fn resume(&mut self) {
        self.stop.store(false, Ordering::Relaxed);
        self.server = Some(listen(
            self.netns,
            Arc::clone(&self.received),
            Arc::clone(&self.stop),
            self.tls.clone(),
        ));
    }

    /// Stops the server; its port is closed when this returns.
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(server) = self.server.take() {
            server
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    }

    /// Records received so far.
    fn records(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|err| panic!("{err}"))
            .records
            .len()
    }

    /// Waits for `findings` to arrive, stops, and panics unless the SIEM got exactly them,
    /// once each, in order, every batch with the bearer token.
    fn expect(mut self, findings: &[Value], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.records() < findings.len() {
            assert!(
                Instant::now() < deadline,
                "only {} of {} delivered",
                self.records(),
                findings.len()
            );
            thread::sleep(Duration::from_millis(100));
        }
        // A little more, for any duplicate.
        thread::sleep(Duration::from_millis(1500));
        self.halt();
        let received = self.received.lock().unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(received.records, findings, "{what}");
        assert!(
            received
                .authorizations
                .iter()
                .all(|auth| auth == &format!("Bearer {TOKEN}")),
            "{:?}",
            received.authorizations
        );
    }
}

/// Ends a netwatch run with SIGTERM; panics unless it exits cleanly.
fn terminate(mut netwatch: Guard) {
    let pid = i32::try_from(netwatch.0.id()).unwrap_or_else(|err| panic!("{err}"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = netwatch.0.wait().unwrap_or_else(|err| panic!("{err}"));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_siem_that_was_down_gets_every_alert_once_in_order() {
    if !privileged("a_siem_that_was_down_gets_every_alert_once_in_order") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwsiem");
    let config = dir.join("netwatch.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|err| panic!("{err}"));
    let mut siem = Siem::start(&pair.monitor, None);
    let (_netwatch, stdout, stderr) = start_netwatch(&pair, &config, "http");
    wait_line(&stderr, "attached to");

    let mut findings: Vec<Value> = Vec::new();
    pair.send(burst(1));
    collect_findings(&stdout, &mut findings, 3);

    // The SIEM goes down; the next findings can only wait in the queue.
    siem.halt();
    pair.send(burst(2));
    collect_findings(&stdout, &mut findings, 6);
    pair.send(burst(3));
    collect_findings(&stdout, &mut findings, 9);
    wait_line(&stderr, "nothing is lost");

    // Back up: the queue drains.
    siem.resume();
    siem.expect(
        &findings,
        "the SIEM got exactly what netwatch reported, once each, in order",
    );
    let kinds: Vec<&str> = findings
        .iter()
        .map(|f| f["kind"].as_str().or(f["event"].as_str()).unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "threshold_pps").count(),
        6,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "credential").count(),
        3,
        "{kinds:?}"
    );
}

/// A SIEM that fails a batch with 500 while more findings queue: every retry carries the
/// same records under the same Idempotency-Key, and the outage is logged when it starts and
/// when it ends, not at every retry.
#[test]
fn a_failed_batch_is_retried_as_it_was_under_one_key() {
    if !privileged("a_failed_batch_is_retried_as_it_was_under_one_key") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwsiem3");
    let config = dir.join("netwatch.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|err| panic!("{err}"));
    let siem = Siem::start(&pair.monitor, None);
    siem.received
        .lock()
        .unwrap_or_else(|err| panic!("{err}"))
        .refuse = 4;
    let (_netwatch, stdout, stderr) = start_netwatch(&pair, &config, "http");
    wait_line(&stderr, "attached to");
    let mut findings: Vec<Value> = Vec::new();
    pair.send(burst(1));
    collect_findings(&stdout, &mut findings, 3);
    wait_line(&stderr, "is down (answered 500");
    // More findings queue while the first batch is refused.
    pair.send(burst(2));
    collect_findings(&stdout, &mut findings, 6);
    let back = wait_line(&stderr, "is back after");
    assert!(back.contains("4 failed attempts"), "{back}");
    let received = Arc::clone(&siem.received);
    siem.expect(&findings, "every finding once, in order, after the retries");
    let received = received.lock().unwrap_or_else(|err| panic!("{err}"));
    let (first_key, first_records) = &received.attempts[0];
    for (key, records) in &received.attempts[..5] {
        assert_eq!(key, first_key, "one key while the batch is retried");
        assert_eq!(records, first_records, "the same records each time");
    }
    let keys: std::collections::BTreeSet<&String> =
        received.attempts.iter().map(|(key, _)| key).collect();
    assert!(
        keys.len() >= 2,
        "the findings queued meanwhile go in a batch of their own"
    );
}

#[test]
fn queued_findings_survive_a_restart_of_netwatch() {
    if !privileged("queued_findings_survive_a_restart_of_netwatch") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwsiem2");
    let config = dir.join("netwatch.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|err| panic!("{err}"));
    let mut findings = Vec::new();
    {
        // The SIEM is down for the whole first run, which ends with SIGTERM.
        let (netwatch, stdout, stderr) = start_netwatch(&pair, &config, "http");
        wait_line(&stderr, "attached to");
        pair.send(burst(7));
        collect_findings(&stdout, &mut findings, 3);
        wait_line(&stderr, "nothing is lost");
        terminate(netwatch);
    }
    let siem = Siem::start(&pair.monitor, None);
    let (_netwatch, _stdout, stderr) = start_netwatch(&pair, &config, "http");
    wait_line(&stderr, "attached to");
    siem.expect(
        &findings,
        "delivered after the restart, once each, in order",
    );
}

/// Signature rule changes are findings for the SIEM as alerts are: a rule added and removed
/// by hand over the control socket reaches it, in order, once each, after the alerts
/// reported before it.
#[test]
fn rule_changes_reach_the_siem_with_the_alerts() {
    if !privileged("rule_changes_reach_the_siem_with_the_alerts") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwsiem4");
    let config = dir.join("netwatch.toml");
    std::fs::write(
        &config,
        format!("{CONFIG}[mitigate]\nmode = \"drop\"\nrules = []\n"),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let siem = Siem::start(&pair.monitor, None);
    let (netwatch, stdout, stderr) = start_netwatch(&pair, &config, "http");
    wait_line(&stderr, "attached to");
    let mut findings: Vec<Value> = Vec::new();
    pair.send(burst(4));
    collect_findings(&stdout, &mut findings, 3);
    let mitigate = |args: &[&str]| {
        succeed(
            std::process::Command::new(netwatch_bin())
                .arg("mitigate")
                .arg("--control")
                .arg(pair.monitor.control_path())
                .args(args),
        )
    };
    mitigate(&[
        "add",
        "--destination",
        "192.0.2.5",
        "--protocol",
        "udp",
        "--source-port",
        "389",
        "--ttl",
        "1h",
    ]);
    mitigate(&["remove", "0"]);
    // The two rule records among the output, after the alerts and events.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rules = 0;
    while rules < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stdout
            .recv_timeout(left)
            .unwrap_or_else(|err| panic!("only {rules} rule records: {err}"));
        let record: Value = serde_json::from_str(&line).unwrap_or_default();
        if record["type"] == "rule" {
            rules += 1;
            findings.push(record);
        }
    }
    let changes: Vec<&str> = findings
        .iter()
        .filter_map(|f| f["change"].as_str())
        .collect();
    assert_eq!(changes, ["add", "remove"]);
    siem.expect(&findings, "the alerts, events and rule changes, in order");
    terminate(netwatch);
}

/// A certificate authority made with the openssl command for one test: `NAME.pem` and
/// `NAME.key` in `dir`.
fn certificate_authority(dir: &ScratchDir, name: &str) -> std::path::PathBuf {
    let pem = dir.join(&format!("{name}.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=netwatch test {name}"),
        "-keyout",
        &dir.join(&format!("{name}.key")).to_string_lossy(),
        "-out",
        &pem.to_string_lossy(),
    ]);
    pem
}

/// A server certificate for 127.0.0.1 signed by the authority `ca` of `dir`; the TLS
/// configuration of a server that presents it.
fn server_tls(dir: &ScratchDir, ca: &str) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let (key, request, cert, extensions) = (
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.pem"),
        dir.join("server.ext"),
    );
    std::fs::write(
        &extensions,
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap_or_else(|err| panic!("{err}"));
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key.to_string_lossy(),
        "-out",
        &request.to_string_lossy(),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &request.to_string_lossy(),
        "-CA",
        &dir.join(&format!("{ca}.pem")).to_string_lossy(),
        "-CAkey",
        &dir.join(&format!("{ca}.key")).to_string_lossy(),
        "-CAcreateserial",
        "-extfile",
        &extensions.to_string_lossy(),
        "-out",
        &cert.to_string_lossy(),
    ]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap_or_else(|err| panic!("{err}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|err| panic!("{err}"));
    let key = PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|err| panic!("{err}"));
    Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap_or_else(|err| panic!("{err}")),
    )
}

/// The openssl command (`cargo xtask setup` installs it).
fn openssl(args: &[&str]) {
    succeed(std::process::Command::new("openssl").args(args));
}

/// An HTTPS SIEM whose certificate comes from a private CA: netwatch trusting another CA
/// refuses it and keeps the findings queued; trusting that CA (`webhook.ca_file`) it
/// delivers them all, once each, in order, with the token.
#[test]
fn an_https_siem_with_a_private_ca_is_trusted_through_ca_file_and_only_then() {
    if !privileged("an_https_siem_with_a_private_ca_is_trusted_through_ca_file_and_only_then") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwtls");
    let siem_ca = certificate_authority(&dir, "siem-ca");
    let other_ca = certificate_authority(&dir, "other-ca");
    let tls = server_tls(&dir, "siem-ca");
    let config_trusting = |ca: &std::path::Path| {
        let config = dir.join("netwatch.toml");
        std::fs::write(&config, format!("{CONFIG}ca_file = {ca:?}\n"))
            .unwrap_or_else(|err| panic!("{err}"));
        config
    };
    let siem = Siem::start(&pair.monitor, Some(tls));

    let mut findings = Vec::new();
    {
        let config = config_trusting(&other_ca);
        let (netwatch, stdout, stderr) = start_netwatch(&pair, &config, "https");
        wait_line(&stderr, "attached to");
        pair.send(burst(1));
        collect_findings(&stdout, &mut findings, 3);
        let refused = wait_line(&stderr, "nothing is lost");
        assert!(
            refused.contains("https://") && refused.to_lowercase().contains("certificate"),
            "{refused}"
        );
        terminate(netwatch);
    }
    assert_eq!(
        siem.records(),
        0,
        "nothing may reach a SIEM whose certificate is not trusted"
    );

    let config = config_trusting(&siem_ca);
    let (_netwatch, stdout, stderr) = start_netwatch(&pair, &config, "https");
    wait_line(&stderr, "attached to");
    pair.send(burst(2));
    collect_findings(&stdout, &mut findings, 6);
    siem.expect(&findings, "both runs' findings, once each, in order");
}
