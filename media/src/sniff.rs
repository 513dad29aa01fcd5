//! Format detection from the bytes themselves (the declared type is only a hint).

/// A container (and, where the container does not say, codec) recognised from its first
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Wav,
    Mp3,
    Flac,
    /// Ogg with Vorbis or Opus inside (the demuxer tells which).
    Ogg,
    /// Matroska or WebM (EBML header).
    Matroska,
    /// ISO base media (MP4/M4A).
    Mp4,
    /// AAC in ADTS frames.
    Adts,
}

/// The container of `head` (the first bytes of a file; 64 are plenty), if recognised.
pub fn sniff(head: &[u8]) -> Option<Container> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"RIFF") && head.get(8..12) == Some(b"WAVE") || starts(b"RF64") {
        return Some(Container::Wav);
    }
    if starts(b"fLaC") {
        return Some(Container::Flac);
    }
    if starts(b"OggS") {
        return Some(Container::Ogg);
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(Container::Matroska);
    }
    if head.get(4..8) == Some(b"ftyp") {
        return Some(Container::Mp4);
    }
    if starts(b"ID3") {
        return Some(Container::Mp3);
    }
    if head.len() >= 2 && head[0] == 0xFF {
        // MPEG audio frame sync: 11 set bits. Layer bits `00` mean ADTS (AAC).
        if head[1] & 0xF6 == 0xF0 {
            return Some(Container::Adts);
        }
        if head[1] & 0xE0 == 0xE0 && head[1] & 0x06 != 0 {
            return Some(Container::Mp3);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some(Container::Wav));
        assert_eq!(sniff(b"fLaC\0"), Some(Container::Flac));
        assert_eq!(sniff(b"OggS\0"), Some(Container::Ogg));
        assert_eq!(
            sniff(&[0x1A, 0x45, 0xDF, 0xA3, 1]),
            Some(Container::Matroska)
        );
        assert_eq!(sniff(b"\0\0\0\x20ftypM4A "), Some(Container::Mp4));
        assert_eq!(sniff(b"ID3\x04"), Some(Container::Mp3));
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90]), Some(Container::Mp3));
        assert_eq!(sniff(&[0xFF, 0xF1, 0x50]), Some(Container::Adts));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(b""), None);
    }
}
