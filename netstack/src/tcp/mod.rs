//! TCP through the gateway: each guest connection is terminated here and spliced to a host socket.
//!
//! Theory of operation. A guest SYN to a routed address (or the gateway, meaning the host's
//! loopback) starts a non-blocking host connect; only when it succeeds does the guest get its
//! SYN-ACK, so a refused or unreachable host port is a RST for the guest, as on a real network.
//! An inbound forward runs the other way: the host peer is accepted and our SYN opens the guest
//! side.
//!
//! Guest → host. Data is acknowledged once it is written to the host socket or held in a bounded
//! buffer (`TO_HOST_CAP`); the window the guest sees is what is left of that buffer, so a slow host
//! reader shrinks the guest's window instead of growing memory, and a window update goes out when
//! the host drains it. Segments that arrive ahead of a gap are held (`ooo`) and reported in SACK
//! blocks; ACKs are delayed (RFC 9293 §3.8.6.3, RFC 5681 §4.2: at least every second full
//! segment, at most 40 ms later, at once for anything out of order) except for the first segments
//! of a connection (quick ACKs, as Linux does). The guest's segments of one queue notification
//! form a batch: what follows them (the write to the host, the ACK, new data for the guest) is
//! done once per connection when the device ends the batch ([`Stack::flush`]).
//!
//! Host → guest. The host socket is read only while the bytes the guest has not acknowledged fit
//! `TO_GUEST_CAP`; they are sent within the guest's window and NewReno's congestion window
//! (`congestion`). Losses are repaired by SACK-based recovery (RFC 6675, `scoreboard`), NewReno's
//! partial ACKs (RFC 6582) when the guest does not do SACK, and the retransmission timer
//! (RFC 6298, exponential backoff). Timestamps (RFC 7323) give RTT samples and PAWS.
//!
//! Both ways: FINs (half-close), RSTs, urgent data (MSG_OOB on the host side), keepalive probes
//! to an idle guest (reset when it stops answering), TIME-WAIT.

mod congestion;
mod ooo;
mod scoreboard;
mod sendbuf;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use log::{debug, trace};

use crate::config::Keepalive;
use crate::host::{HostIo, SocketId};
use crate::offload::{GsoKind, PayloadOffload, TCP_CHECKSUM_OFFSET};
use crate::stack::{ForwardListener, Stack};
use crate::time::{Duration, Instant};
use crate::wire::tcp::flags;
use crate::wire::{ipv4, ipv6, tcp, IpAddress, IpProtocol, SeqNumber, TcpPacket, TcpRepr};

use congestion::NewReno;
use ooo::{Held, OutOfOrder};
use scoreboard::Scoreboard;
use sendbuf::SendBuffer;

/// At most this many connections; a SYN beyond it is refused with a RST (`flows_refused`).
pub const MAX_CONNECTIONS: usize = 1024;
/// Host bytes read but not yet acknowledged by the guest, per connection: what may be in flight
/// towards the guest. As large as Linux's largest send buffer (`tcp_wmem`'s 4 MiB), so that a
/// guest with a window of several MB finds many segments per interrupt: at 256 KiB a download at
/// MTU 65520 ran four frames deep, cost the guest 4.8 RX interrupts per MB and 1.8x the CPU per
/// byte (docs/performance.md). `Config::tcp_memory` bounds the sum over connections.
pub const TO_GUEST_CAP: usize = 4 << 20;
/// Guest bytes acknowledged but not yet written to the host, per connection: the guest's window.
/// A power of two (the out-of-order ring relies on it).
pub const TO_HOST_CAP: usize = 256 * 1024;
/// Our window scale (RFC 7323 §2.2): `TO_HOST_CAP >> 3` fits the 16-bit field.
const WINDOW_SHIFT: u8 = 3;
/// RFC 6298 §2.1: the first RTO is one second.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// The smallest RTO. RFC 6298 §2.4 says one second; like Linux (TCP_RTO_MIN) we allow 200 ms,
/// which matters on a link whose round trip is a fraction of a millisecond.
const MIN_RTO: Duration = Duration::from_millis(200);
/// RFC 5681 §3.2 / RFC 6675 §2: the third duplicate ACK, or that many segments SACKed above a
/// hole, means the hole was lost.
const DUP_THRESHOLD: usize = 3;
/// RFC 6298 §2.5 allows a maximum of at least 60 s.
const MAX_RTO: Duration = Duration::from_secs(60);
/// Retransmissions of the same data before the connection is reset.
const MAX_RETRIES: u32 = 8;
/// How long a host connect may take before the guest gets a RST.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// TIME-WAIT after we closed first (RFC 9293 §3.6.1 asks 2 MSL; a proxy keeps it short, as the
/// guest holds its own TIME-WAIT for the 4-tuple).
const TIME_WAIT: Duration = Duration::from_secs(2);
/// The delayed-ACK timer (Linux's TCP_DELACK_MIN; RFC 9293 §3.8.6.3 allows up to 500 ms).
const DELAYED_ACK: Duration = Duration::from_millis(40);
/// Data segments acknowledged at once at the start of a connection (Linux's quick-ACK mode), so
/// that the guest's slow start and a request/response exchange are not held back by our timer.
const QUICK_ACKS: u32 = 16;
/// Timestamp option bytes (RFC 7323 §3: 10, with two NOPs for alignment).
const TIMESTAMP_OPTION_LEN: usize = 12;
/// Host bytes read per readiness event.
const READ_CHUNK: usize = 65536;
/// Guest data of at least this much in one segment goes to the host socket straight from the
/// guest's frame when nothing waits before it; smaller pieces gather in `to_host` and go in one
/// write at the end of the batch (see [`Stack::flush`]). A write to a loopback socket wakes its
/// reader: one per 64 KiB is cheap, one per 1448-byte segment was most of the cost of a guest
/// upload without offloads.
const DIRECT_WRITE_MIN: usize = 16 * 1024;
/// Connections accepted per forward listener wake-up.
const ACCEPT_BUDGET: usize = 16;

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
    guest: (IpAddress, u16),
    remote: (IpAddress, u16),
}

/// RFC 7323 timestamps, when both sides offered them.
#[derive(Debug, Clone, Copy)]
struct Timestamps {
    /// TS.Recent: the guest's value we echo (RFC 7323 §4.3).
    recent: u32,
    /// Added to our millisecond clock, per connection (RFC 7323 §5.4 recommends a random offset).
    offset: u32,
}

/// A loss recovery episode: until the guest acknowledges `point`.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    point: SeqNumber,
    /// Started by the retransmission timer (everything in flight is presumed lost), not by
    /// duplicate ACKs or SACK.
    timeout: bool,
}

#[derive(Debug)]
pub(crate) struct TcpConn {
    key: ConnKey,
    sock: SocketId,
    state: TcpState,
    /// Guest's initial sequence number + 1 onward: the next byte we expect.
    rcv_nxt: SeqNumber,
    iss: SeqNumber,
    snd_una: SeqNumber,
    /// The next new sequence number to send (never moves back: retransmissions are separate).
    snd_nxt: SeqNumber,
    /// The guest's window in bytes (scaled).
    snd_wnd: usize,
    snd_shift: u8,
    /// Window scaling is on when the guest offered it (RFC 7323 §1.3).
    scaling: bool,
    /// The guest's MSS: payload plus options per segment.
    mss: usize,
    /// The guest offered SACK (RFC 2018 §2).
    sack_ok: bool,
    ts: Option<Timestamps>,
    /// Bytes from `snd_una` on: sent or not, not yet acknowledged.
    to_guest: SendBuffer,
    to_host: VecDeque<u8>,
    /// Guest data beyond a gap, and a FIN that came with it.
    ooo: OutOfOrder,
    ooo_fin: Option<SeqNumber>,
    host_eof: bool,
    fin_sent: bool,
    guest_fin: bool,
    host_shut: bool,
    /// Index in `to_host` of an urgent byte from the guest, to be sent with MSG_OOB.
    host_urgent: Option<usize>,
    /// Sequence number of an urgent byte from the host, marked URG towards the guest until acked.
    guest_urgent: Option<SeqNumber>,
    /// The host socket is closed already (aborted on a reset).
    released: bool,
    rto: Duration,
    /// RFC 6298 §2: smoothed round-trip time and its variation, once measured.
    srtt: Option<Duration>,
    rttvar: Duration,
    /// The segment being timed: the sequence number that acknowledges it, and when it left
    /// (Karn: never a retransmitted one).
    rtt_probe: Option<(SeqNumber, Instant)>,
    dup_acks: usize,
    retries: u32,
    /// Retransmission, persist, connect or TIME-WAIT deadline.
    deadline: Option<Instant>,
    sacks: Scoreboard,
    cc: NewReno,
    recovery: Option<Recovery>,
    /// RFC 6582 "recover": duplicate ACKs below it do not start another recovery.
    recover: SeqNumber,
    /// Retransmitted up to here in the current recovery (RFC 6675 HighRxt).
    high_rxt: SeqNumber,
    /// The congestion window was full when data last went out (RFC 7661).
    cwnd_limited: bool,
    last_send: Option<Instant>,
    /// ACK state towards the guest: what we last acknowledged and the window edge we offered.
    last_ack_sent: SeqNumber,
    adv_edge: SeqNumber,
    ack_owed: bool,
    ack_now: bool,
    delack: Option<Instant>,
    rcv_unacked: usize,
    /// The largest segment seen from the guest (Linux's rcv_mss).
    rcv_mss: usize,
    quick_acks: u32,
    /// A write to the host socket failed for good: both sides are reset.
    host_write_failed: bool,
    /// Its egress queue was full when it had a segment to send: it waits in
    /// [`TcpTable::blocked`] to be resumed when the queue drains.
    queue_blocked: bool,
    /// Buffered bytes counted for it in [`TcpTable::buffered`] when it was last put back.
    accounted: usize,
    /// It waits in [`TcpTable::batch`] for the end of the batch of guest frames.
    batched: bool,
    /// (cwnd, ssthresh) as the last loss recovery ended, for tests of RFC 6582 §3.2 step 3 (later
    /// ACKs in the same batch grow the window again before a test can look).
    #[cfg(test)]
    recovered_with: Option<(usize, usize)>,
    /// It stopped reading its host socket because the TCP memory budget was spent: it waits in
    /// [`TcpTable::starved`].
    memory_starved: bool,
    /// Keepalive: when the guest last sent anything, and probes sent since.
    last_heard: Instant,
    keepalive_probes: u32,
}

impl TcpConn {
    /// A connection with empty buffers and fresh timers; the caller sets what its opening knows.
    fn new(key: ConnKey, sock: SocketId, state: TcpState, iss: SeqNumber, now: Instant) -> Self {
        TcpConn {
            key,
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
            to_guest: SendBuffer::new(TO_GUEST_CAP),
            to_host: VecDeque::new(),
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
        }
    }

    /// Takes what the guest's SYN or SYN-ACK negotiated; `mss_ceiling` is what the link allows.
    fn negotiate(&mut self, repr: &TcpRepr, mss_ceiling: usize) {
        self.snd_wnd = usize::from(repr.window_len);
        self.scaling = repr.window_scale.is_some();
        self.snd_shift = repr.window_scale.unwrap_or(0).min(14);
        // RFC 9293 §3.7.1: without the option the peer takes 536. A floor of 64 bytes against
        // absurd offers, unless the link itself allows less (an MTU below 104).
        self.mss =
            usize::from(repr.max_seg_size.unwrap_or(536)).clamp(64.min(mss_ceiling), mss_ceiling);
        self.sack_ok = repr.sack_permitted;
        self.ts = repr.timestamp.map(|(val, _)| Timestamps {
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
    fn seg_size(&self) -> usize {
        self.mss
            - if self.ts.is_some() {
                TIMESTAMP_OPTION_LEN
            } else {
                0
            }
    }

    /// Our timestamp clock: milliseconds (RFC 7323 §5.4 asks 1 ms to 1 s per tick).
    fn ts_val(&self, now: Instant) -> u32 {
        let offset = self.ts.map_or(0, |t| t.offset);
        ((now.total_micros() / 1000) as u32).wrapping_add(offset)
    }

    /// RFC 6298 §2.2-2.3: folds a round-trip sample into SRTT/RTTVAR and recomputes the RTO.
    fn sample_rtt(&mut self, r: Duration) {
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

    fn set_state(&mut self, state: TcpState) {
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
    fn rcv_wnd(&self) -> usize {
        TO_HOST_CAP - self.to_host.len()
    }

    /// What we offered already: the window edge we advertised, less what has arrived since.
    fn offered(&self) -> usize {
        if self.adv_edge.is_after(self.rcv_nxt) {
            self.adv_edge - self.rcv_nxt
        } else {
            0
        }
    }

    /// The window to offer now with `budget_room` bytes left of the TCP memory budget: the
    /// buffer's room, no more than the budget allows, and never less than offered already (the
    /// right edge does not move back, RFC 9293 §3.8.6).
    fn offer(&self, budget_room: usize) -> usize {
        self.rcv_wnd().min(self.offered().max(budget_room))
    }

    /// Bytes of data it holds (to the guest, to the host, out of order).
    fn buffered(&self) -> usize {
        self.to_guest.len() + self.to_host.len() + self.ooo.held()
    }

    /// Bytes of `to_guest` not sent yet.
    fn unsent(&self) -> usize {
        let in_flight = self.snd_nxt - self.snd_una;
        // The FIN occupies one sequence number past the data.
        let in_flight = in_flight.min(self.to_guest.len());
        self.to_guest.len() - in_flight
    }

    /// The end of what the current recovery presumes lost: everything sent before a timeout;
    /// after duplicate ACKs, the holes below the highest SACKed byte and at least the first
    /// segment (all a guest without SACK can tell us, RFC 6582).
    fn lost_end(&self) -> SeqNumber {
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
    fn pipe(&self) -> usize {
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
    fn loss_detected(&self) -> bool {
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
    fn next_timer(&self, keepalive: Option<&Keepalive>) -> Option<Instant> {
        [self.deadline, self.delack, self.keepalive_at(keepalive)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keepalive runs on a synchronized connection with nothing in flight (the retransmission
    /// timer watches the guest otherwise).
    fn keepalive_at(&self, keepalive: Option<&Keepalive>) -> Option<Instant> {
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
    fn window_update_due(&self, budget_room: usize) -> bool {
        let offered = self.offered();
        let now_free = self.offer(budget_room);
        now_free >= 2 * offered && now_free - offered >= self.rcv_mss
    }
}

/// The connection table.
#[derive(Debug, Default)]
pub(crate) struct TcpTable {
    conns: HashMap<ConnKey, TcpConn>,
    by_socket: HashMap<SocketId, ConnKey>,
    /// Connections waiting for room in their egress queue (each at most once: at most one per
    /// connection), with the queue they wait on.
    blocked: Vec<(ConnKey, usize)>,
    /// Bit `q` set: some connection in `blocked` waits on queue `q`.
    blocked_queues: u8,
    /// Bytes buffered across all connections (each as of when it was last put back).
    buffered: usize,
    /// Connections that stopped reading their host socket for the memory budget.
    starved: Vec<ConnKey>,
    /// Connections with guest segments taken in the current batch whose consequences (the write
    /// to the host, the ACK, new data for the guest) wait for [`Stack::flush`]; each at most
    /// once, so at most [`MAX_CONNECTIONS`].
    batch: Vec<ConnKey>,
    /// Scratch for [`Stack::tcp_poll`]: the connections whose timers are due.
    due: Vec<ConnKey>,
}

impl TcpTable {
    /// Whether connections wait for the end of the batch ([`Stack::flush`]).
    pub(crate) fn has_batch(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Whether some connection waits for room on egress queue `q`.
    pub(crate) fn waits_on(&self, q: usize) -> bool {
        self.blocked_queues & (1 << q) != 0
    }

    /// Every waiting connection looks at its queue again on the next dispatch (the queues were
    /// rearranged).
    pub(crate) fn requeue_blocked(&mut self) {
        if !self.blocked.is_empty() {
            self.blocked_queues = u8::MAX;
        }
    }

    pub(crate) fn by_socket(&self, sock: SocketId) -> Option<ConnKey> {
        self.by_socket.get(&sock).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// The guest's connections as probes quote them (see [`crate::probe::TcpFlow`]).
    pub(crate) fn flows(&self) -> impl Iterator<Item = crate::probe::TcpFlow> + '_ {
        self.conns.values().map(|c| crate::probe::TcpFlow {
            guest: c.key.guest,
            remote: c.key.remote,
            to_guest_next: c.snd_nxt.0,
            from_guest_next: c.rcv_nxt.0,
            established: c.state == TcpState::Established,
        })
    }

    pub(crate) fn poll_at(&self, keepalive: Option<&Keepalive>) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| c.next_timer(keepalive))
            .min()
    }
}

/// Initial sequence numbers: RFC 6528 asks for a keyed hash of the 4-tuple plus a clock; here a
/// clock and the 4-tuple, which keeps them distinct per connection (the guest is the only peer).
fn initial_seq(now: Instant, key: &ConnKey) -> SeqNumber {
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
    /// The connection's [`crate::stack::flow_hash`]: which egress queue its frames take.
    fn flow_hash(&self) -> u32 {
        let (gp, rp) = (self.guest.1.to_be_bytes(), self.remote.1.to_be_bytes());
        crate::stack::flow_hash(
            (addr_bytes(&self.remote.0), Some(&rp)),
            (addr_bytes(&self.guest.0), Some(&gp)),
        )
    }

    /// The largest segment payload the link carries for this connection (MTU less the IP and
    /// TCP headers).
    fn mss_ceiling(&self, mtu: u16) -> usize {
        let ip = match self.guest.0 {
            IpAddress::V4(_) => ipv4::HEADER_LEN,
            IpAddress::V6(_) => ipv6::HEADER_LEN,
        };
        usize::from(mtu) - ip - tcp::HEADER_LEN
    }

    /// A segment from the remote side to the guest with no options and no payload; callers fill in
    /// what else they send.
    fn segment(
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

impl<H: HostIo> Stack<H> {
    /// Where a guest connection goes on the host; `None`: nothing serves it (RST).
    fn tcp_host_destination(&self, dst: IpAddress, port: u16) -> Option<SocketAddr> {
        let dst = match dst {
            IpAddress::V4(d) => d,
            IpAddress::V6(d) => return self.ipv6_host_destination(d, port),
        };
        if dst == self.cfg.gateway_ipv4 {
            return self
                .cfg
                .map_gateway_to_loopback
                .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        if dst == self.cfg.dns_ipv4 {
            // DNS over TCP (RFC 7766) goes to the same upstream as over UDP.
            return (port == 53)
                .then(|| self.cfg.dns_upstreams.first().copied())
                .flatten();
        }
        Some(SocketAddr::from((Ipv4Addr::from(dst), port)))
    }

    /// A TCP segment from the guest, from `src` to `dst`.
    pub(crate) fn process_tcp(
        &mut self,
        now: Instant,
        src: IpAddress,
        dst: IpAddress,
        segment: &[u8],
    ) {
        self.stats.tcp_rx_segments += 1;
        let Ok(seg) = TcpPacket::new_checked(segment) else {
            self.stats.drop_tcp_malformed += 1;
            return;
        };
        // A partial checksum (offloaded by the guest) is not checked: the bytes are the guest's own.
        let parsed = if self.inbound.checksum.is_some() {
            TcpRepr::parse_unverified(&seg)
        } else {
            TcpRepr::parse(&seg, src, dst)
        };
        let repr = match parsed {
            Ok(r) => r,
            Err(crate::wire::Error::Checksum) => {
                self.stats.drop_tcp_checksum += 1;
                return;
            }
            Err(_) => {
                self.stats.drop_tcp_malformed += 1;
                return;
            }
        };
        if self
            .inbound
            .gso
            .is_some_and(|g| repr.payload.len() > usize::from(g.segment_size))
        {
            self.stats.tcp_rx_large_segments += 1;
        }
        let key = ConnKey {
            guest: (src, repr.src_port),
            remote: (dst, repr.dst_port),
        };
        let Some(mut conn) = self.tcp.conns.remove(&key) else {
            self.tcp_no_connection(now, key, &repr);
            return;
        };
        self.tcp_segment(now, &mut conn, &repr);
        if conn.state != TcpState::Closed && !conn.host_write_failed {
            // The rest waits for the end of the batch: the guest's segments of one notification
            // are written to the host in one go, acknowledged with one ACK (a stretch ACK, as
            // from a receiver with GRO), and answered with one burst of data.
            if !conn.batched {
                conn.batched = true;
                self.tcp.batch.push(key);
            }
            self.tcp_keep(conn);
            return;
        }
        self.tcp_after_input(now, &mut conn);
        self.tcp_keep(conn);
    }

    /// What follows the guest's segments on a connection: its data to the host, a reset after
    /// a failed write, new data and the ACK it is owed, the host socket's interest.
    fn tcp_after_input(&mut self, now: Instant, conn: &mut TcpConn) {
        self.tcp_flush_to_host(conn);
        self.tcp_check_host_write(now, conn);
        self.tcp_output(now, conn);
        self.tcp_ack_if_owed(now, conn);
        self.tcp_update_interest(conn);
    }

    /// The end of a batch of guest frames: every connection that took segments in it does what
    /// follows them ([`Stack::flush`]).
    pub(crate) fn tcp_flush_batch(&mut self, now: Instant) {
        let mut batch = core::mem::take(&mut self.tcp.batch);
        for key in batch.drain(..) {
            let Some(mut conn) = self.tcp.conns.remove(&key) else {
                continue;
            };
            conn.batched = false;
            self.tcp_after_input(now, &mut conn);
            self.tcp_keep(conn);
        }
        // The vector's allocation is kept for the next batch.
        if self.tcp.batch.is_empty() {
            self.tcp.batch = batch;
        }
    }

    /// Gives up the host socket: closed (orderly) or aborted (RST on the host side).
    fn tcp_release(&mut self, conn: &mut TcpConn, abort: bool) {
        if conn.released {
            return;
        }
        conn.released = true;
        self.tcp.by_socket.remove(&conn.sock);
        if abort {
            self.host.tcp_abort(conn.sock);
        } else {
            self.host.close(conn.sock);
        }
        self.stats.flows_closed += 1;
    }

    /// Puts a connection back in the table, or lets it go once closed; counts what it buffers
    /// against the memory budget.
    fn tcp_keep(&mut self, mut conn: TcpConn) {
        let held = if conn.state == TcpState::Closed {
            0
        } else {
            conn.buffered()
        };
        self.tcp.buffered = self.tcp.buffered - conn.accounted + held;
        conn.accounted = held;
        if conn.state == TcpState::Closed {
            self.tcp_release(&mut conn, false);
        } else {
            self.tcp.conns.insert(conn.key, conn);
        }
        self.stats.tcp_connections = self.tcp.len() as u64;
        self.stats.tcp_buffered_bytes = self.tcp.buffered as u64;
        // Room again (an eighth of the budget, so that readers wake in batches): the connections
        // that stopped reading go on.
        if !self.tcp.starved.is_empty() && self.tcp_budget_room() >= self.cfg.tcp_memory / 8 {
            for key in core::mem::take(&mut self.tcp.starved) {
                if let Some(mut c) = self.tcp.conns.remove(&key) {
                    c.memory_starved = false;
                    self.tcp_update_interest(&mut c);
                    self.tcp.conns.insert(key, c);
                }
            }
        }
    }

    /// Bytes left of the TCP memory budget.
    fn tcp_budget_room(&self) -> usize {
        self.cfg.tcp_memory.saturating_sub(self.tcp.buffered)
    }

    /// A segment for no connection: a SYN opens one, anything else but a RST is answered with RST
    /// (RFC 9293 §3.10.7.1).
    fn tcp_no_connection(&mut self, now: Instant, key: ConnKey, repr: &TcpRepr) {
        if repr.flags & flags::RST != 0 {
            return;
        }
        let is_syn = repr.flags & flags::SYN != 0 && repr.ack_number.is_none();
        if !is_syn {
            self.stats.drop_tcp_no_connection += 1;
            self.tcp_send_rst_for(now, key, repr);
            return;
        }
        let Some(dst) = self.tcp_host_destination(key.remote.0, key.remote.1) else {
            self.stats.tcp_refused += 1;
            self.tcp_send_rst_for(now, key, repr);
            return;
        };
        if self.tcp.len() >= MAX_CONNECTIONS && !self.tcp_evict_embryonic(now) {
            self.stats.flows_refused += 1;
            self.tcp_send_rst_for(now, key, repr);
            return;
        }
        let sock = match self.host.tcp_connect(dst) {
            Ok(s) => s,
            Err(e) => {
                debug!("tcp: connect to {dst} refused by the host: {e}");
                self.stats.flows_refused += 1;
                self.stats.tcp_refused += 1;
                self.tcp_refuse(now, key, repr.seq_number, &e);
                return;
            }
        };
        debug!("tcp: {}:{} -> {dst}", key.guest.0, key.guest.1);
        self.stats.flows_opened += 1;
        let iss = initial_seq(now, &key);
        let mut conn = TcpConn {
            deadline: Some(now + CONNECT_TIMEOUT),
            ..TcpConn::new(key, sock, TcpState::Connecting, iss, now)
        };
        conn.negotiate(repr, key.mss_ceiling(self.cfg.mtu));
        self.host.set_interest(sock, false, true);
        self.tcp.by_socket.insert(sock, key);
        self.tcp.conns.insert(key, conn);
        self.stats.tcp_connections = self.tcp.len() as u64;
    }

    /// The table is full: the oldest connection that never completed its handshake (the host's
    /// connect pending, or our SYN-ACK unanswered) makes room, as a SYN backlog drops its oldest
    /// entry under a SYN flood. Established connections are never evicted. False if there is
    /// none.
    fn tcp_evict_embryonic(&mut self, now: Instant) -> bool {
        let oldest = self
            .tcp
            .conns
            .values()
            .filter(|c| matches!(c.state, TcpState::Connecting | TcpState::SynReceived))
            .min_by_key(|c| c.deadline)
            .map(|c| c.key);
        let Some(key) = oldest else {
            return false;
        };
        let Some(mut conn) = self.tcp.conns.remove(&key) else {
            return false;
        };
        self.stats.tcp_embryonic_evicted += 1;
        self.tcp_release(&mut conn, true);
        self.tcp_reset_guest(now, &conn);
        conn.set_state(TcpState::Closed);
        self.tcp_keep(conn);
        true
    }

    /// RFC 9293 §3.10.7.4, for an existing connection.
    fn tcp_segment(&mut self, now: Instant, conn: &mut TcpConn, repr: &TcpRepr) {
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
                self.tcp_release(conn, true);
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
                conn.negotiate(repr, conn.key.mss_ceiling(self.cfg.mtu));
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
                self.tcp_send_rst_for(now, conn.key, repr);
            }
            return;
        }
        if repr.flags & flags::SYN != 0 {
            // A retransmitted SYN (our SYN-ACK was lost): send it again.
            if conn.state == TcpState::SynReceived && repr.seq_number + 1 == conn.rcv_nxt {
                self.tcp_send_syn_ack(now, conn);
            }
            return;
        }
        // PAWS (RFC 7323 §5.3): a segment whose timestamp is older than the one we echo is an old
        // duplicate.
        if let (Some(ts), Some((val, _))) = (conn.ts, repr.timestamp) {
            if (val.wrapping_sub(ts.recent) as i32) < 0 {
                self.stats.drop_tcp_paws += 1;
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
                    self.stats.drop_tcp_window_full += 1;
                } else {
                    self.stats.tcp_duplicate_segments += 1;
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
        self.tcp_process_ack(now, conn, repr, ack);
        if conn.state == TcpState::Closed || !acceptable {
            return;
        }
        self.tcp_receive(now, conn, repr);
    }

    /// The ACK field and SACK blocks of an acceptable segment: what the guest holds of ours.
    fn tcp_process_ack(
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
            self.tcp_send_rst_for(now, conn.key, repr);
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
                self.stats.tcp_sack_blocks_received += 1;
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
                self.tcp_retransmit_next(now, conn);
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
            self.stats.tcp_fast_retransmits += 1;
            self.tcp_enter_recovery(now, conn, false);
        }
    }

    /// Starts loss recovery: reduces the window and resends the first missing segment at once
    /// (RFC 5681 §3.2 step 3, RFC 6675 §5 step 3); `tcp_output` sends the rest as the congestion
    /// window allows.
    fn tcp_enter_recovery(&mut self, now: Instant, conn: &mut TcpConn, timeout: bool) {
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
        self.tcp_retransmit_next(now, conn);
    }

    /// Resends the first hole at or after `high_rxt` that recovery presumes lost; false when
    /// there is none.
    fn tcp_retransmit_next(&mut self, now: Instant, conn: &mut TcpConn) -> bool {
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
        if !self.tcp_send_data(now, conn, seq, data, fin) {
            return false;
        }
        self.stats.tcp_retransmitted_segments += 1;
        conn.high_rxt = seq + data + usize::from(fin);
        if conn.deadline.is_none() {
            conn.deadline = Some(now + conn.rto);
        }
        true
    }

    /// Data and FIN of an acceptable segment: in order to the host buffer, ahead of a gap to the
    /// out-of-order store.
    fn tcp_receive(&mut self, now: Instant, conn: &mut TcpConn, repr: &TcpRepr) {
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
            self.stats.tcp_duplicate_segments += 1;
            payload = &payload[skip..];
            seq = seq + skip;
        }
        // A large segment (the guest's TSO) counts by the segment size it stands for, as Linux
        // measures rcv_mss by gso_size: the ACK pace stays per two segments.
        let seg_len = match self.inbound.gso {
            Some(g) => repr.payload.len().min(usize::from(g.segment_size)),
            None => repr.payload.len(),
        };
        conn.rcv_mss = conn.rcv_mss.max(seg_len);
        // Trim what lies beyond the window we offered.
        let ahead = seq - conn.rcv_nxt;
        let room = conn.rcv_wnd().saturating_sub(ahead);
        let take = payload.len().min(room);
        if take < payload.len() {
            self.stats.drop_tcp_window_full += 1;
        }
        let fin_at = (has_fin && take == payload.len()).then(|| seq + take);
        if ahead > 0 {
            // Beyond a gap: hold it, and ACK at once so that the guest learns of the gap
            // (RFC 5681 §4.2) and its SACK blocks.
            conn.ack_now = true;
            match conn.ooo.insert(seq, &payload[..take]) {
                Held::Stored => self.stats.tcp_out_of_order_queued += 1,
                Held::Duplicate => self.stats.tcp_duplicate_segments += 1,
                Held::Full => {
                    self.stats.drop_tcp_out_of_order += 1;
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
                self.stats.tcp_urgent_from_guest += 1;
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
            match self.host.tcp_send(conn.sock, data) {
                Ok(n) => {
                    data = &data[n..];
                    self.stats.tcp_tx_host_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // As in `tcp_flush_to_host`: the guest is reset.
                    debug!("tcp {:?}: host write failed: {e}", conn.key);
                    conn.host_write_failed = true;
                    data = &[];
                }
            }
        }
        conn.to_host.extend(data);
        conn.rcv_nxt = conn.rcv_nxt + take;
        conn.rcv_unacked += take;
        if !conn.ooo.is_empty() {
            // Filling a gap is acknowledged at once (RFC 5681 §4.2).
            let moved = conn.ooo.drain_contiguous(conn.rcv_nxt, &mut conn.to_host);
            conn.rcv_nxt = conn.rcv_nxt + moved;
            conn.ack_now = true;
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

    /// Sends the ACK the guest is owed now, or arms the delayed-ACK timer.
    fn tcp_ack_if_owed(&mut self, now: Instant, conn: &mut TcpConn) {
        if !conn.ack_owed || conn.state == TcpState::Closed {
            return;
        }
        if conn.ack_now {
            self.tcp_send_ack(now, conn);
        } else if conn.delack.is_none() {
            conn.delack = Some(now + DELAYED_ACK);
        }
    }

    /// Writes buffered guest data to the host; after the guest's FIN, shuts the host side down.
    fn tcp_flush_to_host(&mut self, conn: &mut TcpConn) {
        while !conn.to_host.is_empty() {
            if conn.host_urgent == Some(0) {
                let byte = conn.to_host[0];
                match self.host.tcp_send_urgent(conn.sock, byte) {
                    Ok(()) => {
                        conn.to_host.pop_front();
                        conn.host_urgent = None;
                        self.stats.tcp_tx_host_bytes += 1;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!("tcp {:?}: urgent byte refused by the host: {e}", conn.key);
                        conn.host_urgent = None;
                        continue;
                    }
                }
            }
            let (a, _) = conn.to_host.as_slices();
            // Ordinary bytes stop short of the urgent one.
            let a = &a[..conn.host_urgent.map_or(a.len(), |u| u.min(a.len()))];
            match self.host.tcp_send(conn.sock, a) {
                Ok(n) => {
                    conn.to_host.drain(..n);
                    if let Some(u) = conn.host_urgent.as_mut() {
                        *u -= n;
                    }
                    self.stats.tcp_tx_host_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The host peer is gone (EPIPE, ECONNRESET): the guest's data has nowhere to
                    // go, and the guest must learn it (a reset, as from a closed socket).
                    debug!("tcp {:?}: host write failed: {e}", conn.key);
                    conn.to_host.clear();
                    conn.host_write_failed = true;
                    break;
                }
            }
        }
        if conn.guest_fin && conn.to_host.is_empty() && !conn.host_shut {
            let _ = self.host.tcp_shutdown_write(conn.sock);
            conn.host_shut = true;
        }
    }

    /// After a failed host write: reset the guest's side and abort the host socket.
    fn tcp_check_host_write(&mut self, now: Instant, conn: &mut TcpConn) {
        if !conn.host_write_failed || conn.state == TcpState::Closed {
            return;
        }
        self.stats.tcp_host_resets += 1;
        self.tcp_reset_guest(now, conn);
        self.tcp_release(conn, true);
        conn.set_state(TcpState::Closed);
    }

    /// Host readiness for a TCP connection.
    pub(crate) fn tcp_host_ready(&mut self, now: Instant, sock: SocketId) {
        let Some(key) = self.tcp.by_socket(sock) else {
            return;
        };
        let Some(mut conn) = self.tcp.conns.remove(&key) else {
            return;
        };
        if conn.state == TcpState::Connecting {
            match self.host.tcp_connect_result(sock) {
                Ok(()) => {
                    conn.set_state(TcpState::SynReceived);
                    conn.snd_nxt = conn.iss + 1;
                    conn.deadline = Some(now + conn.rto);
                    self.tcp_send_syn_ack(now, &mut conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    debug!("tcp {:?}: host connect failed: {e}", conn.key);
                    self.stats.tcp_refused += 1;
                    let isn = SeqNumber(conn.rcv_nxt.0.wrapping_sub(1));
                    self.tcp_refuse(now, conn.key, isn, &e);
                    conn.set_state(TcpState::Closed);
                }
            }
            self.tcp_update_interest(&mut conn);
            self.tcp_keep(conn);
            return;
        }
        self.tcp_flush_to_host(&mut conn);
        self.tcp_check_host_write(now, &mut conn);
        if conn.state == TcpState::Closed {
            self.tcp_keep(conn);
            return;
        }
        // Read while there is room for what the guest has not acknowledged, straight into the
        // send buffer.
        while !conn.host_eof && conn.to_guest.room() > 0 {
            // The budget, counting what this connection holds now rather than when last put back.
            let budget = (self.cfg.tcp_memory + conn.accounted)
                .saturating_sub(self.tcp.buffered + conn.buffered());
            if budget == 0 {
                self.stats.tcp_memory_waits += 1;
                if !conn.memory_starved {
                    conn.memory_starved = true;
                    self.tcp.starved.push(conn.key);
                }
                break;
            }
            let want = conn.to_guest.room().min(READ_CHUNK).min(budget);
            // The kernel stops a read at the urgent mark: the byte at the mark comes first in the
            // next read, inline (SO_OOBINLINE).
            if self.host.tcp_at_mark(sock).unwrap_or(false) && conn.guest_urgent.is_none() {
                conn.guest_urgent = Some(conn.snd_una + conn.to_guest.len());
                self.stats.tcp_urgent_from_host += 1;
            }
            match self.host.tcp_recv(sock, conn.to_guest.free_mut(want)) {
                Ok(0) => conn.host_eof = true,
                Ok(n) => {
                    conn.to_guest.commit(n);
                    self.stats.tcp_rx_host_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The host peer reset (or its keepalive timed out): so does the guest's
                    // connection.
                    debug!("tcp {:?}: host read failed: {e}", conn.key);
                    self.stats.tcp_host_resets += 1;
                    self.tcp_reset_guest(now, &conn);
                    conn.set_state(TcpState::Closed);
                    break;
                }
            }
        }
        if conn.state != TcpState::Closed {
            self.tcp_output(now, &mut conn);
            let receiving = matches!(
                conn.state,
                TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
            );
            if receiving && conn.window_update_due(self.tcp_budget_room()) {
                self.stats.tcp_window_updates += 1;
                conn.ack_owed = true;
                conn.ack_now = true;
            }
            self.tcp_ack_if_owed(now, &mut conn);
        }
        self.tcp_update_interest(&mut conn);
        self.tcp_keep(conn);
    }

    fn tcp_update_interest(&mut self, conn: &mut TcpConn) {
        if conn.state == TcpState::Closed || conn.released {
            return;
        }
        if conn.host_eof && conn.host_shut && conn.to_host.is_empty() {
            // Both directions are done on the host side: the socket has nothing more to say (and a
            // level-triggered hang-up would wake us for ever).
            self.tcp_release(conn, false);
            return;
        }
        let connecting = conn.state == TcpState::Connecting;
        let readable = !matches!(conn.state, TcpState::Connecting | TcpState::SynSent)
            && !conn.host_eof
            && !conn.memory_starved
            && conn.to_guest.len() < TO_GUEST_CAP;
        let writable = connecting || !conn.to_host.is_empty();
        self.host.set_interest(conn.sock, readable, writable);
    }

    /// Sends what the windows allow: in recovery the holes first (RFC 6675 §5 NextSeg rule 1),
    /// then new data, then our FIN when the host is done.
    fn tcp_output(&mut self, now: Instant, conn: &mut TcpConn) {
        if matches!(
            conn.state,
            TcpState::Connecting | TcpState::SynSent | TcpState::SynReceived | TcpState::Closed
        ) {
            return;
        }
        if conn.recovery.is_some() {
            while conn.pipe() < conn.cc.cwnd && self.tcp_retransmit_next(now, conn) {}
        }
        if conn.snd_nxt == conn.snd_una {
            let idle = congestion::idle_since(conn.last_send, now);
            conn.cc.on_idle(idle, conn.rto);
        }
        let seg_size = conn.seg_size();
        let burst = self.tcp_burst(conn);
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
            if !self.tcp_send_data(now, conn, seq, n, false) {
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
            if !self.tcp_send_data(now, conn, seq, 0, true) {
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
    fn tcp_burst(&self, conn: &TcpConn) -> usize {
        let seg_size = conn.seg_size();
        let tso = match conn.key.guest.0 {
            IpAddress::V4(_) => self.offloads.tso4,
            IpAddress::V6(_) => self.offloads.tso6,
        };
        if !tso || conn.guest_urgent.is_some() {
            return seg_size;
        }
        // Room for the largest IP and TCP headers inside a 65535-byte IP packet.
        const MAX_PAYLOAD: usize = 65535 - ipv6::HEADER_LEN - 60;
        (MAX_PAYLOAD / seg_size).max(1) * seg_size
    }

    /// Timers: connect timeout, retransmission and persist, TIME-WAIT, delayed ACK, keepalive.
    pub(crate) fn tcp_poll(&mut self, now: Instant) {
        let keepalive = self.cfg.tcp_keepalive;
        // The due connections are listed in a vector kept between ticks (at most one entry per
        // connection): a tick allocates nothing.
        let mut due = core::mem::take(&mut self.tcp.due);
        due.extend(
            self.tcp
                .conns
                .values()
                .filter(|c| c.next_timer(keepalive.as_ref()).is_some_and(|d| d <= now))
                .map(|c| c.key),
        );
        for key in due.drain(..) {
            let Some(mut conn) = self.tcp.conns.remove(&key) else {
                continue;
            };
            if conn.delack.is_some_and(|d| d <= now) {
                conn.delack = None;
                if conn.ack_owed {
                    self.stats.tcp_delayed_acks += 1;
                    self.tcp_send_ack(now, &mut conn);
                }
            }
            if conn
                .keepalive_at(keepalive.as_ref())
                .is_some_and(|d| d <= now)
            {
                self.tcp_keepalive(now, &mut conn, keepalive.unwrap_or_default());
            }
            if conn.deadline.is_some_and(|d| d <= now) {
                conn.deadline = None;
                self.tcp_timeout(now, &mut conn);
            }
            self.tcp_update_interest(&mut conn);
            self.tcp_keep(conn);
        }
        self.tcp.due = due;
    }

    /// The connection's deadline passed.
    fn tcp_timeout(&mut self, now: Instant, conn: &mut TcpConn) {
        match conn.state {
            TcpState::Connecting => {
                self.stats.tcp_refused += 1;
                self.tcp_reset_guest(now, conn);
                conn.set_state(TcpState::Closed);
            }
            TcpState::TimeWait => conn.set_state(TcpState::Closed),
            TcpState::Closed => {}
            _ if conn.snd_nxt == conn.snd_una && conn.unsent() > 0 && conn.snd_wnd == 0 => {
                // Zero-window probe: one byte past the window; the guest answers with its
                // current window (and takes the byte if it has room by then).
                let seq = conn.snd_nxt;
                if self.tcp_send_data(now, conn, seq, 1, false) {
                    self.stats.tcp_window_probes += 1;
                    conn.snd_nxt = conn.snd_nxt + 1;
                }
                conn.rto = (conn.rto + conn.rto).min(MAX_RTO);
                conn.deadline = Some(now + conn.rto);
            }
            _ if conn.snd_nxt != conn.snd_una => {
                conn.retries += 1;
                if conn.retries > MAX_RETRIES {
                    debug!("tcp {:?}: guest stopped answering; reset", conn.key);
                    self.tcp_release(conn, true);
                    self.tcp_reset_guest(now, conn);
                    conn.set_state(TcpState::Closed);
                    return;
                }
                // RFC 6298 §5.5-5.6: back off and retransmit the earliest unacknowledged;
                // Karn's algorithm: no RTT sample from a retransmitted segment.
                conn.rto = (conn.rto + conn.rto).min(MAX_RTO);
                conn.rtt_probe = None;
                conn.dup_acks = 0;
                if conn.state == TcpState::SynReceived {
                    self.stats.tcp_retransmitted_segments += 1;
                    self.tcp_send_syn_ack(now, conn);
                } else if conn.state == TcpState::SynSent {
                    self.stats.tcp_retransmitted_segments += 1;
                    self.tcp_send_syn(now, conn);
                } else if conn.snd_wnd == 0 && conn.snd_nxt - conn.snd_una == 1 {
                    // The window probe went unanswered: probe again, the window is not congestion.
                    let seq = conn.snd_una;
                    if self.tcp_send_data(now, conn, seq, 1, false) {
                        self.stats.tcp_window_probes += 1;
                    }
                } else {
                    self.stats.tcp_retransmits += 1;
                    self.tcp_enter_recovery(now, conn, true);
                }
                conn.deadline = Some(now + conn.rto);
            }
            // A segment that could not be queued (the guest's MAC was unknown): try again.
            _ if !conn.queue_blocked => self.tcp_output(now, conn),
            _ => {}
        }
    }

    /// Keepalive (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6): a segment one byte before the window,
    /// which makes the guest answer with an ACK; no answer to `probes` of them resets both sides.
    fn tcp_keepalive(&mut self, now: Instant, conn: &mut TcpConn, k: Keepalive) {
        if conn.keepalive_probes >= k.probes {
            debug!("tcp {:?}: no answer to keepalive; reset", conn.key);
            self.stats.tcp_keepalive_timeouts += 1;
            self.tcp_release(conn, true);
            self.tcp_reset_guest(now, conn);
            conn.set_state(TcpState::Closed);
            return;
        }
        conn.keepalive_probes += 1;
        self.stats.tcp_keepalive_probes += 1;
        let seq = SeqNumber(conn.snd_una.0.wrapping_sub(1));
        let mut repr = self.tcp_header(now, conn, seq, 0, 0);
        repr.sack_ranges = [None; 3];
        self.tcp_emit(now, conn.key, &repr);
    }

    fn tcp_send_syn_ack(&mut self, now: Instant, conn: &mut TcpConn) {
        let mss = conn.key.mss_ceiling(self.cfg.mtu);
        let window = conn
            .offer(self.tcp_budget_room())
            .min(usize::from(u16::MAX)) as u16;
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
        self.tcp_emit(now, conn.key, &repr);
    }

    /// A connection from a host peer of an inbound forward: accept it and open the guest side
    /// with our SYN (the guest's SYN-ACK completes it, its RST refuses it).
    pub(crate) fn tcp_accept_ready(&mut self, now: Instant, fwd: ForwardListener) {
        for _ in 0..ACCEPT_BUDGET {
            let (sock, peer) = match self.host.tcp_accept(fwd.socket) {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("tcp forward: accept failed: {e}");
                    break;
                }
            };
            let Some((guest_ip, remote_ip)) = self.forward_endpoints(peer) else {
                self.stats.tcp_forward_no_guest += 1;
                self.host.tcp_abort(sock);
                continue;
            };
            let key = ConnKey {
                guest: (guest_ip, fwd.guest_port),
                remote: (remote_ip, peer.port()),
            };
            if self.tcp.len() >= MAX_CONNECTIONS || self.tcp.conns.contains_key(&key) {
                self.stats.flows_refused += 1;
                self.host.tcp_abort(sock);
                continue;
            }
            debug!(
                "tcp forward: {peer} -> guest {}:{}",
                guest_ip, fwd.guest_port
            );
            self.stats.flows_opened += 1;
            self.stats.tcp_forwarded += 1;
            let iss = initial_seq(now, &key);
            let conn = TcpConn {
                snd_nxt: iss + 1,
                deadline: Some(now + INITIAL_RTO),
                ..TcpConn::new(key, sock, TcpState::SynSent, iss, now)
            };
            self.tcp_send_syn(now, &conn);
            self.host.set_interest(sock, false, false);
            self.tcp.by_socket.insert(sock, key);
            self.tcp.conns.insert(key, conn);
        }
        self.stats.tcp_connections = self.tcp.len() as u64;
    }

    /// Our SYN offers everything we do: MSS, window scale, SACK, timestamps.
    fn tcp_send_syn(&mut self, now: Instant, conn: &TcpConn) {
        let mss = conn.key.mss_ceiling(self.cfg.mtu);
        let window = conn
            .offer(self.tcp_budget_room())
            .min(usize::from(u16::MAX)) as u16;
        let repr = TcpRepr {
            max_seg_size: Some(mss.min(usize::from(u16::MAX)) as u16),
            window_scale: Some(WINDOW_SHIFT),
            sack_permitted: true,
            timestamp: Some((conn.ts_val(now).wrapping_add(conn.iss.0.rotate_left(13)), 0)),
            ..conn.key.segment(conn.iss, None, flags::SYN, window)
        };
        self.tcp_emit(now, conn.key, &repr);
    }

    /// The header of a segment on a synchronized connection: it acknowledges everything received
    /// (so any ACK the guest is owed goes with it), offers the window, echoes the timestamp and
    /// reports held out-of-order data in as many SACK blocks as fit beside `payload_len` bytes.
    fn tcp_header(
        &mut self,
        now: Instant,
        conn: &mut TcpConn,
        seq: SeqNumber,
        flags: u8,
        payload_len: usize,
    ) -> TcpRepr<'static> {
        let offer = conn.offer(self.tcp_budget_room());
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

    fn tcp_send_ack(&mut self, now: Instant, conn: &mut TcpConn) {
        let repr = self.tcp_header(now, conn, conn.snd_nxt, 0, 0);
        self.tcp_emit(now, conn.key, &repr);
    }

    /// A segment carrying `len` bytes of `to_guest` from sequence number `seq` (and FIN when
    /// `fin`). False when it could not be queued: nothing was sent and the caller must not count
    /// it as sent. A full egress queue parks the connection until the queue drains
    /// ([`Stack::tcp_resume_blocked`]); any other refusal (the guest's MAC unknown) is retried on
    /// the retransmission timer.
    fn tcp_send_data(
        &mut self,
        now: Instant,
        conn: &mut TcpConn,
        seq: SeqNumber,
        len: usize,
        fin: bool,
    ) -> bool {
        let (queue, room) = self.tx_room_for_flow(conn.key.flow_hash());
        if room == 0 {
            self.stats.tcp_queue_waits += 1;
            if !conn.queue_blocked {
                conn.queue_blocked = true;
                self.tcp.blocked.push((conn.key, queue));
            }
            self.tcp.blocked_queues |= 1 << queue;
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
        let mut header = self.tcp_header(now, conn, seq, flags, len);
        header.urgent_at = urgent.map_or(0, |u| u.min(usize::from(u16::MAX)) as u16);
        let seg_size = conn.seg_size();
        let payload = conn.to_guest.slices(offset, len);
        if !self.tcp_emit_segments(now, conn.key, &header, payload, seg_size) {
            conn.deadline.get_or_insert(now + conn.rto);
            return false;
        }
        conn.last_send = Some(now);
        true
    }

    /// Connections that waited for room on egress queue `queue` (or on any, after the queues
    /// were rearranged) send what they can now. Each looks at its own queue again and waits
    /// once more if that is still full.
    pub(crate) fn tcp_resume_blocked(&mut self, now: Instant, queue: usize) {
        let waiting = core::mem::take(&mut self.tcp.blocked);
        let all = self.tcp.blocked_queues == u8::MAX;
        self.tcp.blocked_queues = 0;
        let mut still = Vec::new();
        for (key, q) in waiting {
            if q != queue && !all {
                self.tcp.blocked_queues |= 1 << q;
                still.push((key, q));
                continue;
            }
            let Some(mut conn) = self.tcp.conns.remove(&key) else {
                continue;
            };
            conn.queue_blocked = false;
            self.tcp_output(now, &mut conn);
            self.tcp_update_interest(&mut conn);
            self.tcp_keep(conn);
        }
        // Connections that blocked again while resuming are in `self.tcp.blocked` already.
        self.tcp.blocked.extend(still);
    }

    /// The host could not connect for the guest's SYN (sequence number `isn`): what a real
    /// network would show the guest. A refusal is a RST; an unreachable host or network is the
    /// ICMP error a router would send (RFC 1122 §4.2.3.9: a SYN-SENT connection may abort on
    /// it, and Linux does, with EHOSTUNREACH or ENETUNREACH).
    fn tcp_refuse(&mut self, now: Instant, key: ConnKey, isn: SeqNumber, e: &io::Error) {
        if e.kind() == io::ErrorKind::ConnectionRefused || !crate::udp::is_icmp_error(e) {
            let syn = key.segment(isn, None, flags::SYN, 0);
            self.tcp_send_rst_for(now, key, &syn);
            return;
        }
        // The quoted SYN: the first 8 bytes of TCP (ports and sequence number, which the guest
        // checks against its connection) behind its IP header.
        let mut tcp8 = [0u8; 8];
        tcp8[0..2].copy_from_slice(&key.guest.1.to_be_bytes());
        tcp8[2..4].copy_from_slice(&key.remote.1.to_be_bytes());
        tcp8[4..8].copy_from_slice(&isn.0.to_be_bytes());
        let kind = crate::udp::unreachable_kind(e);
        self.unreachable_to_guest(now, kind, key.guest.0, key.remote.0, IpProtocol::Tcp, &tcp8);
    }

    /// RST for the guest's side of `conn` (the host side refused, reset or timed out).
    fn tcp_reset_guest(&mut self, now: Instant, conn: &TcpConn) {
        let repr = conn
            .key
            .segment(conn.snd_nxt, Some(conn.rcv_nxt), flags::RST, 0);
        self.stats.tcp_resets_sent += 1;
        self.tcp_emit(now, conn.key, &repr);
    }

    /// RFC 9293 §3.10.7.1: the RST answering a segment for no connection.
    fn tcp_send_rst_for(&mut self, now: Instant, key: ConnKey, seg: &TcpRepr) {
        let (seq, ack) = match seg.ack_number {
            Some(a) => (a, None),
            None => (SeqNumber(0), Some(seg.seq_number + seg.segment_len())),
        };
        let repr = key.segment(seq, ack, flags::RST, 0);
        self.stats.tcp_resets_sent += 1;
        self.tcp_emit(now, key, &repr);
    }

    fn tcp_emit(&mut self, now: Instant, key: ConnKey, repr: &TcpRepr) {
        self.tcp_emit_segments(now, key, repr, (repr.payload, &[]), usize::MAX);
    }

    /// Queues a segment for the guest: `repr`'s header (its own payload is not used) and the
    /// payload in one or two slices (the send buffer wraps), copied once, into the frame. With
    /// GUEST_CSUM its checksum is left partial; a payload larger than `segment_size` goes as one
    /// segmentation request (the caller checked that the guest takes TSO for the family).
    fn tcp_emit_segments(
        &mut self,
        now: Instant,
        key: ConnKey,
        repr: &TcpRepr,
        payload: (&[u8], &[u8]),
        segment_size: usize,
    ) -> bool {
        let (src, dst) = (key.remote.0, key.guest.0);
        let partial = self.offloads.partial_checksum;
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
        let emit = |b: &mut [u8]| {
            let (first, second) = payload;
            let at = repr.header_len();
            b[at..at + first.len()].copy_from_slice(first);
            b[at + first.len()..segment_len].copy_from_slice(second);
            repr.emit_around_payload(&mut b[..segment_len], src, dst, partial);
        };
        let sent =
            self.dispatch_ip_offload(now, (src, dst), IpProtocol::Tcp, segment_len, offload, emit);
        if sent {
            self.stats.tcp_tx_segments += 1;
            if large {
                self.stats.tcp_tx_large_segments += 1;
            }
        }
        sent
    }
}

#[cfg(test)]
impl<H: HostIo> Stack<H> {
    /// The first connection's congestion state: (cwnd, ssthresh, not in loss recovery).
    pub(crate) fn tcp_congestion(&self) -> Option<(usize, usize, bool)> {
        let c = self.tcp.conns.values().next()?;
        Some((c.cc.cwnd, c.cc.ssthresh, c.recovery.is_none()))
    }

    /// The first connection's (cwnd, ssthresh) when its last loss recovery ended.
    pub(crate) fn tcp_recovered_with(&self) -> Option<(usize, usize)> {
        self.tcp.conns.values().next()?.recovered_with
    }
}
