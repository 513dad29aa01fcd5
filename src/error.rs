//! The one table of error codes and the error type every handler returns.
//!
//! Codes are API: add, never rename. Each code has exactly one HTTP status and, where a
//! WebSocket route can end with it, one close code. The table below is the only place
//! where that mapping lives; `status()` and `ws_close_code()` are generated from it, so a
//! new code cannot be added without choosing both.
//!
//! The envelope is `{"status":"error","error":{"code","message","request_id",...}}`; extra
//! fields named by the contract (`preflight`, `limit`, `matched_rules`, `error_summary`)
//! go beside `code` through [`ApiError::with_field`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::request_id;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $code:ident => $status:literal, $ws:expr; )*) => {
        /// Every error code of the contract (`SPEC.md` and the seed pages).
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $code, )*
        }

        impl ErrorCode {
            /// All codes, in table order (used by tests and the OpenAPI description).
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$code, )* ];

            /// The wire name, e.g. `AUTH_TOKEN_MISSING`.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$code => stringify!($code), )* }
            }

            /// The code of a wire name (read back from a stream session's or an
            /// upstream's frame), or `otherwise`.
            pub fn named_or(name: &str, otherwise: ErrorCode) -> ErrorCode {
                ErrorCode::ALL
                    .iter()
                    .find(|code| code.as_str() == name)
                    .copied()
                    .unwrap_or(otherwise)
            }

            /// The one HTTP status of this code.
            pub fn status(self) -> StatusCode {
                let raw: u16 = match self { $( ErrorCode::$code => $status, )* };
                StatusCode::from_u16(raw).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }

            /// The WebSocket close code a streaming route uses for this error, if any.
            pub fn ws_close_code(self) -> Option<u16> {
                match self { $( ErrorCode::$code => $ws, )* }
            }
        }
    };
}

error_codes! {
    // Authentication and authorization (SPEC "Auth").
    /// No `Authorization` header (or `?token=` on a WebSocket).
    AUTH_TOKEN_MISSING => 401, Some(4401);
    /// The token is malformed, unknown, or fails signature/issuer/audience checks.
    AUTH_TOKEN_INVALID => 401, Some(4401);
    /// The token was valid once but its expiry has passed.
    AUTH_TOKEN_EXPIRED => 401, Some(4401);
    /// The API key or refresh token was revoked (or its tenant deleted).
    AUTH_TOKEN_REVOKED => 401, Some(4401);
    /// No user has this email (local login or an external issuer's `email` claim).
    AUTH_IDENTITY_NOT_FOUND => 404, Some(4401);
    /// Authenticated, but a required permission is missing.
    AUTHZ_PERMISSION_DENIED => 403, Some(4403);
    /// A console request carried the session cookie without the matching CSRF token
    /// (`X-CSRF-Token`), or the console session endpoint was called without its cookie.
    AUTH_CSRF_FAILED => 403, Some(4403);
    // The seed page 003 names the same three auth failures in another order. SPEC's names
    // are the ones emitted; these stay in the table so clients written against the seed
    // page can match them in documentation and SDK enums.
    /// Seed alias of `AUTH_TOKEN_MISSING` (never emitted).
    AUTH_MISSING_TOKEN => 401, Some(4401);
    /// Seed alias of `AUTH_TOKEN_INVALID` (never emitted).
    AUTH_INVALID_TOKEN => 401, Some(4401);
    /// Seed alias of `AUTH_TOKEN_REVOKED` (never emitted).
    AUTH_REVOKED_TOKEN => 401, Some(4401);

    // Request shape and resources.
    /// Malformed JSON, unknown or invalid fields, bad query parameters, bad `open` frames.
    INVALID_REQUEST => 400, Some(4400);
    /// The resource does not exist or belongs to another tenant.
    NOT_FOUND => 404, None;
    /// The route exists but not for this method.
    METHOD_NOT_ALLOWED => 405, None;
    /// A unique name or slug is taken, or the resource is in a conflicting state.
    CONFLICT => 409, None;
    /// The request body stalled or took longer than `[http]` allows to arrive.
    REQUEST_TIMEOUT => 408, None;
    /// The body is not of a media type this route accepts.
    UNSUPPORTED_MEDIA_TYPE => 415, None;
    /// Body, audio or text over the configured limit; the envelope carries `limit`.
    CTX_TOO_LARGE => 413, Some(4413);
    /// Audio in a container or codec the server does not decode.
    AUDIO_FORMAT_UNSUPPORTED => 415, Some(4400);
    /// Audio that claims a supported format but cannot be decoded.
    AUDIO_DECODE_FAILED => 422, Some(4400);
    /// Unexpected server fault; detail is logged with the request id, never sent.
    INTERNAL_ERROR => 500, Some(1011);
    /// A dependency (database, redis, object store, engines) is down.
    SERVICE_UNAVAILABLE => 503, Some(1013);

    // Gateway core.
    /// The model slug is not visible to this tenant.
    MODEL_NOT_FOUND => 404, None;
    /// The model exists but `/v1/model-access` denies it for this tenant.
    MODEL_ACCESS_DENIED => 403, None;
    /// Every backend of the model is circuit-broken or unhealthy (or no instance behind
    /// a balancer is healthy; a stream closes 4502).
    MODEL_UNAVAILABLE => 503, Some(4502);
    /// The upstream failed (also sent as an SSE error event mid-stream).
    BACKEND_ERROR => 502, None;
    /// A rate limit was hit; `Retry-After` and the rate-limit headers say when to retry.
    RATE_LIMITED => 429, Some(4429);
    /// A cost budget for the period is spent.
    BUDGET_EXCEEDED => 429, Some(4429);
    /// The module is not enabled for the caller's tenant.
    MODULE_NOT_ENABLED => 403, Some(4403);
    /// Seed 003: account balance below the launch threshold.
    BILLING_BELOW_MINIMUM => 402, None;
    /// The model's declared memory need exceeds the device's free memory.
    GPU_INCOMPATIBLE => 409, None;
    /// Seed 003: no provider satisfies the placement constraints.
    SMART_NO_MATCH => 409, None;
    /// Seed 003: the provider did not allocate capacity in time.
    PROVIDER_TIMEOUT => 504, None;
    /// Text to speech could not phonemize this text (the phonemizer process ended on
    /// it); that request fails, everything else goes on. Change the text (e.g. very
    /// long tokens of joined symbols) and retry.
    SPEECH_TEXT_REJECTED => 422, Some(4400);
    /// An inference ran out of memory; the request failed, the node stays up.
    OOM_KILLED => 503, Some(1011);
    /// A browser page of an origin not in `http.cors_allowed_origins` sent a preflight or
    /// opened a WebSocket (close 4403 where a stream would).
    ORIGIN_NOT_ALLOWED => 403, Some(4403);
    /// Seed 003: a firewall in block mode matched; the envelope carries `matched_rules`
    /// (a stream ends with the `error` frame and close 4403).
    FIREWALL_BLOCKED => 403, Some(4403);
    /// Seed 003: the firewall evaluator is not running (the envelope carries
    /// `judge_rules`; a stream ends with the `error` frame and close 4503).
    JUDGE_UNREACHABLE => 503, Some(4503);

    /// A WebRTC control socket opened before the offer was answered, or after the
    /// session ended (close 4404 `session_not_ready`).
    SESSION_NOT_READY => 409, Some(4404);

    // ScaiEcho.
    /// No allowed speech-to-text backend is usable.
    SCAIECHO_BACKEND_UNAVAILABLE => 502, Some(4502);
    /// The speaker reference clip failed preflight; the envelope carries `preflight`.
    SCAIECHO_SPEAKER_PREFLIGHT_FAILED => 422, None;
    /// Built without the `webrtc` feature.
    SCAIECHO_WEBRTC_UNAVAILABLE => 501, None;
    /// The peer state of a WebRTC session is gone (e.g. after a restart).
    SCAIECHO_WEBRTC_SESSION_STATE_LOST => 410, Some(4404);

    // ScaiSpeak.
    /// No allowed text-to-speech backend is usable.
    SCAISPEAK_BACKEND_UNAVAILABLE => 502, Some(4502);
    /// The voice reference clip failed preflight; the envelope carries `preflight`.
    SCAISPEAK_VOICE_PREFLIGHT_FAILED => 422, None;
    /// `save_to` was used with an API key; it needs a user JWT.
    SCAISPEAK_SAVE_TO_REQUIRES_JWT => 403, None;
    /// The drive rejected the token exchange.
    SCAISPEAK_SAVE_TO_EXCHANGE_FAILED => 502, None;
    /// `save_to` target exists and `overwrite` is false.
    SCAISPEAK_SCAIDRIVE_CONFLICT => 409, None;
    /// No drive is configured for this deployment.
    SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE => 404, None;
    /// `/warm` on a voice that is not `ready`.
    SCAISPEAK_VOICE_NOT_READY_FOR_WARMING => 409, None;
    /// Built without the `webrtc` feature.
    SCAISPEAK_WEBRTC_UNAVAILABLE => 501, None;
    /// The peer state of a WebRTC session is gone (e.g. after a restart).
    SCAISPEAK_WEBRTC_SESSION_STATE_LOST => 410, Some(4404);
}

/// The code table as Markdown: `docs/errors.md` is this (`scaigrid errors` prints it;
/// a test keeps the file equal to it).
/// An error with its causes, `outer: inner: ...` (many libraries' `Display` is only the
/// outermost layer: reqwest's "error sending request", the AWS SDK's "dispatch failure").
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn errors_markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Every error is `{\"status\":\"error\",\"error\":{\"code\",\"message\",\"request_id\",...}}` \
         with the HTTP status below; a WebSocket stream that ends with one sends an `error` \
         frame with the code, then closes with the close code. Generated from the code \
         table by `scaigrid errors` (also `GET /v1/errors`); do not edit by hand.\n\n\
         | Code | HTTP | WS close | What to do |\n|---|---|---|---|\n",
    );
    for code in ErrorCode::ALL {
        let close = code
            .ws_close_code()
            .map_or_else(|| "—".to_owned(), |c| c.to_string());
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            close,
            code.remediation().replace('|', "\\|")
        ));
    }
    out
}

impl ErrorCode {
    /// What to do about it: one line, shown by the console beside the code and listed by
    /// `GET /v1/errors`. Exhaustive, so a new code cannot go without one.
    pub fn remediation(self) -> &'static str {
        use ErrorCode::*;
        match self {
            AUTH_TOKEN_MISSING | AUTH_MISSING_TOKEN => {
                "Send `Authorization: Bearer <API key or access token>` (WebSockets: also `?token=`)."
            }
            AUTH_TOKEN_INVALID | AUTH_INVALID_TOKEN => {
                "Check the token: an `sgk_` key as created, or a JWT from `/v1/auth/token` or a configured issuer."
            }
            AUTH_TOKEN_EXPIRED => {
                "Refresh it with `/v1/auth/refresh` (or log in again); expired keys need a new key."
            }
            AUTH_TOKEN_REVOKED | AUTH_REVOKED_TOKEN => {
                "The key, login, user or tenant was revoked or deleted: ask an admin for a new credential."
            }
            AUTH_IDENTITY_NOT_FOUND => {
                "No user has this email here: an admin creates the user first (`POST /v1/users`)."
            }
            AUTHZ_PERMISSION_DENIED => {
                "Ask a tenant admin to grant the permission named in the message (`POST /v1/grants`)."
            }
            AUTH_CSRF_FAILED => {
                "Reload the console and sign in again; scripts call the API with a bearer token instead of the cookie."
            }
            INVALID_REQUEST => {
                "Fix the field named in the message; `/openapi.json` has every shape."
            }
            NOT_FOUND => "Check the id and the tenant: resources of other tenants are not visible.",
            METHOD_NOT_ALLOWED => "Use a method this path has (see `/openapi.json`).",
            CONFLICT => {
                "The name is taken or the resource is busy: pick another name or retry after it settles."
            }
            REQUEST_TIMEOUT => {
                "Send the body faster, or raise `[http]` body timeouts for slow clients."
            }
            UNSUPPORTED_MEDIA_TYPE => {
                "Send the Content-Type the route accepts (JSON, multipart or a named audio type)."
            }
            CTX_TOO_LARGE => {
                "Send less than the `limit` in the error (split audio, shorten text) or raise `[limits]`."
            }
            AUDIO_FORMAT_UNSUPPORTED => {
                "Convert to WAV, FLAC, MP3, Ogg/Opus, WebM or M4A/AAC, or declare raw PCM with its rate."
            }
            AUDIO_DECODE_FAILED => {
                "The file is damaged or not what it claims: re-export it and check it plays."
            }
            INTERNAL_ERROR => {
                "A server fault: report the `request_id`; the log line with it has the detail."
            }
            SERVICE_UNAVAILABLE => {
                "A dependency (database, Redis, object store or inference node) is down: check `/readyz`."
            }
            MODEL_NOT_FOUND => {
                "Use a slug from `GET /v1/models`, or register the model (`POST /v1/models`)."
            }
            MODEL_ACCESS_DENIED => {
                "A platform admin allows the model for this tenant (`PUT /v1/model-access`)."
            }
            MODEL_UNAVAILABLE => {
                "Every backend is down or its breaker open: check the backend, then probe it now."
            }
            BACKEND_ERROR => {
                "The upstream failed: check its logs and credentials; the breaker opens if it keeps failing."
            }
            RATE_LIMITED => {
                "Wait for `Retry-After` seconds, or raise the key's or tenant's `rate_limit`."
            }
            BUDGET_EXCEEDED => {
                "The budget's period is spent: raise it (`POST /v1/accounting/budgets`) or wait for `resets_at`."
            }
            MODULE_NOT_ENABLED => {
                "A tenant admin enables the module (`POST /v1/modules/{id}/enable`)."
            }
            BILLING_BELOW_MINIMUM => {
                "Top up the balance (`POST /v1/accounting/balance/top-up`) to at least the minimum."
            }
            GPU_INCOMPATIBLE => "Pick a smaller model or a node whose device has the memory free.",
            SMART_NO_MATCH => {
                "Relax the placement constraints (region, tier, price) or add a node that meets them."
            }
            PROVIDER_TIMEOUT => {
                "No node loaded the model in time: retry, or check the nodes' logs and memory."
            }
            SPEECH_TEXT_REJECTED => "Change the text (very long joined symbols) and retry.",
            OOM_KILLED => {
                "The inference ran out of memory: use shorter input or a node with more memory."
            }
            FIREWALL_BLOCKED => {
                "The text matched a block rule (`matched_rules`): change it or ask for the policy to change."
            }
            JUDGE_UNREACHABLE => {
                "The firewall's judge model is down: check its backend, or set the policy to audit."
            }
            SESSION_NOT_READY => {
                "Open the control socket after the offer is answered, while the session lives."
            }
            SCAIECHO_BACKEND_UNAVAILABLE | SCAISPEAK_BACKEND_UNAVAILABLE => {
                "No allowed speech backend works: check the nodes (`GET /v1/admin/nodes`) and the module policy."
            }
            SCAIECHO_SPEAKER_PREFLIGHT_FAILED | SCAISPEAK_VOICE_PREFLIGHT_FAILED => {
                "Record a cleaner clip: `preflight` says which check failed (length, level, noise, speech)."
            }
            SCAIECHO_WEBRTC_UNAVAILABLE | SCAISPEAK_WEBRTC_UNAVAILABLE => {
                "This build has no WebRTC: build with the default features, or use the WebSocket routes."
            }
            SCAIECHO_WEBRTC_SESSION_STATE_LOST | SCAISPEAK_WEBRTC_SESSION_STATE_LOST => {
                "The server restarted under the session: create a new session and offer again."
            }
            SCAISPEAK_SAVE_TO_REQUIRES_JWT => {
                "Call with a user's JWT (log in), not an API key, to save to the drive."
            }
            SCAISPEAK_SAVE_TO_EXCHANGE_FAILED => {
                "The drive refused the token exchange: check `[scaispeak.drive]` and the user's access."
            }
            SCAISPEAK_SCAIDRIVE_CONFLICT => {
                "The file exists: pick another path or send `overwrite: true`."
            }
            SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE => {
                "ScaiDrive is not configured: set `[scaispeak.drive]` or omit `save_to`."
            }
            ORIGIN_NOT_ALLOWED => {
                "Add the page's origin to `[http] cors_allowed_origins`, or call from the server's own origin or a program."
            }
            SCAISPEAK_VOICE_NOT_READY_FOR_WARMING => {
                "Wait until the voice is `ready` (or repromote it), then warm it."
            }
        }
    }
}

/// The error every handler and service of the server returns.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra envelope fields beside `code` (`limit`, `preflight`, ...).
    pub fields: Map<String, Value>,
    /// Headers the response must carry (e.g. `Retry-After`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            fields: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a field to the `error` object of the envelope.
    pub fn with_field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// The inference node that was to run the work was lost (it died, or did not come
    /// back in time): the work may go again once a node is ready.
    pub fn node_lost(&self) -> bool {
        self.code == ErrorCode::SERVICE_UNAVAILABLE && self.fields.contains_key("node_id")
    }

    /// A lost node as a stream's backend failure (`code`, close 4502), still naming
    /// the node; any other error as it is.
    pub fn in_stream(self, code: ErrorCode) -> ApiError {
        match self.node_lost() {
            true => ApiError {
                code,
                headers: Vec::new(),
                ..self
            },
            false => self,
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// An internal fault: the detail goes to the log with the request id, the client
    /// sees only a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(ErrorCode::INTERNAL_ERROR, "internal server error")
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::INVALID_REQUEST, message)
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(ErrorCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn permission_denied(permission: &str) -> Self {
        ApiError::new(
            ErrorCode::AUTHZ_PERMISSION_DENIED,
            format!("missing permission `{permission}`"),
        )
        .with_field("required_permission", permission)
    }

    pub fn too_large(what: &str, limit: u64) -> Self {
        ApiError::new(
            ErrorCode::CTX_TOO_LARGE,
            format!("{what} exceeds the limit of {limit}"),
        )
        .with_field("limit", limit)
    }

    /// The JSON envelope, with the request id of the current request.
    pub fn envelope(&self) -> Value {
        let mut error = Map::new();
        error.insert("code".into(), Value::from(self.code.as_str()));
        error.insert("message".into(), Value::from(self.message.clone()));
        error.insert(
            "request_id".into(),
            request_id::current()
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        for (name, value) in &self.fields {
            error.insert(name.clone(), value.clone());
        }
        json!({ "status": "error", "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = self.envelope();
        let mut response = (status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A database that cannot be reached (down, restarting, pool exhausted) is 503
/// `SERVICE_UNAVAILABLE` naming it, so clients retry; anything else is a 500.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        let unreachable = match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Class 08 (connection exception) and 57P (operator intervention: shutdown).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        };
        match unreachable {
            true => {
                tracing::warn!(%error, "database unreachable");
                ApiError::new(
                    ErrorCode::SERVICE_UNAVAILABLE,
                    format!("database unavailable: {error}"),
                )
                .with_field("dependency", "database")
            }
            false => ApiError::internal(format_args!("database: {error}")),
        }
    }
}

/// Audio errors at the edge: unsupported → 415 `AUDIO_FORMAT_UNSUPPORTED`, damaged or cut
/// short → 422 `AUDIO_DECODE_FAILED`, over a limit → 413 `CTX_TOO_LARGE` with `limit`
/// (and `limit_unit`).
impl From<media::MediaError> for ApiError {
    fn from(error: media::MediaError) -> Self {
        use media::MediaError;
        let message = error.to_string();
        match error {
            MediaError::Unsupported(_) => {
                ApiError::new(ErrorCode::AUDIO_FORMAT_UNSUPPORTED, message)
            }
            MediaError::Corrupt(_) | MediaError::Truncated(_) => {
                ApiError::new(ErrorCode::AUDIO_DECODE_FAILED, message)
            }
            MediaError::TooLarge { kind, limit } => {
                ApiError::new(ErrorCode::CTX_TOO_LARGE, message)
                    .with_field("limit", limit)
                    .with_field("limit_unit", kind.unit())
            }
            MediaError::InvalidParameters(_) => ApiError::invalid(message),
            MediaError::Analysis(_) => ApiError::internal(message),
        }
    }
}

/// Engine errors at the edge: a model that does not fit → 409 `GPU_INCOMPATIBLE`, out of
/// memory during inference → 503 `OOM_KILLED` (the node stays up), engines missing or
/// unusable, or the node that was to run it lost → 503 `SERVICE_UNAVAILABLE` (naming
/// the node in `node_id`).
impl From<engines::EngineError> for ApiError {
    fn from(error: engines::EngineError) -> Self {
        use engines::EngineError;
        let message = error.to_string();
        match error {
            EngineError::ModelTooLarge {
                id,
                needed_mb,
                available_mb,
            } => ApiError::new(ErrorCode::GPU_INCOMPATIBLE, message)
                .with_field("model", id)
                .with_field("needed_mb", needed_mb)
                .with_field("available_mb", available_mb),
            EngineError::ModelNotFound { id, .. } => {
                ApiError::new(ErrorCode::MODEL_NOT_FOUND, message).with_field("model", id)
            }
            EngineError::InUse { id, by } => ApiError::new(ErrorCode::CONFLICT, message)
                .with_field("model", id)
                .with_field("needed_by", by),
            EngineError::OutOfMemory => ApiError::new(ErrorCode::OOM_KILLED, message),
            EngineError::Busy => ApiError::new(ErrorCode::SERVICE_UNAVAILABLE, message)
                .with_field("dependency", "engines")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            EngineError::InvalidInput(_) => ApiError::invalid(message),
            EngineError::TextRejected(_) => {
                tracing::warn!(%message, "text to speech: the phonemizer rejected a text");
                ApiError::new(
                    ErrorCode::SPEECH_TEXT_REJECTED,
                    "the text could not be turned into speech; other requests are unaffected",
                )
            }
            EngineError::Runtime(_)
            | EngineError::DeviceUnavailable(_)
            | EngineError::ModelUnavailable { .. } => {
                ApiError::new(ErrorCode::SERVICE_UNAVAILABLE, message)
                    .with_field("dependency", "engines")
            }
            EngineError::NodeUnavailable { node, .. } => {
                tracing::warn!(%message, "inference node unavailable");
                ApiError::new(ErrorCode::SERVICE_UNAVAILABLE, message)
                    .with_field("dependency", "engines")
                    .with_field("node_id", node)
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("2"))
            }
            // Nothing ran: like a full queue, a job waits in its queue for the node.
            EngineError::NoNodeReady { nodes } => {
                ApiError::new(ErrorCode::SERVICE_UNAVAILABLE, message)
                    .with_field("dependency", "engines")
                    .with_field("nodes", nodes)
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
            }
            EngineError::Inference(_) => ApiError::internal(message),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    #[test]
    fn the_errors_document_is_the_code_table() {
        let document = include_str!("../docs/errors.md");
        assert!(
            document == errors_markdown(),
            "docs/errors.md is out of date: run `scaigrid errors > docs/errors.md`"
        );
        for code in ErrorCode::ALL {
            assert!(document.contains(&format!("| `{}` |", code.as_str())));
        }
    }

    use super::*;
    use std::collections::HashSet;

    #[test]
    fn wire_names_are_unique_screaming_snake() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{name} is not SCREAMING_SNAKE"
            );
        }
    }

    #[test]
    fn statuses_match_the_contract() {
        assert_eq!(
            ErrorCode::AUTH_TOKEN_MISSING.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ErrorCode::AUTH_IDENTITY_NOT_FOUND.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ErrorCode::AUTHZ_PERMISSION_DENIED.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ErrorCode::CTX_TOO_LARGE.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE.status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE.ws_close_code(),
            Some(4502)
        );
        assert_eq!(ErrorCode::RATE_LIMITED.ws_close_code(), Some(4429));
        assert_eq!(
            ErrorCode::SCAISPEAK_WEBRTC_SESSION_STATE_LOST.status(),
            StatusCode::GONE
        );
    }

    #[test]
    fn media_and_engine_errors_map_to_their_codes() {
        use media::MediaError;
        let code = |e: ApiError| e.code;
        assert_eq!(
            code(MediaError::Unsupported("x".into()).into()),
            ErrorCode::AUDIO_FORMAT_UNSUPPORTED
        );
        assert_eq!(
            code(MediaError::Corrupt("x".into()).into()),
            ErrorCode::AUDIO_DECODE_FAILED
        );
        assert_eq!(
            code(MediaError::Truncated("x".into()).into()),
            ErrorCode::AUDIO_DECODE_FAILED
        );
        let too_long: ApiError = MediaError::TooLarge {
            kind: media::LimitKind::Seconds,
            limit: 30,
        }
        .into();
        assert_eq!(too_long.code, ErrorCode::CTX_TOO_LARGE);
        assert_eq!(too_long.fields["limit"], 30);
        assert_eq!(too_long.fields["limit_unit"], "seconds");
        let too_big = engines::EngineError::ModelTooLarge {
            id: "m".into(),
            needed_mb: 2,
            available_mb: 1,
        };
        let too_big: ApiError = too_big.into();
        assert_eq!(too_big.code, ErrorCode::GPU_INCOMPATIBLE);
        assert_eq!(too_big.fields["needed_mb"], 2);
        assert_eq!(too_big.fields["available_mb"], 1);
        assert_eq!(
            code(engines::EngineError::OutOfMemory.into()),
            ErrorCode::OOM_KILLED
        );
        let missing = engines::EngineError::ModelUnavailable {
            id: "m".into(),
            reason: "r".into(),
        };
        assert_eq!(code(missing.into()), ErrorCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn a_lost_node_is_named_and_a_node_not_ready_is_only_a_wait() {
        let lost: ApiError = engines::EngineError::NodeUnavailable {
            node: "local".into(),
            reason: "gone".into(),
        }
        .into();
        assert!(lost.node_lost());
        assert_eq!(lost.fields["node_id"], "local");
        let in_stream = lost.in_stream(ErrorCode::SCAISPEAK_BACKEND_UNAVAILABLE);
        assert_eq!(in_stream.code.ws_close_code(), Some(4502));
        assert_eq!(in_stream.fields["node_id"], "local");
        // Nothing ran: not a crash of the job, but a wait (Retry-After) like a full queue.
        let waiting: ApiError = engines::EngineError::NoNodeReady {
            nodes: "local".into(),
        }
        .into();
        assert!(!waiting.node_lost());
        assert_eq!(waiting.code, ErrorCode::SERVICE_UNAVAILABLE);
        assert!(
            waiting
                .headers
                .iter()
                .any(|(name, _)| name == header::RETRY_AFTER)
        );
        // Any other error goes through a stream unchanged.
        let other = ApiError::invalid("x").in_stream(ErrorCode::SCAISPEAK_BACKEND_UNAVAILABLE);
        assert_eq!(other.code, ErrorCode::INVALID_REQUEST);
    }

    #[test]
    fn every_code_named_by_the_contract_is_in_the_table() {
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let spec = include_str!("../docs/contract_codes.txt");
        for name in spec
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            assert!(names.contains(name), "{name} missing from the code table");
        }
    }
}
