//! First-start and every-start set-up: built-in roles, the `platform` tenant with every
//! module enabled, and a platform-admin API key.
//!
//! With `SCAIGRID_BOOTSTRAP_ADMIN_KEY` set, a platform-admin key with exactly that value
//! is made to exist (for automation and tests). Without it, the very first start creates
//! one random key and prints it once.

use crate::config::{Config, KNOWN_MODULES};
use crate::db::roles::seed_builtins;
use crate::db::{Db, api_keys, modules, now_ms, tenants};
use crate::services::api_keys::{CreateApiKey, create_with_key};
use crate::{auth, rbac};

pub async fn run(db: &Db, config: &Config) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    seed_builtins(&mut tx).await?;
    let created = tenants::create(&mut tx, "Platform", tenants::PLATFORM_SLUG).await?;
    let first_start = created.is_some();
    let platform = match created {
        Some(tenant) => tenant,
        None => tenants::get_by_slug(&mut tx, tenants::PLATFORM_SLUG)
            .await?
            .ok_or_else(|| anyhow::anyhow!("platform tenant vanished"))?,
    };
    for module in KNOWN_MODULES {
        modules::set_enabled(&mut tx, &platform.id, module, true).await?;
    }
    tx.commit().await?;

    let admin_key = |name: &str| CreateApiKey {
        name: name.to_owned(),
        roles: Some(vec![rbac::PLATFORM_ADMIN.to_owned()]),
        ..CreateApiKey::default()
    };
    if let Some(key) = &config.bootstrap_admin_key {
        let key = key.expose();
        let mut conn = db.pool.acquire().await?;
        match api_keys::get_by_hash(&mut conn, &auth::api_key::hash(key)).await? {
            Some(existing)
                if existing.revoked_at.is_some()
                    || existing.expires_at.is_some_and(|t| t <= now_ms()) =>
            {
                tracing::warn!(key_id = %existing.id, "the configured bootstrap admin key is revoked or expired; leaving it so");
            }
            Some(_) => {}
            None => {
                create_with_key(
                    db,
                    None,
                    &platform.id,
                    admin_key("bootstrap"),
                    key.to_owned(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating the bootstrap admin key: {e}"))?;
                tracing::info!("created the configured bootstrap admin key");
            }
        }
    } else if first_start {
        let created = create_with_key(
            db,
            None,
            &platform.id,
            admin_key("initial admin"),
            auth::api_key::generate(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the initial admin key: {e}"))?;
        eprintln!(
            "\n  First start: a platform-admin API key was created. It is shown only now:\n\n    {}\n",
            created.key
        );
    }
    Ok(())
}
