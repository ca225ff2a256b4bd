//! The keyword matcher: off by default, once per flow and keyword when on.

use super::{events, inspector, to_server};
use crate::inspect::{
    config::{InspectConfig, KeywordConfig},
    event::EventKind,
    inspector::Inspector,
};

#[test]
fn keywords_are_off_by_default_and_once_per_flow_when_on() {
    let frame = to_server(4444, b"login: user\r\npassword: x\r\n");
    assert!(events(&mut inspector(), std::slice::from_ref(&frame)).is_empty());
    let mut inspector = Inspector::new(
        InspectConfig {
            keywords: KeywordConfig {
                enabled: true,
                words: vec!["user".into(), "PASS".into()],
            },
            ..InspectConfig::default()
        },
        "t".into(),
    );
    let found = events(&mut inspector, &[frame.clone(), frame]);
    assert_eq!(
        found,
        vec![
            EventKind::Keyword {
                keyword: "user".into()
            },
            EventKind::Keyword {
                keyword: "PASS".into()
            },
        ]
    );
}
