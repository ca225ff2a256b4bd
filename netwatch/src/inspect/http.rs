//! HTTP requests gathered across TCP segments.
//!
//! A browser's login seldom fits one segment: its head (cookies, user agent, referer) may fill
//! most of one and the form follow in the next, or a client may send the head, wait for
//! `100 Continue`, then the body. The kernel samples every segment with a payload to a sampled
//! port (within the token bucket), so the segments of a request reach inspection; this module
//! puts them back in order by TCP sequence number and hands over whole requests.
//!
//! Bounded everywhere: at most `max_flows` flows (the oldest is dropped, and counted, when a
//! new one needs room), at most `max_bytes` held per flow (a request larger than that is
//! reported as far as it got, and counted), and a request whose rest does not come within
//! `timeout` is reported as it is. Retransmitted and overlapping segments are taken once;
//! segments that arrive early wait, within the byte bound, for the gap before them.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    time::Duration,
};

use super::text::{self, HttpRequest};

/// A client -> server flow.
pub type FlowKey = (SocketAddr, SocketAddr);

/// What the streams have dropped or cut, for the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Flows dropped from the table, for room, while they held part of a request.
    pub dropped: u64,
    /// Requests larger than the byte bound, reported as far as they got.
    pub cut: u64,
    /// Requests whose rest did not come in time, reported as they were.
    pub timed_out: u64,
}

/// A request gathered, or as far as it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gathered {
    /// The flow.
    pub key: FlowKey,
    /// The request.
    pub request: HttpRequest,
}

#[derive(Debug, Default)]
struct Stream {
    /// Sequence number of `buffer[0]`.
    base: u32,
    /// The client's bytes from `base` on, in order, without gaps.
    buffer: Vec<u8>,
    /// Segments past a gap, by their offset from `base`.
    early: BTreeMap<u32, Vec<u8>>,
    /// Bytes in `early`.
    early_bytes: usize,
    /// When a segment last came.
    last: Duration,
}

/// The HTTP flows being followed.
#[derive(Debug)]
pub struct Streams {
    flows: HashMap<FlowKey, Stream>,
    order: VecDeque<FlowKey>,
    max_flows: usize,
    max_bytes: usize,
    timeout: Duration,
    counts: StreamCounts,
}

impl Streams {
    /// At most `max_flows` flows of at most `max_bytes` each; a request waits `timeout` for
    /// its rest.
    pub fn new(max_flows: usize, max_bytes: usize, timeout: Duration) -> Self {
        Self {
            flows: HashMap::new(),
            order: VecDeque::new(),
            max_flows: max_flows.max(1),
            max_bytes: max_bytes.max(1),
            timeout,
            counts: StreamCounts::default(),
        }
    }

    /// New bounds (hot reload); flows are kept.
    pub fn set_bounds(&mut self, max_flows: usize, max_bytes: usize, timeout: Duration) {
        self.max_flows = max_flows.max(1);
        self.max_bytes = max_bytes.max(1);
        self.timeout = timeout;
    }

    /// What has been dropped or cut so far.
    pub fn counts(&self) -> StreamCounts {
        self.counts
    }

    /// Takes one client segment (sequence number `seq`) seen at `at`; returns the requests it
    /// completed.
    pub fn segment(
        &mut self,
        key: FlowKey,
        seq: u32,
        payload: &[u8],
        at: Duration,
    ) -> Vec<HttpRequest> {
        if payload.is_empty() {
            return Vec::new();
        }
        if !self.flows.contains_key(&key) {
            // Following starts at a request line; the middle of something else is not HTTP.
            if !text::may_start_request(payload) {
                return Vec::new();
            }
            self.make_room();
            self.flows.insert(
                key,
                Stream {
                    base: seq,
                    ..Stream::default()
                },
            );
            self.order.push_back(key);
        }
        let max_bytes = self.max_bytes;
        let Some(stream) = self.flows.get_mut(&key) else {
            return Vec::new();
        };
        stream.last = at;
        stream.add(seq, payload, max_bytes);
        let mut done = Vec::new();
        loop {
            match text::complete_request(&stream.buffer) {
                text::Completion::Complete(request, consumed) => {
                    done.push(request);
                    stream.consume(consumed);
                }
                text::Completion::Incomplete if stream.buffer.len() >= max_bytes => {
                    // As far as it got: the head and the body so far.
                    if let Some(request) = text::http_request(&stream.buffer) {
                        done.push(request);
                    }
                    self.counts.cut += 1;
                    let held = stream.buffer.len();
                    stream.consume(held);
                    stream.early.clear();
                    stream.early_bytes = 0;
                    break;
                }
                text::Completion::Incomplete => break,
                text::Completion::NotHttp => {
                    // Lost track (a gap never filled, a protocol switch): start again at the
                    // next request line.
                    let held = stream.buffer.len();
                    stream.consume(held);
                    break;
                }
            }
        }
        done
    }

    /// Reports the requests that waited `timeout` for their rest (every one, with `all`:
    /// at the end of a capture or at shutdown) as far as they got, and forgets flows idle
    /// that long.
    pub fn expire(&mut self, at: Duration, all: bool) -> Vec<Gathered> {
        let timeout = self.timeout;
        let mut out = Vec::new();
        let mut timed_out = 0;
        self.flows.retain(|key, stream| {
            let stale = all || at.saturating_sub(stream.last) >= timeout;
            if !stale {
                return true;
            }
            if !stream.buffer.is_empty()
                && let Some(request) = text::http_request(&stream.buffer)
            {
                timed_out += 1;
                out.push(Gathered { key: *key, request });
            }
            false
        });
        self.counts.timed_out += timed_out;
        let flows = &self.flows;
        self.order.retain(|key| flows.contains_key(key));
        out.sort_by_key(|gathered| gathered.key);
        out
    }

    fn make_room(&mut self) {
        while self.flows.len() >= self.max_flows {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(stream) = self.flows.remove(&oldest)
                && !(stream.buffer.is_empty() && stream.early.is_empty())
            {
                self.counts.dropped += 1;
            }
        }
        // Keys of flows removed since are dropped from the order lazily.
        if self.order.len() > 2 * self.max_flows {
            let flows = &self.flows;
            self.order.retain(|key| flows.contains_key(key));
        }
    }
}

impl Stream {
    /// Places a segment by its sequence number: appended, kept for later past a gap, or
    /// (what was seen already) dropped.
    fn add(&mut self, seq: u32, payload: &[u8], max_bytes: usize) {
        let (offset, payload) = match seq.wrapping_sub(self.base) {
            // Before `base` (sequence arithmetic, RFC 9293 §3.4): only its tail may be new.
            offset if offset > u32::MAX / 2 => {
                let behind = self.base.wrapping_sub(seq) as usize;
                match payload.get(behind..) {
                    Some(rest) if !rest.is_empty() => (0, rest),
                    _ => return,
                }
            }
            offset => (offset as usize, payload),
        };
        let held = self.buffer.len();
        if offset <= held {
            let new = payload.get(held - offset..).unwrap_or_default();
            let room = max_bytes.saturating_sub(held);
            self.buffer.extend_from_slice(&new[..new.len().min(room)]);
            self.fill_gaps(max_bytes);
        } else if offset < max_bytes && self.early_bytes + payload.len() <= max_bytes {
            let offset = offset as u32;
            let longer = self
                .early
                .get(&offset)
                .is_none_or(|kept| kept.len() < payload.len());
            if longer {
                if let Some(old) = self.early.insert(offset, payload.to_vec()) {
                    self.early_bytes -= old.len();
                }
                self.early_bytes += payload.len();
            }
        }
    }

    /// Moves the early segments that the buffer now reaches into it.
    fn fill_gaps(&mut self, max_bytes: usize) {
        while let Some(entry) = self.early.first_entry() {
            let offset = *entry.key() as usize;
            let held = self.buffer.len();
            if offset > held {
                break;
            }
            let segment = entry.remove();
            self.early_bytes -= segment.len();
            if let Some(new) = segment.get(held - offset..) {
                let room = max_bytes.saturating_sub(held);
                self.buffer.extend_from_slice(&new[..new.len().min(room)]);
            }
        }
    }

    /// Forgets the first `consumed` bytes: the sequence moves on, early segments with it.
    fn consume(&mut self, consumed: usize) {
        let consumed = consumed.min(self.buffer.len());
        self.buffer.drain(..consumed);
        self.base = self.base.wrapping_add(consumed as u32);
        let shift = consumed as u32;
        let early = std::mem::take(&mut self.early);
        self.early_bytes = 0;
        for (offset, segment) in early {
            if let Some(offset) = offset.checked_sub(shift) {
                self.early_bytes += segment.len();
                self.early.insert(offset, segment);
            } else if let Some(rest) = segment.get((shift - offset) as usize..)
                && !rest.is_empty()
            {
                self.early_bytes += rest.len();
                self.early.insert(0, rest.to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        (
            "192.0.2.1:40000".parse().unwrap(),
            "192.0.2.80:80".parse().unwrap(),
        )
    }

    const HEAD: &[u8] = b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\n";
    const BODY: &[u8] = b"user=alice&password=s3cr3t!";

    fn streams() -> Streams {
        Streams::new(4, 4096, Duration::from_secs(10))
    }

    #[test]
    fn a_request_in_one_segment_is_whole_at_once() {
        let mut streams = streams();
        let whole = [HEAD, BODY].concat();
        let done = streams.segment(key(), 1000, &whole, Duration::ZERO);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].body, BODY);
    }

    #[test]
    fn head_and_body_in_two_segments_and_out_of_order_parts() {
        let mut streams = streams();
        let base = 7u32;
        assert!(
            streams
                .segment(key(), base, HEAD, Duration::ZERO)
                .is_empty()
        );
        let (first, second) = BODY.split_at(10);
        let after_head = base + HEAD.len() as u32;
        // The second half first: it waits for the gap.
        assert!(
            streams
                .segment(key(), after_head + 10, second, Duration::ZERO)
                .is_empty()
        );
        let done = streams.segment(key(), after_head, first, Duration::ZERO);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].body, BODY);
        // A retransmission of any of it gives nothing again.
        assert!(
            streams
                .segment(key(), base, HEAD, Duration::ZERO)
                .is_empty()
        );
        assert!(
            streams
                .segment(key(), after_head, first, Duration::ZERO)
                .is_empty()
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut streams = streams();
        let base = u32::MAX - 20;
        assert!(
            streams
                .segment(key(), base, HEAD, Duration::ZERO)
                .is_empty()
        );
        let done = streams.segment(
            key(),
            base.wrapping_add(HEAD.len() as u32),
            BODY,
            Duration::ZERO,
        );
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].body, BODY);
    }

    #[test]
    fn an_overlapping_retransmission_adds_only_what_is_new() {
        let mut streams = streams();
        let whole = [HEAD, BODY].concat();
        let (first, _) = whole.split_at(50);
        assert!(streams.segment(key(), 0, first, Duration::ZERO).is_empty());
        // Resent from byte 40 to the end.
        let done = streams.segment(key(), 40, &whole[40..], Duration::ZERO);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].body, BODY);
    }

    #[test]
    fn keep_alive_requests_follow_each_other() {
        let mut streams = streams();
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let both = [get.as_slice(), HEAD, BODY].concat();
        let done = streams.segment(key(), 0, &both, Duration::ZERO);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].method, "GET");
        assert_eq!(done[1].body, BODY);
    }

    #[test]
    fn a_request_whose_body_never_comes_is_reported_at_the_timeout() {
        let mut streams = streams();
        assert!(streams.segment(key(), 0, HEAD, Duration::ZERO).is_empty());
        assert!(streams.expire(Duration::from_secs(5), false).is_empty());
        let late = streams.expire(Duration::from_secs(10), false);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].request.method, "POST");
        assert_eq!(streams.counts().timed_out, 1);
        assert!(streams.expire(Duration::from_secs(20), true).is_empty());
    }

    #[test]
    fn bounds_cut_large_requests_and_drop_old_flows_counted() {
        let mut streams = Streams::new(2, 200, Duration::from_secs(10));
        let big = [
            b"POST /up HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".as_slice(),
            &[b'x'; 300],
        ]
        .concat();
        let done = streams.segment(key(), 0, &big, Duration::ZERO);
        assert_eq!(done.len(), 1, "reported as far as it got");
        assert_eq!(done[0].body.len(), 200 - 45);
        assert_eq!(streams.counts().cut, 1);
        // Three flows with a request pending in a table of two: the oldest is dropped.
        for port in 1..=3u16 {
            let key = (
                SocketAddr::new("192.0.2.9".parse().unwrap(), port),
                "192.0.2.80:80".parse().unwrap(),
            );
            streams.segment(key, 0, HEAD, Duration::ZERO);
        }
        assert_eq!(streams.counts().dropped, 1);
    }

    #[test]
    fn a_segment_that_starts_no_request_is_not_followed() {
        let mut streams = streams();
        assert!(streams.segment(key(), 0, BODY, Duration::ZERO).is_empty());
        assert!(streams.expire(Duration::ZERO, true).is_empty());
    }
}
