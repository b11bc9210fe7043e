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

use crate::config::ForwardProtocol;
use crate::flows::{Flow, FlowKey, Origin};
use crate::host::{HostIo, SocketId};
use crate::stack::{ForwardListener, Stack, DEFAULT_TTL};
use crate::time::Instant;
use crate::wire::icmpv4::unreachable;
use crate::wire::{ipv4, IpProtocol, Ipv4Address, Ipv4Repr, UdpPacket, UdpRepr};

/// Datagrams read from one host socket per readiness event, so that one busy socket cannot starve
/// the others or the guest's queues.
pub const HOST_READ_BUDGET: usize = 64;

/// The ICMP unreachable code for a host-side error.
pub(crate) fn unreachable_code(e: &io::Error) -> u8 {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => unreachable::PORT,
        io::ErrorKind::NetworkUnreachable => unreachable::NET,
        io::ErrorKind::HostUnreachable => unreachable::HOST,
        _ => unreachable::ADMIN_PROHIBITED,
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

impl<H: HostIo> Stack<H> {
    /// Where a guest datagram to `dst:port` goes on the host; `None` when nothing serves it.
    fn udp_host_destination(&mut self, dst: Ipv4Address, port: u16) -> Option<SocketAddr> {
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

    /// A guest datagram for the host. `packet` is the whole IPv4 packet, quoted in ICMP errors.
    pub(crate) fn udp_to_host(
        &mut self,
        now: Instant,
        ip: &Ipv4Repr,
        udp: &UdpPacket<&[u8]>,
        packet: &[u8],
    ) {
        let key = FlowKey::Udp {
            guest: (ip.src, udp.src_port()),
            remote: (ip.dst, udp.dst_port()),
        };
        let (sock, origin) = match self.flows.get_mut(&key) {
            Some(flow) => {
                flow.last_active = now;
                (flow.socket, flow.origin)
            }
            None => {
                let Some(dst) = self.udp_host_destination(ip.dst, udp.dst_port()) else {
                    self.stats.drop_udp_no_service += 1;
                    trace!("drop: {udp} to {}: no service", ip.dst);
                    return;
                };
                match self.host.udp_connect(dst) {
                    Ok(sock) => {
                        debug!("flow: udp {}:{} -> {dst}", ip.src, udp.src_port());
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
                        debug!("flow: udp to {dst} refused by the host: {e}");
                        self.dispatch_icmp_unreachable(now, unreachable_code(&e), ip.dst, packet);
                        return;
                    }
                }
            }
        };
        let sent = match origin {
            Origin::Guest => self.host.send(sock, udp.payload()),
            Origin::Forward { peer } => self.host.send_to(sock, udp.payload(), peer),
        };
        match sent {
            Ok(_) => self.stats.udp_tx_host_datagrams += 1,
            // An earlier datagram drew an ICMP port unreachable from the remote.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.dispatch_icmp_unreachable(now, unreachable::PORT, ip.dst, packet)
            }
            Err(e) => {
                self.stats.drop_udp_host_error += 1;
                trace!("drop: {udp}: host send failed: {e}");
            }
        }
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

    /// Binds (UDP) or listens on (TCP) the host sockets of the inbound forwards. Called once,
    /// before traffic.
    pub fn open_forwards(&mut self) -> io::Result<()> {
        for f in self.cfg.forwards.clone() {
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
            self.forwards.push(ForwardListener {
                socket,
                guest_port: f.guest_port,
                protocol: f.protocol,
            });
        }
        Ok(())
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

    fn udp_from_host(&mut self, now: Instant, sock: SocketId, key: FlowKey) {
        let FlowKey::Udp { guest, remote } = key else {
            return;
        };
        let mut buf = std::mem::take(&mut self.host_buf);
        for _ in 0..HOST_READ_BUDGET {
            match self.host.recv_from(sock, &mut buf) {
                Ok((n, _)) => {
                    if let Some(f) = self.flows.get_mut(&key) {
                        f.last_active = now;
                    }
                    self.udp_to_guest(now, remote, guest, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_icmp_error(&e) => {
                    // The kernel got an ICMP error for an earlier datagram (port, host or network
                    // unreachable): tell the guest, quoting the header of a datagram of this flow.
                    let quote = udp_quote(guest, remote);
                    self.dispatch_icmp_unreachable(now, unreachable_code(&e), remote.0, &quote);
                }
                Err(e) => {
                    self.stats.drop_udp_host_error += 1;
                    debug!("udp flow {guest:?} -> {remote:?}: host receive failed: {e}");
                    break;
                }
            }
        }
        self.host_buf = buf;
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
            let Some(guest_ip) = self.guest_ipv4() else {
                self.stats.drop_udp_forward_no_guest += 1;
                continue;
            };
            let Some(remote_ip) = self.peer_as_seen_by_guest(peer) else {
                // IPv6 peers need an IPv6 guest path.
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
    /// for other IPv6 peers (no IPv6 guest path yet).
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

    /// Sends a datagram to the guest from `src` (as the guest sees it).
    pub(crate) fn udp_to_guest(
        &mut self,
        now: Instant,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        payload: &[u8],
    ) {
        let udp_len = 8 + payload.len();
        if ipv4::HEADER_LEN + udp_len > usize::from(u16::MAX) {
            self.stats.drop_udp_too_big += 1;
            return;
        }
        let ip = Ipv4Repr {
            src: src.0,
            dst: dst.0,
            protocol: IpProtocol::Udp,
            payload_len: udp_len,
            ttl: DEFAULT_TTL,
        };
        let udp = UdpRepr {
            src_port: src.1,
            dst_port: dst.1,
        };
        let sent = self.dispatch_ipv4(now, None, &ip, |buf| {
            buf[8..].copy_from_slice(payload);
            udp.emit_v4(buf, ip.src, ip.dst);
        });
        if sent {
            self.stats.udp_rx_host_datagrams += 1;
        }
    }
}

/// The IPv4 and UDP headers of a datagram of this flow, for an ICMP error's quote when the original
/// datagram is gone (the host reports the error later).
fn udp_quote(guest: (Ipv4Address, u16), remote: (Ipv4Address, u16)) -> [u8; 28] {
    let mut q = [0u8; 28];
    Ipv4Repr {
        src: guest.0,
        dst: remote.0,
        protocol: IpProtocol::Udp,
        payload_len: 8,
        ttl: DEFAULT_TTL,
    }
    .emit(&mut q, 0);
    q[20..22].copy_from_slice(&guest.1.to_be_bytes());
    q[22..24].copy_from_slice(&remote.1.to_be_bytes());
    q[24..26].copy_from_slice(&8u16.to_be_bytes());
    q
}
