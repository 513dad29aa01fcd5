//! W3C trace context across process boundaries: an incoming `traceparent` becomes the
//! parent of the request's span, and every call this process makes on a request's
//! behalf (a gateway backend, a speech upstream, another edge, a node, a webhook)
//! carries the current span's context onward.
//!
//! With traces exported (`telemetry::otel`), the context is the current span's, so a
//! backend's trace shows ScaiGrid's spans between the caller's and its own. Without an
//! exporter there are no span contexts, so an incoming `traceparent` is passed on as
//! it came: the caller's trace still reaches the backend, with ScaiGrid invisible in
//! it, at the cost of one header read per request.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Whether spans are exported (set once by `telemetry::otel::init`).
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The context headers a request came with, kept for the request's calls when no
/// span contexts exist (traces not exported).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Carried {
    pub traceparent: Option<HeaderValue>,
    pub tracestate: Option<HeaderValue>,
}

impl Carried {
    /// The pair in `headers` if its `traceparent` is well-formed (a malformed one is
    /// dropped, as the W3C text asks, rather than passed on).
    pub fn from_headers(headers: &HeaderMap) -> Option<Carried> {
        let traceparent = headers.get(TRACEPARENT)?;
        well_formed(traceparent.to_str().ok()?).then(|| Carried {
            traceparent: Some(traceparent.clone()),
            tracestate: headers.get(TRACESTATE).cloned(),
        })
    }

    /// A stored `traceparent` (a webhook event's), if it is well-formed.
    pub fn from_traceparent(value: &str) -> Option<Carried> {
        let traceparent = HeaderValue::from_str(value).ok()?;
        well_formed(value).then_some(Carried {
            traceparent: Some(traceparent),
            tracestate: None,
        })
    }

    fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    /// Adds the pair to an outgoing request's headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(value) = &self.traceparent {
            headers.insert(TRACEPARENT, value.clone());
        }
        if let Some(value) = &self.tracestate {
            headers.insert(TRACESTATE, value.clone());
        }
    }

    /// The pair as an outgoing request's headers.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.apply(&mut headers);
        headers
    }

    /// The pair as (name, value) strings, for gRPC metadata and WebSocket handshakes.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        [
            ("traceparent", self.traceparent.as_ref()),
            ("tracestate", self.tracestate.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }
}

/// `version-traceid-parentid-flags`: lowercase hex of 2, 32, 16 and 2 digits, neither
/// id all zeros, version `ff` forbidden.
fn well_formed(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |part: &str| part.bytes().all(|b| b == b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && !zero(trace)
                && hex(parent, 16)
                && !zero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

tokio::task_local! {
    /// The incoming pair of the request this task serves (traces not exported).
    static INCOMING: Carried;
}

/// Makes the request's span a child of the caller's trace. Call it before the span is
/// first entered (a started span's parent cannot change). Returns what to pass on
/// when traces are not exported; [`carry`] keeps it for the request's calls.
pub fn adopt(span: &tracing::Span, headers: &HeaderMap) -> Option<Carried> {
    if exporting() {
        let parent = TraceContextPropagator::new().extract(&HeaderReader(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        None
    } else {
        Carried::from_headers(headers)
    }
}

/// The OpenTelemetry kind of `span` (`server`, `client`): a span that names it
/// declares `otel.kind = tracing::field::Empty`, so log lines do not carry it when no
/// trace is exported. Call it before the span is first entered.
pub fn kind(span: &tracing::Span, kind: &'static str) {
    if exporting() {
        span.record("otel.kind", kind);
    }
}

/// [`adopt`] for work that runs later on a request's behalf (a job, a webhook
/// delivery): the `traceparent` stored with it, if one was and it is well-formed.
pub fn adopt_stored(span: &tracing::Span, traceparent: Option<&str>) -> Option<Carried> {
    let headers = traceparent
        .and_then(Carried::from_traceparent)
        .map(|carried| carried.headers())
        .unwrap_or_default();
    adopt(span, &headers)
}

/// Runs `future` with `carried` as the pair its calls pass on (when there is one).
pub async fn carry<F: Future>(carried: Option<Carried>, future: F) -> F::Output {
    match carried {
        Some(carried) => INCOMING.scope(carried, future).await,
        None => future.await,
    }
}

/// What a call made now passes on: the current span's context when traces are
/// exported, else the pair the request came with (empty when it had none).
pub fn outgoing() -> Carried {
    if exporting() {
        let context = tracing::Span::current().context();
        let mut carried = Carried::default();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut carried);
        }
        carried
    } else {
        INCOMING.try_with(Clone::clone).unwrap_or_default()
    }
}

/// [`outgoing`] as headers, for a `reqwest` request builder's `.headers(..)`.
pub fn outgoing_headers() -> HeaderMap {
    let carried = outgoing();
    match carried.is_empty() {
        true => HeaderMap::new(),
        false => carried.headers(),
    }
}

/// The `traceparent` a call made now would carry, for work that runs later on the
/// request's behalf (a webhook event's delivery).
pub fn current_traceparent() -> Option<String> {
    outgoing()
        .traceparent
        .and_then(|value| value.to_str().ok().map(str::to_owned))
}

impl Injector for Carried {
    fn set(&mut self, key: &str, value: String) {
        let Ok(value) = HeaderValue::from_str(&value) else {
            return;
        };
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

struct HeaderReader<'a>(&'a HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn only_well_formed_traceparents_are_carried() {
        assert!(well_formed(GOOD));
        assert!(well_formed(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn without_an_exporter_the_incoming_pair_is_passed_on_within_its_request_only() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let carried = adopt(&tracing::Span::none(), &headers);
        assert_eq!(
            carried.as_ref().and_then(|c| c.traceparent.clone()),
            Some(HeaderValue::from_static(GOOD))
        );
        let inside = carry(carried, async { outgoing_headers() }).await;
        assert_eq!(inside.get(TRACEPARENT).unwrap(), GOOD);
        assert_eq!(inside.get(TRACESTATE).unwrap(), "vendor=1");
        assert!(
            outgoing_headers().is_empty(),
            "outside the request nothing is carried"
        );

        headers.insert(TRACEPARENT, HeaderValue::from_static("00-nothex-01"));
        assert_eq!(adopt(&tracing::Span::none(), &headers), None);
    }
}
