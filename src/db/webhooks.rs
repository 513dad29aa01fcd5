//! Webhooks, their deliveries, and reading the event outbox for them.

use sqlx::{AnyConnection, Row};

use super::{new_id, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// JSON array of event names.
    pub events: String,
    pub secret: String,
    /// The secret replaced last, still signing until `previous_secret_until`.
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn webhook_row(row: &sqlx::any::AnyRow) -> Result<WebhookRow, sqlx::Error> {
    Ok(WebhookRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        url: row.try_get("url")?,
        events: row.try_get("events")?,
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_secret_until: row.try_get("previous_secret_until")?,
        status: row.try_get("status")?,
        disabled_reason: row.try_get("disabled_reason")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn insert(conn: &mut AnyConnection, w: &WebhookRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, secret, status, disabled_reason, \
         consecutive_failures, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&w.id)
    .bind(&w.tenant_id)
    .bind(&w.url)
    .bind(&w.events)
    .bind(&w.secret)
    .bind(&w.status)
    .bind(&w.disabled_reason)
    .bind(w.consecutive_failures)
    .bind(w.created_at)
    .bind(w.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the secret; the old one goes on signing until `previous_until`.
pub async fn rotate_secret(
    conn: &mut AnyConnection,
    id: &str,
    secret: &str,
    previous: Option<&str>,
    previous_until: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhooks SET secret = $2, previous_secret = $3, previous_secret_until = $4, \
         updated_at = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(secret)
    .bind(previous)
    .bind(previous_until)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes url, events, status, reason and failure count back.
pub async fn update(conn: &mut AnyConnection, w: &WebhookRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhooks SET url = $2, events = $3, status = $4, disabled_reason = $5, \
         consecutive_failures = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(&w.id)
    .bind(&w.url)
    .bind(&w.events)
    .bind(&w.status)
    .bind(&w.disabled_reason)
    .bind(w.consecutive_failures)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(webhook_row).transpose()
}

/// A webhook by id in any tenant (the delivery loop's view).
pub async fn get_any(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(webhook_row).transpose()
}

pub async fn list(
    conn: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<WebhookRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM webhooks WHERE tenant_id = $1 ORDER BY created_at, id")
        .bind(tenant_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(webhook_row).collect()
}

pub async fn delete(
    conn: &mut AnyConnection,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM webhook_deliveries WHERE webhook_id IN \
         (SELECT id FROM webhooks WHERE id = $1 AND tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant_id)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Counts one delivery attempt's outcome on the webhook; returns the failures in a row.
pub async fn count_attempt(
    conn: &mut AnyConnection,
    id: &str,
    success: bool,
) -> Result<i64, sqlx::Error> {
    let sql = match success {
        true => "UPDATE webhooks SET consecutive_failures = 0 WHERE id = $1",
        false => {
            "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 WHERE id = $1"
        }
    };
    sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    sqlx::query("SELECT consecutive_failures FROM webhooks WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?
        .try_get("consecutive_failures")
}

/// Disables a webhook that is still active (returns whether this call did it).
pub async fn disable(
    conn: &mut AnyConnection,
    id: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhooks SET status = 'disabled', disabled_reason = $2, updated_at = $3 \
         WHERE id = $1 AND status = 'active'",
    )
    .bind(id)
    .bind(reason)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// One undelivered outbox event.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub payload: String,
    pub created_at: i64,
    /// The trace context of what caused it (`trace_context`).
    pub traceparent: Option<String>,
}

pub async fn undelivered_events(
    conn: &mut AnyConnection,
    limit: i64,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, name, payload, created_at, traceparent FROM event_outbox \
         WHERE delivered_at IS NULL ORDER BY created_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(OutboxEvent {
                id: row.try_get("id")?,
                tenant_id: row.try_get("tenant_id")?,
                name: row.try_get("name")?,
                payload: row.try_get("payload")?,
                created_at: row.try_get("created_at")?,
                traceparent: row.try_get("traceparent")?,
            })
        })
        .collect()
}

/// Queues a delivery of an event to a webhook (once per pair, however often called).
pub async fn enqueue(
    conn: &mut AnyConnection,
    webhook_id: &str,
    event: &OutboxEvent,
    body: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_name, payload, status, \
         attempt, next_attempt_at, created_at, updated_at, traceparent) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6, $7) \
         ON CONFLICT (webhook_id, event_id) DO NOTHING",
    )
    .bind(new_id("whd"))
    .bind(webhook_id)
    .bind(&event.id)
    .bind(&event.name)
    .bind(body)
    .bind(now)
    .bind(&event.traceparent)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an event fanned out; `false` when another process already did (it then owns
/// the fan-out: with several processes each event is fanned out once).
pub async fn mark_event_fanned_out(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let marked = sqlx::query(
        "UPDATE event_outbox SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL",
    )
    .bind(id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(marked.rows_affected() == 1)
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_name: String,
    pub payload: String,
    pub status: String,
    pub attempt: i64,
    pub next_attempt_at: Option<i64>,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub traceparent: Option<String>,
}

fn delivery_row(row: &sqlx::any::AnyRow) -> Result<DeliveryRow, sqlx::Error> {
    Ok(DeliveryRow {
        id: row.try_get("id")?,
        webhook_id: row.try_get("webhook_id")?,
        event_id: row.try_get("event_id")?,
        event_name: row.try_get("event_name")?,
        payload: row.try_get("payload")?,
        status: row.try_get("status")?,
        attempt: row.try_get("attempt")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        status_code: row.try_get("status_code")?,
        error: row.try_get("error")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        traceparent: row.try_get("traceparent")?,
    })
}

/// Pending deliveries whose time has come, of active webhooks.
pub async fn due(
    conn: &mut AnyConnection,
    now: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.* FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.status = 'active' \
         ORDER BY d.next_attempt_at, d.id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(delivery_row).collect()
}

/// Claims a due delivery by pushing its next attempt out by a lease; only one process
/// wins the claim (the row must still hold the time it was read with).
pub async fn claim(
    conn: &mut AnyConnection,
    delivery: &DeliveryRow,
    lease_until: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = $3 \
         WHERE id = $1 AND status = 'pending' AND next_attempt_at = $2",
    )
    .bind(&delivery.id)
    .bind(delivery.next_attempt_at)
    .bind(lease_until)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records an attempt: the new status, attempt count, answer and next attempt time.
pub async fn record_attempt(
    conn: &mut AnyConnection,
    id: &str,
    (status, attempt): (&str, i64),
    status_code: Option<i64>,
    failure: Option<(&str, &str)>,
    next_attempt_at: Option<i64>,
) -> Result<(), sqlx::Error> {
    let (reason, error) = failure.unzip();
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, attempt = $3, status_code = $4, error = $5, \
         next_attempt_at = $6, updated_at = $7, failure_reason = $8 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(attempt)
    .bind(status_code)
    .bind(error)
    .bind(next_attempt_at)
    .bind(now_ms())
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of a webhook's deliveries (of one `status`, if given), newest first.
pub async fn deliveries(
    conn: &mut AnyConnection,
    webhook_id: &str,
    status: Option<&str>,
    page: &super::page::Page,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let mut sql = "SELECT * FROM webhook_deliveries WHERE webhook_id = $1".to_owned();
    if status.is_some() {
        sql.push_str(" AND status = $2");
    }
    let next = 2 + usize::from(status.is_some());
    sql.push_str(&page.sql("webhook_deliveries", next, super::page::Order::Newest));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(webhook_id);
    if let Some(status) = status {
        query = query.bind(status);
    }
    let rows = page.bind(query).fetch_all(conn).await?;
    rows.iter().map(delivery_row).collect()
}
