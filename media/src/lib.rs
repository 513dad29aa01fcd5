//! Audio media pipeline: decode, stream decode, resample, analyse (preflight), encode.
//!
//! Invariant: this crate does no network I/O and knows nothing of HTTP, JSON APIs or the
//! database; it takes bytes and returns samples (and the reverse).
//!
//! - [`sniff`]: container detection from the bytes.
//! - [`decode`]: whole-file decode with limits ([`decode::decode`]), or straight to mono
//!   at one rate ([`decode::decode_mono`]) so memory is the output's, not the source's.
//! - [`stream`]: incremental decode of WebSocket streams (PCM, WAV, Ogg/Opus,
//!   WebM/Opus, MP3) from pieces split anywhere, with bounded memory.
//! - [`ogg`]: Ogg page CRC, writer and incremental reader.
//! - [`opus_decode`]: Opus packets through libopus.
//! - [`resample`]: streaming rubato resampler to any rate, mono.
//! - [`audio`]: the decoded-audio type and channel mixing.
//! - [`encode`]: WAV, raw PCM, Opus packets and Ogg/Opus files.
//! - [`writer`]: incremental file writers (WAV, PCM, Ogg/Opus, MP3, FLAC) for audio
//!   sent while it is made.
//! - [`vad`]: the voice-activity trait and the energy detector.
//! - [`preflight`]: reference-clip checks with the contract's fail reasons.
//! - [`error`]: typed errors (unsupported, corrupt, truncated, too large).

pub mod audio;
pub mod decode;
pub mod encode;
pub mod error;
pub mod ogg;
pub mod opus_decode;
pub mod preflight;
pub mod resample;
pub mod sniff;
pub mod stream;
pub mod vad;
pub mod writer;

pub use audio::Audio;
pub use decode::{DecodeOptions, Decoded, Limits, RawPcm, decode, decode_mono};
pub use error::{LimitKind, MediaError, MediaResult};
