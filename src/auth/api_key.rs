//! API keys: `sgk_` + 32 random bytes (base64url), stored only as SHA-256.
//!
//! A plain hash is enough because the key carries 256 bits of entropy: nothing to
//! brute-force, and verification stays a microsecond on the hot path.

use base64::Engine;
use sha2::{Digest, Sha256};

pub use crate::records::{API_KEY_PREFIX as PREFIX, validate_api_key_format as validate_format};
/// Characters of the key kept for display (`sgk_` plus 8).
const DISPLAY_LEN: usize = 12;
/// A new random key (shown once to its creator).
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The part of a key shown in lists.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_valid_unique_and_hash_stably() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(validate_format(&a).is_ok());
        assert_eq!(a.len(), 4 + 43);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(display_prefix(&a).len(), 12);
    }

    #[test]
    fn format_checks() {
        assert!(validate_format("sk_abc").is_err());
        assert!(validate_format("sgk_short").is_err());
        assert!(validate_format("sgk_aaaaaaaaaaaaaaaaaaaaaaaa'--").is_err());
        assert!(validate_format("sgk_test_admin_key_0123456789").is_ok());
    }
}
