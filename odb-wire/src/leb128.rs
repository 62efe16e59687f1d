//! LEB128 varints for the compact in-memory records of the server's store and the client's
//! replica (not the wire format, which uses bincode's varints): seven bits per byte, low bits
//! first, the high bit set on every byte but the last.

/// Appends `v`.
#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How many bytes [`put`] writes for `v`.
#[inline]
pub fn put_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a varint at `*pos` and moves `*pos` past it. Records are written by [`put`] only, so
/// a read cut short yields what was read rather than an error.
#[inline]
pub fn get(data: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&b) = data.get(*pos) {
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_knows_its_length() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, v);
            assert_eq!(out.len(), put_len(v));
            let mut pos = 0;
            assert_eq!(get(&out, &mut pos), v);
            assert_eq!(pos, out.len());
        }
    }
}
