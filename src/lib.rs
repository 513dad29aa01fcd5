//! ScaiGrid: an audio-first real-time media server and multi-tenant AI gateway.
//!
//! The modules sit on layers (`tests/layering.rs` checks that no `crate::` path runs up
//! a layer or between products; `ARCHITECTURE.md` has the map); `media/` and `engines/`
//! are separate crates that know nothing of HTTP.
//!
//! - Assembly: [`cli`], [`bootstrap`], [`app`] (state and router), [`server`], [`http`]
//!   (routes and thin handlers), [`extract`], [`worker`].
//! - Transports: [`webrtc`] (sessions carrying the speech products' streams),
//!   [`realtime`] (OpenAI's Realtime protocol over them).
//! - Products, each with its own context: [`gateway`], [`scaiecho`], [`scaispeak`],
//!   [`webhooks`], [`instances`], and the web [`console`].
//! - Shared: [`speech`] (backends, relay, audio intake, nodes), [`jobs`], [`ratelimit`]
//!   (and the admission gate), [`accounting`], [`auth`], [`services`] (admin
//!   operations), [`ws`], [`slots`], [`cluster`] (the scaled deployment's Redis),
//!   [`telemetry`].
//! - Base: [`config`], [`error`], [`records`], [`rbac`], [`vault`], [`db`], [`store`],
//!   [`net`], [`request_id`], [`trace_context`], [`memory`].

pub mod accounting;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod db;
pub mod error;
pub mod extract;
pub mod firewall;
pub mod gateway;
pub mod http;
pub mod inference;
pub mod instances;
pub mod jobs;
pub mod memory;
pub mod net;
pub mod ratelimit;
pub mod rbac;
pub mod realtime;
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
pub mod trace_context;
pub mod vault;
pub mod webhooks;
pub mod webrtc;
pub mod worker;
pub mod ws;
