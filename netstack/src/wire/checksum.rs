//! The Internet checksum (RFC 1071) and the IPv4 pseudo-header sum used by UDP and TCP (RFC 768, 9293).

use super::ipv4::Ipv4Address;

/// Adds `data` as big-endian 16-bit words to a 32-bit accumulator; an odd last byte is padded with
/// zero. The result stays below 2^17 above `sum` folded, so callers may chain calls.
///
/// RFC 1071 §2(B): the ones' complement sum does not depend on byte order, so the words are added
/// eight bytes at a time in the machine's order into a 64-bit accumulator (as two 32-bit halves:
/// no carry is lost below 2^32 additions), folded to 16 bits and swapped to network order once at
/// the end. This is the checksum of every TCP and UDP payload sent to a guest without offloads.
pub fn accumulate(sum: u32, data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        // The pad byte follows it: in network order the last byte is a word's high half.
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let folded = (sum & 0xffff) + (sum >> 16);
    folded + u32::from(u16::from_be(acc as u16))
}

/// [`accumulate`] over `pieces` as if they were one slice (a frame's headers, then payload
/// gathered from a send buffer's slices). A piece that starts at an odd offset of the whole
/// adds the byte-swapped sum of its bytes taken at an even one (RFC 1071 §2(B)).
pub fn accumulate_pieces(mut sum: u32, pieces: &[&[u8]]) -> u32 {
    let mut odd = false;
    for piece in pieces {
        if odd {
            let mut own = accumulate(0, piece);
            while own >> 16 != 0 {
                own = (own & 0xffff) + (own >> 16);
            }
            sum = (sum & 0xffff) + (sum >> 16) + u32::from((own as u16).swap_bytes());
        } else {
            sum = accumulate(sum, piece);
        }
        odd ^= piece.len() % 2 == 1;
    }
    sum
}

/// Folds the accumulator to 16 bits and complements it.
pub fn finish(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data` alone.
pub fn compute(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// The partial sum of the IPv4 pseudo-header (RFC 768): source, destination, zero, protocol, length.
pub fn pseudo_header_v4(src: Ipv4Address, dst: Ipv4Address, protocol: u8, len: u32) -> u32 {
    let mut sum = accumulate(0, &src.0);
    sum = accumulate(sum, &dst.0);
    sum = sum.wrapping_add(u32::from(protocol));
    sum.wrapping_add(len)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sum_in_pieces_equals_the_sum_of_the_whole() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = finish(accumulate(0x1234, &data));
        for cut in [0, 1, 2, 3, 7, 8, 9, 500, 999, 1000, 1001] {
            let (a, b) = data.split_at(cut);
            let sum = accumulate_pieces(0x1234, &[a, b]);
            assert_eq!(finish(sum), whole, "cut at {cut}");
            // Three pieces, the middle one odd: the last is back at an even offset.
            let (b1, b2) = b.split_at(b.len().min(3));
            let sum = accumulate_pieces(0x1234, &[a, b1, b2]);
            assert_eq!(finish(sum), whole, "cut at {cut}, then 3");
        }
    }

    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(compute(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            compute(&[0x12, 0x34, 0x56]),
            compute(&[0x12, 0x34, 0x56, 0x00])
        );
    }

    /// The word-at-a-time sum as RFC 1071 writes it, for comparison.
    fn reference(mut sum: u32, data: &[u8]) -> u32 {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        sum
    }

    #[test]
    fn matches_the_reference_at_every_length_and_start() {
        let mut x = 0x9e37_79b9u32;
        let data: Vec<u8> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for start in [0usize, 1, 2, 3, 7] {
            for len in (0..200).chain([1447, 1448, 1460, 2999 - 7]) {
                let d = &data[start..start + len];
                for sum in [0u32, 0xffff, 0x1_2345, 0xfffe_0001] {
                    assert_eq!(
                        finish(accumulate(sum, d)),
                        finish(reference(sum, d)),
                        "start {start} len {len} sum {sum:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn large_buffer_does_not_overflow() {
        let data = vec![0xffu8; 70_000];
        // All-ones words sum to ones' complement zero (0xffff), whose complement is 0.
        assert_eq!(compute(&data), 0);
    }
}
