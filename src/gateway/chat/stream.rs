//! A chat call's stream: the upstream SSE passed through event by event (the `model`
//! rewritten to the slug, usage tallied), a failure after the first byte sent as an
//! `error` event, the stream cut at `DISPATCH_STREAM_TIMEOUT_S`, and the call settled
//! however it ends.

use super::*;

/// A stream to pass on: the upstream response after its first bytes.
pub(super) struct Upstream {
    pub(super) response: reqwest::Response,
    pub(super) first: Bytes,
    pub(super) backend: Arc<BackendSpec>,
    pub(super) slug: String,
    /// How long the backend took to its first byte (the stream's latency in its window).
    pub(super) opened: std::time::Duration,
}

/// Opens a streamed call, up to its first bytes (the `upstream` span).
pub(super) async fn open_stream(
    gateway: &Gateway,
    backend: &BackendSpec,
    body: &Map<String, Value>,
) -> Attempt {
    let span = upstream_span(backend, "/chat/completions");
    async {
        let sent = gateway
            .upstream(reqwest::Method::POST, backend, "/chat/completions")
            .json(body)
            .send();
        let mut response = match tokio::time::timeout(backend.timeout, sent).await {
            Err(_) => return Attempt::Failed("upstream timed out".to_owned()),
            Ok(Err(error)) => return Attempt::Failed(upstream_error_text(&error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let bytes = read_capped(&mut response, Instant::now() + backend.timeout)
                .await
                .unwrap_or_default();
            return match classify(status, &bytes) {
                Some(Unanswered::Refused(error)) => Attempt::Refused(error),
                Some(Unanswered::Failed(reason)) => Attempt::Failed(reason),
                None => Attempt::Failed(format!("upstream answered {status}")),
            };
        }
        // Nothing has reached the client yet: a stream that dies before its first byte
        // still falls back to the next backend.
        let first = match tokio::time::timeout(backend.timeout, response.chunk()).await {
            Err(_) => return Attempt::Failed("upstream stream sent nothing in time".to_owned()),
            Ok(Err(error)) => return Attempt::Failed(upstream_error_text(&error)),
            Ok(Ok(None)) => {
                return Attempt::Failed("upstream stream ended before any event".to_owned());
            }
            Ok(Ok(Some(first))) => first,
        };
        Attempt::Streaming(response, first)
    }
    .instrument(span)
    .await
}

/// The firewall over a streamed answer: the policies that guard its output, checked
/// on the text said so far before each chunk goes out.
pub(crate) struct OutputGuard {
    pub firewall: Arc<crate::firewall::Firewall>,
    pub principal: Arc<crate::auth::Principal>,
    pub model: String,
    pub policies: Vec<crate::firewall::Policy>,
}

/// What a streamed answer's check looks at: the last this many bytes of what was said
/// (a match is found while it is being said; the check costs the same on long answers).
const GUARD_WINDOW: usize = 64 << 10;

impl OutputGuard {
    /// The verdict on what was said so far.
    fn check(&self, said: &str) -> crate::firewall::Verdict {
        let mut start = said.len().saturating_sub(GUARD_WINDOW);
        while !said.is_char_boundary(start) {
            start += 1;
        }
        crate::firewall::policy::evaluate(&self.policies, &said[start..])
    }

    /// Streamed text cannot be taken back: a redact rule's match ends it like a block.
    fn stops(verdict: &crate::firewall::Verdict) -> bool {
        verdict.blocked || verdict.redacted.is_some()
    }

    /// Whether a judge rule guards the answer (asked once, on the whole answer).
    fn judged(&self) -> bool {
        !crate::firewall::policy::judges(&self.policies).is_empty()
    }

    /// Whether the answer is held back until the judge has read it: a block (or
    /// redact) policy's judge must decide before the client sees a word; an audit
    /// policy's judge only records, and the answer streams as it comes.
    fn holds(&self) -> bool {
        crate::firewall::policy::judges(&self.policies)
            .iter()
            .any(|(policy, _, _)| policy.mode != crate::firewall::Mode::Audit)
    }

    /// The judges' verdict on the whole answer, recorded; the refusal when it stops it.
    async fn judge(&self, said: &str) -> Option<crate::error::ApiError> {
        let verdict = self
            .firewall
            .judge_whole(&self.principal, &self.policies, said)
            .await;
        if !verdict.matches.is_empty() || !verdict.judge_failures.is_empty() {
            let _ = self
                .firewall
                .record(
                    &self.principal,
                    Some(&self.model),
                    Stage::ChatOutput,
                    &verdict,
                )
                .await;
        }
        crate::firewall::refusal(&verdict)
    }
}

/// Rewrites and tallies the events of one streamed completion.
#[derive(Default)]
struct StreamTally {
    usage: Option<(u64, u64)>,
    completion_chars: usize,
    done: bool,
    /// An upstream `error` event (sent on as ours).
    upstream_error: Option<String>,
    /// The text said so far, kept when a firewall guards the output or the answer is
    /// to be cached.
    said: Option<String>,
    /// The last finish reason upstream gave.
    finish: Option<String>,
}

impl StreamTally {
    /// The bytes to send the client for one upstream event.
    fn event(&mut self, event: &sse::Event, slug: &str) -> Option<Vec<u8>> {
        if event.comment_only {
            return Some(b": keep-alive\n\n".to_vec());
        }
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Some(sse::data("[DONE]"));
        }
        let Ok(mut value) = serde_json::from_str::<Map<String, Value>>(&event.data) else {
            return Some(sse::data(&event.data));
        };
        if event.name.as_deref() == Some("error") || value.contains_key("error") {
            let message = value
                .get("error")
                .and_then(|e| e.get("message").and_then(Value::as_str).or(e.as_str()))
                .unwrap_or("upstream stream error")
                .to_owned();
            self.upstream_error = Some(message);
            return None;
        }
        if let Some(usage) = usage_of(&value) {
            self.usage = Some(usage);
        }
        if let Some(choices) = value.get("choices").and_then(Value::as_array) {
            self.completion_chars += choices
                .iter()
                .filter_map(|c| c.get("delta"))
                .map(text_length)
                .sum::<usize>();
            if let Some(reason) = choices
                .iter()
                .filter_map(|c| c.get("finish_reason")?.as_str())
                .next_back()
            {
                self.finish = Some(reason.to_owned());
            }
            if let Some(said) = &mut self.said {
                for content in choices
                    .iter()
                    .filter_map(|c| c.get("delta")?.get("content")?.as_str())
                {
                    said.push_str(content);
                }
            }
        }
        if value.contains_key("model") {
            value.insert("model".into(), Value::from(slug));
        }
        Some(sse::data(&Value::Object(value).to_string()))
    }
}

/// The SSE error event of a stream the firewall cut.
fn firewall_event(refusal: &crate::error::ApiError, request_id: Option<&str>) -> Vec<u8> {
    let mut error = serde_json::json!({
        "code": refusal.code.as_str(),
        "message": refusal.message,
        "request_id": request_id,
    });
    for (name, value) in &refusal.fields {
        error[name] = value.clone();
    }
    let payload = serde_json::json!({ "status": "error", "error": error });
    sse::named("error", &payload.to_string())
}

fn error_event(message: &str, request_id: Option<&str>) -> Vec<u8> {
    let payload = serde_json::json!({
        "status": "error",
        "error": {"code": "BACKEND_ERROR", "message": message, "request_id": request_id},
    });
    sse::named("error", &payload.to_string())
}

/// The client's SSE stream: a task pumps upstream events into it, and settles usage
/// when the stream ends however it ends.
pub(super) fn stream_reply(
    gateway: Arc<Gateway>,
    upstream: Upstream,
    settlement: Settlement,
    (admitted, guard, fill): (Admitted, Option<OutputGuard>, Option<super::Fill>),
) -> Reply {
    let cache = fill.as_ref().map(|_| "miss");
    let Upstream {
        mut response,
        first,
        backend,
        slug,
        opened,
    } = upstream;
    let model = slug.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let stream_timeout = gateway.config.stream_timeout;
    let request_id = settlement.request_id.clone();
    let task_backend = backend.clone();
    tokio::spawn(async move {
        let _admitted = admitted;
        let backend = task_backend;
        let deadline = Instant::now() + stream_timeout;
        let mut reader = sse::Reader::default();
        let mut tally = StreamTally {
            said: (guard.is_some() || fill.is_some()).then(String::new),
            ..StreamTally::default()
        };
        // The firewall ended the stream (nothing of it may be kept).
        let mut cut = false;
        let mut checked = 0;
        let mut last_verdict = None;
        // What the client has not been sent yet while a judge must read the answer first.
        let mut held: Option<Vec<u8>> = guard.as_ref().filter(|g| g.holds()).map(|_| Vec::new());
        let mut next = Some(first);
        let failure: Option<String> = loop {
            let chunk = match next.take() {
                Some(chunk) => chunk,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let wait = left.min(backend.timeout);
                    match tokio::time::timeout(wait, response.chunk()).await {
                        Err(_) if left <= backend.timeout => {
                            break Some(format!(
                                "stream exceeded DISPATCH_STREAM_TIMEOUT_S ({} s)",
                                stream_timeout.as_secs()
                            ));
                        }
                        Err(_) => break Some("upstream stream stalled".to_owned()),
                        Ok(Err(error)) => break Some(upstream_error_text(&error)),
                        Ok(Ok(None)) if tally.done => break None,
                        Ok(Ok(None)) => {
                            break Some("upstream stream ended before [DONE]".to_owned());
                        }
                        Ok(Ok(Some(chunk))) => chunk,
                    }
                }
            };
            let events = match reader.push(&chunk) {
                Ok(events) => events,
                Err(reason) => break Some(reason.to_owned()),
            };
            let mut out = Vec::new();
            for event in events {
                if let Some(bytes) = tally.event(&event, &slug) {
                    out.extend(bytes);
                }
            }
            if let (Some(guard), Some(said)) = (&guard, &tally.said)
                && said.len() > checked
            {
                checked = said.len();
                let verdict = guard.check(said);
                if OutputGuard::stops(&verdict) {
                    // What tripped the rule never reaches the client.
                    let _ = guard
                        .firewall
                        .record(
                            &guard.principal,
                            Some(&guard.model),
                            Stage::ChatOutput,
                            &verdict,
                        )
                        .await;
                    let refusal = crate::firewall::blocked(&verdict);
                    let _ = tx
                        .send(Bytes::from(firewall_event(&refusal, request_id.as_deref())))
                        .await;
                    cut = true;
                    break None;
                }
                last_verdict = Some(verdict);
            }
            match &mut held {
                Some(held) => {
                    if held.len() + out.len() > super::MAX_UPSTREAM_BODY {
                        break Some("answer too large to hold for the firewall's judge".into());
                    }
                    held.extend(out);
                }
                None => {
                    if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                        // The client went away: not the backend's fault.
                        break None;
                    }
                }
            }
            if let Some(message) = tally.upstream_error.take() {
                break Some(format!("upstream stream error: {message}"));
            }
            if tally.done {
                if let (Some(guard), Some(said)) = (&guard, &tally.said)
                    && guard.judged()
                    && let Some(refusal) = guard.judge(said).await
                {
                    // Held back: the client sees the refusal, not the answer.
                    let _ = tx
                        .send(Bytes::from(firewall_event(&refusal, request_id.as_deref())))
                        .await;
                    cut = true;
                    break None;
                }
                if let Some(held) = held.take()
                    && !held.is_empty()
                {
                    let _ = tx.send(Bytes::from(held)).await;
                }
                break None;
            }
        };
        match &failure {
            Some(reason) => {
                tracing::warn!(backend_id = %backend.id, %reason, "stream failed after its first byte");
                let _ = tx
                    .send(Bytes::from(error_event(reason, request_id.as_deref())))
                    .await;
                gateway.report(&backend.id, Outcome::Failure, Some(opened));
            }
            None => gateway.report(&backend.id, Outcome::Success, Some(opened)),
        }
        drop(tx);
        if let (Some(guard), Some(verdict)) = (&guard, &last_verdict)
            && !verdict.matches.is_empty()
        {
            let _ = guard
                .firewall
                .record(
                    &guard.principal,
                    Some(&guard.model),
                    Stage::ChatOutput,
                    verdict,
                )
                .await;
        }
        // A whole answer, as the client had it: kept for the next asking.
        if let (None, true, false, Some(fill), Some(said)) =
            (&failure, tally.done, cut, fill, tally.said.take())
        {
            let usage = tally.usage.unwrap_or((
                settlement.prompt_estimate,
                estimate_tokens(tally.completion_chars),
            ));
            let body = super::cache::assembled(&slug, &said, tally.finish.take(), usage);
            fill.put(&gateway, body, usage).await;
        }
        settlement.settle(tally.usage, tally.completion_chars).await;
    });
    Reply::Streaming {
        events: rx,
        backend_id: backend.id.clone(),
        model,
        cache,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_are_rewritten_and_tallied() {
        let mut tally = StreamTally::default();
        let event = |data: &str| sse::Event {
            name: None,
            data: data.to_owned(),
            comment_only: false,
        };
        let out = tally
            .event(
                &event(r#"{"model":"up","choices":[{"delta":{"content":"Hello"}}]}"#),
                "v/m",
            )
            .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\"model\":\"v/m\"")
        );
        tally.event(
            &event(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#),
            "v/m",
        );
        assert_eq!(tally.completion_chars, 5);
        assert_eq!(tally.usage, Some((3, 2)));
        assert!(!tally.done);
        tally.event(&event("[DONE]"), "v/m");
        assert!(tally.done);
        assert!(
            tally
                .event(&event(r#"{"error":{"message":"boom"}}"#), "v/m")
                .is_none()
        );
        assert_eq!(tally.upstream_error.as_deref(), Some("boom"));
    }
}
