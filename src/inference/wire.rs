//! What crosses a node's wire, as pure conversions: audio as little-endian f32 PCM,
//! engine types as messages, engine errors as statuses and back.

use bytes::Bytes;
use engines::EngineError;
use engines::diarize::Turn;
use engines::whisper::align::WordTiming;
use engines::whisper::{Options, Segment, Transcript};
use tonic::{Code, Status};

use super::proto;

/// The metadata key naming an engine error's kind; a status without it is the node
/// (or the connection to it) failing.
const KIND: &str = "x-engine-error";
/// Beams a request may ask for at most (each one is another decoder pass).
const MAX_BEAMS: u32 = 16;
/// Longest language code.
const MAX_LANGUAGE: usize = 16;

/// Samples as little-endian f32 bytes: one copy, no per-sample framing.
pub fn pcm(samples: &[f32]) -> Bytes {
    let mut bytes = Vec::with_capacity(samples.len() * 4);
    for sample in samples {
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    Bytes::from(bytes)
}

/// Samples of little-endian f32 bytes; a length that is not whole samples, or a sample
/// that is not a finite number, is invalid input.
pub fn samples(pcm: &[u8]) -> Result<Vec<f32>, EngineError> {
    if !pcm.len().is_multiple_of(4) {
        return Err(EngineError::InvalidInput(format!(
            "PCM of {} bytes is not whole f32 samples",
            pcm.len()
        )));
    }
    let samples: Vec<f32> = pcm
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if samples.iter().any(|s| !s.is_finite()) {
        return Err(EngineError::InvalidInput(
            "PCM holds a sample that is not a finite number".into(),
        ));
    }
    Ok(samples)
}

pub fn transcribe_request(samples: &[f32], options: &Options) -> proto::TranscribeRequest {
    proto::TranscribeRequest {
        pcm: pcm(samples),
        language: options.language.clone().unwrap_or_default(),
        beam_size: u32::try_from(options.beam_size).unwrap_or(u32::MAX),
        timestamps: options.timestamps,
        compact: options.compact,
        single_window: options.single_window,
        word_timestamps: options.word_timestamps,
    }
}

/// The options of a request, checked (a node is reachable over the network).
pub fn options(request: &proto::TranscribeRequest) -> Result<Options, EngineError> {
    if request.beam_size > MAX_BEAMS {
        return Err(EngineError::InvalidInput(format!(
            "beam_size {} is over {MAX_BEAMS}",
            request.beam_size
        )));
    }
    let language = match request.language.as_str() {
        "" => None,
        code if code.len() <= MAX_LANGUAGE
            && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            Some(code.to_owned())
        }
        _ => {
            return Err(EngineError::InvalidInput(
                "language is not a language code".into(),
            ));
        }
    };
    Ok(Options {
        beam_size: request.beam_size.max(1) as usize,
        timestamps: request.timestamps,
        language,
        compact: request.compact,
        single_window: request.single_window,
        word_timestamps: request.word_timestamps,
    })
}

pub fn transcript_reply(transcript: Transcript) -> proto::TranscribeReply {
    proto::TranscribeReply {
        text: transcript.text,
        duration: transcript.duration,
        language: transcript.language.unwrap_or_default(),
        segments: transcript
            .segments
            .into_iter()
            .map(|s| proto::Segment {
                start: s.start,
                end: s.end,
                text: s.text,
                tokens: s.tokens,
                seek: s.seek as u64,
                avg_logprob: s.avg_logprob,
                no_speech_prob: s.no_speech_prob,
                words: s
                    .words
                    .into_iter()
                    .map(|w| proto::Word {
                        word: w.word,
                        start: w.start,
                        end: w.end,
                        probability: w.probability,
                        tokens: w.tokens,
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn transcript(reply: proto::TranscribeReply) -> Transcript {
    Transcript {
        text: reply.text,
        duration: reply.duration,
        language: (!reply.language.is_empty()).then_some(reply.language),
        segments: reply
            .segments
            .into_iter()
            .map(|s| Segment {
                start: s.start,
                end: s.end,
                text: s.text,
                tokens: s.tokens,
                seek: usize::try_from(s.seek).unwrap_or(usize::MAX),
                avg_logprob: s.avg_logprob,
                no_speech_prob: s.no_speech_prob,
                words: s
                    .words
                    .into_iter()
                    .map(|w| WordTiming {
                        word: w.word,
                        tokens: w.tokens,
                        start: w.start,
                        end: w.end,
                        probability: w.probability,
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn turns_reply(turns: Vec<Turn>) -> proto::DiarizeReply {
    proto::DiarizeReply {
        turns: turns
            .into_iter()
            .map(|t| proto::Turn {
                start: t.start,
                end: t.end,
                label: t.label,
            })
            .collect(),
    }
}

pub fn turns(reply: proto::DiarizeReply) -> Vec<Turn> {
    reply
        .turns
        .into_iter()
        .map(|t| Turn {
            start: t.start,
            end: t.end,
            label: t.label,
        })
        .collect()
}

/// An engine error as the status a node answers with.
pub fn status(error: &EngineError) -> Status {
    let (code, kind, message) = match error {
        EngineError::Busy => (Code::ResourceExhausted, "busy", String::new()),
        EngineError::OutOfMemory => (Code::ResourceExhausted, "oom", String::new()),
        EngineError::InvalidInput(m) => (Code::InvalidArgument, "invalid", m.clone()),
        EngineError::TextRejected(m) => (Code::InvalidArgument, "text_rejected", m.clone()),
        EngineError::ModelUnavailable { id, reason } => (
            Code::FailedPrecondition,
            "model_unavailable",
            format!("{id}: {reason}"),
        ),
        // The figures travel as `id:needed:available`, for the edge's 409.
        EngineError::ModelTooLarge {
            id,
            needed_mb,
            available_mb,
        } => (
            Code::ResourceExhausted,
            "too_large",
            format!("{id}:{needed_mb}:{available_mb}"),
        ),
        EngineError::ModelNotFound { id, reason } => {
            (Code::NotFound, "not_found", format!("{id}: {reason}"))
        }
        EngineError::InUse { id, by } => {
            (Code::FailedPrecondition, "in_use", format!("{id}: {by}"))
        }
        EngineError::Runtime(m) => (Code::Internal, "runtime", m.clone()),
        EngineError::DeviceUnavailable(m) => (Code::Internal, "device", m.clone()),
        EngineError::Inference(m) => (Code::Internal, "inference", m.clone()),
        EngineError::NodeUnavailable { reason, .. } => {
            (Code::Unavailable, "inference", reason.clone())
        }
        EngineError::NoNodeReady { .. } => (Code::Unavailable, "inference", error.to_string()),
    };
    let mut status = Status::new(code, message);
    if let Ok(value) = kind.parse() {
        status.metadata_mut().insert(KIND, value);
    }
    status
}

/// What a failed call means to the edge: the engine's own error when the node said
/// so, otherwise the node failing (`NodeUnavailable`, naming it).
pub fn engine_error(status: &Status, node: &str) -> EngineError {
    let kind = status.metadata().get(KIND).and_then(|v| v.to_str().ok());
    let message = status.message().to_owned();
    match kind {
        Some("busy") => EngineError::Busy,
        Some("oom") => EngineError::OutOfMemory,
        Some("invalid") => EngineError::InvalidInput(message),
        Some("text_rejected") => EngineError::TextRejected(message),
        Some("model_unavailable") => {
            let (id, reason) = message.split_once(": ").unwrap_or(("", &message));
            EngineError::ModelUnavailable {
                id: id.to_owned(),
                reason: reason.to_owned(),
            }
        }
        Some("too_large") => {
            let mut parts = message.rsplitn(3, ':');
            let (available, needed) = (parts.next(), parts.next());
            let figure = |part: Option<&str>| part.and_then(|p| p.parse().ok()).unwrap_or(0);
            EngineError::ModelTooLarge {
                id: parts.next().unwrap_or_default().to_owned(),
                needed_mb: figure(needed),
                available_mb: figure(available),
            }
        }
        Some(kind @ ("not_found" | "in_use")) => {
            let (id, rest) = message.split_once(": ").unwrap_or(("", &message));
            let (id, rest) = (id.to_owned(), rest.to_owned());
            match kind {
                "not_found" => EngineError::ModelNotFound { id, reason: rest },
                _ => EngineError::InUse { id, by: rest },
            }
        }
        Some("runtime") => EngineError::Runtime(message),
        Some("device") => EngineError::DeviceUnavailable(message),
        Some(_) => EngineError::Inference(message),
        None => EngineError::NodeUnavailable {
            node: node.to_owned(),
            reason: match status.code() {
                Code::DeadlineExceeded => "the node did not answer in time".to_owned(),
                Code::Cancelled => "the connection to the node closed mid-call".to_owned(),
                _ => format!("{:?}: {message}", status.code()),
            },
        },
    }
}

/// Whether a failed call may be sent again (to another node, or to this one once it
/// is back): the node went away or never answered, so no work was done twice that
/// matters, as opposed to an engine refusing the input or a deadline passing.
/// `Cancelled` without an engine kind is the transport's word for a connection that
/// closed under a call (the node died as it was sent): the edge's own cancellations
/// drop the call's future and never see a status.
pub fn node_lost(status: &Status) -> bool {
    status.metadata().get(KIND).is_none()
        && matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Aborted | Code::Cancelled
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_round_trips_and_refuses_ragged_or_non_finite_audio() {
        let audio = [0.0, -1.0, 0.5, f32::MIN_POSITIVE];
        assert_eq!(samples(&pcm(&audio)).unwrap(), audio);
        assert!(matches!(
            samples(&[0, 0, 0]),
            Err(EngineError::InvalidInput(_))
        ));
        let nan = pcm(&[f32::NAN]);
        assert!(matches!(samples(&nan), Err(EngineError::InvalidInput(_))));
        assert!(samples(&[]).unwrap().is_empty());
    }

    #[test]
    fn options_are_checked_on_the_node() {
        let mut request = transcribe_request(&[], &Options::default());
        assert_eq!(options(&request).unwrap().beam_size, 1);
        request.beam_size = 0;
        assert_eq!(options(&request).unwrap().beam_size, 1);
        request.beam_size = 17;
        assert!(options(&request).is_err());
        request.beam_size = 5;
        request.language = "en; DROP".into();
        assert!(options(&request).is_err());
        request.language = "pt-BR".into();
        assert_eq!(
            options(&request).unwrap().language.as_deref(),
            Some("pt-BR")
        );
    }

    #[test]
    fn engine_errors_cross_the_wire_and_a_bare_status_is_the_node_failing() {
        let errors = [
            EngineError::Busy,
            EngineError::OutOfMemory,
            EngineError::InvalidInput("rate".into()),
            EngineError::TextRejected("abc".into()),
            EngineError::ModelUnavailable {
                id: "audio.stt.whisper-tiny-en".into(),
                reason: "missing".into(),
            },
            EngineError::Inference("boom".into()),
            EngineError::ModelTooLarge {
                id: "audio.stt.whisper-base".into(),
                needed_mb: 700,
                available_mb: 412,
            },
            EngineError::ModelNotFound {
                id: "audio.stt.nope".into(),
                reason: "no such engine".into(),
            },
            EngineError::InUse {
                id: "audio.vad.silero".into(),
                by: "audio.stt.whisper-tiny-en".into(),
            },
        ];
        for error in errors {
            let status = status(&error);
            assert!(!node_lost(&status));
            assert_eq!(engine_error(&status, "n").to_string(), error.to_string());
        }
        let gone = Status::unavailable("connection refused");
        assert!(node_lost(&gone));
        match engine_error(&gone, "node-a") {
            EngineError::NodeUnavailable { node, .. } => assert_eq!(node, "node-a"),
            other => panic!("{other:?}"),
        }
        assert!(!node_lost(&Status::deadline_exceeded("slow")));
        // A connection that closed under the call.
        assert!(node_lost(&Status::cancelled("operation was canceled")));
    }

    #[test]
    fn a_transcript_survives_the_trip() {
        let transcript = Transcript {
            text: "hello".into(),
            duration: 1.5,
            language: Some("en".into()),
            segments: vec![Segment {
                start: 0.0,
                end: 1.0,
                text: "hello".into(),
                tokens: vec![1, 2],
                seek: 3,
                avg_logprob: -0.2,
                no_speech_prob: 0.1,
                words: vec![WordTiming {
                    word: "hello".into(),
                    tokens: vec![1],
                    start: 0.1,
                    end: 0.9,
                    probability: 0.8,
                }],
            }],
        };
        let back = super::transcript(transcript_reply(transcript.clone()));
        assert_eq!(format!("{back:?}"), format!("{transcript:?}"));
        let silent = super::transcript(proto::TranscribeReply::default());
        assert_eq!(silent.language, None);
    }
}
