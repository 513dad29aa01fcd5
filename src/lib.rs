//! ScaiGrid: an audio-first real-time media server and multi-tenant AI gateway.
//!
//! Layout of this crate (the server; `media/` and `engines/` are separate crates that
//! know nothing of HTTP):
//! - [`config`]: the one configuration struct (file < env < flags).
//! - [`error`]: the code table and the error envelope.
//! - [`request_id`], [`telemetry`]: request ids, logs, metrics.
//! - [`db`]: the SQLite/PostgreSQL pool, migrations and repositories.
//! - [`store`]: the object store trait and its local-folder implementation.
//! - [`auth`], [`rbac`]: tokens to principals; roles and permissions.
//! - [`services`]: the admin operations shared by HTTP, CLI and bootstrap.
//! - [`http`]: routes and thin handlers; [`extract`]: envelope-aware extractors.
//! - [`app`], [`server`]: state, router assembly, serving and graceful shutdown.
//! - [`cli`], [`worker`], [`bootstrap`]: the command line and start-up.
//! - [`gateway`]: models, backends, breakers, chat; [`ratelimit`], [`accounting`]: the
//!   limits, usage records and budgets every module shares; [`webhooks`]: event delivery.
//! - [`cluster`]: the scaled deployment's Redis (counters, job stream, node registry,
//!   revocation broadcast).
//! - [`webrtc`]: WebRTC sessions carrying the ScaiEcho and ScaiSpeak stream sessions;
//!   [`ws`]: what every stream transport shares.

pub mod accounting;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod http;
pub mod jobs;
pub mod memory;
pub mod net;
pub mod ratelimit;
pub mod rbac;
pub mod records;
pub mod request_id;
pub mod scaiecho;
pub mod scaispeak;
pub mod server;
pub mod services;
pub mod slots;
pub mod speech;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod vault;
pub mod webhooks;
pub mod webrtc;
pub mod worker;
pub mod ws;
