//! SDP offers from clients: parsed, then answered with a loopback candidate (Opus only).
//! Never panics.

#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use scaigrid::webrtc::peer::{answer, parse_offer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = parse_offer(text) else {
        return;
    };
    let candidate: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let _ = answer(offer, &[candidate], Instant::now());
});
