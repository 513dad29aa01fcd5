//! Delivery signatures: `X-Scaigrid-Signature: t=<unix seconds>,v1=<hex>` where the hex
//! is HMAC-SHA256 over `<t>.<body>` with the webhook's secret. Receivers recompute it,
//! compare in constant time and reject old timestamps (replay).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const HEADER: &str = "x-scaigrid-signature";

/// HMAC-SHA256 of `message` under `key`, hex.
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The signature header value for a body sent at `timestamp`: one `v1=` per secret
/// (the current one first; the one it replaced while their overlap lasts).
pub fn signature(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hmac_hex(secret.as_bytes(), &message));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signatures_cover_time_and_body() {
        let a = signature(&["s"], 1, b"{}");
        assert!(a.starts_with("t=1,v1="));
        assert_ne!(a, signature(&["s"], 2, b"{}"));
        assert_ne!(a, signature(&["s"], 1, b"{ }"));
        assert_ne!(a, signature(&["t"], 1, b"{}"));
        // Two secrets: the first's signature, then the second's.
        let both = signature(&["s", "t"], 1, b"{}");
        let t_only = signature(&["t"], 1, b"{}");
        assert_eq!(both, format!("{a},{}", t_only.trim_start_matches("t=1,")));
    }
}
