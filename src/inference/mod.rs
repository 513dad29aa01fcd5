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
//! - [`supervisor`]: the embedded default's node processes, started, watched and
//!   restarted by the server.

pub mod member;
pub mod pool;
pub mod proto;
pub mod serve;
pub mod service;
pub mod stt;
pub mod supervisor;
pub mod tts;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a node listens: a Unix socket (`unix:/path`, the embedded default's) or a TCP
/// address (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
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
        text.parse()
            .map(Address::Tcp)
            .map_err(|_| format!("`{text}` is neither unix:/path nor host:port"))
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
        for text in ["unix:/tmp/node.sock", "127.0.0.1:7070", "[::1]:80"] {
            assert_eq!(text.parse::<Address>().unwrap().to_string(), text);
        }
        assert!("unix:".parse::<Address>().is_err());
        assert!("localhost".parse::<Address>().is_err());
    }
}
