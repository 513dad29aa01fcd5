//! Typed errors of the media pipeline. The server maps `Unsupported` to
//! `AUDIO_FORMAT_UNSUPPORTED`, `Corrupt`/`Truncated` to `AUDIO_DECODE_FAILED` and
//! `TooLarge` to `CTX_TOO_LARGE` (with the limit).

/// Which limit a too-large input hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Bytes,
    Seconds,
    /// Decoded samples counted over every channel: what decoding costs, so a few MB
    /// of silent 32-channel FLAC stop long before their duration limit.
    Samples,
}

impl LimitKind {
    /// The unit the limit is counted in, as the API names it (`limit_unit`).
    pub fn unit(self) -> &'static str {
        match self {
            LimitKind::Bytes => "bytes",
            LimitKind::Seconds => "seconds",
            LimitKind::Samples => "samples",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MediaError {
    /// A container or codec this build does not decode (or no audio at all).
    #[error("unsupported audio format: {0}")]
    Unsupported(String),
    /// Claims a supported format but the data is damaged.
    #[error("corrupt audio: {0}")]
    Corrupt(String),
    /// Ends before the container says it should, with nothing decodable.
    #[error("truncated audio: {0}")]
    Truncated(String),
    /// Over a configured limit; decoding stopped as soon as it was exceeded.
    #[error("audio exceeds the limit of {limit} {}", .kind.unit())]
    TooLarge { kind: LimitKind, limit: u64 },
    /// An analysis engine (e.g. a model-backed VAD) failed.
    #[error("audio analysis failed: {0}")]
    Analysis(String),
    /// Invalid parameters from the caller (e.g. raw PCM without a rate).
    #[error("invalid audio parameters: {0}")]
    InvalidParameters(String),
}

pub type MediaResult<T> = Result<T, MediaError>;
