//! In-memory cache of authenticated principals, so the hot path of an API-key request
//! is a hash and a map lookup rather than a database round trip.
//!
//! Correctness rule: a revoked key must stop working at once. Revocation (and any role,
//! grant or tenant change) calls [`PrincipalCache::invalidate`], which also bumps a
//! generation counter; a load that started before the bump does not insert its (possibly
//! stale) result. Entries also expire after a TTL, which bounds staleness for changes
//! made by other processes until the Redis broadcast of the scaled deployment lands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::principal::Principal;
use crate::error::{ApiError, ErrorCode};

/// Beyond this many entries the cache starts over (a crude but safe bound).
const MAX_ENTRIES: usize = 100_000;

/// How long an unknown or revoked key is answered from memory. A client stuck on a bad
/// key (or a flood of the same one) costs a hash and a lookup, not a database query.
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);
const MAX_REFUSALS: usize = 10_000;

struct Entry {
    principal: Arc<Principal>,
    loaded: Instant,
}

pub struct PrincipalCache {
    entries: RwLock<HashMap<String, Entry>>,
    /// Keys known to be refused, with why (the code and message they were refused with).
    refusals: RwLock<HashMap<String, (ErrorCode, &'static str, Instant)>>,
    generation: AtomicU64,
    ttl: Duration,
}

impl PrincipalCache {
    pub fn new(ttl: Duration) -> PrincipalCache {
        PrincipalCache {
            entries: RwLock::new(HashMap::new()),
            refusals: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Principal>> {
        let entries = self.entries.read().ok()?;
        let entry = entries.get(key)?;
        (entry.loaded.elapsed() < self.ttl).then(|| entry.principal.clone())
    }

    /// Call before loading from the database; pass the value to [`Self::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn insert(&self, key: String, principal: Arc<Principal>, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the write lock: an invalidation either happened before (we skip)
        // or will happen after (and remove what we insert).
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                principal,
                loaded: Instant::now(),
            },
        );
    }

    /// A refusal remembered for `key` within [`REFUSAL_TTL`].
    pub fn refusal(&self, key: &str) -> Option<ApiError> {
        let refusals = self.refusals.read().ok()?;
        let (code, message, at) = refusals.get(key)?;
        (at.elapsed() < REFUSAL_TTL).then(|| ApiError::new(*code, *message))
    }

    /// Remembers that `key` was refused (unknown or revoked: neither changes back).
    pub fn insert_refusal(&self, key: String, code: ErrorCode, message: &'static str) {
        let Ok(mut refusals) = self.refusals.write() else {
            return;
        };
        if refusals.len() >= MAX_REFUSALS {
            refusals.retain(|_, (_, _, at)| at.elapsed() < REFUSAL_TTL);
            if refusals.len() >= MAX_REFUSALS {
                refusals.clear();
            }
        }
        refusals.insert(key, (code, message, Instant::now()));
    }

    /// Drops everything (a key was revoked, roles or a tenant changed).
    pub fn invalidate(&self) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
        if let Ok(mut refusals) = self.refusals.write() {
            refusals.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::Subject;
    use crate::rbac::PermissionSet;

    fn principal() -> Arc<Principal> {
        Arc::new(Principal {
            subject: Subject::ApiKey {
                id: "key_1".into(),
                name: "k".into(),
            },
            tenant_id: "ten_1".into(),
            tenant_slug: "t".into(),
            roles: vec![],
            permissions: PermissionSet::default(),
            rate_limit: None,
            tenant_rate_limit: None,
            modules: vec![],
            expires_at: None,
        })
    }

    #[test]
    fn invalidation_wins_over_a_racing_load() {
        let cache = PrincipalCache::new(Duration::from_secs(60));
        let generation = cache.generation();
        cache.invalidate();
        cache.insert("k".into(), principal(), generation);
        assert!(cache.get("k").is_none(), "a stale load must not repopulate");
        let generation = cache.generation();
        cache.insert("k".into(), principal(), generation);
        assert!(cache.get("k").is_some());
        cache.invalidate();
        assert!(cache.get("k").is_none());
    }

    #[test]
    fn refusals_are_remembered_until_invalidated_and_stay_bounded() {
        let cache = PrincipalCache::new(Duration::from_secs(60));
        assert!(cache.refusal("bad").is_none());
        cache.insert_refusal(
            "bad".into(),
            ErrorCode::AUTH_TOKEN_INVALID,
            "unknown API key",
        );
        let refusal = cache.refusal("bad").unwrap();
        assert_eq!(refusal.code, ErrorCode::AUTH_TOKEN_INVALID);
        for n in 0..MAX_REFUSALS + 5 {
            cache.insert_refusal(format!("k{n}"), ErrorCode::AUTH_TOKEN_INVALID, "x");
        }
        assert!(cache.refusals.read().unwrap().len() <= MAX_REFUSALS);
        cache.invalidate();
        assert!(cache.refusal("k1").is_none());
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let cache = PrincipalCache::new(Duration::ZERO);
        cache.insert("k".into(), principal(), cache.generation());
        assert!(cache.get("k").is_none());
    }
}
