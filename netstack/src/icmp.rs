//! ICMP through the gateway: echo to the host and the world over host ICMP sockets, and the error
//! messages the gateway sends the guest (RFC 792, RFC 1812 §4.3).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use log::{debug, trace};

use crate::flows::{Flow, FlowKey, Origin};
use crate::host::{HostIo, SocketId};
use crate::stack::{Stack, DEFAULT_TTL};
use crate::time::Instant;
use crate::udp::{unreachable_code, HOST_READ_BUDGET};
use crate::wire::{icmpv4, ipv4, Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Repr};

/// RFC 1812 §4.3.2.3: an ICMP error quotes as much of the offending packet as fits in 576 bytes.
const MAX_QUOTE: usize = 576 - ipv4::HEADER_LEN - icmpv4::HEADER_LEN;

impl<H: HostIo> Stack<H> {
    /// Forwards a guest echo request through a host ICMP socket. Returns false when the stack should
    /// answer it itself: echo to the gateway on a host that allows no ICMP socket.
    pub(crate) fn echo_to_host(
        &mut self,
        now: Instant,
        ip: &Ipv4Repr,
        ident: u16,
        seq: u16,
        data: &[u8],
    ) -> bool {
        let to_gateway = ip.dst == self.cfg.gateway_ipv4;
        if to_gateway && !self.cfg.map_gateway_to_loopback {
            return false;
        }
        let key = FlowKey::IcmpEcho {
            guest: ip.src,
            ident,
            remote: ip.dst,
        };
        let sock = match self.flows.get_mut(&key) {
            Some(flow) => {
                flow.last_active = now;
                flow.socket
            }
            None => {
                let remote = if to_gateway {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    IpAddr::V4(ip.dst.into())
                };
                match self.host.icmp_echo_open(remote) {
                    Ok(sock) => {
                        self.add_flow(Flow {
                            key,
                            socket: sock,
                            origin: Origin::Guest,
                            last_active: now,
                        });
                        sock
                    }
                    Err(e) if to_gateway => {
                        debug!("echo to the gateway answered locally: no host ICMP socket ({e})");
                        self.stats.icmp_host_unavailable += 1;
                        return false;
                    }
                    Err(e) => {
                        self.stats.flows_refused += 1;
                        debug!("echo to {}: no host ICMP socket ({e})", ip.dst);
                        let code = match e.kind() {
                            io::ErrorKind::NetworkUnreachable => icmpv4::unreachable::NET,
                            io::ErrorKind::HostUnreachable => icmpv4::unreachable::HOST,
                            _ => icmpv4::unreachable::ADMIN_PROHIBITED,
                        };
                        let quote = echo_quote(ip, ident, seq);
                        self.dispatch_icmp_unreachable(now, code, ip.dst, &quote);
                        return true;
                    }
                }
            }
        };
        match self.host.icmp_echo_send(sock, seq, data) {
            Ok(()) => self.stats.icmp_tx_host_echo_requests += 1,
            Err(e) => {
                let quote = echo_quote(ip, ident, seq);
                self.dispatch_icmp_unreachable(now, unreachable_code(&e), ip.dst, &quote);
            }
        }
        true
    }

    pub(crate) fn echo_from_host(&mut self, now: Instant, sock: SocketId, key: FlowKey) {
        let FlowKey::IcmpEcho {
            guest,
            ident,
            remote,
        } = key
        else {
            return;
        };
        let mut buf = std::mem::take(&mut self.host_buf);
        for _ in 0..HOST_READ_BUDGET {
            match self.host.icmp_echo_recv(sock, &mut buf) {
                Ok((seq, n)) => {
                    self.stats.icmp_rx_host_echo_replies += 1;
                    if let Some(f) = self.flows.get_mut(&key) {
                        f.last_active = now;
                    }
                    let reply = Icmpv4Repr::EchoReply {
                        ident,
                        seq_no: seq,
                        data: &buf[..n],
                    };
                    let ip = Ipv4Repr {
                        src: remote,
                        dst: guest,
                        protocol: IpProtocol::Icmp,
                        payload_len: reply.buffer_len(),
                        ttl: DEFAULT_TTL,
                    };
                    if self.dispatch_ipv4(now, None, &ip, |b| reply.emit(b)) {
                        self.stats.icmp_tx_echo_replies += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("echo flow to {remote}: host receive failed: {e}");
                    break;
                }
            }
        }
        self.host_buf = buf;
    }

    /// Destination unreachable to the guest, from `from` (the address the guest tried to reach),
    /// quoting `original` (the guest's IPv4 packet).
    pub(crate) fn dispatch_icmp_unreachable(
        &mut self,
        now: Instant,
        code: u8,
        from: Ipv4Address,
        original: &[u8],
    ) {
        let data = &original[..original.len().min(MAX_QUOTE)];
        // Port (and protocol) unreachable come from the host that was reached; a network or host
        // that cannot be reached is reported by the router on the way, the gateway.
        let from = match code {
            icmpv4::unreachable::PORT => from,
            _ => self.cfg.gateway_ipv4,
        };
        self.dispatch_icmp_to_guest(
            now,
            from,
            original,
            Icmpv4Repr::DstUnreachable { code, data },
        );
    }

    /// An ICMP error of `msg_type` from the gateway itself (Time Exceeded), quoting `original`.
    pub(crate) fn dispatch_icmp_error(
        &mut self,
        now: Instant,
        msg_type: u8,
        code: u8,
        original: &[u8],
    ) {
        let data = &original[..original.len().min(MAX_QUOTE)];
        let repr = match msg_type {
            icmpv4::TYPE_TIME_EXCEEDED => Icmpv4Repr::TimeExceeded { code, data },
            _ => Icmpv4Repr::DstUnreachable { code, data },
        };
        let from = self.cfg.gateway_ipv4;
        self.dispatch_icmp_to_guest(now, from, original, repr);
    }

    fn dispatch_icmp_to_guest(
        &mut self,
        now: Instant,
        from: Ipv4Address,
        original: &[u8],
        repr: Icmpv4Repr,
    ) {
        // The guest is the original's source.
        let Some(guest) = original.get(12..16).map(Ipv4Address::from_bytes) else {
            return;
        };
        let ip = Ipv4Repr {
            src: from,
            dst: guest,
            protocol: IpProtocol::Icmp,
            payload_len: repr.buffer_len(),
            ttl: DEFAULT_TTL,
        };
        trace!("icmp error to {guest}: {repr:?}");
        if self.dispatch_ipv4(now, None, &ip, |b| repr.emit(b)) {
            self.stats.icmp_tx_errors += 1;
        }
    }

    /// The guest's IPv4 address: its bound DHCP lease, else the address it last sent from.
    pub fn guest_ipv4(&self) -> Option<Ipv4Address> {
        self.leases()
            .find(|l| l.bound)
            .map(|l| l.addr)
            .or(self.last_guest_ipv4)
    }
}

/// The header of an echo request for an error's quote.
fn echo_quote(ip: &Ipv4Repr, ident: u16, seq: u16) -> [u8; 28] {
    let mut q = [0u8; 28];
    Ipv4Repr {
        payload_len: 8,
        ..*ip
    }
    .emit(&mut q, 0);
    Icmpv4Repr::EchoRequest {
        ident,
        seq_no: seq,
        data: &[],
    }
    .emit(&mut q[20..]);
    q
}
