//! The gateway's SSE reader over upstream bytes cut at any points: it never panics, and
//! the events do not depend on where the bytes were cut.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scaigrid::gateway::sse::Reader;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let mut reader = Reader::default();
    let mut whole = Vec::new();
    for chunk in bytes.chunks(usize::from(cut % 16) + 1) {
        match reader.push(chunk) {
            Ok(events) => whole.extend(events),
            Err(_) => return,
        }
    }
    let _ = reader.has_partial();
    // The same bytes in one piece give the same events.
    let mut single = Reader::default();
    if let Ok(events) = single.push(bytes) {
        assert_eq!(events, whole);
    }
});
