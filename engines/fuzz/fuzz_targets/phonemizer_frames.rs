//! The phonemizer child's length-prefixed frames, read from whatever bytes arrive: a
//! frame over the limit is refused before anything is allocated for it.
#![no_main]

use engines::phonemizer::read_frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(frame) = read_frame(&mut input, 4096) {
        assert!(frame.len() <= 4096);
    }
});
