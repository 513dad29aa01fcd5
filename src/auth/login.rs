//! What guards `/v1/auth/token` against guessing and against being used to find accounts.
//!
//! - Each password check is argon2id, tens of milliseconds of a core and 19 MiB: they run
//!   on `[auth] concurrent_password_checks` threads of their own, the rest wait their
//!   turn (up to [`QUEUE`], then 503), so a flood of logins cannot take every core from
//!   the requests being served. Own threads also bound the memory: glibc keeps each
//!   thread's freed 19 MiB in that thread's arena, and checks spread over the blocking
//!   pool grew a 500-login flood's resident set by 307 MiB.
//! - An unknown email is checked against a hash made at start with the same parameters
//!   and answered like a wrong password: same code, same message, the same work.
//! - The attempts are counted (in the rate-limit store, so every process of a scaled
//!   deployment counts together): per client address, every attempt; per email, every
//!   failure. Over either: 429 `RATE_LIMITED` with `Retry-After`. The per-email count lets
//!   someone who guesses from many addresses slow one account's logins down; that is the
//!   price of not letting them guess without limit.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sha2::Digest;

use super::password;
use crate::config::AuthConfig;
use axum::http::HeaderValue;
use axum::http::header::RETRY_AFTER;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::ratelimit::Limits;

/// Checks waiting for a thread before logins are answered 503.
const QUEUE: usize = 1024;

/// One password check for the checking threads.
struct Check {
    plain: String,
    stored: String,
    answer: tokio::sync::oneshot::Sender<bool>,
}

pub struct LoginGuard {
    checks: std::sync::mpsc::SyncSender<Check>,
    /// Verified against when the email is unknown or has no password.
    stand_in: String,
    per_ip: u64,
    per_email: u64,
}

impl LoginGuard {
    pub fn new(config: &AuthConfig) -> anyhow::Result<LoginGuard> {
        let stand_in = password::hash(&hex::encode(rand::random::<[u8; 16]>()))
            .map_err(|e| anyhow::anyhow!("hashing the stand-in password: {e}"))?;
        let (checks, queue) = std::sync::mpsc::sync_channel::<Check>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..config.concurrent_password_checks {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || {
                    loop {
                        let next = queue.lock().map(|queue| queue.recv());
                        let Ok(Ok(check)) = next else { return };
                        let matches = password::verify(&check.plain, &check.stored);
                        let _ = check.answer.send(matches);
                    }
                })?;
        }
        Ok(LoginGuard {
            checks,
            stand_in,
            per_ip: config.login_attempts_per_minute_per_ip,
            per_email: config.login_failures_per_minute_per_email,
        })
    }

    /// Counts an attempt from `client` for `email`, or refuses it.
    pub async fn admit(&self, limits: &Limits, client: IpAddr, email: &str) -> ApiResult<()> {
        limits
            .take_named(&ip_key(client), "login_ip", self.per_ip)
            .await?;
        limits
            .peek_named(&email_key(email), "login_email", self.per_email)
            .await
    }

    /// Counts a sign-in with an API key from `client` (the console's key login), as
    /// guessing keys there must cost what guessing passwords costs.
    pub async fn admit_ip(&self, limits: &Limits, client: IpAddr) -> ApiResult<()> {
        limits
            .take_named(&ip_key(client), "login_ip", self.per_ip)
            .await
    }

    /// Counts a failed attempt against `email`.
    pub async fn failed(&self, limits: &Limits, email: &str) {
        limits.charge_named(&email_key(email), self.per_email).await;
    }

    /// Whether `plain` is the password of `stored` (`None`: no such account, or one without
    /// a password, which costs the same and is never true).
    pub async fn verify(&self, plain: String, stored: Option<String>) -> ApiResult<bool> {
        let exists = stored.is_some();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let check = Check {
            plain,
            stored: stored.unwrap_or_else(|| self.stand_in.clone()),
            answer,
        };
        if let Err(error) = self.checks.try_send(check) {
            return Err(match error {
                std::sync::mpsc::TrySendError::Full(_) => ApiError::new(
                    ErrorCode::SERVICE_UNAVAILABLE,
                    "too many logins are waiting; retry shortly",
                )
                .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
                std::sync::mpsc::TrySendError::Disconnected(_) => {
                    ApiError::internal("the password-check threads are gone")
                }
            });
        }
        let matches = answered.await.map_err(ApiError::internal)?;
        Ok(exists && matches)
    }
}

/// IPv6 clients are counted by /64: one host commonly holds a whole /64.
fn ip_key(client: IpAddr) -> String {
    match client {
        IpAddr::V4(v4) => format!("login:ip:{v4}"),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            format!("login:ip:{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// Emails are keyed by a hash (no addresses in Redis keys), case-insensitively.
fn email_key(email: &str) -> String {
    let digest = sha2::Sha256::digest(email.trim().to_lowercase().as_bytes());
    format!("login:email:{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_v6_hosts_and_ignore_email_case() {
        assert_eq!(
            ip_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            ip_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            ip_key("2001:db8:1:2::1".parse().unwrap()),
            ip_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(email_key("Ada@Example.com "), email_key("ada@example.com"));
        assert!(!email_key("ada@example.com").contains("ada"));
    }
}
