//! Text made safe for a terminal or a log line: every wire-derived string, and everything
//! else an outsider writes (a notify script's stderr, a refused configuration's bytes), goes
//! through [`escape`] before it is printed. The ground floor: it uses nothing of netwatch.

/// `text` safe to print on a terminal: control characters (C0, DEL, C1: ESC, BEL, CR, LF,
/// CSI, ...) and the invisible characters that reorder or hide text (bidirectional overrides
/// and isolates, zero-width marks) become `\xNN` or `\u{NNNN}`, and a backslash becomes two,
/// so that nothing a sender puts in a packet can move the cursor, retitle the terminal or
/// forge a line. Every wire-derived field of every text output goes through it; JSON has its
/// own escaping.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    escape_with(text, true)
}

/// `text` that an earlier step has escaped already (a daemon's answer, say), made safe to
/// print without escaping its escapes again: control and invisible characters are escaped as
/// [`escape`] does, backslashes are left as they are. What was escaped once stays escaped
/// once; a raw control character that slipped through is still caught.
pub fn escape_escaped(text: &str) -> std::borrow::Cow<'_, str> {
    escape_with(text, false)
}

/// [`escape`], doubling backslashes or not.
fn escape_with(text: &str, backslashes: bool) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
    let unsafe_char = |c: char| c.is_control() || (backslashes && c == '\\') || hidden(c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' if backslashes => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if hidden(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_is_not_escaped_again_and_raw_controls_still_are() {
        let once = escape("a\u{1b}[2Jb\\c");
        assert_eq!(once, "a\\x1b[2Jb\\\\c");
        assert_eq!(escape_escaped(&once), once);
        assert_eq!(escape_escaped("x\u{7}y"), "x\\x07y");
        assert_eq!(escape_escaped("plain"), "plain");
    }
}
