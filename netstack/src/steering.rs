//! Steering: the symmetric hash of a frame's flow that picks its queue pair, the same in both
//! directions so that a conversation's frames to the guest stay on one pair.

use crate::wire::ethernet;

/// The most egress queues (the device's RX queues, one per queue pair).
pub const MAX_QUEUES: usize = 8;

/// A hash of a frame's flow that is the same in both directions: the IP addresses and, for TCP and
/// UDP outside fragments, the ports (each endpoint hashed, then combined in an order-free way).
/// Frames without IP (ARP) hash to 0.
pub fn steering_hash(frame: &[u8]) -> u32 {
    match frame.get(12..14) {
        Some(&[a, b]) => ip_flow(
            u16::from_be_bytes([a, b]),
            &frame[ethernet::HEADER_LEN.min(frame.len())..],
        )
        .map_or(0, |f| f.hash),
        _ => 0,
    }
}

/// What steering and the shards' demultiplexing read of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpFlow {
    /// [`steering_hash`]'s value.
    pub(crate) hash: u32,
    /// The transport and its ports (source, destination), for TCP and UDP outside fragments.
    pub(crate) ports: Option<(Transport, u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Udp,
}

/// The flow of the IP packet `ip` of EtherType `ethertype` (None when it is neither IPv4 nor
/// IPv6 or too short to say). IPv6 extension headers are stepped over (hop-by-hop, routing,
/// destination options) so that a flow's packets hash alike with and without them; a fragment, or
/// a header this walk does not know, hashes by the addresses alone.
pub(crate) fn ip_flow(ethertype: u16, ip: &[u8]) -> Option<IpFlow> {
    let (src, dst, proto, l4): (&[u8], &[u8], u8, Option<&[u8]>) = match ethertype {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            (
                &ip[12..16],
                &ip[16..20],
                ip[9],
                (!fragment).then(|| ip.get(ihl..)).flatten(),
            )
        }
        0x86dd if ip.len() >= 40 => {
            let (proto, l4) = skip_extension_headers(ip[6], &ip[40..]);
            (&ip[8..24], &ip[24..40], proto, l4)
        }
        _ => return None,
    };
    let ports = match (proto, l4) {
        (6 | 17, Some(l4)) if l4.len() >= 4 => Some((
            if proto == 6 {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )),
        _ => None,
    };
    let port_bytes = ports.map(|(_, s, d)| (s.to_be_bytes(), d.to_be_bytes()));
    let hash = flow_hash(
        (src, port_bytes.as_ref().map(|p| &p.0[..])),
        (dst, port_bytes.as_ref().map(|p| &p.1[..])),
    );
    Some(IpFlow { hash, ports })
}

/// Steps over the extension headers whose length this walk knows (RFC 8200 §4.3-4.6: hop-by-hop,
/// routing, destination options, at most 8 of them): the upper-layer protocol and its bytes, or
/// no bytes for a fragment or anything else.
fn skip_extension_headers(mut next: u8, mut rest: &[u8]) -> (u8, Option<&[u8]>) {
    use crate::wire::ipv6::next_header::{DEST_OPTIONS, HOP_BY_HOP, ROUTING};
    for _ in 0..8 {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTIONS => {
                let Some(&[n, len]) = rest.get(..2) else {
                    return (next, None);
                };
                let Some(after) = rest.get((usize::from(len) + 1) * 8..) else {
                    return (next, None);
                };
                (next, rest) = (n, after);
            }
            6 | 17 => return (next, Some(rest)),
            _ => return (next, None),
        }
    }
    (next, None)
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
