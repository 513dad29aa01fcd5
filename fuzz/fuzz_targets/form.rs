//! Upload bodies: `multipart/form-data` (boundary `b`) or raw with a media type, and the
//! query string; then the raw-PCM parameters of the media type found. Never panics;
//! options stay bounded.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use scaigrid::speech::upload::{parse_form, raw_pcm};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    // A first line is the query (kind even) or the raw body's media type (kind odd).
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (head, body) = rest.split_at(split);
    let head = String::from_utf8_lossy(head).into_owned();
    let body = Bytes::copy_from_slice(body.get(1..).unwrap_or_default());
    let (content_type, query) = match kind % 4 {
        0 => (
            Some("multipart/form-data; boundary=b".to_owned()),
            Some(head.as_str()),
        ),
        1 => (Some(head.clone()), None),
        2 => (Some("multipart/form-data".to_owned()), Some(head.as_str())),
        _ => (None, Some(head.as_str())),
    };
    let form = RUNTIME.with(|runtime| runtime.block_on(parse_form(body, content_type, query)));
    if let Ok(form) = form {
        assert!(!form.audio.is_empty());
        assert!(form.fields.len() <= 256);
        let _ = raw_pcm(form.media_type.as_deref());
    }
    let _ = raw_pcm(Some(&head));
});
