//! The inference node's wire: arbitrary bytes as the messages a node takes from the
//! network (transcription requests, whose options and PCM it checks) and the replies
//! an edge takes from a node (transcripts, diarization turns), and a node's address as
//! the registry announces it, and engine errors as statuses. Never panics; checked PCM
//! is whole finite samples; an address prints back as it parsed; a model too large
//! for a node keeps its figures across the wire.

#![no_main]

use engines::EngineError;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use scaigrid::inference::{proto, wire};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            if let Ok(request) = proto::TranscribeRequest::decode(bytes) {
                let _ = wire::options(&request);
                if let Ok(samples) = wire::samples(&request.pcm) {
                    assert_eq!(samples.len() * 4, request.pcm.len());
                    assert!(samples.iter().all(|s| s.is_finite()));
                }
            }
        }
        1 => {
            if let Ok(reply) = proto::TranscribeReply::decode(bytes) {
                let segments = reply.segments.len();
                assert_eq!(wire::transcript(reply).segments.len(), segments);
            }
        }
        2 => {
            if let Ok(reply) = proto::DiarizeReply::decode(bytes) {
                let turns = reply.turns.len();
                assert_eq!(wire::turns(reply).len(), turns);
            }
        }
        3 => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            if let Ok(address) = text.parse::<scaigrid::inference::Address>() {
                let _ = address.is_local();
                assert_eq!(address.to_string(), text);
            }
        }
        _ => {
            let Some((figures, id)) = bytes.split_first_chunk::<16>() else {
                return;
            };
            let (needed, available) = figures.split_at(8);
            let id = String::from_utf8_lossy(id).into_owned();
            let figure = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
            let too_large = EngineError::ModelTooLarge {
                id: id.clone(),
                needed_mb: figure(needed),
                available_mb: figure(available),
            };
            let back = wire::engine_error(&wire::status(&too_large), "n");
            assert_eq!(back.to_string(), too_large.to_string());
            for error in [
                EngineError::ModelNotFound {
                    id: id.clone(),
                    reason: id.clone(),
                },
                EngineError::InUse {
                    id: id.clone(),
                    by: id.clone(),
                },
            ] {
                let _ = wire::engine_error(&wire::status(&error), "n");
            }
        }
    }
});
