//! Local inference engines ("backend A"): ONNX Runtime sessions for voice activity,
//! speech-to-text, text-to-speech and speaker embeddings, with batching and a node
//! registry as they land.
//!
//! Invariant: this crate knows nothing of HTTP, JSON APIs or the database. Sessions are
//! created once and shared; inference runs on the caller's (blocking) thread, never on
//! an async runtime worker.
//!
//! - [`runtime`]: loading the fetched ONNX Runtime library, devices, sessions.
//! - [`models`]: where `models/fetch` installed each model.
//! - [`silero`]: Silero VAD with per-stream state, batched across streams, run in Rust
//!   on the ONNX file's weights.
//! - [`onnx`]: the constant tensors of an ONNX file (for networks run in Rust).
//! - [`kernels`]: packed dense layers and vector activations, AVX2/FMA where the CPU
//!   has it.
//! - [`fbank`], [`embedder`]: the d-vector front end and speaker embeddings.
//! - [`batcher`]: inference threads behind a bounded queue, batching concurrent work.
//! - [`diarize`]: windows, embeddings, agglomerative clustering, enrolled labels, and
//!   online labels for live streams.
//! - [`node`]: the engines this process loaded, admission by memory, node info.
//! - [`normalize`]: numbers, currency, abbreviations and symbols spelled out.
//! - [`phonemize`]: text to IPA through the espeak-ng library, with long tokens bounded.
//! - [`phonemizer`]: that library in a child process, so its faults fail one text.
//! - [`piper`]: Piper VITS text-to-speech over espeak-ng phonemes.
//! - [`conditioning`]: moving synthesized speech toward a reference speaker (pitch,
//!   vocal-tract length, spectral envelope): the `(text, reference) -> audio` seam.
//! - [`whisper`]: Whisper speech-to-text: log-mel, batched encoder, KV-cache decoder,
//!   greedy/beam search, timestamps, long audio through VAD windows.
//! - [`wer`]: word error rate (tests and benches).
//! - [`segments`]: per-frame speech probabilities to speech segments (pure logic).
//! - [`endpoint`]: live utterance endpointing for streams: partials, final candidates,
//!   finals (pure logic).
//! - [`error`]: the engines' typed errors.

pub mod batcher;
pub mod conditioning;
pub mod diarize;
pub mod embedder;
pub mod endpoint;
pub mod error;
pub mod fbank;
pub mod kernels;
pub mod models;
pub mod node;
pub mod normalize;
pub mod onnx;
pub mod phonemize;
pub mod phonemizer;
pub mod piper;
pub mod runtime;
pub mod segments;
pub mod silero;
pub mod text_embed;
pub mod wer;
pub mod whisper;
pub mod wordpiece;

pub use error::{EngineError, EngineResult};
pub use runtime::{Device, Runtime, RuntimeConfig};
