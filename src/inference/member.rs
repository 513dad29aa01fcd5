//! One node as the edge knows it: its address, a lazily connected client, what it
//! last reported (readiness through the gRPC health protocol, then `Info`), and the
//! calls in flight to it from here.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use engines::EngineResult;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tonic::Request;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::proto::node_client::NodeClient;
use super::token::Bearer;
use super::{Address, proto};

/// A node's client: every call carries the node token.
pub type Client = NodeClient<InterceptedService<Channel, Bearer>>;

/// A probe that takes longer than this counts as the node not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a TCP connection to a node is pinged, and how long a ping may go
/// unanswered before the connection counts as broken.
const KEEPALIVE: Duration = Duration::from_secs(4);

/// How long a model load or unload may take on the node.
pub const MODEL_CHANGE_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// Calls from here in flight to it when it last reported its own count: the rest
    /// of that count is other edges' work.
    own_at_probe: u32,
}

/// One node the edge can call.
pub struct Member {
    pub id: String,
    pub address: Address,
    /// This server starts and restarts its process (else the registry announced it).
    pub supervised: bool,
    pub(super) client: Client,
    channel: Channel,
    bearer: Bearer,
    seen: RwLock<Seen>,
    in_flight: AtomicU32,
    restarts: AtomicU64,
    changed: Arc<Notify>,
    /// Set when the dispatcher lets go of it: its probe stops.
    gone: AtomicBool,
}

impl Member {
    pub(super) fn new(
        (id, address): (String, Address),
        supervised: bool,
        bearer: Bearer,
        changed: Arc<Notify>,
    ) -> anyhow::Result<Member> {
        let channel = channel(&address)?;
        let client = NodeClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Member {
            id,
            address,
            supervised,
            client,
            channel,
            bearer,
            seen: RwLock::new(Seen::default()),
            in_flight: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            changed,
            gone: AtomicBool::new(false),
        })
    }

    /// The dispatcher no longer routes to it (it left the registry); calls already in
    /// flight finish.
    pub(super) fn forget(&self) {
        self.gone.store(true, Ordering::Relaxed);
        self.lost("left the node registry");
    }

    pub(super) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// How busy it is: calls from here in flight now, and the other edges' share of
    /// what it reported in flight. Routing picks the least.
    pub fn load(&self) -> u32 {
        let own = self.in_flight.load(Ordering::Relaxed);
        let others = self.seen.read().map_or(0, |seen| {
            let reported = seen.info.as_ref().map_or(0, |info| info.in_flight);
            reported.saturating_sub(seen.own_at_probe)
        });
        own + others
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

    pub fn carries(&self, models: &[&str]) -> bool {
        self.seen.read().is_ok_and(|seen| {
            seen.info.as_ref().is_some_and(|info| {
                info.models_loaded
                    .iter()
                    .any(|m| models.contains(&m.as_str()))
            })
        })
    }

    pub fn ready(&self) -> bool {
        self.seen.read().is_ok_and(|seen| seen.ready)
    }

    /// Asks the node whether it serves (the gRPC health protocol), then for its info:
    /// ready with it, or lost with why not.
    pub async fn probe(&self) {
        let mut check = Request::new(HealthCheckRequest {
            service: SERVICE.to_owned(),
        });
        check.set_timeout(PROBE_TIMEOUT);
        let mut health = HealthClient::with_interceptor(self.channel.clone(), self.bearer.clone());
        match health.check(check).await {
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
        let own = self.in_flight.load(Ordering::Relaxed);
        match self.client.clone().info(request).await {
            Ok(reply) => {
                let info = reply.into_inner();
                let queue = f64::from(info.queue_depth);
                metrics::gauge!("scaigrid_node_queue_depth", "node" => self.id.clone()).set(queue);
                self.update(|seen| {
                    seen.ready = !self.is_gone();
                    seen.error = None;
                    seen.info = Some(info);
                    seen.own_at_probe = own;
                });
            }
            Err(status) => self.lost(&format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// Loads (`load`) or unloads `model` on the node, and takes its new info at once
    /// (routing sees the change without waiting for the next probe). Loading a large
    /// model takes seconds: [`MODEL_CHANGE_TIMEOUT`].
    pub async fn change_model(&self, model: &str, load: bool) -> EngineResult<proto::InfoReply> {
        let mut request = Request::new(proto::ModelRequest {
            model: model.to_owned(),
        });
        request.set_timeout(MODEL_CHANGE_TIMEOUT);
        let mut client = self.client.clone();
        let reply = match load {
            true => client.load(request).await,
            false => client.unload(request).await,
        };
        let info = reply
            .map_err(|status| super::wire::engine_error(&status, &self.id))?
            .into_inner();
        self.update(|seen| seen.info = Some(info.clone()));
        Ok(info)
    }

    /// The node's view for `GET /v1/infra/nodes` and readiness.
    pub fn view(&self) -> Value {
        let seen = self.seen();
        let info = seen.info.unwrap_or_default();
        let status = match seen.ready {
            true => info.status.clone(),
            false => "offline".to_owned(),
        };
        let mut view = info_view(&info);
        view.extend([
            ("node_id".to_owned(), json!(self.id)),
            ("status".to_owned(), json!(status)),
            ("address".to_owned(), json!(self.address.to_string())),
            ("supervised".to_owned(), json!(self.supervised)),
            ("load".to_owned(), json!(self.load())),
            (
                "pid".to_owned(),
                json!(seen.pid.or((info.pid > 0).then_some(info.pid))),
            ),
            ("restarts".to_owned(), json!(self.restarts())),
            ("error".to_owned(), json!(seen.error)),
        ]);
        Value::Object(view)
    }
}

/// What a node reports of itself, as `GET /v1/infra/nodes` and the registry show it.
pub fn info_view(info: &proto::InfoReply) -> serde_json::Map<String, Value> {
    let failures: Vec<Value> = info
        .failures
        .iter()
        .map(|f| json!({ "engine": f.engine, "error": f.error }))
        .collect();
    [
        ("node_id", json!(info.node_id)),
        ("status", json!(info.status)),
        ("device", json!(info.device)),
        ("models_loaded", json!(info.models_loaded)),
        ("memory_mb", json!(info.memory_mb)),
        ("memory_limit_mb", json!(info.memory_limit_mb)),
        ("memory_available_mb", json!(info.memory_available_mb)),
        ("region", json!(info.region)),
        ("capacity_tier", json!(info.capacity_tier)),
        ("price_per_hour", json!(info.price_per_hour)),
        ("failures", json!(failures)),
        ("queue_depth", json!(info.queue_depth)),
        ("in_flight", json!(info.in_flight)),
        ("version", json!(info.version)),
        ("warm_speakers", json!(info.warm_speakers)),
        ("warm_voices", json!(info.warm_voices)),
        ("pid", json!(info.pid)),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// A lazily connected channel: it connects on the first call and again after the node
/// restarts.
fn channel(address: &Address) -> anyhow::Result<Channel> {
    Ok(match address {
        // A node on another machine can vanish without closing its connections (power,
        // network): keepalive pings find out within seconds, and the call fails over.
        Address::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(PROBE_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true)
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
pub(super) struct Call(Arc<Member>);

impl Call {
    pub(super) fn start(member: &Arc<Member>) -> Call {
        member.in_flight.fetch_add(1, Ordering::Relaxed);
        Call(member.clone())
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
