//! The Internet checksum (RFC 1071) and the IPv4 pseudo-header sum used by UDP and TCP (RFC 768, 9293).

use super::ipv4::Ipv4Address;

/// Adds `data` as big-endian 16-bit words to a 32-bit accumulator; an odd last byte is padded with zero.
pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so that very large inputs (64 KiB frames) never overflow the accumulator.
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
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

    #[test]
    fn large_buffer_does_not_overflow() {
        let data = vec![0xffu8; 70_000];
        // All-ones words sum to ones' complement zero (0xffff), whose complement is 0.
        assert_eq!(compute(&data), 0);
    }
}
