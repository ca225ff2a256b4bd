//! The store on a full disk: what it refuses waits in memory, bounded, and is written, oldest
//! first, once there is room again; nothing is lost in between. On a tmpfs of 8 MiB that the
//! test mounts and removes.

use std::{
    fs,
    process::Command,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use netwatch::{
    report::store::{Record, StoreWriter},
    store::{FindingRow, Store},
};
use netwatch_tests::{ScratchDir, privileged, process::succeed};

/// A tmpfs mounted on a folder, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn finding(n: i64) -> FindingRow {
    FindingRow {
        ts_ms: n,
        kind_of_record: "alert",
        kind: String::from("spike_pps"),
        subject: String::from("global"),
        record: format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(2_000)),
        attack: None,
        sources: None,
        iface: String::from("eth0"),
    }
}

#[test]
fn records_refused_by_a_full_disk_are_written_when_room_returns() {
    if !privileged("records_refused_by_a_full_disk_are_written_when_room_returns") {
        return;
    }
    let dir = ScratchDir::new("nwfull");
    let mount = dir.join("fs");
    fs::create_dir_all(&mount).unwrap_or_else(|err| panic!("{err}"));
    succeed(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&mount),
    );
    let _tmpfs = Tmpfs(mount.clone());
    let db = mount.join("store.db");
    let store = Store::open(&db).unwrap_or_else(|err| panic!("{err}"));
    let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
    sink.send(Record::Findings(vec![finding(0)]));

    // Fill the disk.
    let filler = mount.join("filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut file = fs::File::create(&filler).unwrap_or_else(|err| panic!("{err}"));
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);

    // 300 findings of 2 KB do not fit: they wait.
    for n in 1..=300 {
        sink.send(Record::Findings(vec![finding(n)]));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.counts().waiting.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing waits: {:?}",
            sink.counts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sink.counts().refused.load(Ordering::Relaxed) > 0);

    // Room again: the next record brings the waiting ones in, oldest first.
    fs::remove_file(&filler).unwrap_or_else(|err| panic!("{err}"));
    sink.send(Record::Findings(vec![finding(301)]));
    // Closing waits for the writer, which writes what waits before it stops.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.counts().waiting.load(Ordering::Relaxed) > 0 {
        assert!(
            Instant::now() < deadline,
            "still waiting: {:?}",
            sink.counts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sink.counts().failed.load(Ordering::Relaxed),
        0,
        "nothing lost"
    );
    sink.close();
    let store = Store::open(&db).unwrap_or_else(|err| panic!("{err}"));
    let kept = store
        .alerts_between(Duration::ZERO, Duration::from_secs(1))
        .unwrap_or_else(|err| panic!("{err}"));
    let numbers: Vec<i64> = kept
        .iter()
        .map(|record| {
            serde_json::from_str::<serde_json::Value>(record).unwrap_or_default()["n"]
                .as_i64()
                .unwrap_or(-1)
        })
        .collect();
    assert_eq!(
        numbers,
        (0..=301).collect::<Vec<_>>(),
        "every one, in order"
    );
}

/// A restart on a store whose disk is full: the store opens (nothing to write to open it),
/// the known sources read, and what the new run has to keep waits until there is room.
#[test]
fn a_store_on_a_full_disk_opens_and_catches_up() {
    if !privileged("a_store_on_a_full_disk_opens_and_catches_up") {
        return;
    }
    let dir = ScratchDir::new("nwfullre");
    let mount = dir.join("fs");
    fs::create_dir_all(&mount).unwrap_or_else(|err| panic!("{err}"));
    succeed(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&mount),
    );
    let _tmpfs = Tmpfs(mount.clone());
    let db = mount.join("store.db");
    {
        let store = Store::open(&db).unwrap_or_else(|err| panic!("{err}"));
        let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
        sink.send(Record::Findings(vec![finding(0)]));
        sink.close();
    }
    // The disk fills to the last byte while netwatch is down.
    let filler = mount.join("filler");
    let mut file = fs::File::create(&filler).unwrap_or_else(|err| panic!("{err}"));
    for size in [64 * 1024, 4096, 512, 1] {
        let chunk = vec![0u8; size];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    }
    drop(file);

    let store = Store::open(&db).unwrap_or_else(|err| panic!("a full disk: {err}"));
    store
        .known_state()
        .unwrap_or_else(|err| panic!("a full disk: {err}"));
    let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
    for n in 1..=50 {
        sink.send(Record::Findings(vec![finding(n)]));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.counts().waiting.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing waits: {:?}",
            sink.counts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::remove_file(&filler).unwrap_or_else(|err| panic!("{err}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.counts().waiting.load(Ordering::Relaxed) > 0 {
        assert!(
            Instant::now() < deadline,
            "still waiting: {:?}",
            sink.counts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sink.close();
    let store = Store::open(&db).unwrap_or_else(|err| panic!("{err}"));
    let kept = store
        .alerts_between(Duration::ZERO, Duration::from_secs(1))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        kept.len(),
        51,
        "the record before the restart and the 50 after"
    );
}

/// Past 4,096 records waiting for a full disk, the oldest go, and each is counted; the rest are
/// written, in order, once there is room.
#[test]
fn the_records_waiting_for_a_full_disk_are_bounded_and_the_overflow_counted() {
    if !privileged("the_records_waiting_for_a_full_disk_are_bounded_and_the_overflow_counted") {
        return;
    }
    const SENT: i64 = 4_300;
    const BOUND: i64 = 4_096;
    let dir = ScratchDir::new("nwfullbd");
    let mount = dir.join("fs");
    fs::create_dir_all(&mount).unwrap_or_else(|err| panic!("{err}"));
    succeed(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
            .arg(&mount),
    );
    let _tmpfs = Tmpfs(mount.clone());
    let db = mount.join("store.db");
    let store = Store::open(&db).unwrap_or_else(|err| panic!("{err}"));
    let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
    let filler = mount.join("filler");
    let mut file = fs::File::create(&filler).unwrap_or_else(|err| panic!("{err}"));
    for size in [1024 * 1024, 4096, 1] {
        let chunk = vec![0u8; size];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    }
    drop(file);

    let counts = sink.counts();
    let accounted = || {
        counts.waiting.load(Ordering::Relaxed) as i64 + counts.failed.load(Ordering::Relaxed) as i64
    };
    for chunk in (1..=SENT).collect::<Vec<_>>().chunks(500) {
        for &n in chunk {
            sink.send(Record::Findings(vec![finding(n)]));
        }
        // Paced so that the writer's own queue never overflows: this test is about the bound
        // of the records waiting for the disk.
        let deadline = Instant::now() + Duration::from_secs(60);
        while accounted() < chunk[chunk.len() - 1] {
            assert!(Instant::now() < deadline, "the writer is stuck: {counts:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(counts.waiting.load(Ordering::Relaxed) as i64, BOUND);
    assert_eq!(counts.failed.load(Ordering::Relaxed) as i64, SENT - BOUND);

    fs::remove_file(&filler).unwrap_or_else(|err| panic!("{err}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.waiting.load(Ordering::Relaxed) > 0 {
        assert!(Instant::now() < deadline, "still waiting: {counts:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    sink.close();
    let store = Store::open(&db).unwrap_or_else(|err| panic!("{err}"));
    let kept = store
        .alerts_between(Duration::ZERO, Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("{err}"));
    let numbers: Vec<i64> = kept
        .iter()
        .map(|record| {
            serde_json::from_str::<serde_json::Value>(record).unwrap_or_default()["n"]
                .as_i64()
                .unwrap_or(-1)
        })
        .collect();
    assert_eq!(
        numbers,
        (SENT - BOUND + 1..=SENT).collect::<Vec<_>>(),
        "the newest 4,096, in order"
    );
}
