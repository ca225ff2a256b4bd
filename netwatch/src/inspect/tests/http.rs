//! HTTP requests and the credentials they carry: Basic, Bearer and Digest authorization,
//! forms, query strings, requests gathered across segments or cut at their bounds.

use std::time::Duration;

use super::{T, credential, events, inspector, login_request, showing_secrets, to_server};
use crate::inspect::{event::EventKind, text};

#[test]
fn http_requests_basic_auth_and_forms() {
    let mut inspector = inspector();
    let get = to_server(
        80,
        b"GET /admin HTTP/1.1\r\nHost: router.lan\r\nUser-Agent: curl/8.5\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n",
    );
    let login = to_server(
        8080,
        b"POST /login HTTP/1.1\r\nHost: app\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nusername=eve&passwd=letmein",
    );
    let comment = to_server(
        80,
        b"POST /comment HTTP/1.1\r\nHost: blog\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nname=eve&comment=hello",
    );
    let found = events(&mut inspector, &[get, login, comment]);
    assert_eq!(
        found,
        vec![
            EventKind::Http {
                method: "GET".into(),
                host: Some("router.lan".into()),
                path: "/admin".into(),
                user_agent: Some("curl/8.5".into()),
            },
            credential("http", "Basic", "admin", "<redacted>"),
            EventKind::Http {
                method: "POST".into(),
                host: Some("app".into()),
                path: "/login".into(),
                user_agent: None,
            },
            credential("http", "form", "eve", "<redacted>"),
            EventKind::Http {
                method: "POST".into(),
                host: Some("blog".into()),
                path: "/comment".into(),
                user_agent: None,
            },
        ]
    );
}

#[test]
fn a_browser_login_in_one_segment_gives_its_credential_and_whole_user_agent() {
    for (kind, mechanism) in [(0, "form"), (1, "multipart"), (2, "json")] {
        let mut inspector = showing_secrets();
        let request = login_request(kind);
        let found = events(&mut inspector, &[to_server(80, &request)]);
        assert_eq!(found.len(), 2, "{found:?}");
        let EventKind::Http { user_agent, .. } = &found[0] else {
            panic!("{found:?}");
        };
        assert!(
            user_agent
                .as_deref()
                .is_some_and(|ua| ua.ends_with("Safari/537.36")),
            "{user_agent:?}"
        );
        assert_eq!(
            found[1],
            credential("http", mechanism, "alice@example.com", "p@ss w0rd&="),
            "{mechanism}"
        );
    }
}

#[test]
fn bearer_tokens_and_digest_responses_are_credentials() {
    let mut inspector = inspector();
    let bearer = to_server(
        80,
        b"GET /api/me HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig\r\n\r\n",
    );
    let digest = to_server(
        80,
        b"GET /dir/index.html HTTP/1.1\r\nHost: localhost\r\nAuthorization: Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"\r\n\r\n",
    );
    let found = events(&mut inspector, &[bearer, digest]);
    let credentials: Vec<&EventKind> = found
        .iter()
        .filter(|kind| matches!(kind, EventKind::Credential { .. }))
        .collect();
    assert_eq!(
        credentials,
        [
            &EventKind::Credential {
                protocol: "http",
                mechanism: "Bearer",
                user: None,
                secret: "<redacted>".into(),
            },
            &credential("http", "Digest", "Mufasa", "<redacted>"),
        ]
    );
    let mut showing = showing_secrets();
    let digest = to_server(
        80,
        b"GET / HTTP/1.1\r\nAuthorization: Digest username=\"a\\\"b\", response=\"abc123\"\r\n\r\n",
    );
    assert_eq!(
        events(&mut showing, &[digest])[1],
        credential("http", "Digest", "a\"b", "abc123")
    );
}

#[test]
fn a_body_that_never_comes_is_reported_at_the_timeout_without_a_credential() {
    let mut inspector = inspector();
    let head = to_server(
        80,
        b"POST /login HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\n",
    );
    assert!(
        events(&mut inspector, &[head]).is_empty(),
        "waits for the body"
    );
    assert!(
        inspector
            .expire(T + Duration::from_secs(5), false)
            .is_empty()
    );
    let late = inspector.expire(T + Duration::from_secs(10), false);
    assert_eq!(late.len(), 1);
    assert!(matches!(late[0].kind, EventKind::Http { .. }));
}

#[test]
fn http_fields_are_cut_at_their_documented_bounds() {
    let mut inspector = inspector();
    let path = "/".repeat(5000);
    let agent = "A".repeat(3000);
    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\nUser-Agent: {agent}\r\n\r\n");
    let found = events(&mut inspector, &[to_server(80, request.as_bytes())]);
    let EventKind::Http {
        path, user_agent, ..
    } = &found[0]
    else {
        panic!("{found:?}");
    };
    assert_eq!(path.len(), text::MAX_PATH);
    assert_eq!(
        user_agent.as_deref().map(str::len),
        Some(text::MAX_USER_AGENT)
    );
}

#[test]
fn a_password_in_a_query_string_is_redacted_and_reported() {
    let request = to_server(
        80,
        b"GET /login?user=ivan&password=hunter2&next=%2F HTTP/1.1\r\nHost: app\r\n\r\n",
    );
    let found = events(&mut inspector(), std::slice::from_ref(&request));
    assert_eq!(
        found,
        vec![
            EventKind::Http {
                method: "GET".into(),
                host: Some("app".into()),
                path: "/login?user=ivan&password=<redacted>&next=%2F".into(),
                user_agent: None,
            },
            credential("http", "query", "ivan", "<redacted>"),
        ]
    );
    let shown = events(&mut showing_secrets(), &[request]);
    assert_eq!(shown[1], credential("http", "query", "ivan", "hunter2"));
    let EventKind::Http { path, .. } = &shown[0] else {
        panic!("{shown:?}");
    };
    assert!(path.contains("hunter2"), "shown when asked: {path}");
    // A query without a password field is left alone.
    let search = to_server(80, b"GET /search?q=pass HTTP/1.1\r\n\r\n");
    assert_eq!(events(&mut inspector(), &[search]).len(), 1);
}
