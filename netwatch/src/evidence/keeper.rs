//! The [`CaptureKeeper`]: which events are being captured, under which kernel index, and
//! every decision on them. An alert of `capture.kinds` at its start gets a capture of its
//! subject ([`CaptureKeeper::on_alert`]), named by its event id; each interval the sampling
//! follows the subject's rate so that about `frames_per_second` are kept
//! ([`CaptureKeeper::tick`]); the capture stops at the event's end, at its frame or byte
//! budget, or when the disk refuses it. `netwatch capture` asks for one by hand, for a time
//! ([`CaptureKeeper::request`]).
//!
//! It must not touch a map or a file (it returns [`CaptureChange`]s for the caller to carry
//! out), nor read a clock.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use super::{
    config::CaptureConfig,
    subject::{CaptureSubject, subject_of},
};
use crate::detect::alert::{Alert, AlertState, CaptureLink};

/// Most captures at once: the kernel's room.
pub const MAX_CAPTURES: u32 = netwatch_common::MAX_CAPTURES as u32;

/// Events remembered as refused a capture (said once each).
const REFUSED_MEMORY: usize = 4_096;

/// Why a capture stops at its event's end: the one stop that is no cut.
const EVENT_ENDED: &str = "the event ended";

/// Most frames one in N may skip: N is at most this.
const MAX_EVERY: u32 = 1 << 20;

/// A capture in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Capture {
    /// Its kernel index.
    pub index: u32,
    /// The event it is the evidence of: the alert's id, or the request's.
    pub event: String,
    /// What it is of: the alert's kind, or `request`.
    pub what: String,
    /// Whose frames.
    pub subject: CaptureSubject,
    /// The file's name (in the captures' folder).
    pub file: String,
    /// One frame in this many is kept, after the first.
    pub every: u32,
    /// A request's end; an alert's capture ends with its event.
    pub until: Option<Duration>,
    /// What the kernel saw of its subject at the last tick, and when.
    last_seen: (u64, Duration),
    /// Frames and bytes written so far, as the writer says.
    pub frames: u64,
    /// Why it stopped before its end, if it did.
    pub cut: Option<String>,
}

/// What the caller carries out: to the kernel and to the capture files.
#[derive(Clone, Debug, PartialEq)]
pub enum CaptureChange {
    /// Set capture `index` in the kernel and open its file.
    Start(Box<Capture>),
    /// Keep one frame in `every` of capture `index` from now on.
    Every {
        /// The index.
        index: u32,
        /// The new N.
        every: u32,
    },
    /// Take capture `index` out of the kernel, write what is left, close its file.
    Stop {
        /// The index.
        index: u32,
        /// Why (an event's end, a budget, a request's time).
        why: String,
    },
}

/// What the writer says of a capture's file: frames written, and why it stopped writing if
/// it did (its budget, the disk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Frames in the file.
    pub frames: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Why it stopped taking frames.
    pub cut: Option<String>,
}

/// Decides captures and keeps those in progress.
#[derive(Debug)]
pub struct CaptureKeeper {
    config: CaptureConfig,
    captures: BTreeMap<u32, Capture>,
    /// Indexes freed at the last tick: reused only after the next, when the frames of their
    /// old capture have left the ring.
    cooling: Vec<u32>,
    /// Ended captures by event, for the links of the event's last lines.
    ended: BTreeMap<String, CaptureLink>,
    refused: HashSet<String>,
    /// Requests so far, for their ids.
    requests: u64,
}

impl CaptureKeeper {
    /// A keeper for `config`.
    pub fn new(config: CaptureConfig) -> Self {
        Self {
            config,
            captures: BTreeMap::new(),
            cooling: Vec::new(),
            ended: BTreeMap::new(),
            refused: HashSet::new(),
            requests: 0,
        }
    }

    /// The captures in progress, by index.
    pub fn captures(&self) -> impl Iterator<Item = &Capture> {
        self.captures.values()
    }

    /// The settings.
    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// What an alert calls for: a capture at its event's start, its end at the event's end.
    /// A refusal (no subject, no room) is logged once per event.
    pub fn on_alert(&mut self, alert: &Alert, now: Duration) -> Vec<CaptureChange> {
        let index = self.index_of(&alert.id);
        match (alert.state, index) {
            (AlertState::Start | AlertState::Update, None) => {
                if !self.config.enabled
                    || !self.config.kinds.contains(&alert.kind)
                    || self.ended.contains_key(&alert.id)
                {
                    return Vec::new();
                }
                let Some(subject) = subject_of(alert) else {
                    self.refuse(&alert.id, "it names no source, prefix or victim");
                    return Vec::new();
                };
                let pps = alert.packets as f64
                    / alert
                        .at
                        .saturating_sub(alert.started)
                        .max(alert.interval)
                        .as_secs_f64()
                        .max(1e-3);
                self.start(
                    alert.id.clone(),
                    alert.kind.name().to_owned(),
                    subject,
                    pps,
                    None,
                    now,
                )
                .map(|change| vec![change])
                .unwrap_or_else(|why| {
                    self.refuse(&alert.id, &why);
                    Vec::new()
                })
            }
            (AlertState::End, Some(index)) => vec![CaptureChange::Stop {
                index,
                why: String::from(EVENT_ENDED),
            }],
            _ => Vec::new(),
        }
    }

    /// A capture by hand of `subject` for `duration`: its start, and its id (the name of
    /// its file), or why not.
    pub fn request(
        &mut self,
        subject: CaptureSubject,
        duration: Duration,
        now: Duration,
    ) -> Result<CaptureChange, String> {
        self.requests += 1;
        let event = format!("capture-{}-{}", now.as_millis(), self.requests);
        // Its rate is unknown yet: every frame until the first tick says.
        self.start(
            event,
            String::from("request"),
            subject,
            0.0,
            Some(now + duration),
            now,
        )
    }

    fn start(
        &mut self,
        event: String,
        what: String,
        subject: CaptureSubject,
        pps: f64,
        until: Option<Duration>,
        now: Duration,
    ) -> Result<CaptureChange, String> {
        let Some(index) = (0..MAX_CAPTURES)
            .find(|index| !self.captures.contains_key(index) && !self.cooling.contains(index))
        else {
            return Err(format!("all {MAX_CAPTURES} captures are in use"));
        };
        let capture = Capture {
            index,
            file: format!("{}.pcapng", file_stem(&event)),
            event,
            what,
            subject,
            every: self.every(pps),
            until,
            last_seen: (0, now),
            frames: 0,
            cut: None,
        };
        self.captures.insert(index, capture.clone());
        Ok(CaptureChange::Start(Box::new(capture)))
    }

    /// Once an interval, with what the kernel saw of each capture's subject (`seen`, by
    /// index) and what the writer wrote: the sampling follows each subject's rate; a
    /// capture the writer cut, or a request whose time is up, stops.
    pub fn tick(
        &mut self,
        seen: &BTreeMap<u32, u64>,
        written: &BTreeMap<u32, Written>,
        now: Duration,
    ) -> Vec<CaptureChange> {
        self.cooling.clear();
        let mut changes = Vec::new();
        let fps = f64::from(self.config.frames_per_second);
        for capture in self.captures.values_mut() {
            if let Some(written) = written.get(&capture.index) {
                capture.frames = written.frames;
                capture.cut.clone_from(&written.cut);
            }
            if let Some(why) = &capture.cut {
                changes.push(CaptureChange::Stop {
                    index: capture.index,
                    why: why.clone(),
                });
                continue;
            }
            if capture.until.is_some_and(|until| until <= now) {
                changes.push(CaptureChange::Stop {
                    index: capture.index,
                    why: String::from("its time is up"),
                });
                continue;
            }
            let Some(&count) = seen.get(&capture.index) else {
                continue;
            };
            let (before, at) = capture.last_seen;
            let elapsed = now.saturating_sub(at).as_secs_f64();
            capture.last_seen = (count, now);
            if elapsed <= 0.0 {
                continue;
            }
            let rate = count.saturating_sub(before) as f64 / elapsed;
            let every = every_for(rate, fps);
            if every != capture.every {
                capture.every = every;
                changes.push(CaptureChange::Every {
                    index: capture.index,
                    every,
                });
            }
        }
        changes
    }

    /// After a [`CaptureChange::Stop`] is carried out: the capture ends, with what its file
    /// holds; its index cools down for a tick.
    pub fn stopped(&mut self, index: u32, written: &Written, why: &str) -> Option<Capture> {
        let mut capture = self.captures.remove(&index)?;
        capture.frames = written.frames;
        capture.cut.clone_from(&written.cut);
        if capture.cut.is_none() && why != EVENT_ENDED {
            capture.cut = Some(why.to_owned());
        }
        self.cooling.push(index);
        if self.ended.len() >= REFUSED_MEMORY
            && let Some(oldest) = self.ended.keys().next().cloned()
        {
            self.ended.remove(&oldest);
        }
        self.ended.insert(capture.event.clone(), link(&capture));
        Some(capture)
    }

    /// After a [`CaptureChange::Start`] the writer or the kernel refused: the capture is
    /// dropped at once, its index free again.
    pub fn failed(&mut self, index: u32, why: &str) {
        if let Some(capture) = self.captures.remove(&index) {
            self.refuse(&capture.event, why);
        }
    }

    /// The link an alert of event `id` carries now: its capture's file and frames, in
    /// progress or ended; `None` when it has none.
    pub fn link(&self, id: &str) -> Option<CaptureLink> {
        self.captures
            .values()
            .find(|capture| capture.event == id)
            .map(link)
            .or_else(|| self.ended.get(id).cloned())
    }

    /// Updates what the writer wrote of capture `index`.
    pub fn written(&mut self, index: u32, written: &Written) {
        if let Some(capture) = self.captures.get_mut(&index) {
            capture.frames = written.frames;
            capture.cut.clone_from(&written.cut);
        }
    }

    fn index_of(&self, event: &str) -> Option<u32> {
        self.captures
            .values()
            .find(|capture| capture.event == event)
            .map(|capture| capture.index)
    }

    /// One in how many for a subject of `pps`.
    fn every(&self, pps: f64) -> u32 {
        every_for(pps, f64::from(self.config.frames_per_second))
    }

    fn refuse(&mut self, event: &str, why: &str) {
        if self.refused.len() >= REFUSED_MEMORY {
            self.refused.clear();
        }
        if self.refused.insert(event.to_owned()) {
            log::warn!(
                "no capture of event {}: {why}",
                crate::escape::escape(event)
            );
        }
    }
}

/// One in how many keeps about `fps` frames a second of a subject of `pps`: the power of two
/// at or above their ratio, 1 at least.
pub fn every_for(pps: f64, fps: f64) -> u32 {
    if !pps.is_finite() || pps <= fps {
        return 1;
    }
    let ratio = (pps / fps).ceil().min(f64::from(MAX_EVERY)) as u32;
    ratio.next_power_of_two().min(MAX_EVERY)
}

fn link(capture: &Capture) -> CaptureLink {
    CaptureLink {
        file: capture.file.clone(),
        frames: capture.frames,
        every: capture.every,
        cut: capture.cut.clone(),
    }
}

/// An event id as a file name: its letters, digits, `-` and `_`; anything else becomes `_`
/// (an id comes from netwatch, but a file name is no place to trust it).
fn file_stem(event: &str) -> String {
    let stem: String = event
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        String::from("capture")
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampling keeps about `frames_per_second`: one in a power of two at or above the
    /// ratio, 1 below it, capped.
    #[test]
    fn one_in_n_keeps_about_the_frames_asked() {
        assert_eq!(every_for(50.0, 100.0), 1);
        assert_eq!(every_for(100.0, 100.0), 1);
        assert_eq!(every_for(101.0, 100.0), 2);
        assert_eq!(every_for(10_000.0, 100.0), 128);
        assert_eq!(every_for(1e12, 100.0), MAX_EVERY);
        assert_eq!(every_for(f64::NAN, 100.0), 1);
    }

    /// A file name is made of an id's safe characters only.
    #[test]
    fn ids_become_safe_file_names() {
        assert_eq!(file_stem("r1a2-17"), "r1a2-17");
        assert_eq!(file_stem("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_stem(""), "capture");
    }

    use crate::detect::{
        alert::{AlertKind, Severity, Subject, Victim},
        attack::AttackType,
    };

    fn alert(id: &str, state: AlertState, subject: Subject) -> Alert {
        Alert {
            id: id.to_owned(),
            kind: AlertKind::ThresholdPps,
            state,
            severity: Severity::Warning,
            subject,
            observed: 6400.0,
            baseline: None,
            threshold: 1000.0,
            at: Duration::from_secs(1_001),
            interval: Duration::from_secs(1),
            started: Duration::from_secs(1_000),
            peak: 6400.0,
            packets: 6_400,
            bytes: 640_000,
            detail: None,
            contributors: Vec::new(),
            attack: None,
            members: None,
            slotless: None,
            victims: Vec::new(),
            capture: None,
            intel: None,
            context: Default::default(),
            by_as: Vec::new(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// An event's start starts its capture of its subject, one in N for its rate; its lines
    /// link it with the frames written so far; the sampling follows the kernel's count of the
    /// subject; its end stops it, and the end's link holds the file's count; the index cools
    /// down for a tick.
    #[test]
    fn an_event_is_captured_from_its_start_to_its_end() {
        let mut keeper = CaptureKeeper::new(CaptureConfig::default());
        let source = Subject::Source("198.51.100.7".parse().unwrap());
        let changes = keeper.on_alert(&alert("a-1", AlertState::Start, source), secs(1_001));
        let [CaptureChange::Start(capture)] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        assert_eq!(capture.index, 0);
        assert_eq!(capture.file, "a-1.pcapng");
        assert_eq!(capture.subject.to_string(), "from 198.51.100.7/32");
        // 6,400 pkt/s for about 100 a second: one in 64.
        assert_eq!(capture.every, 64);
        assert_eq!(keeper.link("a-1").map(|link| link.frames), Some(0));
        let written = |frames| Written {
            frames,
            bytes: frames * 100,
            cut: None,
        };
        keeper.written(0, &written(40));
        // The update changes nothing but the link.
        assert!(
            keeper
                .on_alert(&alert("a-1", AlertState::Update, source), secs(1_005))
                .is_empty()
        );
        assert_eq!(keeper.link("a-1").map(|link| link.frames), Some(40));
        // The kernel saw 25,600 frames in 2 s: 12,800 a second, one in 128.
        let changes = keeper.tick(
            &BTreeMap::from([(0, 25_600)]),
            &BTreeMap::from([(0, written(60))]),
            secs(1_003),
        );
        assert_eq!(
            changes,
            [CaptureChange::Every {
                index: 0,
                every: 128
            }]
        );
        let changes = keeper.on_alert(&alert("a-1", AlertState::End, source), secs(1_010));
        assert_eq!(
            changes,
            [CaptureChange::Stop {
                index: 0,
                why: String::from("the event ended")
            }]
        );
        let ended = keeper.stopped(0, &written(99), "the event ended").unwrap();
        assert_eq!((ended.frames, ended.cut), (99, None));
        assert_eq!(keeper.link("a-1").map(|link| link.frames), Some(99));
        assert_eq!(keeper.captures().count(), 0);
        // Index 0 cools down: the next event gets 1, until a tick has passed.
        let other = Subject::Source("198.51.100.8".parse().unwrap());
        let changes = keeper.on_alert(&alert("a-2", AlertState::Start, other), secs(1_011));
        assert!(matches!(changes.as_slice(), [CaptureChange::Start(c)] if c.index == 1));
    }

    /// A global alert's capture is of its main victim, narrowed to its attack's signature; one
    /// with no victim and no contributor gets none (said); a kind not listed, or captures
    /// off, none either; past the kernel's room, none; a capture the writer cut stops at the
    /// next tick, and a request ends at its time.
    #[test]
    fn subjects_refusals_cuts_and_requests() {
        let mut keeper = CaptureKeeper::new(CaptureConfig::default());
        let mut global = alert("g-1", AlertState::Start, Subject::Global);
        global.kind = AlertKind::SpikePps;
        global.victims = vec![Victim {
            addr: "192.0.2.5".parse().unwrap(),
            packets: 5_000,
            pps: 5_000.0,
            share: 0.9,
            attack: Some(AttackType::Reflection(123)),
            port: Some(40_000),
            sampled: None,
        }];
        let changes = keeper.on_alert(&global, secs(1_001));
        let [CaptureChange::Start(capture)] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        assert_eq!(
            capture.subject.to_string(),
            "udp from port 123 to 192.0.2.5/32"
        );
        let bare = alert("g-2", AlertState::Start, Subject::Global);
        assert!(keeper.on_alert(&bare, secs(1_001)).is_empty());
        let mut scan = alert(
            "s-1",
            AlertState::Start,
            Subject::Source("10.0.0.9".parse().unwrap()),
        );
        scan.kind = AlertKind::DnsTunnel;
        assert!(keeper.on_alert(&scan, secs(1_001)).is_empty());
        let mut off = CaptureKeeper::new(CaptureConfig {
            enabled: false,
            ..CaptureConfig::default()
        });
        assert!(
            off.on_alert(&alert("o-1", AlertState::Start, Subject::Global), secs(1))
                .is_empty()
        );
        // The kernel's room: 31 more fill it, the next is refused.
        for i in 0..31u8 {
            let subject = Subject::Source(std::net::IpAddr::from([10, 1, 0, i]));
            let changes = keeper.on_alert(
                &alert(&format!("f-{i}"), AlertState::Start, subject),
                secs(1_002),
            );
            assert_eq!(changes.len(), 1, "{i}");
        }
        let full = Subject::Source("10.2.0.1".parse().unwrap());
        assert!(
            keeper
                .on_alert(&alert("f-x", AlertState::Start, full), secs(1_002))
                .is_empty()
        );
        // Cut by the writer: stopped at the tick; a request: at its time.
        let cut = Written {
            frames: 10_000,
            bytes: 1,
            cut: Some(String::from(
                "its 10000 frames are written (capture.max_frames)",
            )),
        };
        let changes = keeper.tick(&BTreeMap::new(), &BTreeMap::from([(0, cut)]), secs(1_003));
        assert!(
            matches!(changes.as_slice(), [CaptureChange::Stop { index: 0, why }] if why.contains("max_frames"))
        );
        keeper.stopped(0, &Written::default(), "cut");
        keeper.tick(&BTreeMap::new(), &BTreeMap::new(), secs(1_004));
        let request = keeper
            .request(
                CaptureSubject::Source("10.3.0.0/16".parse().unwrap()),
                secs(10),
                secs(1_005),
            )
            .unwrap();
        let CaptureChange::Start(request) = request else {
            panic!("{request:?}");
        };
        assert_eq!((request.every, request.until), (1, Some(secs(1_015))));
        assert!(
            keeper
                .tick(&BTreeMap::new(), &BTreeMap::new(), secs(1_014))
                .is_empty()
        );
        let changes = keeper.tick(&BTreeMap::new(), &BTreeMap::new(), secs(1_015));
        assert!(
            matches!(changes.as_slice(), [CaptureChange::Stop { why, .. }] if why == "its time is up")
        );
    }
}
