//! The voice catalogue. Global voices are the Piper voices the node loaded (today one,
//! `en_US-joe-medium`); tenant voices (cloning intake) join them with the rest of the
//! ScaiSpeak issue. OpenAI's voice names (`alloy`, ...) are accepted as the default
//! voice so OpenAI clients work unchanged.

use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// Voice names of OpenAI's speech API: all mean "the default voice" here.
const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
];

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Voice {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    /// `global` (shipped with the models) or `tenant` (cloned).
    pub scope: &'static str,
    pub language: String,
    pub sample_rate: u32,
    /// `ready` | `processing` | `failed`.
    pub embedding_status: &'static str,
    pub engine: &'static str,
}

/// The global voices this process can speak with on backend A.
pub fn global(state: &AppState) -> Vec<Voice> {
    let Some(voice) = state.node.as_ref().and_then(|node| node.tts.as_ref()) else {
        return Vec::new();
    };
    vec![Voice {
        id: "en_US-joe-medium".to_owned(),
        object: "scaispeak.voice",
        name: "Joe".to_owned(),
        scope: "global",
        language: "en-US".to_owned(),
        sample_rate: voice.sample_rate(),
        embedding_status: "ready",
        engine: engines::piper::ENGINE_ID,
    }]
}

/// Voices for `GET /voices`, filtered by `scope` and `embedding_status`.
pub fn list(
    state: &AppState,
    scope: Option<&str>,
    embedding_status: Option<&str>,
) -> ApiResult<Vec<Voice>> {
    if let Some(scope) = scope
        && !matches!(scope, "global" | "tenant")
    {
        return Err(
            ApiError::invalid(format!("scope `{scope}` is not global or tenant"))
                .with_field("field", "scope"),
        );
    }
    Ok(global(state)
        .into_iter()
        .filter(|v| scope.is_none_or(|s| s == v.scope))
        .filter(|v| embedding_status.is_none_or(|s| s == v.embedding_status))
        .collect())
}

/// A voice by id (`None`: the default voice). With no local voice (a relay-only
/// deployment) the request still resolves: the relay speaks with its configured voice.
pub fn find(state: &AppState, id: Option<&str>) -> ApiResult<Voice> {
    let voices = global(state);
    let fallback = || Voice {
        id: "default".to_owned(),
        object: "scaispeak.voice",
        name: "Relay default".to_owned(),
        scope: "global",
        language: "en".to_owned(),
        sample_rate: 24_000,
        embedding_status: "ready",
        engine: "relay",
    };
    match id {
        None | Some("default") => Ok(voices.into_iter().next().unwrap_or_else(fallback)),
        Some(name) if OPENAI_VOICES.contains(&name) => {
            Ok(voices.into_iter().next().unwrap_or_else(fallback))
        }
        Some(id) => voices
            .into_iter()
            .find(|v| v.id == id)
            .ok_or_else(|| ApiError::not_found("voice").with_field("field", "voice")),
    }
}
