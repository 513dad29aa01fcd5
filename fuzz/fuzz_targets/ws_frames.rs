//! Client text frames of the stream protocols: ScaiEcho's `open` and control frames,
//! ScaiSpeak's `open` and text/interrupt/flush/close frames (the WebRTC control socket
//! carries the same), Deepgram's messages and `/v1/listen` query, OpenAI Realtime
//! client events and session updates. Any text is either parsed or a documented error;
//! never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use scaigrid::realtime;
use scaigrid::scaiecho::deepgram;
use scaigrid::scaiecho::stream::protocol;
use scaigrid::scaispeak::stream;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(open) = protocol::parse_open(text) {
        assert!((0.5..=30.0).contains(&open.chunk_seconds));
    }
    let _ = protocol::parse_control(text);
    let _ = stream::parse_open(text);
    let _ = stream::parse_client_frame(text);
    let _ = deepgram::link::inbound(text);
    match realtime::events::parse(text) {
        Ok(realtime::events::ClientEvent::SessionUpdate(update)) => {
            use realtime::config::{Kind, Session};
            let mut session = Session::new(Kind::Realtime, None);
            let before = session.clone();
            match session.update(&update) {
                // A session that took the update opens a stream the stream protocol
                // takes, and shows itself in both protocols.
                Ok(()) => {
                    assert!(protocol::parse_open(&session.open_frame()).is_ok());
                    let _ = (session.describe(false), session.describe(true));
                }
                Err(_) => assert_eq!(session, before, "a refused update changes nothing"),
            }
        }
        Ok(realtime::events::ClientEvent::ItemCreate { item, .. }) => {
            use realtime::conversation::{Conversation, Item};
            if let Ok(item) = Item::from_client(&item) {
                let mut conversation = Conversation::default();
                let _ = item.describe(true);
                conversation.insert(item, None).unwrap();
                assert!(conversation.messages("").len() <= 1);
            }
        }
        _ => {}
    }
    if let Ok(listen) = deepgram::options::Listen::from_query(text) {
        // Options that parse make a stream `open` or a documented refusal.
        let _ = listen.open();
    }
});
