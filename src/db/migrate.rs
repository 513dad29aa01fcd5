//! Schema migrations: numbered SQL files embedded in the binary, applied in order, each
//! in its own transaction, recorded in `schema_migrations`.
//!
//! One folder serves both engines because the SQL is kept portable (see `db`). They run
//! on every start and with `scaigrid migrate`.

use anyhow::Context;
use sqlx::AssertSqlSafe;
use sqlx::Row;

use super::{Db, now_ms};

/// (version, name, SQL) in ascending version order. Append; never edit a shipped one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("migrations/0001_foundation.sql"),
    ),
    (2, "scaiecho", include_str!("migrations/0002_scaiecho.sql")),
    (3, "speakers", include_str!("migrations/0003_speakers.sql")),
    (
        4,
        "scaispeak",
        include_str!("migrations/0004_scaispeak.sql"),
    ),
    (5, "voices", include_str!("migrations/0005_voices.sql")),
    (
        6,
        "reference_media_types",
        include_str!("migrations/0006_reference_media_types.sql"),
    ),
    (7, "gateway", include_str!("migrations/0007_gateway.sql")),
    (
        8,
        "webrtc_sessions",
        include_str!("migrations/0008_webrtc_sessions.sql"),
    ),
    (
        9,
        "hardening",
        include_str!("migrations/0009_hardening.sql"),
    ),
    (10, "erasures", include_str!("migrations/0010_erasures.sql")),
    (
        11,
        "context_length",
        include_str!("migrations/0011_context_length.sql"),
    ),
    (
        12,
        "webrtc_edge",
        include_str!("migrations/0012_webrtc_edge.sql"),
    ),
    (
        13,
        "instances",
        include_str!("migrations/0013_instances.sql"),
    ),
    (14, "balances", include_str!("migrations/0014_balances.sql")),
    (
        15,
        "balancers",
        include_str!("migrations/0015_balancers.sql"),
    ),
    (
        16,
        "failure_reasons",
        include_str!("migrations/0016_failure_reasons.sql"),
    ),
    (17, "metering", include_str!("migrations/0017_metering.sql")),
    (18, "console", include_str!("migrations/0018_console.sql")),
    (19, "firewall", include_str!("migrations/0019_firewall.sql")),
    (20, "workers", include_str!("migrations/0020_workers.sql")),
    (
        21,
        "chat_cache",
        include_str!("migrations/0021_chat_cache.sql"),
    ),
    (
        22,
        "trace_context",
        include_str!("migrations/0022_trace_context.sql"),
    ),
];

/// Key of the PostgreSQL advisory lock that migrations run under.
const LOCK: i64 = 0x5ca1_9a1d_0001;

/// Applies every migration not yet recorded. Returns how many ran.
///
/// On PostgreSQL, processes of a deployment start together (compose starts both edges
/// and the worker at once) and would race to create the same tables; they take turns
/// under a session advisory lock, so the first one migrates and the others find the
/// work done. SQLite has one process.
pub async fn run(db: &Db) -> anyhow::Result<usize> {
    let mut conn = db.pool.acquire().await?;
    let postgres = db.kind == super::DbKind::Postgres;
    if postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK)
            .execute(&mut *conn)
            .await
            .context("waiting for the migration lock")?;
    }
    let applied = apply(db, &mut conn).await;
    if postgres {
        // The lock also ends with the connection, should this fail.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK)
            .execute(&mut *conn)
            .await;
    }
    applied
}

async fn apply(db: &Db, conn: &mut sqlx::AnyConnection) -> anyhow::Result<usize> {
    use sqlx::Connection;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await
    .context("creating schema_migrations")?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let mut tx = match db.kind {
            super::DbKind::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            super::DbKind::Postgres => conn.begin().await?,
        };
        for statement in statements(sql) {
            sqlx::query(AssertSqlSafe(statement.as_str()))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("migration {version} ({name}) failed at: {statement}"))?;
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(*version)
        .bind(*name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// `scaigrid migrate`: connect, apply, report.
pub async fn run_standalone(config: &crate::config::DatabaseConfig) -> anyhow::Result<()> {
    let db = Db::connect(config).await?;
    let applied = run(&db).await?;
    tracing::info!(applied, "database is up to date");
    Ok(())
}

/// Splits a script into statements: `--` comments dropped, split on `;` at line ends.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or_default().trim_end();
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_owned());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_drops_comments() {
        let parts =
            statements("-- hi\nCREATE TABLE a (x TEXT); -- tail\n\nCREATE INDEX b ON a(x);\n");
        assert_eq!(
            parts,
            vec!["CREATE TABLE a (x TEXT)", "CREATE INDEX b ON a(x)"]
        );
    }

    #[test]
    fn versions_ascend() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
