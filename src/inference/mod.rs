//! Inference nodes: the engines (Whisper, Piper, the speaker embedder) run in their own
//! processes and the edge reaches them over gRPC (`proto/scaigrid/node/v1`), so a fault
//! in native speech code ends a node, never the server.
//!
//! - [`serve`]: the node process (`scaigrid node`): loads engines, serves [`service`].
//! - [`service`]: the gRPC service over the engines' dispatchers ([`stt`], [`tts`]).
//! - [`wire`]: what crosses the wire (PCM bytes, messages, errors as statuses).
//! - [`member`]: one node as the edge knows it (client, probe, last info).
//! - [`pool`]: the edge's side: the nodes it knows, their health, and the one client
//!   every speech path calls ([`pool::Dispatcher`]), which retries a retry-safe call
//!   once when its node is lost.
//! - [`fanout`]: warm and evict on every node, an owed eviction on one.
//! - [`supervisor`]: the embedded default's node processes, started, watched and
//!   restarted by the server.
//! - [`token`]: the shared token that edges present and nodes require.

pub mod fanout;
pub mod member;
pub mod pool;
pub mod proto;
pub mod serve;
pub mod service;
pub mod stt;
pub mod supervisor;
pub mod token;
pub mod tts;
pub mod wire;

use std::net::IpAddr;
use std::path::PathBuf;

/// Where a node listens: a Unix socket (`unix:/path`, the embedded default's) or a TCP
/// address (`host:port`, the host a name or an IP address: nodes in a compose file are
/// reached by their service names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl Address {
    /// Whether only this machine can reach it (a Unix socket, a loopback address):
    /// a node listening anywhere else must require a token.
    pub fn is_local(&self) -> bool {
        match self {
            Address::Unix(_) => true,
            Address::Tcp(text) => {
                let host = host_of(text);
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

/// The host of a validated `host:port` (brackets of an IPv6 address removed).
fn host_of(text: &str) -> &str {
    let host = text.rsplit_once(':').map_or(text, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Checks `host:port`: a port, and a host that is an IP address (IPv6 in brackets) or
/// a DNS name.
fn tcp(text: &str) -> Result<Address, String> {
    let bad = || format!("`{text}` is neither unix:/path nor host:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let name = |host: &str| {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
            })
    };
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || name(host),
    };
    match valid {
        true => Ok(Address::Tcp(text.to_owned())),
        false => Err(bad()),
    }
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(text: &str) -> Result<Address, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        tcp(text)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Largest message a node takes: the longest audio the edge accepts as f32 PCM, and
/// room for the rest of the request.
pub fn max_message_bytes(max_audio_seconds: f64) -> usize {
    (max_audio_seconds * 16_000.0 * 4.0) as usize + (1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for text in [
            "unix:/tmp/node.sock",
            "127.0.0.1:7070",
            "[::1]:80",
            "node-1:7070",
            "gpu.example.internal:7070",
        ] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
        for bad in [
            "unix:",
            "localhost",
            "host:70000",
            "::1:80",
            "a b:80",
            "-x:80",
            ":80",
            "[nope]:80",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_and_sockets_are_local() {
        for local in ["unix:/tmp/n.sock", "127.0.0.1:1", "[::1]:1", "localhost:1"] {
            assert!(local.parse::<Address>().unwrap().is_local(), "{local}");
        }
        for open in ["0.0.0.0:7070", "[::]:7070", "10.0.0.5:7070", "node-1:7070"] {
            assert!(!open.parse::<Address>().unwrap().is_local(), "{open}");
        }
    }
}
