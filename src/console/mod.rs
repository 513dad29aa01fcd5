//! The operator web console: a page and its scripts, embedded in the binary, that call
//! the public API like any client; and the browser session it signs in with.
//!
//! Hand-written ES modules and one style sheet, no third-party code and no build step:
//! nothing to fetch at build or run time, nothing to audit but this folder, and every
//! text the pages show goes through `textContent` (a unit test keeps HTML sinks out).
//! The pages hold no authority of their own: every action is an API call, so the
//! server's permission and tenant checks are the console's.

pub mod session;

use axum::http::{HeaderMap, HeaderValue, header};

/// One embedded file under `/console/assets/`.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

macro_rules! assets {
    ($( $name:literal => $kind:literal ),* $(,)?) => {
        /// Every asset, by the name it is served under.
        pub const ASSETS: &[Asset] = &[ $( Asset {
            name: $name,
            content_type: $kind,
            body: include_str!(concat!("assets/", $name)),
        }, )* ];
    };
}

assets! {
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "dom.js" => "text/javascript; charset=utf-8",
    "pages.js" => "text/javascript; charset=utf-8",
    "reference.js" => "text/javascript; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
}

/// The page every console route answers; the scripts route on the fragment.
pub const INDEX: &str = include_str!("assets/index.html");

/// The API reference page (`/reference`): `/openapi.json` rendered by `reference.js`.
pub const REFERENCE: &str = include_str!("assets/reference.html");

/// The asset named `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// Only this origin's scripts, styles and connections; no inline code, no frames, no
/// plugins; audio from the page's own blobs (the playground).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The headers every console response carries.
pub fn security_headers(headers: &mut HeaderMap) {
    let pairs = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // The assets change with the binary: always revalidate.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the pages show (transcripts, model names, emails) is text, never markup,
    /// and no code is made from strings: the CSP forbids it, and this keeps it out of the
    /// source too.
    #[test]
    fn the_console_never_parses_text_as_html_or_code() {
        let sinks = [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout(\"",
            "javascript:",
        ];
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for sink in sinks {
                assert!(!asset.body.contains(sink), "{} uses {sink}", asset.name);
            }
        }
        for (name, page) in [("index.html", INDEX), ("reference.html", REFERENCE)] {
            assert!(!page.contains("<script>"), "inline script in {name}");
            let handler = page.split(" on").skip(1).any(|rest| {
                let event: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !event.is_empty() && rest[event.len()..].starts_with('=')
            });
            assert!(!handler, "inline event handler in {name}");
            assert!(!page.contains("style="), "inline style in {name}");
        }
    }

    #[test]
    fn assets_resolve_by_name_only() {
        assert!(asset("app.js").is_some());
        assert!(asset("../mod.rs").is_none());
        assert!(asset("").is_none());
    }
}
