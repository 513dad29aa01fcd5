//! ONNX Runtime: the fetched shared library loaded once per process, the execution
//! device from configuration, sessions built with the configured thread counts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::{CUDA, ExecutionProvider};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::error::{EngineError, EngineResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda { device_id: i32 },
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `libonnxruntime.so` (from `models/fetch`).
    pub library: PathBuf,
    pub device: Device,
    /// Threads one inference may use (0 = ONNX Runtime's default).
    pub intra_threads: usize,
}

/// The process's ONNX Runtime. Cheap to share by reference; create it once.
pub struct Runtime {
    environment: &'static ort::environment::Environment,
    config: RuntimeConfig,
}

/// ONNX Runtime's library is loaded once per process; later `init` calls reuse it.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

impl Runtime {
    /// Loads the library (once per process). With `Device::Cuda` the library must have
    /// been built with CUDA's execution provider (an onnxruntime-gpu build); sessions
    /// then run on that GPU, and one that cannot start there (no driver, no device) is
    /// an error rather than a silent fall back to the CPU.
    pub fn init(config: RuntimeConfig) -> EngineResult<Runtime> {
        let environment = ENVIRONMENT
            .get_or_init(|| {
                ort::init_from(&config.library)
                    .map_err(|e| format!("loading {}: {e}", config.library.display()))?
                    .with_name("scaigrid")
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| EngineError::Runtime(e.clone()))?;
        if let Device::Cuda { .. } = config.device {
            let built_with_cuda =
                CUDA::is_available().map_err(|e| EngineError::Runtime(e.to_string()))?;
            if !built_with_cuda {
                return Err(EngineError::DeviceUnavailable(format!(
                    "{} has no CUDA execution provider (models/fetch installs the CPU build); \
                     put an onnxruntime-gpu build's library there, or use device `cpu`",
                    config.library.display()
                )));
            }
        }
        Ok(Runtime {
            environment,
            config,
        })
    }

    /// A session for one model file.
    pub fn session(&self, id: &str, model: &Path) -> EngineResult<Session> {
        self.build(id, model, self.config.intra_threads, true)
    }

    /// Intra-op threads for a latency-bound engine that runs one request at a time
    /// (text to speech: the first sentence decides time to first audio): the configured
    /// count, but at least two where the machine has them. Measured on 2 cores
    /// (`benches/speak_load.sh`): first audio p50 131 ms with one thread, 105-110 ms
    /// with two.
    pub fn latency_threads(&self) -> usize {
        if self.config.intra_threads == 0 {
            return 0; // ONNX Runtime's own default already uses every core
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        self.config.intra_threads.max(cores.min(2))
    }

    /// A session with its own intra-op thread count, whose threads do not spin after a
    /// run: such sessions take turns with others on the same cores (Piper's encoder,
    /// then its decoder), and a pool spinning after its run takes the cores from the
    /// next session's threads. Measured on 2 cores with piper-tts's onnxruntime: a
    /// sentence through encoder then decoder 130 ms spinning, 85 ms not (84 ms as one
    /// graph).
    pub fn session_threads(&self, id: &str, model: &Path, threads: usize) -> EngineResult<Session> {
        self.build(id, model, threads, false)
    }

    fn build(&self, id: &str, model: &Path, threads: usize, spin: bool) -> EngineResult<Session> {
        let unavailable = |e: ort::Error| EngineError::ModelUnavailable {
            id: id.to_owned(),
            reason: e.to_string(),
        };
        let mut builder = Session::builder(self.environment)
            .map_err(unavailable)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| unavailable(e.into()))?;
        if threads > 0 {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| unavailable(e.into()))?;
        }
        if !spin {
            builder = builder
                .with_intra_op_spinning(false)
                .map_err(|e| unavailable(e.into()))?;
        }
        if let Device::Cuda { device_id } = self.config.device {
            let cuda = CUDA::default()
                .with_device_id(device_id)
                .build()
                .error_on_failure();
            builder = builder.with_execution_providers([cuda]).map_err(|e| {
                EngineError::DeviceUnavailable(format!("CUDA device {device_id} for `{id}`: {e}"))
            })?;
        }
        builder.commit_from_file(model).map_err(unavailable)
    }
}
