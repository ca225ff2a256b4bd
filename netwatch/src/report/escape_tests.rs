//! What [`super::escape`] makes of what a sender can put in a packet.

use super::escape;

#[test]
fn controls_and_hidden_characters_are_shown_not_obeyed() {
    assert_eq!(escape("plain text, ünïcode ok"), "plain text, ünïcode ok");
    assert_eq!(
        escape("a\rINJ 2026 ALERT START critical fake"),
        "a\\x0dINJ 2026 ALERT START critical fake"
    );
    assert_eq!(
        escape("\x1b]0;owned\x07\x1b[2J"),
        "\\x1b]0;owned\\x07\\x1b[2J"
    );
    assert_eq!(escape("\n\x0b\x08\x7f"), "\\x0a\\x0b\\x08\\x7f");
    // C1 controls, as a UTF-8 sender writes them (CSI is U+009B).
    assert_eq!(escape("\u{9b}31m\u{85}"), "\\x9b31m\\x85");
    // Right-to-left override and a zero-width space.
    assert_eq!(escape("abc\u{202e}fed\u{200b}"), "abc\\u{202e}fed\\u{200b}");
    // A backslash doubles, so that an escape can never be forged.
    assert_eq!(escape("\\x1b"), "\\\\x1b");
}
