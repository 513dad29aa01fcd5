//! The delivery loop: fans new outbox events out to subscribed webhooks, then delivers
//! due deliveries, each claimed first so that several processes never send the same
//! attempt twice.
//!
//! A delivery is a signed `POST` of the event; 2xx within the timeout is success.
//! Anything else is retried after `retry_base · 2^(attempt-1)` (capped at an hour)
//! until `max_attempts`; every failed attempt counts against the webhook, which is
//! disabled after `disable_after_failures` failures in a row.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::Webhooks;
use crate::db::now_ms;
use crate::db::webhooks::{self as store, DeliveryRow, OutboxEvent};
use crate::records::Timestamp;

const POLL: Duration = Duration::from_millis(250);
const BATCH: i64 = 50;

/// Runs the loop for as long as the process does.
pub fn spawn(hooks: &Arc<Webhooks>) {
    let hooks = hooks.clone();
    tokio::spawn(async move {
        loop {
            if let Err(error) = tick(&hooks).await {
                tracing::warn!(%error, "webhook dispatch failed; retrying");
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

async fn tick(hooks: &Arc<Webhooks>) -> anyhow::Result<()> {
    fan_out(hooks).await?;
    let due = {
        let mut conn = hooks.db.pool.acquire().await?;
        store::due(&mut conn, now_ms(), BATCH).await?
    };
    let lease = hooks.config.timeout.as_millis() as i64 + 30_000;
    let mut claimed = Vec::new();
    for delivery in due {
        let mut conn = hooks.db.pool.acquire().await?;
        if store::claim(&mut conn, &delivery, now_ms() + lease).await? {
            claimed.push(delivery);
        }
    }
    let attempts = claimed.into_iter().map(|delivery| {
        // Each attempt is a span of the trace that caused its event, and the POST
        // carries that context on.
        let span = tracing::info_span!(
            "webhook",
            event = %delivery.event_name,
            delivery_id = %delivery.id,
            otel.kind = tracing::field::Empty,
        );
        crate::trace_context::kind(&span, "client");
        let carried = crate::trace_context::adopt_stored(&span, delivery.traceparent.as_deref());
        crate::trace_context::carry(carried, attempt(hooks, delivery)).instrument(span)
    });
    for result in futures_util::future::join_all(attempts).await {
        result?;
    }
    Ok(())
}

/// The body receivers get: the event with its id (their idempotency key).
fn body(event: &OutboxEvent) -> String {
    let data: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or_default();
    serde_json::json!({
        "id": event.id,
        "type": event.name,
        "tenant_id": event.tenant_id,
        "created_at": Timestamp(event.created_at),
        "data": data,
    })
    .to_string()
}

async fn fan_out(hooks: &Webhooks) -> anyhow::Result<()> {
    let events = {
        let mut conn = hooks.db.pool.acquire().await?;
        store::undelivered_events(&mut conn, BATCH).await?
    };
    for event in events {
        let mut tx = hooks.db.begin().await?;
        // Claimed first: of several processes, one fans each event out.
        if !store::mark_event_fanned_out(&mut tx, &event.id).await? {
            continue;
        }
        let body = body(&event);
        for webhook in store::list(&mut tx, &event.tenant_id).await? {
            let events: Vec<String> = serde_json::from_str(&webhook.events).unwrap_or_default();
            if webhook.status == "active" && events.contains(&event.name) {
                store::enqueue(&mut tx, &webhook.id, &event, &body).await?;
            }
        }
        tx.commit().await?;
        if let Some(cluster) = &hooks.cluster
            && let Err(error) = crate::cluster::events::publish(cluster, &event.name, &body).await
        {
            tracing::warn!(%error, event = %event.name, "event not published on the bus");
        }
    }
    Ok(())
}

/// The wait before attempt `attempt + 1`.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(Duration::from_secs(3600))
}

async fn attempt(hooks: &Webhooks, delivery: DeliveryRow) -> anyhow::Result<()> {
    let config = &hooks.config;
    let webhook = {
        let mut conn = hooks.db.pool.acquire().await?;
        store::get_any(&mut conn, &delivery.webhook_id).await?
    };
    let Some(webhook) = webhook else {
        return Ok(());
    };
    let outcome = send(hooks, &webhook, &delivery).await;
    let number = delivery.attempt + 1;
    let mut tx = hooks.db.begin().await?;
    match &outcome {
        Ok(code) => {
            store::record_attempt(
                &mut tx,
                &delivery.id,
                ("succeeded", number),
                Some(*code),
                None,
                None,
            )
            .await?;
            store::count_attempt(&mut tx, &webhook.id, true).await?;
        }
        Err((code, reason, error)) => {
            let (status, next) = match number >= i64::from(config.max_attempts) {
                true => ("failed", None),
                false => {
                    let wait = backoff(config.retry_base, number as u32);
                    ("pending", Some(now_ms() + wait.as_millis() as i64))
                }
            };
            store::record_attempt(
                &mut tx,
                &delivery.id,
                (status, number),
                *code,
                Some((reason, error)),
                next,
            )
            .await?;
            let failures = store::count_attempt(&mut tx, &webhook.id, false).await?;
            if failures >= i64::from(config.disable_after_failures) {
                let reason = format!("disabled after {failures} failed delivery attempts in a row");
                if store::disable(&mut tx, &webhook.id, &reason).await? {
                    tracing::warn!(webhook_id = %webhook.id, "{reason}");
                }
            }
            tracing::info!(webhook_id = %webhook.id, delivery_id = %delivery.id, attempt = number, %error, "webhook delivery failed");
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Why a delivery attempt failed (the stable `failure_reason`), with the status the
/// receiver answered and a line of detail.
type Failed = (Option<i64>, &'static str, String);

/// One signed POST. `Ok(status)` on 2xx; `Err` with the failure otherwise.
async fn send(
    hooks: &Webhooks,
    webhook: &store::WebhookRow,
    delivery: &DeliveryRow,
) -> Result<i64, Failed> {
    let config = &hooks.config;
    let url = reqwest::Url::parse(&webhook.url)
        .map_err(|e| (None, "BAD_URL", format!("bad URL: {e}")))?;
    // The resolver of `webhook_http` checks the addresses it connects to; this catches
    // what it does not see (an address written in the URL, this server's own port).
    super::target::check(
        &super::target::system_lookup(),
        &url,
        hooks.bound.get().copied(),
        config.allow_private_targets,
    )
    .await
    .map_err(|reason| (None, "TARGET_REFUSED", format!("target refused: {reason}")))?;
    let timestamp = now_ms() / 1000;
    let context = crate::vault::context(super::WEBHOOKS, &webhook.id);
    let open = |stored: &str| {
        hooks.vault.open(stored, &context).map_err(|e| {
            let detail = format!("signing secret cannot be opened: {e}");
            (None, "SECRET_UNAVAILABLE", detail)
        })
    };
    let mut secrets = vec![open(&webhook.secret)?];
    if let (Some(previous), Some(until)) = (&webhook.previous_secret, webhook.previous_secret_until)
        && until > now_ms()
    {
        secrets.push(open(previous)?);
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let signature = super::sign::signature(&secrets, timestamp, delivery.payload.as_bytes());
    let response = hooks
        .http
        .post(url)
        .timeout(config.timeout)
        .header("content-type", "application/json")
        .header("x-scaigrid-event", &delivery.event_name)
        .header("x-scaigrid-event-id", &delivery.event_id)
        .header("idempotency-key", &delivery.event_id)
        .header("x-scaigrid-delivery", &delivery.id)
        .header("x-scaigrid-timestamp", timestamp.to_string())
        .header(super::sign::HEADER, signature)
        .headers(crate::trace_context::outgoing_headers())
        .body(delivery.payload.clone())
        .send()
        .await
        .map_err(|e| {
            let reason = match (e.is_timeout(), e.is_connect()) {
                (true, _) => "TIMEOUT",
                (false, true) => "CONNECT_FAILED",
                (false, false) => "REQUEST_FAILED",
            };
            (None, reason, crate::speech::upstream::error_text(&e))
        })?;
    let code = i64::from(response.status().as_u16());
    match response.status().is_success() {
        true => Ok(code),
        false => Err((
            Some(code),
            "RECEIVER_ERROR",
            format!("receiver answered {}", response.status()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 2), Duration::from_secs(4));
        assert_eq!(backoff(base, 4), Duration::from_secs(16));
        assert_eq!(backoff(base, 40), Duration::from_secs(3600));
    }
}
