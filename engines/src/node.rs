//! The local inference node: which engines this process loaded, on which device, with
//! how much memory, and why any failed. Loading never fails as a whole: each engine is
//! admitted (memory check) and loaded on its own, and failures are kept for readiness and
//! `GET /v1/infra/nodes`.

use std::path::PathBuf;

use serde::Serialize;

use crate::embedder::{self, SpeakerEmbedder};
use crate::error::{EngineError, EngineResult};
use crate::models::ModelDir;
use crate::piper::{self, PiperVoice};
use crate::runtime::{Device, Runtime, RuntimeConfig};
use crate::silero::{self, SileroVad};
use crate::whisper::{self, Whisper};

/// Declared memory need of each engine in MB (the `memory_mb` of `models/manifest.toml`;
/// a test keeps them equal).
pub const MEMORY_MB: &[(&str, u64)] = &[
    (silero::ENGINE_ID, 16),
    (whisper::ENGINE_ID, 300),
    (whisper::BASE_ENGINE_ID, 700),
    (piper::ENGINE_ID, 250),
    (embedder::ENGINE_ID, 64),
];

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

/// Free memory of the device in MB: the host's for the CPU; for a GPU what
/// `nvidia-smi` reports free on it (the driver's tool; the CUDA runtime is not linked
/// here). A GPU whose free memory cannot be read admits every model: its sessions then
/// fail on their own if they do not fit, and the failure is listed.
pub fn device_available_mb(device: Device) -> u64 {
    match device {
        Device::Cpu => host_available_mb(),
        Device::Cuda { device_id } => std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=index,memory.free",
                "--format=csv,noheader,nounits",
            ])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| gpu_free_mb(&String::from_utf8_lossy(&output.stdout), device_id))
            .unwrap_or(u64::MAX),
    }
}

/// The free MB of GPU `device_id` in `nvidia-smi --query-gpu=index,memory.free
/// --format=csv,noheader,nounits` output (`0, 15102` per line).
fn gpu_free_mb(text: &str, device_id: i32) -> Option<u64> {
    text.lines().find_map(|line| {
        let (index, free) = line.split_once(',')?;
        (index.trim().parse::<i32>().ok()? == device_id).then(|| free.trim().parse().ok())?
    })
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
    /// Also load the multilingual Whisper (base).
    pub multilingual: bool,
    /// How to start the text-to-speech phonemizer's child process.
    pub phonemizer: crate::phonemizer::PhonemizerCommand,
    /// Load the voice activity detector only: an edge's, for stream segmentation and
    /// preflight, while the heavy engines run on inference nodes.
    pub vad_only: bool,
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
    pub whisper: Option<Whisper>,
    /// Whisper base when configured: other languages than English, and detection.
    pub whisper_multilingual: Option<Whisper>,
    pub tts: Option<PiperVoice>,
    pub embedder: Option<SpeakerEmbedder>,
    info: NodeInfo,
}

/// Loads engines one by one, keeping what loaded and why the others failed.
struct Loader<'a> {
    runtime: &'a Runtime,
    models: ModelDir,
    available_mb: u64,
    loaded: Vec<String>,
    failures: Vec<EngineFailure>,
}

impl Loader<'_> {
    fn load<T>(
        &mut self,
        id: &str,
        load: impl FnOnce(&Runtime, &ModelDir) -> EngineResult<T>,
    ) -> Option<T> {
        let result = admit(id, memory_mb(id), self.available_mb)
            .and_then(|()| load(self.runtime, &self.models));
        match result {
            Ok(engine) => {
                self.loaded.push(id.to_owned());
                Some(engine)
            }
            Err(error) => {
                self.failures.push(EngineFailure {
                    engine: id.to_owned(),
                    error: error.to_string(),
                });
                None
            }
        }
    }
}

impl Node {
    /// Loads every engine it can. Blocking (library and model loading): call from a
    /// blocking thread.
    pub fn load(config: &NodeConfig) -> Node {
        let models = ModelDir::new(&config.models_dir);
        let runtime = models.onnxruntime_library().and_then(|library| {
            Runtime::init(RuntimeConfig {
                library,
                device: config.device,
                intra_threads: config.intra_threads,
            })
        });
        let (mut vad, mut whisper, mut tts, mut embedder) = (None, None, None, None);
        let mut whisper_multilingual = None;
        let (models_loaded, failures) = match &runtime {
            Err(error) => (
                Vec::new(),
                vec![EngineFailure {
                    engine: "onnxruntime".into(),
                    error: error.to_string(),
                }],
            ),
            Ok(runtime) => {
                let mut loader = Loader {
                    runtime,
                    models,
                    available_mb: device_available_mb(config.device),
                    loaded: Vec::new(),
                    failures: Vec::new(),
                };
                vad = loader.load(silero::ENGINE_ID, |_, models| SileroVad::load(models));
                if config.vad_only {
                    let done = (loader.loaded, loader.failures);
                    return Node::assemble(config, vad, None, None, (None, None), done);
                }
                whisper = loader.load(whisper::ENGINE_ID, Whisper::load);
                if config.multilingual {
                    whisper_multilingual = loader.load(whisper::BASE_ENGINE_ID, Whisper::load_base);
                }
                tts = loader.load(piper::ENGINE_ID, |runtime, models| {
                    PiperVoice::load(runtime, models, &config.phonemizer)
                });
                embedder = loader.load(embedder::ENGINE_ID, SpeakerEmbedder::load);
                (loader.loaded, loader.failures)
            }
        };
        Node::assemble(
            config,
            vad,
            whisper,
            whisper_multilingual,
            (tts, embedder),
            (models_loaded, failures),
        )
    }

    fn assemble(
        config: &NodeConfig,
        vad: Option<SileroVad>,
        whisper: Option<Whisper>,
        whisper_multilingual: Option<Whisper>,
        (tts, embedder): (Option<PiperVoice>, Option<SpeakerEmbedder>),
        (models_loaded, failures): (Vec<String>, Vec<EngineFailure>),
    ) -> Node {
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
            whisper,
            whisper_multilingual,
            tts,
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
    fn gpu_free_memory_is_read_per_device() {
        let text = "0, 15102\n1, 812\n";
        assert_eq!(gpu_free_mb(text, 0), Some(15_102));
        assert_eq!(gpu_free_mb(text, 1), Some(812));
        assert_eq!(gpu_free_mb(text, 2), None);
        assert_eq!(gpu_free_mb("No devices were found\n", 0), None);
        assert_eq!(gpu_free_mb("0, [N/A]\n", 0), None);
    }

    #[test]
    fn memory_estimates_match_the_manifest() {
        // The models folder's parent holds the manifest.
        let models = ModelDir::from_env();
        let manifest = models.file("manifest", "../manifest.toml").unwrap();
        let text = std::fs::read_to_string(manifest).unwrap();
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
            multilingual: true,
            phonemizer: crate::phonemizer::PhonemizerCommand {
                program: "/nonexistent".into(),
                args: Vec::new(),
            },
            vad_only: false,
        });
        assert_eq!(node.info().status, "offline");
        assert!(node.info().models_loaded.is_empty());
        assert_eq!(node.info().failures[0].engine, "onnxruntime");
    }
}
