//! The inference node's wire: arbitrary bytes as the messages a node takes from the
//! network (transcription requests, whose options and PCM it checks) and the replies
//! an edge takes from a node (transcripts, diarization turns), and a node's address as
//! the registry announces it. Never panics; checked PCM is whole finite samples; an
//! address prints back as it parsed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use scaigrid::inference::{proto, wire};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 4 {
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
        _ => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            if let Ok(address) = text.parse::<scaigrid::inference::Address>() {
                let _ = address.is_local();
                assert_eq!(address.to_string(), text);
            }
        }
    }
});
