//! One connection's state (RFC 9293 §3.3.2) and what can be said of it without the stack around
//! it: negotiated options, windows, RTT estimation (RFC 6298), the loss-recovery arithmetic
//! (RFC 6675 pipe, RFC 6582), which timer fires next.

use log::trace;

use super::congestion::NewReno;
use super::ooo::OutOfOrder;
use super::scoreboard::Scoreboard;
use super::sendbuf::SendBuffer;
use super::*;
use crate::config::{Keepalive, TcpOptions};
use crate::host::SocketId;
use crate::time::{Duration, Instant};
use crate::wire::{tcp, IpAddress, SeqNumber, TcpRepr};

/// RFC 9293 §3.3.2 states (plus `Connecting`: waiting for the host before the SYN-ACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Connecting,
    /// Our SYN to the guest is out (an inbound forward).
    SynSent,
    SynReceived,
    Established,
    CloseWait,
    LastAck,
    FinWait1,
    FinWait2,
    Closing,
    TimeWait,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub(super) guest: (IpAddress, u16),
    pub(super) remote: (IpAddress, u16),
}

/// RFC 7323 timestamps, when both sides offered them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timestamps {
    /// TS.Recent: the guest's value we echo (RFC 7323 §4.3).
    pub(super) recent: u32,
    /// Added to our millisecond clock, per connection (RFC 7323 §5.4 recommends a random offset).
    pub(super) offset: u32,
}

/// A loss recovery episode: until the guest acknowledges `point`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recovery {
    pub(super) point: SeqNumber,
    /// Started by the retransmission timer (everything in flight is presumed lost), not by
    /// duplicate ACKs or SACK.
    pub(super) timeout: bool,
}

#[derive(Debug)]
pub(crate) struct TcpConn {
    pub(super) key: ConnKey,
    /// Unique among the connections the table ever held (a 4-tuple may come back).
    pub(super) id: u64,
    pub(super) sock: SocketId,
    pub(super) state: TcpState,
    /// Guest's initial sequence number + 1 onward: the next byte we expect.
    pub(super) rcv_nxt: SeqNumber,
    pub(super) iss: SeqNumber,
    pub(super) snd_una: SeqNumber,
    /// The next new sequence number to send (never moves back: retransmissions are separate).
    pub(super) snd_nxt: SeqNumber,
    /// The guest's window in bytes (scaled).
    pub(super) snd_wnd: usize,
    pub(super) snd_shift: u8,
    /// Window scaling is on when the guest offered it (RFC 7323 §1.3).
    pub(super) scaling: bool,
    /// The guest's MSS: payload plus options per segment.
    pub(super) mss: usize,
    /// The guest offered SACK (RFC 2018 §2).
    pub(super) sack_ok: bool,
    pub(super) ts: Option<Timestamps>,
    /// The options this side takes up or offers, fixed when the connection opens (the stack's
    /// [`TcpOptions`] then; a change at run time applies to later connections).
    pub(super) allowed: TcpOptions,
    /// Bytes from `snd_una` on: sent or not, not yet acknowledged.
    pub(super) to_guest: SendBuffer,
    /// Guest data not yet written to the host (lent from the ingress buffer, or copied).
    pub(super) to_host: ToHost,
    /// Guest data beyond a gap, and a FIN that came with it.
    pub(super) ooo: OutOfOrder,
    pub(super) ooo_fin: Option<SeqNumber>,
    pub(super) host_eof: bool,
    pub(super) fin_sent: bool,
    pub(super) guest_fin: bool,
    pub(super) host_shut: bool,
    /// Index in `to_host` of an urgent byte from the guest, to be sent with MSG_OOB.
    pub(super) host_urgent: Option<usize>,
    /// Sequence number of an urgent byte from the host, marked URG towards the guest until acked.
    pub(super) guest_urgent: Option<SeqNumber>,
    /// The host socket is closed already (aborted on a reset).
    pub(super) released: bool,
    pub(super) rto: Duration,
    /// RFC 6298 §2: smoothed round-trip time and its variation, once measured.
    pub(super) srtt: Option<Duration>,
    pub(super) rttvar: Duration,
    /// The segment being timed: the sequence number that acknowledges it, and when it left
    /// (Karn: never a retransmitted one).
    pub(super) rtt_probe: Option<(SeqNumber, Instant)>,
    pub(super) dup_acks: usize,
    pub(super) retries: u32,
    /// Retransmission, persist, connect or TIME-WAIT deadline.
    pub(super) deadline: Option<Instant>,
    pub(super) sacks: Scoreboard,
    pub(super) cc: NewReno,
    pub(super) recovery: Option<Recovery>,
    /// RFC 6582 "recover": duplicate ACKs below it do not start another recovery.
    pub(super) recover: SeqNumber,
    /// Retransmitted up to here in the current recovery (RFC 6675 HighRxt).
    pub(super) high_rxt: SeqNumber,
    /// The congestion window was full when data last went out (RFC 7661).
    pub(super) cwnd_limited: bool,
    pub(super) last_send: Option<Instant>,
    /// ACK state towards the guest: what we last acknowledged and the window edge we offered.
    pub(super) last_ack_sent: SeqNumber,
    pub(super) adv_edge: SeqNumber,
    pub(super) ack_owed: bool,
    pub(super) ack_now: bool,
    pub(super) delack: Option<Instant>,
    pub(super) rcv_unacked: usize,
    /// The largest segment seen from the guest (Linux's rcv_mss).
    pub(super) rcv_mss: usize,
    pub(super) quick_acks: u32,
    /// A write to the host socket failed for good: both sides are reset.
    pub(super) host_write_failed: bool,
    /// Its egress queue was full when it had a segment to send: it waits in
    /// `Book::blocked` to be resumed when the queue drains.
    pub(super) queue_blocked: bool,
    /// Buffered bytes counted for it in `Book::buffered` when it was last settled.
    pub(super) accounted: usize,
    /// It waits in `Book::batch` for the end of the batch of guest frames.
    pub(super) batched: bool,
    /// (cwnd, ssthresh) as the last loss recovery ended, for tests of RFC 6582 §3.2 step 3 (later
    /// ACKs in the same batch grow the window again before a test can look).
    #[cfg(test)]
    pub(super) recovered_with: Option<(usize, usize)>,
    /// It stopped reading its host socket because the TCP memory budget was spent: it waits in
    /// `Book::starved`.
    pub(super) memory_starved: bool,
    /// Keepalive: when the guest last sent anything, and probes sent since.
    pub(super) last_heard: Instant,
    pub(super) keepalive_probes: u32,
    /// The deadline of its earliest live entry in the timer heap (see `timer::Timers`).
    pub(super) timer_at: Option<Instant>,
}

impl TcpConn {
    /// A connection with empty buffers and fresh timers; the caller sets what its opening knows.
    pub(super) fn new(
        key: ConnKey,
        id: u64,
        sock: SocketId,
        state: TcpState,
        iss: SeqNumber,
        now: Instant,
    ) -> Self {
        TcpConn {
            key,
            id,
            sock,
            state,
            rcv_nxt: SeqNumber(0),
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_wnd: 0,
            snd_shift: 0,
            scaling: false,
            mss: 536,
            sack_ok: false,
            ts: None,
            allowed: TcpOptions::ALL,
            to_guest: SendBuffer::new(TO_GUEST_CAP),
            to_host: ToHost::default(),
            ooo: OutOfOrder::default(),
            ooo_fin: None,
            host_eof: false,
            fin_sent: false,
            guest_fin: false,
            host_shut: false,
            host_urgent: None,
            guest_urgent: None,
            released: false,
            rto: INITIAL_RTO,
            srtt: None,
            rttvar: Duration::ZERO,
            rtt_probe: None,
            dup_acks: 0,
            retries: 0,
            deadline: None,
            sacks: Scoreboard::default(),
            cc: NewReno::new(536),
            recovery: None,
            recover: iss,
            high_rxt: iss,
            cwnd_limited: false,
            last_send: None,
            last_ack_sent: SeqNumber(0),
            adv_edge: SeqNumber(0),
            ack_owed: false,
            ack_now: false,
            delack: None,
            rcv_unacked: 0,
            rcv_mss: 536,
            quick_acks: QUICK_ACKS,
            host_write_failed: false,
            queue_blocked: false,
            batched: false,
            #[cfg(test)]
            recovered_with: None,
            accounted: 0,
            memory_starved: false,
            last_heard: now,
            keepalive_probes: 0,
            timer_at: None,
        }
    }

    /// Takes what the guest's SYN or SYN-ACK negotiated, as far as [`TcpConn::allowed`] lets it;
    /// `mss_ceiling` is what the link allows.
    pub(super) fn negotiate(&mut self, repr: &TcpRepr, mss_ceiling: usize) {
        self.snd_wnd = usize::from(repr.window_len);
        // RFC 7323 §2.2: scaling only when both SYNs carry the option, else neither side scales.
        let scale = repr.window_scale.filter(|_| self.allowed.window_scale);
        self.scaling = scale.is_some();
        self.snd_shift = scale.unwrap_or(0).min(14);
        // RFC 9293 §3.7.1: without the option the peer takes 536. A floor of 64 bytes against
        // absurd offers, unless the link itself allows less (an MTU below 104).
        self.mss =
            usize::from(repr.max_seg_size.unwrap_or(536)).clamp(64.min(mss_ceiling), mss_ceiling);
        self.sack_ok = repr.sack_permitted && self.allowed.sack;
        // RFC 7323 §3.2: timestamps are used only when both SYNs carried them.
        self.ts = repr
            .timestamp
            .filter(|_| self.allowed.timestamps)
            .map(|(val, _)| Timestamps {
                recent: val,
                offset: self.iss.0.rotate_left(13),
            });
        self.cc.set_mss(self.seg_size());
        self.rcv_nxt = repr.seq_number + 1;
        self.last_ack_sent = self.rcv_nxt;
        self.adv_edge = self.rcv_nxt;
    }

    /// Payload bytes per full segment: the guest's MSS less the options every segment carries
    /// (RFC 9293 §3.7.1).
    pub(super) fn seg_size(&self) -> usize {
        self.mss
            - if self.ts.is_some() {
                TIMESTAMP_OPTION_LEN
            } else {
                0
            }
    }

    /// Our timestamp clock: milliseconds (RFC 7323 §5.4 asks 1 ms to 1 s per tick).
    pub(super) fn ts_val(&self, now: Instant) -> u32 {
        let offset = self.ts.map_or(0, |t| t.offset);
        ((now.total_micros() / 1000) as u32).wrapping_add(offset)
    }

    /// RFC 6298 §2.2-2.3: folds a round-trip sample into SRTT/RTTVAR and recomputes the RTO.
    pub(super) fn sample_rtt(&mut self, r: Duration) {
        let r_us = r.total_micros();
        let (srtt, rttvar) = match self.srtt {
            None => (r_us, r_us / 2),
            Some(s) => {
                let s_us = s.total_micros();
                let rttvar = (3 * self.rttvar.total_micros() + s_us.abs_diff(r_us)) / 4;
                ((7 * s_us + r_us) / 8, rttvar)
            }
        };
        self.srtt = Some(Duration::from_micros(srtt));
        self.rttvar = Duration::from_micros(rttvar);
        // G, the clock granularity, is a microsecond here.
        let rto = Duration::from_micros(srtt + (4 * rttvar).max(1));
        self.rto = rto.clamp(MIN_RTO, MAX_RTO);
    }

    pub(super) fn set_state(&mut self, state: TcpState) {
        if self.state != state {
            trace!(
                "tcp {}:{} <-> {}:{}: {:?} -> {:?}",
                self.key.guest.0,
                self.key.guest.1,
                self.key.remote.0,
                self.key.remote.1,
                self.state,
                state
            );
            self.state = state;
        }
    }

    /// Free room in our receive buffer: the most the window may be, in bytes.
    pub(super) fn rcv_wnd(&self) -> usize {
        TO_HOST_CAP - self.to_host.len()
    }

    /// What we offered already: the window edge we advertised, less what has arrived since.
    pub(super) fn offered(&self) -> usize {
        if self.adv_edge.is_after(self.rcv_nxt) {
            self.adv_edge - self.rcv_nxt
        } else {
            0
        }
    }

    /// The window to offer now with `budget_room` bytes left of the TCP memory budget: the
    /// buffer's room, no more than the budget allows, and never less than offered already (the
    /// right edge does not move back, RFC 9293 §3.8.6).
    pub(super) fn offer(&self, budget_room: usize) -> usize {
        self.rcv_wnd().min(self.offered().max(budget_room))
    }

    /// Bytes of data it holds (to the guest, to the host, out of order).
    pub(super) fn buffered(&self) -> usize {
        self.to_guest.len() + self.to_host.len() + self.ooo.held()
    }

    /// Bytes of `to_guest` not sent yet.
    pub(super) fn unsent(&self) -> usize {
        let in_flight = self.snd_nxt - self.snd_una;
        // The FIN occupies one sequence number past the data.
        let in_flight = in_flight.min(self.to_guest.len());
        self.to_guest.len() - in_flight
    }

    /// The end of what the current recovery presumes lost: everything sent before a timeout;
    /// after duplicate ACKs, the holes below the highest SACKed byte and at least the first
    /// segment (all a guest without SACK can tell us, RFC 6582).
    pub(super) fn lost_end(&self) -> SeqNumber {
        let Some(rec) = self.recovery else {
            return self.snd_una;
        };
        let end = if rec.timeout {
            rec.point
        } else {
            let first = self.snd_una + self.seg_size();
            self.sacks.high().map_or(first, |h| h.max(first))
        };
        if end.is_after(self.snd_nxt) {
            self.snd_nxt
        } else {
            end
        }
    }

    /// RFC 6675 §4 "pipe": bytes presumed still in the network, which the congestion window
    /// bounds. In flight, less what the guest SACKed, less what is presumed lost and not yet
    /// resent; without SACK, each duplicate ACK in recovery stands for a segment that left
    /// (RFC 6582's window inflation).
    pub(super) fn pipe(&self) -> usize {
        let flight = self.snd_nxt - self.snd_una;
        let sacked = self.sacks.sacked_in(self.snd_una, self.snd_nxt);
        let mut pipe = flight.saturating_sub(sacked);
        if self.recovery.is_some() {
            let from = self.high_rxt.max(self.snd_una);
            let lost_end = self.lost_end();
            if from.is_before(lost_end) {
                let lost = (lost_end - from) - self.sacks.sacked_in(from, lost_end);
                pipe = pipe.saturating_sub(lost);
            }
            if !self.sack_ok {
                pipe = pipe.saturating_sub(self.dup_acks * self.seg_size());
            }
        }
        pipe
    }

    /// RFC 6675 §4 IsLost(SND.UNA), or the classic third duplicate ACK.
    pub(super) fn loss_detected(&self) -> bool {
        if self.dup_acks >= DUP_THRESHOLD {
            return true;
        }
        self.sack_ok
            && (self.sacks.len() >= DUP_THRESHOLD
                || self.sacks.sacked_in(self.snd_una, self.snd_nxt)
                    > (DUP_THRESHOLD - 1) * self.seg_size())
    }

    /// When the connection's next timer fires: retransmission/persist/connect/TIME-WAIT, the
    /// delayed ACK, or keepalive.
    pub(super) fn next_timer(&self, keepalive: Option<&Keepalive>) -> Option<Instant> {
        [self.deadline, self.delack, self.keepalive_at(keepalive)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keepalive runs on a synchronized connection with nothing in flight (the retransmission
    /// timer watches the guest otherwise).
    pub(super) fn keepalive_at(&self, keepalive: Option<&Keepalive>) -> Option<Instant> {
        let k = keepalive?;
        let synchronized = matches!(
            self.state,
            TcpState::Established | TcpState::CloseWait | TcpState::FinWait2
        );
        if !synchronized || self.snd_nxt != self.snd_una || self.deadline.is_some() {
            return None;
        }
        let probes = u64::from(self.keepalive_probes);
        Some(self.last_heard + k.idle + Duration::from_micros(k.interval.total_micros() * probes))
    }

    /// RFC 9293 §3.8.6.2.2 (receiver SWS avoidance) as Linux applies it: a window update is worth
    /// a segment when the window has at least doubled since we last offered it and grew by a
    /// full segment.
    pub(super) fn window_update_due(&self, budget_room: usize) -> bool {
        let offered = self.offered();
        let now_free = self.offer(budget_room);
        now_free >= 2 * offered && now_free - offered >= self.rcv_mss
    }
}

/// clock and the 4-tuple, which keeps them distinct per connection (the guest is the only peer).
pub(super) fn initial_seq(now: Instant, key: &ConnKey) -> SeqNumber {
    let mut h: u32 = (now.total_micros() / 4) as u32;
    for b in addr_bytes(&key.guest.0)
        .iter()
        .chain(addr_bytes(&key.remote.0).iter())
    {
        h = h.rotate_left(5) ^ u32::from(*b);
    }
    SeqNumber(h ^ (u32::from(key.guest.1) << 16 | u32::from(key.remote.1)))
}

fn addr_bytes(a: &IpAddress) -> &[u8] {
    match a {
        IpAddress::V4(a) => &a.0,
        IpAddress::V6(a) => &a.0,
    }
}

impl ConnKey {
    /// The connection's [`crate::steering::flow_hash`]: which egress queue its frames take.
    pub(super) fn flow_hash(&self) -> u32 {
        let (gp, rp) = (self.guest.1.to_be_bytes(), self.remote.1.to_be_bytes());
        crate::steering::flow_hash(
            (addr_bytes(&self.remote.0), Some(&rp)),
            (addr_bytes(&self.guest.0), Some(&gp)),
        )
    }

    /// The largest segment payload the link carries for this connection (MTU less the IP and
    /// TCP headers).
    pub(super) fn mss_ceiling(&self, mtu: u16) -> usize {
        usize::from(mtu) - self.guest.0.header_len() - tcp::HEADER_LEN
    }

    /// A segment from the remote side to the guest with no options and no payload; callers fill in
    /// what else they send.
    pub(super) fn segment(
        &self,
        seq: SeqNumber,
        ack: Option<SeqNumber>,
        flags: u8,
        window: u16,
    ) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.remote.1,
            dst_port: self.guest.1,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: window,
            urgent_at: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        }
    }
}
