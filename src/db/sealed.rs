//! The columns holding sealed secrets (see `vault`), and the start-up pass that seals
//! what is still plaintext or sealed under a previous key.

use anyhow::Context;
use sqlx::{AssertSqlSafe, Row};

use super::{Db, DbKind};
use crate::vault::{Vault, context};

/// (table, columns): every column of a row is sealed with the context `<table>:<id>`.
pub const SEALED: &[(&str, &[&str])] = &[
    ("gateway_backends", &["api_key"]),
    ("webhooks", &["secret", "previous_secret"]),
];

/// What a [`reseal`] pass rewrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Values rewritten in all.
    pub values: usize,
    /// Of those, values that were plaintext.
    pub from_plaintext: usize,
}

/// Rewrites every sealed column that is plaintext or sealed under an old key. A value
/// sealed under a key this process does not have stops the start: serving without it
/// would fail every call that needs it.
///
/// SQLite keeps the bytes of replaced rows in free pages and the write-ahead log, so
/// after sealing plaintext the file is vacuumed and the log truncated: the old values
/// are gone from disk, not just from the table. (PostgreSQL keeps dead row versions
/// until its own vacuum; the log says so.)
pub async fn reseal(db: &Db, vault: &Vault) -> anyhow::Result<Resealed> {
    let mut done = Resealed::default();
    for (table, columns) in SEALED {
        let select = format!("SELECT id, {} FROM {table}", columns.join(", "));
        let rows = sqlx::query(AssertSqlSafe(select))
            .fetch_all(&db.pool)
            .await
            .with_context(|| format!("reading {table}"))?;
        for row in rows {
            let id: String = row.try_get("id")?;
            for column in *columns {
                let Some(stored) = row.try_get::<Option<String>, _>(*column)? else {
                    continue;
                };
                if vault.is_current(&stored) {
                    continue;
                }
                let context = context(table, &id);
                let plaintext = vault
                    .open(&stored, &context)
                    .with_context(|| format!("{table}.{column} of {id}"))?;
                let update =
                    format!("UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3");
                sqlx::query(AssertSqlSafe(update))
                    .bind(vault.seal(&plaintext, &context))
                    .bind(&id)
                    .bind(&stored)
                    .execute(&db.pool)
                    .await?;
                done.values += 1;
                if !stored.starts_with("sgv1:") {
                    done.from_plaintext += 1;
                }
            }
        }
    }
    if done.from_plaintext > 0 {
        match db.kind {
            DbKind::Sqlite => {
                for statement in [
                    "PRAGMA wal_checkpoint(TRUNCATE)",
                    "VACUUM",
                    "PRAGMA wal_checkpoint(TRUNCATE)",
                ] {
                    sqlx::query(statement)
                        .execute(&db.pool)
                        .await
                        .with_context(|| format!("scrubbing replaced plaintext: {statement}"))?;
                }
            }
            DbKind::Postgres => tracing::warn!(
                sealed = done.from_plaintext,
                "plaintext secrets were sealed; their old row versions stay on disk until \
                 `VACUUM FULL gateway_backends, webhooks` (or autovacuum reuses the space)"
            ),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;

    async fn api_key(db: &Db, id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT api_key FROM gateway_backends WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn plaintext_and_old_keys_are_resealed_and_a_foreign_key_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DatabaseConfig::Sqlite {
            path: dir.path().join("t.db"),
        })
        .await
        .unwrap();
        crate::db::migrate::run(&db).await.unwrap();
        let old = Vault::new(&[1; 32], &[]);
        let rows = [
            ("be_plain", Some("sk-plain".to_owned())),
            (
                "be_old",
                Some(old.seal("sk-old", &context("gateway_backends", "be_old"))),
            ),
            ("be_none", None),
        ];
        for (id, key) in &rows {
            sqlx::query(
                "INSERT INTO gateway_backends (id, name, kind, base_url, api_key, timeout_s, \
                 created_at, updated_at) VALUES ($1, $1, 'openai', 'http://x', $2, 30, 0, 0)",
            )
            .bind(id)
            .bind(key)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        let vault = Vault::new(&[2; 32], &[[1; 32]]);
        assert_eq!(
            reseal(&db, &vault).await.unwrap(),
            Resealed {
                values: 2,
                from_plaintext: 1
            }
        );
        for (id, plaintext) in [("be_plain", "sk-plain"), ("be_old", "sk-old")] {
            let stored = api_key(&db, id).await.unwrap();
            assert!(vault.is_current(&stored), "{id}: {stored}");
            assert!(!stored.contains(plaintext));
            let context = context("gateway_backends", id);
            assert_eq!(vault.open(&stored, &context).unwrap(), plaintext);
        }
        assert_eq!(api_key(&db, "be_none").await, None);
        // A second start finds nothing to do.
        assert_eq!(reseal(&db, &vault).await.unwrap(), Resealed::default());
        // A process with neither key refuses to start, naming the row.
        let error = reseal(&db, &Vault::new(&[3; 32], &[])).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("gateway_backends.api_key of be_"),
            "{error:#}"
        );
    }
}
