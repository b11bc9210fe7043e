//! Segments in: what a guest segment does to its connection (RFC 9293 §3.10.7), the ACK and
//! SACK processing that drives loss detection, and data into the host-bound buffer.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use log::{debug, trace};

use super::ooo::Held;
use super::*;
use crate::host::HostIo;
use crate::time::{Duration, Instant};
use crate::wire::tcp::flags;
use crate::wire::{IpAddress, SeqNumber, TcpRepr};

impl<E: Env> Cx<'_, E> {
    /// Where a guest connection goes on the host; `None`: nothing serves it (RST).
    pub(super) fn host_destination(&self, dst: IpAddress, port: u16) -> Option<SocketAddr> {
        let dst = match dst {
            IpAddress::V4(d) => d,
            IpAddress::V6(d) => return self.core.ipv6_host_destination(d, port),
        };
        if dst == self.core.config().gateway_ipv4 {
            return self
                .core
                .config()
                .map_gateway_to_loopback
                .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        if dst == self.core.config().dns_ipv4 {
            // DNS over TCP (RFC 7766) goes to the same upstream as over UDP.
            return (port == 53)
                .then(|| self.core.config().dns_upstreams.first().copied())
                .flatten();
        }
        Some(SocketAddr::from((Ipv4Addr::from(dst), port)))
    }

    /// RFC 9293 §3.10.7.4, for an existing connection.
    pub(super) fn segment(&mut self, now: Instant, conn: &mut TcpConn, repr: &TcpRepr) {
        conn.last_heard = now;
        conn.keepalive_probes = 0;
        if repr.flags & flags::RST != 0 {
            // Accept a RST in the window (RFC 5961 §3 would ask for an exact match and a challenge
            // ACK otherwise; the guest is not an off-path attacker).
            let in_window = conn.state == TcpState::SynSent
                || (!repr.seq_number.is_before(conn.rcv_nxt)
                    && repr
                        .seq_number
                        .is_before(conn.rcv_nxt + conn.rcv_wnd().max(1)));
            if in_window {
                debug!("tcp: guest reset {:?}", conn.key);
                self.release(conn, true);
                conn.set_state(TcpState::Closed);
            }
            return;
        }
        if conn.state == TcpState::Connecting {
            // A retransmitted SYN while the host connects: nothing to say yet.
            return;
        }
        if conn.state == TcpState::SynSent {
            // RFC 9293 §3.10.7.3: the guest's SYN-ACK for our SYN.
            let acks_syn = repr.ack_number == Some(conn.iss + 1);
            if repr.flags & flags::SYN != 0 && acks_syn {
                conn.negotiate(repr, conn.key.mss_ceiling(self.core.config().mtu));
                conn.snd_una = conn.iss + 1;
                conn.retries = 0;
                conn.rto = INITIAL_RTO;
                conn.deadline = None;
                conn.set_state(TcpState::Established);
                conn.ack_owed = true;
                conn.ack_now = true;
            } else if repr.ack_number.is_some() && !acks_syn {
                // RFC 9293 §3.10.7.3: an ACK for something else is answered with
                // <SEQ=SEG.ACK><CTL=RST>.
                self.send_rst_for(now, conn.key, repr);
            }
            return;
        }
        if repr.flags & flags::SYN != 0 {
            // A retransmitted SYN (our SYN-ACK was lost): send it again.
            if conn.state == TcpState::SynReceived && repr.seq_number + 1 == conn.rcv_nxt {
                self.send_syn_ack(now, conn);
            }
            return;
        }
        // PAWS (RFC 7323 §5.3): a segment whose timestamp is older than the one we echo is an old
        // duplicate.
        if let (Some(ts), Some((val, _))) = (conn.ts, repr.timestamp) {
            if (val.wrapping_sub(ts.recent) as i32) < 0 {
                self.core.stats().drop_tcp_paws += 1;
                conn.ack_owed = true;
                conn.ack_now = true;
                return;
            }
        }
        // RFC 9293 §3.10.7.4 first check: is the segment in the window? If not, ACK and drop it
        // (this also answers keepalive probes, which sit one byte before the window). With a
        // zero window a segment at RCV.NXT still carries a valid ACK.
        let seq = repr.seq_number;
        let seg_len = repr.segment_len();
        let wnd = conn.rcv_wnd();
        let in_window =
            |s: SeqNumber| !s.is_before(conn.rcv_nxt) && s.is_before(conn.rcv_nxt + wnd);
        let acceptable = match (seg_len, wnd) {
            (0, 0) => seq == conn.rcv_nxt,
            (0, _) => in_window(seq),
            (_, 0) => false,
            _ => in_window(seq) || in_window(seq + (seg_len - 1)),
        };
        let zero_window_ack = !acceptable && wnd == 0 && seq == conn.rcv_nxt;
        if !acceptable {
            if !repr.payload.is_empty() {
                if zero_window_ack {
                    self.core.stats().drop_tcp_window_full += 1;
                } else {
                    self.core.stats().tcp_duplicate_segments += 1;
                }
            }
            conn.ack_owed = true;
            conn.ack_now = true;
            if !zero_window_ack {
                return;
            }
        }
        // RFC 7323 §4.3: TS.Recent follows the segment that covers the last ACK we sent.
        if let (Some(ts), Some((val, _))) = (conn.ts.as_mut(), repr.timestamp) {
            if !seq.is_after(conn.last_ack_sent) {
                ts.recent = val;
            }
        }
        let Some(ack) = repr.ack_number else {
            return;
        };
        self.process_ack(now, conn, repr, ack);
        if conn.state == TcpState::Closed || !acceptable {
            return;
        }
        self.receive(now, conn, repr);
    }

    /// The ACK field and SACK blocks of an acceptable segment: what the guest holds of ours.
    pub(super) fn process_ack(
        &mut self,
        now: Instant,
        conn: &mut TcpConn,
        repr: &TcpRepr,
        ack: SeqNumber,
    ) {
        let acceptable = ack.is_after(conn.snd_una) && !ack.is_after(conn.snd_nxt);
        if conn.state == TcpState::SynReceived && !acceptable {
            // RFC 9293 §3.10.7.4: an unacceptable ACK in SYN-RECEIVED is answered with
            // <SEQ=SEG.ACK><CTL=RST>.
            self.send_rst_for(now, conn.key, repr);
            return;
        }
        if ack.is_after(conn.snd_nxt) {
            // Acknowledges what we never sent: RFC 9293 says send an ACK and drop.
            conn.ack_owed = true;
            conn.ack_now = true;
            return;
        }
        let window = usize::from(repr.window_len) << if conn.scaling { conn.snd_shift } else { 0 };
        if conn.sack_ok {
            for block in repr.sack_ranges.iter().flatten() {
                self.core.stats().tcp_sack_blocks_received += 1;
                conn.sacks.add(*block, conn.snd_una, conn.snd_nxt);
            }
        }
        let duplicate = ack == conn.snd_una
            && conn.snd_nxt != conn.snd_una
            && repr.payload.is_empty()
            && repr.flags & (flags::SYN | flags::FIN) == 0
            && window == conn.snd_wnd;
        if duplicate && conn.state != TcpState::SynReceived {
            conn.dup_acks += 1;
        }
        if conn.snd_wnd == 0 && ack == conn.snd_una {
            // The guest answers our window probes: it is alive, however long its window stays
            // shut (RFC 9293 §3.8.6.1).
            conn.retries = 0;
        }
        if ack.is_after(conn.snd_una) {
            let flight_before = conn.snd_nxt - conn.snd_una;
            let mut partial = false;
            let mut acked = ack - conn.snd_una;
            // RTT: the timed segment (microseconds), else the echoed timestamp (RFC 7323 §4.1:
            // valid for retransmitted data too, so Karn's rule does not starve the estimator).
            let mut sampled = false;
            if let Some((end, sent)) = conn.rtt_probe {
                if !ack.is_before(end) {
                    conn.sample_rtt(now - sent);
                    conn.rtt_probe = None;
                    sampled = true;
                }
            }
            if let (false, Some(_), Some((_, ecr))) = (sampled, conn.ts, repr.timestamp) {
                let ms = conn.ts_val(now).wrapping_sub(ecr);
                if ecr != 0 && ms < 60_000 {
                    conn.sample_rtt(Duration::from_millis(u64::from(ms)));
                }
            }
            if conn.state == TcpState::SynReceived {
                acked -= 1; // our SYN
                conn.set_state(TcpState::Established);
            }
            let data_acked = acked.min(conn.to_guest.len());
            conn.to_guest.consume(data_acked);
            if conn.guest_urgent.is_some_and(|u| u.is_before(ack)) {
                conn.guest_urgent = None;
            }
            let fin_acked = conn.fin_sent && ack == conn.snd_nxt && conn.to_guest.is_empty();
            conn.snd_una = ack;
            conn.sacks.advance(ack);
            conn.retries = 0;
            match conn.recovery {
                Some(rec) if !ack.is_before(rec.point) => {
                    // Recovered (RFC 6582 §3.2 step 3, "full ACK").
                    conn.recovery = None;
                    conn.dup_acks = 0;
                    if !rec.timeout {
                        let flight = conn.snd_nxt - conn.snd_una;
                        conn.cc.on_recovered(flight);
                    }
                    #[cfg(test)]
                    {
                        conn.recovered_with = Some((conn.cc.cwnd, conn.cc.ssthresh));
                    }
                }
                Some(rec) => {
                    // A partial ACK: the next hole is lost too (RFC 6582 §3.2 step 4; with SACK
                    // the scoreboard says which), resent at once. After a timeout, slow start
                    // goes on meanwhile.
                    conn.dup_acks = 0;
                    if rec.timeout {
                        conn.cc.on_ack(acked, true);
                    } else {
                        partial = true;
                    }
                }
                None => {
                    conn.dup_acks = 0;
                    conn.cc.on_ack(acked, conn.cwnd_limited);
                }
            }
            if conn.high_rxt.is_before(ack) {
                conn.high_rxt = ack;
            }
            if partial {
                self.retransmit_next(now, conn);
            }
            // RFC 6298 §5.3: restart the timer for what is still in flight, with the RTO as
            // measured (a backed-off RTO returns to it with the next sample).
            conn.deadline = (conn.snd_nxt != conn.snd_una).then(|| now + conn.rto);
            if fin_acked {
                match conn.state {
                    TcpState::FinWait1 => conn.set_state(TcpState::FinWait2),
                    TcpState::Closing => {
                        conn.set_state(TcpState::TimeWait);
                        conn.deadline = Some(now + TIME_WAIT);
                    }
                    TcpState::LastAck => conn.set_state(TcpState::Closed),
                    _ => {}
                }
            }
            trace!(
                "tcp {:?}: acked {data_acked} of {flight_before}, cwnd {}",
                conn.key,
                conn.cc.cwnd
            );
        }
        conn.snd_wnd = window;
        if conn.recovery.is_none()
            && conn.snd_nxt != conn.snd_una
            && !conn.snd_una.is_before(conn.recover)
            && matches!(
                conn.state,
                TcpState::Established
                    | TcpState::CloseWait
                    | TcpState::FinWait1
                    | TcpState::Closing
                    | TcpState::LastAck
            )
            && conn.loss_detected()
        {
            self.core.stats().tcp_fast_retransmits += 1;
            self.enter_recovery(now, conn, false);
        }
    }

    /// Data and FIN of an acceptable segment: in order to the host buffer, ahead of a gap to the
    /// out-of-order store.
    pub(super) fn receive(&mut self, now: Instant, conn: &mut TcpConn, repr: &TcpRepr) {
        let has_fin = repr.flags & flags::FIN != 0;
        if (repr.payload.is_empty() && !has_fin) || conn.guest_fin {
            return;
        }
        conn.ack_owed = true;
        // Trim what we have already (a retransmission overlapping new data).
        let mut seq = repr.seq_number;
        let mut payload = repr.payload;
        if seq.is_before(conn.rcv_nxt) {
            let skip = (conn.rcv_nxt - seq).min(payload.len());
            self.core.stats().tcp_duplicate_segments += 1;
            payload = &payload[skip..];
            seq = seq + skip;
        }
        // A large segment (the guest's TSO) counts by the segment size it stands for, as Linux
        // measures rcv_mss by gso_size: the ACK pace stays per two segments.
        let seg_len = match self.core.inbound().gso {
            Some(g) => repr.payload.len().min(usize::from(g.segment_size)),
            None => repr.payload.len(),
        };
        conn.rcv_mss = conn.rcv_mss.max(seg_len);
        // Trim what lies beyond the window we offered.
        let ahead = seq - conn.rcv_nxt;
        let room = conn.rcv_wnd().saturating_sub(ahead);
        let take = payload.len().min(room);
        if take < payload.len() {
            self.core.stats().drop_tcp_window_full += 1;
        }
        let fin_at = (has_fin && take == payload.len()).then(|| seq + take);
        if ahead > 0 {
            // Beyond a gap: hold it, and ACK at once so that the guest learns of the gap
            // (RFC 5681 §4.2) and its SACK blocks.
            conn.ack_now = true;
            match conn.ooo.insert(seq, &payload[..take]) {
                Held::Stored => self.core.stats().tcp_out_of_order_queued += 1,
                Held::Duplicate => self.core.stats().tcp_duplicate_segments += 1,
                Held::Full => {
                    self.core.stats().drop_tcp_out_of_order += 1;
                    return;
                }
            }
            if fin_at.is_some() {
                conn.ooo_fin = fin_at;
            }
            return;
        }
        if repr.flags & flags::URG != 0 && repr.urgent_at > 0 {
            // RFC 9293 §3.8.5 (and RFC 6093): the urgent pointer points just past the urgent byte,
            // as Linux and BSD send it. A byte beyond this segment is left to a later one.
            let skipped = repr.payload.len() - payload.len();
            let at = usize::from(repr.urgent_at) - 1;
            if at >= skipped && at - skipped < take {
                conn.host_urgent = Some(conn.to_host.len() + at - skipped);
                self.core.stats().tcp_urgent_from_guest += 1;
            }
        }
        let mut data = &payload[..take];
        if data.len() >= DIRECT_WRITE_MIN
            && conn.to_host.is_empty()
            && conn.host_urgent.is_none()
            && !conn.host_write_failed
        {
            // Nothing waits before these bytes: straight to the host socket from the guest's
            // frame (its TSO); only what the socket does not take now is buffered.
            match self
                .core
                .host()
                .tcp_send(conn.sock, &[io::IoSlice::new(data)])
            {
                Ok(n) => {
                    data = &data[n..];
                    self.core.stats().tcp_tx_host_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // As in `flush_to_host`: the guest is reset.
                    debug!("tcp {:?}: host write failed: {e}", conn.key);
                    conn.host_write_failed = true;
                    data = &[];
                }
            }
        }
        if !data.is_empty() {
            // From a frame in the ingress buffer: lent until the batch's write (see `tohost`).
            let lent = self
                .book
                .ingress
                .offset_of(data)
                .is_some_and(|at| conn.to_host.lend(at, data.len()));
            if lent {
                self.book.ingress.keep_current();
            } else {
                conn.to_host.copy(data);
                self.core.stats().tcp_tx_host_buffered_bytes += data.len() as u64;
            }
        }
        conn.rcv_nxt = conn.rcv_nxt + take;
        conn.rcv_unacked += take;
        if !conn.ooo.is_empty() {
            // Filling a gap is acknowledged at once (RFC 5681 §4.2).
            let moved = conn
                .ooo
                .drain_contiguous(conn.rcv_nxt, conn.to_host.copied_mut());
            conn.rcv_nxt = conn.rcv_nxt + moved;
            conn.ack_now = true;
            self.core.stats().tcp_tx_host_buffered_bytes += moved as u64;
        }
        let fin_at = match conn.ooo_fin {
            Some(f) if f == conn.rcv_nxt => Some(f),
            _ => fin_at.filter(|&f| f == conn.rcv_nxt),
        };
        if fin_at.is_some() {
            conn.rcv_nxt = conn.rcv_nxt + 1;
            conn.guest_fin = true;
            conn.ooo.clear();
            conn.ooo_fin = None;
            conn.ack_now = true;
            match conn.state {
                TcpState::Established => conn.set_state(TcpState::CloseWait),
                TcpState::FinWait1 => conn.set_state(TcpState::Closing),
                TcpState::FinWait2 => {
                    conn.set_state(TcpState::TimeWait);
                    conn.deadline = Some(now + TIME_WAIT);
                }
                _ => {}
            }
        }
        // RFC 5681 §4.2: at least every second full-sized segment.
        if conn.rcv_unacked >= 2 * conn.rcv_mss {
            conn.ack_now = true;
        }
        if conn.quick_acks > 0 {
            conn.quick_acks -= 1;
            conn.ack_now = true;
        }
    }

    /// The table is full: the oldest connection that never completed its handshake (the host's
    /// connect pending, or our SYN-ACK unanswered) makes room, as a SYN backlog drops its oldest
    /// entry under a SYN flood. Established connections are never evicted. False if there is
    /// none.
    pub(super) fn evict_embryonic(
        &mut self,
        now: Instant,
        conns: &mut HashMap<ConnKey, TcpConn>,
    ) -> bool {
        let oldest = conns
            .values()
            .filter(|c| matches!(c.state, TcpState::Connecting | TcpState::SynReceived))
            .min_by_key(|c| c.deadline)
            .map(|c| c.key);
        let Some(key) = oldest else {
            return false;
        };
        let Some(conn) = conns.get_mut(&key) else {
            return false;
        };
        self.core.stats().tcp_embryonic_evicted += 1;
        self.release(conn, true);
        self.reset_guest(now, conn);
        conn.set_state(TcpState::Closed);
        if self.settle(conn) {
            conns.remove(&key);
        }
        true
    }
}
