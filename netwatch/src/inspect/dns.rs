//! DNS messages (RFC 1035 §4): the header, the first question and the names an answer's
//! CNAME records point to, enough to name what was asked and how it was answered. Bounded
//! and panic-free on any input.

/// The part of a DNS message netwatch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    /// QR bit: an answer.
    pub response: bool,
    /// RCODE (answers).
    pub rcode: u8,
    /// The first question's name, dotted, without the final dot; `.` for the root.
    pub name: String,
    /// The first question's type.
    pub qtype: u16,
    /// The targets of the answer section's CNAME records, in order (answers only; at most
    /// [`MAX_ANSWERS`] records are read).
    pub cnames: Vec<String>,
}

/// Answer records read at most.
pub const MAX_ANSWERS: usize = 32;
/// The CNAME record type.
const TYPE_CNAME: u16 = 5;

/// Labels followed before a name is declared malformed (a name has at most 127).
const MAX_LABELS: usize = 128;
/// Compression pointers followed (RFC 1035 §4.1.4); loops end here.
const MAX_POINTERS: usize = 16;

/// Parses a message; `None` unless it has a header and a whole first question.
pub fn parse(message: &[u8]) -> Option<DnsMessage> {
    let header = message.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let questions = u16::from_be_bytes([header[4], header[5]]);
    // Standard queries and their answers only (opcode 0).
    if questions == 0 || (flags >> 11) & 0x0f != 0 {
        return None;
    }
    let (name, end) = read_name(message, 12)?;
    let qtype = message.get(end..end + 2)?;
    let response = flags & 0x8000 != 0;
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let cnames = if response && answers > 0 {
        cname_targets(message, end + 4, questions - 1, answers)
    } else {
        Vec::new()
    };
    Some(DnsMessage {
        response,
        rcode: (flags & 0x0f) as u8,
        name,
        qtype: u16::from_be_bytes([qtype[0], qtype[1]]),
        cnames,
    })
}

/// The CNAME targets of the answer section, which starts after `questions` more questions
/// from `offset`; as many as can be read whole (a cut or odd record ends the walk).
fn cname_targets(message: &[u8], offset: usize, questions: u16, answers: u16) -> Vec<String> {
    let mut targets = Vec::new();
    if usize::from(questions) > MAX_ANSWERS {
        // Not walked: the answers would be looked for inside the questions.
        return targets;
    }
    let mut position = offset;
    for _ in 0..questions {
        let Some((_, end)) = read_name(message, position) else {
            return targets;
        };
        position = end + 4;
    }
    for _ in 0..usize::from(answers).min(MAX_ANSWERS) {
        let Some((_, end)) = read_name(message, position) else {
            break;
        };
        let Some(fixed) = message.get(end..end + 10) else {
            break;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = end + 10;
        if message.len() < rdata + rdlength {
            break;
        }
        // The target's own bytes within the record (a pointer may lead elsewhere).
        if rtype == TYPE_CNAME
            && let Some((target, end)) = read_name(message, rdata)
            && end <= rdata + rdlength
        {
            targets.push(target);
        }
        position = rdata + rdlength;
    }
    targets
}

/// Reads the name at `offset`; returns it and the offset just past it (past the first
/// pointer, when compressed).
fn read_name(message: &[u8], offset: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut position = offset;
    let mut end = None;
    let mut pointers = 0;
    let mut length = 0usize;
    loop {
        let byte = *message.get(position)?;
        match byte >> 6 {
            0b00 => {
                let len = usize::from(byte);
                if len == 0 {
                    break;
                }
                let label = message.get(position + 1..position + 1 + len)?;
                length += len + 1;
                if length > 255 || labels.len() >= MAX_LABELS {
                    return None;
                }
                labels.push(label_text(label));
                position += 1 + len;
            }
            0b11 => {
                let low = *message.get(position + 1)?;
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return None;
                }
                end.get_or_insert(position + 2);
                position = usize::from(u16::from_be_bytes([byte & 0x3f, low]));
            }
            _ => return None,
        }
    }
    let end = end.unwrap_or(position + 1);
    let name = if labels.is_empty() {
        String::from(".")
    } else {
        labels.join(".")
    };
    Some((name, end))
}

/// A label as text, with bytes outside printable ASCII (and dots) escaped as `\DDD`, as
/// dig prints them.
fn label_text(label: &[u8]) -> String {
    let mut text = String::with_capacity(label.len());
    for &byte in label {
        if byte.is_ascii_graphic() && byte != b'.' && byte != b'\\' {
            text.push(char::from(byte));
        } else {
            text.push_str(&format!("\\{byte:03}"));
        }
    }
    text
}

/// The usual name of a query type.
pub fn type_name(qtype: u16) -> String {
    let name = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        46 => "RRSIG",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        252 => "AXFR",
        255 => "ANY",
        other => return format!("TYPE{other}"),
    };
    name.to_owned()
}

/// The usual name of a response code.
pub fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        other => return format!("RCODE{other}"),
    };
    name.to_owned()
}

/// Shannon entropy of a label, in bits per character.
pub fn entropy(label: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in label.bytes() {
        counts[usize::from(byte)] += 1;
    }
    let len = label.len() as f64;
    if len == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|count| **count > 0)
        .map(|count| {
            let p = f64::from(*count) / len;
            -p * p.log2()
        })
        .sum()
}

/// The registered domain a name is under, taken as its last two labels (no public suffix
/// list: `example.co.uk` counts as `co.uk`).
pub fn base_domain(name: &str) -> &str {
    let mut dots = name.rmatch_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((index, _))) => &name[index + 1..],
        _ => name,
    }
}

/// A standard query for `name` of type `qtype`, class IN, as a client would send it.
#[cfg(test)]
pub(crate) fn encode_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_query() {
        let parsed = parse(&encode_query("www.example.com", 28)).unwrap();
        assert_eq!(parsed.name, "www.example.com");
        assert_eq!(type_name(parsed.qtype), "AAAA");
        assert!(!parsed.response);
    }

    #[test]
    fn reads_an_answer_code() {
        let mut message = encode_query("nope.example", 1);
        message[2] = 0x81;
        message[3] = 0x83;
        let parsed = parse(&message).unwrap();
        assert!(parsed.response);
        assert_eq!(rcode_name(parsed.rcode), "NXDOMAIN");
    }

    #[test]
    fn follows_pointers_but_not_loops() {
        let mut message = encode_query("a.example", 1);
        // A second name: a pointer to itself.
        let at = message.len() as u16;
        message.extend_from_slice(&(0xc000 | at).to_be_bytes());
        assert_eq!(read_name(&message, usize::from(at)), None);
        // A pointer to the first name.
        let mut message = vec![0u8; 12];
        message[5] = 1;
        message.extend_from_slice(&[0xc0, 16, 0, 1, 1, b'x', 0]);
        assert_eq!(parse(&message).unwrap().name, "x");
    }

    /// A response whose answer is a CNAME chain then an address.
    pub(crate) fn cname_answer(question: &str, target: &str) -> Vec<u8> {
        let mut message = encode_query(question, 1);
        message[2] = 0x81;
        message[3] = 0x80;
        message[7] = 2;
        // The CNAME: its owner a pointer to the question's name, its target written whole.
        message.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60]);
        let mut rdata = Vec::new();
        for label in target.split('.') {
            rdata.push(label.len() as u8);
            rdata.extend_from_slice(label.as_bytes());
        }
        rdata.push(0);
        let target_at = message.len() + 2;
        message.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        message.extend_from_slice(&rdata);
        // The A record of the target, its owner a pointer to the CNAME's target.
        message.extend_from_slice(&(0xc000 | target_at as u16).to_be_bytes());
        message.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        message
    }

    /// An answer's CNAME targets are read, pointers and all; a message cut anywhere in its
    /// answers gives the records read whole before the cut, and never panics.
    #[test]
    fn reads_cname_targets_and_stops_at_a_cut() {
        let message = cname_answer("www.shop.example", "edge.cdn.evil.example");
        let parsed = parse(&message).unwrap();
        assert_eq!(parsed.name, "www.shop.example");
        assert_eq!(parsed.cnames, ["edge.cdn.evil.example"]);
        let question_end = encode_query("www.shop.example", 1).len();
        let cname_end = message.len() - 16;
        for len in question_end..message.len() {
            let cut = parse(&message[..len]).unwrap();
            let expected: &[&str] = if len >= cname_end {
                &["edge.cdn.evil.example"]
            } else {
                &[]
            };
            assert_eq!(cut.cnames, expected, "cut at {len}");
        }
        // A CNAME whose rdata is shorter than its target: the target is not read.
        let mut short = message.clone();
        let at = encode_query("www.shop.example", 1).len() + 10;
        short[at + 1] -= 1;
        assert!(parse(&short).unwrap().cnames.is_empty());
        // A query carries none, whatever follows it.
        let mut query = message.clone();
        query[2] = 0x01;
        assert!(parse(&query).unwrap().cnames.is_empty());
    }

    #[test]
    fn truncated_messages_are_refused() {
        let message = encode_query("www.example.com", 1);
        for len in 0..message.len() - 4 {
            assert_eq!(parse(&message[..len]), None, "{len}");
        }
    }

    #[test]
    fn odd_bytes_are_escaped() {
        let mut message = encode_query("ab.c", 1);
        message[13] = b'.';
        assert_eq!(parse(&message).unwrap().name, "\\046b.c");
    }

    #[test]
    fn entropy_and_base_domain() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
        assert_eq!(base_domain("a.b.example.com"), "example.com");
        assert_eq!(base_domain("localhost"), "localhost");
    }
}
