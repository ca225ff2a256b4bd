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

/// Bytes of a request target kept in an event; the rest is cut.
pub const MAX_PATH: usize = 2048;
/// Bytes of a `Host` kept (a DNS name is at most 253).
pub const MAX_HOST: usize = 255;
/// Bytes of a `User-Agent` kept.
pub const MAX_USER_AGENT: usize = 1024;
/// Bytes of the `Authorization` and `Content-Type` values kept.
const MAX_HEADER: usize = 8192;

/// An HTTP/1 request: its head, and the body as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// GET, POST, ...
    pub method: String,
    /// The request target, cut at [`MAX_PATH`] bytes.
    pub path: String,
    /// `Host`, cut at [`MAX_HOST`] bytes.
    pub host: Option<String>,
    /// `User-Agent`, cut at [`MAX_USER_AGENT`] bytes.
    pub user_agent: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body: after the head, up to `Content-Length` (chunks decoded) when it is all
    /// there, else as far as it goes.
    pub body: Vec<u8>,
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// True when `payload` starts with a request line's method and a space.
pub fn starts_request(payload: &[u8]) -> bool {
    METHODS.iter().any(|method| {
        payload
            .strip_prefix(method.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b' '))
    })
}

/// True when `payload` may be the start of a request: a request line's method and a space, or
/// the first bytes of one (a segment may end anywhere).
pub fn may_start_request(payload: &[u8]) -> bool {
    starts_request(payload)
        || METHODS.iter().any(|method| {
            let line = [method.as_bytes(), b" "].concat();
            !payload.is_empty() && line.starts_with(payload)
        })
}

/// `text` cut at `max` bytes, on a character boundary.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Parses a request head from the start of a payload; `None` if it does not start with one.
/// The body is what follows the head (chunks decoded as far as they go).
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
        path: bounded(path, MAX_PATH),
        host: None,
        user_agent: None,
        authorization: None,
        content_type: None,
        content_length: None,
        chunked: false,
        body: Vec::new(),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => request.host = Some(bounded(value, MAX_HOST)),
            "user-agent" => request.user_agent = Some(bounded(value, MAX_USER_AGENT)),
            "authorization" => request.authorization = Some(bounded(value, MAX_HEADER)),
            "content-type" => request.content_type = Some(bounded(value, MAX_HEADER)),
            "content-length" => request.content_length = value.parse().ok(),
            "transfer-encoding" => {
                request.chunked = value.to_ascii_lowercase().contains("chunked");
            }
            _ => {}
        }
    }
    if let Some((_, start)) = head_end {
        let rest = &payload[start..];
        request.body = if request.chunked {
            dechunk(rest).map_or_else(|partial| partial, |(body, _)| body)
        } else {
            let len = request.content_length.unwrap_or(rest.len()).min(rest.len());
            rest[..len].to_vec()
        };
    }
    Some(request)
}

/// Bytes of the head at the start of `payload`, its empty line included; `None` while the
/// empty line has not come.
pub fn head_len(payload: &[u8]) -> Option<usize> {
    find(payload, b"\r\n\r\n").map(|end| end + 4)
}

/// Where a request stands in the bytes gathered for it.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// The request, and the bytes it took (head and body).
    Complete(HttpRequest, usize),
    /// More bytes are needed.
    Incomplete,
    /// The bytes do not start with a request.
    NotHttp,
}

/// Whether `buffer` starts with a whole request: its head and, by `Content-Length` or
/// chunks, all of its body.
pub fn complete_request(buffer: &[u8]) -> Completion {
    if buffer.is_empty() {
        return Completion::Incomplete;
    }
    if !starts_request(buffer) {
        // A method cut in the middle may still become one.
        return if may_start_request(buffer) {
            Completion::Incomplete
        } else {
            Completion::NotHttp
        };
    }
    let Some(head_end) = find(buffer, b"\r\n\r\n") else {
        return Completion::Incomplete;
    };
    let start = head_end + 4;
    let Some(mut request) = http_request(&buffer[..start]) else {
        return Completion::NotHttp;
    };
    let rest = &buffer[start..];
    if request.chunked {
        return match dechunk(rest) {
            Ok((body, used)) => {
                request.body = body;
                Completion::Complete(request, start + used)
            }
            Err(_) => Completion::Incomplete,
        };
    }
    // No length: none for most methods; a form posted without one (not HTTP/1.1, but sent)
    // is taken as far as it came.
    let sends_body = matches!(request.method.as_str(), "POST" | "PUT" | "PATCH");
    let len = request
        .content_length
        .unwrap_or(if sends_body { rest.len() } else { 0 });
    if rest.len() < len {
        return Completion::Incomplete;
    }
    request.body = rest[..len].to_vec();
    Completion::Complete(request, start + len)
}

/// Decodes a chunked body (RFC 9112 §7.1): the body and the bytes it took, or, when the
/// last chunk is not there yet (or a chunk is malformed), the data as far as it goes.
fn dechunk(mut rest: &[u8]) -> Result<(Vec<u8>, usize), Vec<u8>> {
    let whole = rest.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Err(body);
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Err(body);
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailer fields, then an empty line.
            let Some(end) = find(rest, b"\r\n").and_then(|first| {
                if first == 0 {
                    Some(2)
                } else {
                    find(rest, b"\r\n\r\n").map(|end| end + 4)
                }
            }) else {
                return Err(body);
            };
            let used = whole - rest.len() + end;
            return Ok((body, used));
        }
        let Some(data) = rest.get(..size) else {
            body.extend_from_slice(rest);
            return Err(body);
        };
        body.extend_from_slice(data);
        rest = &rest[size..];
        match rest.get(..2) {
            Some(b"\r\n") => rest = &rest[2..],
            Some(_) => return Err(body),
            None => return Err(body),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The fields of a `multipart/form-data` body (RFC 7578) whose parts are values, not files:
/// (name, value) in order. `content_type` carries the boundary.
pub fn multipart_fields(content_type: &str, body: &[u8]) -> Vec<(String, String)> {
    let Some(boundary) = content_type.split(';').find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    }) else {
        return Vec::new();
    };
    // RFC 2046 §5.1.1: 1 to 70 characters. A longer one is no form a browser sends, and
    // would only make the search for it slow.
    if boundary.is_empty() || boundary.len() > 70 {
        return Vec::new();
    }
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]);
        let content = &rest[head_end + 4..];
        let end = find(content, delimiter.as_bytes()).unwrap_or(content.len());
        let value = content[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content[..end]);
        let disposition = head
            .split("\r\n")
            .find(|line| {
                line.to_ascii_lowercase()
                    .starts_with("content-disposition:")
            })
            .unwrap_or("");
        let params: Vec<(String, String)> = disposition
            .split(';')
            .filter_map(|param| {
                let (name, value) = param.trim().split_once('=')?;
                Some((
                    name.trim().to_ascii_lowercase(),
                    value.trim().trim_matches('"').to_owned(),
                ))
            })
            .collect();
        let is_file = params.iter().any(|(name, _)| name == "filename");
        if let Some((_, name)) = params.iter().find(|(name, _)| name == "name")
            && !is_file
        {
            fields.push((name.clone(), String::from_utf8_lossy(value).into_owned()));
        }
        rest = &content[end..];
    }
    fields
}

/// How deep [`json_credentials`] looks into nested objects and arrays.
const JSON_DEPTH: usize = 8;

/// A user name and password in a JSON body: the first object (depth first, at most
/// [`JSON_DEPTH`] levels down) with a password field whose value is a string, with the user
/// field of that object or, failing that, of the nearest object around it.
pub fn json_credentials(body: &[u8]) -> Option<(Option<String>, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    fn walk(
        value: &serde_json::Value,
        depth: usize,
        outer_user: Option<&str>,
    ) -> Option<(Option<String>, String)> {
        if depth > JSON_DEPTH {
            return None;
        }
        match value {
            serde_json::Value::Object(fields) => {
                let user = fields
                    .iter()
                    .find(|(name, value)| is_user_field(name) && value.is_string())
                    .and_then(|(_, value)| value.as_str())
                    .or(outer_user);
                if let Some(password) = fields
                    .iter()
                    .find(|(name, value)| is_password_field(name) && value.is_string())
                    .and_then(|(_, value)| value.as_str())
                {
                    return Some((user.map(str::to_owned), password.to_owned()));
                }
                fields
                    .values()
                    .find_map(|inner| walk(inner, depth + 1, user))
            }
            serde_json::Value::Array(items) => items
                .iter()
                .find_map(|inner| walk(inner, depth + 1, outer_user)),
            _ => None,
        }
    }
    walk(&value, 0, None)
}

/// The parameters of an `Authorization: Digest ...` value (RFC 7616 §3.4), names in lower
/// case, quotes taken off.
pub fn digest_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut end = quoted.len();
            let mut chars = quoted.char_indices();
            while let Some((index, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = index + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((name, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

/// A request target with the values of its query's password fields replaced by `redacted`,
/// and the user and password the query carried, if it carried a password.
pub fn query_credentials(path: &str, redacted: &str) -> (String, Option<(Option<String>, String)>) {
    let Some((base, query)) = path.split_once('?') else {
        return (path.to_owned(), None);
    };
    let fields = form_fields(query.as_bytes());
    let Some((_, password)) = fields.iter().find(|(name, _)| is_password_field(name)) else {
        return (path.to_owned(), None);
    };
    let user = fields
        .iter()
        .find(|(name, _)| is_user_field(name))
        .map(|(_, value)| value.clone());
    let shown = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_password_field(&url_decode(name)) => format!("{name}={redacted}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    (format!("{base}?{shown}"), Some((user, password.clone())))
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
