//! The dispatcher's calls to every node at once (speaker profiles and voices kept
//! warm, evicted) and to one named node (the erasure reconciler's owed eviction), as
//! opposed to [`super::pool`]'s calls that go to one node picked by load.

use std::future::Future;
use std::time::Duration;

use tonic::{Request, Status};

use super::member::Client;
use super::pool::{Dispatcher, SPEAKER, TTS};
use super::{proto, wire};

/// How long a warm or evict call to one node may take.
const FAN_OUT_DEADLINE: Duration = Duration::from_secs(10);

impl Dispatcher {
    /// Asks every node carrying the speaker embedder to keep a speaker profile warm;
    /// the ids of those that did, and why the others did not.
    pub async fn warm_speaker(
        &self,
        id: &str,
        embedding: &[f32],
    ) -> (Vec<String>, Vec<(String, String)>) {
        let message = proto::WarmRequest {
            kind: "speaker".to_owned(),
            id: id.to_owned(),
            embedding: embedding.to_vec(),
            profile: bytes::Bytes::new(),
        };
        self.warm(SPEAKER, message).await
    }

    /// Asks every node carrying the voice to keep a cloned voice's conditioning
    /// (`profile`, as stored) warm; the ids of those that did, and why others did not.
    pub async fn warm_voice(
        &self,
        id: &str,
        profile: &str,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let message = proto::WarmRequest {
            kind: "voice".to_owned(),
            id: id.to_owned(),
            embedding: Vec::new(),
            profile: bytes::Bytes::copy_from_slice(profile.as_bytes()),
        };
        self.warm(TTS, message).await
    }

    async fn warm(
        &self,
        models: &[&str],
        message: proto::WarmRequest,
    ) -> (Vec<String>, Vec<(String, String)>) {
        self.each(models, |mut client| {
            let request = Request::new(message.clone());
            async move { client.warm(request).await.map(|_| ()) }
        })
        .await
    }

    /// Asks every node to drop a warm profile; the ids that did, and why others did not.
    pub async fn evict(&self, kind: &str, id: &str) -> (Vec<String>, Vec<(String, String)>) {
        let message = proto::EvictRequest {
            kind: kind.to_owned(),
            id: id.to_owned(),
        };
        self.each(&[], |mut client| {
            let request = Request::new(message.clone());
            async move { client.evict(request).await.map(|_| ()) }
        })
        .await
    }

    /// Asks node `node_id` alone to drop a warm profile (the erasure reconciler's
    /// call for a node that was away at deletion).
    pub async fn evict_on(&self, node_id: &str, kind: &str, id: &str) -> Result<(), String> {
        let members = self.members();
        let member = members
            .iter()
            .find(|m| m.id == node_id && m.ready())
            .ok_or_else(|| format!("node {node_id} is not ready"))?;
        let mut request = Request::new(proto::EvictRequest {
            kind: kind.to_owned(),
            id: id.to_owned(),
        });
        request.set_timeout(FAN_OUT_DEADLINE);
        match member.client.clone().evict(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(wire::engine_error(&status, node_id).to_string()),
        }
    }

    /// Runs `call` on every node carrying `models` (all nodes when empty); a node
    /// that is not ready is reported failed without a call.
    async fn each<F, Fut>(&self, models: &[&str], call: F) -> (Vec<String>, Vec<(String, String)>)
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        let members = self.members();
        let (targets, away): (Vec<_>, Vec<_>) = members
            .iter()
            .filter(|m| models.is_empty() || m.carries(models))
            .partition(|m| m.ready());
        let results = futures_util::future::join_all(targets.into_iter().map(|member| {
            let call = tokio::time::timeout(FAN_OUT_DEADLINE, call(member.client.clone()));
            async move {
                let result = match call.await {
                    Ok(result) => result,
                    Err(_) => Err(Status::unavailable("no answer in time")),
                };
                (member.id.clone(), result)
            }
        }))
        .await;
        let mut done = Vec::new();
        let mut failed: Vec<(String, String)> = away
            .into_iter()
            .map(|m| {
                let why = m.seen().error.unwrap_or_else(|| "not ready".to_owned());
                (m.id.clone(), format!("node {} is not ready: {why}", m.id))
            })
            .collect();
        for (id, result) in results {
            match result {
                Ok(()) => done.push(id),
                Err(status) => {
                    failed.push((id.clone(), wire::engine_error(&status, &id).to_string()))
                }
            }
        }
        (done, failed)
    }
}
