//! The cleartext protocols: FTP, POP3, IMAP, SMTP (RFC 959, 1939, 9051, 4954), Telnet (RFC
//! 854) and HTTP/1 requests (RFC 9112), read from the client's side of a flow (and, for
//! Telnet, the server's prompts). Every parser takes any bytes and never panics.

/// Lines of a client payload (CRLF or LF), as text; stops at the first line that is not text.
pub fn lines(payload: &[u8]) -> impl Iterator<Item = &str> {
    payload
        .split(|byte| *byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .map_while(|line| std::str::from_utf8(line).ok())
        .filter(|line| !line.is_empty())
}

/// The command word (upper-cased) and the rest of a line.
pub fn command(line: &str) -> (String, &str) {
    let line = line.trim_start();
    match line.split_once(' ') {
        Some((word, rest)) => (word.to_ascii_uppercase(), rest.trim()),
        None => (line.to_ascii_uppercase(), ""),
    }
}

/// Standard base64 (RFC 4648 §4), padding optional; `None` on any other byte.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// An IMAP astring (RFC 9051 §9): an atom or a quoted string; returns it and the rest.
pub fn imap_astring(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => return Some((value, &quoted[index + 1..])),
                c => value.push(c),
            }
        }
        None
    } else {
        let end = text.find(' ').unwrap_or(text.len());
        (end > 0).then(|| (text[..end].to_owned(), &text[end..]))
    }
}

/// SASL PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
pub fn sasl_plain(decoded: &[u8]) -> Option<(String, String)> {
    let mut parts = decoded.split(|byte| *byte == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8_lossy(parts.next()?).into_owned();
    let password = String::from_utf8_lossy(parts.next()?).into_owned();
    Some((user, password))
}

/// An HTTP/1 request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// GET, POST, ...
    pub method: String,
    /// The request target.
    pub path: String,
    /// `Host`.
    pub host: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// What follows the head in this sample (possibly cut).
    pub body: Vec<u8>,
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// Parses a request head from the start of a payload; `None` if it does not start with one.
pub fn http_request(payload: &[u8]) -> Option<HttpRequest> {
    let head_end = find(payload, b"\r\n\r\n").map(|i| (i, i + 4));
    let head = match head_end {
        Some((end, _)) => &payload[..end],
        None => payload,
    };
    let mut lines = head
        .split(|byte| *byte == b'\n')
        .map(|line| String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned());
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let version = parts.next()?;
    if !METHODS.contains(&method.as_str()) || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut request = HttpRequest {
        method,
        path,
        host: None,
        user_agent: None,
        authorization: None,
        content_type: None,
        body: head_end.map_or_else(Vec::new, |(_, start)| payload[start..].to_vec()),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_owned());
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => request.host = value,
            "user-agent" => request.user_agent = value,
            "authorization" => request.authorization = value,
            "content-type" => request.content_type = value,
            _ => {}
        }
    }
    Some(request)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `application/x-www-form-urlencoded` fields, decoded.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((url_decode(name), url_decode(value)))
        })
        .collect()
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form field names that carry a password.
pub fn is_password_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "password" | "passwd" | "pass" | "pwd" | "passwort" | "pw" | "secret" | "passphrase"
    ) || name.ends_with("password")
        || name.ends_with("[password]")
}

/// Form field names that carry a user name.
pub fn is_user_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "user" | "username" | "user_name" | "login" | "email" | "mail" | "uid" | "userid" | "log"
    ) || name.ends_with("[username]")
        || name.ends_with("[email]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("AGJvYgBzM2NyM3Q=").unwrap(), b"\0bob\0s3cr3t");
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn imap_strings() {
        assert_eq!(
            imap_astring(r#""bob \"b\"" rest"#),
            Some((String::from("bob \"b\""), " rest"))
        );
        assert_eq!(
            imap_astring("alice secret"),
            Some((String::from("alice"), " secret"))
        );
        assert_eq!(imap_astring("\"open"), None);
    }

    #[test]
    fn http_heads() {
        let request = http_request(
            b"POST /login HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nuser=bob&password=s%21cret",
        )
        .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/login");
        assert_eq!(request.host.as_deref(), Some("example.com"));
        assert_eq!(request.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(
            form_fields(&request.body),
            vec![
                ("user".to_owned(), "bob".to_owned()),
                ("password".to_owned(), "s!cret".to_owned())
            ]
        );
        assert_eq!(http_request(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(http_request(b"GET /"), None);
    }
}

/// Telnet's "interpret as command" byte (RFC 854).
const IAC: u8 = 255;
/// Start and end of a Telnet subnegotiation (RFC 855).
const SB: u8 = 250;
const SE: u8 = 240;
/// WILL, WONT, DO, DONT: each takes one option byte.
const WILL: u8 = 251;
const DONT: u8 = 254;

/// The data bytes of a Telnet segment: commands (IAC ...), option negotiations and
/// subnegotiations taken out, IAC IAC read as one 255 byte.
pub fn telnet_data(payload: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(payload.len());
    let mut bytes = payload.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte != IAC {
            data.push(byte);
            continue;
        }
        match bytes.next() {
            Some(IAC) => data.push(IAC),
            Some(WILL..=DONT) => {
                bytes.next();
            }
            Some(SB) => {
                // Up to IAC SE (or the end of the sample).
                let mut last = 0;
                for byte in bytes.by_ref() {
                    if last == IAC && byte == SE {
                        break;
                    }
                    last = byte;
                }
            }
            _ => {}
        }
    }
    data
}

/// What a Telnet server's text asks for last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelnetPrompt {
    /// `login:` or `Username:`.
    User,
    /// `Password:`.
    Password,
}

/// The prompt a Telnet server's text ends with, if any.
pub fn telnet_prompt(data: &[u8]) -> Option<TelnetPrompt> {
    let text = String::from_utf8_lossy(data)
        .trim_end()
        .to_ascii_lowercase();
    if text.ends_with("password:") {
        Some(TelnetPrompt::Password)
    } else if text.ends_with("login:") || text.ends_with("username:") {
        Some(TelnetPrompt::User)
    } else {
        None
    }
}
