//! TCP segments (RFC 9293 §3.1) with the options a modern peer negotiates: MSS (RFC 9293 §3.7.1),
//! window scale and timestamps (RFC 7323), SACK-permitted and SACK blocks (RFC 2018).

use core::fmt;
use core::ops::{Add, Sub};

use super::checksum;
use super::{read_u16, read_u32, write_u16, write_u32, Error, IpAddress, Ipv4Address, Result};

/// The TCP payload length of an Ethernet frame carrying TCP directly in IPv4 (unfragmented) or
/// IPv6 (no extension header); `None` for anything else or a frame too short to say. Used to tell
/// what a lossy link dropped (data, or only headers).
pub fn frame_payload_len(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(14..)?;
    let ethertype = read_u16(frame, 12);
    let (segment, ip_len) = match ethertype {
        0x0800 if ip.len() >= 20 && ip[9] == 6 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let frag = read_u16(ip, 6) & 0x3fff;
            if frag != 0 || ihl < 20 {
                return None;
            }
            (
                ip.get(ihl..)?,
                usize::from(read_u16(ip, 2)).checked_sub(ihl)?,
            )
        }
        0x86dd if ip.len() >= 40 && ip[6] == 6 => (&ip[40..], usize::from(read_u16(ip, 4))),
        _ => return None,
    };
    let header = usize::from(*segment.get(12)? >> 4) * 4;
    // A large segment (TSO) has no meaningful length field: the frame says how long it is.
    let len = if ip_len == 0 {
        segment.len()
    } else {
        ip_len.min(segment.len())
    };
    len.checked_sub(header)
}

/// A sequence number: arithmetic wraps and comparisons are modulo 2^32 (RFC 9293 §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The distance from `other` to `self`, positive when `self` is after `other`.
    pub fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    pub fn is_before(self, other: SeqNumber) -> bool {
        self.diff(other) < 0
    }

    pub fn is_after(self, other: SeqNumber) -> bool {
        self.diff(other) > 0
    }

    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self.is_after(other) {
            self
        } else {
            other
        }
    }
}

impl Add<usize> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs as u32))
    }
}

impl Sub<SeqNumber> for SeqNumber {
    type Output = usize;
    /// The byte count from `rhs` to `self`; `self` must not be before `rhs`.
    fn sub(self, rhs: SeqNumber) -> usize {
        let d = self.diff(rhs);
        debug_assert!(d >= 0, "sequence {} before {}", self.0, rhs.0);
        d.max(0) as usize
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

pub const HEADER_LEN: usize = field::OPTIONS;
/// Options fill at most 40 bytes (data offset is four bits of 32-bit words).
pub const MAX_OPTIONS_LEN: usize = 40;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

mod kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMP: u8 = 8;
}

const PROTO_TCP: u8 = 6;

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Checks that the header and its options fit.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = TcpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hlen = p.header_len();
        if hlen < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hlen > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.b(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.b(), field::DST_PORT)
    }

    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(read_u32(self.b(), field::SEQ))
    }

    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(read_u32(self.b(), field::ACK))
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::DATA_OFF] >> 4) * 4
    }

    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }

    pub fn window_len(&self) -> u16 {
        read_u16(self.b(), field::WINDOW)
    }

    pub fn urgent_at(&self) -> u16 {
        read_u16(self.b(), field::URGENT)
    }

    pub fn options(&self) -> &[u8] {
        &self.b()[field::OPTIONS..self.header_len()]
    }

    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }

    /// The checksum over the IPv4 pseudo-header and the whole segment (RFC 9293 §3.1).
    pub fn verify_checksum_v4(&self, src: Ipv4Address, dst: Ipv4Address) -> bool {
        self.verify_checksum(src.into(), dst.into())
    }

    /// The checksum over the pseudo-header of either family and the whole segment.
    pub fn verify_checksum(&self, src: IpAddress, dst: IpAddress) -> bool {
        let seg = self.b();
        let sum = IpAddress::pseudo_header_sum(src, dst, PROTO_TCP, seg.len() as u32);
        checksum::finish(checksum::accumulate(sum, seg)) == 0
    }
}

impl<T: AsRef<[u8]>> fmt::Display for TcpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let fl = self.flags();
        let names = [
            (flags::SYN, "S"),
            (flags::ACK, "."),
            (flags::FIN, "F"),
            (flags::RST, "R"),
            (flags::PSH, "P"),
            (flags::URG, "U"),
        ];
        let shown: String = names
            .iter()
            .filter(|(b, _)| fl & b != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(
            f,
            "TCP {}>{} [{}] seq={} ack={} win={} len={}",
            self.src_port(),
            self.dst_port(),
            shown,
            self.seq_number(),
            self.ack_number(),
            self.window_len(),
            self.payload().len()
        )
    }
}

/// Up to three SACK blocks (with timestamps, four do not fit in 40 bytes).
pub type SackBlocks = [Option<(SeqNumber, SeqNumber)>; 3];

/// A TCP header as a value, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: SeqNumber,
    /// Present when the ACK flag is.
    pub ack_number: Option<SeqNumber>,
    /// SYN, FIN, RST, PSH, URG, ECE, CWR bits (ACK follows `ack_number`).
    pub flags: u8,
    pub window_len: u16,
    pub urgent_at: u16,
    pub max_seg_size: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack_ranges: SackBlocks,
    /// (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Parses a segment, verifying its checksum. Malformed options are an error (RFC 9293
    /// §3.1 lets a receiver drop such segments); unknown options are skipped.
    pub fn parse(
        p: &TcpPacket<&'a [u8]>,
        src: impl Into<IpAddress>,
        dst: impl Into<IpAddress>,
    ) -> Result<TcpRepr<'a>> {
        if !p.verify_checksum(src.into(), dst.into()) {
            return Err(Error::Checksum);
        }
        Self::parse_unverified(p)
    }

    /// [`TcpRepr::parse`] without the checksum: for a segment whose checksum the sender left
    /// partial, with its bytes trusted (see [`crate::offload`]).
    pub fn parse_unverified(p: &TcpPacket<&'a [u8]>) -> Result<TcpRepr<'a>> {
        let fl = p.flags();
        let mut r = TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: (fl & flags::ACK != 0).then(|| p.ack_number()),
            flags: fl & !flags::ACK,
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &p.buffer[p.header_len()..],
        };
        let mut opts: &[u8] = &p.buffer[field::OPTIONS..p.header_len()];
        while let Some((&k, rest)) = opts.split_first() {
            match k {
                kind::END => break,
                kind::NOP => opts = rest,
                _ => {
                    let len = usize::from(*rest.first().ok_or(Error::Truncated)?);
                    if len < 2 || len > opts.len() {
                        return Err(Error::Malformed);
                    }
                    let v = &opts[2..len];
                    match (k, v.len()) {
                        (kind::MSS, 2) => r.max_seg_size = Some(read_u16(v, 0)),
                        (kind::WINDOW_SCALE, 1) => r.window_scale = Some(v[0]),
                        (kind::SACK_PERMITTED, 0) => r.sack_permitted = true,
                        (kind::TIMESTAMP, 8) => {
                            r.timestamp = Some((read_u32(v, 0), read_u32(v, 4)))
                        }
                        (kind::SACK, n) if n % 8 == 0 => {
                            for (slot, b) in r.sack_ranges.iter_mut().zip(v.chunks_exact(8)) {
                                *slot =
                                    Some((SeqNumber(read_u32(b, 0)), SeqNumber(read_u32(b, 4))));
                            }
                        }
                        (kind::MSS | kind::WINDOW_SCALE | kind::SACK_PERMITTED, _)
                        | (kind::TIMESTAMP | kind::SACK, _) => return Err(Error::Malformed),
                        _ => {}
                    }
                    opts = &opts[len..];
                }
            }
        }
        Ok(r)
    }

    /// Length of the options other than SACK blocks, as emitted.
    fn fixed_options_len(&self) -> usize {
        let mut n = 0;
        if self.max_seg_size.is_some() {
            n += 4;
        }
        if self.window_scale.is_some() {
            n += 4; // NOP + 3
        }
        if self.sack_permitted {
            n += 4; // NOP NOP + 2
        }
        if self.timestamp.is_some() {
            n += 12; // NOP NOP + 10
        }
        n
    }

    /// The SACK blocks that are emitted: as many as fit in the 40 bytes of option space left
    /// by the other options (RFC 2018 §3: at most 3 with timestamps; Linux trims them the same
    /// way in `tcp_established_options`), so the data offset never overflows its four bits.
    fn emitted_sack_blocks(&self) -> impl Iterator<Item = &(SeqNumber, SeqNumber)> {
        let room = MAX_OPTIONS_LEN.saturating_sub(self.fixed_options_len() + 4) / 8;
        self.sack_ranges.iter().flatten().take(room)
    }

    fn options_len(&self) -> usize {
        let blocks = self.emitted_sack_blocks().count();
        let sack = if blocks > 0 { 4 + 8 * blocks } else { 0 }; // NOP NOP + 2 + blocks
        self.fixed_options_len() + sack
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Sequence space the segment occupies: payload plus one for SYN and for FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len()
            + usize::from(self.flags & flags::SYN != 0)
            + usize::from(self.flags & flags::FIN != 0)
    }

    /// Writes the header and the payload into `buf[..buffer_len]` and fills in the checksum (a
    /// payload already in the buffer goes through [`TcpRepr::emit_around_payload`]).
    pub fn emit_v4(&self, buf: &mut [u8], src: Ipv4Address, dst: Ipv4Address) {
        self.emit(buf, src.into(), dst.into())
    }

    /// [`TcpRepr::emit_v4`] for either family.
    pub fn emit(&self, buf: &mut [u8], src: IpAddress, dst: IpAddress) {
        let len = self.buffer_len();
        self.emit_inner(buf, len, src, dst, false, false);
    }

    /// Writes the header in front of a payload already in place: `buf` is the whole segment,
    /// `buf[header_len..]` its payload (gathered by the caller, `self.payload` is not used). The
    /// checksum is computed, or with `partial` left partial: the field then holds the folded
    /// pseudo-header sum, for the receiver (or a NIC) to complete (see [`crate::offload`]).
    pub fn emit_around_payload(
        &self,
        buf: &mut [u8],
        src: IpAddress,
        dst: IpAddress,
        partial: bool,
    ) {
        let len = buf.len();
        self.emit_inner(buf, len, src, dst, true, partial);
    }

    /// Writes the header alone into `buf[..header_len]` for a segment whose payload stays
    /// elsewhere, in one or two slices (a send buffer that wraps), and is gathered behind the
    /// header later (`self.payload` is not used). The checksum covers those slices; with
    /// `partial` it is left partial as in [`TcpRepr::emit_around_payload`].
    pub fn emit_header_for(
        &self,
        buf: &mut [u8],
        src: IpAddress,
        dst: IpAddress,
        partial: bool,
        payload: (&[u8], &[u8]),
    ) {
        let hlen = self.header_len();
        let total = hlen + payload.0.len() + payload.1.len();
        let buf = &mut buf[..hlen];
        self.emit_header(buf, hlen);
        let sum = IpAddress::pseudo_header_sum(src, dst, PROTO_TCP, total as u32);
        let sum = if partial {
            !checksum::finish(sum)
        } else {
            let pieces: [&[u8]; 3] = [buf, payload.0, payload.1];
            checksum::finish(checksum::accumulate_pieces(sum, &pieces))
        };
        write_u16(buf, field::CHECKSUM, sum);
    }

    fn emit_inner(
        &self,
        buf: &mut [u8],
        len: usize,
        src: IpAddress,
        dst: IpAddress,
        payload_in_place: bool,
        partial: bool,
    ) {
        let hlen = self.header_len();
        let buf = &mut buf[..len];
        self.emit_header(buf, hlen);
        if !payload_in_place {
            buf[hlen..].copy_from_slice(self.payload);
        }
        let sum = IpAddress::pseudo_header_sum(src, dst, PROTO_TCP, buf.len() as u32);
        let sum = if partial {
            !checksum::finish(sum)
        } else {
            checksum::finish(checksum::accumulate(sum, buf))
        };
        write_u16(buf, field::CHECKSUM, sum);
    }

    /// Writes the header and options into `buf[..hlen]`, the checksum field zero.
    fn emit_header(&self, buf: &mut [u8], hlen: usize) {
        write_u16(buf, field::SRC_PORT, self.src_port);
        write_u16(buf, field::DST_PORT, self.dst_port);
        write_u32(buf, field::SEQ, self.seq_number.0);
        write_u32(buf, field::ACK, self.ack_number.map_or(0, |a| a.0));
        buf[field::DATA_OFF] = ((hlen / 4) as u8) << 4;
        let ack = if self.ack_number.is_some() {
            flags::ACK
        } else {
            0
        };
        buf[field::FLAGS] = (self.flags & !flags::ACK) | ack;
        write_u16(buf, field::WINDOW, self.window_len);
        write_u16(buf, field::CHECKSUM, 0);
        write_u16(buf, field::URGENT, self.urgent_at);
        let mut at = field::OPTIONS;
        let mut put = |bytes: &[u8]| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        if let Some(mss) = self.max_seg_size {
            let m = mss.to_be_bytes();
            put(&[kind::MSS, 4, m[0], m[1]]);
        }
        if let Some(ws) = self.window_scale {
            put(&[kind::NOP, kind::WINDOW_SCALE, 3, ws]);
        }
        if self.sack_permitted {
            put(&[kind::NOP, kind::NOP, kind::SACK_PERMITTED, 2]);
        }
        if let Some((val, ecr)) = self.timestamp {
            put(&[kind::NOP, kind::NOP, kind::TIMESTAMP, 10]);
            put(&val.to_be_bytes());
            put(&ecr.to_be_bytes());
        }
        let blocks = self.emitted_sack_blocks().count();
        if blocks > 0 {
            put(&[kind::NOP, kind::NOP, kind::SACK, (2 + 8 * blocks) as u8]);
            for (l, r) in self.emitted_sack_blocks() {
                put(&l.0.to_be_bytes());
                put(&r.0.to_be_bytes());
            }
        }
        debug_assert_eq!(at, hlen);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_payload_len_tells_data_from_headers() {
        let mut v4 = vec![0u8; 14 + 20 + 32 + 100];
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        v4[14] = 0x45;
        v4[16..18].copy_from_slice(&(20u16 + 32 + 100).to_be_bytes());
        v4[14 + 9] = 6;
        v4[14 + 20 + 12] = 8 << 4;
        assert_eq!(super::frame_payload_len(&v4), Some(100));
        v4[14 + 6] = 0x20; // more fragments: not a whole segment
        assert_eq!(super::frame_payload_len(&v4), None);
        let mut v6 = vec![0u8; 14 + 40 + 20];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[14 + 4..14 + 6].copy_from_slice(&20u16.to_be_bytes());
        v6[14 + 6] = 6;
        v6[14 + 40 + 12] = 5 << 4;
        assert_eq!(super::frame_payload_len(&v6), Some(0));
        assert_eq!(super::frame_payload_len(&v6[..20]), None);
        assert_eq!(super::frame_payload_len(&[0u8; 4]), None);
    }

    use super::*;

    const SRC: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
    const DST: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

    fn syn() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq_number: SeqNumber(0xfffffff0),
            ack_number: None,
            flags: flags::SYN,
            window_len: 64240,
            urgent_at: 0,
            max_seg_size: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack_ranges: [None; 3],
            timestamp: Some((1, 0)),
            payload: &[],
        }
    }

    #[test]
    fn linux_syn_roundtrip() {
        let r = syn();
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut buf, SRC, DST);
        // 20 + MSS 4 + WS 4 + SACKOK 4 + TS 12 = 44 bytes, like a Linux SYN (40 + NOP padding).
        assert_eq!(buf.len(), 44);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum_v4(SRC, DST));
        assert_eq!(TcpRepr::parse(&p, SRC, DST).unwrap(), r);
        assert_eq!(r.segment_len(), 1);
    }

    #[test]
    fn data_with_sack_blocks_roundtrip() {
        let r = TcpRepr {
            flags: flags::PSH,
            ack_number: Some(SeqNumber(5)),
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [
                Some((SeqNumber(100), SeqNumber(200))),
                Some((SeqNumber(300), SeqNumber(400))),
                None,
            ],
            timestamp: Some((7, 8)),
            payload: b"hello",
            ..syn()
        };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut buf, SRC, DST);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert_eq!(TcpRepr::parse(&p, SRC, DST).unwrap(), r);
    }

    /// Found by the `wire` fuzz target: timestamps, SACK-permitted and three SACK blocks parse
    /// from 38 option bytes but would take 44 as emitted (with the NOP padding), overflowing
    /// the data offset. The emitter keeps the blocks that fit.
    #[test]
    fn sack_blocks_are_trimmed_to_the_option_space() {
        let three = [
            Some((SeqNumber(100), SeqNumber(200))),
            Some((SeqNumber(300), SeqNumber(400))),
            Some((SeqNumber(500), SeqNumber(600))),
        ];
        let r = TcpRepr {
            flags: flags::PSH,
            ack_number: Some(SeqNumber(5)),
            max_seg_size: Some(1460),
            window_scale: None,
            sack_permitted: true,
            sack_ranges: three,
            timestamp: Some((7, 8)),
            payload: b"hello",
            ..syn()
        };
        assert_eq!(r.header_len(), HEADER_LEN + 40);
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut buf, SRC, DST);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        let back = TcpRepr::parse(&p, SRC, DST).unwrap();
        assert_eq!(back.payload, b"hello");
        assert_eq!(back.sack_ranges, [three[0], three[1], None]);
        assert_eq!(back.timestamp, Some((7, 8)));
        assert_eq!(back.max_seg_size, Some(1460));
        // With room for all three, all three go.
        let r = TcpRepr {
            max_seg_size: None,
            sack_permitted: false,
            ..r
        };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut buf, SRC, DST);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p, SRC, DST).unwrap().sack_ranges, three);
    }

    #[test]
    fn malformed_segments() {
        let r = syn();
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut buf, SRC, DST);
        assert_eq!(
            TcpPacket::new_checked(&buf[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut short = buf.clone();
        short[12] = 0x40; // data offset 16 bytes
        assert_eq!(
            TcpPacket::new_checked(&short[..]).unwrap_err(),
            Error::Malformed
        );
        let mut bad_sum = buf.clone();
        bad_sum[4] ^= 1;
        let p = TcpPacket::new_checked(&bad_sum[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p, SRC, DST).unwrap_err(), Error::Checksum);
        // An MSS option with a wrong length.
        let mut bad_opt = buf.clone();
        bad_opt[21] = 3;
        bad_opt[16] = 0;
        bad_opt[17] = 0;
        let sum = {
            let s = checksum::pseudo_header_v4(SRC, DST, PROTO_TCP, bad_opt.len() as u32);
            checksum::finish(checksum::accumulate(s, &bad_opt))
        };
        bad_opt[16..18].copy_from_slice(&sum.to_be_bytes());
        let p = TcpPacket::new_checked(&bad_opt[..]).unwrap();
        assert_eq!(TcpRepr::parse(&p, SRC, DST).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let a = SeqNumber(0xffff_fff0);
        let b = a + 0x20;
        assert_eq!(b, SeqNumber(0x10));
        assert!(a.is_before(b) && b.is_after(a));
        assert_eq!(b - a, 0x20);
        assert_eq!(a.max(b), b);
    }
}
