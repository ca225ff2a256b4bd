//! The store on a full disk: what it refuses waits in memory, bounded, and is written, oldest
//! first, once there is room again; nothing is lost in between. On small tmpfs file systems
//! that the tests mount and remove.

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use netwatch::{
    report::store::{Record, SinkCounts, StoreWriter},
    store::{FindingRow, Store},
};
use netwatch_tests::{ScratchDir, privileged, process::succeed};

/// A tmpfs of its own, mounted on a scratch folder, unmounted on drop.
struct Tmpfs {
    mount: PathBuf,
    _dir: ScratchDir,
}

impl Tmpfs {
    fn new(prefix: &str, size: &str) -> Self {
        let dir = ScratchDir::new(prefix);
        let mount = dir.join("fs");
        fs::create_dir_all(&mount).unwrap_or_else(|err| panic!("{err}"));
        succeed(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&mount),
        );
        Self { mount, _dir: dir }
    }

    fn db(&self) -> PathBuf {
        self.mount.join("store.db")
    }

    /// Fills the file system to its last byte; returns the file that holds it.
    fn fill(&self) -> PathBuf {
        let filler = self.mount.join("filler");
        let mut file = fs::File::create(&filler).unwrap_or_else(|err| panic!("{err}"));
        for size in [1024 * 1024, 64 * 1024, 4096, 512, 1] {
            let chunk = vec![0u8; size];
            while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
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

/// Waits (bounded) until `done` holds of the writer's counts.
fn wait_for(counts: &SinkCounts, what: &str, within: Duration, done: impl Fn(&SinkCounts) -> bool) {
    let deadline = Instant::now() + within;
    while !done(counts) {
        assert!(Instant::now() < deadline, "{what}: {counts:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn some_wait(counts: &SinkCounts) -> bool {
    counts.waiting.load(Ordering::Relaxed) > 0
}

fn none_waits(counts: &SinkCounts) -> bool {
    counts.waiting.load(Ordering::Relaxed) == 0
}

/// The numbers of the findings kept in the store at `db`, in order.
fn kept(db: &std::path::Path) -> Vec<i64> {
    let store = Store::open(db).unwrap_or_else(|err| panic!("{err}"));
    store
        .alerts_between(Duration::ZERO, Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("{err}"))
        .iter()
        .map(|record| {
            serde_json::from_str::<serde_json::Value>(record).unwrap_or_default()["n"]
                .as_i64()
                .unwrap_or(-1)
        })
        .collect()
}

#[test]
fn records_refused_by_a_full_disk_are_written_when_room_returns() {
    if !privileged("records_refused_by_a_full_disk_are_written_when_room_returns") {
        return;
    }
    let tmpfs = Tmpfs::new("nwfull", "8m");
    let store = Store::open(&tmpfs.db()).unwrap_or_else(|err| panic!("{err}"));
    let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
    sink.send(Record::Findings(vec![finding(0)]));
    let filler = tmpfs.fill();

    // 300 findings of 2 KB do not fit: they wait.
    for n in 1..=300 {
        sink.send(Record::Findings(vec![finding(n)]));
    }
    wait_for(
        sink.counts(),
        "nothing waits",
        Duration::from_secs(20),
        some_wait,
    );
    assert!(sink.counts().refused.load(Ordering::Relaxed) > 0);

    // Room again: the next record brings the waiting ones in, oldest first.
    fs::remove_file(&filler).unwrap_or_else(|err| panic!("{err}"));
    sink.send(Record::Findings(vec![finding(301)]));
    wait_for(
        sink.counts(),
        "still waiting",
        Duration::from_secs(20),
        none_waits,
    );
    assert_eq!(
        sink.counts().failed.load(Ordering::Relaxed),
        0,
        "nothing lost"
    );
    sink.close();
    assert_eq!(
        kept(&tmpfs.db()),
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
    let tmpfs = Tmpfs::new("nwfullre", "4m");
    {
        let store = Store::open(&tmpfs.db()).unwrap_or_else(|err| panic!("{err}"));
        let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
        sink.send(Record::Findings(vec![finding(0)]));
        sink.close();
    }
    // The disk fills to the last byte while netwatch is down.
    let filler = tmpfs.fill();

    let store = Store::open(&tmpfs.db()).unwrap_or_else(|err| panic!("a full disk: {err}"));
    store
        .known_state()
        .unwrap_or_else(|err| panic!("a full disk: {err}"));
    let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
    for n in 1..=50 {
        sink.send(Record::Findings(vec![finding(n)]));
    }
    wait_for(
        sink.counts(),
        "nothing waits",
        Duration::from_secs(20),
        some_wait,
    );
    fs::remove_file(&filler).unwrap_or_else(|err| panic!("{err}"));
    wait_for(
        sink.counts(),
        "still waiting",
        Duration::from_secs(20),
        none_waits,
    );
    sink.close();
    assert_eq!(
        kept(&tmpfs.db()).len(),
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
    let tmpfs = Tmpfs::new("nwfullbd", "48m");
    let store = Store::open(&tmpfs.db()).unwrap_or_else(|err| panic!("{err}"));
    let sink = StoreWriter::start(store, Vec::new()).unwrap_or_else(|err| panic!("{err}"));
    let filler = tmpfs.fill();

    let counts = sink.counts();
    for chunk in (1..=SENT).collect::<Vec<_>>().chunks(500) {
        for &n in chunk {
            sink.send(Record::Findings(vec![finding(n)]));
        }
        // Paced so that the writer's own queue never overflows: this test is about the bound
        // of the records waiting for the disk.
        let sent = chunk[chunk.len() - 1];
        wait_for(
            counts,
            "the writer is stuck",
            Duration::from_secs(60),
            |counts| {
                counts.waiting.load(Ordering::Relaxed) as i64
                    + counts.failed.load(Ordering::Relaxed) as i64
                    >= sent
            },
        );
    }
    assert_eq!(counts.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(counts.waiting.load(Ordering::Relaxed) as i64, BOUND);
    assert_eq!(counts.failed.load(Ordering::Relaxed) as i64, SENT - BOUND);

    fs::remove_file(&filler).unwrap_or_else(|err| panic!("{err}"));
    wait_for(counts, "still waiting", Duration::from_secs(60), none_waits);
    sink.close();
    assert_eq!(
        kept(&tmpfs.db()),
        (SENT - BOUND + 1..=SENT).collect::<Vec<_>>(),
        "the newest 4,096, in order"
    );
}
