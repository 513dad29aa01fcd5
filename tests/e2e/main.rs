//! End-to-end tests: the real server on an ephemeral port, real HTTP clients.
//! One test binary (link once); one module per area.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

mod adversarial;
mod asyncapi;
mod auth;
mod browser;
mod cache;
mod cli;
mod connections;
mod console;
mod deepgram;
mod embeddings;
mod envelope;
mod firewall;
mod gateway;
mod instances;
mod metering;
mod node_api;
mod nodes;
mod operations;
mod otel;
mod outages;
mod readme;
mod realtime;
mod scaiecho;
mod scaispeak;
mod scaled;
mod secrets;
mod speakers;
mod stream;
mod support;
mod tenancy;
mod tls;
mod topology;
mod upstream;
mod webhooks;
mod webrtc;
