//! A speech request bound to a balancer (`model` naming one of the tenant's balancers,
//! `/v1/balancers`): the nodes of one of its healthy instances, picked by weight, run
//! all of the request's inference. Every speech path asks here: sync and queued
//! transcriptions and syntheses (a job asks again when it runs), live streams (bound
//! for their whole life) and WebRTC sessions (their `open` options).
//!
//! A `model` that names no balancer leaves the request unbound (OpenAI clients send
//! `whisper-1` or `tts-1`); a balancer with no healthy instance is 503
//! `MODEL_UNAVAILABLE` naming it; a balancer of the other kind (text to speech for a
//! transcription) is 400.

use std::sync::Arc;

use crate::db::Db;
use crate::db::balancers;
use crate::db::instances::{self, InstanceRow};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::inference::pool::Member;
use crate::speech::backends::Preference;
use crate::speech::nodes::Nodes;

/// The longest `model` a speech request may name (it is stored with a queued job).
const MAX_MODEL_BYTES: usize = 256;

/// What a route does with the nodes, so a balancer of the other kind is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    Transcription,
    Speech,
}

impl Serves {
    /// The engine-id prefix of the models that do it.
    fn prefix(self) -> &'static str {
        match self {
            Serves::Transcription => "audio.stt.",
            Serves::Speech => "audio.tts.",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Serves::Transcription => "speech to text",
            Serves::Speech => "text to speech",
        }
    }
}

/// A request bound to a balancer's nodes runs on backend A (the nodes), whatever it
/// asked for; the tenant policy still has its say.
pub fn preference(nodes: &Option<Vec<String>>, asked: Option<Preference>) -> Option<Preference> {
    match nodes {
        Some(_) => Some(Preference::SelfHosted),
        None => asked,
    }
}

/// Whether a name could be a balancer's (1 to 64 of a-z, 0-9, `-`, `_`, `.`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Whether an instance takes requests now: running, and each of its nodes answering
/// and carrying its model.
pub fn healthy(members: &[Arc<Member>], instance: &InstanceRow) -> bool {
    instance.state == "running"
        && !instance.node_ids.is_empty()
        && instance.node_ids.iter().all(|node| {
            members
                .iter()
                .any(|m| &m.id == node && m.ready() && m.carries(&[instance.model.as_str()]))
        })
}

/// The item whose share of the weights' sum holds `roll` (each weight at least 1).
fn pick<T>(weighted: Vec<(u32, T)>, mut roll: u32) -> Option<T> {
    for (weight, item) in weighted {
        if roll < weight {
            return Some(item);
        }
        roll -= weight;
    }
    None
}

/// The nodes a request of `tenant_id` naming `model` runs on, when `model` is one of
/// the tenant's balancers for what the route `serves`. `None`: no balancer has that
/// name.
pub async fn resolve(
    db: &Db,
    nodes: &Nodes,
    tenant_id: &str,
    model: Option<&str>,
    serves: Serves,
) -> ApiResult<Option<Vec<String>>> {
    if model.is_some_and(|model| model.len() > MAX_MODEL_BYTES) {
        return Err(
            ApiError::invalid(format!("model must be at most {MAX_MODEL_BYTES} bytes"))
                .with_field("field", "model"),
        );
    }
    let Some(model) = model.filter(|model| valid_name(model)) else {
        return Ok(None);
    };
    let mut conn = db.pool.acquire().await?;
    let Some(balancer) = balancers::get(&mut conn, tenant_id, (model, true)).await? else {
        return Ok(None);
    };
    if !balancer.model.starts_with(serves.prefix()) {
        return Err(ApiError::invalid(format!(
            "balancer `{model}` serves `{}`; this route needs a {} model",
            balancer.model,
            serves.words()
        ))
        .with_field("field", "model"));
    }
    let members = nodes
        .engines()
        .map(|engines| engines.members().to_vec())
        .unwrap_or_default();
    let mut live = Vec::new();
    for member in &balancer.members {
        if let Some(instance) = instances::get(&mut conn, tenant_id, &member.instance_id).await?
            && healthy(&members, &instance)
        {
            live.push((member.weight.max(1), instance.node_ids));
        }
    }
    let total: u32 = live.iter().map(|(weight, _)| weight).sum();
    if total == 0 {
        return Err(ApiError::new(
            ErrorCode::MODEL_UNAVAILABLE,
            format!("no instance behind balancer `{model}` is running and healthy"),
        )
        .with_field("balancer", model));
    }
    Ok(pick(live, rand::random_range(0..total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_share_the_rolls_and_names_are_checked() {
        let weighted = || vec![(1, "a"), (3, "b")];
        let picks: Vec<_> = (0..4).map(|roll| pick(weighted(), roll).unwrap()).collect();
        assert_eq!(picks, ["a", "b", "b", "b"]);
        assert_eq!(pick(weighted(), 4), None);
        assert!(valid_name("english-1.v2_a"));
        for bad in ["", "English", "a b", "whisper/1", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
