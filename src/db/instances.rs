//! Instance rows (see the migration): what a tenant launched, where it runs, and how
//! it ended. State changes name the states they come from, so two processes acting
//! on one instance (a monitor and a stop) cannot both win.

use sqlx::{AnyConnection, Row};

use super::now_ms;

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: String,
    pub tenant_id: String,
    pub model: String,
    /// JSON.
    pub smart: String,
    pub replicas: i64,
    pub state: String,
    pub node_ids: Vec<String>,
    pub loaded_node_ids: Vec<String>,
    pub failure_reason: Option<String>,
    pub failure_detail: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    /// What it costs per hour (its nodes' prices at placement).
    pub hourly_cost: f64,
    /// Up to when it has been billed (set when it starts running).
    pub billed_until: Option<i64>,
}

const COLUMNS: &str = "id, tenant_id, model, smart, replicas, state, node_ids, \
    loaded_node_ids, failure_reason, failure_detail, created_by, created_at, updated_at, \
    started_at, hourly_cost, billed_until";

fn ids(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn row(row: &sqlx::any::AnyRow) -> Result<InstanceRow, sqlx::Error> {
    Ok(InstanceRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        model: row.try_get("model")?,
        smart: row.try_get("smart")?,
        replicas: row.try_get("replicas")?,
        state: row.try_get("state")?,
        node_ids: ids(&row.try_get::<String, _>("node_ids")?),
        loaded_node_ids: ids(&row.try_get::<String, _>("loaded_node_ids")?),
        failure_reason: row.try_get("failure_reason")?,
        failure_detail: row.try_get("failure_detail")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        hourly_cost: row.try_get("hourly_cost")?,
        billed_until: row.try_get("billed_until")?,
    })
}

/// A new instance, `pending`.
pub async fn create(
    conn: &mut AnyConnection,
    (id, tenant_id, created_by): (&str, &str, &str),
    (model, smart, replicas): (&str, &str, i64),
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO instances (id, tenant_id, model, smart, replicas, state, node_ids, \
         loaded_node_ids, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', '[]', '[]', $6, $7, $7)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(model)
    .bind(smart)
    .bind(replicas)
    .bind(created_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A tenant's instance (`None` for another tenant's).
pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<InstanceRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM instances WHERE tenant_id = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

/// A tenant's instances, newest first.
pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
    limit: i64,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM instances WHERE tenant_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(row).collect()
}

/// Every instance in `state`, any tenant (the monitor's view).
pub async fn in_state(
    conn: &mut AnyConnection,
    state: &str,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM instances WHERE state = $1 ORDER BY created_at");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(state)
        .fetch_all(conn)
        .await?;
    rows.iter().map(row).collect()
}

/// What a state change writes besides the state.
#[derive(Debug, Default, Clone)]
pub struct Change<'a> {
    pub node_ids: Option<&'a [String]>,
    pub loaded_node_ids: Option<&'a [String]>,
    /// `(reason, detail)` of a failure; cleared on any other change.
    pub failure: Option<(&'a str, &'a str)>,
    /// It starts running now: `started_at` and `billed_until` are now.
    pub started: bool,
    pub hourly_cost: Option<f64>,
}

/// Moves the instance to `to` if it is in one of `from`; whether it moved.
pub async fn transition(
    conn: &mut AnyConnection,
    id: &str,
    (from, to): (&[&str], &str),
    change: Change<'_>,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let json = |ids: Option<&[String]>| ids.map(|ids| serde_json::json!(ids).to_string());
    let marks: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 10)).collect();
    let sql = format!(
        "UPDATE instances SET state = $1, updated_at = $2, \
         node_ids = COALESCE($3, node_ids), loaded_node_ids = COALESCE($4, loaded_node_ids), \
         failure_reason = $5, failure_detail = $6, \
         started_at = CASE WHEN $7 = 1 THEN $2 ELSE started_at END, \
         billed_until = CASE WHEN $7 = 1 THEN $2 ELSE billed_until END, \
         hourly_cost = CASE WHEN $9 < 0 THEN hourly_cost ELSE $9 END \
         WHERE id = $8 AND state IN ({})",
        marks.join(", ")
    );
    let (reason, detail) = change.failure.unzip();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to)
        .bind(now)
        .bind(json(change.node_ids))
        .bind(json(change.loaded_node_ids))
        .bind(reason)
        .bind(detail)
        .bind(i64::from(change.started))
        .bind(id)
        // Never a NULL here: on PostgreSQL through the Any driver, a NULL bound for
        // this parameter and a number later on the same connection's cached
        // statement failed with "incorrect binary data format in bind parameter 9".
        .bind(change.hourly_cost.unwrap_or(-1.0));
    for state in from {
        query = query.bind(*state);
    }
    Ok(query.execute(conn).await?.rows_affected() == 1)
}

/// Moves an instance's `billed_until` from `from` to `to`, unless another process
/// billed it first; whether this one did.
pub async fn billed(
    conn: &mut AnyConnection,
    id: &str,
    (from, to): (i64, i64),
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE instances SET billed_until = $1 WHERE id = $2 AND billed_until = $3")
            .bind(to)
            .bind(id)
            .bind(from)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// What a tenant's running instances cost per hour.
pub async fn running_cost(conn: &mut AnyConnection, tenant_id: &str) -> Result<f64, sqlx::Error> {
    let rows =
        sqlx::query("SELECT hourly_cost FROM instances WHERE tenant_id = $1 AND state = 'running'")
            .bind(tenant_id)
            .fetch_all(conn)
            .await?;
    // From +0.0: an empty sum of floats is -0.0, which JSON would show.
    rows.iter()
        .map(|row| row.try_get::<f64, _>("hourly_cost"))
        .try_fold(0.0, |sum, cost| cost.map(|cost| sum + cost))
}

/// Deletes a tenant's instance that is over (`stopped` or `failed`); whether it went.
pub async fn delete(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM instances WHERE tenant_id = $1 AND id = $2 \
         AND state IN ('stopped', 'failed')",
    )
    .bind(tenant_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Instances other than `except` placed with `model` on `node_id` and not over: a
/// stop leaves the model loaded there for them.
pub async fn others_on(
    conn: &mut AnyConnection,
    (model, node_id): (&str, &str),
    except: &str,
) -> Result<bool, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT node_ids FROM instances WHERE model = $1 AND id <> $2 \
         AND state IN ('starting', 'running')",
    )
    .bind(model)
    .bind(except)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().any(|row| {
        row.try_get::<String, _>("node_ids")
            .is_ok_and(|text| ids(&text).iter().any(|id| id == node_id))
    }))
}
