//! One node as the edge knows it: its address, a lazily connected client, what it
//! last reported (readiness through the gRPC health protocol, then `Info`), and the
//! calls in flight to it from here.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::proto::node_client::NodeClient;
use super::{Address, proto};

/// A probe that takes longer than this counts as the node not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The node service's name in the gRPC health protocol.
const SERVICE: &str = "scaigrid.node.v1.Node";

/// What the edge knows of a node.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// It answered its last probe.
    pub ready: bool,
    /// Its last info (kept while it restarts: what it carries does not change).
    pub info: Option<proto::InfoReply>,
    /// Why it is not ready.
    pub error: Option<String>,
    /// Its process id, when this server supervises it.
    pub pid: Option<u32>,
}

/// One node the edge can call.
pub struct Member {
    pub id: String,
    pub address: Address,
    pub(super) client: NodeClient<Channel>,
    channel: Channel,
    seen: RwLock<Seen>,
    pub(super) in_flight: AtomicU32,
    restarts: AtomicU64,
    changed: Arc<Notify>,
}

impl Member {
    pub(super) fn new(
        id: String,
        address: Address,
        changed: Arc<Notify>,
    ) -> anyhow::Result<Member> {
        let channel = channel(&address)?;
        let client = NodeClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Member {
            id,
            address,
            client,
            channel,
            seen: RwLock::new(Seen::default()),
            in_flight: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            changed,
        })
    }

    pub fn seen(&self) -> Seen {
        self.seen.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Called by the supervisor each time it starts the node's process again.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("scaigrid_node_restarts_total", "node" => self.id.clone()).increment(1);
    }

    pub fn set_pid(&self, pid: Option<u32>) {
        self.update(|seen| seen.pid = pid);
    }

    /// The node is not answering (`why`); calls wait for it or go elsewhere.
    pub fn lost(&self, why: &str) {
        self.update(|seen| {
            seen.ready = false;
            seen.error = Some(why.to_owned());
        });
    }

    fn update(&self, change: impl FnOnce(&mut Seen)) {
        if let Ok(mut seen) = self.seen.write() {
            change(&mut seen);
        }
        self.changed.notify_waiters();
    }

    pub(super) fn carries(&self, models: &[&str]) -> bool {
        self.seen.read().is_ok_and(|seen| {
            seen.info.as_ref().is_some_and(|info| {
                info.models_loaded
                    .iter()
                    .any(|m| models.contains(&m.as_str()))
            })
        })
    }

    pub(super) fn ready(&self) -> bool {
        self.seen.read().is_ok_and(|seen| seen.ready)
    }

    /// Asks the node whether it serves (the gRPC health protocol), then for its info:
    /// ready with it, or lost with why not.
    pub async fn probe(&self) {
        let mut check = Request::new(HealthCheckRequest {
            service: SERVICE.to_owned(),
        });
        check.set_timeout(PROBE_TIMEOUT);
        match HealthClient::new(self.channel.clone()).check(check).await {
            Ok(reply) if reply.get_ref().status == ServingStatus::Serving as i32 => {}
            Ok(reply) => {
                let status = reply.get_ref().status;
                return self.lost(&format!("health: not serving ({status})"));
            }
            Err(status) => {
                return self.lost(&format!("{:?}: {}", status.code(), status.message()));
            }
        }
        let mut request = Request::new(proto::InfoRequest {});
        request.set_timeout(PROBE_TIMEOUT);
        match self.client.clone().info(request).await {
            Ok(reply) => {
                let info = reply.into_inner();
                let queue = f64::from(info.queue_depth);
                metrics::gauge!("scaigrid_node_queue_depth", "node" => self.id.clone()).set(queue);
                self.update(|seen| {
                    seen.ready = true;
                    seen.error = None;
                    seen.info = Some(info);
                });
            }
            Err(status) => self.lost(&format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// The node's view for `GET /v1/infra/nodes` and readiness.
    pub fn view(&self) -> Value {
        let seen = self.seen();
        let info = seen.info.unwrap_or_default();
        let status = match seen.ready {
            true => info.status.as_str(),
            false => "offline",
        };
        json!({
            "node_id": self.id,
            "status": status,
            "address": self.address.to_string(),
            "device": info.device,
            "models_loaded": info.models_loaded,
            "memory_mb": info.memory_mb,
            "failures": info.failures.iter()
                .map(|f| json!({ "engine": f.engine, "error": f.error }))
                .collect::<Vec<_>>(),
            "queue_depth": info.queue_depth,
            "in_flight": info.in_flight,
            "version": info.version,
            "warm_speakers": info.warm_speakers,
            "warm_voices": info.warm_voices,
            "pid": seen.pid,
            "restarts": self.restarts(),
            "error": seen.error,
        })
    }
}

/// A lazily connected channel: it connects on the first call and again after the node
/// restarts.
fn channel(address: &Address) -> anyhow::Result<Channel> {
    Ok(match address {
        Address::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_lazy(),
        Address::Unix(path) => {
            let path = path.clone();
            // The URI is required and unused: the connector dials the socket.
            Endpoint::from_static("http://node.invalid").connect_with_connector_lazy(
                tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }),
            )
        }
    })
}

/// Counts a call in flight to a member while it lives.
pub(super) struct Call(pub(super) Arc<Member>);

impl Drop for Call {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
