//! The local inference node: which engines this process loaded, on which device, with
//! how much memory, and why any failed. Loading never fails as a whole: each engine is
//! admitted (memory check) and loaded on its own, and failures are kept for readiness and
//! `GET /v1/infra/nodes`.

use std::path::PathBuf;

use serde::Serialize;

use crate::embedder::{self, SpeakerEmbedder};
use crate::error::{EngineError, EngineResult};
use crate::models::ModelDir;
use crate::runtime::{Device, Runtime, RuntimeConfig};
use crate::silero::{self, SileroVad};

/// Declared memory need of each engine in MB (the `memory_mb` of `models/manifest.toml`;
/// a test keeps them equal).
pub const MEMORY_MB: &[(&str, u64)] = &[(silero::ENGINE_ID, 16), (embedder::ENGINE_ID, 64)];

pub fn memory_mb(id: &str) -> u64 {
    MEMORY_MB
        .iter()
        .find(|(e, _)| *e == id)
        .map_or(0, |(_, mb)| *mb)
}

/// Refuses a model whose declared need exceeds what the device has free
/// (`GPU_INCOMPATIBLE` at the edge).
pub fn admit(id: &str, needed_mb: u64, available_mb: u64) -> EngineResult<()> {
    if needed_mb > available_mb {
        return Err(EngineError::ModelTooLarge {
            id: id.to_owned(),
            needed_mb,
            available_mb,
        });
    }
    Ok(())
}

/// Free memory of the host in MB (`MemAvailable`), for CPU inference.
pub fn host_available_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb / 1024)
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub models_dir: PathBuf,
    pub device: Device,
    pub intra_threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineFailure {
    pub engine: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeInfo {
    pub node_id: String,
    /// `online` (every engine loaded), `degraded` (some failed), `offline` (none).
    pub status: &'static str,
    pub device: String,
    pub models_loaded: Vec<String>,
    pub memory_mb: u64,
    pub failures: Vec<EngineFailure>,
}

pub struct Node {
    pub vad: Option<SileroVad>,
    pub embedder: Option<SpeakerEmbedder>,
    info: NodeInfo,
}

impl Node {
    /// Loads every engine it can. Blocking (library and model loading): call from a
    /// blocking thread.
    pub fn load(config: &NodeConfig) -> Node {
        let models = ModelDir::new(&config.models_dir);
        let mut failures = Vec::new();
        let mut fail = |engine: &str, error: EngineError| {
            failures.push(EngineFailure {
                engine: engine.to_owned(),
                error: error.to_string(),
            })
        };
        let runtime = models.onnxruntime_library().and_then(|library| {
            Runtime::init(RuntimeConfig {
                library,
                device: config.device,
                intra_threads: config.intra_threads,
            })
        });
        let (mut vad, mut embedder) = (None, None);
        match &runtime {
            Err(error) => fail("onnxruntime", EngineError::Runtime(error.to_string())),
            Ok(runtime) => {
                let available = host_available_mb();
                let loaded = admit(silero::ENGINE_ID, memory_mb(silero::ENGINE_ID), available)
                    .and_then(|()| SileroVad::load(runtime, &models));
                match loaded {
                    Ok(engine) => vad = Some(engine),
                    Err(error) => fail(silero::ENGINE_ID, error),
                }
                let loaded = admit(
                    embedder::ENGINE_ID,
                    memory_mb(embedder::ENGINE_ID),
                    available,
                )
                .and_then(|()| SpeakerEmbedder::load(runtime, &models));
                match loaded {
                    Ok(engine) => embedder = Some(engine),
                    Err(error) => fail(embedder::ENGINE_ID, error),
                }
            }
        }
        let mut models_loaded = Vec::new();
        if vad.is_some() {
            models_loaded.push(silero::ENGINE_ID.to_owned());
        }
        if embedder.is_some() {
            models_loaded.push(embedder::ENGINE_ID.to_owned());
        }
        let memory_mb = models_loaded.iter().map(|id| memory_mb(id)).sum();
        let status = match (models_loaded.is_empty(), failures.is_empty()) {
            (true, _) => "offline",
            (false, true) => "online",
            (false, false) => "degraded",
        };
        let device = match config.device {
            Device::Cpu => "cpu".to_owned(),
            Device::Cuda { device_id } => format!("cuda:{device_id}"),
        };
        Node {
            vad,
            embedder,
            info: NodeInfo {
                node_id: config.node_id.clone(),
                status,
                device,
                models_loaded,
                memory_mb,
                failures,
            },
        }
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_what_does_not_fit() {
        assert!(admit("a", 100, 200).is_ok());
        match admit("a", 300, 200) {
            Err(EngineError::ModelTooLarge {
                needed_mb: 300,
                available_mb: 200,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(host_available_mb() > 0);
    }

    #[test]
    fn memory_estimates_match_the_manifest() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/manifest.toml"
        ))
        .unwrap();
        let manifest: toml::Value = toml::from_str(&text).unwrap();
        for (id, mb) in MEMORY_MB {
            let entry = manifest["model"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"].as_str() == Some(id))
                .unwrap();
            assert_eq!(entry["memory_mb"].as_integer(), Some(*mb as i64), "{id}");
        }
    }

    #[test]
    fn missing_models_leave_the_node_offline_with_reasons() {
        let node = Node::load(&NodeConfig {
            node_id: "n".into(),
            models_dir: "/nonexistent".into(),
            device: Device::Cpu,
            intra_threads: 1,
        });
        assert_eq!(node.info().status, "offline");
        assert!(node.info().models_loaded.is_empty());
        assert_eq!(node.info().failures[0].engine, "onnxruntime");
    }
}
