//! The records the server stores and returns: tenants, users, API keys, roles, modules.
//!
//! These are the response shapes of the admin surface (SPEC "Admin surface"), so field
//! names are API. Times are RFC 3339 strings on the wire and unix milliseconds in the
//! database; [`Timestamp`] converts.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Unix milliseconds, serialized as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ToSchema)]
#[schema(value_type = String, format = DateTime)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }

    /// Parses RFC 3339 (e.g. `2030-01-01T00:00:00Z`).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Timestamp)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).ok_or_else(|| {
            serde::de::Error::custom("expected an RFC 3339 time such as 2030-01-01T00:00:00Z")
        })
    }
}

/// Per-tenant or per-key rate limits; absent fields mean "no limit at this level".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub audio_seconds_per_minute: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    /// `active` or `deleted`.
    pub status: String,
    pub rate_limit: Option<RateLimitSpec>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    /// `active` or `disabled`.
    pub status: String,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the key, to recognise it in lists.
    pub key_prefix: String,
    pub roles: Vec<String>,
    /// Direct permissions of the key (beyond its roles).
    pub permissions: Vec<String>,
    pub rate_limit: Option<RateLimitSpec>,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// When the key last authenticated (to within the principal cache's TTL).
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Role {
    pub id: String,
    /// `null` for built-in roles.
    pub tenant_id: Option<String>,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
}

/// For PATCH fields where `null` (clear) differs from absent (keep): absent is `None`
/// through `#[serde(default)]`, present is `Some(value or None)`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Parses a JSON column into `T`, treating NULL and garbage alike as absent (garbage is
/// logged: it can only come from outside the server).
pub fn json_column<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    let text = text?;
    serde_json::from_str(&text)
        .inspect_err(|error| tracing::warn!(%error, "unreadable JSON column"))
        .ok()
}

/// What every API key starts with.
pub const API_KEY_PREFIX: &str = "sgk_";

/// Characters after the prefix, at least.
const API_KEY_MIN_SECRET_LEN: usize = 24;

/// Whether a string has the shape of an API key (used for operator-supplied bootstrap keys).
pub fn validate_api_key_format(key: &str) -> Result<(), &'static str> {
    let Some(secret) = key.strip_prefix(API_KEY_PREFIX) else {
        return Err("must start with `sgk_`");
    };
    if secret.len() < API_KEY_MIN_SECRET_LEN {
        return Err("needs at least 24 characters after `sgk_`");
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may contain only letters, digits, `-` and `_` after `sgk_`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::parse_rfc3339("2030-01-02T03:04:05.678Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2030-01-02T03:04:05.678Z");
        assert!(Timestamp::parse_rfc3339("tomorrow").is_none());
    }
}
