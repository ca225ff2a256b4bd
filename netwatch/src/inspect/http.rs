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

/// Segments held past a gap, at most: a sender of tiny segments at scattered offsets gets
/// no more.
const MAX_EARLY: usize = 64;

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
    /// When the buffer last moved (grew or gave a request): a flow whose gap is never filled
    /// is given up `timeout` after that, however many segments it keeps sending.
    progress: Duration,
    /// Bytes of `buffer` already searched for the end of a head, so that a head sent in
    /// many small segments is not searched from its start again for each.
    searched: usize,
    /// The head at the start of `buffer` is whole (its empty line found).
    head_whole: bool,
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
    /// completed, and those of flows it pushed out of the table, as far as they got.
    pub fn segment(
        &mut self,
        key: FlowKey,
        seq: u32,
        payload: &[u8],
        at: Duration,
    ) -> Vec<Gathered> {
        let mut done = Vec::new();
        if payload.is_empty() {
            return done;
        }
        if !self.flows.contains_key(&key) {
            // Following starts at a request line; the middle of something else is not HTTP.
            if !text::may_start_request(payload) {
                return done;
            }
            self.make_room(&mut done);
            self.flows.insert(
                key,
                Stream {
                    base: seq,
                    progress: at,
                    ..Stream::default()
                },
            );
            self.order.push_back(key);
        }
        let max_bytes = self.max_bytes;
        let Some(stream) = self.flows.get_mut(&key) else {
            return done;
        };
        if stream.add(seq, payload, max_bytes) {
            stream.progress = at;
        }
        loop {
            if !stream.head_may_be_whole() && stream.buffer.len() < max_bytes {
                break;
            }
            match text::complete_request(&stream.buffer) {
                text::Completion::Complete(request, consumed) => {
                    done.push(Gathered { key, request });
                    stream.advance(consumed);
                }
                text::Completion::Incomplete if stream.buffer.len() >= max_bytes => {
                    // As far as it got, then on past the rest of it, by its length.
                    let request = text::http_request(&stream.buffer);
                    let length = request
                        .as_ref()
                        .filter(|request| !request.chunked)
                        .and_then(|request| {
                            let head = text::head_len(&stream.buffer)?;
                            Some(head + request.content_length?)
                        })
                        .unwrap_or(stream.buffer.len())
                        .max(stream.buffer.len());
                    if let Some(request) = request {
                        done.push(Gathered { key, request });
                    }
                    self.counts.cut += 1;
                    stream.advance(length);
                }
                text::Completion::Incomplete => break,
                text::Completion::NotHttp => {
                    // Lost track (a protocol switch, a request line cut by a lost segment):
                    // start again at the next request line.
                    let held = stream.buffer.len();
                    stream.advance(held);
                    break;
                }
            }
        }
        done
    }

    /// Reports the requests that waited `timeout` for their rest (every one, with `all`:
    /// at the end of a capture or at shutdown) as far as they got, and forgets flows that
    /// made no progress for that long.
    pub fn expire(&mut self, at: Duration, all: bool) -> Vec<Gathered> {
        let timeout = self.timeout;
        let mut out = Vec::new();
        let mut timed_out = 0;
        self.flows.retain(|key, stream| {
            let stale = all || at.saturating_sub(stream.progress) >= timeout;
            if !stale {
                return true;
            }
            if let Some(request) = stream.as_far_as_it_got() {
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

    /// Pushes the oldest flows out until one more fits; what they held is reported as far as
    /// it got, and counted.
    fn make_room(&mut self, done: &mut Vec<Gathered>) {
        while self.flows.len() >= self.max_flows {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(stream) = self.flows.remove(&oldest)
                && !(stream.buffer.is_empty() && stream.early.is_empty())
            {
                self.counts.dropped += 1;
                if let Some(request) = stream.as_far_as_it_got() {
                    done.push(Gathered {
                        key: oldest,
                        request,
                    });
                }
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
    /// Places a segment by its sequence number: appended, kept for later past a gap (within
    /// the bounds), or, what was seen already, dropped. True when the buffer grew.
    fn add(&mut self, seq: u32, payload: &[u8], max_bytes: usize) -> bool {
        let (offset, payload) = match seq.wrapping_sub(self.base) {
            // Before `base` (sequence arithmetic, RFC 9293 §3.4): only its tail may be new.
            offset if offset > u32::MAX / 2 => {
                let behind = self.base.wrapping_sub(seq) as usize;
                match payload.get(behind..) {
                    Some(rest) if !rest.is_empty() => (0, rest),
                    _ => return false,
                }
            }
            offset => (offset as usize, payload),
        };
        let held = self.buffer.len();
        if offset <= held {
            // The whole of what is new, even past the bound: the bound cuts between
            // requests, never inside a segment.
            let new = payload.get(held - offset..).unwrap_or_default();
            self.buffer.extend_from_slice(new);
            self.fill_gaps();
            return !new.is_empty();
        }
        let fits = self.early.len() < MAX_EARLY
            && held + self.early_bytes + payload.len() <= max_bytes
            && offset < max_bytes;
        if fits {
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
        false
    }

    /// Moves the early segments that the buffer now reaches into it.
    fn fill_gaps(&mut self) {
        while let Some(entry) = self.early.first_entry() {
            let offset = *entry.key() as usize;
            let held = self.buffer.len();
            if offset > held {
                break;
            }
            let segment = entry.remove();
            self.early_bytes -= segment.len();
            if let Some(new) = segment.get(held - offset..) {
                self.buffer.extend_from_slice(new);
            }
        }
    }

    /// True when the bytes held may hold a whole head: a request line that cannot be one, or
    /// an empty line after the head. Searches only what it has not searched yet.
    fn head_may_be_whole(&mut self) -> bool {
        if self.buffer.is_empty() {
            return false;
        }
        if !text::may_start_request(&self.buffer[..self.buffer.len().min(8)]) {
            return true;
        }
        if !self.head_whole {
            let from = self.searched.saturating_sub(3);
            self.head_whole = self.buffer[from..]
                .windows(4)
                .any(|window| window == b"\r\n\r\n");
            self.searched = self.buffer.len();
        }
        self.head_whole
    }

    /// Moves `base` on by `by` bytes (past what the buffer holds, if need be: the rest of a
    /// request cut at the bound); the early segments move with it.
    fn advance(&mut self, by: usize) {
        let consumed = by.min(self.buffer.len());
        self.buffer.drain(..consumed);
        self.base = self.base.wrapping_add(by as u32);
        self.searched = 0;
        self.head_whole = false;
        let early = std::mem::take(&mut self.early);
        self.early_bytes = 0;
        let shift = by - consumed;
        for (offset, segment) in early {
            // Offsets were from the old base, past the `consumed` bytes of the buffer.
            let offset = (offset as usize).saturating_sub(consumed);
            let (offset, segment) = if offset >= shift {
                (offset - shift, segment)
            } else {
                match segment.get(shift - offset..) {
                    Some(rest) if !rest.is_empty() => (0, rest.to_vec()),
                    _ => continue,
                }
            };
            let offset = offset as u32;
            if self
                .early
                .get(&offset)
                .is_none_or(|kept| kept.len() < segment.len())
            {
                if let Some(old) = self.early.insert(offset, segment) {
                    self.early_bytes -= old.len();
                }
                self.early_bytes += self.early[&offset].len();
            }
        }
        self.fill_gaps();
    }

    /// The request held, as far as it got: from the buffer, or, when the buffer holds none,
    /// from an early segment that starts one.
    fn as_far_as_it_got(&self) -> Option<HttpRequest> {
        text::http_request(&self.buffer).or_else(|| {
            self.early
                .values()
                .find_map(|segment| text::http_request(segment))
        })
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

    /// The requests of what a segment gave.
    fn requests(gathered: Vec<Gathered>) -> Vec<HttpRequest> {
        gathered
            .into_iter()
            .map(|gathered| gathered.request)
            .collect()
    }

    #[test]
    fn a_request_in_one_segment_is_whole_at_once() {
        let mut streams = streams();
        let whole = [HEAD, BODY].concat();
        let done = requests(streams.segment(key(), 1000, &whole, Duration::ZERO));
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
        let done = requests(streams.segment(key(), after_head, first, Duration::ZERO));
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
        let done = requests(streams.segment(
            key(),
            base.wrapping_add(HEAD.len() as u32),
            BODY,
            Duration::ZERO,
        ));
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
        let done = requests(streams.segment(key(), 40, &whole[40..], Duration::ZERO));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].body, BODY);
    }

    #[test]
    fn keep_alive_requests_follow_each_other() {
        let mut streams = streams();
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let both = [get.as_slice(), HEAD, BODY].concat();
        let done = requests(streams.segment(key(), 0, &both, Duration::ZERO));
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
        let done = requests(streams.segment(key(), 0, &big, Duration::ZERO));
        assert_eq!(done.len(), 1, "reported as far as it got");
        // The bound cuts between segments, never inside one: the whole segment is there.
        assert_eq!(done[0].body.len(), 300);
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
    fn a_gap_never_filled_is_given_up_though_the_flow_stays_busy() {
        let mut streams = streams();
        let whole = [HEAD, BODY].concat();
        // The first bytes of the body are lost; the client keeps sending after them.
        assert!(streams.segment(key(), 0, HEAD, Duration::ZERO).is_empty());
        let after = HEAD.len() as u32 + 5;
        for second in 1..10 {
            let at = Duration::from_secs(second);
            assert!(
                streams
                    .segment(key(), after, &whole[after as usize..], at)
                    .is_empty()
            );
            assert!(streams.expire(at, false).is_empty(), "second {second}");
        }
        // Ten seconds after it last moved, the request is reported as far as it got ...
        let late = streams.expire(Duration::from_secs(10), false);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].request.method, "POST");
        // ... and the flow's next request is followed again.
        let next = requests(streams.segment(key(), 5_000, &whole, Duration::from_secs(11)));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].body, BODY);
    }

    #[test]
    fn after_a_request_cut_at_the_bound_the_next_one_is_whole() {
        let mut streams = Streams::new(4, 4096, Duration::from_secs(10));
        let head = b"POST /upload HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
        let upload = [head.as_slice(), &[b'u'; 100_000]].concat();
        let login = [HEAD, BODY].concat();
        let stream = [upload.as_slice(), &login].concat();
        let mut found = Vec::new();
        for (i, chunk) in stream.chunks(1448).enumerate() {
            found.extend(requests(streams.segment(
                key(),
                7_000 + (i * 1448) as u32,
                chunk,
                Duration::ZERO,
            )));
        }
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].path, "/upload");
        assert_eq!(streams.counts().cut, 1);
        assert_eq!(found[1].body, BODY, "the login after it, whole");
    }

    #[test]
    fn a_flow_pushed_out_is_reported_as_far_as_it_got() {
        let mut streams = Streams::new(1, 4096, Duration::from_secs(10));
        let head = b"POST /api HTTP/1.1\r\nAuthorization: Basic YTpi\r\nContent-Length: 10\r\n\r\n";
        assert!(streams.segment(key(), 0, head, Duration::ZERO).is_empty());
        let other = (
            "192.0.2.2:40000".parse().unwrap(),
            "192.0.2.80:80".parse().unwrap(),
        );
        let out = streams.segment(other, 0, b"GET / HTTP/1.1\r\n\r\n", Duration::ZERO);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].key, key());
        assert_eq!(out[0].request.authorization.as_deref(), Some("Basic YTpi"));
        assert_eq!(out[1].key, other);
        assert_eq!(streams.counts().dropped, 1);
    }

    #[test]
    fn segments_past_a_gap_are_held_within_bounds() {
        let mut streams = Streams::new(4, 1 << 20, Duration::from_secs(10));
        assert!(streams.segment(key(), 0, HEAD, Duration::ZERO).is_empty());
        for i in 0..10_000u32 {
            streams.segment(key(), HEAD.len() as u32 + 2 + 3 * i, b"x", Duration::ZERO);
        }
        let stream = &streams.flows[&key()];
        assert!(stream.early.len() <= MAX_EARLY, "{}", stream.early.len());
    }

    #[test]
    fn a_segment_that_starts_no_request_is_not_followed() {
        let mut streams = streams();
        assert!(streams.segment(key(), 0, BODY, Duration::ZERO).is_empty());
        assert!(streams.expire(Duration::ZERO, true).is_empty());
    }
}
