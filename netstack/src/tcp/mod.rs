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
//! done once per connection when the device ends the batch ([`Stack::flush`]). Until then their
//! payload stays where the device read it, in the ingress buffer (`tohost`): one copy in
//! userspace.
//!
//! Host → guest. The host socket is read only while the bytes the guest has not acknowledged fit
//! `TO_GUEST_CAP`; they are sent within the guest's window and NewReno's congestion window
//! (`congestion`). Losses are repaired by SACK-based recovery (RFC 6675, `scoreboard`), NewReno's
//! partial ACKs (RFC 6582) when the guest does not do SACK, and the retransmission timer
//! (RFC 6298, exponential backoff). Timestamps (RFC 7323) give RTT samples and PAWS.
//!
//! Both ways: FINs (half-close), RSTs, urgent data (MSG_OOB on the host side), keepalive probes
//! to an idle guest (reset when it stops answering), TIME-WAIT.
//!
//! Layout. A connection (`conn`: its state and the arithmetic that needs nothing else) lives in
//! the table and is changed in place: each entry point on `Stack` looks it up once and hands it,
//! with a `Cx` (the rest of the stack and the table's bookkeeping, borrowed beside it), to the
//! transitions: segments in (`input`), segments out (`output`), time in (`timer`, with the
//! heap of deadlines), the host socket (`host`). After each, `Cx::settle` counts its buffers,
//! schedules its next deadline and lets it go once closed. What the transitions reach beyond the
//! connection goes through the `Env` trait, which the stack's `Core` implements; `tests` runs a
//! connection against a recording environment, without a `Stack`.

mod congestion;
mod conn;
mod host;
mod input;
mod ooo;
mod output;
mod scoreboard;
mod sendbuf;
#[cfg(test)]
mod tests;
mod timer;
mod tohost;

use std::collections::HashMap;
use std::io;

use log::debug;

use std::net::SocketAddr;

use crate::config::{Config, MIN_TCP_MEMORY};
use crate::host::{HostIo, SocketId};
use crate::offload::{FrameMeta, GuestOffloads, PayloadOffload};
use crate::stack::{Core, ForwardListener, IpPayload, Stack};
use crate::stats::Stats;
use crate::time::{Duration, Instant};
use crate::udp::Unreachable;
use crate::wire::tcp::flags;
use crate::wire::{IpAddress, IpProtocol, Ipv6Address, SeqNumber, TcpPacket, TcpRepr};
pub(crate) use tohost::IngressBuffer;
use tohost::ToHost;
pub use tohost::INGRESS_CAPACITY;

pub(crate) use conn::ConnKey;
pub use conn::TcpState;
use conn::{initial_seq, TcpConn};
use timer::Timers;

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
/// The least a read from a host socket asks for (more when the send ring has more room allocated
/// already: see `Cx::host_ready`).
const READ_CHUNK: usize = 65536;
/// Guest data of at least this much in one segment goes to the host socket straight from the
/// guest's frame when nothing waits before it; smaller pieces gather in `to_host` and go in one
/// write at the end of the batch (see [`Stack::flush`]). A write to a loopback socket wakes its
/// reader: one per 64 KiB is cheap, one per 1448-byte segment was most of the cost of a guest
/// upload without offloads.
const DIRECT_WRITE_MIN: usize = 16 * 1024;
/// Connections accepted per forward listener wake-up.
const ACCEPT_BUDGET: usize = 16;

/// The connection table: the connections, and the bookkeeping shared between them.
#[derive(Debug, Default)]
pub(crate) struct TcpTable {
    conns: HashMap<ConnKey, TcpConn>,
    book: Book,
}

/// What the table keeps beside its connections, which a connection's transitions reach (through
/// [`Cx`]) while the connection itself is borrowed from `conns`.
#[derive(Debug, Default)]
pub(crate) struct Book {
    by_socket: HashMap<SocketId, ConnKey>,
    /// Connections waiting for room in their egress queue (each at most once: at most one per
    /// connection), with the queue they wait on.
    blocked: Vec<(ConnKey, usize)>,
    /// Bit `q` set: some connection in `blocked` waits on queue `q`.
    blocked_queues: u8,
    /// Bytes buffered across all connections (each as of when it was last settled).
    buffered: usize,
    /// The shards `Config::tcp_memory` is split among (0 counts as 1; see [`Stack::sharded`]).
    pub(crate) shards: usize,
    /// Connections that stopped reading their host socket for the memory budget.
    starved: Vec<ConnKey>,
    /// Connections with guest segments taken in the current batch whose consequences (the write
    /// to the host, the ACK, new data for the guest) wait for [`Stack::flush`]; each at most
    /// once, so at most [`MAX_CONNECTIONS`].
    batch: Vec<ConnKey>,
    /// Every connection's next deadline.
    timers: Timers,
    /// Scratch for [`Stack::tcp_poll`]: the connections whose timers are due.
    due: Vec<ConnKey>,
    /// The id the next connection gets ([`TcpConn::id`]).
    next_id: u64,
    /// The buffer guest frames are read into, whose payload connections borrow until the end of
    /// the batch (see `tohost`).
    pub(crate) ingress: IngressBuffer,
}

/// Data of a queued segment that stays in its connection's send buffer until the device takes
/// the frame ([`crate::stack::FrameParts`]): `len` bytes from sequence number `seq`. The send
/// buffer keeps every byte until the guest acknowledges it, so the bytes are there at delivery
/// unless the guest acknowledged them meanwhile (a retransmission overtaken by an ACK: nothing
/// to send) or the connection is gone; the frame is then dropped (`drop_tcp_stale_segment`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PayloadRef {
    key: ConnKey,
    /// The connection's [`TcpConn::id`]: a new connection on the same 4-tuple is another one.
    conn: u64,
    seq: SeqNumber,
    pub(crate) len: usize,
}

/// What a connection's transitions reach beyond the connection and the table: host sockets,
/// counters, configuration, the egress path. The stack's `Core` is one; a test's recording
/// environment is another (`tcp/tests.rs`), which runs the state machine without a `Stack`.
pub(crate) trait Env {
    type Host: HostIo;
    fn host(&mut self) -> &mut Self::Host;
    fn stats(&mut self) -> &mut Stats;
    fn config(&self) -> &Config;
    /// The TCP options new connections negotiate.
    fn tcp_options(&self) -> crate::config::TcpOptions {
        self.config().tcp_options
    }
    /// The offload metadata of the guest frame being processed.
    fn inbound(&self) -> FrameMeta;
    /// What the guest's driver accepts in frames to it.
    fn offloads(&self) -> GuestOffloads;
    /// The egress queue a flow's frames go to, and the frames it can still take.
    fn tx_room_for_flow(&self, hash: u32) -> (usize, usize);
    /// Queues an IP packet for the guest (see `Core::dispatch_ip_offload`); false when it was
    /// not queued.
    fn send_ip(
        &mut self,
        now: Instant,
        ends: (IpAddress, IpAddress),
        protocol: IpProtocol,
        payload_len: usize,
        offload: PayloadOffload,
        payload: impl IpPayload,
    ) -> bool;
    /// The ICMP error a router would send the guest about its packet to `remote`.
    fn unreachable_to_guest(
        &mut self,
        now: Instant,
        kind: Unreachable,
        guest: IpAddress,
        remote: IpAddress,
        protocol: IpProtocol,
        l4_head: &[u8],
    );
    /// Where a guest connection to an IPv6 address goes on the host.
    fn ipv6_host_destination(&self, dst: Ipv6Address, port: u16) -> Option<SocketAddr>;
}

impl<H: HostIo> Env for Core<H> {
    type Host = H;

    fn host(&mut self) -> &mut H {
        &mut self.host
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.stats
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    fn tcp_options(&self) -> crate::config::TcpOptions {
        self.tcp_options
    }

    fn inbound(&self) -> FrameMeta {
        self.inbound
    }

    fn offloads(&self) -> GuestOffloads {
        self.offloads
    }

    fn tx_room_for_flow(&self, hash: u32) -> (usize, usize) {
        Core::tx_room_for_flow(self, hash)
    }

    fn send_ip(
        &mut self,
        now: Instant,
        ends: (IpAddress, IpAddress),
        protocol: IpProtocol,
        payload_len: usize,
        offload: PayloadOffload,
        payload: impl IpPayload,
    ) -> bool {
        self.dispatch_ip_offload(now, ends, protocol, payload_len, offload, payload)
    }

    fn unreachable_to_guest(
        &mut self,
        now: Instant,
        kind: Unreachable,
        guest: IpAddress,
        remote: IpAddress,
        protocol: IpProtocol,
        l4_head: &[u8],
    ) {
        Core::unreachable_to_guest(self, now, kind, guest, remote, protocol, l4_head)
    }

    fn ipv6_host_destination(&self, dst: Ipv6Address, port: u16) -> Option<SocketAddr> {
        Core::ipv6_host_destination(self, dst, port)
    }
}

/// A connection's surroundings while one of its transitions runs: its environment and the
/// table's bookkeeping. The connection itself is a separate `&mut TcpConn`, changed in place in
/// the table.
pub(crate) struct Cx<'a, E: Env> {
    core: &'a mut E,
    book: &'a mut Book,
}

impl<E: Env> Cx<'_, E> {
    /// This table's share of `Config::tcp_memory`: the whole, or an even part per shard (at
    /// least [`MIN_TCP_MEMORY`], a connection's window both ways).
    fn memory_budget(&self) -> usize {
        let total = self.core.config().tcp_memory;
        (total / self.book.shards.max(1))
            .max(MIN_TCP_MEMORY)
            .min(total)
    }

    /// Bytes left of the TCP memory budget.
    fn budget_room(&self) -> usize {
        self.memory_budget().saturating_sub(self.book.buffered)
    }

    /// After a transition: the connection's buffers counted against the memory budget, its
    /// host socket let go once it is closed, its next deadline in the timer heap. True when it
    /// is closed and must leave the table.
    fn settle(&mut self, conn: &mut TcpConn) -> bool {
        let closed = conn.state == TcpState::Closed;
        let held = if closed { 0 } else { conn.buffered() };
        self.book.buffered = self.book.buffered - conn.accounted + held;
        conn.accounted = held;
        if closed {
            self.release(conn, false);
            return true;
        }
        let keepalive = self.core.config().tcp_keepalive;
        self.book.timers.schedule(conn, keepalive.as_ref());
        false
    }
}

impl Book {
    fn conn_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl TcpTable {
    /// A table of one of `shards` shards: its share of the TCP memory is an even part.
    pub(crate) fn for_shards(shards: usize) -> Self {
        let mut t = TcpTable::default();
        t.book.shards = shards;
        t
    }

    /// Whether connections wait for the end of the batch ([`Stack::flush`]).
    pub(crate) fn has_batch(&self) -> bool {
        !self.book.batch.is_empty()
    }

    /// The buffer guest frames are read into (see `tohost`).
    pub(crate) fn ingress(&mut self) -> &mut IngressBuffer {
        &mut self.book.ingress
    }

    pub(crate) fn ingress_ref(&self) -> &IngressBuffer {
        &self.book.ingress
    }

    /// The batch is over and every connection wrote or copied what it was lent: the ingress
    /// buffer's next frame goes at its start.
    pub(crate) fn end_lending(&mut self) {
        debug_assert!(self.conns.values().all(|c| !c.to_host.has_lent()));
        self.book.ingress.reset();
    }

    /// Whether some connection waits for room on egress queue `q`.
    pub(crate) fn waits_on(&self, q: usize) -> bool {
        self.book.blocked_queues & (1 << q) != 0
    }

    /// Every waiting connection looks at its queue again on the next dispatch (the queues were
    /// rearranged).
    pub(crate) fn requeue_blocked(&mut self) {
        if !self.book.blocked.is_empty() {
            self.book.blocked_queues = u8::MAX;
        }
    }

    pub(crate) fn by_socket(&self, sock: SocketId) -> Option<ConnKey> {
        self.book.by_socket.get(&sock).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// The bytes a queued segment left in its send buffer, if they are still there.
    pub(crate) fn payload(&self, r: &PayloadRef) -> Option<(&[u8], &[u8])> {
        let conn = self.conns.get(&r.key).filter(|c| c.id == r.conn)?;
        if r.seq.is_before(conn.snd_una) {
            return None;
        }
        let offset = r.seq - conn.snd_una;
        (offset + r.len <= conn.to_guest.len()).then(|| conn.to_guest.slices(offset, r.len))
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

    /// The earliest deadline in the timer heap (possibly one that has moved later meanwhile:
    /// [`Stack::tcp_poll`] then finds nothing due and schedules it anew).
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.book.timers.next()
    }
}

impl<H: HostIo> Stack<H> {
    /// The connections, and a [`Cx`] over the rest of the stack and the table's bookkeeping,
    /// borrowed apart: how a connection is changed in place.
    fn tcp_parts(&mut self) -> (&mut HashMap<ConnKey, TcpConn>, Cx<'_, Core<H>>) {
        let Stack { core, tcp } = self;
        let cx = Cx {
            core,
            book: &mut tcp.book,
        };
        (&mut tcp.conns, cx)
    }

    /// Runs `f` on connection `key` in place, with the rest of the stack beside it, then settles
    /// the connection (see [`Cx::settle`]). False when there is no such connection.
    fn tcp_with(
        &mut self,
        key: ConnKey,
        f: impl FnOnce(&mut Cx<'_, Core<H>>, &mut TcpConn),
    ) -> bool {
        let (conns, mut cx) = self.tcp_parts();
        let Some(conn) = conns.get_mut(&key) else {
            return false;
        };
        f(&mut cx, conn);
        if cx.settle(conn) {
            conns.remove(&key);
        }
        self.tcp_settled();
        true
    }

    /// The table after a change: its gauges, and the connections that stopped reading for the
    /// memory budget go on once there is room again (an eighth of the budget, so that readers
    /// wake in batches). The timer heap is compacted when stale entries outnumber the
    /// connections (see `timer::Timers`).
    fn tcp_settled(&mut self) {
        let (conns, mut cx) = self.tcp_parts();
        cx.core.stats.tcp_connections = conns.len() as u64;
        cx.core.stats.tcp_buffered_bytes = cx.book.buffered as u64;
        if !cx.book.starved.is_empty() && cx.budget_room() >= cx.memory_budget() / 8 {
            for key in core::mem::take(&mut cx.book.starved) {
                if let Some(c) = conns.get_mut(&key) {
                    c.memory_starved = false;
                    cx.update_interest(c);
                }
            }
        }
        cx.book.timers.compact(conns);
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
        let found = self.tcp_with(key, |cx, conn| {
            cx.segment(now, conn, &repr);
            if conn.state != TcpState::Closed && !conn.host_write_failed {
                // The rest waits for the end of the batch: the guest's segments of one
                // notification are written to the host in one go, acknowledged with one ACK (a
                // stretch ACK, as from a receiver with GRO), and answered with one burst of data.
                if !conn.batched {
                    conn.batched = true;
                    cx.book.batch.push(key);
                }
                return;
            }
            cx.after_input(now, conn);
        });
        if !found {
            self.tcp_no_connection(now, key, &repr);
        }
    }

    /// The end of a batch of guest frames: every connection that took segments in it does what
    /// follows them ([`Stack::flush`]).
    pub(crate) fn tcp_flush_batch(&mut self, now: Instant) {
        let mut batch = core::mem::take(&mut self.tcp.book.batch);
        for key in batch.drain(..) {
            self.tcp_with(key, |cx, conn| {
                conn.batched = false;
                cx.after_input(now, conn);
            });
        }
        // The vector's allocation is kept for the next batch.
        if self.tcp.book.batch.is_empty() {
            self.tcp.book.batch = batch;
        }
    }

    /// The ingress buffer is full: the connections of the batch copy what they were lent (the
    /// only ones that hold any: see `Cx::flush_to_host`), and it starts again.
    pub(crate) fn tcp_spill_lent(&mut self) {
        let (conns, mut cx) = self.tcp_parts();
        let batch = core::mem::take(&mut cx.book.batch);
        for key in &batch {
            if let Some(conn) = conns.get_mut(key) {
                cx.spill(conn);
            }
        }
        cx.book.batch = batch;
        self.tcp.end_lending();
    }

    /// A segment for no connection: a SYN opens one, anything else but a RST is answered with RST
    /// (RFC 9293 §3.10.7.1).
    fn tcp_no_connection(&mut self, now: Instant, key: ConnKey, repr: &TcpRepr) {
        if repr.flags & flags::RST != 0 {
            return;
        }
        let is_syn = repr.flags & flags::SYN != 0 && repr.ack_number.is_none();
        let (conns, mut cx) = self.tcp_parts();
        if !is_syn {
            cx.core.stats().drop_tcp_no_connection += 1;
            cx.send_rst_for(now, key, repr);
            return;
        }
        let Some(dst) = cx.host_destination(key.remote.0, key.remote.1) else {
            cx.core.stats().tcp_refused += 1;
            cx.send_rst_for(now, key, repr);
            return;
        };
        if conns.len() >= MAX_CONNECTIONS && !cx.evict_embryonic(now, conns) {
            cx.core.stats().flows_refused += 1;
            cx.send_rst_for(now, key, repr);
            return;
        }
        let sock = match cx.core.host().tcp_connect(dst) {
            Ok(s) => s,
            Err(e) => {
                debug!("tcp: connect to {dst} refused by the host: {e}");
                cx.core.stats().flows_refused += 1;
                cx.core.stats().tcp_refused += 1;
                cx.refuse(now, key, repr.seq_number, &e);
                return;
            }
        };
        debug!("tcp: {}:{} -> {dst}", key.guest.0, key.guest.1);
        cx.core.stats().flows_opened += 1;
        let iss = initial_seq(now, &key);
        let mut conn = TcpConn {
            deadline: Some(now + CONNECT_TIMEOUT),
            allowed: cx.core.tcp_options(),
            ..TcpConn::new(key, cx.book.conn_id(), sock, TcpState::Connecting, iss, now)
        };
        conn.negotiate(repr, key.mss_ceiling(cx.core.config().mtu));
        cx.core.host().set_interest(sock, false, true);
        cx.book.by_socket.insert(sock, key);
        cx.settle(&mut conn);
        conns.insert(key, conn);
        self.tcp_settled();
    }

    /// Host readiness for a TCP connection.
    pub(crate) fn tcp_host_ready(&mut self, now: Instant, sock: SocketId) {
        let Some(key) = self.tcp.by_socket(sock) else {
            return;
        };
        self.tcp_with(key, |cx, conn| cx.host_ready(now, conn));
    }

    /// Timers: connect timeout, retransmission and persist, TIME-WAIT, delayed ACK, keepalive.
    pub(crate) fn tcp_poll(&mut self, now: Instant) {
        // The due connections are listed in a vector kept between ticks (at most one entry per
        // connection): a tick allocates nothing.
        let mut due = core::mem::take(&mut self.tcp.book.due);
        let TcpTable { conns, book } = &mut self.tcp;
        book.timers.take_due(now, conns, &mut due);
        let keepalive = self.cfg.tcp_keepalive;
        for key in due.drain(..) {
            self.tcp_with(key, |cx, conn| cx.on_timers(now, conn, keepalive));
        }
        self.tcp.book.due = due;
    }

    /// Connections that waited for room on egress queue `queue` (or on any, after the queues
    /// were rearranged) send what they can now. Each looks at its own queue again and waits
    /// once more if that is still full.
    pub(crate) fn tcp_resume_blocked(&mut self, now: Instant, queue: usize) {
        let waiting = core::mem::take(&mut self.tcp.book.blocked);
        let all = self.tcp.book.blocked_queues == u8::MAX;
        self.tcp.book.blocked_queues = 0;
        let mut still = Vec::new();
        for (key, q) in waiting {
            if q != queue && !all {
                self.tcp.book.blocked_queues |= 1 << q;
                still.push((key, q));
                continue;
            }
            self.tcp_with(key, |cx, conn| {
                conn.queue_blocked = false;
                cx.output(now, conn);
                cx.update_interest(conn);
            });
        }
        // Connections that blocked again while resuming are in `blocked` already.
        self.tcp.book.blocked.extend(still);
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
            let id = self.tcp.book.conn_id();
            let mut conn = TcpConn {
                snd_nxt: iss + 1,
                deadline: Some(now + INITIAL_RTO),
                allowed: self.tcp_options,
                ..TcpConn::new(key, id, sock, TcpState::SynSent, iss, now)
            };
            let (conns, mut cx) = self.tcp_parts();
            cx.send_syn(now, &conn);
            cx.core.host().set_interest(sock, false, false);
            cx.book.by_socket.insert(sock, key);
            cx.settle(&mut conn);
            conns.insert(key, conn);
        }
        self.tcp_settled();
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
