//! Traces over OTLP, off unless asked for: the standard `OTEL_*` variables choose and
//! configure the exporter (`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT` turns
//! it on; `OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf`, the default, or `grpc`;
//! headers, timeout, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, the sampler and
//! the batch processor's `OTEL_BSP_*` as the OpenTelemetry SDK reads them).
//!
//! Every `tracing` span at or above the log filter becomes an OpenTelemetry span; the
//! ones that matter for a request are `request` (the root, with `request_id`),
//! `auth`, `route`, `upstream`, `decode`, `vad`, `inference`, `encode`, and `node` in
//! the inference node that served a call. `trace_context` joins them to the caller's
//! trace and passes the context on.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Whether the environment asks for traces: an OTLP endpoint is named (or
/// `OTEL_TRACES_EXPORTER=otlp`), and neither `OTEL_SDK_DISABLED=true` nor an
/// `OTEL_TRACES_EXPORTER` without `otlp` (e.g. `none`) says otherwise.
pub fn wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return false;
    }
    let exporters = set("OTEL_TRACES_EXPORTER").map(|value| value.to_ascii_lowercase());
    match exporters {
        Some(list) if !list.split(',').any(|e| e.trim() == "otlp") => false,
        Some(_) => true,
        None => {
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        }
    }
}

/// The exporting side of the process: flushes what is queued when it shuts down.
#[derive(Default)]
pub struct Guard(Option<SdkTracerProvider>);

impl Guard {
    /// Sends the spans still queued (within the exporter's timeout) and stops.
    pub async fn shutdown(self) {
        if let Some(provider) = self.0 {
            let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = stopped {
                eprintln!("scaigrid: flushing traces: {error}");
            }
        }
    }
}

/// The layer that turns spans into OpenTelemetry spans, when the environment asks for
/// traces. `role` (`serve`, `worker`, `node`) becomes the `scaigrid.role` attribute.
/// Call it inside the runtime: the gRPC exporter's channel lives on it.
pub fn layer<S>(role: &'static str) -> (Option<impl tracing_subscriber::Layer<S>>, Guard)
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if !wanted(|name| std::env::var(name).ok()) {
        return (None, Guard::default());
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            // Logging is not up yet: this is the one place a bad variable can be said.
            eprintln!("scaigrid: OTLP traces off: {error}");
            return (None, Guard::default());
        }
    };
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("scaigrid");
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("scaigrid.role", role),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("process.pid", i64::from(std::process::id())),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("scaigrid");
    crate::trace_context::set_exporting(true);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false);
    (Some(layer), Guard(Some(provider)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_or_the_otlp_exporter_is_named() {
        assert!(!wanted(env(&[])));
        assert!(!wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )])));
        assert!(wanted(env(&[("OTEL_TRACES_EXPORTER", "console,OTLP")])));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert!(!wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])));
        assert!(!wanted(env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(wanted(env(&[endpoint, ("OTEL_SDK_DISABLED", "false")])));
    }
}
