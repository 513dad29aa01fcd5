//! The database: one pool over SQLite (embedded default) or PostgreSQL (scaled), with
//! the same portable SQL for both.
//!
//! Queries go through sqlx's `Any` driver so each repository function is written once.
//! The SQL is kept portable: `$N` placeholders (SQLite accepts them), TEXT ids, BIGINT
//! unix-millisecond times and 0/1 flags, JSON as TEXT. Repositories live one per table
//! family in the submodules; they take `&Db` or a transaction and know nothing of HTTP.

pub mod accounting;
pub mod api_keys;
pub mod audit;
pub mod balancers;
pub mod balances;
pub mod events;
pub mod evictions;
pub mod firewall;
pub mod gateway;
pub mod instances;
pub mod jobs;
pub mod migrate;
pub mod modules;
pub mod page;
pub mod refresh_tokens;
pub mod roles;
pub mod scaiecho;
pub mod scaispeak;
pub mod sealed;
pub mod speakers;
pub mod tenants;
pub mod users;
pub mod webhooks;
pub mod webrtc;
pub mod workers;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::config::DatabaseConfig;

/// Which engine sits behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub kind: DbKind,
    /// The SQLite file, watched by the readiness check.
    pub sqlite_path: Option<PathBuf>,
}

pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Unix time in milliseconds, the unit of every time column.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A new id with a short type prefix (`ten_`, `usr_`, `key_`, ...): UUID v7 so ids sort
/// by creation time.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

impl Db {
    /// Opens the pool (creating the SQLite file and its folder if needed).
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        match config {
            DatabaseConfig::Sqlite { path } => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let options: AnyConnectOptions = url.parse()?;
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            connection
                                .execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                                )
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
                    .with_context(|| format!("opening SQLite database {}", path.display()))?;
                Ok(Db {
                    pool,
                    kind: DbKind::Sqlite,
                    sqlite_path: Some(path.clone()),
                })
            }
            DatabaseConfig::Postgres { url } => {
                let options: AnyConnectOptions = url.expose().parse()?;
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                    .context("connecting to PostgreSQL")?;
                Ok(Db {
                    pool,
                    kind: DbKind::Postgres,
                    sqlite_path: None,
                })
            }
        }
    }

    /// A write transaction. On SQLite it takes the write lock at `BEGIN IMMEDIATE`: a
    /// deferred transaction that read first and then writes fails at once with
    /// `SQLITE_BUSY` (no busy-timeout wait) when another connection committed in between,
    /// which surfaced as a rare 500 on key creation beside the job and accounting writers.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            DbKind::Postgres => self.pool.begin().await,
        }
    }

    /// Readiness: the database answers a query against our schema, and for SQLite the
    /// file is still there, still a database and still readable and writable by its
    /// owner (checked from the mode bits too, since the server may run as root).
    pub async fn check(&self) -> Result<(), String> {
        if let Some(path) = self.sqlite_path.clone() {
            tokio::task::spawn_blocking(move || check_sqlite_file(&path))
                .await
                .map_err(|e| format!("file check failed: {e}"))??;
        }
        sqlx::query("SELECT version FROM schema_migrations LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map(|_| ())
            .map_err(|error| format!("query failed: {error}"))
    }
}

fn check_sqlite_file(path: &std::path::Path) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(path).map_err(|error| format!("{}: {error}", path.display()))?;
    if metadata.permissions().mode() & 0o600 != 0o600 {
        return Err(format!("{} is not readable and writable", path.display()));
    }
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if &header != b"SQLite format 3\0" {
        return Err(format!("{} is not an SQLite database", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;

    /// A write transaction that read first still commits when another writer comes along
    /// meanwhile: the other one waits for it instead of invalidating its snapshot.
    #[tokio::test]
    async fn a_transaction_that_reads_then_writes_is_not_undercut_by_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig::Sqlite {
            path: dir.path().join("t.db"),
        };
        let db = Db::connect(&config).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&db.pool)
            .await
            .unwrap();
        let mut first = db.begin().await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *first)
            .await
            .unwrap();
        let other = {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await?;
                sqlx::query("INSERT INTO t (x) VALUES (2)")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(&mut *first)
            .await
            .expect("the first writer keeps its place");
        first.commit().await.unwrap();
        other.await.unwrap().unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(count, 2);
    }
}
