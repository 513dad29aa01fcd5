//! Server-sent events: splitting an upstream byte stream into events, and writing them
//! (pure).
//!
//! Upstream chunks split events anywhere, so bytes are buffered until a blank line ends
//! an event. `\r\n` line ends are accepted.

/// One event: its `event:` name (if any) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
    /// Only comment lines (`: keep-alive`).
    pub comment_only: bool,
}

#[derive(Debug, Default)]
pub struct Reader {
    buffer: Vec<u8>,
}

/// Events waiting in a buffer beyond this are a broken upstream, not a slow one.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

impl Reader {
    /// Feeds bytes; returns the events they complete. `Err` when one event grows past
    /// [`MAX_EVENT_BYTES`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, &'static str> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, skip)) = boundary(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            if let Some(event) = parse(&raw) {
                events.push(event);
            }
        }
        if self.buffer.len() > MAX_EVENT_BYTES {
            return Err("upstream event too large");
        }
        Ok(events)
    }

    /// Whether bytes of an unfinished event are buffered.
    pub fn has_partial(&self) -> bool {
        self.buffer.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// The end of the first event and the length of the blank line after it.
fn boundary(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buffer.len() {
        if buffer[i] == b'\n' {
            if buffer[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buffer[i + 1] == b'\r' && buffer.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn parse(raw: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let mut name = None;
    let mut data: Option<String> = None;
    let mut comments = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with(':') {
            comments = true;
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => match &mut data {
                Some(existing) => {
                    existing.push('\n');
                    existing.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => name = Some(value.to_owned()),
            _ => {}
        }
    }
    match (data, comments) {
        (Some(data), _) => Some(Event {
            name,
            data,
            comment_only: false,
        }),
        (None, true) => Some(Event {
            name: None,
            data: String::new(),
            comment_only: true,
        }),
        (None, false) => None,
    }
}

/// `data: <payload>\n\n`.
pub fn data(payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    for line in payload.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// `event: <name>\ndata: <payload>\n\n`.
pub fn named(name: &str, payload: &str) -> Vec<u8> {
    let mut out = format!("event: {name}\n").into_bytes();
    out.extend(data(payload));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream =
            b"data: {\"a\":1}\n\n: ping\n\nevent: error\ndata: x\ndata: y\r\n\r\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut reader = Reader::default();
            let mut events = reader.push(&stream[..cut]).unwrap();
            events.extend(reader.push(&stream[cut..]).unwrap());
            assert_eq!(events.len(), 4, "cut at {cut}");
            assert_eq!(events[0].data, "{\"a\":1}");
            assert!(events[1].comment_only);
            assert_eq!(events[2].name.as_deref(), Some("error"));
            assert_eq!(events[2].data, "x\ny");
            assert_eq!(events[3].data, "[DONE]");
            assert!(!reader.has_partial());
        }
    }

    #[test]
    fn an_unfinished_event_is_reported_and_a_huge_one_refused() {
        let mut reader = Reader::default();
        assert!(reader.push(b"data: {\"half").unwrap().is_empty());
        assert!(reader.has_partial());
        let mut reader = Reader::default();
        assert!(reader.push(&vec![b'x'; MAX_EVENT_BYTES + 1]).is_err());
    }

    #[test]
    fn writing_splits_lines() {
        assert_eq!(data("a\nb"), b"data: a\ndata: b\n\n");
        assert_eq!(named("error", "{}"), b"event: error\ndata: {}\n\n");
    }
}
