//! The local inference node: which engines this process loaded, on which device, with
//! how much memory, and why any failed. Loading never fails as a whole: each engine is
//! admitted (memory check) and loaded on its own, and failures are kept for readiness and
//! `GET /v1/infra/nodes`.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::embedder::{self, SpeakerEmbedder};
use crate::error::{EngineError, EngineResult};
use crate::models::ModelDir;
use crate::piper::{self, PiperVoice};
use crate::runtime::{Device, Runtime, RuntimeConfig};
use crate::silero::{self, SileroVad};
use crate::text_embed::{self, TextEmbedder};
use crate::whisper::{self, Whisper};

/// Declared memory need of each engine in MB (the `memory_mb` of `models/manifest.toml`;
/// a test keeps them equal).
pub const MEMORY_MB: &[(&str, u64)] = &[
    (silero::ENGINE_ID, 16),
    (whisper::ENGINE_ID, 300),
    (whisper::BASE_ENGINE_ID, 700),
    (piper::ENGINE_ID, 250),
    (embedder::ENGINE_ID, 64),
    (text_embed::ENGINE_ID, 120),
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

/// The engines a node loads when its configuration names none: voice activity,
/// English speech to text, text to speech, speaker embeddings, and with
/// `multilingual` Whisper base; and sentence embeddings (the gateway's local
/// `/v1/embeddings` model).
pub fn default_models(multilingual: bool) -> Vec<String> {
    let mut models = vec![silero::ENGINE_ID, whisper::ENGINE_ID];
    if multilingual {
        models.push(whisper::BASE_ENGINE_ID);
    }
    models.extend([piper::ENGINE_ID, embedder::ENGINE_ID, text_embed::ENGINE_ID]);
    models.into_iter().map(str::to_owned).collect()
}

/// What an engine cannot run without: speech to text cuts its windows, and the
/// speaker engines find speech, with the voice activity detector.
fn needs(id: &str) -> &'static [&'static str] {
    match id {
        whisper::ENGINE_ID | whisper::BASE_ENGINE_ID | embedder::ENGINE_ID => &[silero::ENGINE_ID],
        _ => &[],
    }
}

/// `ids` with what they need, each once, in [`MEMORY_MB`]'s order (what is needed
/// first); an unknown id is an error naming the ones there are.
pub fn with_needs(ids: &[String]) -> EngineResult<Vec<&'static str>> {
    for id in ids {
        known(id)?;
    }
    let wanted = |candidate: &str| {
        ids.iter()
            .any(|id| id == candidate || needs(id).contains(&candidate))
    };
    Ok(MEMORY_MB
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| wanted(id))
        .collect())
}

fn known(id: &str) -> EngineResult<&'static str> {
    MEMORY_MB
        .iter()
        .map(|(known, _)| *known)
        .find(|known| *known == id)
        .ok_or_else(|| EngineError::ModelNotFound {
            id: id.to_owned(),
            reason: format!(
                "no such engine; there are {}",
                MEMORY_MB
                    .iter()
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub models_dir: PathBuf,
    pub device: Device,
    pub intra_threads: usize,
    /// The engines loaded at start (engine ids, see [`MEMORY_MB`]); what they need
    /// comes with them ([`with_needs`]). An edge loads the voice activity detector only,
    /// for stream segmentation and preflight.
    pub models: Vec<String>,
    /// Memory this node may fill with models, in MB (0: what the device has free).
    /// Lets several nodes share one device, and an operator keep room for other work.
    pub memory_limit_mb: u64,
    /// How to start the text-to-speech phonemizer's child process.
    pub phonemizer: crate::phonemizer::PhonemizerCommand,
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
    /// The declared need of the loaded models.
    pub memory_mb: u64,
    /// See [`NodeConfig::memory_limit_mb`].
    pub memory_limit_mb: u64,
    pub failures: Vec<EngineFailure>,
}

/// A node's engines. Each is shared (`Arc`), so a node with one model more or less
/// ([`Node::with_model`], [`Node::without_model`]) is a new `Node` holding the same
/// engines as the old one, and requests still running on the old one finish there.
#[derive(Clone)]
pub struct Node {
    pub vad: Option<Arc<SileroVad>>,
    pub whisper: Option<Arc<Whisper>>,
    /// Whisper base when configured: other languages than English, and detection.
    pub whisper_multilingual: Option<Arc<Whisper>>,
    pub tts: Option<Arc<PiperVoice>>,
    pub embedder: Option<Arc<SpeakerEmbedder>>,
    /// Sentence embeddings of texts.
    pub text_embedder: Option<Arc<TextEmbedder>>,
    /// `None` when ONNX Runtime could not be loaded (then nothing can be).
    runtime: Option<Arc<Runtime>>,
    config: NodeConfig,
    info: NodeInfo,
}

/// One loaded engine, before it takes its place in a [`Node`].
enum Engine {
    Vad(Arc<SileroVad>),
    Whisper(Arc<Whisper>),
    Multilingual(Arc<Whisper>),
    Tts(Arc<PiperVoice>),
    Embedder(Arc<SpeakerEmbedder>),
    TextEmbedder(Arc<TextEmbedder>),
}

impl Node {
    /// Loads every engine of `config.models` it can, keeping why the others failed.
    /// Blocking (library and model loading): call from a blocking thread.
    pub fn load(config: &NodeConfig) -> Node {
        let models = ModelDir::new(&config.models_dir);
        let runtime = models.onnxruntime_library().and_then(|library| {
            Runtime::init(RuntimeConfig {
                library,
                device: config.device,
                intra_threads: config.intra_threads,
            })
        });
        let mut node = Node {
            vad: None,
            whisper: None,
            whisper_multilingual: None,
            tts: None,
            embedder: None,
            text_embedder: None,
            runtime: None,
            config: config.clone(),
            info: NodeInfo {
                node_id: config.node_id.clone(),
                status: "offline",
                device: match config.device {
                    Device::Cpu => "cpu".to_owned(),
                    Device::Cuda { device_id } => format!("cuda:{device_id}"),
                },
                models_loaded: Vec::new(),
                memory_mb: 0,
                memory_limit_mb: config.memory_limit_mb,
                failures: Vec::new(),
            },
        };
        let wanted = match with_needs(&config.models) {
            Ok(wanted) => wanted,
            Err(error) => {
                node.fail("models", &error);
                return node.settled();
            }
        };
        match runtime {
            Err(error) => node.fail("onnxruntime", &error),
            Ok(runtime) => {
                node.runtime = Some(Arc::new(runtime));
                // Read once: what the device has free before this node loads anything,
                // less what each admitted model takes.
                let mut device_free = device_available_mb(config.device);
                for id in wanted {
                    let available = node.room(device_free);
                    match node.admit_and_load(id, available) {
                        Ok(engine) => {
                            device_free = device_free.saturating_sub(memory_mb(id));
                            node.put(id, Some(engine));
                        }
                        Err(error) => node.fail(id, &error),
                    }
                }
            }
        }
        node.settled()
    }

    /// This node with `id` loaded too (and what it needs), admitted against the
    /// memory free now; the same node when it is loaded already. Blocking.
    pub fn with_model(&self, id: &str) -> EngineResult<Node> {
        let id = known(id)?;
        let Some(runtime) = &self.runtime else {
            return Err(EngineError::Runtime(
                "ONNX Runtime is not loaded on this node".into(),
            ));
        };
        let missing: Vec<&str> = with_needs(&[id.to_owned()])?
            .into_iter()
            .filter(|id| !self.info.models_loaded.iter().any(|m| m == id))
            .collect();
        let needed: u64 = missing.iter().map(|id| memory_mb(id)).sum();
        admit(id, needed, self.available_mb())?;
        let mut node = self.clone();
        for id in missing {
            let engine = load_engine(id, runtime, &self.config)?;
            node.put(id, Some(engine));
        }
        Ok(node.settled())
    }

    /// This node without `id`. An engine that others loaded here need (the voice
    /// activity detector under speech to text) stays until they go.
    pub fn without_model(&self, id: &str) -> EngineResult<Node> {
        let id = known(id)?;
        if !self.info.models_loaded.iter().any(|m| m == id) {
            return Err(EngineError::ModelNotFound {
                id: id.to_owned(),
                reason: "not loaded on this node".into(),
            });
        }
        let dependents: Vec<&str> = self
            .info
            .models_loaded
            .iter()
            .filter(|m| needs(m).contains(&id))
            .map(String::as_str)
            .collect();
        if !dependents.is_empty() {
            return Err(EngineError::InUse {
                id: id.to_owned(),
                by: dependents.join(", "),
            });
        }
        let mut node = self.clone();
        node.put(id, None);
        Ok(node.settled())
    }

    /// What a model may take here now: the device's free memory, within what is left
    /// of this node's limit.
    pub fn available_mb(&self) -> u64 {
        self.room(device_available_mb(self.config.device))
    }

    fn room(&self, device_free: u64) -> u64 {
        match self.config.memory_limit_mb {
            0 => device_free,
            limit => device_free.min(limit.saturating_sub(self.info.memory_mb)),
        }
    }

    fn admit_and_load(&self, id: &str, available_mb: u64) -> EngineResult<Engine> {
        admit(id, memory_mb(id), available_mb)?;
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| EngineError::Runtime("not loaded".into()))?;
        load_engine(id, runtime, &self.config)
    }

    /// Puts an engine in its slot (or empties it) and keeps the info in step.
    fn put(&mut self, id: &str, engine: Option<Engine>) {
        let loaded = engine.is_some();
        match engine {
            Some(Engine::Vad(e)) => self.vad = Some(e),
            Some(Engine::Whisper(e)) => self.whisper = Some(e),
            Some(Engine::Multilingual(e)) => self.whisper_multilingual = Some(e),
            Some(Engine::Tts(e)) => self.tts = Some(e),
            Some(Engine::Embedder(e)) => self.embedder = Some(e),
            Some(Engine::TextEmbedder(e)) => self.text_embedder = Some(e),
            None => match id {
                silero::ENGINE_ID => self.vad = None,
                whisper::ENGINE_ID => self.whisper = None,
                whisper::BASE_ENGINE_ID => self.whisper_multilingual = None,
                piper::ENGINE_ID => self.tts = None,
                embedder::ENGINE_ID => self.embedder = None,
                text_embed::ENGINE_ID => self.text_embedder = None,
                _ => {}
            },
        }
        let info = &mut self.info;
        info.models_loaded.retain(|m| m != id);
        info.failures.retain(|f| f.engine != id);
        if loaded {
            info.models_loaded.push(id.to_owned());
            // In the order of MEMORY_MB, whatever the order of loading.
            info.models_loaded
                .sort_by_key(|m| MEMORY_MB.iter().position(|(e, _)| e == m));
        }
        info.memory_mb = info.models_loaded.iter().map(|id| memory_mb(id)).sum();
    }

    fn fail(&mut self, engine: &str, error: &EngineError) {
        self.info.failures.push(EngineFailure {
            engine: engine.to_owned(),
            error: error.to_string(),
        });
    }

    /// With its status derived from what loaded and what failed.
    fn settled(mut self) -> Node {
        self.info.status = match (
            self.info.models_loaded.is_empty(),
            self.info.failures.is_empty(),
        ) {
            (true, _) => "offline",
            (false, true) => "online",
            (false, false) => "degraded",
        };
        self
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }
}

fn load_engine(id: &str, runtime: &Runtime, config: &NodeConfig) -> EngineResult<Engine> {
    let models = ModelDir::new(&config.models_dir);
    Ok(match id {
        silero::ENGINE_ID => Engine::Vad(Arc::new(SileroVad::load(&models)?)),
        whisper::ENGINE_ID => Engine::Whisper(Arc::new(Whisper::load(runtime, &models)?)),
        whisper::BASE_ENGINE_ID => {
            Engine::Multilingual(Arc::new(Whisper::load_base(runtime, &models)?))
        }
        piper::ENGINE_ID => Engine::Tts(Arc::new(PiperVoice::load(
            runtime,
            &models,
            &config.phonemizer,
        )?)),
        embedder::ENGINE_ID => Engine::Embedder(Arc::new(SpeakerEmbedder::load(runtime, &models)?)),
        text_embed::ENGINE_ID => {
            Engine::TextEmbedder(Arc::new(TextEmbedder::load(runtime, &models)?))
        }
        other => known(other).and(Err(EngineError::ModelNotFound {
            id: other.to_owned(),
            reason: "no loader".into(),
        }))?,
    })
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
            models: default_models(true),
            memory_limit_mb: 0,
            phonemizer: crate::phonemizer::PhonemizerCommand {
                program: "/nonexistent".into(),
                args: Vec::new(),
            },
        });
        assert_eq!(node.info().status, "offline");
        assert!(node.info().models_loaded.is_empty());
        assert_eq!(node.info().failures[0].engine, "onnxruntime");
    }

    fn light_node(memory_limit_mb: u64) -> Node {
        Node::load(&NodeConfig {
            node_id: "n".into(),
            models_dir: ModelDir::from_env().root().to_path_buf(),
            device: Device::Cpu,
            intra_threads: 1,
            models: vec![silero::ENGINE_ID.into()],
            memory_limit_mb,
            phonemizer: crate::phonemizer::PhonemizerCommand {
                program: "/nonexistent".into(),
                args: Vec::new(),
            },
        })
    }

    #[test]
    fn models_load_and_unload_beside_the_others_and_the_limit_holds() {
        let node = light_node(0);
        assert_eq!(node.info().models_loaded, [silero::ENGINE_ID]);
        assert_eq!(node.info().status, "online");
        let with = node.with_model(embedder::ENGINE_ID).unwrap();
        assert_eq!(
            with.info().models_loaded,
            [silero::ENGINE_ID, embedder::ENGINE_ID]
        );
        assert_eq!(with.info().memory_mb, 16 + 64);
        // The same detector, not a second copy.
        assert!(Arc::ptr_eq(
            node.vad.as_ref().unwrap(),
            with.vad.as_ref().unwrap()
        ));
        assert!(with.embedder.is_some() && node.embedder.is_none());
        // Loaded already: the same engines.
        let again = with.with_model(embedder::ENGINE_ID).unwrap();
        assert!(Arc::ptr_eq(
            with.embedder.as_ref().unwrap(),
            again.embedder.as_ref().unwrap()
        ));
        match with.without_model(silero::ENGINE_ID) {
            Err(EngineError::InUse { id, by }) => {
                assert_eq!(id, silero::ENGINE_ID);
                assert_eq!(by, embedder::ENGINE_ID);
            }
            other => panic!("{:?}", other.map(|n| n.info().clone())),
        }
        let without = with.without_model(embedder::ENGINE_ID).unwrap();
        assert_eq!(without.info().models_loaded, [silero::ENGINE_ID]);
        assert!(without.embedder.is_none());
        assert!(matches!(
            without.without_model(embedder::ENGINE_ID),
            Err(EngineError::ModelNotFound { .. })
        ));
        assert!(matches!(
            without.with_model("audio.stt.nope"),
            Err(EngineError::ModelNotFound { .. })
        ));
        let bare = without.without_model(silero::ENGINE_ID).unwrap();
        assert_eq!(bare.info().status, "offline");
    }

    #[test]
    fn a_model_over_the_nodes_memory_limit_is_refused_with_the_figures() {
        let node = light_node(50);
        assert_eq!(node.info().memory_limit_mb, 50);
        assert_eq!(node.available_mb(), 34.min(host_available_mb()));
        match node.with_model(embedder::ENGINE_ID) {
            Err(EngineError::ModelTooLarge {
                id,
                needed_mb: 64,
                available_mb: 34,
            }) => assert_eq!(id, embedder::ENGINE_ID),
            other => panic!("{:?}", other.map(|n| n.info().clone())),
        }
        // Whisper needs the detector, which is loaded: only its own need counts.
        let limited = light_node(16 + 300);
        let stt = limited.with_model(whisper::ENGINE_ID);
        assert!(stt.is_ok(), "{:?}", stt.err());
        // At start a model over the limit is a failure in the info, not a panic.
        let starved = Node::load(&NodeConfig {
            models: vec![embedder::ENGINE_ID.into()],
            ..light_node(20).config
        });
        assert_eq!(starved.info().models_loaded, [silero::ENGINE_ID]);
        assert_eq!(starved.info().status, "degraded");
        assert_eq!(starved.info().failures[0].engine, embedder::ENGINE_ID);
    }

    #[test]
    fn what_an_engine_needs_comes_with_it_in_order() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            with_needs(&ids(&[embedder::ENGINE_ID, whisper::BASE_ENGINE_ID])).unwrap(),
            [
                silero::ENGINE_ID,
                whisper::BASE_ENGINE_ID,
                embedder::ENGINE_ID
            ]
        );
        assert_eq!(
            with_needs(&ids(&[piper::ENGINE_ID])).unwrap(),
            [piper::ENGINE_ID]
        );
        assert!(with_needs(&ids(&["audio.tts.nope"])).is_err());
        assert_eq!(
            with_needs(&default_models(false)).unwrap().len(),
            MEMORY_MB.len() - 1
        );
    }
}
