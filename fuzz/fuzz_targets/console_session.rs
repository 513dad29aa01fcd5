//! The console's session: `Cookie` headers and CSRF tokens as browsers (or attackers)
//! send them, and list cursors. Never panics; a session is only ever accepted with the
//! token made for that very cookie value.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use scaigrid::auth::console::{CSRF_HEADER, CsrfKey, SESSION_COOKIE, cookie, session_token};
use scaigrid::db::page::{Order, Page};

fuzz_target!(|data: &[u8]| {
    // Lines: cookie headers up to the first empty one, then the presented token, then a
    // cursor and a limit for a page.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut headers = HeaderMap::new();
    for line in lines.by_ref().take_while(|line| !line.is_empty()) {
        if let Ok(value) = HeaderValue::from_str(line) {
            headers.append(http::header::COOKIE, value);
        }
    }
    let key = CsrfKey::derive(b"fuzz");
    let presented = lines.next().unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(presented) {
        headers.insert(CSRF_HEADER, value);
    }
    let found = cookie(&headers, SESSION_COOKIE);
    if let Ok(Some(session)) = session_token(&key, &headers, None) {
        assert_eq!(Some(session), found);
        assert_eq!(key.token(session), presented.trim().to_ascii_lowercase());
    }
    // A valid token for whatever cookie came is always accepted.
    if let Some(session) = found {
        let mut good = headers.clone();
        good.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&key.token(session)).unwrap(),
        );
        assert_eq!(session_token(&key, &good, None).unwrap(), Some(session));
    }
    let after = lines.next().map(str::to_owned);
    let limit = lines
        .next()
        .and_then(|line| line.trim().parse::<u32>().ok());
    if let Some(page) = Page::new(limit, after) {
        let sql = page.sql("users", 2, Order::Oldest);
        // The cursor is bound, never written into the statement.
        let expected = Page::new(
            Some(page.limit),
            page.after.as_ref().map(|_| "x".to_owned()),
        )
        .unwrap()
        .sql("users", 2, Order::Oldest);
        assert_eq!(sql, expected);
        let rows: Vec<String> = (0..5).map(|n| format!("r{n}")).collect();
        let (kept, next) = page.slice(rows, |row| row);
        assert!(kept.len() <= page.limit as usize);
        if let Some(next) = next {
            assert_eq!(kept.last().map(String::as_str), Some(next.as_str()));
        }
    }
});
