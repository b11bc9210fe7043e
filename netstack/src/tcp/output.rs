//! Segments out: data within the windows, loss recovery's retransmissions, ACKs, SYNs, RSTs,
//! and the segment built into its frame on the egress path.

use std::io;

use super::conn::Recovery;
use super::*;
use crate::offload::{GsoKind, PayloadOffload, TCP_CHECKSUM_OFFSET};
use crate::stack::IpPayload;
use crate::time::Instant;
use crate::wire::tcp::flags;
use crate::wire::{ipv6, IpAddress, IpProtocol, SeqNumber, TcpRepr};

impl<E: Env> Cx<'_, E> {
    /// What follows the guest's segments on a connection: its data to the host, a reset after
    /// a failed write, new data and the ACK it is owed, the host socket's interest.
    pub(super) fn after_input(&mut self, now: Instant, conn: &mut TcpConn) {
        self.flush_to_host(conn);
        self.check_host_write(now, conn);
        self.output(now, conn);
        self.ack_if_owed(now, conn);
        self.update_interest(conn);
    }

    /// Sends the ACK the guest is owed now, or arms the delayed-ACK timer.
    pub(super) fn ack_if_owed(&mut self, now: Instant, conn: &mut TcpConn) {
        if !conn.ack_owed || conn.state == TcpState::Closed {
            return;
        }
        if conn.ack_now {
            self.send_ack(now, conn);
        } else if conn.delack.is_none() {
            conn.delack = Some(now + DELAYED_ACK);
        }
    }

    /// Starts loss recovery: reduces the window and resends the first missing segment at once
    /// (RFC 5681 §3.2 step 3, RFC 6675 §5 step 3); `output` sends the rest as the congestion
    /// window allows.
    pub(super) fn enter_recovery(&mut self, now: Instant, conn: &mut TcpConn, timeout: bool) {
        let flight = conn.snd_nxt - conn.snd_una;
        if timeout {
            let first = !conn.recovery.is_some_and(|r| r.timeout);
            conn.cc.on_timeout(flight, first);
            // RFC 2018 §8: after a timeout the SACKed bits are suspect (the guest may renege).
            conn.sacks.clear();
        } else {
            conn.cc.on_fast_loss(flight);
        }
        conn.recovery = Some(Recovery {
            point: conn.snd_nxt,
            timeout,
        });
        conn.recover = conn.snd_nxt;
        conn.high_rxt = conn.snd_una;
        conn.rtt_probe = None;
        self.retransmit_next(now, conn);
    }

    /// Resends the first hole at or after `high_rxt` that recovery presumes lost; false when
    /// there is none.
    pub(super) fn retransmit_next(&mut self, now: Instant, conn: &mut TcpConn) -> bool {
        let from = conn.high_rxt.max(conn.snd_una);
        let Some((seq, len)) = conn.sacks.next_hole(from, conn.lost_end()) else {
            return false;
        };
        let offset = seq - conn.snd_una;
        let data = conn
            .to_guest
            .len()
            .saturating_sub(offset)
            .min(len)
            .min(conn.seg_size());
        // The FIN is the sequence number after the data.
        let fin = conn.fin_sent && offset + data == conn.to_guest.len() && len > data;
        if data == 0 && !fin {
            return false;
        }
        if !self.send_data(now, conn, seq, data, fin) {
            return false;
        }
        self.core.stats().tcp_retransmitted_segments += 1;
        conn.high_rxt = seq + data + usize::from(fin);
        if conn.deadline.is_none() {
            conn.deadline = Some(now + conn.rto);
        }
        true
    }

    /// Sends what the windows allow: in recovery the holes first (RFC 6675 §5 NextSeg rule 1),
    /// then new data, then our FIN when the host is done.
    pub(super) fn output(&mut self, now: Instant, conn: &mut TcpConn) {
        if matches!(
            conn.state,
            TcpState::Connecting | TcpState::SynSent | TcpState::SynReceived | TcpState::Closed
        ) {
            return;
        }
        if conn.recovery.is_some() {
            while conn.pipe() < conn.cc.cwnd && self.retransmit_next(now, conn) {}
        }
        if conn.snd_nxt == conn.snd_una {
            let idle = congestion::idle_since(conn.last_send, now);
            conn.cc.on_idle(idle, conn.rto);
        }
        let seg_size = conn.seg_size();
        let burst = self.burst(conn);
        loop {
            let in_flight = conn.snd_nxt - conn.snd_una;
            let unsent = conn.unsent();
            let window_left = conn.snd_wnd.saturating_sub(in_flight);
            let mut n = unsent.min(window_left).min(burst);
            if n == 0 {
                conn.cwnd_limited = false;
                break;
            }
            // Sender silly-window avoidance (RFC 9293 §3.8.6.2.1, RFC 1122 §4.2.3.4), as Linux's
            // tcp_snd_wnd_test: a segment shorter than a full one only when it carries all that
            // is queued, or when nothing is in flight (no ACK would come to open the window).
            // Filling the last bytes of a window with a sliver costs the guest a whole receive
            // buffer for a few bytes; under memory pressure it then prunes and drops in-window
            // data (TCPRcvQDrop), which looked like loss to us.
            if n < seg_size && n < unsent && in_flight > 0 {
                conn.cwnd_limited = false;
                break;
            }
            if n > seg_size && n < unsent {
                // A large segment ends on a segment boundary too (its last piece no sliver).
                n -= n % seg_size;
            }
            // The congestion window takes whole segments (no silly small ones while more waits).
            let room = conn.cc.cwnd.saturating_sub(conn.pipe());
            if n > room {
                n = room / seg_size * seg_size;
                if n == 0 {
                    conn.cwnd_limited = true;
                    break;
                }
            }
            let seq = conn.snd_nxt;
            if !self.send_data(now, conn, seq, n, false) {
                break;
            }
            conn.snd_nxt = conn.snd_nxt + n;
            if conn.rtt_probe.is_none() && conn.recovery.is_none() {
                conn.rtt_probe = Some((conn.snd_nxt, now));
            }
            if conn.deadline.is_none() {
                conn.deadline = Some(now + conn.rto);
            }
        }
        // RFC 9293 §3.8.6.1: with data waiting, nothing in flight and a zero window, a lost window
        // update would stall both sides; the persist timer probes the window.
        if conn.unsent() > 0 && conn.snd_nxt == conn.snd_una && conn.snd_wnd == 0 {
            conn.deadline.get_or_insert(now + conn.rto);
        }
        let all_sent = conn.unsent() == 0;
        if conn.host_eof && all_sent && !conn.fin_sent {
            let seq = conn.snd_nxt;
            if !self.send_data(now, conn, seq, 0, true) {
                return;
            }
            conn.fin_sent = true;
            conn.snd_nxt = conn.snd_nxt + 1;
            conn.deadline.get_or_insert(now + conn.rto);
            match conn.state {
                TcpState::Established => conn.set_state(TcpState::FinWait1),
                TcpState::CloseWait => conn.set_state(TcpState::LastAck),
                _ => {}
            }
        }
    }

    /// The most new data one segment may carry: a whole number of segments up to a 64 KiB packet
    /// when the guest takes TSO for the family, one segment otherwise (and while urgent data is
    /// pending: the urgent pointer is per segment).
    pub(super) fn burst(&self, conn: &TcpConn) -> usize {
        let seg_size = conn.seg_size();
        let tso = match conn.key.guest.0 {
            IpAddress::V4(_) => self.core.offloads().tso4,
            IpAddress::V6(_) => self.core.offloads().tso6,
        };
        if !tso || conn.guest_urgent.is_some() {
            return seg_size;
        }
        // Room for the largest IP and TCP headers inside a 65535-byte IP packet.
        const MAX_PAYLOAD: usize = 65535 - ipv6::HEADER_LEN - 60;
        (MAX_PAYLOAD / seg_size).max(1) * seg_size
    }

    pub(super) fn send_syn_ack(&mut self, now: Instant, conn: &mut TcpConn) {
        let mss = conn.key.mss_ceiling(self.core.config().mtu);
        let window = conn.offer(self.budget_room()).min(usize::from(u16::MAX)) as u16;
        let repr = TcpRepr {
            max_seg_size: Some(mss.min(usize::from(u16::MAX)) as u16),
            window_scale: conn.scaling.then_some(WINDOW_SHIFT),
            sack_permitted: conn.sack_ok,
            timestamp: conn.ts.map(|t| (conn.ts_val(now), t.recent)),
            ..conn
                .key
                .segment(conn.iss, Some(conn.rcv_nxt), flags::SYN, window)
        };
        conn.adv_edge = conn.rcv_nxt + usize::from(window);
        self.emit(now, conn.key, &repr);
    }

    /// Our SYN offers the MSS and the options the connection allows (all by default: window
    /// scale, SACK, timestamps).
    pub(super) fn send_syn(&mut self, now: Instant, conn: &TcpConn) {
        let mss = conn.key.mss_ceiling(self.core.config().mtu);
        let window = conn.offer(self.budget_room()).min(usize::from(u16::MAX)) as u16;
        let allowed = conn.allowed;
        let repr = TcpRepr {
            max_seg_size: Some(mss.min(usize::from(u16::MAX)) as u16),
            window_scale: allowed.window_scale.then_some(WINDOW_SHIFT),
            sack_permitted: allowed.sack,
            timestamp: allowed
                .timestamps
                .then(|| (conn.ts_val(now).wrapping_add(conn.iss.0.rotate_left(13)), 0)),
            ..conn.key.segment(conn.iss, None, flags::SYN, window)
        };
        self.emit(now, conn.key, &repr);
    }

    /// The header of a segment on a synchronized connection: it acknowledges everything received
    /// (so any ACK the guest is owed goes with it), offers the window, echoes the timestamp and
    /// reports held out-of-order data in as many SACK blocks as fit beside `payload_len` bytes.
    pub(super) fn header(
        &mut self,
        now: Instant,
        conn: &mut TcpConn,
        seq: SeqNumber,
        flags: u8,
        payload_len: usize,
    ) -> TcpRepr<'static> {
        let offer = conn.offer(self.budget_room());
        let shift = if conn.scaling { WINDOW_SHIFT } else { 0 };
        let field = (offer >> shift).min(usize::from(u16::MAX)) as u16;
        let mut repr = conn.key.segment(seq, Some(conn.rcv_nxt), flags, field);
        repr.timestamp = conn.ts.map(|t| (conn.ts_val(now), t.recent));
        if conn.sack_ok && !conn.ooo.is_empty() {
            let fixed = if conn.ts.is_some() {
                TIMESTAMP_OPTION_LEN
            } else {
                0
            };
            let room = conn.mss.saturating_sub(fixed + payload_len);
            let fit = room.saturating_sub(4) / 8;
            for (slot, b) in repr
                .sack_ranges
                .iter_mut()
                .zip(conn.ooo.sack_blocks())
                .take(fit)
            {
                *slot = b;
            }
        }
        conn.last_ack_sent = conn.rcv_nxt;
        conn.adv_edge = conn.rcv_nxt + offer;
        conn.ack_owed = false;
        conn.ack_now = false;
        conn.delack = None;
        conn.rcv_unacked = 0;
        repr
    }

    pub(super) fn send_ack(&mut self, now: Instant, conn: &mut TcpConn) {
        let repr = self.header(now, conn, conn.snd_nxt, 0, 0);
        self.emit(now, conn.key, &repr);
    }

    /// A segment carrying `len` bytes of `to_guest` from sequence number `seq` (and FIN when
    /// `fin`). False when it could not be queued: nothing was sent and the caller must not count
    /// it as sent. A full egress queue parks the connection until the queue drains
    /// ([`Stack::tcp_resume_blocked`]); any other refusal (the guest's MAC unknown) is retried on
    /// the retransmission timer.
    pub(super) fn send_data(
        &mut self,
        now: Instant,
        conn: &mut TcpConn,
        seq: SeqNumber,
        len: usize,
        fin: bool,
    ) -> bool {
        let (queue, room) = self.core.tx_room_for_flow(conn.key.flow_hash());
        if room == 0 {
            self.core.stats().tcp_queue_waits += 1;
            if !conn.queue_blocked {
                conn.queue_blocked = true;
                self.book.blocked.push((conn.key, queue));
            }
            self.book.blocked_queues |= 1 << queue;
            return false;
        }
        let offset = seq - conn.snd_una;
        let push = if len > 0 && offset + len == conn.to_guest.len() {
            flags::PSH
        } else {
            0
        };
        // RFC 9293 §3.8.5: URG with the pointer just past the urgent byte, when it is in this
        // segment (or, as Linux does, in a later one still: the pointer may lie beyond).
        let urgent = conn
            .guest_urgent
            .filter(|u| !u.is_before(seq))
            .map(|u| u - seq + 1);
        let flags = if fin { flags::FIN | push } else { push } | urgent.map_or(0, |_| flags::URG);
        let mut header = self.header(now, conn, seq, flags, len);
        header.urgent_at = urgent.map_or(0, |u| u.min(usize::from(u16::MAX)) as u16);
        let seg_size = conn.seg_size();
        let payload = conn.to_guest.slices(offset, len);
        // The data stays in the send buffer until the device gathers it (see `PayloadRef`).
        let tail = (len > 0).then_some(PayloadRef {
            key: conn.key,
            conn: conn.id,
            seq,
            len,
        });
        if !self.emit_segments(now, conn.key, &header, payload, seg_size, tail) {
            conn.deadline.get_or_insert(now + conn.rto);
            return false;
        }
        conn.last_send = Some(now);
        true
    }

    /// The host could not connect for the guest's SYN (sequence number `isn`): what a real
    /// network would show the guest. A refusal is a RST; an unreachable host or network is the
    /// ICMP error a router would send (RFC 1122 §4.2.3.9: a SYN-SENT connection may abort on
    /// it, and Linux does, with EHOSTUNREACH or ENETUNREACH).
    pub(super) fn refuse(&mut self, now: Instant, key: ConnKey, isn: SeqNumber, e: &io::Error) {
        if e.kind() == io::ErrorKind::ConnectionRefused || !crate::udp::is_icmp_error(e) {
            let syn = key.segment(isn, None, flags::SYN, 0);
            self.send_rst_for(now, key, &syn);
            return;
        }
        // The quoted SYN: the first 8 bytes of TCP (ports and sequence number, which the guest
        // checks against its connection) behind its IP header.
        let mut tcp8 = [0u8; 8];
        tcp8[0..2].copy_from_slice(&key.guest.1.to_be_bytes());
        tcp8[2..4].copy_from_slice(&key.remote.1.to_be_bytes());
        tcp8[4..8].copy_from_slice(&isn.0.to_be_bytes());
        let kind = crate::udp::unreachable_kind(e);
        self.core.unreachable_to_guest(
            now,
            kind,
            key.guest.0,
            key.remote.0,
            IpProtocol::Tcp,
            &tcp8,
        );
    }

    /// RST for the guest's side of `conn` (the host side refused, reset or timed out).
    pub(super) fn reset_guest(&mut self, now: Instant, conn: &TcpConn) {
        let repr = conn
            .key
            .segment(conn.snd_nxt, Some(conn.rcv_nxt), flags::RST, 0);
        self.core.stats().tcp_resets_sent += 1;
        self.emit(now, conn.key, &repr);
    }

    /// RFC 9293 §3.10.7.1: the RST answering a segment for no connection.
    pub(super) fn send_rst_for(&mut self, now: Instant, key: ConnKey, seg: &TcpRepr) {
        let (seq, ack) = match seg.ack_number {
            Some(a) => (a, None),
            None => (SeqNumber(0), Some(seg.seq_number + seg.segment_len())),
        };
        let repr = key.segment(seq, ack, flags::RST, 0);
        self.core.stats().tcp_resets_sent += 1;
        self.emit(now, key, &repr);
    }

    pub(super) fn emit(&mut self, now: Instant, key: ConnKey, repr: &TcpRepr) {
        self.emit_segments(now, key, repr, (repr.payload, &[]), usize::MAX, None);
    }

    /// Queues a segment for the guest: `repr`'s header (its own payload is not used) and the
    /// payload in one or two slices (the send buffer wraps). With a `tail` (data from the send
    /// buffer) only the headers are written now and the device gathers the payload from the
    /// send buffer into the guest's buffers (its one copy); a frame that must be whole (parked
    /// until the guest's MAC is known) gets the payload copied in. With GUEST_CSUM the checksum
    /// is left partial; a payload larger than `segment_size` goes as one segmentation request
    /// (the caller checked that the guest takes TSO for the family).
    pub(super) fn emit_segments(
        &mut self,
        now: Instant,
        key: ConnKey,
        repr: &TcpRepr,
        payload: (&[u8], &[u8]),
        segment_size: usize,
        tail: Option<PayloadRef>,
    ) -> bool {
        let (src, dst) = (key.remote.0, key.guest.0);
        let partial = self.core.offloads().partial_checksum;
        let payload_len = payload.0.len() + payload.1.len();
        let segment_len = repr.header_len() + payload_len;
        let large = payload_len > segment_size;
        let offload = PayloadOffload {
            checksum_offset: partial.then_some(TCP_CHECKSUM_OFFSET),
            gso: large.then(|| {
                let kind = match dst {
                    IpAddress::V4(_) => GsoKind::Tcpv4,
                    IpAddress::V6(_) => GsoKind::Tcpv6,
                };
                (kind, segment_size as u16, repr.header_len() as u16)
            }),
            // Header, options and payload are all written by `emit` below.
            fills_payload: true,
        };
        let segment = Segment {
            repr,
            payload,
            ends: (src, dst),
            partial,
            tail,
        };
        let sent = self.core.send_ip(
            now,
            (src, dst),
            IpProtocol::Tcp,
            segment_len,
            offload,
            segment,
        );
        if sent {
            self.core.stats().tcp_tx_segments += 1;
            if large {
                self.core.stats().tcp_tx_large_segments += 1;
            }
        }
        sent
    }
}

/// A TCP segment as the IP layer writes it into its frame: the header from `repr`, the payload
/// from the send buffer (or `repr` itself for a segment with no `tail`), copied in only when the
/// frame must be whole.
struct Segment<'a> {
    repr: &'a TcpRepr<'a>,
    payload: (&'a [u8], &'a [u8]),
    /// (source, destination) for the pseudo-header.
    ends: (IpAddress, IpAddress),
    partial: bool,
    tail: Option<PayloadRef>,
}

impl IpPayload for Segment<'_> {
    fn tail(&self) -> Option<PayloadRef> {
        self.tail
    }

    fn write(self, b: &mut [u8]) {
        let (first, second) = self.payload;
        let at = self.repr.header_len();
        let len = at + first.len() + second.len();
        b[at..at + first.len()].copy_from_slice(first);
        b[at + first.len()..len].copy_from_slice(second);
        let (src, dst) = self.ends;
        self.repr
            .emit_around_payload(&mut b[..len], src, dst, self.partial);
    }

    fn write_head(self, b: &mut [u8]) {
        let (src, dst) = self.ends;
        self.repr
            .emit_header_for(b, src, dst, self.partial, self.payload);
    }
}
