//! Secrets at rest: upstream API keys and webhook signing secrets are stored sealed with
//! AES-256-GCM under a key from config, so a copy of the database (a backup, a replica, a
//! stolen disk) does not hand out credentials.
//!
//! A sealed value reads `sgv1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id
//! (8 hex digits of a hash of the key) says which key sealed it, so keys can be rotated:
//! the new key becomes `secrets.key`, the old one moves to `secrets.previous_keys`, and the
//! next start re-seals every value under the new key ([`crate::db::sealed::reseal`]).
//! The additional data binds each value to its row (`<table>:<id>`), so a ciphertext
//! copied into another row does not open.
//!
//! A stored value without the prefix is plaintext written before this existed; it opens
//! as itself and is sealed by the next start's re-seal pass.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Marks a sealed value (and its format version).
const PREFIX: &str = "sgv1:";

/// Bytes of a key: AES-256.
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("sealed with key {0}, which is neither secrets.key nor one of secrets.previous_keys")]
    UnknownKey(String),
    #[error("the sealed value is damaged or belongs to another row")]
    Corrupt,
}

struct Key {
    id: String,
    cipher: LessSafeKey,
}

impl Key {
    fn new(bytes: &[u8; KEY_LEN]) -> Key {
        let digest = Sha256::new()
            .chain_update(b"scaigrid-vault-key-id\0")
            .chain_update(bytes)
            .finalize();
        let cipher = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        Key {
            id: hex::encode(&digest[..4]),
            cipher: LessSafeKey::new(cipher),
        }
    }
}

/// Seals and opens stored secrets. Cheap to share behind an `Arc`.
pub struct Vault {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.current.id)
            .field("previous", &self.previous.len())
            .finish()
    }
}

/// The additional data of a value stored in `table`'s row `id`.
pub fn context(table: &str, id: &str) -> String {
    format!("{table}:{id}")
}

impl Vault {
    pub fn new(current: &[u8; KEY_LEN], previous: &[[u8; KEY_LEN]]) -> Vault {
        Vault {
            current: Key::new(current),
            previous: previous.iter().map(Key::new).collect(),
        }
    }

    /// The id of the key new values are sealed with.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plaintext` for the row named by `context` (see [`context`]).
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut buffer = plaintext.as_bytes().to_vec();
        self.current
            .cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut buffer,
            )
            .expect("AES-GCM sealing of an in-memory buffer");
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&buffer);
        format!(
            "{PREFIX}{}:{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(sealed)
        )
    }

    /// The plaintext of a stored value: sealed ones are opened with the key that sealed
    /// them; legacy plaintext comes back as it is.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, VaultError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, body) = rest.split_once(':').ok_or(VaultError::Corrupt)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == id)
            .ok_or_else(|| VaultError::UnknownKey(id.to_owned()))?;
        let mut sealed = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| VaultError::Corrupt)?;
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(VaultError::Corrupt);
        }
        let mut in_out = sealed.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&sealed).map_err(|_| VaultError::Corrupt)?;
        let plaintext = key
            .cipher
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| VaultError::Corrupt)?;
        String::from_utf8(plaintext.to_vec()).map_err(|_| VaultError::Corrupt)
    }

    /// Whether a stored value is sealed under the current key (else the re-seal pass
    /// rewrites it).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.current.id)
    }
}

/// Parses a configured key: 64 hex digits or standard/url-safe base64 of 32 bytes.
pub fn parse_key(text: &str) -> Result<[u8; KEY_LEN], String> {
    let text = text.trim();
    let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| "must be 64 hex digits or base64 of 32 bytes".to_owned())?
    };
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        format!(
            "must be {KEY_LEN} bytes (64 hex digits or base64), not {}",
            bytes.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(key: u8) -> Vault {
        Vault::new(&[key; KEY_LEN], &[])
    }

    #[test]
    fn a_sealed_value_opens_to_its_plaintext_and_hides_it() {
        let vault = vault(7);
        let sealed = vault.seal("sk-upstream-123", "gateway_backends:be_1");
        assert!(sealed.starts_with(&format!("sgv1:{}:", vault.key_id())));
        assert!(!sealed.contains("sk-upstream"));
        assert_eq!(
            vault.open(&sealed, "gateway_backends:be_1").unwrap(),
            "sk-upstream-123"
        );
        // Fresh nonce each time.
        assert_ne!(
            sealed,
            vault.seal("sk-upstream-123", "gateway_backends:be_1")
        );
        assert!(vault.is_current(&sealed));
    }

    #[test]
    fn a_value_copied_into_another_row_does_not_open() {
        let vault = vault(7);
        let sealed = vault.seal("secret", "webhooks:wh_a");
        assert_eq!(
            vault.open(&sealed, "webhooks:wh_b"),
            Err(VaultError::Corrupt)
        );
    }

    #[test]
    fn tampering_and_truncation_are_refused() {
        let vault = vault(7);
        let sealed = vault.seal("secret", "t:1");
        let mut flipped = sealed.into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(vault.open(&flipped, "t:1"), Err(VaultError::Corrupt));
        for broken in [
            format!("sgv1:{}", vault.key_id()),
            format!("sgv1:{}:", vault.key_id()),
            format!("sgv1:{}:AAAA", vault.key_id()),
            format!("sgv1:{}:!!!", vault.key_id()),
        ] {
            assert_eq!(
                vault.open(&broken, "t:1"),
                Err(VaultError::Corrupt),
                "{broken}"
            );
        }
    }

    #[test]
    fn old_keys_open_what_they_sealed_and_unknown_keys_are_named() {
        let old = vault(1);
        let sealed = old.seal("secret", "t:1");
        let rotated = Vault::new(&[2; KEY_LEN], &[[1; KEY_LEN]]);
        assert_eq!(rotated.open(&sealed, "t:1").unwrap(), "secret");
        assert!(!rotated.is_current(&sealed));
        let stranger = vault(3);
        assert_eq!(
            stranger.open(&sealed, "t:1"),
            Err(VaultError::UnknownKey(old.key_id().to_owned()))
        );
    }

    #[test]
    fn legacy_plaintext_opens_as_itself_and_is_not_current() {
        let vault = vault(7);
        assert_eq!(vault.open("sk-plain", "t:1").unwrap(), "sk-plain");
        assert!(!vault.is_current("sk-plain"));
    }

    #[test]
    fn keys_parse_from_hex_or_base64_of_32_bytes_only() {
        let hex_key = "00".repeat(31) + "ff";
        assert_eq!(parse_key(&hex_key).unwrap()[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(parse_key(&b64).unwrap(), [9u8; 32]);
        let b64url = URL_SAFE_NO_PAD.encode([250u8; 32]);
        assert_eq!(parse_key(&b64url).unwrap(), [250u8; 32]);
        assert!(parse_key("short").is_err());
        assert!(parse_key(&base64::engine::general_purpose::STANDARD.encode([1u8; 16])).is_err());
    }
}
