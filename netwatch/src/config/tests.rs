//! The configuration file's parsing and validation, field by field.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn empty_file_is_all_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.monitor.interval, Duration::from_secs(1));
    assert_eq!(config.detect.prefix_v4, 24);
    assert_eq!(config.store.path, PathBuf::from(DEFAULT_DB_PATH));
}

#[test]
fn the_example_config_parses_and_matches_the_defaults_it_documents() {
    let text = include_str!("../../../netwatch.example.toml");
    let config = parse(text).unwrap_or_else(|err| panic!("{err}"));
    let mut expected = Config::default();
    expected.monitor.iface = Some(String::from("eth0"));
    expected.detect.unknown.allowlist =
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
    assert_eq!(config, expected);
}

#[test]
fn mitigation_is_read_and_checked() {
    let text = |max_ttl: &str| {
        format!(
            r#"
            [mitigate]
            mode = "dry-run"
            max_bans = 64
            never = ["192.0.2.1", "10.0.0.0/8"]
            notify = ["/usr/local/bin/announce"]
            [[mitigate.rules]]
            alerts = ["port_scan", "host_sweep"]
            subject = "prefix"
            ttl = "1h"
            max_ttl = "{max_ttl}"
            "#
        )
    };
    // Durations take ms, s, m and h: a day is 24h.
    let err = parse(&text("1d")).unwrap_err().to_string();
    assert!(err.contains("unknown unit \"d\""), "{err}");
    let config = parse(&text("24h")).unwrap_or_else(|err| panic!("{err}"));
    let mitigate = &config.mitigate;
    assert_eq!(mitigate.mode, crate::mitigate::MitigateMode::DryRun);
    assert_eq!(mitigate.max_bans, 64);
    assert_eq!(mitigate.never.len(), 2);
    assert_eq!(mitigate.rules.len(), 1);
    assert_eq!(
        mitigate.rules[0].subject,
        crate::mitigate::BanSubject::Prefix
    );
    assert_eq!(mitigate.rules[0].ttl, Duration::from_secs(3600));
    for (text, field) in [
        ("[mitigate]\nmode = \"block\"", "mode"),
        ("[mitigate]\nmax_bans = 0", "mitigate.max_bans"),
        ("[mitigate]\nnotify = [\"announce.sh\"]", "mitigate.notify"),
        (
            "[[mitigate.rules]]\nalerts = [\"suppressed\"]",
            "mitigate.rules[0].alerts",
        ),
        (
            "[[mitigate.rules]]\nalerts = [\"syn_flood\"]\nttl = \"1h\"\nmax_ttl = \"1m\"",
            "mitigate.rules[0].max_ttl",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
}

#[test]
fn values_are_read() {
    let config = parse(
        r#"
        [monitor]
        iface = "veth0"
        interval = "250ms"
        format = "json"
        mode = "skb"
        [detect]
        prefix_v4 = 16
        source = { pps = 1000.0 }
        [detect.spike]
        k = 3.5
        [detect.unknown]
        learning = "10m"
        allowlist = ["192.0.2.0/24"]
        [store]
        path = "/tmp/x.db"
        "#,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.monitor.interval, Duration::from_millis(250));
    assert_eq!(config.monitor.format, Format::Json);
    assert_eq!(config.monitor.mode, ModeArg::Skb);
    assert_eq!(config.detect.prefix_v4, 16);
    assert_eq!(config.detect.source.pps, Some(1000.0));
    assert_eq!(config.detect.spike.k, 3.5);
    assert_eq!(config.detect.spike.window, 60, "unset fields keep defaults");
    assert_eq!(config.detect.unknown.learning, Duration::from_secs(600));
}

#[test]
fn a_webhook_ca_file_must_hold_a_certificate() {
    let dir = std::env::temp_dir().join(format!("netwatch-ca-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    fs::write(&empty, "not a certificate\n").unwrap();
    for (file, reason) in [
        (dir.join("missing.pem"), "cannot read"),
        (empty, "no PEM certificate"),
    ] {
        let err = parse(&format!("[webhook]\nca_file = {file:?}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("webhook.ca_file") && err.contains(reason),
            "{err}"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Destinations are sampled by default, one frame in 16; a power of two up to 4096, or 0
/// (off), is taken, anything else refused by name.
#[test]
fn destination_sampling_is_a_power_of_two_or_off() {
    assert_eq!(parse("").unwrap().networks.sample_destinations, 16);
    assert!(parse("").unwrap().networks.counts_destinations());
    for good in [0, 1, 2, 64, 4096] {
        let config = parse(&format!("[networks]\nsample_destinations = {good}\n")).unwrap();
        assert_eq!(config.networks.sample_destinations, good);
        assert_eq!(config.networks.counts_destinations(), good != 0);
    }
    for bad in [3, 24, 8192] {
        let err = parse(&format!("[networks]\nsample_destinations = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("networks.sample_destinations") && err.contains("power of two"),
            "{err}"
        );
    }
}

#[test]
fn local_networks_are_read_and_bounded() {
    let config = parse(
        "[networks]\nlocal = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n\
         [detect.destination]\npps = 5000.0\n",
    )
    .unwrap();
    assert_eq!(
        config.networks.local_networks(),
        vec![
            ("192.0.2.0".parse().unwrap(), 24),
            ("2001:db8::".parse().unwrap(), 48)
        ]
    );
    assert_eq!(config.detect.destination.pps, Some(5000.0));
    let many: Vec<String> = (0..17).map(|i| format!("\"10.{i}.0.0/16\"")).collect();
    let err = parse(&format!("[networks]\nlocal = [{}]\n", many.join(", ")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("networks.local") && err.contains("at most 16"),
        "{err}"
    );
    let err = parse("[networks]\nlocal = [\"10.0.0.1/8\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("has host bits set"), "{err}");
    let err = parse("[detect.destination]\npps = -1.0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("detect.destination.pps"), "{err}");
}

#[test]
fn zero_turns_a_scan_rule_off() {
    let config = parse("[detect.scan]\nports = 0\nsyn_pps = 0\n").unwrap();
    assert_eq!(config.detect.scan.ports, None);
    assert_eq!(config.detect.scan.syn_pps, None);
    assert_eq!(config.detect.scan.hosts, Some(64));
    assert!(config.detect.scan.needs_sketches());
}

#[test]
fn errors_name_the_field() {
    let err = parse("[detect.spike]\nk = -1.0\n").unwrap_err().to_string();
    assert!(err.contains("detect.spike.k"), "{err}");
    let err = parse("[monitor]\nintervall = \"1s\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("intervall"), "{err}");
    let err = parse("[monitor]\ninterval = \"fast\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fast"), "{err}");
    let err = parse("[detect.unknown]\nallowlist = [\"10.1.2.3/8\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("host bits"), "{err}");
    let err = parse("[detect]\nprefix_v6 = 200\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("detect.prefix_v6"), "{err}");
    let err = parse("[monitor]\nmax_sources = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("monitor.max_sources"), "{err}");
    for (field, text) in [
        ("inspect.snap_len", "[inspect]\nsnap_len = 64\n"),
        ("inspect.snap_len", "[inspect]\nsnap_len = 9000\n"),
        ("inspect.follow_bytes", "[inspect]\nfollow_bytes = 0\n"),
        ("detect.heavy.share", "[detect.heavy]\nshare = 1.5\n"),
        ("detect.max_alerts", "[detect]\nmax_alerts = 0\n"),
        (
            "detect.reflection_ports",
            "[detect]\nreflection_ports = [0]\n",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
    let config = parse("[inspect]\nsnap_len = 8192\n").unwrap();
    assert_eq!(config.sampling().snap_len, 8192);
}

#[test]
fn only_a_bounded_regular_file_is_read_as_configuration() {
    let dir = std::env::temp_dir().join(format!("netwatch-cfg-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.toml");
    let name = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    // Refused at once, though nobody writes to the FIFO.
    let err = Config::load(&fifo).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let err = Config::load(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let big = dir.join("big.toml");
    fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    let err = Config::load(&big).unwrap_err().to_string();
    assert!(err.contains("more than"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn every_duration_is_bounded() {
    for text in [
        "[monitor]\ninterval = \"100000000000h\"\n",
        "[monitor]\ninterval = 1e12\n",
        "[store]\nretention = \"1000000h\"\n",
        "[detect.unknown]\nlearning = \"99999999h\"\n",
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("too long"), "{text}: {err}");
    }
    let err = parse("[monitor]\ninterval = \"2h\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("monitor.interval") && err.contains("at most 1h"),
        "{err}"
    );
    let err = parse("[webhook]\ntimeout = \"1h\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("webhook.timeout"), "{err}");
    assert!(parse("[store]\nretention = \"87600h\"\n").is_ok());
}

#[test]
fn webhook_urls_need_a_host_and_a_real_port() {
    for bad in [
        "http://",
        "http:///hook",
        "http://127.0.0.1:99999/x",
        "http://127.0.0.1:0/x",
        "https://host:port/x",
        "http://[::1/x",
        "ftp://siem/x",
    ] {
        let text = format!("[webhook]\nurls = [\"{bad}\"]\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("webhook.urls"), "{bad}: {err}");
    }
    for good in [
        "http://127.0.0.1:8080/hook",
        "https://siem.example.com/api?x=1",
        "https://[2001:db8::1]:8443/h",
        "http://user@siem/h",
    ] {
        let text = format!("[webhook]\nurls = [\"{good}\"]\n");
        assert!(parse(&text).is_ok(), "{good}");
    }
}

#[test]
fn a_token_is_never_sent_over_plain_http_unless_allowed() {
    let err = parse("[webhook]\nurls = [\"http://siem/h\"]\ntoken = \"t\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("webhook.urls")
            && err.contains("clear text")
            && err.contains("allow_insecure"),
        "{err}"
    );
    assert!(parse("[webhook]\nurls = [\"https://siem/h\"]\ntoken = \"t\"\n").is_ok());
    assert!(
        parse("[webhook]\nurls = [\"http://siem/h\"]\n").is_ok(),
        "no token"
    );
    assert!(
        parse("[webhook]\nurls = [\"http://siem/h\"]\ntoken = \"t\"\nallow_insecure = true\n")
            .is_ok()
    );
}

/// `[[mitigate.signatures]]` and their lists are read and checked: an empty attack list, a
/// rate-limit without a rate and a TTL under a second are refused by name.
#[test]
fn signature_rules_are_read_and_checked() {
    let config = parse(
        "[mitigate]\nmode = \"dry-run\"\nexempt_sources = [\"198.51.100.53/32\"]\n\
         never_destinations = [\"192.0.2.0/28\"]\n\n\
         [[mitigate.signatures]]\nattacks = [\"reflection\", \"ip_fragments\"]\nttl = \"5m\"\n\n\
         [[mitigate.signatures]]\nattacks = [\"syn_flood\"]\naction = \"rate-limit\"\npps = 500\nrtbh = true\n",
    )
    .unwrap();
    let signatures = &config.mitigate.signatures;
    assert_eq!(signatures.len(), 2);
    assert_eq!(signatures[0].ttl, Duration::from_secs(300));
    assert_eq!(
        format!(
            "{:?} {} {}",
            signatures[1].action, signatures[1].pps, signatures[1].rtbh
        ),
        "RateLimit 500 true"
    );
    assert_eq!(config.mitigate.exempt_sources.len(), 1);
    for (bad, field) in [
        ("attacks = []", "mitigate.signatures[0].attacks"),
        (
            "attacks = [\"syn_flood\"]\naction = \"rate-limit\"\npps = 0",
            "mitigate.signatures[0].pps",
        ),
        (
            "attacks = [\"syn_flood\"]\nttl = \"500ms\"",
            "mitigate.signatures[0].ttl",
        ),
    ] {
        let err = parse(&format!("[[mitigate.signatures]]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{bad}: {err}");
    }
    let err = parse("[[mitigate.signatures]]\nattacks = [\"tcp_flood\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tcp_flood"), "{err}");
}

/// A signature rule must outlast the gap between its attack's updates.
#[test]
fn a_signature_rule_outlasts_its_attacks_updates() {
    let err = parse("[[mitigate.signatures]]\nattacks = [\"reflection\"]\nttl = \"10s\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mitigate.signatures[0].ttl") && err.contains("10s"),
        "{err}"
    );
    parse("[[mitigate.signatures]]\nattacks = [\"reflection\"]\nttl = \"11s\"\n").unwrap();
    parse(
        "[monitor]\ninterval = \"200ms\"\n\n[[mitigate.signatures]]\nattacks = [\"reflection\"]\nttl = \"3s\"\n",
    )
    .unwrap();
}

/// `[capture]` is read and checked: each bad value names its field.
#[test]
fn capture_settings_are_checked() {
    let config = parse(
        "[capture]\ndir = \"/srv/captures\"\nkinds = [\"syn_flood\"]\nframes_per_second = 10\n",
    )
    .unwrap();
    assert_eq!(config.capture.dir, Path::new("/srv/captures"));
    assert_eq!(config.capture.frames_per_second, 10);
    assert!(config.capture.enabled);
    for (bad, field) in [
        ("frames_per_second = 0", "capture.frames_per_second"),
        ("max_frames = 0", "capture.max_frames"),
        ("max_bytes = 100", "capture.max_bytes"),
        ("snap_len = 10", "capture.snap_len"),
        ("snap_len = 100000", "capture.snap_len"),
        ("budget_bytes = 4096", "capture.budget_bytes"),
        ("kinds = [\"suppressed\"]", "capture.kinds"),
    ] {
        let err = parse(&format!("[capture]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{bad}: {err}");
    }
}
