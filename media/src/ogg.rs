//! Ogg framing: the page CRC, a page writer (for Ogg/Opus files) and an incremental page
//! reader (for Ogg/Opus streams that arrive in arbitrary pieces).

use crate::error::{MediaError, MediaResult};

/// Ogg page CRC (polynomial 0x04C11DB7, no reflection).
pub fn crc(data: &[u8]) -> u32 {
    crc_continue(0, data)
}

/// Continues a CRC over more bytes.
fn crc_continue(crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04C1_1DB7
                } else {
                    r << 1
                };
            }
            *entry = r;
        }
        table
    });
    data.iter().fold(crc, |crc, byte| {
        (crc << 8) ^ table[((crc >> 24) as u8 ^ byte) as usize]
    })
}

/// Writes Ogg pages of one logical stream.
pub struct OggPages {
    serial: u32,
    sequence: u32,
    out: Vec<u8>,
}

impl OggPages {
    pub fn new(serial: u32) -> OggPages {
        OggPages {
            serial,
            sequence: 0,
            out: Vec::new(),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// The pages written since the last call (a stream sends them as they are made).
    pub fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// One page holding whole `packets` (each under 255 * 255 bytes).
    pub fn page(&mut self, packets: &[Vec<u8>], granule: u64, header_type: u8) {
        let mut lacing = Vec::new();
        for packet in packets {
            let mut left = packet.len();
            while left >= 255 {
                lacing.push(255u8);
                left -= 255;
            }
            lacing.push(left as u8);
        }
        let start = self.out.len();
        self.out.extend_from_slice(b"OggS");
        self.out.push(0);
        self.out.push(header_type);
        self.out.extend_from_slice(&granule.to_le_bytes());
        self.out.extend_from_slice(&self.serial.to_le_bytes());
        self.out.extend_from_slice(&self.sequence.to_le_bytes());
        self.out.extend_from_slice(&[0, 0, 0, 0]);
        self.out.push(lacing.len() as u8);
        self.out.extend_from_slice(&lacing);
        for packet in packets {
            self.out.extend_from_slice(packet);
        }
        let crc = crc(&self.out[start..]);
        self.out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        self.sequence += 1;
    }
}

/// A page's fields that the reader passes on.
#[derive(Debug)]
pub struct Page<'a> {
    pub serial: u32,
    pub continued: bool,
    pub lacing: &'a [u8],
    pub body: &'a [u8],
}

/// Parses one page at the start of `data`: `Ok(None)` if more bytes are needed,
/// otherwise the page and how many bytes it spans. A bad capture pattern or CRC is
/// `Corrupt`.
pub fn parse_page(data: &[u8]) -> MediaResult<Option<(Page<'_>, usize)>> {
    if data.len() < 27 {
        return Ok(None);
    }
    if &data[..4] != b"OggS" || data[4] != 0 {
        return Err(MediaError::Corrupt("Ogg capture pattern missing".into()));
    }
    let segments = usize::from(data[26]);
    let header_len = 27 + segments;
    if data.len() < header_len {
        return Ok(None);
    }
    let lacing = &data[27..header_len];
    let body_len: usize = lacing.iter().map(|l| usize::from(*l)).sum();
    let total = header_len + body_len;
    if data.len() < total {
        return Ok(None);
    }
    let stored = u32::from_le_bytes([data[22], data[23], data[24], data[25]]);
    // The CRC covers the page with its CRC field zeroed; computed without a copy.
    let computed = crc_continue(
        crc_continue(crc_continue(0, &data[..22]), &[0; 4]),
        &data[26..total],
    );
    if stored != computed {
        return Err(MediaError::Corrupt("Ogg page checksum mismatch".into()));
    }
    Ok(Some((
        Page {
            serial: u32::from_le_bytes([data[14], data[15], data[16], data[17]]),
            continued: data[5] & 0x01 != 0,
            lacing,
            body: &data[header_len..total],
        },
        total,
    )))
}
