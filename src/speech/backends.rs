//! Backends A (the local inference node) and B (a managed OpenAI-compatible relay), the
//! caller's preference, and the resolver every speech module uses (pure logic).
//!
//! The resolver walks the preference's order, skips backends the tenant's policy does
//! not allow or that are not usable now, and takes the first one left; nothing left is
//! the module's `<MODULE>_BACKEND_UNAVAILABLE` (502). `prefer_*` falls through to the
//! other backend, `self_hosted` / `managed` pin one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Backend {
    /// The local inference node (self-hosted); `A` on the wire.
    #[serde(rename = "A")]
    Local,
    /// The managed relay (an OpenAI-compatible upstream); `B` on the wire.
    #[serde(rename = "B")]
    Relay,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "A",
            Backend::Relay => "B",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    Any,
    PreferSelfHosted,
    PreferManaged,
    SelfHosted,
    Managed,
}

impl Preference {
    pub fn order(self) -> &'static [Backend] {
        match self {
            Preference::Any | Preference::PreferSelfHosted => &[Backend::Local, Backend::Relay],
            Preference::PreferManaged => &[Backend::Relay, Backend::Local],
            Preference::SelfHosted => &[Backend::Local],
            Preference::Managed => &[Backend::Relay],
        }
    }

    pub fn parse(text: &str) -> ApiResult<Preference> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
            ApiError::invalid(format!(
                "backend_preference `{text}` is not one of any, prefer_self_hosted, \
                 prefer_managed, self_hosted, managed"
            ))
        })
    }
}

/// Which backends can serve right now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usable {
    /// Backend A, the local node.
    pub local: bool,
    /// Backend B, the managed relay.
    pub relay: bool,
}

/// The first backend of `preference`'s order that `allowed` contains and that is
/// usable; `unavailable` (with a reason naming what was tried) otherwise.
pub fn pick(
    allowed: &[Backend],
    preference: Preference,
    usable: Usable,
    unavailable: ErrorCode,
    engine: &str,
) -> ApiResult<Backend> {
    let candidates: Vec<Backend> = preference
        .order()
        .iter()
        .copied()
        .filter(|b| allowed.contains(b))
        .collect();
    candidates
        .iter()
        .copied()
        .find(|backend| match backend {
            Backend::Local => usable.local,
            Backend::Relay => usable.relay,
        })
        .ok_or_else(|| {
            let tried: Vec<&str> = candidates.iter().map(|b| b.as_str()).collect();
            let reason = if tried.is_empty() {
                "the tenant policy allows no backend for this preference".to_owned()
            } else {
                format!(
                    "no usable backend among {tried:?} (A needs an online node with {engine} \
                     loaded; B needs the managed relay configured)"
                )
            };
            ApiError::new(unavailable, reason)
        })
}

/// A policy's `allowed_backends` as given in a `PATCH`: duplicates dropped, not empty.
pub fn allowed(mut backends: Vec<Backend>) -> ApiResult<Vec<Backend>> {
    backends.sort_by_key(|b| b.as_str());
    backends.dedup();
    if backends.is_empty() {
        return Err(ApiError::invalid("allowed_backends may not be empty")
            .with_field("field", "allowed_backends"));
    }
    Ok(backends)
}
