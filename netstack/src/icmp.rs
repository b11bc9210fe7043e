//! ICMP through the gateway: echo to the host and the world over host ICMP sockets, and the error
//! messages the gateway sends the guest (RFC 792, RFC 1812 §4.3).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use log::{debug, trace};

use crate::flows::{Flow, FlowKey, Origin};
use crate::host::{HostIo, SocketId};
use crate::stack::{Core, DEFAULT_TTL};
use crate::time::Instant;
use crate::udp::{unreachable_kind, Unreachable, HOST_READ_BUDGET};
use crate::wire::{icmpv4, ipv4, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Address, Ipv4Repr};

/// RFC 1812 §4.3.2.3: an ICMP error quotes as much of the offending packet as fits in 576 bytes.
const MAX_QUOTE: usize = 576 - ipv4::HEADER_LEN - icmpv4::HEADER_LEN;

impl<H: HostIo> Core<H> {
    /// Forwards a guest echo request (ICMP or ICMPv6, from `guest` to `dst`) through a host
    /// ICMP socket. Returns false when the stack should answer it itself: echo to the gateway on a
    /// host that allows no ICMP socket, or with `--no-map-gw`.
    pub(crate) fn echo_to_host(
        &mut self,
        now: Instant,
        guest: IpAddress,
        dst: IpAddress,
        ident: u16,
        seq: u16,
        data: &[u8],
    ) -> bool {
        let to_gateway = match dst {
            IpAddress::V4(d) => d == self.cfg.gateway_ipv4,
            IpAddress::V6(d) => self.cfg.ipv6.as_ref().is_some_and(|c| d == c.gateway),
        };
        if to_gateway && !self.cfg.map_gateway_to_loopback {
            return false;
        }
        let key = FlowKey::IcmpEcho {
            guest,
            ident,
            remote: dst,
        };
        // What an error quotes: the request's IP header and its first 8 bytes.
        let (protocol, request_type) = match dst {
            IpAddress::V4(_) => (IpProtocol::Icmp, icmpv4::TYPE_ECHO_REQUEST),
            IpAddress::V6(_) => (IpProtocol::Icmpv6, 128),
        };
        let mut head = [request_type, 0, 0, 0, 0, 0, 0, 0];
        head[4..6].copy_from_slice(&ident.to_be_bytes());
        head[6..8].copy_from_slice(&seq.to_be_bytes());
        let sock = match self.flows.get_mut(&key) {
            Some(flow) => {
                flow.last_active = now;
                flow.socket
            }
            None => {
                let remote = match (to_gateway, dst) {
                    (true, IpAddress::V4(_)) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    (true, IpAddress::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    (false, d) => d.into(),
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
                        debug!("echo to {dst}: no host ICMP socket ({e})");
                        let kind = match unreachable_kind(&e) {
                            Unreachable::Port => Unreachable::AdminProhibited,
                            k => k,
                        };
                        self.unreachable_to_guest(now, kind, guest, dst, protocol, &head);
                        return true;
                    }
                }
            }
        };
        match self.host.icmp_echo_send(sock, seq, data) {
            Ok(()) => {
                self.stats.icmp_tx_host_echo_requests += 1;
                // An echo to the gateway goes to the host's loopback, whose kernel answers it
                // before the send returns (the reply is generated in the softirq the send runs
                // on the way out): taken now, it reaches the guest in this batch instead of
                // after one more wake-up of the worker for the socket's readiness.
                if to_gateway {
                    self.echo_from_host(now, sock, key);
                }
            }
            Err(e) => {
                let kind = unreachable_kind(&e);
                self.unreachable_to_guest(now, kind, guest, dst, protocol, &head);
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
                    self.echo_reply_to_guest(now, remote, guest, ident, seq, &buf[..n]);
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

    /// An echo reply from `remote` to the guest, over the family of the request.
    fn echo_reply_to_guest(
        &mut self,
        now: Instant,
        remote: IpAddress,
        guest: IpAddress,
        ident: u16,
        seq: u16,
        data: &[u8],
    ) {
        match (remote, guest) {
            (IpAddress::V4(src), IpAddress::V4(dst)) => {
                let reply = Icmpv4Repr::EchoReply {
                    ident,
                    seq_no: seq,
                    data,
                };
                let ip = Ipv4Repr {
                    src,
                    dst,
                    protocol: IpProtocol::Icmp,
                    payload_len: reply.buffer_len(),
                    ttl: DEFAULT_TTL,
                };
                if self.dispatch_ipv4(now, None, &ip, |b| reply.emit(b)) {
                    self.stats.icmp_tx_echo_replies += 1;
                }
            }
            (IpAddress::V6(src), IpAddress::V6(dst)) => {
                let reply = crate::wire::Icmpv6Repr::EchoReply {
                    ident,
                    seq_no: seq,
                    data,
                };
                if self.send_icmpv6_echo_reply(now, src, dst, &reply) {
                    self.stats.icmpv6_tx_echo_replies += 1;
                }
            }
            _ => {}
        }
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
            Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu: 0,
                data,
            },
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
        self.dispatch_icmp_error_mtu(now, msg_type, code, 0, original);
    }

    /// [`Stack::dispatch_icmp_error`] with a next-hop MTU (Destination Unreachable code 4).
    pub(crate) fn dispatch_icmp_error_mtu(
        &mut self,
        now: Instant,
        msg_type: u8,
        code: u8,
        next_hop_mtu: u16,
        original: &[u8],
    ) {
        let data = &original[..original.len().min(MAX_QUOTE)];
        let repr = match msg_type {
            icmpv4::TYPE_TIME_EXCEEDED => Icmpv4Repr::TimeExceeded { code, data },
            _ => Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu,
                data,
            },
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
        // Path MTU discovery is never starved (as in Linux's icmpv4_mask_allow): every
        // oversized DF packet needs its Fragmentation Needed.
        let frag_needed = matches!(
            repr,
            Icmpv4Repr::DstUnreachable {
                code: icmpv4::unreachable::FRAG_NEEDED,
                ..
            }
        );
        if !frag_needed && !self.icmp_errors.allow(now) {
            self.stats.drop_icmp_rate_limited += 1;
            return;
        }
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
        let link = self.link.lock();
        let leased = link.dhcp.leases().find(|l| l.bound);
        leased.map(|l| l.addr).or(link.last_guest_ipv4)
    }
}
