//! A Kafka broker for the tests: librdkafka's mock cluster (one broker, the real Kafka
//! protocol over TCP on 127.0.0.1), in a process of its own, so that netwatch talks to it as
//! to any broker, from its own process. It prints `bootstrap HOST:PORT` once it listens, then
//! takes commands on standard input, one a line: `down` (the broker closes its connections
//! and refuses new ones), `up`, `quit`; it answers each with `ok`. It ends at `quit` or when
//! standard input closes: a test that dies leaves no broker behind.
//!
//! Usage: `kafka-broker TOPIC...` (the topics are made up front, one partition each).

use std::io::{BufRead as _, Write as _};

use rdkafka::mocking::MockCluster;

fn main() {
    let cluster = match MockCluster::new(1) {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("kafka-broker: {err}");
            std::process::exit(1);
        }
    };
    for topic in std::env::args().skip(1) {
        if let Err(err) = cluster.create_topic(&topic, 1, 1) {
            eprintln!("kafka-broker: topic {topic}: {err}");
            std::process::exit(1);
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "bootstrap {}", cluster.bootstrap_servers());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            break;
        };
        let done = match line.trim() {
            "down" => cluster.broker_down(1),
            "up" => cluster.broker_up(1),
            "quit" => break,
            other => {
                eprintln!("kafka-broker: unknown command {other:?}");
                continue;
            }
        };
        match done {
            Ok(()) => {
                let _ = writeln!(out, "ok");
            }
            Err(err) => {
                let _ = writeln!(out, "error {err}");
            }
        }
        let _ = out.flush();
    }
}
