//! The command-line client of a running server: `scaigrid transcribe` (files and
//! folders to subtitles or transcripts) and `scaigrid speak` (text to an audio file),
//! over the public HTTP API with an API key, like any other program would. Nothing here
//! touches the database or the engines; it only needs the server's URL and a key.
//!
//! - [`transcribe`]: the batch (plan, concurrency, resume, progress).
//! - [`speak`]: one text to one file, streamed to disk as it arrives.
//!
//! The server's refusals come back as [`Refusal`]: its HTTP status, error code and
//! message, printed as they are so a user can look the code up (`docs/errors.md`).

pub mod speak;
pub mod transcribe;

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// Where the server is and the key to call it with.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "SCAIGRID_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key (`sgk_...`) or a user token.
    #[arg(long, env = "SCAIGRID_API_KEY", hide_env_values = true)]
    pub key: String,
}

/// A connection to the server.
#[derive(Clone)]
pub struct Server {
    http: reqwest::Client,
    url: String,
    key: String,
}

/// A call that did not succeed: the server's code and message, or a transport error
/// (code `UNREACHABLE`).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} ({status}): {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl Refusal {
    fn local(code: &str, message: impl fmt::Display) -> Refusal {
        Refusal {
            status: None,
            code: code.to_owned(),
            message: message.to_string(),
        }
    }

    /// The key or the server is wrong for every file, not just this one: a batch stops.
    pub fn is_fatal(&self) -> bool {
        self.code.starts_with("AUTH")
            || matches!(
                self.code.as_str(),
                "UNREACHABLE" | "MODULE_NOT_ENABLED" | "BUDGET_EXCEEDED"
            )
    }
}

impl From<reqwest::Error> for Refusal {
    fn from(error: reqwest::Error) -> Refusal {
        Refusal::local("UNREACHABLE", crate::error::chain(&error))
    }
}

impl Server {
    pub fn new(args: &ServerArgs) -> Result<Server, Refusal> {
        let url = args.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Refusal::local(
                "INVALID_URL",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Server {
            http,
            url,
            key: args.key.clone(),
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// The response if it succeeded, else the server's refusal read from its body.
    async fn checked(response: reqwest::Response) -> Result<reqwest::Response, Refusal> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(refusal_of(status, &body))
    }
}

/// The error envelope `{"error": {"code", "message"}}`, or the body's start when it is
/// not one (a proxy's page).
fn refusal_of(status: u16, body: &str) -> Refusal {
    let envelope: Option<Value> = serde_json::from_str(body).ok();
    let error = envelope.as_ref().map(|value| &value["error"]);
    let field = |name: &str| {
        error
            .and_then(|error| error[name].as_str())
            .map(str::to_owned)
    };
    Refusal {
        status: Some(status),
        code: field("code").unwrap_or_else(|| format!("HTTP_{status}")),
        message: field("message").unwrap_or_else(|| body.chars().take(200).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_servers_code_or_say_what_came_back() {
        let refusal = refusal_of(
            401,
            r#"{"error":{"code":"AUTH_INVALID_KEY","message":"unknown key"}}"#,
        );
        assert_eq!(refusal.code, "AUTH_INVALID_KEY");
        assert!(refusal.is_fatal());
        assert_eq!(refusal.to_string(), "AUTH_INVALID_KEY (401): unknown key");
        let page = refusal_of(502, "<html>Bad Gateway</html>");
        assert_eq!(page.code, "HTTP_502");
        assert_eq!(page.message, "<html>Bad Gateway</html>");
        assert!(!page.is_fatal());
        let decode = refusal_of(
            422,
            r#"{"error":{"code":"AUDIO_DECODE_FAILED","message":"corrupt"}}"#,
        );
        assert!(!decode.is_fatal());
    }

    #[test]
    fn only_web_urls_are_servers() {
        let args = |url: &str| ServerArgs {
            url: url.into(),
            key: "k".into(),
        };
        assert!(Server::new(&args("http://127.0.0.1:8080/")).is_ok());
        assert_eq!(
            Server::new(&args("127.0.0.1:8080"))
                .err()
                .map(|refusal| refusal.code),
            Some("INVALID_URL".to_owned())
        );
    }
}
