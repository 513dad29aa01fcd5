//! EBML variable-length integers (Matroska/WebM element ids and sizes).

/// An element id with its length marker kept (e.g. `0x1A45DFA3`): `(id, bytes)`.
pub fn read_id(data: &[u8]) -> Option<Option<(u32, usize)>> {
    let first = *data.first()?;
    let length = first.leading_zeros() as usize + 1;
    if length > 4 {
        return Some(None);
    }
    if data.len() < length {
        return None;
    }
    let id = data[..length]
        .iter()
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Some(Some((id, length)))
}

/// A size (or a block's track number) with the marker removed: `(value, bytes)`;
/// `value` is `None` for the reserved "unknown size" (all ones).
pub fn read_size(data: &[u8]) -> Option<Option<(Option<u64>, usize)>> {
    let first = *data.first()?;
    if first == 0 {
        return Some(None);
    }
    let length = first.leading_zeros() as usize + 1;
    if data.len() < length {
        return None;
    }
    let mask = if length == 8 { 0 } else { 0xFFu8 >> length };
    let mut value = u64::from(first & mask);
    let mut all_ones = first & mask == mask;
    for byte in &data[1..length] {
        value = (value << 8) | u64::from(*byte);
        all_ones &= *byte == 0xFF;
    }
    Some(Some((if all_ones { None } else { Some(value) }, length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vints() {
        assert_eq!(
            read_id(&[0x1A, 0x45, 0xDF, 0xA3]),
            Some(Some((0x1A45_DFA3, 4)))
        );
        assert_eq!(read_id(&[0xA3]), Some(Some((0xA3, 1))));
        assert_eq!(read_id(&[0x1A, 0x45]), None, "needs more bytes");
        assert_eq!(read_id(&[0x00]), Some(None), "invalid");
        assert_eq!(read_size(&[0x81]), Some(Some((Some(1), 1))));
        assert_eq!(read_size(&[0x40, 0x02]), Some(Some((Some(2), 2))));
        assert_eq!(
            read_size(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Some(Some((None, 8)))
        );
        assert_eq!(read_size(&[0xFF]), Some(Some((None, 1))));
    }
}
