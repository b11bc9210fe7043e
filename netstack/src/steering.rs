//! Steering: the symmetric hash of a frame's flow that picks its queue pair, the same in both
//! directions so that a conversation's frames to the guest stay on one pair.

use crate::wire::ethernet;

/// A hash of a frame's flow that is the same in both directions: the IP addresses and, for TCP and
/// UDP outside fragments, the ports (each endpoint hashed, then combined in an order-free way).
/// Frames without IP (ARP) hash to 0.
pub fn steering_hash(frame: &[u8]) -> u32 {
    let Some(ip) = frame.get(ethernet::HEADER_LEN..) else {
        return 0;
    };
    let (src, dst, proto, l4): (&[u8], &[u8], u8, Option<&[u8]>) = match frame.get(12..14) {
        Some([0x08, 0x00]) if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            (
                &ip[12..16],
                &ip[16..20],
                ip[9],
                (!fragment).then(|| ip.get(ihl..)).flatten(),
            )
        }
        Some([0x86, 0xdd]) if ip.len() >= 40 => (&ip[8..24], &ip[24..40], ip[6], ip.get(40..)),
        _ => return 0,
    };
    let ports = match (proto, l4) {
        (6 | 17, Some(l4)) if l4.len() >= 4 => Some((&l4[0..2], &l4[2..4])),
        _ => None,
    };
    flow_hash((src, ports.map(|p| p.0)), (dst, ports.map(|p| p.1)))
}

/// [`steering_hash`] of a flow given by its two ends (address bytes, port bytes if any).
pub fn flow_hash(a: (&[u8], Option<&[u8]>), b: (&[u8], Option<&[u8]>)) -> u32 {
    fn mix(addr: &[u8], port: Option<&[u8]>) -> u32 {
        // FNV-1a: cheap and well spread for a handful of bytes.
        addr.iter()
            .chain(port.unwrap_or_default())
            .fold(0x811c_9dc5u32, |h, &b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            })
    }
    let (a, b) = (mix(a.0, a.1), mix(b.0, b.1));
    // Order-free (a ^ b and a + b are both symmetric), then MurmurHash3's finaliser so that the
    // low bits, which pick the queue, depend on every input bit.
    let mut h = (a ^ b) ^ a.wrapping_add(b).rotate_left(16);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
