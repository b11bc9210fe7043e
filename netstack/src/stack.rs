//! The gateway interface: frames from the guest are demultiplexed by `process_*` functions, replies
//! are built by `dispatch_*` functions into a bounded egress queue the device drains.
//!
//! The stack owns no thread, socket or clock. Each call takes `now`; [`Stack::poll_at`] says when the
//! timers next need [`Stack::poll`].

use std::collections::VecDeque;
use std::sync::Arc;

use log::{debug, trace};

use crate::arp::NeighborCache;
use crate::config::{Config, ConfigError, ForwardProtocol};
use crate::dhcpv4::{DhcpServer, LeaseInfo};
use crate::flows::FlowTable;
use crate::host::{HostIo, NoHost, SocketId};
use crate::link::{Announce, Ipv6State, Link, LinkView, SharedLink};
use crate::offload::{FrameMeta, GuestOffloads, PayloadOffload};
use crate::reassembly::Reassembler;
use crate::stats::Stats;
pub use crate::steering::{flow_hash, steering_hash, MAX_QUEUES};
use crate::tcp::{PayloadRef, TcpTable};
use crate::time::Instant;
use crate::wire::{self, ethernet, icmpv4};
use crate::wire::{
    EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Address, Ipv4Repr,
};

/// Frames waiting for the guest's RX buffers. When the guest posts no buffers, replies beyond this
/// bound are dropped and counted (`drop_tx_queue_full`); the oldest queued frames are kept, as a NIC's
/// full ring keeps what it already holds.
pub const TX_QUEUE_CAPACITY: usize = 256;

/// RFC 1700 / RFC 1122 §3.2.1.7: the TTL of datagrams the gateway originates.
pub(crate) const DEFAULT_TTL: u8 = 64;

/// The result of offering the next outgoing frame to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// A frame of this many bytes was delivered and removed from the queue.
    Sent(usize),
    /// The device could not take the frame (no RX buffers); it stays first in the queue.
    Held,
    /// Nothing to send.
    Idle,
}

/// A frame for the guest as the stack lends it to the device: the bytes the stack built
/// (`head`: the headers, and all of most frames), then payload that stayed where the stack keeps
/// it, a TCP connection's send buffer (one or two slices where the ring wraps). The device
/// gathers the pieces straight into the guest's buffers, so a payload byte is copied once in
/// userspace on its way from the host socket to the guest.
#[derive(Debug, Clone, Copy)]
pub struct FrameParts<'a> {
    pub head: &'a [u8],
    pub payload: [&'a [u8]; 2],
}

impl<'a> FrameParts<'a> {
    /// A frame in one piece.
    pub fn whole(frame: &'a [u8]) -> Self {
        FrameParts {
            head: frame,
            payload: [&[], &[]],
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.payload[0].len() + self.payload[1].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces in order (some may be empty).
    pub fn pieces(&self) -> [&'a [u8]; 3] {
        [self.head, self.payload[0], self.payload[1]]
    }

    /// The frame's bytes in one new vector (tests, tools).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().concat()
    }

    /// The frame in one slice: itself when it is in one piece, else gathered into `scratch`
    /// (for a capture or the impairments, which read frames whole).
    pub fn gather<'b>(&self, scratch: &'b mut Vec<u8>) -> &'b [u8]
    where
        'a: 'b,
    {
        if self.payload[0].is_empty() && self.payload[1].is_empty() {
            return self.head;
        }
        scratch.clear();
        for p in self.pieces() {
            scratch.extend_from_slice(p);
        }
        scratch
    }
}

/// The bytes after an IP header, as the layer above writes them into a frame being queued: a
/// closure that writes them all, or a TCP segment whose data may stay in its send buffer (a
/// `tail`, gathered by the device at delivery).
pub(crate) trait IpPayload {
    /// The end of the payload that may stay where it is.
    fn tail(&self) -> Option<PayloadRef> {
        None
    }

    /// A frame buffer that holds the payload already, where it goes (after the Ethernet, IP and
    /// transport headers): a host datagram received straight into it. The frame is built in it,
    /// and [`IpPayload::write_head`] then writes only the transport header. Taken once, by the
    /// path that queues the frame as it is; the other paths (parked, fragmented) `write` it.
    fn take_frame(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Writes the whole payload.
    fn write(self, buf: &mut [u8]);

    /// Writes the payload less its tail (`buf` is that much shorter), or around what is in place
    /// already in a frame from [`IpPayload::take_frame`].
    fn write_head(self, buf: &mut [u8])
    where
        Self: Sized,
    {
        self.write(buf)
    }

    /// [`IpPayload::write_head`] when the frame was queued with [`Core::queue_ip_frame`]'s
    /// `head_only`, else [`IpPayload::write`].
    fn write_as(self, buf: &mut [u8], head_only: bool)
    where
        Self: Sized,
    {
        if head_only {
            self.write_head(buf)
        } else {
            self.write(buf)
        }
    }
}

impl<F: FnOnce(&mut [u8])> IpPayload for F {
    fn write(self, buf: &mut [u8]) {
        self(buf)
    }
}

/// A queued frame: its bytes (all of them, or the head when its payload stays in a send buffer,
/// `tail`), and its offload metadata.
#[derive(Debug)]
struct Queued {
    /// The frame is `buf[..len]`; a buffer keeps the bytes it ever held initialized, so that
    /// reusing it never fills it with zeros first (a host datagram is received into it).
    buf: Vec<u8>,
    len: usize,
    meta: FrameMeta,
    tail: Option<PayloadRef>,
}

impl Queued {
    fn frame(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Outgoing frames, one queue per device RX queue, in recycled buffers, each with its offload
/// metadata: once warm, queueing allocates nothing. A frame's queue is chosen by a symmetric hash
/// of its flow (see [`steering_hash`]), so a conversation stays on one queue pair.
#[derive(Debug)]
pub(crate) struct TxQueue {
    queues: Vec<VecDeque<Queued>>,
    /// Queues in use (the guest's active queue pairs); frames go to `hash % active`.
    active: usize,
    free: Vec<Vec<u8>>,
}

impl Default for TxQueue {
    fn default() -> Self {
        TxQueue {
            queues: (0..MAX_QUEUES).map(|_| VecDeque::new()).collect(),
            active: 1,
            free: Vec::new(),
        }
    }
}

impl TxQueue {
    fn queue_of(&self, frame: &[u8]) -> usize {
        if self.active == 1 {
            0
        } else {
            self.queue_of_hash(steering_hash(frame))
        }
    }

    /// Queues a frame of `len` bytes written by `emit`; false if its queue is full. With `zeroed`
    /// the buffer is all zeros when `emit` gets it (for builders that leave padding and reserved
    /// bytes alone); without, it holds whatever a recycled buffer held, and `emit` writes every
    /// byte (a TCP segment: no pass over 64 KiB of zeros before the payload is copied in).
    pub(crate) fn push_with(
        &mut self,
        len: usize,
        meta: FrameMeta,
        zeroed: bool,
        emit: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.push_parts(len, meta, zeroed, None, None, emit)
    }

    /// [`TxQueue::push_with`] for a frame whose last bytes stay in a send buffer (`tail`): `len`
    /// is what `emit` writes, the rest is gathered at delivery. With `provided`, the frame is
    /// built in that buffer (which holds its payload already: a host datagram received into it)
    /// rather than a recycled one.
    fn push_parts(
        &mut self,
        len: usize,
        meta: FrameMeta,
        zeroed: bool,
        tail: Option<PayloadRef>,
        provided: Option<Vec<u8>>,
        emit: impl FnOnce(&mut [u8]),
    ) -> bool {
        let mut buf = provided.unwrap_or_else(|| self.free.pop().unwrap_or_default());
        if buf.len() < len {
            buf.resize(len, 0);
        }
        if zeroed {
            buf[..len].fill(0);
        }
        emit(&mut buf[..len]);
        self.push_queued(Queued {
            buf,
            len,
            meta,
            tail,
        })
    }

    /// A recycled buffer (or a new one) of at least `len` initialized bytes, for a frame.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.free.pop().unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    pub(crate) fn push(&mut self, frame: Vec<u8>) -> bool {
        self.push_queued(Queued {
            len: frame.len(),
            buf: frame,
            meta: FrameMeta::NONE,
            tail: None,
        })
    }

    fn push_queued(&mut self, entry: Queued) -> bool {
        let q = self.queue_of(entry.frame());
        if self.queues[q].len() >= TX_QUEUE_CAPACITY {
            self.recycle(entry.buf);
            return false;
        }
        self.queues[q].push_back(entry);
        true
    }

    /// The queue a flow's frames go to, by its [`flow_hash`].
    fn queue_of_hash(&self, hash: u32) -> usize {
        if self.active == 1 {
            0
        } else {
            hash as usize % self.active
        }
    }

    /// Frames queue `q` can still take.
    fn room_on(&self, q: usize) -> usize {
        TX_QUEUE_CAPACITY - self.queues[q].len().min(TX_QUEUE_CAPACITY)
    }

    /// Frames the fullest active queue can still take.
    pub(crate) fn room(&self) -> usize {
        self.queues[..self.active]
            .iter()
            .map(|q| TX_QUEUE_CAPACITY - q.len().min(TX_QUEUE_CAPACITY))
            .min()
            .unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    fn front(&self, q: usize) -> Option<&Queued> {
        self.queues.get(q)?.front()
    }

    fn pop(&mut self, q: usize) {
        if let Some(entry) = self.queues[q].pop_front() {
            self.recycle(entry.buf);
        }
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        // An empty vector (a frame buffer handed on) would only take a slot.
        if buf.capacity() > 0 && self.free.len() < TX_QUEUE_CAPACITY {
            self.free.push(buf);
        }
    }

    /// Spreads frames over `n` queues from now on; frames waiting on a queue that is no longer
    /// active move to the one their flow now maps to (order within a flow is kept).
    fn set_active(&mut self, n: usize) {
        let n = n.clamp(1, MAX_QUEUES);
        if n == self.active {
            return;
        }
        self.active = n;
        for q in n..MAX_QUEUES {
            while let Some(entry) = self.queues[q].pop_front() {
                let to = self.queue_of(entry.frame());
                // A queue over capacity for a moment is better than losing frames.
                self.queues[to].push_back(entry);
            }
        }
    }
}

/// The largest datagram read from a host socket.
pub(crate) const HOST_RECV_LEN: usize = 65536;

/// An inbound forward's host socket: bound (UDP) or listening (TCP), for a guest port.
/// Which shard of a sharded [`Stack`] a frame from the guest belongs to (the same answer for
/// every shard, and without any of them): a TCP segment or UDP datagram outside fragments goes
/// to the shard its flow's [`steering_hash`] names, unless it is a forward's (the guest's port is
/// a forward's guest port) or DHCP's; everything else to the home shard, 0. A datagram the home
/// shard reassembles for another is handed over through that shard's mailbox
/// ([`Stack::take_mail`]).
#[derive(Clone)]
pub struct ShardMap {
    link: Arc<SharedLink>,
    count: usize,
}

impl ShardMap {
    /// The shards there are.
    pub fn shards(&self) -> usize {
        self.count
    }

    /// Whether another shard handed shard `shard` datagrams ([`Stack::take_mail`]).
    pub fn has_mail(&self, shard: usize) -> bool {
        shard < self.count && self.link.has_mail(shard)
    }

    pub fn shard_of(&self, frame: &[u8]) -> usize {
        match frame.get(12..14) {
            Some(&[a, b]) => self.shard_of_ip(
                u16::from_be_bytes([a, b]),
                frame.get(ethernet::HEADER_LEN..).unwrap_or_default(),
            ),
            _ => 0,
        }
    }

    fn shard_of_ip(&self, ethertype: u16, ip: &[u8]) -> usize {
        use crate::steering::Transport;
        if self.count == 1 {
            return 0;
        }
        let Some(flow) = crate::steering::ip_flow(ethertype, ip) else {
            return 0;
        };
        match flow.ports {
            Some((Transport::Udp, _, 67 | 547)) => 0,
            Some((t, guest_port, _))
                if !self.link.is_forward_port(t == Transport::Tcp, guest_port) =>
            {
                flow.hash as usize % self.count
            }
            _ => 0,
        }
    }
}

/// Which shard of a [`Stack`] a part is, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Shard {
    /// Shard 0 also serves the link (see [`Stack::sharded`]).
    pub(crate) fn is_home(self) -> bool {
        self.index == 0
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ForwardListener {
    pub(crate) socket: SocketId,
    pub(crate) guest_port: u16,
    pub(crate) protocol: ForwardProtocol,
    pub(crate) host: std::net::SocketAddr,
}

/// The gateway stack, reaching the host through `H`.
///
/// Two parts, so that a TCP connection can be changed in place while the rest of the stack is
/// borrowed beside it (its segments go out through the egress path, its counters and host
/// socket live there): the TCP connection table, and [`Core`], everything else. The stack
/// dereferences to its core, so the layers' code reads `self.stats`, `self.dispatch_ipv4(..)`
/// whichever part it is written on; the ingress path (which reaches TCP) is written on `Stack`,
/// the egress path and the state all protocols share on `Core`.
pub struct Stack<H: HostIo = NoHost> {
    pub(crate) core: Core<H>,
    pub(crate) tcp: TcpTable,
}

impl<H: HostIo> core::ops::Deref for Stack<H> {
    type Target = Core<H>;

    fn deref(&self) -> &Core<H> {
        &self.core
    }
}

impl<H: HostIo> core::ops::DerefMut for Stack<H> {
    fn deref_mut(&mut self) -> &mut Core<H> {
        &mut self.core
    }
}

/// Everything of the [`Stack`] but its TCP connections: configuration, counters, host sockets,
/// the link state (neighbours, DHCP, IPv6, multicast), UDP/ICMP flows, reassembly and the egress
/// queues. Only the stack itself uses it; it has no API of its own.
#[doc(hidden)]
pub struct Core<H: HostIo = NoHost> {
    /// Shared so that replies can borrow it while the stack is mutated.
    pub(crate) cfg: Arc<Config>,
    pub(crate) stats: Stats,
    /// The link's state (neighbours, DHCP, IPv6, multicast, the guest's addresses), shared by
    /// the shards, and this shard's lock-free view of it.
    pub(crate) link: Arc<SharedLink>,
    pub(crate) view: LinkView,
    /// Which shard of the stack this is.
    pub(crate) shard: Shard,
    /// Datagrams from other shards being processed (kept for its allocation).
    pub(crate) mailbox: Vec<crate::link::Mail>,
    pub(crate) txq: TxQueue,
    pub(crate) ip_ident: u16,
    /// Scratch space for a frame that has to wait for ARP resolution.
    pub(crate) scratch: Vec<u8>,
    pub(crate) host: H,
    pub(crate) flows: FlowTable,
    pub(crate) reassembly: Reassembler,
    /// The rate limit of ICMPv4 errors to the guest.
    pub(crate) icmp_errors: crate::ratelimit::ErrorBudget,
    /// A reassembled datagram, allocated once and reused.
    pub(crate) reasm_buf: Vec<u8>,
    pub(crate) forwards: Vec<ForwardListener>,
    /// One host datagram at a time, allocated once.
    pub(crate) host_buf: Vec<u8>,
    /// Frame buffers a batch of a UDP flow's datagrams is received into (at most
    /// `udp::RECV_BATCH`, kept between wake-ups).
    pub(crate) recv_frames: Vec<Vec<u8>>,
    /// What the guest's driver accepts in frames to it.
    pub(crate) offloads: GuestOffloads,
    /// The offload metadata of the guest frame being processed.
    pub(crate) inbound: FrameMeta,
    /// The next serial number handed to a probe (IP identifications, echo sequences).
    pub(crate) probe_serial: u32,
    /// Emulated path MTUs by destination prefix (from the configuration, changed at run time).
    pub(crate) path_mtus: Vec<crate::pmtu::PathMtu>,
    /// The TCP options new connections negotiate (from the configuration, changed at run time).
    pub(crate) tcp_options: crate::config::TcpOptions,
}

impl Stack<NoHost> {
    /// A stack without host networking: it serves the link (ARP, DHCP, echo to itself) only.
    pub fn new(cfg: Config) -> Result<Self, ConfigError> {
        Stack::with_host(cfg, NoHost)
    }
}

impl<H: HostIo> Stack<H> {
    /// A stack that reaches host sockets through `host`. Call [`Stack::open_forwards`] before use
    /// when the configuration has inbound forwards.
    pub fn with_host(cfg: Config, host: H) -> Result<Self, ConfigError> {
        let mut shards = Stack::sharded(cfg, [host])?;
        Ok(shards.remove(0))
    }

    /// One gateway in as many shards as `hosts` (1 to [`MAX_QUEUES`]), each reaching the host
    /// through its own `H`, so that queue pairs can run in parallel: a shard owns the TCP
    /// connections and UDP/ICMP flows [`Stack::shard_of`] assigns it, with their host sockets,
    /// timers, counters and egress queue; the link's state is shared (see `crate::link`). Shard 0
    /// is the home shard: it also serves the link's protocols and timers, the inbound forwards,
    /// fragments, ICMP, probes and injected frames. Each shard is used by one thread at a time;
    /// different shards may run on different threads.
    pub fn sharded(
        cfg: Config,
        hosts: impl IntoIterator<Item = H>,
    ) -> Result<Vec<Self>, ConfigError> {
        cfg.validate()?;
        let hosts: Vec<H> = hosts.into_iter().collect();
        let count = hosts.len();
        if !(1..=MAX_QUEUES).contains(&count) {
            return Err(ConfigError::Shards(count));
        }
        let querier = crate::multicast::Querier::new(cfg.mcast_querier, cfg.mcast_query_interval);
        let v6 = Ipv6State::new(
            cfg.ipv6.as_ref(),
            cfg.gateway_mac,
            cfg.domain_name.as_deref(),
        );
        let link = Arc::new(SharedLink::new(
            Link {
                neighbors: NeighborCache::new(),
                dhcp: DhcpServer::new(),
                guest_mac: None,
                last_guest_ipv4: None,
                v6,
                announce_v4: Announce::Idle,
                announce_v6: Announce::Idle,
                sources: crate::sources::SourcePolicy::new(cfg.source_check),
                querier,
            },
            count,
        ));
        let cfg = Arc::new(cfg);
        Ok(hosts
            .into_iter()
            .enumerate()
            .map(|(index, host)| Stack {
                core: Core::new(
                    Arc::clone(&cfg),
                    Arc::clone(&link),
                    Shard { index, count },
                    host,
                ),
                tcp: TcpTable::for_shards(count),
            })
            .collect())
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// Active flows.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The MAC of the guest as learned from its traffic (the most recent unicast source seen).
    pub fn guest_mac(&self) -> Option<EthernetAddress> {
        self.link.lock().guest_mac
    }

    /// Whether frames are waiting for the device.
    pub fn has_pending(&self) -> bool {
        !self.txq.is_empty()
    }

    /// The largest frame the stack emits: the MTU plus the Ethernet header.
    pub fn max_frame_len(&self) -> usize {
        usize::from(self.cfg.mtu) + ethernet::HEADER_LEN
    }

    /// Whether frames are waiting for the device's RX queue `queue`.
    pub fn has_pending_on(&self, queue: usize) -> bool {
        self.txq.queues.get(queue).is_some_and(|q| !q.is_empty())
    }

    /// Spreads frames to the guest over `n` queues (the guest's active queue pairs, 1 to
    /// [`MAX_QUEUES`]), by a symmetric hash of each frame's flow.
    pub fn set_queues(&mut self, n: usize) {
        self.txq.set_active(n);
        self.tcp.requeue_blocked();
    }

    /// Offers the next queued frame (of any queue) and its offload metadata to `deliver`, which
    /// returns whether it took it. The frame is lent in pieces ([`FrameParts`]). The metadata
    /// uses only the offloads set with [`Stack::set_guest_offloads`].
    pub fn dispatch(
        &mut self,
        now: Instant,
        deliver: impl FnOnce(FrameParts<'_>, FrameMeta) -> bool,
    ) -> Dispatch {
        let q = (0..MAX_QUEUES)
            .find(|&q| self.has_pending_on(q))
            .unwrap_or(0);
        self.dispatch_on(q, now, deliver)
    }

    /// Ends a batch of guest frames: what the frames given to [`Stack::process_frame`] since the
    /// last call left for the end of their batch is done now (guest TCP data written to host
    /// sockets in one write per connection, one ACK per connection, data for the guest). The
    /// device calls it once per queue notification, after the frames and before it dispatches;
    /// [`Stack::dispatch`] and [`Stack::poll`] call it first too.
    pub fn flush(&mut self, now: Instant) {
        if self.tcp.has_batch() {
            self.tcp_flush_batch(now);
        }
        // Every connection wrote or copied what it was lent.
        self.tcp.end_lending();
    }

    /// A buffer of `len` bytes to read the guest's next frame into, to be processed with
    /// [`Stack::process_ingress`]. TCP data in frames processed so is written to the host from
    /// where it lies, at the end of the batch ([`Stack::flush`]), rather than copied first; the
    /// buffer holds at most `INGRESS_CAPACITY` bytes of a batch's frames (512 KiB, or one frame
    /// if larger) and makes the connections copy what they hold when a frame would not fit.
    pub fn ingress_buffer(&mut self, len: usize) -> &mut [u8] {
        if !self.tcp.ingress().fits(len) {
            self.tcp_spill_lent();
        }
        self.tcp.ingress().room(len)
    }

    /// The bytes at `range` of the buffer the last [`Stack::ingress_buffer`] gave (to look at a
    /// frame read there before it is processed).
    pub fn ingress_frame(&self, range: core::ops::Range<usize>) -> &[u8] {
        self.tcp.ingress_ref().read(range)
    }

    /// Processes the frame at `range` of the buffer the last [`Stack::ingress_buffer`] gave, as
    /// [`Stack::process_frame_meta`] does.
    pub fn process_ingress(
        &mut self,
        now: Instant,
        range: core::ops::Range<usize>,
        meta: FrameMeta,
    ) {
        let Some((bytes, at)) = self.tcp.ingress().begin_frame(range) else {
            return;
        };
        self.process_frame_meta(now, &bytes[at], meta);
        self.tcp.ingress().end_frame();
    }

    /// [`Stack::dispatch`] for the frames of one queue.
    pub fn dispatch_on(
        &mut self,
        queue: usize,
        now: Instant,
        deliver: impl FnOnce(FrameParts<'_>, FrameMeta) -> bool,
    ) -> Dispatch {
        self.flush(now);
        // A segment whose payload is no longer in its send buffer is dropped and the next one
        // looked at (at most the whole queue; then it is empty and the next look returns).
        let queued = self.core.txq.queues.get(queue).map_or(0, VecDeque::len);
        for _ in 0..=queued {
            let Some(entry) = self.core.txq.front(queue) else {
                return Dispatch::Idle;
            };
            let payload = match &entry.tail {
                None => [&[][..], &[][..]],
                Some(tail) => match self.tcp.payload(tail) {
                    Some((a, b)) => [a, b],
                    None => {
                        self.core.txq.pop(queue);
                        self.core.stats.drop_tcp_stale_segment += 1;
                        continue;
                    }
                },
            };
            let frame = FrameParts {
                head: entry.frame(),
                payload,
            };
            let len = frame.len();
            if !deliver(frame, entry.meta) {
                return Dispatch::Held;
            }
            self.stats.eth_tx_frames += 1;
            self.stats.eth_tx_bytes += len as u64;
            self.txq.pop(queue);
            // Back-pressure: TCP connections that found this queue full go on once it is half
            // empty (a batch at a time, not a segment per freed slot).
            if self.tcp.waits_on(queue) && self.txq.room_on(queue) >= TX_QUEUE_CAPACITY / 2 {
                self.tcp_resume_blocked(now, queue);
            }
            return Dispatch::Sent(len);
        }
        Dispatch::Idle
    }

    /// Queues `frame` for the guest exactly as given (the exerciser's injected and probe frames):
    /// it takes the same RX path as the stack's own frames (queue steering, the device's
    /// moderation, capture and counters) and touches no other state of the stack. Returns false,
    /// counting `drop_inject_queue_full`, when its queue is full.
    pub fn inject(&mut self, frame: &[u8]) -> bool {
        if self
            .txq
            .push_with(frame.len(), FrameMeta::NONE, false, |b| {
                b.copy_from_slice(frame)
            })
        {
            self.stats.rx_injected_frames += 1;
            true
        } else {
            self.stats.drop_inject_queue_full += 1;
            false
        }
    }

    /// What a probe needs to know of the link (see [`crate::probe`]), with the next unused
    /// serial number.
    pub fn probe_context(&self) -> crate::probe::ProbeContext {
        self.probe_context_with(self.tcp_flows())
    }

    /// This shard's TCP connections, as probes see them.
    pub fn tcp_flows(&self) -> Vec<crate::probe::TcpFlow> {
        self.tcp.flows().collect()
    }

    fn probe_context_with(&self, flows: Vec<crate::probe::TcpFlow>) -> crate::probe::ProbeContext {
        crate::probe::ProbeContext {
            gateway_mac: self.cfg.gateway_mac,
            guest_mac: self.guest_mac(),
            gateway_ipv4: self.cfg.gateway_ipv4,
            guest_ipv4: self.guest_ipv4(),
            gateway_ipv6: self.cfg.ipv6.as_ref().map(|c| c.gateway),
            guest_ipv6: self.guest_ipv6(),
            mtu: self.cfg.mtu,
            serial: self.probe_serial,
            flows,
        }
    }

    /// Builds the probe `name` with `params` and queues its frames for the guest; returns how
    /// many were built and how many of them were queued (all, unless the queue filled up).
    pub fn send_probe(
        &mut self,
        name: &str,
        params: &std::collections::BTreeMap<String, String>,
    ) -> Result<(usize, usize), crate::probe::ProbeError> {
        let flows = self.tcp_flows();
        self.send_probe_among(name, params, flows)
    }

    /// [`Stack::send_probe`] for a sharded stack: `flows` are the TCP connections of every shard
    /// ([`Stack::tcp_flows`]), for the probes that aim at one.
    pub fn send_probe_among(
        &mut self,
        name: &str,
        params: &std::collections::BTreeMap<String, String>,
        flows: Vec<crate::probe::TcpFlow>,
    ) -> Result<(usize, usize), crate::probe::ProbeError> {
        let probe = crate::probe::find(name).ok_or_else(|| {
            crate::probe::ProbeError(format!("no probe called {name} (see the probe list)"))
        })?;
        let frames = probe.build(&self.probe_context_with(flows), params)?;
        // Instance i used serial + i; every instance built at least one frame, so moving on by
        // the frame count keeps the next probe's serials fresh.
        self.probe_serial = self.probe_serial.wrapping_add(frames.len() as u32);
        self.stats.probes_sent += 1;
        Ok((
            frames.len(),
            frames.iter().filter(|f| self.inject(f)).count(),
        ))
    }

    /// The emulated path MTUs in force.
    pub fn path_mtus(&self) -> &[crate::pmtu::PathMtu] {
        &self.path_mtus
    }

    /// Replaces the emulated path MTUs (see [`crate::pmtu`]).
    pub fn set_path_mtus(&mut self, table: Vec<crate::pmtu::PathMtu>) -> Result<(), String> {
        crate::pmtu::validate(&table)?;
        self.path_mtus = table;
        Ok(())
    }

    /// The TCP options connections opened from now on negotiate.
    pub fn tcp_options(&self) -> crate::config::TcpOptions {
        self.tcp_options
    }

    /// Sets the TCP options of connections opened from now on (open ones keep theirs).
    pub fn set_tcp_options(&mut self, options: crate::config::TcpOptions) {
        self.tcp_options = options;
    }

    /// The next instant at which [`Stack::poll`] has timer work.
    pub fn poll_at(&self) -> Option<Instant> {
        let own = [
            self.flows.poll_at(),
            self.tcp.poll_at(),
            self.reassembly.poll_at(),
        ]
        .into_iter()
        .flatten()
        .min();
        if !self.shard.is_home() {
            return own;
        }
        let link = self.link.lock();
        [
            own,
            link.neighbors.poll_at(),
            link.dhcp.poll_at(),
            link.v6.poll_at(),
            link.announce_v4.due(),
            link.announce_v6.due(),
            link.querier.poll_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`: ARP retransmissions, cache, lease and flow expiry.
    pub fn poll(&mut self, now: Instant) {
        self.flush(now);
        self.expire_flows(now);
        self.tcp_poll(now);
        let mut expired = Vec::new();
        self.reassembly.expire(now, |e| expired.push(e));
        for e in expired {
            if e.ipv6 {
                self.stats.ipv6_reasm_timeouts += 1;
            } else {
                self.stats.ipv4_reasm_timeouts += 1;
            }
            // RFC 792 and RFC 8200 §4.5: Time Exceeded, code 1 (fragment reassembly), when the
            // first fragment came.
            match (e.quote, e.ipv6) {
                (Some(quote), true) => self.ipv6_reassembly_timed_out(now, &quote),
                (Some(quote), false) => {
                    self.dispatch_icmp_error(now, icmpv4::TYPE_TIME_EXCEEDED, 1, &quote)
                }
                (None, _) => {}
            }
        }
        if !self.shard.is_home() {
            return;
        }
        // The link's timers: the home shard's.
        let mut due = [(Ipv4Address::UNSPECIFIED, None); 8];
        let mut n = 0;
        let result = self.link.lock().neighbors.poll(now, |ip, mac| {
            if n < due.len() {
                due[n] = (ip, mac);
                n += 1;
            }
        });
        self.stats.drop_arp_unresolved += result.dropped;
        for (ip, mac) in due[..n].iter().copied() {
            self.dispatch_arp_request_to(ip, mac);
        }
        self.link.lock().dhcp.poll(now);
        self.ipv6_poll(now);
        let (announce_v4, announce_v6) = {
            let mut link = self.link.lock();
            (
                link.announce_v4.take_due(now),
                link.announce_v6.take_due(now),
            )
        };
        if announce_v4 {
            self.announce_ipv4();
        }
        if announce_v6 {
            self.ipv6_link_up(now);
        }
        self.send_mcast_queries(now);
    }

    /// A frontend (re)connected: the link is new. Shortly after the guest first speaks on it
    /// (its interface is up; the delay lets its stack finish bringing the interface up, or the
    /// guest drops what arrives meanwhile), the gateway announces itself, as a NIC's peer does on
    /// link up (see `send_announcements`).
    pub fn link_up(&mut self) {
        let state = if self.cfg.link_announce {
            Announce::AwaitingGuest
        } else {
            Announce::Idle
        };
        let mut link = self.link.lock();
        link.announce_v4 = state;
        link.announce_v6 = state;
    }

    /// The offloads the guest's driver accepts in frames to it (the device's negotiated features);
    /// none until set. Frames already queued are brought in line: a partial checksum the new
    /// driver does not take is completed; a large segment it cannot take is dropped and counted
    /// (TCP sends the data again, in segments it can take).
    pub fn set_guest_offloads(&mut self, offloads: GuestOffloads) {
        self.offloads = offloads;
        let mut withdrawn = 0;
        let tcp = &self.tcp;
        for queue in &mut self.core.txq.queues {
            queue.retain_mut(
                |Queued {
                     buf,
                     len,
                     meta,
                     tail,
                 }| {
                    let frame = &mut buf[..*len];
                    if let Some(g) = meta.gso {
                        let accepted = match g.kind {
                            crate::offload::GsoKind::Tcpv4 => offloads.tso4,
                            crate::offload::GsoKind::Tcpv6 => offloads.tso6,
                            crate::offload::GsoKind::Udp => false,
                        };
                        if !accepted {
                            withdrawn += 1;
                            return false;
                        }
                    }
                    if let Some(c) = meta.checksum.filter(|_| !offloads.partial_checksum) {
                        // A payload left in a send buffer is summed there; a stale one is dropped at
                        // delivery anyway.
                        let payload = tail
                            .as_ref()
                            .and_then(|t| tcp.payload(t))
                            .map_or([&[][..], &[][..]], |(a, b)| [a, b]);
                        c.complete_parts(frame, payload);
                        meta.checksum = None;
                    }
                    true
                },
            );
        }
        self.stats.drop_tx_offload_withdrawn += withdrawn;
    }

    pub fn guest_offloads(&self) -> GuestOffloads {
        self.offloads
    }

    /// Handles one Ethernet frame from the guest.
    pub fn process_frame(&mut self, now: Instant, frame: &[u8]) {
        self.process_frame_meta(now, frame, FrameMeta::NONE);
    }

    /// Which shard of the stack a frame from the guest belongs to (see [`ShardMap::shard_of`]).
    pub fn shard_of(&self, frame: &[u8]) -> usize {
        self.shard_map().shard_of(frame)
    }

    /// The demultiplexer of frames to shards, to use without any shard at hand.
    pub fn shard_map(&self) -> ShardMap {
        ShardMap {
            link: Arc::clone(&self.link),
            count: self.shard.count,
        }
    }

    /// A number that changes whenever the link's state does (the guest's addresses, leases,
    /// neighbours), for a reader that wants to copy them only then.
    pub fn link_generation(&self) -> u64 {
        self.link.generation()
    }

    /// Whether another shard handed this one datagrams to process ([`Stack::take_mail`]).
    pub fn has_mail(&self) -> bool {
        self.link.has_mail(self.shard.index)
    }

    /// Processes the datagrams other shards handed this one (see [`Stack::shard_of`]).
    pub fn take_mail(&mut self, now: Instant) {
        let mut mail = core::mem::take(&mut self.mailbox);
        self.link.take_mail(self.shard.index, &mut mail);
        for m in mail.drain(..) {
            self.inbound = FrameMeta::NONE;
            match m.eth.ethertype {
                EtherType::Ipv4 => self.process_ipv4(now, &m.eth, &m.datagram),
                _ => self.process_reassembled_ipv6(now, &m.eth, &m.datagram),
            }
        }
        self.mailbox = mail;
    }

    /// A datagram the home shard reassembled: processed here, or handed to the shard that owns
    /// its flow. Returns whether it was handed over (or dropped because that shard's mailbox
    /// was full, counted).
    pub(crate) fn hand_over_reassembled(&mut self, eth: &EthernetRepr, datagram: &[u8]) -> bool {
        let ethertype = match eth.ethertype {
            EtherType::Ipv4 => 0x0800,
            _ => 0x86dd,
        };
        let owner = self.shard_map().shard_of_ip(ethertype, datagram);
        if owner == self.shard.index {
            return false;
        }
        let mail = crate::link::Mail {
            eth: *eth,
            datagram: datagram.to_vec(),
        };
        if self.link.post(owner, mail) {
            self.stats.shard_mail_sent += 1;
        } else {
            self.stats.drop_shard_mail_full += 1;
        }
        true
    }

    /// Handles one Ethernet frame from the guest that leaves work to the NIC (see
    /// [`crate::offload`]): a partial transport checksum is trusted, a large TCP segment is taken
    /// whole, a UDP segmentation request is split into its datagrams towards the host.
    pub fn process_frame_meta(&mut self, now: Instant, frame: &[u8], meta: FrameMeta) {
        self.inbound = meta;
        self.process_ethernet(now, frame);
        self.inbound = FrameMeta::NONE;
    }

    fn process_ethernet(&mut self, now: Instant, frame: &[u8]) {
        self.stats.eth_rx_frames += 1;
        self.stats.eth_rx_bytes += frame.len() as u64;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.stats.drop_eth_truncated += 1;
            trace!(
                "drop: frame of {} bytes is shorter than a header",
                frame.len()
            );
            return;
        };
        let eth_repr = EthernetRepr::parse(&eth);
        if eth_repr.src.is_multicast() {
            self.stats.drop_eth_bad_source += 1;
            trace!("drop: {eth}: group source address");
            return;
        }
        if eth_repr.dst.is_unicast() && eth_repr.dst != self.cfg.gateway_mac {
            self.stats.drop_eth_foreign_destination += 1;
            trace!("drop: {eth}: not addressed to the gateway");
            return;
        }
        self.refresh_view();
        if self.view.guest_mac != Some(eth_repr.src) {
            debug!("guest MAC is {}", eth_repr.src);
            self.link.lock().guest_mac = Some(eth_repr.src);
        }
        match eth_repr.ethertype {
            EtherType::Arp => self.process_arp(now, eth.payload()),
            EtherType::Ipv4 => self.process_ipv4(now, &eth_repr, eth.payload()),
            EtherType::Ipv6 => self.process_ipv6(now, &eth_repr, eth.payload()),
            EtherType::Unknown(_) => {
                self.stats.drop_eth_unknown_ethertype += 1;
                trace!("drop: {eth}: unknown EtherType");
            }
        }
        // The guest's first frame of a family on a new link starts the announcements and the
        // querier; after that the view says there is nothing to do, without the lock.
        let v6 = match eth_repr.ethertype {
            EtherType::Arp | EtherType::Ipv4 => false,
            EtherType::Ipv6 => true,
            EtherType::Unknown(_) => return,
        };
        self.refresh_view();
        if !(if v6 {
            self.view.awaiting_v6
        } else {
            self.view.awaiting_v4
        }) {
            return;
        }
        let mut link = self.link.lock();
        if v6 {
            link.announce_v6.guest_spoke(now);
            if self.core.cfg.ipv6.is_some() {
                link.querier.guest_spoke(true, now);
            }
        } else {
            link.announce_v4.guest_spoke(now);
            link.querier.guest_spoke(false, now);
        }
    }

    /// The guest's multicast memberships of one family (IPv6 when `v6`).
    pub fn multicast_groups(&self, v6: bool) -> Vec<crate::multicast::Membership> {
        self.link.lock().querier.groups(v6).to_vec()
    }
}

impl<H: HostIo> Core<H> {
    fn new(cfg: Arc<Config>, link: Arc<SharedLink>, shard: Shard, host: H) -> Self {
        Core {
            path_mtus: cfg.path_mtus.clone(),
            tcp_options: cfg.tcp_options,
            cfg,
            stats: Stats::default(),
            link,
            view: LinkView::default(),
            shard,
            mailbox: Vec::new(),
            txq: TxQueue::default(),
            ip_ident: 0,
            scratch: Vec::new(),
            host,
            flows: FlowTable::new(),
            reassembly: Reassembler::new(),
            icmp_errors: crate::ratelimit::ErrorBudget::default(),
            reasm_buf: Vec::new(),
            forwards: Vec::new(),
            host_buf: vec![0; HOST_RECV_LEN],
            recv_frames: Vec::new(),
            offloads: GuestOffloads::default(),
            inbound: FrameMeta::NONE,
            probe_serial: 1,
        }
    }

    /// Brings this shard's view of the link up to date (one atomic load when it is).
    pub(crate) fn refresh_view(&mut self) {
        self.view.refresh(&self.link);
    }

    /// The DHCP leases currently held.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.link.lock().dhcp.leases().collect()
    }

    /// Whether `addr` lies in a prefix routed via the guest (`routes_via_guest`).
    pub(crate) fn behind_guest(&self, addr: wire::IpAddress) -> bool {
        self.cfg.routes_via_guest.iter().any(|p| p.contains(addr))
    }

    /// The size of the packets a guest frame stands for on the wire: its IP packet, or for a
    /// large segment (TSO/USO) each of the packets it will be cut into.
    pub(crate) fn wire_packet_len(&self, ip_len: usize) -> usize {
        match self.inbound.gso {
            Some(g) => {
                let headers = usize::from(g.header_len).saturating_sub(ethernet::HEADER_LEN);
                (headers + usize::from(g.segment_size)).min(ip_len)
            }
            None => ip_len,
        }
    }

    /// The emulated path MTU towards `dst`, if it is narrower than what the guest's packet of
    /// `ip_len` bytes needs.
    pub(crate) fn path_too_narrow(&self, dst: wire::IpAddress, ip_len: usize) -> Option<u16> {
        let mtu = crate::pmtu::lookup(&self.path_mtus, dst)?;
        (self.wire_packet_len(ip_len) > usize::from(mtu)).then_some(mtu)
    }

    /// Queues a complete frame (a parked one released by resolution).
    pub(crate) fn queue_frame(&mut self, frame: Vec<u8>) {
        if !self.txq.push(frame) {
            self.stats.drop_tx_queue_full += 1;
        }
    }

    /// Queues a frame of `len` bytes written by `emit`; false (counted) when the queue is full.
    pub(crate) fn queue_frame_with(&mut self, len: usize, emit: impl FnOnce(&mut [u8])) -> bool {
        self.queue_frame_meta(len, FrameMeta::NONE, true, emit)
    }

    /// [`Stack::queue_frame_with`] for a frame with offload metadata; `zeroed` as
    /// `TxQueue::push_with`.
    pub(crate) fn queue_frame_meta(
        &mut self,
        len: usize,
        meta: FrameMeta,
        zeroed: bool,
        emit: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.queue_frame_parts(len, meta, zeroed, None, None, emit)
    }

    /// Queues an IP frame of `len` bytes to a resolved neighbour: `build(buf, payload, head_only)`
    /// writes the Ethernet and IP headers, then the payload ([`IpPayload::write_as`]): whole, or
    /// only its head when its tail stays in a send buffer or it is in its frame buffer already.
    pub(crate) fn queue_ip_frame<P: IpPayload>(
        &mut self,
        len: usize,
        meta: FrameMeta,
        zeroed: bool,
        mut payload: P,
        build: impl FnOnce(&mut [u8], P, bool),
    ) -> bool {
        let tail = payload.tail();
        let provided = payload.take_frame();
        let head_only = tail.is_some() || provided.is_some();
        self.queue_frame_parts(len, meta, zeroed, tail, provided, |buf| {
            build(buf, payload, head_only)
        })
    }

    /// [`Core::queue_frame_meta`] for a frame of `len` bytes whose last `tail.len` bytes stay in
    /// a send buffer, or built in a `provided` buffer that holds its payload already: `emit`
    /// writes the rest.
    pub(crate) fn queue_frame_parts(
        &mut self,
        len: usize,
        meta: FrameMeta,
        zeroed: bool,
        tail: Option<PayloadRef>,
        provided: Option<Vec<u8>>,
        emit: impl FnOnce(&mut [u8]),
    ) -> bool {
        let written = len - tail.map_or(0, |t| t.len);
        if self
            .txq
            .push_parts(written, meta, zeroed, tail, provided, emit)
        {
            true
        } else {
            self.stats.drop_tx_queue_full += 1;
            false
        }
    }

    /// Frames the egress queue can still take.
    pub(crate) fn tx_room(&self) -> usize {
        self.txq.room()
    }

    /// The egress queue a flow's frames go to, and the frames it can still take.
    pub(crate) fn tx_room_for_flow(&self, hash: u32) -> (usize, usize) {
        let q = self.txq.queue_of_hash(hash);
        (q, self.txq.room_on(q))
    }

    /// A buffer for a frame of up to `len` bytes, recycled from the egress queue: a host datagram
    /// is received into it (see [`IpPayload::take_frame`]); given back with
    /// [`Core::recycle_frame_buffer`] when it was not queued.
    pub(crate) fn frame_buffer(&mut self, len: usize) -> Vec<u8> {
        self.txq.buffer(len)
    }

    pub(crate) fn recycle_frame_buffer(&mut self, buf: Vec<u8>) {
        self.txq.recycle(buf);
    }

    pub(crate) fn take_scratch(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.scratch)
    }

    pub(crate) fn put_scratch(&mut self, scratch: Vec<u8>) {
        self.scratch = scratch;
    }

    pub(crate) fn count_multicast_groups(&mut self) {
        let link = self.link.lock();
        let n = link.querier.groups(false).len() + link.querier.groups(true).len();
        self.stats.multicast_groups = n as u64;
    }

    /// Sends the multicast queries due at `now` (see [`crate::multicast`]).
    fn send_mcast_queries(&mut self, now: Instant) {
        let mut due = Vec::new();
        let interval = {
            let mut link = self.link.lock();
            link.querier.due(false, now, &mut due);
            link.querier.interval
        };
        for q in due.drain(..) {
            let frame = crate::multicast::igmp_query_frame(
                self.cfg.gateway_mac,
                self.cfg.gateway_ipv4,
                &q,
                interval,
            );
            if self.txq.push(frame) {
                self.stats.igmp_tx_queries += 1;
            } else {
                self.stats.drop_tx_queue_full += 1;
            }
        }
        if self.cfg.ipv6.is_some() {
            self.link.lock().querier.due(true, now, &mut due);
        }
        for q in due.drain(..) {
            let frame = crate::multicast::mld_query_frame(
                self.cfg.gateway_mac,
                crate::config::GATEWAY_LINK_LOCAL,
                &q,
                interval,
            );
            if self.txq.push(frame) {
                self.stats.mld_tx_queries += 1;
            } else {
                self.stats.drop_tx_queue_full += 1;
            }
        }
        // Memberships lapse in `due`.
        self.count_multicast_groups();
    }

    /// Queues an IP packet from `src` to `dst` (one family; false for a mix) with `payload_len`
    /// bytes of `protocol` written by `emit_payload`, resolving the guest's MAC, and leaving
    /// `offload` to the NIC (see [`Stack::dispatch_ipv4_offload`]).
    pub(crate) fn dispatch_ip_offload(
        &mut self,
        now: Instant,
        (src, dst): (wire::IpAddress, wire::IpAddress),
        protocol: IpProtocol,
        payload_len: usize,
        offload: PayloadOffload,
        payload: impl IpPayload,
    ) -> bool {
        match (src, dst) {
            (wire::IpAddress::V4(src), wire::IpAddress::V4(dst)) => {
                let ip = Ipv4Repr {
                    src,
                    dst,
                    protocol,
                    payload_len,
                    ttl: DEFAULT_TTL,
                };
                self.dispatch_ipv4_offload(now, None, &ip, offload, payload)
            }
            (wire::IpAddress::V6(src), wire::IpAddress::V6(dst)) => {
                let ip = wire::Ipv6Repr {
                    src,
                    dst,
                    next_header: protocol,
                    payload_len,
                    hop_limit: DEFAULT_TTL,
                };
                self.dispatch_ipv6_offload(now, None, &ip, offload, payload)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
