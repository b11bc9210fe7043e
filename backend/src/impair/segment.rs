//! Cutting a TCP segmentation frame (TSO) into the segments it stands for, for a corrupted copy
//! to the guest. On the wire a flipped bit spoils one segment, which the receiver's checksum
//! catches; a segmentation frame handed over whole would be taken whole (Linux does not verify a
//! received GSO frame's checksum: measured with the 6.1 guest, the corrupted bytes reached the
//! application). So, as netem does, the copy is segmented first and the bit flipped in the one
//! segment it falls in.

use netstack::offload::{Gso, GsoKind};
use netstack::wire::checksum;

/// How many segments the frame stands for (0 when it is not a TCP segmentation frame that fits).
pub fn count(frame: &[u8], gso: Gso) -> usize {
    let header = usize::from(gso.header_len);
    let mss = usize::from(gso.segment_size);
    if !matches!(gso.kind, GsoKind::Tcpv4 | GsoKind::Tcpv6) || mss == 0 || frame.len() <= header {
        return 0;
    }
    (frame.len() - header).div_ceil(mss)
}

/// Where a flip at byte `at` of the whole frame lands: (segment, byte in that segment). A flip in
/// the headers lands in the first segment's.
pub fn locate(at: usize, gso: Gso) -> (usize, usize) {
    let header = usize::from(gso.header_len);
    let mss = usize::from(gso.segment_size).max(1);
    if at < header {
        return (0, at);
    }
    let p = at - header;
    (p / mss, header + p % mss)
}

/// Writes segment `k` of the frame into `out`, with its own lengths, IPv4 identification and
/// header checksum, sequence number, flags (FIN and PSH on the last, CWR on the first) and a
/// complete TCP checksum. `l3` and `l4` are where the IP and TCP headers start. False when the
/// frame's headers do not say what segmentation needs (nothing useful is left in `out`).
pub fn write(frame: &[u8], gso: Gso, l3: usize, l4: usize, k: usize, out: &mut Vec<u8>) -> bool {
    let header = usize::from(gso.header_len);
    let mss = usize::from(gso.segment_size);
    let n = count(frame, gso);
    if k >= n || l4 + 20 > header || l3 + 20 > l4 {
        return false;
    }
    let start = header + k * mss;
    let end = (start + mss).min(frame.len());
    out.clear();
    out.extend_from_slice(&frame[..header]);
    out.extend_from_slice(&frame[start..end]);
    let tcp_len = out.len() - l4;
    let v4 = gso.kind == GsoKind::Tcpv4;
    if v4 {
        let total = (out.len() - l3) as u16;
        out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        let id = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]).wrapping_add(k as u16);
        out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
        out[l3 + 10..l3 + 12].fill(0);
        let ihl = usize::from(out[l3] & 0x0f) * 4;
        let sum = checksum::compute(&out[l3..l3 + ihl.min(l4 - l3)]);
        out[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
    } else {
        let payload = (out.len() - l3 - 40) as u16;
        out[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
    }
    let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]])
        .wrapping_add((k * mss) as u32);
    out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    let flags = &mut out[l4 + 13];
    if k + 1 < n {
        *flags &= !(netstack::wire::tcp::flags::FIN | netstack::wire::tcp::flags::PSH);
    }
    if k > 0 {
        *flags &= !netstack::wire::tcp::flags::CWR;
    }
    // The checksum over the pseudo-header (RFC 9293 §3.1; RFC 8200 §8.1) and the segment.
    out[l4 + 16..l4 + 18].fill(0);
    let (src, dst) = if v4 {
        (&frame[l3 + 12..l3 + 16], &frame[l3 + 16..l3 + 20])
    } else {
        (&frame[l3 + 8..l3 + 24], &frame[l3 + 24..l3 + 40])
    };
    let mut sum = checksum::accumulate(0, src);
    sum = checksum::accumulate(sum, dst);
    sum = checksum::accumulate(sum, &(tcp_len as u32).to_be_bytes());
    sum = checksum::accumulate(sum, &[0, 0, 0, 6]);
    sum = checksum::accumulate(sum, &out[l4..]);
    let sum = checksum::finish(sum);
    out[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstack::wire::{Ipv4Packet, TcpPacket};

    #[test]
    fn a_tso_frame_becomes_valid_segments() {
        // Ethernet, IPv4 (20), TCP (20): 3000 bytes of payload in segments of 1400.
        let mut f = vec![0u8; 54 + 3000];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[18..20].copy_from_slice(&7u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 2, 2]);
        f[30..34].copy_from_slice(&[10, 0, 2, 15]);
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = 0x18 | 0x01 | 0x80; // PSH ACK FIN CWR
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let gso = Gso {
            kind: GsoKind::Tcpv4,
            segment_size: 1400,
            header_len: 54,
        };
        assert_eq!(count(&f, gso), 3);
        assert_eq!(locate(10, gso), (0, 10));
        assert_eq!(locate(54 + 2900, gso), (2, 54 + 100));
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for k in 0..3 {
            assert!(write(&f, gso, 14, 34, k, &mut out));
            let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()), out.len() - 14);
            let tcp = TcpPacket::new_checked(&out[34..]).unwrap();
            assert!(tcp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
            assert_eq!(tcp.seq_number().0 as usize, 1000 + 1400 * k);
            assert_eq!(out[47] & 0x01 != 0, k == 2, "FIN on the last");
            assert_eq!(out[47] & 0x80 != 0, k == 0, "CWR on the first");
            payload.extend_from_slice(&out[54..]);
        }
        assert_eq!(payload, f[54..]);
        assert!(!write(&f, gso, 14, 34, 3, &mut out));
    }
}
