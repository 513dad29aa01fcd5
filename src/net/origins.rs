//! Which origins may use the API from a browser (`[http] cors_allowed_origins`) and
//! what a request from an origin needs: pure, for `server::cors`.

use axum::http::{HeaderMap, Method, header};

/// The allowed origins (`scheme://host[:port]`, compared case-insensitively), or any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    any: bool,
    listed: Vec<String>,
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No `Origin`, or the server's own: nothing to do.
    Untouched,
    /// An allowed origin's preflight: answer it here.
    Preflight(String),
    /// An allowed origin's request: expose the response to it.
    Expose(String),
    /// A foreign origin's preflight or WebSocket handshake: 403.
    Refuse(String),
    /// A foreign origin's plain request: served, unreadable by its page.
    Unexposed,
}

impl Origins {
    /// Reads `cors_allowed_origins`: `*`, or origins without a path.
    pub fn parse(list: &[String]) -> Result<Origins, String> {
        let mut origins = Origins::default();
        for origin in list {
            if origin == "*" {
                origins.any = true;
                continue;
            }
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .contains('/')
                && !origin.ends_with(':');
            if !valid {
                return Err(format!(
                    "http.cors_allowed_origins: `{origin}` is not an origin \
                     (`https://app.example.com[:port]`, or `*`)"
                ));
            }
            origins.listed.push(origin.to_ascii_lowercase());
        }
        Ok(origins)
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.listed.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// What to do with a request of `method` and `headers`.
    pub fn decide(&self, method: &Method, headers: &HeaderMap) -> Decision {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Decision::Untouched;
        };
        // The server's own page: the origin names the host asked for, as the client
        // sent it (`Host`) or as a reverse proxy passed it on (`X-Forwarded-Host`; a
        // page cannot set that header on a handshake or a preflight, so it cannot
        // claim to be same-origin with it).
        let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let mut asked = [header::HOST.as_str(), "x-forwarded-host"]
            .into_iter()
            .filter_map(|name| {
                let value = headers.get(name)?.to_str().ok()?;
                value.split(',').next().map(str::trim)
            });
        if asked.any(|host| host.eq_ignore_ascii_case(authority)) {
            return Decision::Untouched;
        }
        let preflight = method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        match (self.allows(origin), preflight) {
            (true, true) => Decision::Preflight(origin.to_owned()),
            (true, false) => Decision::Expose(origin.to_owned()),
            (false, _) if preflight || upgrade => Decision::Refuse(origin.to_owned()),
            (false, _) => Decision::Unexposed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn origins_decide_preflights_exposure_and_handshakes() {
        let origins = Origins::parse(&["https://App.example.com".into()]).unwrap();
        let ours = [("host", "api.example.com")];
        let app = [
            ("host", "api.example.com"),
            ("origin", "https://app.example.com"),
        ];
        let evil = [
            ("host", "api.example.com"),
            ("origin", "https://evil.example"),
        ];
        let preflight = |h: &[(&str, &str)]| {
            let mut h = h.to_vec();
            h.push(("access-control-request-method", "POST"));
            headers(&h)
        };
        assert_eq!(
            origins.decide(&Method::GET, &headers(&ours)),
            Decision::Untouched
        );
        let same = [
            ("host", "api.example.com"),
            ("origin", "https://api.example.com"),
        ];
        assert_eq!(
            origins.decide(&Method::POST, &headers(&same)),
            Decision::Untouched
        );
        // Behind a proxy that rewrites `Host`, the forwarded host is the page's.
        let proxied = [
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "grid.example.com"),
            ("origin", "https://grid.example.com"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(
            origins.decide(&Method::GET, &headers(&proxied)),
            Decision::Untouched
        );
        assert_eq!(
            origins.decide(&Method::OPTIONS, &preflight(&app)),
            Decision::Preflight("https://app.example.com".into())
        );
        assert!(matches!(
            origins.decide(&Method::OPTIONS, &preflight(&evil)),
            Decision::Refuse(_)
        ));
        assert!(matches!(
            origins.decide(&Method::POST, &headers(&app)),
            Decision::Expose(_)
        ));
        assert_eq!(
            origins.decide(&Method::POST, &headers(&evil)),
            Decision::Unexposed
        );
        let mut upgrade = evil.to_vec();
        upgrade.push(("upgrade", "websocket"));
        assert!(matches!(
            origins.decide(&Method::GET, &headers(&upgrade)),
            Decision::Refuse(_)
        ));
        // None configured: every foreign preflight and handshake refused.
        let none = Origins::default();
        assert!(matches!(
            none.decide(&Method::OPTIONS, &preflight(&app)),
            Decision::Refuse(_)
        ));
        let any = Origins::parse(&["*".into()]).unwrap();
        assert!(matches!(
            any.decide(&Method::OPTIONS, &preflight(&evil)),
            Decision::Preflight(_)
        ));
    }

    #[test]
    fn origins_are_checked_when_configured() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://x:",
        ] {
            assert!(Origins::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(Origins::parse(&["http://localhost:5173".into()]).is_ok());
    }
}
