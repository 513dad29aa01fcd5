//! A managed OpenAI-compatible upstream (backend B of the speech modules): base URL,
//! bearer key and model from config, one HTTP client with the configured timeout.

use std::time::Duration;

use crate::config::RelayConfig;

pub struct Upstream {
    client: reqwest::Client,
    url: String,
    key: String,
    pub model: String,
}

impl Upstream {
    /// `None` unless both the URL and the key are configured.
    pub fn from_config(config: &RelayConfig) -> anyhow::Result<Option<Upstream>> {
        let (Some(url), Some(key)) = (&config.url, &config.api_key) else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .user_agent(concat!("scaigrid/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Upstream {
            client,
            url: url.trim_end_matches('/').to_owned(),
            key: key.expose().to_owned(),
            model: config.model.clone(),
        }))
    }

    /// A POST to `path` (e.g. `/v1/audio/speech`) with the key and the trace context.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .headers(crate::trace_context::outgoing_headers())
    }
}

/// A transport error as a short sentence (no URL with credentials in it). Shared by
/// every caller of an upstream: the gateway, the relays, webhook deliveries.
pub fn error_text(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "upstream timed out".to_owned()
    } else if error.is_connect() {
        "upstream unreachable".to_owned()
    } else {
        format!("upstream transport error: {error}")
    }
}
