//! Local inference engines: ONNX Runtime sessions for VAD, speech-to-text,
//! text-to-speech and speaker embeddings; diarization clustering; batching; the node
//! registry.
//!
//! Invariant: this crate knows nothing of HTTP, JSON APIs or the database. The
//! inference-engines issue fills it; the workspace carries it from the start.
