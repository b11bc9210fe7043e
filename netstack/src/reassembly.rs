//! Reassembly of the guest's fragments: IPv4 (RFC 791 §3.2, RFC 815) and IPv6 (RFC 8200 §4.5).
//!
//! Theory of operation. Fragments are grouped by (source, destination, protocol, identification)
//! for IPv4 and (source, destination, identification) for IPv6. Each datagram in progress keeps
//! its bytes in one buffer and the list of ranges received. Once the last fragment has set the
//! length and the ranges cover it, the datagram is handed back with the first fragment's headers
//! (IPv4: MF and offset cleared, total length and checksum fixed; IPv6: the Fragment header
//! removed, the field that named it and the payload length fixed). A fragment that overlaps bytes
//! already received discards the whole datagram, as Linux does (`ReasmOverlaps`) and RFC 5722
//! requires for IPv6, since overlaps are only ever made by evasion or corruption.

use crate::time::{Duration, Instant};
use crate::wire::{ipv4, ipv6, Ipv4Address, Ipv4Packet, Ipv6Address};

/// RFC 1122 §3.3.2 leaves the timeout to the host; Linux uses 30 s (`ipfrag_time`).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 8200 §4.5: 60 seconds for IPv6.
pub const REASSEMBLY_TIMEOUT_V6: Duration = Duration::from_secs(60);
/// Datagrams being reassembled at once; a new one beyond it evicts the oldest.
pub const MAX_DATAGRAMS: usize = 64;
/// Bytes held across all datagrams in progress; beyond it new fragments are dropped.
pub const MAX_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    V4 {
        src: Ipv4Address,
        dst: Ipv4Address,
        protocol: u8,
        ident: u16,
    },
    V6 {
        src: Ipv6Address,
        dst: Ipv6Address,
        ident: u32,
    },
}

#[derive(Debug)]
struct Datagram {
    key: Key,
    /// The first fragment's headers, once seen: IPv4's header; IPv6's header and extension
    /// headers before the Fragment header (the unfragmentable part).
    header: Option<Vec<u8>>,
    data: Vec<u8>,
    /// Received byte ranges of the payload, unordered, never overlapping.
    ranges: Vec<(usize, usize)>,
    /// Payload length, known from the last fragment.
    total: Option<usize>,
    expires_at: Instant,
}

impl Datagram {
    fn complete(&self) -> bool {
        let Some(total) = self.total else {
            return false;
        };
        let covered: usize = self.ranges.iter().map(|(a, b)| b - a).sum();
        covered == total && self.header.is_some()
    }
}

/// What a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; the datagram is not complete yet.
    Pending,
    /// The datagram is complete: the whole packet, header included, is in the buffer passed in.
    Complete,
    /// Dropped: it overlapped earlier fragments (the whole datagram went with it).
    Overlap,
    /// Dropped: bad offsets or lengths, or over the memory bound.
    Invalid,
}

/// A datagram that timed out. With its first fragment in, `quote` holds the header and leading
/// bytes to quote in ICMP Time Exceeded (code 1), as RFC 792 and RFC 8200 §4.5 ask.
pub struct Expired {
    pub quote: Option<Vec<u8>>,
    pub ipv6: bool,
}

/// One fragment, whichever the family.
struct Piece<'a> {
    key: Key,
    offset: usize,
    more: bool,
    payload: &'a [u8],
    /// The headers to keep, when this is the first fragment.
    header: &'a [u8],
    /// The largest the reassembled payload may be.
    max_end: usize,
    timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Reassembler {
    datagrams: Vec<Datagram>,
    bytes: usize,
}

impl Reassembler {
    pub fn new() -> Self {
        Reassembler::default()
    }

    /// Adds an IPv4 fragment. On `Complete`, `out` holds the reassembled packet.
    pub fn add(&mut self, now: Instant, frag: &Ipv4Packet<&[u8]>, out: &mut Vec<u8>) -> Outcome {
        let header_len = usize::from(frag.header_len());
        let piece = Piece {
            key: Key::V4 {
                src: frag.src_addr(),
                dst: frag.dst_addr(),
                protocol: frag.protocol().into(),
                ident: frag.ident(),
            },
            offset: usize::from(frag.frag_offset()),
            more: frag.more_frags(),
            payload: frag.payload(),
            header: &frag.packet()[..ipv4::HEADER_LEN],
            max_end: usize::from(u16::MAX) - header_len,
            timeout: REASSEMBLY_TIMEOUT,
        };
        let outcome = self.add_piece(now, piece, out);
        if outcome == Outcome::Complete {
            // Options of the first fragment are dropped (header rebuilt at 20 bytes).
            out[0] = 0x45;
            let total = out.len() as u16;
            out[2..4].copy_from_slice(&total.to_be_bytes());
            out[6] = 0;
            out[7] = 0;
            out[10] = 0;
            out[11] = 0;
            let sum = crate::wire::checksum::compute(&out[..ipv4::HEADER_LEN]);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        outcome
    }

    /// Adds an IPv6 fragment: `packet` is the whole IPv6 packet, `upper` its extension-header
    /// walk (which found the Fragment header). On `Complete`, `out` holds the packet as if it had
    /// never been fragmented.
    pub fn add_v6(
        &mut self,
        now: Instant,
        packet: &[u8],
        upper: &ipv6::UpperLayer,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let (Some(frag), Some(at), Some(next_at)) =
            (upper.fragment, upper.fragment_at, upper.fragment_next_at)
        else {
            return Outcome::Invalid;
        };
        let header_len = ipv6::HEADER_LEN + at;
        let Some(payload) = packet.get(header_len + ipv6::FragmentHeader::LEN..) else {
            return Outcome::Invalid;
        };
        // The first fragment's headers, with the field that named the Fragment header naming what
        // followed it instead.
        let mut header = Vec::new();
        if frag.offset == 0 {
            header.extend_from_slice(&packet[..header_len]);
            if let Some(b) = header.get_mut(next_at) {
                *b = upper.fragment_next_header;
            }
        }
        let piece = Piece {
            key: Key::V6 {
                src: Ipv6Address::from_bytes(&packet[8..24]),
                dst: Ipv6Address::from_bytes(&packet[24..40]),
                ident: frag.ident,
            },
            offset: frag.offset,
            more: frag.more,
            payload,
            header: &header,
            max_end: usize::from(u16::MAX) - (header_len - ipv6::HEADER_LEN),
            timeout: REASSEMBLY_TIMEOUT_V6,
        };
        let outcome = self.add_piece(now, piece, out);
        if outcome == Outcome::Complete {
            let payload_len = (out.len() - ipv6::HEADER_LEN) as u16;
            out[4..6].copy_from_slice(&payload_len.to_be_bytes());
        }
        outcome
    }

    fn add_piece(&mut self, now: Instant, f: Piece, out: &mut Vec<u8>) -> Outcome {
        let end = f.offset + f.payload.len();
        // Every fragment but the last carries a multiple of 8 bytes; nothing may end past the
        // largest packet.
        if (f.more && f.payload.len() % 8 != 0)
            || end > f.max_end
            || (f.payload.is_empty() && f.more)
        {
            return Outcome::Invalid;
        }
        let index = match self.datagrams.iter().position(|d| d.key == f.key) {
            Some(i) => i,
            None => {
                if self.datagrams.len() >= MAX_DATAGRAMS {
                    let oldest = self
                        .datagrams
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, d)| d.expires_at)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    self.discard(oldest);
                }
                self.datagrams.push(Datagram {
                    key: f.key,
                    header: None,
                    data: Vec::new(),
                    ranges: Vec::new(),
                    total: None,
                    expires_at: now + f.timeout,
                });
                self.datagrams.len() - 1
            }
        };
        let d = &mut self.datagrams[index];
        if d.ranges.iter().any(|&(a, b)| f.offset < b && a < end)
            || d.total.is_some_and(|t| end > t || (!f.more && end != t))
            || (!f.more && d.ranges.iter().any(|&(_, b)| b > end))
        {
            self.discard(index);
            return Outcome::Overlap;
        }
        if self.bytes + f.payload.len() > MAX_BYTES {
            return Outcome::Invalid;
        }
        let d = &mut self.datagrams[index];
        if d.data.len() < end {
            self.bytes += end - d.data.len();
            d.data.resize(end, 0);
        }
        d.data[f.offset..end].copy_from_slice(f.payload);
        d.ranges.push((f.offset, end));
        if !f.more {
            d.total = Some(end);
        }
        if f.offset == 0 {
            d.header = Some(f.header.to_vec());
        }
        if !d.complete() {
            return Outcome::Pending;
        }
        let d = self.datagrams.swap_remove(index);
        self.bytes -= d.data.len();
        out.clear();
        out.extend_from_slice(d.header.as_deref().expect("complete"));
        out.extend_from_slice(&d.data);
        Outcome::Complete
    }

    fn discard(&mut self, index: usize) {
        let d = self.datagrams.swap_remove(index);
        self.bytes -= d.data.len();
    }

    /// Drops datagrams past their timeout, handing each to `expired`.
    pub fn expire(&mut self, now: Instant, mut expired: impl FnMut(Expired)) {
        let mut i = 0;
        while i < self.datagrams.len() {
            if self.datagrams[i].expires_at <= now {
                let d = self.datagrams.swap_remove(i);
                self.bytes -= d.data.len();
                let quote = d.header.map(|mut h| {
                    h.extend_from_slice(&d.data[..d.data.len().min(8)]);
                    h
                });
                expired(Expired {
                    quote,
                    ipv6: matches!(d.key, Key::V6 { .. }),
                });
            } else {
                i += 1;
            }
        }
    }

    pub fn poll_at(&self) -> Option<Instant> {
        self.datagrams.iter().map(|d| d.expires_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Fragment, IpProtocol, Ipv4Repr};

    fn frag(offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
        let r = Ipv4Repr {
            src: Ipv4Address::new(10, 0, 2, 15),
            dst: Ipv4Address::new(10, 0, 2, 3),
            protocol: IpProtocol::Icmp,
            payload_len: data.len(),
            ttl: 64,
        };
        let mut b = vec![0u8; 20 + data.len()];
        r.emit_with_fragment(&mut b, 77, Fragment::Piece { offset, more });
        b[20..].copy_from_slice(data);
        b
    }

    fn add(r: &mut Reassembler, now: u64, b: &[u8], out: &mut Vec<u8>) -> Outcome {
        r.add(
            Instant::from_secs(now),
            &Ipv4Packet::new_checked(b).unwrap(),
            out,
        )
    }

    #[test]
    fn in_order_reversed_and_complete() {
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let pieces = [
                frag(0, true, &[1; 16]),
                frag(16, true, &[2; 16]),
                frag(32, false, &[3; 5]),
            ];
            let mut r = Reassembler::new();
            let mut out = Vec::new();
            let mut outcomes = Vec::new();
            for i in order {
                outcomes.push(add(&mut r, 0, &pieces[i], &mut out));
            }
            assert_eq!(
                outcomes,
                [Outcome::Pending, Outcome::Pending, Outcome::Complete]
            );
            let p = Ipv4Packet::new_checked(&out[..]).unwrap();
            assert!(p.verify_checksum() && !p.is_fragment());
            assert_eq!(p.total_len(), 20 + 37);
            assert_eq!(&p.payload()[..16], &[1; 16]);
            assert_eq!(&p.payload()[32..], &[3; 5]);
            assert_eq!(r.bytes, 0);
        }
    }

    #[test]
    fn overlaps_and_bad_fragments_are_dropped() {
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        assert_eq!(
            add(&mut r, 0, &frag(0, true, &[1; 16]), &mut out),
            Outcome::Pending
        );
        assert_eq!(
            add(&mut r, 0, &frag(8, true, &[9; 16]), &mut out),
            Outcome::Overlap
        );
        // The datagram went: a fresh start with the same id is pending again.
        assert_eq!(
            add(&mut r, 0, &frag(16, false, &[2; 4]), &mut out),
            Outcome::Pending
        );
        // Non-last fragment not a multiple of 8 bytes.
        assert_eq!(
            add(&mut r, 0, &frag(0, true, &[1; 10]), &mut out),
            Outcome::Invalid
        );
    }

    #[test]
    fn timeouts_report_datagrams_with_their_first_fragment() {
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        add(&mut r, 0, &frag(0, true, &[1; 16]), &mut out);
        let mut quotes = 0;
        r.expire(Instant::from_secs(29), |_| quotes += 1);
        assert_eq!(quotes, 0);
        r.expire(Instant::from_secs(30), |e| {
            assert_eq!(e.quote.map(|q| q.len()), Some(28));
            assert!(!e.ipv6);
            quotes += 1
        });
        assert_eq!(quotes, 1);
        assert_eq!(r.poll_at(), None);
    }
}
