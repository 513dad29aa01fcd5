//! An authenticated request through the whole middleware stack, in-process.
//!
//! `GET /v1/me` with an API key (request id, metrics, panic guard, auth with the key
//! cache, JSON) against the reference `GET /health/live` through the same stack, so the
//! ratio is the cost of authentication and the handler.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use scaigrid::app::{AppState, router};
use scaigrid::config::{Config, FileConfig, Overrides, Secret};
use tower::ServiceExt;

const KEY: &str = "sgk_bench_platform_admin_key_0123456789";

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        data_dir: Some(temp.path().to_path_buf()),
        bootstrap_admin_key: Some(Secret::new(KEY)),
        jwt_secret: Some(Secret::new("bench-secret-bench-secret-bench-secret")),
        ..Overrides::default()
    };
    // No engines: the middleware is measured, and node processes would be this bench.
    let file = FileConfig {
        engines: scaigrid::config::FileEngines {
            enabled: Some(false),
            ..Default::default()
        },
        ..FileConfig::default()
    };
    let config = Config::merge(file, overrides).unwrap();
    let state: Arc<AppState> = runtime.block_on(AppState::open(config)).unwrap();
    let app = router(state);

    let mut group = c.benchmark_group("middleware_stack");
    group.bench_function("health_live_reference", |b| {
        b.iter(|| {
            let request = Request::get("/health/live").body(Body::empty()).unwrap();
            let response = runtime.block_on(app.clone().oneshot(request)).unwrap();
            assert!(response.status().is_success());
        })
    });
    group.bench_function("me_with_api_key", |b| {
        b.iter(|| {
            let request = Request::get("/v1/me")
                .header("Authorization", format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap();
            let response = runtime.block_on(app.clone().oneshot(request)).unwrap();
            assert!(response.status().is_success());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
