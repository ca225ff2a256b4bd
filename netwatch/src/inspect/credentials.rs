//! The credential decoders: cleartext logins read from the client's lines, flow by flow,
//! across samples. FTP and POP3 (USER/PASS, APOP), Telnet (the lines typed after the server's
//! prompts), IMAP (LOGIN, AUTHENTICATE PLAIN), SMTP (AUTH PLAIN, AUTH LOGIN), and an HTTP
//! request's event with the credentials it carries (query string, Basic, Bearer, Digest, form,
//! multipart and JSON bodies). Owns the redaction of secrets.
//!
//! It moves a flow from state to state and must not keep the table of flows itself (the
//! inspector does, bounded), nor decode a frame, nor parse a protocol's syntax (`text` does).

use super::{
    event::EventKind,
    flow::{FlowKey, FlowState},
    inspector::Inspector,
    text,
};

/// Characters of a Telnet user name or password kept at most: a line longer than this is
/// not a login.
const TELNET_LINE_MAX: usize = 256;

const REDACTED: &str = "<redacted>";

impl Inspector {
    fn secret(&self, secret: &str) -> String {
        if self.config.show_secrets {
            secret.to_owned()
        } else {
            REDACTED.to_owned()
        }
    }

    /// FTP and POP3: USER then PASS.
    pub(super) fn user_pass(
        &mut self,
        key: FlowKey,
        port: u16,
        payload: &[u8],
        found: &mut Vec<EventKind>,
    ) {
        let protocol = if port == 21 { "ftp" } else { "pop3" };
        for line in text::lines(payload) {
            let (word, rest) = text::command(line);
            match word.as_str() {
                "USER" if !rest.is_empty() => {
                    self.set_flow(key, FlowState::UserSent(rest.to_owned()))
                }
                "PASS" => {
                    let user = match self.flow(key) {
                        FlowState::UserSent(user) => Some(user),
                        _ => None,
                    };
                    // FTP's anonymous login sends an e-mail address as a courtesy, not a secret.
                    if port == 21 && user.as_deref().is_some_and(is_anonymous) {
                        self.set_flow(key, FlowState::Idle);
                        continue;
                    }
                    found.push(EventKind::Credential {
                        protocol,
                        mechanism: "USER/PASS",
                        user,
                        secret: self.secret(rest),
                    });
                    self.set_flow(key, FlowState::Idle);
                }
                "APOP" if port == 110 => {
                    if let Some((user, digest)) = rest.split_once(' ') {
                        found.push(EventKind::Credential {
                            protocol,
                            mechanism: "APOP",
                            user: Some(user.to_owned()),
                            secret: self.secret(digest.trim()),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Telnet (RFC 854): a login is the line the client types after the server's `login:`
    /// prompt, then the line after `Password:`. Clients send a keystroke or a line per
    /// segment; the line is gathered across samples (backspace and delete edit it), Telnet
    /// commands taken out.
    pub(super) fn telnet(
        &mut self,
        key: FlowKey,
        from_client: bool,
        payload: &[u8],
        found: &mut Vec<EventKind>,
    ) {
        let data = text::telnet_data(payload);
        if !from_client {
            match text::telnet_prompt(&data) {
                Some(text::TelnetPrompt::User) => {
                    self.set_flow(key, FlowState::TelnetUser(String::new()));
                }
                Some(text::TelnetPrompt::Password) => {
                    let user = match self.flow(key) {
                        FlowState::TelnetUserTyped(user) => Some(user),
                        _ => None,
                    };
                    self.set_flow(key, FlowState::TelnetPassword(user, String::new()));
                }
                None => {}
            }
            return;
        }
        for byte in data {
            let (mut typed, password_for) = match self.flow(key) {
                FlowState::TelnetUser(typed) => (typed, None),
                FlowState::TelnetPassword(user, typed) => (typed, Some(user)),
                // Not at a prompt: nothing typed here is a login.
                _ => return,
            };
            match byte {
                b'\r' | b'\n' if typed.is_empty() => continue,
                b'\r' | b'\n' => {
                    match password_for {
                        None => self.set_flow(key, FlowState::TelnetUserTyped(typed)),
                        Some(user) => {
                            found.push(EventKind::Credential {
                                protocol: "telnet",
                                mechanism: "login",
                                user,
                                secret: self.secret(&typed),
                            });
                            self.set_flow(key, FlowState::Idle);
                        }
                    }
                    continue;
                }
                // Backspace and delete.
                0x08 | 0x7f => {
                    typed.pop();
                }
                0 => continue,
                _ if typed.len() >= TELNET_LINE_MAX => {
                    self.set_flow(key, FlowState::Idle);
                    return;
                }
                _ => typed.push(char::from(byte)),
            }
            let state = match password_for {
                None => FlowState::TelnetUser(typed),
                Some(user) => FlowState::TelnetPassword(user, typed),
            };
            self.set_flow(key, state);
        }
    }

    /// IMAP: `tag LOGIN user pass`, `tag AUTHENTICATE PLAIN [initial]`.
    pub(super) fn imap(&mut self, key: FlowKey, payload: &[u8], found: &mut Vec<EventKind>) {
        for line in text::lines(payload) {
            if matches!(self.flow(key), FlowState::PlainPending) {
                self.sasl_plain_line(key, "imap", line, found);
                continue;
            }
            let Some((_tag, rest)) = line.split_once(' ') else {
                continue;
            };
            let (word, args) = text::command(rest);
            match word.as_str() {
                "LOGIN" => {
                    if let Some((user, rest)) = text::imap_astring(args)
                        && let Some((password, _)) = text::imap_astring(rest)
                    {
                        found.push(EventKind::Credential {
                            protocol: "imap",
                            mechanism: "LOGIN",
                            user: Some(user),
                            secret: self.secret(&password),
                        });
                    }
                }
                "AUTHENTICATE" => {
                    let (mechanism, initial) = text::command(args);
                    if mechanism == "PLAIN" {
                        if initial.is_empty() {
                            self.set_flow(key, FlowState::PlainPending);
                        } else {
                            self.sasl_plain_line(key, "imap", initial, found);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// SMTP: AUTH PLAIN and AUTH LOGIN (RFC 4954), over one or several client lines.
    pub(super) fn smtp(&mut self, key: FlowKey, payload: &[u8], found: &mut Vec<EventKind>) {
        for line in text::lines(payload) {
            match self.flow(key) {
                FlowState::PlainPending => {
                    self.sasl_plain_line(key, "smtp", line, found);
                    continue;
                }
                FlowState::LoginUserPending => {
                    let user = text::base64_decode(line)
                        .map(|user| String::from_utf8_lossy(&user).into_owned());
                    match user {
                        Some(user) => self.set_flow(key, FlowState::LoginPasswordPending(user)),
                        None => self.set_flow(key, FlowState::Idle),
                    }
                    continue;
                }
                FlowState::LoginPasswordPending(user) => {
                    if let Some(password) = text::base64_decode(line) {
                        found.push(EventKind::Credential {
                            protocol: "smtp",
                            mechanism: "AUTH LOGIN",
                            user: Some(user),
                            secret: self.secret(&String::from_utf8_lossy(&password)),
                        });
                    }
                    self.set_flow(key, FlowState::Idle);
                    continue;
                }
                _ => {}
            }
            let (word, rest) = text::command(line);
            if word != "AUTH" {
                continue;
            }
            let (mechanism, initial) = text::command(rest);
            match (mechanism.as_str(), initial.is_empty()) {
                ("PLAIN", true) => self.set_flow(key, FlowState::PlainPending),
                ("PLAIN", false) => self.sasl_plain_line(key, "smtp", initial, found),
                ("LOGIN", true) => self.set_flow(key, FlowState::LoginUserPending),
                ("LOGIN", false) => {
                    let user = text::base64_decode(initial)
                        .map(|user| String::from_utf8_lossy(&user).into_owned());
                    if let Some(user) = user {
                        self.set_flow(key, FlowState::LoginPasswordPending(user));
                    }
                }
                _ => {}
            }
        }
    }

    fn sasl_plain_line(
        &mut self,
        key: FlowKey,
        protocol: &'static str,
        line: &str,
        found: &mut Vec<EventKind>,
    ) {
        self.set_flow(key, FlowState::Idle);
        if let Some((user, password)) = text::base64_decode(line)
            .as_deref()
            .and_then(text::sasl_plain)
        {
            found.push(EventKind::Credential {
                protocol,
                mechanism: "AUTH PLAIN",
                user: Some(user),
                secret: self.secret(&password),
            });
        }
    }

    pub(super) fn http(&self, request: &text::HttpRequest, found: &mut Vec<EventKind>) {
        // A password in the query string (`GET /login?user=ivan&password=...`) is redacted
        // in the path as anywhere else, and reported as a credential.
        let (redacted_path, in_query) = text::query_credentials(&request.path, REDACTED);
        let path = if self.config.show_secrets {
            request.path.clone()
        } else {
            redacted_path
        };
        found.push(EventKind::Http {
            method: request.method.clone(),
            host: request.host.clone(),
            path,
            user_agent: request.user_agent.clone(),
        });
        let credential = |mechanism, user: Option<String>, secret: &str| EventKind::Credential {
            protocol: "http",
            mechanism,
            user,
            secret: self.secret(secret),
        };
        if let Some((user, password)) = in_query {
            found.push(credential("query", user, &password));
        }
        if let Some(authorization) = request.authorization.as_deref() {
            let (scheme, value) = authorization.split_once(' ').unwrap_or((authorization, ""));
            match scheme.to_ascii_lowercase().as_str() {
                "basic" => {
                    if let Some(decoded) = text::base64_decode(value) {
                        let decoded = String::from_utf8_lossy(&decoded).into_owned();
                        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
                        found.push(credential("Basic", Some(user.to_owned()), password));
                    }
                }
                // A token, not a password: whoever holds it is the user.
                "bearer" if !value.trim().is_empty() => {
                    found.push(credential("Bearer", None, value.trim()));
                }
                // A challenge response (RFC 7616): not the password, but what replays or
                // cracks it.
                "digest" => {
                    let params = text::digest_params(value);
                    let param = |wanted: &str| {
                        params
                            .iter()
                            .find(|(name, _)| name == wanted)
                            .map(|(_, value)| value.clone())
                    };
                    if let Some(response) = param("response") {
                        found.push(credential("Digest", param("username"), &response));
                    }
                }
                _ => {}
            }
        }
        let content_type = request
            .content_type
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let fields = if content_type.starts_with("application/x-www-form-urlencoded") {
            Some(("form", text::form_fields(&request.body)))
        } else if content_type.starts_with("multipart/form-data") {
            let original = request.content_type.as_deref().unwrap_or("");
            Some(("multipart", text::multipart_fields(original, &request.body)))
        } else {
            None
        };
        if let Some((mechanism, fields)) = fields {
            let user = fields
                .iter()
                .find(|(name, _)| text::is_user_field(name))
                .map(|(_, value)| value.clone());
            if let Some((_, password)) = fields
                .iter()
                .find(|(name, _)| text::is_password_field(name))
            {
                found.push(credential(mechanism, user, password));
            }
        } else if (content_type.contains("json") || request.body.first() == Some(&b'{'))
            && let Some((user, password)) = text::json_credentials(&request.body)
        {
            found.push(credential("json", user, &password));
        }
    }
}

fn is_anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}
