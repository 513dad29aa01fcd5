//! The inference nodes a backend A request may use: the nodes this process supervises
//! (through their [`Dispatcher`], when engines are enabled here) and, in a scaled
//! deployment, the live nodes of the registry. The edge's own voice activity detector
//! (stream segmentation, preflight) stays in this process.

use std::collections::HashSet;
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::error::ApiResult;
use crate::inference::pool::{Announced, Dispatcher};
use crate::speech::backends::Usable;

#[derive(Clone, Default)]
pub struct Nodes {
    /// Redis of the scaled deployment, where the registry lives (`None`: embedded).
    cluster: Option<Arc<Cluster>>,
    /// The edge's voice activity detector (`None` when engines are disabled here).
    vad: Option<Arc<engines::node::Node>>,
    /// The nodes this process supervises and calls.
    engines: Option<Arc<Dispatcher>>,
}

impl Nodes {
    pub fn new(
        cluster: Option<Arc<Cluster>>,
        vad: Option<Arc<engines::node::Node>>,
        engines: Option<Arc<Dispatcher>>,
    ) -> Nodes {
        Nodes {
            cluster,
            vad,
            engines,
        }
    }

    /// Redis of the scaled deployment (`None`: embedded).
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.clone()
    }

    /// The edge's engines (the voice activity detector only).
    pub fn vad(&self) -> Option<&Arc<engines::node::Node>> {
        self.vad.as_ref()
    }

    /// The inference nodes' client.
    pub fn engines(&self) -> Option<&Arc<Dispatcher>> {
        self.engines.as_ref()
    }

    /// Keeps the dispatcher's nodes in step with the registry: the nodes that announce
    /// themselves there (`scaigrid node` with `[redis]`) join, those that stop
    /// heartbeating leave. Every edge so routes to every node (scaled deployment).
    pub fn spawn_discovery(&self) {
        let (Some(cluster), Some(engines)) = (self.cluster.clone(), self.engines.clone()) else {
            return;
        };
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(crate::cluster::nodes::HEARTBEAT);
            loop {
                ticker.tick().await;
                discover(&cluster, &engines).await;
            }
        });
    }

    /// One discovery before the process serves, and the nodes found given up to
    /// `wait` to answer their first probe: an edge that starts beside running nodes
    /// does not turn its first requests away for want of a backend.
    pub async fn discover_now(&self, wait: std::time::Duration) {
        let (Some(cluster), Some(engines)) = (&self.cluster, &self.engines) else {
            return;
        };
        discover(cluster, engines).await;
        if !engines.wait_all_ready(wait).await {
            tracing::warn!(problems = ?engines.problems(), "some nodes of the registry are not ready");
        }
    }

    /// The ids of the nodes this process routes to (its own, and the registry's).
    pub fn node_ids(&self) -> Vec<String> {
        self.engines
            .as_ref()
            .map(|engines| engines.members().iter().map(|m| m.id.clone()).collect())
            .unwrap_or_default()
    }

    /// Which nodes are alive, for `warm_node_ids`: in a scaled deployment the ones the
    /// registry heard from lately (a node that died drops out by itself); all of them in
    /// the embedded default, where the nodes are this process's.
    pub async fn live(&self) -> ApiResult<LiveNodes> {
        let Some(cluster) = &self.cluster else {
            return Ok(LiveNodes(None));
        };
        let ids = crate::cluster::nodes::list(cluster)
            .await?
            .iter()
            .filter_map(|node| node["node_id"].as_str().map(str::to_owned))
            .collect();
        Ok(LiveNodes(Some(ids)))
    }

    /// Backends for work a worker may run (jobs): this process's, plus backend A when a
    /// live node of the registry (scaled deployment) has an engine whose id starts with
    /// `engine_prefix` (`audio.stt.`). An API process without engines queues jobs for
    /// the workers that have them.
    pub async fn usable_for_jobs(&self, local: Usable, engine_prefix: &str) -> ApiResult<Usable> {
        let Some(cluster) = self.cluster.as_ref().filter(|_| !local.local) else {
            return Ok(local);
        };
        let nodes = crate::cluster::nodes::list(cluster).await?;
        let a = nodes.iter().any(|node| {
            node["models_loaded"].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|id| id.as_str().is_some_and(|id| id.starts_with(engine_prefix)))
            })
        });
        Ok(Usable {
            local: a,
            relay: local.relay,
        })
    }
}

/// Reads the registry and hands its nodes to the dispatcher.
async fn discover(cluster: &Cluster, engines: &Dispatcher) {
    match crate::cluster::nodes::list(cluster).await {
        Ok(nodes) => engines.discovered(&announced(&nodes)),
        Err(error) => tracing::warn!(%error, "reading the node registry failed"),
    }
}

/// The registry's entries that any edge may call (a server's own supervised nodes are
/// listed there too, on sockets only that server reaches).
fn announced(nodes: &[serde_json::Value]) -> Vec<Announced> {
    nodes
        .iter()
        .filter(|node| node["shared"] == true)
        .filter_map(|node| {
            Some(Announced {
                id: node["node_id"].as_str()?.to_owned(),
                address: node["address"].as_str()?.parse().ok()?,
            })
        })
        .collect()
}

/// The live nodes (`None`: the embedded default, where every node id is this one).
#[derive(Debug, Clone, Default)]
pub struct LiveNodes(Option<HashSet<String>>);

impl LiveNodes {
    /// `ids` without the nodes that are gone.
    pub fn keep(&self, mut ids: Vec<String>) -> Vec<String> {
        if let Some(live) = &self.0 {
            ids.retain(|id| live.contains(id));
        }
        ids
    }
}
