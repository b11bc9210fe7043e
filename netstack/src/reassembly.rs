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
/// Bytes held across all datagrams in progress: their buffers (which grow to the furthest
/// fragment, wherever it lies), first-fragment headers and range lists. A fragment that would
/// go beyond it evicts the oldest other datagrams first.
pub const MAX_BYTES: usize = 4 << 20;
/// Disjoint runs of bytes one datagram may have (adjacent fragments merge into one run): a
/// datagram with more holes than this is discarded. Reordering on a real path leaves a few;
/// thousands of 8-byte pieces with gaps between them are only ever crafted.
pub const MAX_RANGES: usize = 64;

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
    /// Received byte ranges of the payload, sorted, disjoint and never adjacent (touching runs
    /// are merged), at most [`MAX_RANGES`].
    ranges: Vec<(usize, usize)>,
    /// Payload length, known from the last fragment.
    total: Option<usize>,
    expires_at: Instant,
}

impl Datagram {
    fn complete(&self) -> bool {
        self.header.is_some() && self.total.is_some_and(|t| self.ranges == [(0, t)])
    }

    /// Bytes this datagram holds in memory.
    fn footprint(&self) -> usize {
        self.data.capacity()
            + self.header.as_ref().map_or(0, Vec::capacity)
            + self.ranges.capacity() * core::mem::size_of::<(usize, usize)>()
    }

    /// Whether `start..end` overlaps what is held, and where a run beginning at `start` goes.
    fn place(&self, start: usize, end: usize) -> Result<usize, ()> {
        let i = self.ranges.partition_point(|&(_, b)| b <= start);
        match self.ranges.get(i) {
            Some(&(a, _)) if a < end => Err(()),
            _ => Ok(i),
        }
    }

    /// Records `start..end` at `i` (from [`Datagram::place`]), merging with touching runs.
    /// False if that would leave more than [`MAX_RANGES`] runs.
    fn record(&mut self, i: usize, start: usize, end: usize) -> bool {
        let joins_prev = i > 0 && self.ranges[i - 1].1 == start;
        let joins_next = self.ranges.get(i).is_some_and(|&(a, _)| a == end);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = end,
            (false, true) => self.ranges[i].0 = start,
            (false, false) => {
                if self.ranges.len() >= MAX_RANGES {
                    return false;
                }
                self.ranges.insert(i, (start, end));
            }
        }
        true
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
    /// The largest the reassembled payload may be, measured from the fragmentable part.
    max_end: usize,
    /// The largest the reassembled packet may be, header included.
    max_packet: usize,
    timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Reassembler {
    datagrams: Vec<Datagram>,
    /// What the datagrams hold ([`Datagram::footprint`] summed), at most [`MAX_BYTES`].
    bytes: usize,
    /// Datagrams discarded to make room (for the count or the byte bound), since start.
    pub evictions: u64,
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
            // The header is rebuilt at 20 bytes.
            max_packet: usize::from(u16::MAX),
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
            // The payload length counts the first fragment's unfragmentable part too.
            max_packet: ipv6::HEADER_LEN + usize::from(u16::MAX),
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
                    self.evict_oldest(None);
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
        let d = &self.datagrams[index];
        let Ok(at) = d.place(f.offset, end) else {
            self.discard(index);
            return Outcome::Overlap;
        };
        if d.total.is_some_and(|t| end > t || (!f.more && end != t))
            || (!f.more && d.ranges.last().is_some_and(|&(_, b)| b > end))
        {
            self.discard(index);
            return Outcome::Overlap;
        }
        // What this fragment adds to memory: the buffer up to its end, its headers if first, a
        // range entry. Older datagrams make room for it.
        let growth = end.saturating_sub(d.data.len())
            + if f.offset == 0 { f.header.len() } else { 0 }
            + core::mem::size_of::<(usize, usize)>();
        let key = d.key;
        while self.bytes + growth > MAX_BYTES && self.datagrams.len() > 1 {
            self.evict_oldest(Some(key));
        }
        let Some(index) = self.datagrams.iter().position(|d| d.key == key) else {
            return Outcome::Invalid;
        };
        if self.bytes + growth > MAX_BYTES {
            self.discard(index);
            return Outcome::Invalid;
        }
        let d = &mut self.datagrams[index];
        let before = d.footprint();
        if !d.record(at, f.offset, end) {
            self.discard(index);
            return Outcome::Invalid;
        }
        if d.data.len() < end {
            d.data.reserve_exact(end - d.data.len());
            d.data.resize(end, 0);
        }
        d.data[f.offset..end].copy_from_slice(f.payload);
        if !f.more {
            d.total = Some(end);
        }
        if f.offset == 0 {
            d.header = Some(f.header.to_vec());
        }
        self.bytes = self.bytes - before + d.footprint();
        if !d.complete() {
            return Outcome::Pending;
        }
        let d = self.datagrams.swap_remove(index);
        self.bytes -= d.footprint();
        let header = d.header.as_deref().unwrap_or_default();
        // The first fragment's headers may be longer than those of the one that set the limit.
        if header.len() + d.data.len() > f.max_packet {
            return Outcome::Invalid;
        }
        out.clear();
        out.extend_from_slice(header);
        out.extend_from_slice(&d.data);
        Outcome::Complete
    }

    /// Discards the datagram that expires first, other than `keep`.
    fn evict_oldest(&mut self, keep: Option<Key>) {
        let oldest = self
            .datagrams
            .iter()
            .enumerate()
            .filter(|(_, d)| Some(d.key) != keep)
            .min_by_key(|(_, d)| d.expires_at)
            .map(|(i, _)| i);
        if let Some(i) = oldest {
            self.discard(i);
            self.evictions += 1;
        }
    }

    fn discard(&mut self, index: usize) {
        let d = self.datagrams.swap_remove(index);
        self.bytes -= d.footprint();
    }

    /// What the datagrams hold, counted afresh (tests check the running count against it).
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.datagrams.iter().map(Datagram::footprint).sum()
    }

    /// Drops datagrams past their timeout, handing each to `expired`.
    pub fn expire(&mut self, now: Instant, mut expired: impl FnMut(Expired)) {
        let mut i = 0;
        while i < self.datagrams.len() {
            if self.datagrams[i].expires_at <= now {
                let d = self.datagrams.swap_remove(i);
                self.bytes -= d.footprint();
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

    /// An IPv6 fragment of datagram `ident`: `unfragmentable` bytes of Hop-by-Hop options
    /// before the Fragment header (0 for none), then `data` at `offset`.
    fn frag6(ident: u32, unfragmentable: usize, offset: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; ipv6::HEADER_LEN + unfragmentable + 8 + data.len()];
        p[0] = 0x60;
        let payload_len = (p.len() - ipv6::HEADER_LEN) as u16;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p[6] = if unfragmentable > 0 { 0 } else { 44 };
        p[8..24].copy_from_slice(&"fd00::15".parse::<Ipv6Address>().unwrap().0);
        p[24..40].copy_from_slice(&"fd00::3".parse::<Ipv6Address>().unwrap().0);
        let mut at = ipv6::HEADER_LEN;
        if unfragmentable > 0 {
            // Hop-by-Hop: next header Fragment, PadN over the rest.
            p[at] = 44;
            p[at + 1] = (unfragmentable / 8 - 1) as u8;
            p[at + 2] = 1;
            p[at + 3] = (unfragmentable - 4) as u8;
            at += unfragmentable;
        }
        ipv6::FragmentHeader {
            offset,
            more,
            ident,
        }
        .emit(&mut p[at..], 17);
        p[at + 8..].copy_from_slice(data);
        p
    }

    fn add6(r: &mut Reassembler, p: &[u8], out: &mut Vec<u8>) -> Outcome {
        let upper = ipv6::walk_extension_headers(p[6], &p[ipv6::HEADER_LEN..], false).unwrap();
        r.add_v6(Instant::ZERO, p, &upper, out)
    }

    #[test]
    fn an_ipv6_datagram_longer_than_a_packet_is_never_completed() {
        // Issue 11, defect 3: the limit came from each fragment's own unfragmentable part, the
        // header from the first's: 1 KiB of options in the first fragment and data up to 65535
        // in the others wrapped the 16-bit payload length.
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        let piece = 1400;
        let total = 65535 - 8 - 7;
        let mut last = Outcome::Pending;
        for offset in (0..total).step_by(piece) {
            let len = piece.min(total - offset);
            let more = offset + len < total;
            let unfragmentable = if offset == 0 { 1024 } else { 0 };
            let p = frag6(7, unfragmentable, offset, more, &vec![1u8; len]);
            last = add6(&mut r, &p, &mut out);
            if last != Outcome::Pending {
                break;
            }
        }
        assert_eq!(last, Outcome::Invalid);
        assert_eq!(r.poll_at(), None);
        assert_eq!(r.bytes, 0);
        // The same datagram with a short first header fits and completes, its length exact.
        let total = 65535 - 8;
        for offset in (0..total).step_by(piece) {
            let len = piece.min(total - offset);
            let p = frag6(8, 0, offset, offset + len < total, &vec![1u8; len]);
            last = add6(&mut r, &p, &mut out);
        }
        assert_eq!(last, Outcome::Complete);
        assert_eq!(out.len(), ipv6::HEADER_LEN + total);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]) as usize, total);
    }

    #[test]
    fn the_byte_bound_counts_what_is_held_and_holds_under_a_flood() {
        // Each datagram's buffer grows to its furthest fragment: 8 bytes at 65 000 hold 64 KiB.
        // The bound counts what is allocated (buffers, first headers, range lists) and evicts the
        // oldest datagrams to stay under it.
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        for ident in 0..1000u32 {
            let unfragmentable = if ident % 2 == 0 { 1024 } else { 0 };
            let offset = if ident % 2 == 0 { 0 } else { 65000 };
            add6(
                &mut r,
                &frag6(ident, unfragmentable, offset, true, &[0; 8]),
                &mut out,
            );
            assert!(r.bytes <= MAX_BYTES, "{} > {MAX_BYTES}", r.bytes);
            assert_eq!(r.bytes, r.held_bytes(), "accounting after datagram {ident}");
            assert!(r.datagrams.len() <= MAX_DATAGRAMS);
        }
        assert!(r.evictions > 0);
    }

    #[test]
    fn the_holes_a_datagram_may_have_are_bounded() {
        // Every other 8-byte piece: each a hole of its own. In-order pieces merge into one run.
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        let mut outcomes = Vec::new();
        for i in 0..1000usize {
            outcomes.push(add6(&mut r, &frag6(1, 0, i * 16, true, &[0; 8]), &mut out));
            assert!(r.datagrams.iter().all(|d| d.ranges.len() <= MAX_RANGES));
        }
        assert!(outcomes[..MAX_RANGES]
            .iter()
            .all(|o| *o == Outcome::Pending));
        assert_eq!(outcomes[MAX_RANGES], Outcome::Invalid);
        for i in 0..1000usize {
            add6(&mut r, &frag6(2, 0, i * 8, true, &[0; 8]), &mut out);
        }
        let d = r
            .datagrams
            .iter()
            .find(|d| matches!(d.key, Key::V6 { ident: 2, .. }));
        assert_eq!(d.map(|d| d.ranges.len()), Some(1));
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
