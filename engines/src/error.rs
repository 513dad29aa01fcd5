//! Typed errors of the engines; the server maps `ModelTooLarge` to `GPU_INCOMPATIBLE`,
//! `OutOfMemory` to `OOM_KILLED`, `NodeUnavailable` to `SERVICE_UNAVAILABLE` naming the
//! node, the rest to `SERVICE_UNAVAILABLE`/`INTERNAL_ERROR`.

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The ONNX Runtime library could not be loaded or initialised.
    #[error("ONNX Runtime unavailable: {0}")]
    Runtime(String),
    /// The configured device cannot be used (e.g. CUDA without a CUDA build or GPU).
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    /// A model file is missing (run `models/fetch`) or unusable.
    #[error("model `{id}` unavailable: {reason}")]
    ModelUnavailable { id: String, reason: String },
    /// No such engine, or (unloading) not loaded on this node.
    #[error("model `{id}`: {reason}")]
    ModelNotFound { id: String, reason: String },
    /// An engine others loaded beside it need (unload those first).
    #[error("model `{id}` is needed by {by}: unload those first")]
    InUse { id: String, by: String },
    /// The model's declared memory need exceeds the device's free memory.
    #[error("model `{id}` needs {needed_mb} MB, the device has {available_mb} MB")]
    ModelTooLarge {
        id: String,
        needed_mb: u64,
        available_mb: u64,
    },
    /// An inference ran out of memory; that request fails, the node stays up.
    #[error("out of memory during inference")]
    OutOfMemory,
    /// Any other inference failure.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The inference queue is full (back-pressure); retry shortly.
    #[error("inference queue full")]
    Busy,
    /// A text the phonemizer could not take: its process ended on it (a fault in
    /// espeak-ng). That request fails; the next one gets a new phonemizer.
    #[error("text rejected: {0}")]
    TextRejected(String),
    /// Input the engine cannot take (wrong rate, empty batch, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The inference node that was to run it is gone or did not answer (its process
    /// died, is restarting, or is unreachable).
    #[error("inference node `{node}` unavailable: {reason}")]
    NodeUnavailable { node: String, reason: String },
    /// No node carrying the model became ready in time (they are all restarting or
    /// unreachable): nothing ran, so the work may simply wait and go again.
    #[error("no inference node carrying the model is ready ({nodes})")]
    NoNodeReady { nodes: String },
}

pub type EngineResult<T> = Result<T, EngineError>;

impl From<ort::Error> for EngineError {
    fn from(error: ort::Error) -> Self {
        let text = error.to_string();
        if text.contains("bad_alloc") || text.to_ascii_lowercase().contains("out of memory") {
            EngineError::OutOfMemory
        } else {
            EngineError::Inference(text)
        }
    }
}
