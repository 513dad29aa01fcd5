//! A tenant's ScaiEcho policy and the backend resolver (pure logic).
//!
//! Backend `A` is the local inference node, `B` the managed OpenAI-compatible relay.
//! The resolver walks the preference's order, skips backends the policy does not allow
//! or that are not usable now, and takes the first one left; nothing left is
//! `SCAIECHO_BACKEND_UNAVAILABLE` (502). `prefer_*` falls through to the other backend,
//! `self_hosted` / `managed` pin one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorCode};

pub use crate::speech::backends::{Backend, Preference, Usable};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    pub allowed_backends: Vec<Backend>,
    pub backend_preference: Preference,
    /// Audio longer than this becomes an async job.
    pub inline_threshold_seconds: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_backends: vec![Backend::Local, Backend::Relay],
            backend_preference: Preference::Any,
            inline_threshold_seconds: 120.0,
        }
    }
}

/// `PATCH /tenant-policy`: any subset of the fields.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    pub allowed_backends: Option<Vec<Backend>>,
    pub backend_preference: Option<Preference>,
    pub inline_threshold_seconds: Option<f64>,
}

impl Policy {
    pub fn apply(mut self, patch: PolicyPatch) -> ApiResult<Policy> {
        if let Some(backends) = patch.allowed_backends {
            self.allowed_backends = crate::speech::backends::allowed(backends)?;
        }
        if let Some(preference) = patch.backend_preference {
            self.backend_preference = preference;
        }
        if let Some(seconds) = patch.inline_threshold_seconds {
            if !(0.0..=86_400.0).contains(&seconds) {
                return Err(
                    ApiError::invalid("inline_threshold_seconds must be 0..=86400")
                        .with_field("field", "inline_threshold_seconds"),
                );
            }
            self.inline_threshold_seconds = seconds;
        }
        Ok(self)
    }
}

/// The backend for a request: its own preference or the policy's default.
pub fn resolve(
    policy: &Policy,
    requested: Option<Preference>,
    usable: Usable,
) -> ApiResult<Backend> {
    crate::speech::backends::pick(
        &policy.allowed_backends,
        requested.unwrap_or(policy.backend_preference),
        usable,
        ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE,
        "speech to text",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[Backend], preference: Preference) -> Policy {
        Policy {
            allowed_backends: allowed.to_vec(),
            backend_preference: preference,
            inline_threshold_seconds: 60.0,
        }
    }

    #[test]
    fn preferences_fall_through_and_pins_do_not() {
        use Backend::{Local as A, Relay as B};
        let both = Usable {
            local: true,
            relay: true,
        };
        let no_a = Usable {
            local: false,
            relay: true,
        };
        let ab = policy(&[A, B], Preference::Any);
        assert_eq!(resolve(&ab, None, both).unwrap(), A);
        assert_eq!(resolve(&ab, None, no_a).unwrap(), B);
        assert_eq!(
            resolve(&ab, Some(Preference::PreferSelfHosted), no_a).unwrap(),
            B
        );
        assert_eq!(
            resolve(&ab, Some(Preference::PreferManaged), both).unwrap(),
            B
        );
        let pinned = resolve(&ab, Some(Preference::SelfHosted), no_a).unwrap_err();
        assert_eq!(pinned.code, ErrorCode::SCAIECHO_BACKEND_UNAVAILABLE);
        // The policy's allowed list wins over the request.
        let only_a = policy(&[A], Preference::Any);
        assert!(resolve(&only_a, Some(Preference::Managed), both).is_err());
        assert!(resolve(&only_a, None, no_a).is_err());
        assert!(Preference::parse("prefer_self_hosted").is_ok());
        assert!(Preference::parse("fastest").is_err());
    }

    #[test]
    fn patches_validate() {
        let patched = Policy::default()
            .apply(PolicyPatch {
                allowed_backends: Some(vec![Backend::Relay]),
                inline_threshold_seconds: Some(30.0),
                ..PolicyPatch::default()
            })
            .unwrap();
        assert_eq!(patched.allowed_backends, vec![Backend::Relay]);
        assert_eq!(patched.backend_preference, Preference::Any);
        assert!(
            Policy::default()
                .apply(PolicyPatch {
                    allowed_backends: Some(vec![]),
                    ..PolicyPatch::default()
                })
                .is_err()
        );
    }
}
