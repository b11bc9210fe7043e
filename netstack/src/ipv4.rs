//! The IPv4 layer, beside `ipv6`: ingress (header and source checks, reassembly, demultiplexing
//! to ICMP, IGMP, UDP, DHCP and TCP), ARP (answers, the guest's addresses learned, resolution of
//! the guest's MAC with frames parked meanwhile), and egress (`dispatch_ipv4*`: one frame, or
//! fragments when a datagram exceeds the link MTU).

use std::sync::Arc;

use log::{debug, trace};

use crate::dhcpv4::{Destination, Outcome};
use crate::host::HostIo;
use crate::link::LinkView;
use crate::offload::{FrameMeta, PayloadOffload};
use crate::reassembly;
use crate::stack::{Core, IpPayload, Stack, DEFAULT_TTL};
use crate::time::Instant;
use crate::wire::{self, arp, dhcpv4, ethernet, icmpv4, ipv4, udp};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EtherType,
    EthernetAddress, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

impl<H: HostIo> Stack<H> {
    pub(crate) fn process_ipv4(&mut self, now: Instant, eth: &EthernetRepr, payload: &[u8]) {
        self.stats.ipv4_rx_packets += 1;
        let packet = match Ipv4Packet::new_checked(payload) {
            Ok(p) => p,
            Err(wire::Error::Truncated) => {
                self.stats.drop_ipv4_truncated += 1;
                trace!("drop: truncated IPv4 packet");
                return;
            }
            Err(_) => {
                self.stats.drop_ipv4_malformed += 1;
                trace!("drop: malformed IPv4 header");
                return;
            }
        };
        let Ok(repr) = Ipv4Repr::parse(&packet) else {
            self.stats.drop_ipv4_checksum += 1;
            trace!("drop: {packet}: bad header checksum");
            return;
        };
        // Sources first, so that neither spoofed fragments nor spoofed datagrams use anything.
        let dhcp_client =
            repr.src.is_unspecified() && repr.protocol == IpProtocol::Udp && !packet.is_fragment();
        // A network routed via the guest sends through it: its sources are the guest's to use.
        let behind_guest = self.behind_guest(repr.src.into());
        if !self.is_guest_address(repr.src) && !dhcp_client && !behind_guest {
            self.stats.drop_ipv4_bad_source += 1;
            trace!("drop: {packet}: source not a guest address");
            return;
        }
        if !dhcp_client && !behind_guest && !self.source_allowed_v4(repr.src) {
            self.stats.drop_ipv4_spoofed += 1;
            trace!("drop: {packet}: the guest was not given {}", repr.src);
            return;
        }
        if packet.is_fragment() {
            self.stats.ipv4_rx_fragments += 1;
            let mut whole = core::mem::take(&mut self.reasm_buf);
            match self.reassembly.add(now, &packet, &mut whole) {
                reassembly::Outcome::Pending => {}
                reassembly::Outcome::Complete => {
                    self.stats.ipv4_reassembled += 1;
                    if !self.hand_over_reassembled(eth, &whole) {
                        self.process_ipv4(now, eth, &whole);
                    }
                }
                reassembly::Outcome::Overlap => {
                    self.stats.drop_ipv4_reasm_overlap += 1;
                    trace!("drop: {packet}: overlapping fragment, datagram discarded");
                }
                reassembly::Outcome::Invalid => {
                    self.stats.drop_ipv4_fragment += 1;
                    trace!("drop: {packet}: invalid fragment");
                }
            }
            self.stats.reasm_evicted = self.reassembly.evictions;
            self.reasm_buf = whole;
            return;
        }
        if !repr.src.is_unspecified() && !self.behind_guest(repr.src.into()) {
            self.learn(now, repr.src, eth.src);
            if self.view.last_guest_ipv4 != Some(repr.src) {
                self.link.lock().last_guest_ipv4 = Some(repr.src);
            }
        }
        if repr.protocol == IpProtocol::Igmp {
            self.process_igmp(now, packet.payload());
            return;
        }
        let net = self.cfg.ipv4_net;
        let to_gateway = self.cfg.is_gateway_address(repr.dst);
        let broadcast = repr.dst.is_broadcast() || repr.dst == net.broadcast();
        // Beyond the gateway: anything that is not on the link and may be routed (RFC 1812 §5.3.7:
        // never forward to loopback, multicast or unspecified destinations).
        let routed = !to_gateway
            && !broadcast
            && !net.contains(repr.dst)
            && !repr.dst.is_multicast()
            && !repr.dst.is_loopback()
            && !repr.dst.is_unspecified();
        if !to_gateway && !broadcast && !routed {
            self.stats.drop_ipv4_not_routed += 1;
            trace!("drop: {packet}: no route");
            return;
        }
        if routed && repr.ttl <= 1 {
            // RFC 1812 §5.3.1: a router that would forward a packet whose TTL runs out sends Time
            // Exceeded (which is how traceroute sees the gateway).
            self.stats.drop_ipv4_ttl_exceeded += 1;
            self.dispatch_icmp_error(now, icmpv4::TYPE_TIME_EXCEEDED, 0, packet.packet());
            return;
        }
        if routed || to_gateway {
            if let Some(mtu) = self.path_too_narrow(repr.dst.into(), packet.packet().len()) {
                if packet.dont_frag() {
                    // RFC 1191 §4: fragmentation needed, with the next hop's MTU.
                    self.stats.drop_ipv4_path_mtu += 1;
                    self.dispatch_icmp_error_mtu(now, 3, 4, mtu, packet.packet());
                    return;
                }
                // The emulated link would fragment it (RFC 791); the payload arrives the same.
                self.stats.ipv4_path_mtu_fragmented += 1;
            }
        }
        match repr.protocol {
            IpProtocol::Icmp if broadcast => {
                // RFC 1122 §3.2.2.6: echo to a broadcast address may be silently discarded.
                self.stats.drop_icmp_unsupported += 1;
            }
            IpProtocol::Icmp => self.process_icmpv4(now, &repr, eth.src, packet.payload()),
            IpProtocol::Udp => self.process_udp(now, &repr, packet.packet()),
            IpProtocol::Tcp if broadcast => {
                self.stats.drop_tcp_unsupported += 1;
                trace!("drop: {packet}: TCP to a broadcast address");
            }
            IpProtocol::Tcp => {
                self.process_tcp(now, repr.src.into(), repr.dst.into(), packet.payload())
            }
            _ => {
                self.stats.drop_ipv4_unknown_protocol += 1;
                trace!("drop: {packet}: protocol not served");
            }
        }
    }

    /// `packet` is the whole IPv4 packet (header included), for ICMP errors that quote it.
    pub(crate) fn process_udp(&mut self, now: Instant, ip: &Ipv4Repr, packet: &[u8]) {
        self.stats.udp_rx_datagrams += 1;
        let header_len = packet.len() - ip.payload_len;
        let udp = match UdpPacket::new_checked(&packet[header_len..]) {
            Ok(p) => p,
            Err(_) => {
                self.stats.drop_udp_malformed += 1;
                return;
            }
        };
        // A partial checksum (offloaded by the guest) is not checked: the bytes are the guest's own.
        if self.inbound.checksum.is_none() && UdpRepr::parse(&udp, ip.src, ip.dst).is_err() {
            self.stats.drop_udp_checksum += 1;
            trace!("drop: {udp}: bad checksum");
            return;
        }
        let to_dhcp = udp.dst_port() == dhcpv4::SERVER_PORT
            && (ip.dst.is_broadcast() || ip.dst == self.cfg.gateway_ipv4);
        if to_dhcp && self.cfg.dhcp_enabled {
            self.process_dhcpv4(now, udp.payload());
            return;
        }
        self.udp_to_host(now, ip.src.into(), ip.dst.into(), &udp, packet);
    }
}

impl<H: HostIo> Core<H> {
    /// The link neighbour an IPv4 packet to `dst` goes to: the guest itself for a prefix routed
    /// via the guest, else `dst`.
    pub(crate) fn next_hop_v4(&self, dst: Ipv4Address) -> Ipv4Address {
        if self.behind_guest(dst.into()) {
            if let Some(guest) = self.guest_ipv4() {
                return guest;
            }
        }
        dst
    }

    /// Gratuitous ARP for the gateway's IPv4 addresses (RFC 5227 §3 announcements); the IPv6 side
    /// (unsolicited Neighbor Advertisements and a Router Advertisement) is `ipv6_link_up`.
    pub(crate) fn announce_ipv4(&mut self) {
        for ip in [self.cfg.gateway_ipv4, self.cfg.dns_ipv4] {
            let announce = ArpRepr {
                operation: ArpOperation::Request,
                source_hardware_addr: self.cfg.gateway_mac,
                source_protocol_addr: ip,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: ip,
            };
            self.dispatch_arp(EthernetAddress::BROADCAST, &announce);
            self.stats.arp_tx_announcements += 1;
        }
    }

    pub(crate) fn process_arp(&mut self, now: Instant, payload: &[u8]) {
        let Some(repr) = ArpPacket::new_checked(payload)
            .and_then(|p| ArpRepr::parse(&p))
            .ok()
        else {
            self.stats.drop_arp_malformed += 1;
            trace!("drop: malformed ARP");
            return;
        };
        match repr.operation {
            ArpOperation::Request => self.stats.arp_rx_requests += 1,
            ArpOperation::Reply => self.stats.arp_rx_replies += 1,
            ArpOperation::Unknown(_) => {
                self.stats.drop_arp_malformed += 1;
                return;
            }
        }
        let sender = repr.source_protocol_addr;
        // RFC 826 "merge": learn the sender if it is a guest address (DAD probes use 0.0.0.0).
        if self.is_guest_address(sender) && repr.source_hardware_addr.is_unicast() {
            self.learn(now, sender, repr.source_hardware_addr);
        }
        if repr.operation != ArpOperation::Request {
            return;
        }
        if !self.cfg.is_gateway_address(repr.target_protocol_addr) {
            self.stats.drop_arp_foreign_target += 1;
            trace!("drop: ARP who-has {}: not ours", repr.target_protocol_addr);
            return;
        }
        let reply = ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: self.cfg.gateway_mac,
            source_protocol_addr: repr.target_protocol_addr,
            target_hardware_addr: repr.source_hardware_addr,
            target_protocol_addr: sender,
        };
        self.dispatch_arp(repr.source_hardware_addr, &reply);
        self.stats.arp_tx_replies += 1;
    }

    /// Guest addresses: host addresses of the guest network other than the gateway's own.
    pub(crate) fn is_guest_address(&self, addr: Ipv4Address) -> bool {
        let net = self.cfg.ipv4_net;
        net.contains(addr)
            && addr != net.network()
            && addr != net.broadcast()
            && !self.cfg.is_gateway_address(addr)
    }

    /// The MAC of the IPv4 neighbour `ip`: the view's when it may be used as it is, else the
    /// locked cache's (which may start a probe of a stale entry).
    pub(crate) fn neighbor_v4(&mut self, now: Instant, ip: Ipv4Address) -> Option<EthernetAddress> {
        self.refresh_view();
        LinkView::neighbor(&self.view.neighbors_v4, now, ip)
            .or_else(|| self.link.lock().neighbors.lookup(now, ip))
    }

    /// Whether the guest may send from `src` (see [`crate::sources`]): the view answers for the
    /// sources it holds, the locked policy for the rest (it may learn the first one).
    fn source_allowed_v4(&mut self, src: Ipv4Address) -> bool {
        self.refresh_view();
        if !self.view.source_check || self.view.sources_v4.contains(&src) {
            return true;
        }
        let mut link = self.link.lock();
        let link = &mut *link;
        link.sources
            .allow_v4(src, link.dhcp.leases().filter(|l| l.bound).map(|l| l.addr))
    }

    /// Traffic from `ip` at `mac`: the neighbour is reachable (refreshed in the locked cache only
    /// once half its lifetime is gone, see [`LinkView::confirmed`]).
    pub(crate) fn learn(&mut self, now: Instant, ip: Ipv4Address, mac: EthernetAddress) {
        self.refresh_view();
        if LinkView::confirmed(&self.view.neighbors_v4, now, ip, mac) {
            return;
        }
        let parked = self.link.lock().neighbors.fill(now, ip, mac);
        if let Some(frame) = parked {
            self.stats.ipv4_tx_packets += 1;
            if !self.txq.push(frame) {
                self.stats.drop_tx_queue_full += 1;
            }
        }
    }

    pub(crate) fn process_icmpv4(
        &mut self,
        now: Instant,
        ip: &Ipv4Repr,
        src_mac: EthernetAddress,
        payload: &[u8],
    ) {
        let Ok(packet) = Icmpv4Packet::new_checked(payload) else {
            self.stats.drop_icmp_truncated += 1;
            return;
        };
        let repr = match Icmpv4Repr::parse(&packet) {
            Ok(r) => r,
            Err(_) => {
                self.stats.drop_icmp_checksum += 1;
                trace!("drop: {packet}: bad checksum");
                return;
            }
        };
        match repr {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                self.stats.icmp_rx_echo_requests += 1;
                // The DNS address is the gateway's own; the gateway address and the world are
                // reached through the host (ICMP echo sockets).
                if ip.dst != self.cfg.dns_ipv4
                    && self.echo_to_host(now, ip.src.into(), ip.dst.into(), ident, seq_no, data)
                {
                    return;
                }
                let reply = Icmpv4Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                let out = Ipv4Repr {
                    src: ip.dst,
                    dst: ip.src,
                    protocol: IpProtocol::Icmp,
                    payload_len: reply.buffer_len(),
                    ttl: DEFAULT_TTL,
                };
                if self.dispatch_ipv4(now, Some(src_mac), &out, |buf| reply.emit(buf)) {
                    self.stats.icmp_tx_echo_replies += 1;
                }
            }
            // What the guest sends back to the gateway: answers to probes (see crate::probe) and
            // errors about what the gateway sent. Counted by kind, nothing is answered.
            Icmpv4Repr::EchoReply { .. } => self.stats.icmp_rx_echo_replies += 1,
            Icmpv4Repr::DstUnreachable { .. } => self.stats.icmp_rx_dest_unreachable += 1,
            Icmpv4Repr::TimeExceeded { .. } => self.stats.icmp_rx_time_exceeded += 1,
            Icmpv4Repr::Other { msg_type: 12, .. } => self.stats.icmp_rx_param_problems += 1,
            _ => {
                self.stats.drop_icmp_unsupported += 1;
                trace!("drop: {packet}: not answered");
            }
        }
    }

    /// The guest's IGMP messages (RFC 2236, RFC 3376 §4.2): membership reports and leaves,
    /// counted (the answers to a querier); nothing is sent back.
    pub(crate) fn process_igmp(&mut self, now: Instant, msg: &[u8]) {
        if msg.len() < 8 || wire::checksum::compute(msg) != 0 {
            self.stats.drop_igmp_invalid += 1;
            return;
        }
        match msg[0] {
            // v1 and v2 reports name one group.
            0x12 | 0x16 => {
                self.stats.igmp_rx_reports += 1;
                self.stats.igmp_rx_group_records += 1;
            }
            // v3: the number of group records is at offset 6.
            0x22 => {
                self.stats.igmp_rx_reports += 1;
                self.stats.igmp_rx_group_records += u64::from(wire::read_u16(msg, 6));
            }
            0x17 => self.stats.igmp_rx_leaves += 1,
            _ => {
                self.stats.drop_igmp_invalid += 1;
                return;
            }
        }
        let outcome = self.link.lock().querier.igmp(now, msg);
        self.stats.drop_multicast_table_full += outcome.table_full;
        self.count_multicast_groups();
    }

    pub(crate) fn process_dhcpv4(&mut self, now: Instant, payload: &[u8]) {
        let Some(req) = DhcpPacket::new_checked(payload)
            .and_then(|p| DhcpRepr::parse(&p))
            .ok()
        else {
            self.stats.drop_dhcp_malformed += 1;
            trace!("drop: malformed DHCP message");
            return;
        };
        debug!("dhcp: received {req}");
        match req.message_type {
            DhcpMessageType::Discover => self.stats.dhcp_rx_discovers += 1,
            DhcpMessageType::Request => self.stats.dhcp_rx_requests += 1,
            DhcpMessageType::Release => self.stats.dhcp_rx_releases += 1,
            DhcpMessageType::Decline => self.stats.dhcp_rx_declines += 1,
            DhcpMessageType::Inform => self.stats.dhcp_rx_informs += 1,
            _ => {}
        }
        let cfg = Arc::clone(&self.cfg);
        let outcome = self.link.lock().dhcp.process(now, &cfg, &req);
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Silent => return,
            Outcome::Ignored => {
                self.stats.drop_dhcp_ignored += 1;
                return;
            }
            Outcome::PoolExhausted => {
                self.stats.drop_dhcp_pool_exhausted += 1;
                debug!(
                    "dhcp: pool exhausted, {} not served",
                    req.client_hardware_address
                );
                return;
            }
        };
        debug!("dhcp: sending {}", reply.repr);
        let (dst_ip, dst_mac) = match reply.destination {
            Destination::Broadcast => (Ipv4Address::BROADCAST, EthernetAddress::BROADCAST),
            Destination::Unicast(ip, mac) => (ip, mac),
        };
        let dhcp_len = reply.repr.buffer_len();
        let udp_repr = UdpRepr {
            src_port: dhcpv4::SERVER_PORT,
            dst_port: dhcpv4::CLIENT_PORT,
        };
        let ip = Ipv4Repr {
            src: self.cfg.gateway_ipv4,
            dst: dst_ip,
            protocol: IpProtocol::Udp,
            payload_len: udp::HEADER_LEN + dhcp_len,
            ttl: DEFAULT_TTL,
        };
        let emit = |buf: &mut [u8]| {
            reply.repr.emit(&mut buf[udp::HEADER_LEN..]);
            udp_repr.emit_v4(buf, ip.src, ip.dst);
        };
        // RFC 2131 §2: a client takes DHCP messages of up to 576 bytes. Below that MTU (IPv4 allows
        // 68) the reply still goes whole: a client listening on a packet socket, as udhcpc and
        // dhclient do before they have an address, never sees fragments reassembled.
        let sent = if ip.buffer_len() <= dhcpv4::MIN_CLIENT_MESSAGE {
            self.dispatch_ipv4_frame(now, Some(dst_mac), &ip, PayloadOffload::NONE, emit)
        } else {
            self.dispatch_ipv4(now, Some(dst_mac), &ip, emit)
        };
        if sent {
            match reply.repr.message_type {
                DhcpMessageType::Offer => self.stats.dhcp_tx_offers += 1,
                DhcpMessageType::Ack => {
                    self.stats.dhcp_tx_acks += 1;
                    // The client now owns the address: remember where it lives, so traffic for it
                    // (forwards, fragments) needs no ARP round first.
                    if !reply.repr.your_ip.is_unspecified() {
                        self.learn(now, reply.repr.your_ip, reply.repr.client_hardware_address);
                    }
                }
                DhcpMessageType::Nak => self.stats.dhcp_tx_naks += 1,
                _ => {}
            }
        }
    }

    pub(crate) fn dispatch_arp(&mut self, dst_mac: EthernetAddress, repr: &ArpRepr) {
        let eth = EthernetRepr {
            src: self.cfg.gateway_mac,
            dst: dst_mac,
            ethertype: EtherType::Arp,
        };
        let queued = self.txq.push_with(
            ethernet::HEADER_LEN + arp::PACKET_LEN,
            FrameMeta::NONE,
            true,
            |buf| {
                eth.emit(buf);
                repr.emit(&mut buf[ethernet::HEADER_LEN..]);
            },
        );
        if !queued {
            self.stats.drop_tx_queue_full += 1;
        }
    }

    pub(crate) fn dispatch_arp_request(&mut self, target: Ipv4Address) {
        self.dispatch_arp_request_to(target, None);
    }

    /// An ARP request for `target`: broadcast, or unicast to `mac` to confirm a stale mapping
    /// (as Linux's ARP probes do).
    pub(crate) fn dispatch_arp_request_to(
        &mut self,
        target: Ipv4Address,
        mac: Option<EthernetAddress>,
    ) {
        let req = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: self.cfg.gateway_mac,
            source_protocol_addr: self.cfg.gateway_ipv4,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        self.dispatch_arp(mac.unwrap_or(EthernetAddress::BROADCAST), &req);
        self.stats.arp_tx_requests += 1;
    }

    /// Queues an IPv4 packet larger than the MTU as fragments (RFC 791: pieces of a multiple of 8
    /// bytes, MF on all but the last, one identification). All pieces are queued or none: a
    /// partial datagram would only waste the guest's reassembly memory. The destination must be a
    /// resolved neighbour (the guest spoke to us first); otherwise ARP is asked and the datagram
    /// dropped.
    pub(crate) fn dispatch_ipv4_fragmented(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        repr: &Ipv4Repr,
        emit_payload: impl FnOnce(&mut [u8]),
    ) -> bool {
        let hop = self.next_hop_v4(repr.dst);
        let Some(mac) = dst_mac.or_else(|| self.neighbor_v4(now, hop)) else {
            self.stats.drop_arp_unresolved += 1;
            self.dispatch_arp_request(hop);
            return false;
        };
        let piece = (usize::from(self.cfg.mtu) - ipv4::HEADER_LEN) & !7;
        let pieces = repr.payload_len.div_ceil(piece);
        if self.txq.room() < pieces {
            self.stats.drop_tx_queue_full += 1;
            return false;
        }
        let mut whole = core::mem::take(&mut self.scratch);
        whole.clear();
        whole.resize(repr.payload_len, 0);
        emit_payload(&mut whole);
        let ident = self.ip_ident;
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let eth = EthernetRepr {
            src: self.cfg.gateway_mac,
            dst: mac,
            ethertype: EtherType::Ipv4,
        };
        for (i, chunk) in whole.chunks(piece).enumerate() {
            let part = Ipv4Repr {
                payload_len: chunk.len(),
                ..*repr
            };
            let fragment = wire::Fragment::Piece {
                offset: (i * piece) as u16,
                more: (i + 1) * piece < whole.len(),
            };
            let queued = self.txq.push_with(
                ethernet::HEADER_LEN + ipv4::HEADER_LEN + chunk.len(),
                FrameMeta::NONE,
                true,
                |buf| {
                    eth.emit(buf);
                    let ip = &mut buf[ethernet::HEADER_LEN..];
                    part.emit_with_fragment(ip, ident, fragment);
                    ip[ipv4::HEADER_LEN..].copy_from_slice(chunk);
                },
            );
            debug_assert!(queued, "room was checked");
            self.stats.ipv4_tx_packets += 1;
            self.stats.ipv4_tx_fragments += 1;
        }
        self.scratch = whole;
        true
    }

    /// Queues an IPv4 packet; `emit_payload` writes the payload into the slice it is given. With no
    /// `dst_mac`, the destination is resolved through the neighbour cache (and ARP). Returns whether
    /// the packet was queued or parked.
    pub(crate) fn dispatch_ipv4(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        repr: &Ipv4Repr,
        emit_payload: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.dispatch_ipv4_offload(now, dst_mac, repr, PayloadOffload::NONE, emit_payload)
    }

    /// [`Stack::dispatch_ipv4`] for a payload that leaves work to the NIC (`offload`, which the
    /// caller chose within [`Stack::guest_offloads`]). A partial checksum is completed here when the
    /// packet must be fragmented or parked; a segmentation request is never fragmented.
    pub(crate) fn dispatch_ipv4_offload(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        repr: &Ipv4Repr,
        offload: PayloadOffload,
        payload: impl IpPayload,
    ) -> bool {
        let ip_len = ipv4::HEADER_LEN + repr.payload_len;
        if ip_len > usize::from(self.cfg.mtu) && offload.gso.is_none() {
            // Larger than the link: fragments, which the guest reassembles (ip_defrag).
            return self.dispatch_ipv4_fragmented(now, dst_mac, repr, |buf: &mut [u8]| {
                payload.write(buf);
                offload.complete(buf);
            });
        }
        self.dispatch_ipv4_frame(now, dst_mac, repr, offload, payload)
    }

    /// Queues an IPv4 packet in one frame, whatever the MTU (see [`Stack::dispatch_ipv4_offload`]).
    pub(crate) fn dispatch_ipv4_frame<P: IpPayload>(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        repr: &Ipv4Repr,
        offload: PayloadOffload,
        payload: P,
    ) -> bool {
        let ip_len = ipv4::HEADER_LEN + repr.payload_len;
        let ident = self.ip_ident;
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let src_mac = self.cfg.gateway_mac;
        // `head_only`: see `Core::queue_ip_frame`.
        let build = |buf: &mut [u8], dst: EthernetAddress, payload: P, head_only: bool| {
            EthernetRepr {
                src: src_mac,
                dst,
                ethertype: EtherType::Ipv4,
            }
            .emit(buf);
            let ip = &mut buf[ethernet::HEADER_LEN..];
            repr.emit(ip, ident);
            payload.write_as(&mut ip[ipv4::HEADER_LEN..], head_only);
        };
        let frame_len = ethernet::HEADER_LEN + ip_len;
        let hop = self.next_hop_v4(repr.dst);
        match dst_mac.or_else(|| self.neighbor_v4(now, hop)) {
            Some(mac) => {
                let meta = offload.frame_meta(ethernet::HEADER_LEN + ipv4::HEADER_LEN);
                // Ethernet and IP headers are written whole; the payload is, when its builder
                // says so.
                let zeroed = !offload.fills_payload;
                if !self.queue_ip_frame(frame_len, meta, zeroed, payload, |buf, p, head_only| {
                    build(buf, mac, p, head_only)
                }) {
                    return false;
                }
                self.stats.ipv4_tx_packets += 1;
                true
            }
            None if offload.gso.is_some() => {
                // Too large to park: the sender (TCP) sends again once the guest answers ARP.
                self.stats.drop_arp_unresolved += 1;
                self.dispatch_arp_request(hop);
                false
            }
            None => {
                // Unknown neighbour: build the frame with a placeholder destination and park it
                // until ARP answers (the cache fills the MAC in). A parked frame is plain bytes:
                // its checksum is completed.
                let mut scratch = core::mem::take(&mut self.scratch);
                scratch.clear();
                scratch.resize(frame_len, 0);
                build(&mut scratch, EthernetAddress([0; 6]), payload, false);
                offload.complete(&mut scratch[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]);
                let (request, replaced) = self.link.lock().neighbors.park(now, hop, &scratch);
                self.scratch = scratch;
                if replaced {
                    self.stats.drop_arp_unresolved += 1;
                }
                if request {
                    self.dispatch_arp_request(hop);
                }
                true
            }
        }
    }
}
