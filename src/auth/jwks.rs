//! External JWT issuers verified against their JSON Web Key Set.
//!
//! Only asymmetric algorithms are accepted (RS*, PS*, ES*, EdDSA), and the header's
//! algorithm must match the key it names: an `HS256` token "signed" with a public key as
//! HMAC secret (algorithm confusion) or an `alg: none` token never reaches a verifier.
//! Keys are fetched on first use and re-fetched when a token names an unknown `kid`, at
//! most once per [`REFETCH_INTERVAL`], so key rotation works without hammering the issuer.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::ExternalIssuer;
use crate::error::{ApiError, ErrorCode};

const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct ExternalClaims {
    pub sub: String,
    pub email: Option<String>,
    /// `true` (some issuers send the string `"true"`).
    #[serde(default)]
    pub email_verified: Option<serde_json::Value>,
}

impl ExternalClaims {
    pub fn email_is_verified(&self) -> bool {
        match &self.email_verified {
            Some(serde_json::Value::Bool(verified)) => *verified,
            Some(serde_json::Value::String(text)) => text == "true",
            _ => false,
        }
    }
}

struct KeyState {
    set: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

pub struct ExternalVerifier {
    config: ExternalIssuer,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<KeyState>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::AUTH_TOKEN_INVALID, message)
}

/// Whether the header's algorithm fits the key's type (and the key's declared `alg`).
fn algorithm_fits(alg: Algorithm, jwk: &Jwk) -> bool {
    use Algorithm::*;
    if let Some(declared) = &jwk.common.key_algorithm
        && declared.to_string() != format!("{alg:?}")
    {
        return false;
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => matches!(alg, EdDSA),
        // Symmetric keys (and kinds added later) have no place here.
        _ => false,
    }
}

impl ExternalVerifier {
    pub fn new(config: ExternalIssuer, http: reqwest::Client) -> ExternalVerifier {
        ExternalVerifier {
            config,
            http,
            keys: tokio::sync::Mutex::new(KeyState {
                set: None,
                fetched_at: None,
            }),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    pub fn config(&self) -> &ExternalIssuer {
        &self.config
    }

    async fn fetch(&self) -> Result<JwkSet, ApiError> {
        let response = self
            .http
            .get(&self.config.jwks_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|error| {
                tracing::warn!(issuer = %self.config.issuer, %error, "JWKS fetch failed");
                ApiError::new(
                    ErrorCode::SERVICE_UNAVAILABLE,
                    "the token issuer's key set is unreachable",
                )
                .with_field("dependency", "jwks")
            })?;
        response.json::<JwkSet>().await.map_err(|error| {
            tracing::warn!(issuer = %self.config.issuer, %error, "JWKS unreadable");
            ApiError::new(
                ErrorCode::SERVICE_UNAVAILABLE,
                "the token issuer's key set is unreadable",
            )
            .with_field("dependency", "jwks")
        })
    }

    /// The key for `kid`, fetching the set when missing and the last fetch is not recent.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, ApiError> {
        let mut state = self.keys.lock().await;
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if let Some(jwk) = state.set.as_ref().and_then(find) {
            return Ok(jwk);
        }
        let recent = state
            .fetched_at
            .is_some_and(|t| t.elapsed() < REFETCH_INTERVAL);
        if recent {
            return Err(invalid("token signed by an unknown key"));
        }
        let set = self.fetch().await?;
        state.fetched_at = Some(Instant::now());
        let found = find(&set);
        state.set = Some(set);
        found.ok_or_else(|| invalid("token signed by an unknown key"))
    }

    /// Verifies the token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<ExternalClaims, ApiError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token header"))?;
        let jwk = self.key(header.kid.as_deref()).await?;
        if !algorithm_fits(header.alg, &jwk) {
            return Err(invalid("token algorithm does not match the issuer's key"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("issuer key unusable"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<ExternalClaims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::new(ErrorCode::AUTH_TOKEN_EXPIRED, "token expired")
                }
                _ => invalid(format!("token rejected: {error}")),
            })
    }
}
