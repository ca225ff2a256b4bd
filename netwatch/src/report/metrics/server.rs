//! The HTTP server of the metrics: `GET /metrics` answered from a thread of its own, each
//! connection on a thread of its own, bounded in number, in time and in the bytes read, and
//! failed requests logged at most once a minute.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use super::Metrics;

/// Serves `GET /metrics` on `addr` from a thread of its own; returns the bound address.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    thread::Builder::new()
        .name(String::from("metrics"))
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            let log = Arc::new(Mutex::new(RateLimitedLog::default()));
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(err) => {
                        // A connection aborted before it was accepted, say.
                        note(&log, &format!("accept: {err}"));
                        continue;
                    }
                };
                // Each connection on its own thread, so that an idle or slow one delays no
                // scrape; at most MAX_CONNECTIONS at once, the rest closed at once.
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    note(&log, "too many connections at once; one closed unanswered");
                    continue;
                }
                let (metrics, open, conn_log) =
                    (Arc::clone(&metrics), Arc::clone(&open), Arc::clone(&log));
                let spawned = thread::Builder::new()
                    .name(String::from("metrics-conn"))
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        if let Err(err) = answer(stream, &metrics) {
                            note(&conn_log, &format!("request failed: {err}"));
                        }
                        open.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(err) = spawned {
                    note(&log, &format!("cannot start a connection thread: {err}"));
                }
            }
        })?;
    Ok(bound)
}

/// Connections served at once, at most.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request line and headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of request line and headers read, at most.
const MAX_HEAD_BYTES: u64 = 8192;
/// At most one line about failed metrics requests per this long; the rest are counted in it.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Failed requests, logged at most once a [`LOG_EVERY`] with the count since the last line:
/// a flood of aborted connections is not a flood of lines.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

fn note(log: &Mutex<RateLimitedLog>, what: &str) {
    let Ok(mut log) = log.lock() else {
        return;
    };
    let now = std::time::Instant::now();
    if log
        .last
        .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
    {
        log.unlogged += 1;
        return;
    }
    let more = std::mem::take(&mut log.unlogged);
    if more > 0 {
        log::warn!("metrics: {what} (and {more} more since the last line)");
    } else {
        log::warn!("metrics: {what}");
    }
    log.last = Some(now);
}

fn answer(stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(HEADER_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let deadline = std::time::Instant::now() + HEADER_TIMEOUT;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD_BYTES));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers: bounded in count, bytes and time (a client that trickles a byte a
    // second is cut off with the rest).
    for _ in 0..100 {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "headers too slow"));
        }
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next()) {
        ("GET", Some("/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", Some("/")) => (
            "200 OK",
            "text/plain; charset=utf-8",
            String::from("netwatch: metrics at /metrics\n"),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            String::from("not found\n"),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn the_server_answers_metrics_and_404() {
        let metrics = Arc::new(Metrics::new(5).unwrap());
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics)).unwrap();
        let get = |path: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        };
        let response = get("/metrics");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("netwatch_build_info{version="),
            "{response}"
        );
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
    }

    /// Idle connections (a scanner, a stuck client) hold no scrape back: each connection is
    /// served on its own, and an idle one is closed after the header timeout.
    #[test]
    fn idle_connections_do_not_delay_a_scrape() {
        let metrics = Arc::new(Metrics::new(5).unwrap());
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics)).unwrap();
        let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut stream = TcpStream::connect(addr).unwrap();
        // The scrape must answer within Prometheus's patience and well within the old 5 s
        // per idle connection: a read that waits longer fails the test.
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        // The idle ones are closed by the server after its header timeout.
        for mut idle in idle {
            idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut rest = Vec::new();
            assert!(
                idle.read_to_end(&mut rest).is_ok(),
                "closed by the server, not left open"
            );
        }
    }
}
