//! The local JWT issuer: short-lived HS256 access tokens for users who log in with email
//! and password. Only HS256 with our own secret is accepted for `iss = scaigrid`; any other
//! algorithm in the header (including `none`) is rejected before the signature is read.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

pub use crate::config::LOCAL_ISSUER;
const ACCESS_TYPE: &str = "access";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    /// The user's tenant id.
    pub tid: String,
    pub typ: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

pub struct LocalIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl_seconds: u64,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl LocalIssuer {
    pub fn new(secret: &[u8], access_ttl_seconds: u64) -> LocalIssuer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[LOCAL_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        LocalIssuer {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl_seconds,
        }
    }

    pub fn access_ttl_seconds(&self) -> u64 {
        self.access_ttl_seconds
    }

    /// A signed access token for a user.
    pub fn mint(
        &self,
        user_id: &str,
        tenant_id: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = unix_now();
        let claims = AccessClaims {
            iss: LOCAL_ISSUER.to_owned(),
            sub: user_id.to_owned(),
            tid: tenant_id.to_owned(),
            typ: ACCESS_TYPE.to_owned(),
            iat: now,
            exp: now + self.access_ttl_seconds,
            jti: uuid::Uuid::now_v7().simple().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies signature, algorithm, issuer, expiry and token type.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, ErrorCode> {
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => ErrorCode::AUTH_TOKEN_EXPIRED,
                _ => ErrorCode::AUTH_TOKEN_INVALID,
            })?;
        if data.claims.typ != ACCESS_TYPE {
            return Err(ErrorCode::AUTH_TOKEN_INVALID);
        }
        Ok(data.claims)
    }
}

/// The `iss` claim of a JWT, read without verifying anything (only to pick the verifier).
pub fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_tokens_verify() {
        let issuer = LocalIssuer::new(SECRET, 60);
        let token = issuer.mint("usr_1", "ten_1").unwrap();
        let claims = issuer.verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.tid.as_str()),
            ("usr_1", "ten_1")
        );
        assert_eq!(peek_issuer(&token).as_deref(), Some(LOCAL_ISSUER));
    }

    #[test]
    fn other_secrets_and_expired_tokens_fail() {
        let issuer = LocalIssuer::new(SECRET, 60);
        let other = LocalIssuer::new(b"another-secret-another-secret-xx", 60);
        let token = other.mint("usr_1", "ten_1").unwrap();
        assert_eq!(
            issuer.verify(&token).unwrap_err(),
            ErrorCode::AUTH_TOKEN_INVALID
        );

        let expired = AccessClaims {
            iss: LOCAL_ISSUER.into(),
            sub: "usr_1".into(),
            tid: "ten_1".into(),
            typ: "access".into(),
            iat: 1,
            exp: unix_now() - 3600,
            jti: "x".into(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            issuer.verify(&token).unwrap_err(),
            ErrorCode::AUTH_TOKEN_EXPIRED
        );
    }

    #[test]
    fn alg_none_is_rejected() {
        use base64::Engine;
        let issuer = LocalIssuer::new(SECRET, 60);
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let payload = format!(
            r#"{{"iss":"scaigrid","sub":"usr_1","tid":"ten_1","typ":"access","iat":1,"exp":{},"jti":"x"}}"#,
            unix_now() + 600
        );
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&payload)
        );
        assert_eq!(
            issuer.verify(&token).unwrap_err(),
            ErrorCode::AUTH_TOKEN_INVALID
        );
    }
}
