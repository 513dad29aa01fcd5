//! The console's browser session: the bearer token lives in an `HttpOnly;
//! SameSite=Strict` cookie the page's scripts cannot read, and every request that
//! authenticates with the cookie must also carry the session's CSRF token.
//!
//! The CSRF token is an HMAC of the cookie's value under a key derived from the JWT
//! secret, so it needs no storage, changes with every session and refresh, and holds
//! across the processes of a scaled deployment. It travels as `X-CSRF-Token` (a header
//! a foreign page cannot set without a CORS preflight the server never grants), or as
//! `?csrf=` on a WebSocket upgrade, where browsers cannot set headers.

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{ApiError, ApiResult, ErrorCode};

/// Holds the bearer token (an access JWT or an API key).
pub const SESSION_COOKIE: &str = "scaigrid_session";
/// Holds the refresh token of a password login; sent only to the session endpoints.
pub const REFRESH_COOKIE: &str = "scaigrid_refresh";
/// Where the page sends the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The path the session cookie is sent on (the API and the console).
pub const SESSION_PATH: &str = "/";
/// The path the refresh cookie is sent on (only the session endpoints).
pub const REFRESH_PATH: &str = "/console/session";

/// The key CSRF tokens are made with.
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    /// Derived from the JWT secret, so every process of a deployment agrees.
    pub fn derive(jwt_secret: &[u8]) -> CsrfKey {
        let mut mac = mac(jwt_secret);
        mac.update(b"scaigrid console csrf v1");
        CsrfKey(mac.finalize().into_bytes().into())
    }

    /// The CSRF token of a session cookie's value.
    pub fn token(&self, session: &str) -> String {
        let mut mac = mac(&self.0);
        mac.update(session.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `presented` is the token of `session` (compared in constant time).
    pub fn verify(&self, session: &str, presented: &str) -> bool {
        let Ok(presented) = hex::decode(presented.trim()) else {
            return false;
        };
        let mut mac = mac(&self.0);
        mac.update(session.as_bytes());
        mac.verify_slice(&presented).is_ok()
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key")
}

/// The value of the cookie `name` among the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The session cookie's token, if the request has one with the right CSRF token;
/// `Ok(None)` when there is no session cookie at all.
pub fn session_token<'h>(
    key: &CsrfKey,
    headers: &'h HeaderMap,
    query_csrf: Option<&str>,
) -> ApiResult<Option<&'h str>> {
    let Some(session) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .or(query_csrf);
    match presented {
        Some(presented) if key.verify(session, presented) => Ok(Some(session)),
        Some(_) => Err(ApiError::new(
            ErrorCode::AUTH_CSRF_FAILED,
            "the CSRF token does not belong to this session",
        )),
        None => Err(ApiError::new(
            ErrorCode::AUTH_CSRF_FAILED,
            "a request with the console's session cookie needs its `X-CSRF-Token`",
        )),
    }
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Secure` when the page was
/// loaded over HTTPS; `max_age` `None` ends it with the browser, `Some(0)` deletes it.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<u64>,
    secure: bool,
) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether the page that sent the request was loaded over HTTPS (its `Origin`), so the
/// cookies are marked `Secure`; plain HTTP on a loopback or LAN address still works.
pub fn secure_origin(headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|origin| origin.starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn tokens_belong_to_one_session_and_one_key() {
        let key = CsrfKey::derive(b"secret");
        let token = key.token("sgk_abc");
        assert!(key.verify("sgk_abc", &token));
        assert!(!key.verify("sgk_abd", &token));
        assert!(!CsrfKey::derive(b"other").verify("sgk_abc", &token));
        assert!(!key.verify("sgk_abc", "not hex"));
        assert!(!key.verify("sgk_abc", ""));
        assert!(!key.verify("sgk_abc", &token[..32]));
    }

    #[test]
    fn the_session_cookie_needs_its_csrf_token() {
        let key = CsrfKey::derive(b"secret");
        let token = key.token("tok");
        let cookie = format!("a=b; {SESSION_COOKIE}=tok; c=d");
        let good = headers(&[("cookie", &cookie), (CSRF_HEADER, &token)]);
        assert_eq!(session_token(&key, &good, None).unwrap(), Some("tok"));
        let missing = headers(&[("cookie", &cookie)]);
        let error = session_token(&key, &missing, None).unwrap_err();
        assert_eq!(error.code, ErrorCode::AUTH_CSRF_FAILED);
        assert_eq!(
            session_token(&key, &missing, Some(&token)).unwrap(),
            Some("tok")
        );
        let wrong = headers(&[("cookie", &cookie), (CSRF_HEADER, &key.token("other"))]);
        assert!(session_token(&key, &wrong, None).is_err());
        assert_eq!(
            session_token(&key, &headers(&[("cookie", "x=y")]), None).unwrap(),
            None
        );
        // An empty value is no session.
        let empty = headers(&[("cookie", &format!("{SESSION_COOKIE}="))]);
        assert_eq!(session_token(&key, &empty, None).unwrap(), None);
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let value = set_cookie(SESSION_COOKIE, "v", SESSION_PATH, Some(60), true);
        let value = value.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=60",
            "Secure",
            "Path=/",
        ] {
            assert!(value.contains(part), "{value} lacks {part}");
        }
        let plain = set_cookie(REFRESH_COOKIE, "v", REFRESH_PATH, None, false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(!plain.to_str().unwrap().contains("Max-Age"));
    }
}
