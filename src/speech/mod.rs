//! What the speech products (ScaiEcho, ScaiSpeak) share: the backends and their
//! resolver, the managed relay's client, the audio intake (upload budget, decode slots,
//! decoding, reference clips), the upload body's parts, and the inference nodes a
//! backend A request may use.
//!
//! - [`backends`]: backends A and B, the caller's preference, the resolver (pure).
//! - [`upstream`]: the managed OpenAI-compatible relay (backend B) and its error text.
//! - [`intake`]: the upload budget and decode slots; decoding to 16 kHz and reference
//!   clips (speaker enrollment, voice cloning) measured by the preflight.
//! - [`upload`]: a multipart or raw upload split into audio and option fields.
//! - [`nodes`]: this process's node and the live nodes of the registry.
//! - [`meter`]: a live stream's usage, recorded at checkpoints and allowed a stretch at a
//!   time.
//! - [`balancers`]: the nodes a request naming one of its tenant's balancers runs on.

pub mod backends;
pub mod balancers;
pub mod erasure;
pub mod intake;
pub mod meter;
pub mod nodes;
pub mod upload;
pub mod upstream;

use std::sync::Arc;

use crate::accounting::Accounting;
use crate::config::StreamConfig;
use crate::db::Db;
use crate::jobs::Jobs;
use crate::ratelimit::Gate;
use crate::store::ObjectStore;

/// The handles each speech product's context is built from: what both use, and
/// nothing of the other product or of the HTTP surface.
#[derive(Clone)]
pub struct Handles {
    pub db: Db,
    pub store: Arc<dyn ObjectStore>,
    pub intake: Arc<intake::AudioIntake>,
    pub nodes: nodes::Nodes,
    pub accounting: Arc<Accounting>,
    pub jobs: Arc<Jobs>,
    /// Admission of stream callers (auth, rate limits, budget).
    pub gate: Gate,
    /// Stream timers and limits (`[stream]`).
    pub stream: StreamConfig,
    /// Guards texts to speak and transcripts.
    pub firewall: Arc<crate::firewall::Firewall>,
}

impl Handles {
    /// The nodes a request of `tenant_id` naming `model` is bound to, when `model` is
    /// one of the tenant's balancers for what the route `serves` (see [`balancers`]).
    pub async fn bound(
        &self,
        tenant_id: &str,
        model: Option<&str>,
        serves: balancers::Serves,
    ) -> crate::error::ApiResult<Option<Vec<String>>> {
        balancers::resolve(&self.db, &self.nodes, tenant_id, model, serves).await
    }
}
