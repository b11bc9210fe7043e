//! TCP through the gateway: each guest connection is terminated here and spliced to a host socket.
//!
//! Theory of operation. A guest SYN to a routed address (or the gateway, meaning the host's
//! loopback) starts a non-blocking host connect; only when it succeeds does the guest get its
//! SYN-ACK, so a refused or unreachable host port is a RST for the guest, as on a real network.
//! Data from the guest is acknowledged once it is written to the host socket or held in a bounded
//! buffer (`TO_HOST_CAP`); the window the guest sees is what is left of that buffer, so a slow host
//! reader shrinks the guest's window instead of growing memory. Data from the host is read only
//! while the bounded buffer of bytes not yet acknowledged by the guest (`TO_GUEST_CAP`) has room,
//! and sent within the guest's window; unacknowledged bytes are retransmitted on a timer (RFC 6298
//! with exponential backoff). FINs travel both ways (half-close), a RST from either side resets the
//! other.
//!
//! Not yet: SACK, congestion control beyond the guest's window, timestamps, urgent data, keepalive,
//! inbound TCP forwards. The guest's segments must arrive in order (out-of-order ones are dropped
//! and re-requested by a duplicate ACK), which holds on a virtio link without injected loss.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use log::{debug, trace};

use crate::host::{HostIo, SocketId};
use crate::stack::{ForwardListener, Stack, DEFAULT_TTL};
use crate::time::{Duration, Instant};
use crate::wire::tcp::flags;
use crate::wire::{ipv4, tcp, IpProtocol, Ipv4Address, Ipv4Repr, SeqNumber, TcpPacket, TcpRepr};

/// At most this many connections; a SYN beyond it is refused with a RST (`flows_refused`).
pub const MAX_CONNECTIONS: usize = 1024;
/// Host bytes read but not yet acknowledged by the guest, per connection.
pub const TO_GUEST_CAP: usize = 256 * 1024;
/// Guest bytes acknowledged but not yet written to the host, per connection: the guest's window.
pub const TO_HOST_CAP: usize = 256 * 1024;
/// Our window scale (RFC 7323 §2.2): `TO_HOST_CAP >> 3` fits the 16-bit field.
const WINDOW_SHIFT: u8 = 3;
/// RFC 6298 §2.1: the first RTO is one second.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// The smallest RTO. RFC 6298 §2.4 says one second; like Linux (TCP_RTO_MIN) we allow 200 ms,
/// which matters on a link whose round trip is a fraction of a millisecond.
const MIN_RTO: Duration = Duration::from_millis(200);
/// RFC 5681 §3.2: the third duplicate ACK triggers a fast retransmit.
const DUP_ACK_THRESHOLD: u32 = 3;
/// RFC 6298 §2.5 allows a maximum of at least 60 s.
const MAX_RTO: Duration = Duration::from_secs(60);
/// Retransmissions of the same data before the connection is reset.
const MAX_RETRIES: u32 = 8;
/// How long a host connect may take before the guest gets a RST.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// TIME-WAIT after we closed first (RFC 9293 §3.6.1 asks 2 MSL; a proxy keeps it short, as the
/// guest holds its own TIME-WAIT for the 4-tuple).
const TIME_WAIT: Duration = Duration::from_secs(2);
/// Host bytes read per readiness event.
const READ_CHUNK: usize = 65536;
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
    guest: (Ipv4Address, u16),
    remote: (Ipv4Address, u16),
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
    snd_nxt: SeqNumber,
    /// The guest's window in bytes (scaled).
    snd_wnd: usize,
    snd_shift: u8,
    /// Window scaling is on when the guest offered it (RFC 7323 §1.3).
    scaling: bool,
    mss: usize,
    /// Bytes from `snd_una` on: sent or not, not yet acknowledged.
    to_guest: VecDeque<u8>,
    to_host: VecDeque<u8>,
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
    dup_acks: u32,
    retries: u32,
    /// Retransmission, connect or TIME-WAIT deadline.
    deadline: Option<Instant>,
}

impl TcpConn {
    /// A connection with empty buffers and fresh timers; the caller sets what its opening knows.
    fn new(key: ConnKey, sock: SocketId, state: TcpState, iss: SeqNumber) -> Self {
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
            to_guest: VecDeque::new(),
            to_host: VecDeque::new(),
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
        }
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

    /// The window we advertise, scaled.
    fn window_field(&self) -> u16 {
        let free = TO_HOST_CAP - self.to_host.len();
        let shift = if self.scaling { WINDOW_SHIFT } else { 0 };
        (free >> shift).min(usize::from(u16::MAX)) as u16
    }

    /// Bytes of `to_guest` not sent yet.
    fn unsent(&self) -> usize {
        let in_flight = self.snd_nxt - self.snd_una;
        // The FIN occupies one sequence number past the data.
        let in_flight = in_flight.min(self.to_guest.len());
        self.to_guest.len() - in_flight
    }
}

/// The connection table.
#[derive(Debug, Default)]
pub(crate) struct TcpTable {
    conns: HashMap<ConnKey, TcpConn>,
    by_socket: HashMap<SocketId, ConnKey>,
}

impl TcpTable {
    pub(crate) fn by_socket(&self, sock: SocketId) -> Option<ConnKey> {
        self.by_socket.get(&sock).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }
}

/// Initial sequence numbers: RFC 6528 asks for a keyed hash of the 4-tuple plus a clock; here a
/// clock and the 4-tuple, which keeps them distinct per connection (the guest is the only peer).
fn initial_seq(now: Instant, key: &ConnKey) -> SeqNumber {
    let mut h: u32 = (now.total_micros() / 4) as u32;
    for b in key.guest.0 .0.iter().chain(key.remote.0 .0.iter()) {
        h = h.rotate_left(5) ^ u32::from(*b);
    }
    SeqNumber(h ^ (u32::from(key.guest.1) << 16 | u32::from(key.remote.1)))
}

impl ConnKey {
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
    fn tcp_host_destination(&self, dst: Ipv4Address, port: u16) -> Option<SocketAddr> {
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

    /// A TCP segment from the guest. `packet` is the whole IPv4 packet.
    pub(crate) fn process_tcp(&mut self, now: Instant, ip: &Ipv4Repr, packet: &[u8]) {
        self.stats.tcp_rx_segments += 1;
        let header_len = packet.len() - ip.payload_len;
        let Ok(seg) = TcpPacket::new_checked(&packet[header_len..]) else {
            self.stats.drop_tcp_malformed += 1;
            return;
        };
        let repr = match TcpRepr::parse(&seg, ip.src, ip.dst) {
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
        let key = ConnKey {
            guest: (ip.src, repr.src_port),
            remote: (ip.dst, repr.dst_port),
        };
        let Some(mut conn) = self.tcp.conns.remove(&key) else {
            self.tcp_no_connection(now, key, &repr);
            return;
        };
        self.tcp_segment(now, &mut conn, &repr);
        self.tcp_output(now, &mut conn);
        self.tcp_update_interest(&mut conn);
        self.tcp_keep(conn);
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

    /// Puts a connection back in the table, or lets it go once closed.
    fn tcp_keep(&mut self, mut conn: TcpConn) {
        if conn.state == TcpState::Closed {
            self.tcp_release(&mut conn, false);
        } else {
            self.tcp.conns.insert(conn.key, conn);
        }
        self.stats.tcp_connections = self.tcp.len() as u64;
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
        if self.tcp.len() >= MAX_CONNECTIONS {
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
                self.tcp_send_rst_for(now, key, repr);
                return;
            }
        };
        debug!("tcp: {}:{} -> {dst}", key.guest.0, key.guest.1);
        self.stats.flows_opened += 1;
        let iss = initial_seq(now, &key);
        let scaling = repr.window_scale.is_some();
        let mss_ceiling = usize::from(self.cfg.mtu) - ipv4::HEADER_LEN - tcp::HEADER_LEN;
        let conn = TcpConn {
            rcv_nxt: repr.seq_number + 1,
            snd_wnd: usize::from(repr.window_len),
            snd_shift: repr.window_scale.unwrap_or(0).min(14),
            scaling,
            // RFC 9293 §3.7.1: without the option the peer takes 536.
            mss: usize::from(repr.max_seg_size.unwrap_or(536)).clamp(64, mss_ceiling),
            deadline: Some(now + CONNECT_TIMEOUT),
            ..TcpConn::new(key, sock, TcpState::Connecting, iss)
        };
        self.host.set_interest(sock, false, true);
        self.tcp.by_socket.insert(sock, key);
        self.tcp.conns.insert(key, conn);
        self.stats.tcp_connections = self.tcp.len() as u64;
    }

    /// RFC 9293 §3.10.7.4, for an existing connection.
    fn tcp_segment(&mut self, now: Instant, conn: &mut TcpConn, repr: &TcpRepr) {
        if repr.flags & flags::RST != 0 {
            // Accept a RST in the window (RFC 5961 §3 would ask for an exact match and a challenge
            // ACK otherwise; the guest is not an off-path attacker).
            debug!("tcp: guest reset {:?}", conn.key);
            self.tcp_release(conn, true);
            conn.set_state(TcpState::Closed);
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
                conn.rcv_nxt = repr.seq_number + 1;
                conn.snd_una = conn.iss + 1;
                conn.snd_wnd = usize::from(repr.window_len);
                conn.scaling = repr.window_scale.is_some();
                conn.snd_shift = repr.window_scale.unwrap_or(0).min(14);
                let mss_ceiling = usize::from(self.cfg.mtu) - ipv4::HEADER_LEN - tcp::HEADER_LEN;
                conn.mss = usize::from(repr.max_seg_size.unwrap_or(536)).clamp(64, mss_ceiling);
                conn.retries = 0;
                conn.rto = INITIAL_RTO;
                conn.deadline = None;
                conn.set_state(TcpState::Established);
                self.tcp_send_ack(now, conn);
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
        let Some(ack) = repr.ack_number else {
            return;
        };
        // ACK processing.
        let window = usize::from(repr.window_len) << if conn.scaling { conn.snd_shift } else { 0 };
        let duplicate = ack == conn.snd_una
            && conn.snd_nxt != conn.snd_una
            && repr.payload.is_empty()
            && repr.flags & (flags::SYN | flags::FIN) == 0
            && window == conn.snd_wnd;
        if duplicate && conn.state != TcpState::SynReceived {
            conn.dup_acks += 1;
            if conn.dup_acks == DUP_ACK_THRESHOLD {
                // RFC 5681 §3.2: resend what the guest is missing without waiting for the RTO.
                self.stats.tcp_fast_retransmits += 1;
                conn.rtt_probe = None;
                let n = conn.to_guest.len().min(conn.mss);
                let seq = conn.snd_una;
                if n > 0 {
                    self.tcp_send_data(now, conn, seq, 0, n, false);
                } else if conn.fin_sent {
                    self.tcp_send_data(now, conn, seq, 0, 0, true);
                }
            }
        }
        if ack.is_after(conn.snd_una) && !ack.is_after(conn.snd_nxt) {
            conn.dup_acks = 0;
            if let Some((end, sent)) = conn.rtt_probe {
                if !ack.is_before(end) {
                    conn.sample_rtt(now - sent);
                    conn.rtt_probe = None;
                }
            }
            let mut acked = ack - conn.snd_una;
            if conn.state == TcpState::SynReceived {
                acked -= 1; // our SYN
                conn.set_state(TcpState::Established);
            }
            let data_acked = acked.min(conn.to_guest.len());
            conn.to_guest.drain(..data_acked);
            if conn.guest_urgent.is_some_and(|u| u.is_before(ack)) {
                conn.guest_urgent = None;
            }
            let fin_acked = conn.fin_sent && ack == conn.snd_nxt && conn.to_guest.is_empty();
            conn.snd_una = ack;
            conn.retries = 0;
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
        } else if ack.is_after(conn.snd_nxt) {
            // Acknowledges what we never sent: RFC 9293 says send an ACK and drop.
            self.tcp_send_ack(now, conn);
            return;
        }
        conn.snd_wnd = window;
        if conn.state == TcpState::Closed {
            return;
        }

        // Data and FIN, in order only.
        let has_data = !repr.payload.is_empty();
        let has_fin = repr.flags & flags::FIN != 0;
        if !has_data && !has_fin {
            return;
        }
        if repr.seq_number != conn.rcv_nxt || conn.guest_fin {
            // Out of order or duplicate: a duplicate ACK asks again for what we miss.
            if has_data {
                self.stats.drop_tcp_out_of_order += 1;
            }
            self.tcp_send_ack(now, conn);
            return;
        }
        let room = TO_HOST_CAP - conn.to_host.len();
        let take = repr.payload.len().min(room);
        if take < repr.payload.len() {
            // Beyond our window: the guest will send the rest again.
            self.stats.drop_tcp_window_full += 1;
        }
        if repr.flags & flags::URG != 0 && repr.urgent_at > 0 {
            // RFC 9293 §3.8.5 (and RFC 6093): the urgent pointer points just past the urgent byte,
            // as Linux and BSD send it. A byte beyond this segment is left to a later one.
            let at = usize::from(repr.urgent_at) - 1;
            if at < take {
                conn.host_urgent = Some(conn.to_host.len() + at);
                self.stats.tcp_urgent_from_guest += 1;
            }
        }
        conn.to_host.extend(&repr.payload[..take]);
        conn.rcv_nxt = conn.rcv_nxt + take;
        if has_fin && take == repr.payload.len() {
            conn.rcv_nxt = conn.rcv_nxt + 1;
            conn.guest_fin = true;
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
        self.tcp_flush_to_host(conn);
        self.tcp_send_ack(now, conn);
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
                    debug!("tcp {:?}: host write failed: {e}", conn.key);
                    conn.to_host.clear();
                    break;
                }
            }
        }
        if conn.guest_fin && conn.to_host.is_empty() && !conn.host_shut {
            let _ = self.host.tcp_shutdown_write(conn.sock);
            conn.host_shut = true;
        }
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
                    self.tcp_reset_guest(now, &conn);
                    conn.set_state(TcpState::Closed);
                }
            }
            self.tcp_update_interest(&mut conn);
            self.tcp_keep(conn);
            return;
        }
        self.tcp_flush_to_host(&mut conn);
        // Read while there is room for what the guest has not acknowledged.
        let mut buf = std::mem::take(&mut self.host_buf);
        while !conn.host_eof && conn.to_guest.len() < TO_GUEST_CAP {
            let want = (TO_GUEST_CAP - conn.to_guest.len()).min(READ_CHUNK);
            // The kernel stops a read at the urgent mark: the byte at the mark comes first in the
            // next read, inline (SO_OOBINLINE).
            if self.host.tcp_at_mark(sock).unwrap_or(false) && conn.guest_urgent.is_none() {
                conn.guest_urgent = Some(conn.snd_una + conn.to_guest.len());
                self.stats.tcp_urgent_from_host += 1;
            }
            match self.host.tcp_recv(sock, &mut buf[..want]) {
                Ok(0) => conn.host_eof = true,
                Ok(n) => {
                    conn.to_guest.extend(&buf[..n]);
                    self.stats.tcp_rx_host_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The host peer reset: so does the guest's connection.
                    debug!("tcp {:?}: host read failed: {e}", conn.key);
                    self.stats.tcp_host_resets += 1;
                    self.tcp_reset_guest(now, &conn);
                    conn.set_state(TcpState::Closed);
                    break;
                }
            }
        }
        self.host_buf = buf;
        if conn.state != TcpState::Closed {
            self.tcp_output(now, &mut conn);
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
            && conn.to_guest.len() < TO_GUEST_CAP;
        let writable = connecting || !conn.to_host.is_empty();
        self.host.set_interest(conn.sock, readable, writable);
    }

    /// Sends new data within the guest's window, then our FIN when the host is done.
    fn tcp_output(&mut self, now: Instant, conn: &mut TcpConn) {
        if matches!(
            conn.state,
            TcpState::Connecting | TcpState::SynSent | TcpState::SynReceived | TcpState::Closed
        ) {
            return;
        }
        loop {
            let in_flight = conn.snd_nxt - conn.snd_una;
            let unsent = conn.unsent();
            let window_left = conn.snd_wnd.saturating_sub(in_flight);
            let n = unsent.min(window_left).min(conn.mss);
            if n == 0 {
                break;
            }
            let offset = conn.to_guest.len() - unsent;
            let seq = conn.snd_nxt;
            self.tcp_send_data(now, conn, seq, offset, n, false);
            conn.snd_nxt = conn.snd_nxt + n;
            if conn.rtt_probe.is_none() {
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
            self.tcp_send_data(now, conn, seq, conn.to_guest.len(), 0, true);
            conn.snd_nxt = conn.snd_nxt + 1;
            conn.fin_sent = true;
            conn.deadline.get_or_insert(now + conn.rto);
            match conn.state {
                TcpState::Established => conn.set_state(TcpState::FinWait1),
                TcpState::CloseWait => conn.set_state(TcpState::LastAck),
                _ => {}
            }
        }
    }

    /// Timers: connect timeout, retransmission, TIME-WAIT.
    pub(crate) fn tcp_poll(&mut self, now: Instant) {
        let due: Vec<ConnKey> = self
            .tcp
            .conns
            .values()
            .filter(|c| c.deadline.is_some_and(|d| d <= now))
            .map(|c| c.key)
            .collect();
        for key in due {
            let Some(mut conn) = self.tcp.conns.remove(&key) else {
                continue;
            };
            conn.deadline = None;
            match conn.state {
                TcpState::Connecting => {
                    self.stats.tcp_refused += 1;
                    self.tcp_reset_guest(now, &conn);
                    conn.set_state(TcpState::Closed);
                }
                TcpState::TimeWait => conn.set_state(TcpState::Closed),
                _ if conn.snd_nxt == conn.snd_una && conn.unsent() > 0 && conn.snd_wnd == 0 => {
                    // Zero-window probe: one byte past the window; the guest answers with its
                    // current window (and takes the byte if it has room by then).
                    self.stats.tcp_window_probes += 1;
                    let offset = conn.to_guest.len() - conn.unsent();
                    let seq = conn.snd_nxt;
                    self.tcp_send_data(now, &mut conn, seq, offset, 1, false);
                    conn.snd_nxt = conn.snd_nxt + 1;
                    conn.rto = (conn.rto + conn.rto).min(MAX_RTO);
                    conn.deadline = Some(now + conn.rto);
                }
                _ if conn.snd_nxt != conn.snd_una => {
                    conn.retries += 1;
                    if conn.retries > MAX_RETRIES {
                        debug!("tcp {:?}: guest stopped answering; reset", conn.key);
                        self.tcp_release(&mut conn, true);
                        self.tcp_reset_guest(now, &conn);
                        conn.set_state(TcpState::Closed);
                        self.tcp_keep(conn);
                        continue;
                    }
                    self.stats.tcp_retransmits += 1;
                    // RFC 6298 §5.5-5.6: back off and retransmit the earliest unacknowledged;
                    // Karn's algorithm: no RTT sample from a retransmitted segment.
                    conn.rto = (conn.rto + conn.rto).min(MAX_RTO);
                    conn.rtt_probe = None;
                    conn.dup_acks = 0;
                    if conn.state == TcpState::SynReceived {
                        self.tcp_send_syn_ack(now, &mut conn);
                    } else if conn.state == TcpState::SynSent {
                        self.tcp_send_syn(now, &conn);
                    } else {
                        // Go back to snd_una and send again what the window allows.
                        let fin_was_sent = conn.fin_sent && conn.unsent() == 0;
                        conn.snd_nxt = conn.snd_una;
                        if fin_was_sent && conn.to_guest.is_empty() {
                            conn.fin_sent = false;
                            conn.state = match conn.state {
                                TcpState::FinWait1 => TcpState::Established,
                                TcpState::LastAck => TcpState::CloseWait,
                                TcpState::Closing => TcpState::CloseWait,
                                s => s,
                            };
                        }
                        self.tcp_output(now, &mut conn);
                    }
                    conn.deadline = Some(now + conn.rto);
                }
                _ => {}
            }
            self.tcp_keep(conn);
        }
    }

    fn tcp_send_syn_ack(&mut self, now: Instant, conn: &mut TcpConn) {
        let mss = usize::from(self.cfg.mtu) - ipv4::HEADER_LEN - tcp::HEADER_LEN;
        let window = (TO_HOST_CAP - conn.to_host.len()).min(usize::from(u16::MAX)) as u16;
        let repr = TcpRepr {
            max_seg_size: Some(mss.min(usize::from(u16::MAX)) as u16),
            window_scale: conn.scaling.then_some(WINDOW_SHIFT),
            ..conn
                .key
                .segment(conn.iss, Some(conn.rcv_nxt), flags::SYN, window)
        };
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
            let (Some(guest_ip), Some(remote_ip)) =
                (self.guest_ipv4(), self.peer_as_seen_by_guest(peer))
            else {
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
                ..TcpConn::new(key, sock, TcpState::SynSent, iss)
            };
            self.tcp_send_syn(now, &conn);
            self.host.set_interest(sock, false, false);
            self.tcp.by_socket.insert(sock, key);
            self.tcp.conns.insert(key, conn);
        }
        self.stats.tcp_connections = self.tcp.len() as u64;
    }

    fn tcp_send_syn(&mut self, now: Instant, conn: &TcpConn) {
        let mss = usize::from(self.cfg.mtu) - ipv4::HEADER_LEN - tcp::HEADER_LEN;
        let window = (TO_HOST_CAP - conn.to_host.len()).min(usize::from(u16::MAX)) as u16;
        let repr = TcpRepr {
            max_seg_size: Some(mss.min(usize::from(u16::MAX)) as u16),
            window_scale: Some(WINDOW_SHIFT),
            ..conn.key.segment(conn.iss, None, flags::SYN, window)
        };
        self.tcp_emit(now, conn.key, &repr);
    }

    fn tcp_send_ack(&mut self, now: Instant, conn: &TcpConn) {
        let repr = conn
            .key
            .segment(conn.snd_nxt, Some(conn.rcv_nxt), 0, conn.window_field());
        self.tcp_emit(now, conn.key, &repr);
    }

    /// A segment carrying `len` bytes of `to_guest` from `offset` (and FIN when `fin`).
    fn tcp_send_data(
        &mut self,
        now: Instant,
        conn: &mut TcpConn,
        seq: SeqNumber,
        offset: usize,
        len: usize,
        fin: bool,
    ) {
        let window_len = conn.window_field();
        let push = if conn.unsent() == len { flags::PSH } else { 0 };
        // RFC 9293 §3.8.5: URG with the pointer just past the urgent byte, when it is in this
        // segment (or, as Linux does, in a later one still: the pointer may lie beyond).
        let urgent = conn
            .guest_urgent
            .filter(|u| !u.is_before(seq))
            .map(|u| u - seq + 1);
        let data = conn.to_guest.make_contiguous();
        let payload = &data[offset..offset + len];
        let flags = if fin { flags::FIN } else { push } | urgent.map_or(0, |_| flags::URG);
        let repr = TcpRepr {
            urgent_at: urgent.map_or(0, |u| u.min(usize::from(u16::MAX)) as u16),
            payload,
            ..conn.key.segment(seq, Some(conn.rcv_nxt), flags, window_len)
        };
        let key = conn.key;
        self.tcp_emit(now, key, &repr);
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
        let ip = Ipv4Repr {
            src: key.remote.0,
            dst: key.guest.0,
            protocol: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            ttl: DEFAULT_TTL,
        };
        if self.dispatch_ipv4(now, None, &ip, |b| repr.emit_v4(b, ip.src, ip.dst, false)) {
            self.stats.tcp_tx_segments += 1;
        }
    }
}
