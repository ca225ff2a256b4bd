//! `netwatch known`, the real binary against a real SQLite file (no root needed).

use std::process::{Command, Output};

use netwatch_tests::{ScratchDir, netwatch_bin, process::succeed};

fn known(db: &str, args: &[&str]) -> Output {
    succeed(
        Command::new(netwatch_bin())
            .args(["known", "--db", db])
            .args(args),
    )
}

fn listed(db: &str) -> Vec<(String, String)> {
    String::from_utf8_lossy(&known(db, &["list", "--json"]).stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("{line}: {err}"));
            (
                value["source"].as_str().unwrap_or("?").to_owned(),
                value["origin"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

#[test]
fn add_list_remove_prune() {
    let dir = ScratchDir::new("nwknown");
    let db = dir.join("store/known.db");
    let db = db.to_string_lossy();
    assert!(listed(&db).is_empty());
    let added = known(&db, &["add", "192.0.2.1", "2001:db8::5", "192.0.2.1"]);
    assert_eq!(
        String::from_utf8_lossy(&added.stdout).trim(),
        "added 2 of 3 (the others were known)"
    );
    assert_eq!(
        listed(&db),
        vec![
            ("192.0.2.1".to_owned(), "manual".to_owned()),
            ("2001:db8::5".to_owned(), "manual".to_owned()),
        ]
    );
    let table = String::from_utf8_lossy(&known(&db, &["list"]).stdout).into_owned();
    assert!(table.contains("2 known sources"), "{table}");
    known(&db, &["remove", "192.0.2.1"]);
    assert_eq!(listed(&db).len(), 1);
    // Nothing was seen in the last hour but it was just added: pruning an hour keeps it,
    // pruning "older than 0" does not.
    known(&db, &["prune", "--older-than", "1h"]);
    assert_eq!(listed(&db).len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    known(&db, &["prune", "--older-than", "10ms"]);
    assert!(listed(&db).is_empty());
}

#[test]
fn a_bad_address_is_refused() {
    let output = Command::new(netwatch_bin())
        .args(["known", "--db", "/nonexistent/x.db", "add", "300.1.1.1"])
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(output.status.code(), Some(1), "a user error like any other");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("netwatch: error: "), "{stderr}");
    assert!(stderr.contains("300.1.1.1"), "{stderr}");
}
