//! WebM/Matroska with Opus as MediaRecorder streams it: a flattened EBML walk that
//! descends into the masters it needs (Segment, Tracks, TrackEntry, Cluster,
//! BlockGroup, unknown sizes allowed), reads track fields and blocks, and skips
//! everything else as it streams past.

use super::Parser;
use super::ebml::{read_id, read_size};
use crate::error::{MediaError, MediaResult};
use crate::opus_decode::OpusPacketDecoder;

const SEGMENT: u32 = 0x1853_8067;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CLUSTER: u32 = 0x1F43_B675;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const SIMPLE_BLOCK: u32 = 0xA3;

fn is_master(id: u32) -> bool {
    matches!(id, SEGMENT | TRACKS | TRACK_ENTRY | CLUSTER | BLOCK_GROUP)
}

fn is_read(id: u32) -> bool {
    matches!(
        id,
        TRACK_NUMBER | CODEC_ID | CODEC_PRIVATE | BLOCK | SIMPLE_BLOCK
    )
}

#[derive(Default)]
struct TrackEntry {
    number: Option<u64>,
    codec: Option<Vec<u8>>,
    private: Option<Vec<u8>>,
}

pub struct WebmParser {
    skip: u64,
    entries: Vec<TrackEntry>,
    /// The Opus track's number and decoder, chosen at the first block.
    chosen: Option<(u64, OpusPacketDecoder)>,
    max_element: usize,
    started: bool,
}

impl WebmParser {
    pub fn new(max_element: usize) -> Self {
        WebmParser {
            skip: 0,
            entries: Vec::new(),
            chosen: None,
            max_element,
            started: false,
        }
    }

    fn choose_track(&mut self) -> MediaResult<()> {
        if self.chosen.is_some() {
            return Ok(());
        }
        let entry = self
            .entries
            .iter()
            .find(|e| e.codec.as_deref() == Some(b"A_OPUS"))
            .ok_or_else(|| MediaError::Unsupported("WebM stream without an Opus track".into()))?;
        let number = entry.number.unwrap_or(1);
        let decoder = OpusPacketDecoder::from_head(entry.private.as_deref())?;
        self.chosen = Some((number, decoder));
        Ok(())
    }

    fn element(&mut self, id: u32, body: &[u8], out: &mut Vec<f32>) -> MediaResult<()> {
        let entry = || MediaError::Corrupt("track field outside a TrackEntry".into());
        match id {
            TRACK_NUMBER => {
                let value = body.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
                self.entries.last_mut().ok_or_else(entry)?.number = Some(value);
            }
            CODEC_ID => self.entries.last_mut().ok_or_else(entry)?.codec = Some(body.to_vec()),
            CODEC_PRIVATE => {
                self.entries.last_mut().ok_or_else(entry)?.private = Some(body.to_vec())
            }
            BLOCK | SIMPLE_BLOCK => {
                self.choose_track()?;
                let Some(Some((Some(track), length))) = read_size(body) else {
                    return Err(MediaError::Corrupt("bad block header".into()));
                };
                if body.len() < length + 3 {
                    return Err(MediaError::Corrupt("short block".into()));
                }
                let flags = body[length + 2];
                let Some((number, decoder)) = self.chosen.as_mut() else {
                    return Ok(());
                };
                if track != *number {
                    return Ok(());
                }
                if flags & 0x06 != 0 {
                    return Err(MediaError::Unsupported("laced WebM blocks".into()));
                }
                out.extend_from_slice(decoder.decode(&body[length + 3..])?);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Parser for WebmParser {
    fn parse(&mut self, data: &[u8], out: &mut Vec<f32>) -> MediaResult<usize> {
        let mut at = 0;
        loop {
            if self.skip > 0 {
                let take = self.skip.min((data.len() - at) as u64);
                self.skip -= take;
                at += take as usize;
                if self.skip > 0 {
                    return Ok(at);
                }
            }
            let rest = &data[at..];
            let Some(id) = read_id(rest) else {
                return Ok(at);
            };
            let (id, id_len) =
                id.ok_or_else(|| MediaError::Corrupt("bad EBML element id".into()))?;
            if !self.started {
                if id != 0x1A45_DFA3 {
                    return Err(MediaError::Corrupt("not an EBML stream".into()));
                }
                self.started = true;
            }
            let Some(size) = read_size(&rest[id_len..]) else {
                return Ok(at);
            };
            let (size, size_len) =
                size.ok_or_else(|| MediaError::Corrupt("bad EBML size".into()))?;
            let header = id_len + size_len;
            if is_master(id) {
                if id == TRACK_ENTRY {
                    self.entries.push(TrackEntry::default());
                }
                at += header;
                continue;
            }
            let size =
                size.ok_or_else(|| MediaError::Corrupt("unknown size on a leaf element".into()))?;
            if !is_read(id) {
                at += header;
                self.skip = size;
                continue;
            }
            if size as usize > self.max_element {
                return Err(MediaError::Corrupt(
                    "WebM element larger than the limit".into(),
                ));
            }
            if rest.len() < header + size as usize {
                return Ok(at);
            }
            self.element(id, &rest[header..header + size as usize], out)?;
            at += header + size as usize;
        }
    }

    fn shape(&self) -> Option<(u32, u16)> {
        self.chosen.as_ref().map(|(_, d)| (48_000, d.channels()))
    }

    fn at_boundary(&self) -> bool {
        self.skip == 0
    }
}
