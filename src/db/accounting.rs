//! Usage records (one row per billable request) and cost budgets.

use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};

/// One billable request: who, what, how much, what it cost. The id is given when the
/// record is made, so writing it twice (a redelivered stream entry) stores it once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageRecord {
    pub id: String,
    pub tenant_id: String,
    /// `api_key` or `user`.
    pub subject_kind: String,
    pub subject_id: String,
    /// `chat`, `scaiecho`, `scaispeak`.
    pub module: String,
    pub model: Option<String>,
    pub backend_id: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub audio_seconds: f64,
    pub characters: u64,
    pub cost: f64,
    pub request_id: Option<String>,
    pub created_at: i64,
    /// A later checkpoint of a live stream: its usage counts, but the stream was
    /// counted as a request by its first record.
    #[serde(default)]
    pub continues: bool,
}

const COLUMNS: usize = 15;

/// Rows per multi-row insert.
const BATCH_ROWS: usize = 200;

/// Inserts records in multi-row statements of up to 200 rows.
///
/// On SQLite the placeholders are anonymous `?`: binding a named `$N` parameter there
/// looks its name up among all of the statement's parameters, which made 200-row
/// statements quadratic (profiled: most of a flush in `sqlite3_bind_parameter_name`,
/// and a flusher that fell behind 2,000 requests/s).
///
/// Only the full 200-row statement stays prepared in the connection's statement cache:
/// the last, shorter chunk has a different length every flush, and caching each of those
/// (a quarter of a megabyte apiece on SQLite, up to 100 per connection) made a server
/// under steady load grow by about a megabyte a minute.
pub async fn insert_batch(
    conn: &mut AnyConnection,
    records: &[UsageRecord],
    anonymous_placeholders: bool,
) -> Result<(), sqlx::Error> {
    for chunk in records.chunks(BATCH_ROWS) {
        let mut sql = String::from(
            "INSERT INTO usage_records (id, tenant_id, subject_kind, subject_id, module, model, \
             backend_id, input_tokens, output_tokens, audio_seconds, characters, cost, \
             request_id, created_at, continues) VALUES ",
        );
        for row in 0..chunk.len() {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..COLUMNS {
                if column > 0 {
                    sql.push_str(", ");
                }
                match anonymous_placeholders {
                    true => sql.push('?'),
                    false => sql.push_str(&format!("${}", row * COLUMNS + column + 1)),
                }
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (id) DO NOTHING");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == BATCH_ROWS);
        for record in chunk {
            query = query
                .bind(record.id.clone())
                .bind(record.tenant_id.clone())
                .bind(record.subject_kind.clone())
                .bind(record.subject_id.clone())
                .bind(record.module.clone())
                .bind(record.model.clone())
                .bind(record.backend_id.clone())
                .bind(record.input_tokens as i64)
                .bind(record.output_tokens as i64)
                .bind(record.audio_seconds)
                .bind(record.characters as i64)
                .bind(record.cost)
                .bind(record.request_id.clone())
                .bind(record.created_at)
                .bind(i64::from(record.continues));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Totals of one group of usage records.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct UsageTotals {
    /// The value grouped by (model slug, key id, module or `YYYY-MM-DD`); null for
    /// records without one (e.g. speech usage grouped by model).
    pub key: Option<String>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub audio_seconds: f64,
    pub characters: i64,
    pub cost: f64,
}

/// What to group usage by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    ApiKey,
    Module,
    Day,
}

/// Usage of a tenant in `[from, to)` milliseconds, grouped.
/// Which records a usage report counts, beyond its tenant and time range.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub model: Option<String>,
    pub module: Option<String>,
    pub api_key_id: Option<String>,
}

pub async fn totals(
    conn: &mut AnyConnection,
    tenant_id: &str,
    (from, to): (i64, i64),
    group_by: GroupBy,
    filter: &UsageFilter,
) -> Result<Vec<UsageTotals>, sqlx::Error> {
    // Days are grouped in Rust: date arithmetic differs between SQLite and PostgreSQL.
    let key = match group_by {
        GroupBy::Model => "model",
        GroupBy::ApiKey => "CASE WHEN subject_kind = 'api_key' THEN subject_id END",
        GroupBy::Module => "module",
        GroupBy::Day => "(created_at / 86400000)",
    };
    let sql = format!(
        "SELECT CAST({key} AS TEXT) AS k, \
         CAST(COUNT(*) - COALESCE(SUM(continues), 0) AS BIGINT) AS requests, \
         CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
         CAST(COALESCE(SUM(audio_seconds), 0) AS DOUBLE PRECISION) AS audio_seconds, \
         CAST(COALESCE(SUM(characters), 0) AS BIGINT) AS characters, \
         CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) AS cost \
         FROM usage_records WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3"
    );
    let mut sql = sql;
    let mut binds = Vec::new();
    for (column, value) in [
        ("model", &filter.model),
        ("module", &filter.module),
        ("subject_id", &filter.api_key_id),
    ] {
        if let Some(value) = value {
            binds.push(value.as_str());
            sql.push_str(&format!(" AND {column} = ${}", 3 + binds.len()));
            if column == "subject_id" {
                sql.push_str(" AND subject_kind = 'api_key'");
            }
        }
    }
    sql.push_str(&format!(" GROUP BY {key} ORDER BY {key}"));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(from)
        .bind(to);
    for value in binds {
        query = query.bind(value);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            let key: Option<String> = row.try_get("k")?;
            let key = match (group_by, key) {
                (GroupBy::Day, Some(day)) => day.parse::<i64>().ok().map(|day| {
                    crate::records::Timestamp(day * 86_400_000).to_rfc3339()[..10].to_owned()
                }),
                (_, key) => key,
            };
            Ok(UsageTotals {
                key,
                requests: row.try_get("requests")?,
                input_tokens: row.try_get("input_tokens")?,
                output_tokens: row.try_get("output_tokens")?,
                audio_seconds: row.try_get("audio_seconds")?,
                characters: row.try_get("characters")?,
                cost: row.try_get("cost")?,
            })
        })
        .collect()
}

/// Cost spent since `since` by a budget's scope.
pub async fn cost_since(
    conn: &mut AnyConnection,
    scope: &str,
    scope_id: &str,
    since: i64,
) -> Result<f64, sqlx::Error> {
    let column = match scope {
        "tenant" => "tenant_id",
        _ => "subject_id",
    };
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) AS cost FROM usage_records \
         WHERE {column} = $1 AND created_at >= $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(scope_id)
        .bind(since)
        .fetch_one(conn)
        .await?
        .try_get("cost")
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRow {
    pub id: String,
    pub tenant_id: String,
    pub scope: String,
    pub scope_id: String,
    pub period: String,
    pub limit: f64,
    pub created_at: i64,
    /// `platform` (a platform admin set it: the tenant's admins may lower it, not raise
    /// or delete it) or `tenant`.
    pub set_by: String,
}

fn budget_row(row: &sqlx::any::AnyRow) -> Result<BudgetRow, sqlx::Error> {
    Ok(BudgetRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        scope: row.try_get("scope")?,
        scope_id: row.try_get("scope_id")?,
        period: row.try_get("period")?,
        limit: row.try_get("limit_cost")?,
        created_at: row.try_get("created_at")?,
        set_by: row.try_get("set_by")?,
    })
}

/// The budget of a scope and period, if one is set.
pub async fn budget_of(
    conn: &mut AnyConnection,
    scope: &str,
    scope_id: &str,
    period: &str,
) -> Result<Option<BudgetRow>, sqlx::Error> {
    let row =
        sqlx::query("SELECT * FROM budgets WHERE scope = $1 AND scope_id = $2 AND period = $3")
            .bind(scope)
            .bind(scope_id)
            .bind(period)
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(budget_row).transpose()
}

/// A tenant's budget by id.
pub async fn budget(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<BudgetRow>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM budgets WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(budget_row).transpose()
}

/// Creates a budget or replaces the limit of the one with the same scope and period.
pub async fn upsert_budget(
    conn: &mut AnyConnection,
    tenant_id: &str,
    scope: &str,
    scope_id: &str,
    period: &str,
    (limit, set_by): (f64, &str),
) -> Result<BudgetRow, sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO budgets (id, tenant_id, scope, scope_id, period, limit_cost, created_at, \
         updated_at, set_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
         ON CONFLICT (scope, scope_id, period) DO UPDATE SET limit_cost = $6, updated_at = $7, \
         set_by = $8",
    )
    .bind(new_id("bud"))
    .bind(tenant_id)
    .bind(scope)
    .bind(scope_id)
    .bind(period)
    .bind(limit)
    .bind(now)
    .bind(set_by)
    .execute(&mut *conn)
    .await?;
    budget_of(conn, scope, scope_id, period)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn all_budgets(conn: &mut AnyConnection) -> Result<Vec<BudgetRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM budgets ORDER BY created_at")
        .fetch_all(conn)
        .await?;
    rows.iter().map(budget_row).collect()
}

pub async fn delete_budget(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM budgets WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use crate::db::Db;

    fn record(n: usize) -> UsageRecord {
        UsageRecord {
            id: format!("use_{n}"),
            tenant_id: "ten_1".into(),
            subject_kind: "api_key".into(),
            subject_id: "key_1".into(),
            module: "chat".into(),
            model: Some("test/model".into()),
            backend_id: None,
            input_tokens: 1,
            output_tokens: 2,
            audio_seconds: 0.0,
            characters: 0,
            cost: 0.5,
            request_id: None,
            created_at: now_ms(),
            continues: false,
        }
    }

    /// Batches of any length, in full chunks and a last short one (which is not kept
    /// prepared: `AnyConnection` does not report its statement cache, so the effect on
    /// memory is measured by `benches/gateway_load.sh --soak`), land every row once.
    #[tokio::test]
    async fn batches_of_any_length_land_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig::Sqlite {
            path: dir.path().join("t.db"),
        };
        let db = Db::connect(&config).await.unwrap();
        crate::db::migrate::run(&db).await.unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let mut next = 0;
        for length in [3, 250, 17, 401, 199, 1] {
            let batch: Vec<UsageRecord> = (next..next + length).map(record).collect();
            next += length;
            insert_batch(&mut conn, &batch, true).await.unwrap();
        }
        // A redelivered batch stores nothing twice.
        insert_batch(&mut conn, &[record(0), record(next - 1)], true)
            .await
            .unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(count as usize, next);
    }
}
