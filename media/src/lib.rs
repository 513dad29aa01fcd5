//! Audio media pipeline: decode, stream decode, resample, analyse (preflight), encode.
//!
//! Invariant: this crate does no network I/O and knows nothing of HTTP, JSON APIs or the
//! database; it takes bytes and returns samples (and the reverse). The media-pipeline
//! issue fills it; the workspace carries it from the start so the layout is fixed.
