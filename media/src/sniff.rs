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
    if is_adts_header(head) {
        return Some(Container::Adts);
    }
    if is_mpeg_audio_header(head) {
        return Some(Container::Mp3);
    }
    None
}

/// Whether the container was recognised from a distinctive signature (`RIFF`, `fLaC`,
/// `OggS`, EBML, `ftyp`, `ID3`) rather than from a bare frame sync, which raw PCM can
/// contain by chance. A declared raw PCM upload wins over a bare frame sync only.
pub fn is_signature(head: &[u8], container: Container) -> bool {
    match container {
        Container::Mp3 => head.starts_with(b"ID3"),
        Container::Adts => false,
        _ => true,
    }
}

/// An MPEG-1/2/2.5 audio frame header: sync, a valid version and layer, a bitrate index
/// that is neither free nor bad, a valid sample-rate index.
fn is_mpeg_audio_header(head: &[u8]) -> bool {
    let [0xFF, b1, b2, ..] = *head else {
        return false;
    };
    let version = (b1 >> 3) & 0b11;
    let layer = (b1 >> 1) & 0b11;
    let bitrate = b2 >> 4;
    let rate = (b2 >> 2) & 0b11;
    b1 & 0xE0 == 0xE0
        && version != 0b01
        && layer != 0
        && bitrate != 0
        && bitrate != 0xF
        && rate != 0b11
}

/// An ADTS (AAC) frame header: sync, layer `00`, a valid sampling-frequency index.
fn is_adts_header(head: &[u8]) -> bool {
    let [0xFF, b1, b2, ..] = *head else {
        return false;
    };
    b1 & 0xF6 == 0xF0 && (b2 >> 2) & 0x0F < 13
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
        // Dithered silence in raw PCM (0xFFFF) is not an MPEG frame.
        assert_eq!(sniff(&[0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert!(!is_signature(&[0xFF, 0xFB, 0x90], Container::Mp3));
        assert!(is_signature(b"ID3\x04", Container::Mp3));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(b""), None);
    }
}
