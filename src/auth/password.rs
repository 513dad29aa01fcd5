//! Password hashing with argon2id (PHC strings). CPU-heavy: call from `spawn_blocking`.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};

pub const MIN_LENGTH: usize = 8;

pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_and_are_argon2id() {
        let stored = super::hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", &stored));
        assert!(!super::verify("wrong horse", &stored));
        assert!(!super::verify("correct horse", "not a hash"));
    }
}
