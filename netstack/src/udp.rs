//! UDP through the gateway: guest datagrams to host sockets and back, DNS forwarding, inbound
//! forwards, and the ICMP errors a remote's refusal maps to.
//!
//! Addressing (as slirp and passt): the gateway address stands for the host's loopback (unless
//! `map_gateway_to_loopback` is off), the DNS address for the first upstream resolver, and any other
//! routed address for itself. Datagrams from a host peer of an inbound forward reach the guest from
//! the gateway address when the peer is local (loopback), from the peer's own address otherwise.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use log::{debug, trace};

use crate::config::{Forward, ForwardProtocol};
use crate::flows::{Flow, FlowKey, Origin};
use crate::host::{HostIo, SocketId};
use crate::offload::{Gso, GsoKind, PayloadOffload, UDP_CHECKSUM_OFFSET};
use crate::stack::{Core, ForwardListener, IpPayload, Stack, DEFAULT_TTL, HOST_RECV_LEN};
use crate::time::Instant;
use crate::wire::icmpv4::unreachable;
use crate::wire::{
    ethernet, ipv4, udp, IpAddress, IpProtocol, Ipv4Address, Ipv4Repr, UdpPacket, UdpRepr,
};

/// Datagrams read from one host socket per readiness event, so that one busy socket cannot starve
/// the others or the guest's queues.
pub const HOST_READ_BUDGET: usize = 64;
/// Datagrams of a flow received per system call (`HostIo::recv_batch`); as many frame buffers
/// (64 KiB each) wait in `Core::recv_frames` between wake-ups.
const RECV_BATCH: usize = 16;

/// Why a destination cannot be reached, in terms both ICMP versions have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    Port,
    Net,
    Host,
    AdminProhibited,
}

impl Unreachable {
    /// The ICMPv4 code (RFC 792, RFC 1812 §5.2.7.1).
    pub(crate) fn v4_code(self) -> u8 {
        match self {
            Unreachable::Port => unreachable::PORT,
            Unreachable::Net => unreachable::NET,
            Unreachable::Host => unreachable::HOST,
            Unreachable::AdminProhibited => unreachable::ADMIN_PROHIBITED,
        }
    }

    /// The ICMPv6 code (RFC 4443 §3.1).
    pub(crate) fn v6_code(self) -> u8 {
        use crate::wire::icmpv6::unreachable as v6;
        match self {
            Unreachable::Port => v6::PORT,
            Unreachable::Net => v6::NO_ROUTE,
            Unreachable::Host => v6::ADDRESS,
            Unreachable::AdminProhibited => v6::ADMIN_PROHIBITED,
        }
    }
}

/// What a host-side error means for the guest.
pub(crate) fn unreachable_kind(e: &io::Error) -> Unreachable {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Unreachable::Port,
        io::ErrorKind::NetworkUnreachable => Unreachable::Net,
        io::ErrorKind::HostUnreachable => Unreachable::Host,
        _ => Unreachable::AdminProhibited,
    }
}

/// Errors a connected socket reports for an ICMP error its kernel received (Linux's
/// `icmp_err_convert`).
pub(crate) fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    )
}

/// The most datagrams one UDP segmentation request may stand for (Linux's `UDP_MAX_SEGMENTS`).
pub(crate) const UDP_MAX_SEGMENTS: usize = 128;

impl<H: HostIo> Stack<H> {
    /// Binds (UDP) or listens on (TCP) the host sockets of the inbound forwards. Called once,
    /// before traffic.
    pub fn open_forwards(&mut self) -> io::Result<()> {
        for f in self.cfg.forwards.clone() {
            self.add_forward(f)?;
        }
        Ok(())
    }

    /// Opens an inbound forward (at start-up, or at run time through the control API). A second
    /// forward of the same protocol on the same host address is refused.
    ///
    /// Forwards live on the home shard (see [`Stack::shard_of`]): the guest's side of their
    /// conversations is routed there by the guest port, which stays routed there after the
    /// forward is removed (its TCP connections go on).
    pub fn add_forward(&mut self, f: Forward) -> io::Result<()> {
        if !self.shard.is_home() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "forwards are opened on the home shard",
            ));
        }
        if f.guest_port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "guest port 0 is not a port",
            ));
        }
        if self
            .forwards
            .iter()
            .any(|l| l.protocol == f.protocol && l.host == f.host)
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a {} forward already listens on {}", f.protocol, f.host),
            ));
        }
        let opened = match f.protocol {
            ForwardProtocol::Udp => self.host.udp_bind(f.host),
            ForwardProtocol::Tcp => self.host.tcp_listen(f.host),
        };
        let socket = opened.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "forward {} {} -> guest port {}: {e}",
                    f.protocol, f.host, f.guest_port
                ),
            )
        })?;
        self.link
            .set_forward_port(f.protocol == ForwardProtocol::Tcp, f.guest_port);
        self.forwards.push(ForwardListener {
            socket,
            guest_port: f.guest_port,
            protocol: f.protocol,
            host: f.host,
        });
        Ok(())
    }

    /// Closes the forward of `protocol` on `host`; false if there is none. TCP connections made
    /// through it go on (they have sockets of their own); its UDP flows end with it.
    pub fn remove_forward(&mut self, protocol: ForwardProtocol, host: SocketAddr) -> bool {
        let Some(i) = self
            .forwards
            .iter()
            .position(|l| l.protocol == protocol && l.host == host)
        else {
            return false;
        };
        let l = self.forwards.remove(i);
        let flows = self.flows.remove_by_socket(l.socket);
        self.stats.flows_closed += flows as u64;
        self.stats.flows_active = self.flows.len() as u64;
        self.host.close(l.socket);
        true
    }

    /// The inbound forwards open now.
    pub fn forwards(&self) -> Vec<Forward> {
        self.forwards
            .iter()
            .map(|l| Forward {
                protocol: l.protocol,
                host: l.host,
                guest_port: l.guest_port,
            })
            .collect()
    }

    /// A host socket is readable (or has a pending error): move what it holds to the guest.
    pub fn host_ready(&mut self, now: Instant, sock: SocketId) {
        if self.tcp.by_socket(sock).is_some() {
            self.tcp_host_ready(now, sock);
            return;
        }
        match self.flows.by_socket(sock) {
            Some(key @ FlowKey::Udp { .. }) => self.udp_from_host(now, sock, key),
            Some(key @ FlowKey::IcmpEcho { .. }) => self.echo_from_host(now, sock, key),
            None => {
                let Some(fwd) = self.forwards.iter().find(|f| f.socket == sock).copied() else {
                    return;
                };
                match fwd.protocol {
                    ForwardProtocol::Udp => self.udp_forward_ready(now, fwd),
                    ForwardProtocol::Tcp => self.tcp_accept_ready(now, fwd),
                }
            }
        }
    }
}

impl<H: HostIo> Core<H> {
    /// Where a guest datagram to `dst:port` goes on the host; `None` when nothing serves it.
    fn udp_host_destination(&mut self, dst: IpAddress, port: u16) -> Option<SocketAddr> {
        let dst = match dst {
            IpAddress::V4(d) => d,
            IpAddress::V6(d) => return self.ipv6_host_destination(d, port),
        };
        if dst == self.cfg.dns_ipv4 {
            if port != 53 {
                return None;
            }
            let upstream = self.cfg.dns_upstreams.first().copied();
            if upstream.is_none() {
                self.stats.drop_dns_no_upstream += 1;
            }
            return upstream;
        }
        if dst == self.cfg.gateway_ipv4 {
            return self
                .cfg
                .map_gateway_to_loopback
                .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        let net = self.cfg.ipv4_net;
        if dst.is_broadcast() || dst == net.broadcast() || net.contains(dst) {
            return None;
        }
        Some(SocketAddr::from((Ipv4Addr::from(dst), port)))
    }

    /// A guest datagram from `src` to `dst` for the host. `packet` is the whole IP packet, quoted
    /// in ICMP errors.
    pub(crate) fn udp_to_host(
        &mut self,
        now: Instant,
        src: IpAddress,
        dst: IpAddress,
        udp: &UdpPacket<&[u8]>,
        packet: &[u8],
    ) {
        let key = FlowKey::Udp {
            guest: (src, udp.src_port()),
            remote: (dst, udp.dst_port()),
        };
        let (sock, origin) = match self.flows.get_mut(&key) {
            Some(flow) => {
                flow.last_active = now;
                (flow.socket, flow.origin)
            }
            None => {
                let Some(to) = self.udp_host_destination(dst, udp.dst_port()) else {
                    self.stats.drop_udp_no_service += 1;
                    trace!("drop: {udp} to {dst}: no service");
                    if matches!(dst, IpAddress::V6(_)) {
                        // As a closed port on a real host (the IPv4 side keeps its counter only).
                        self.unreachable_for_packet(now, Unreachable::Port, dst, packet);
                    }
                    return;
                };
                match self.host.udp_connect(to) {
                    Ok(sock) => {
                        debug!("flow: udp {src}:{} -> {to}", udp.src_port());
                        self.add_flow(Flow {
                            key,
                            socket: sock,
                            origin: Origin::Guest,
                            last_active: now,
                        });
                        (sock, Origin::Guest)
                    }
                    Err(e) => {
                        self.stats.flows_refused += 1;
                        debug!("flow: udp to {to} refused by the host: {e}");
                        self.unreachable_for_packet(now, unreachable_kind(&e), dst, packet);
                        return;
                    }
                }
            }
        };
        // A UDP segmentation request (USO) carries several datagrams of `segment_size` bytes
        // behind one header: each goes to the host as the datagram it stands for.
        let payload = udp.payload();
        let segment = match self.inbound.gso {
            Some(Gso {
                kind: GsoKind::Udp,
                segment_size,
                ..
            }) if segment_size > 0 => usize::from(segment_size),
            _ => payload.len().max(1),
        };
        if payload.len() > segment {
            // Linux refuses to build more than UDP_MAX_SEGMENTS (128) datagrams from one request;
            // a larger count is no datagram stream but one frame asking for that many sends.
            if payload.len().div_ceil(segment) > UDP_MAX_SEGMENTS {
                self.stats.drop_udp_gso_invalid += 1;
                trace!("drop: {udp}: segmentation into more than {UDP_MAX_SEGMENTS} datagrams");
                return;
            }
            self.stats.udp_rx_segmented += 1;
        }
        let remote = match origin {
            Origin::Guest => None,
            Origin::Forward { peer } => Some(peer),
        };
        // Several datagrams go in one system call where the host can (UDP_SEGMENT); one empty
        // datagram is still a datagram.
        let count = payload.len().div_ceil(segment).max(1);
        let sent = if count > 1 {
            self.host.send_segments(sock, payload, segment, remote)
        } else {
            match remote {
                Some(peer) => self.host.send_to(sock, payload, peer),
                None => self.host.send(sock, payload),
            }
            .map(|_| (1, false))
        };
        match sent {
            Ok((n, batched)) => {
                self.stats.udp_tx_host_datagrams += n as u64;
                self.stats.udp_tx_host_gso_sends += u64::from(batched);
                // Those a later send refused (the host's error is the first one's only).
                self.stats.drop_udp_host_error += (count - n) as u64;
            }
            // An earlier datagram drew an ICMP port unreachable from the remote.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.unreachable_for_packet(now, Unreachable::Port, dst, packet);
            }
            Err(e) => {
                self.stats.drop_udp_host_error += count as u64;
                trace!("drop: {udp}: host send failed: {e}");
            }
        }
    }

    /// Destination unreachable to the guest about `packet` (its IPv4 or IPv6 packet), from
    /// `from` (the address it tried to reach).
    pub(crate) fn unreachable_for_packet(
        &mut self,
        now: Instant,
        kind: Unreachable,
        from: IpAddress,
        packet: &[u8],
    ) {
        match from {
            IpAddress::V4(from) => {
                self.dispatch_icmp_unreachable(now, kind.v4_code(), from, packet)
            }
            IpAddress::V6(from) => {
                let Ok(p) = crate::wire::Ipv6Packet::new_checked(packet) else {
                    return;
                };
                let ip = crate::wire::Ipv6Repr::parse(&p);
                let source = (kind == Unreachable::Port).then_some(from);
                self.send_icmpv6_error_from(
                    now,
                    source,
                    &ip,
                    packet,
                    crate::wire::Icmpv6Repr::DstUnreachable {
                        code: kind.v6_code(),
                        data: packet,
                    },
                );
            }
        }
    }

    /// Destination unreachable about a guest packet that is gone (the host reported the error
    /// later): its IP header is rebuilt around `l4_head`, the first bytes of its upper layer.
    pub(crate) fn unreachable_to_guest(
        &mut self,
        now: Instant,
        kind: Unreachable,
        guest: IpAddress,
        remote: IpAddress,
        protocol: IpProtocol,
        l4_head: &[u8],
    ) {
        let mut quote = [0u8; 40 + 8];
        let len = match (guest, remote) {
            (IpAddress::V4(g), IpAddress::V4(r)) => {
                Ipv4Repr {
                    src: g,
                    dst: r,
                    protocol,
                    payload_len: l4_head.len(),
                    ttl: DEFAULT_TTL,
                }
                .emit(&mut quote, 0);
                ipv4::HEADER_LEN
            }
            (IpAddress::V6(g), IpAddress::V6(r)) => {
                crate::wire::Ipv6Repr {
                    src: g,
                    dst: r,
                    next_header: protocol,
                    payload_len: l4_head.len(),
                    hop_limit: DEFAULT_TTL,
                }
                .emit(&mut quote);
                crate::wire::ipv6::HEADER_LEN
            }
            _ => return,
        };
        let n = l4_head.len().min(8);
        quote[len..len + n].copy_from_slice(&l4_head[..n]);
        self.unreachable_for_packet(now, kind, remote, &quote[..len + n]);
    }

    pub(crate) fn add_flow(&mut self, flow: Flow) {
        self.stats.flows_opened += 1;
        if let Some(evicted) = self.flows.insert(flow) {
            self.stats.flows_evicted += 1;
            if evicted.origin == Origin::Guest {
                self.host.close(evicted.socket);
            }
        }
        self.stats.flows_active = self.flows.len() as u64;
    }

    pub(crate) fn expire_flows(&mut self, now: Instant) {
        let (host, stats) = (&mut self.host, &mut self.stats);
        self.flows.expire(now, |f| {
            stats.flows_closed += 1;
            if f.origin == Origin::Guest {
                host.close(f.socket);
            }
        });
        self.stats.flows_active = self.flows.len() as u64;
    }

    fn udp_from_host(&mut self, now: Instant, sock: SocketId, key: FlowKey) {
        let FlowKey::Udp { guest, remote } = key else {
            return;
        };
        // Datagrams are received straight into frame buffers, behind room for their headers, a
        // batch per system call (recvmmsg).
        let at = ethernet::HEADER_LEN + guest.0.header_len() + udp::HEADER_LEN;
        let mut frames = std::mem::take(&mut self.recv_frames);
        let mut received = 0;
        while received < HOST_READ_BUDGET {
            let batch = RECV_BATCH.min(HOST_READ_BUDGET - received);
            if frames.len() < batch {
                frames.resize_with(batch, Vec::new);
            }
            for f in frames[..batch].iter_mut() {
                if f.len() < at + HOST_RECV_LEN {
                    let fresh = self.frame_buffer(at + HOST_RECV_LEN);
                    let old = std::mem::replace(f, fresh);
                    self.recycle_frame_buffer(old);
                }
            }
            let mut lens = [0usize; RECV_BATCH];
            let n = match self
                .host
                .recv_batch(sock, &mut frames[..batch], at, &mut lens[..batch])
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_icmp_error(&e) => {
                    // The kernel got an ICMP error for an earlier datagram (port, host or network
                    // unreachable): tell the guest, quoting the header of a datagram of this flow.
                    let mut udp8 = [0u8; 8];
                    udp8[0..2].copy_from_slice(&guest.1.to_be_bytes());
                    udp8[2..4].copy_from_slice(&remote.1.to_be_bytes());
                    udp8[4..6].copy_from_slice(&8u16.to_be_bytes());
                    let kind = unreachable_kind(&e);
                    self.unreachable_to_guest(now, kind, guest.0, remote.0, IpProtocol::Udp, &udp8);
                    received += 1;
                    continue;
                }
                Err(e) => {
                    self.stats.drop_udp_host_error += 1;
                    debug!("udp flow {guest:?} -> {remote:?}: host receive failed: {e}");
                    break;
                }
            };
            if let Some(f) = self.flows.get_mut(&key) {
                f.last_active = now;
            }
            for (frame, &len) in frames.iter_mut().zip(&lens[..n]) {
                let mut datagram = Received {
                    frame: Some(std::mem::take(frame)),
                    at,
                    len,
                };
                self.udp_datagram_to_guest(now, remote, guest, len, &mut datagram);
                if let Some(f) = datagram.frame {
                    // Not queued as it was (parked, fragmented, or dropped): kept for the next.
                    *frame = f;
                }
            }
            received += n;
            if n < batch {
                break;
            }
        }
        self.recv_frames = frames;
    }

    fn udp_forward_ready(&mut self, now: Instant, fwd: ForwardListener) {
        let mut buf = std::mem::take(&mut self.host_buf);
        for _ in 0..HOST_READ_BUDGET {
            let (n, peer) = match self.host.recv_from(fwd.socket, &mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.stats.drop_udp_host_error += 1;
                    debug!("udp forward: receive failed: {e}");
                    break;
                }
            };
            let Some((guest_ip, remote_ip)) = self.forward_endpoints(peer) else {
                self.stats.drop_udp_forward_no_guest += 1;
                continue;
            };
            let guest = (guest_ip, fwd.guest_port);
            let remote = (remote_ip, peer.port());
            let key = FlowKey::Udp { guest, remote };
            match self.flows.get_mut(&key) {
                Some(f) => f.last_active = now,
                None => self.add_flow(Flow {
                    key,
                    socket: fwd.socket,
                    origin: Origin::Forward { peer },
                    last_active: now,
                }),
            }
            self.udp_to_guest(now, remote, guest, &buf[..n]);
        }
        self.host_buf = buf;
    }

    /// The address a host peer of a forward has for the guest: the gateway for the host's own
    /// loopback (127.0.0.0/8 or ::1), the peer itself for other IPv4 (or IPv4-mapped) peers; `None`
    /// for other IPv6 peers, which reach the guest over IPv6 instead ([`Self::forward_endpoints`]).
    pub(crate) fn peer_as_seen_by_guest(&self, peer: SocketAddr) -> Option<Ipv4Address> {
        let v4 = match peer.ip() {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(a) if a.is_loopback() => Some(Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
        }?;
        if v4.is_loopback() && self.cfg.map_gateway_to_loopback {
            return Some(self.cfg.gateway_ipv4);
        }
        Some(Ipv4Address::from(v4))
    }

    /// The two ends of a forwarded connection or datagram as the guest sees them: a peer that
    /// speaks IPv6 (not IPv4-mapped) reaches the guest's IPv6 address when IPv6 is on and the
    /// guest has one (from the gateway's address if the peer is the host's loopback); anything else
    /// reaches its IPv4 address.
    pub(crate) fn forward_endpoints(&self, peer: SocketAddr) -> Option<(IpAddress, IpAddress)> {
        if let (std::net::IpAddr::V6(a), Some(v6), Some(guest)) =
            (peer.ip(), self.cfg.ipv6.as_ref(), self.guest_ipv6())
        {
            if a.to_ipv4_mapped().is_none() {
                let remote = if a.is_loopback() && self.cfg.map_gateway_to_loopback {
                    v6.gateway
                } else {
                    crate::wire::Ipv6Address::from(a)
                };
                return Some((guest.into(), remote.into()));
            }
        }
        Some((
            self.guest_ipv4()?.into(),
            self.peer_as_seen_by_guest(peer)?.into(),
        ))
    }

    /// Sends a datagram to the guest from `src` (as the guest sees it).
    pub(crate) fn udp_to_guest(
        &mut self,
        now: Instant,
        src: (IpAddress, u16),
        dst: (IpAddress, u16),
        payload: &[u8],
    ) {
        let copy = |buf: &mut [u8]| buf.copy_from_slice(payload);
        self.udp_datagram_to_guest(now, src, dst, payload.len(), copy);
    }

    /// A datagram of `len` bytes to the guest; `data` writes them behind the UDP header (or has
    /// them in place already, see [`Received`]).
    fn udp_datagram_to_guest(
        &mut self,
        now: Instant,
        src: (IpAddress, u16),
        dst: (IpAddress, u16),
        len: usize,
        data: impl IpPayload,
    ) {
        let udp_len = udp::HEADER_LEN + len;
        let udp = UdpRepr {
            src_port: src.1,
            dst_port: dst.1,
        };
        // With GUEST_CSUM the checksum is left to the guest (it counts the datagram verified).
        let partial = self.offloads.partial_checksum;
        let offload = PayloadOffload {
            checksum_offset: partial.then_some(UDP_CHECKSUM_OFFSET),
            gso: None,
            // The header is written whole and the payload copied in (or there already).
            fills_payload: true,
        };
        if matches!(dst.0, IpAddress::V4(_)) && ipv4::HEADER_LEN + udp_len > usize::from(u16::MAX) {
            self.stats.drop_udp_too_big += 1;
            return;
        }
        let datagram = Datagram {
            udp,
            ends: (src.0, dst.0),
            partial,
            data,
        };
        let sent = self.dispatch_ip_offload(
            now,
            (src.0, dst.0),
            IpProtocol::Udp,
            udp_len,
            offload,
            datagram,
        );
        if sent {
            self.stats.udp_rx_host_datagrams += 1;
        }
    }
}

/// A host datagram received straight into a frame buffer, `at` bytes in (room for the Ethernet,
/// IP and UDP headers), `len` bytes long: the frame is built around it, so its bytes are copied
/// once in userspace, by the device into the guest's buffers.
struct Received {
    frame: Option<Vec<u8>>,
    at: usize,
    len: usize,
}

impl IpPayload for &mut Received {
    fn take_frame(&mut self) -> Option<Vec<u8>> {
        self.frame.take()
    }

    /// Copies the data into `buf` (a frame that must be whole; no frame was taken).
    fn write(self, buf: &mut [u8]) {
        if let Some(frame) = &self.frame {
            buf.copy_from_slice(&frame[self.at..self.at + self.len]);
        }
    }
}

/// A UDP datagram as the IP layer writes it: the header (and checksum) around its data.
struct Datagram<D> {
    udp: UdpRepr,
    ends: (IpAddress, IpAddress),
    partial: bool,
    data: D,
}

impl<D> Datagram<D> {
    /// The header, and the checksum over header and data (or partial), in `buf`: the datagram.
    fn emit_header(
        udp: UdpRepr,
        (src, dst): (IpAddress, IpAddress),
        partial: bool,
        buf: &mut [u8],
    ) {
        if partial {
            udp.emit_partial(buf, src, dst);
        } else {
            udp.emit(buf, src, dst);
        }
    }
}

/// The datagram's data is an [`IpPayload`] too: a closure that writes it, or [`Received`].
impl<D: IpPayload> IpPayload for Datagram<D> {
    fn take_frame(&mut self) -> Option<Vec<u8>> {
        self.data.take_frame()
    }

    fn write(self, buf: &mut [u8]) {
        self.data.write(&mut buf[udp::HEADER_LEN..]);
        Self::emit_header(self.udp, self.ends, self.partial, buf);
    }

    /// The data is in place already (a frame from `take_frame`).
    fn write_head(self, buf: &mut [u8]) {
        Self::emit_header(self.udp, self.ends, self.partial, buf);
    }
}
