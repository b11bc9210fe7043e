//! IPv6 on the guest link: header validation and the extension-header walk (RFC 8200), Neighbor
//! Discovery (RFC 4861: answering for the gateway's addresses, defending them against DAD,
//! resolving the guest's), the router role (solicited and periodic Router Advertisements with the
//! prefix for SLAAC, RFC 4862, the MTU, and DNS by RDNSS/DNSSL, RFC 8106), ICMPv6 (RFC 4443: echo,
//! and errors within a rate limit), MLD reports (counted), and DHCPv6 (`dhcpv6`).
//!
//! The gateway owns three addresses: `fe80::2` (link-local, the source of everything NDP), the
//! prefix's host 2 (the gateway) and host 3 (DNS), mirroring 10.0.2.2 and 10.0.2.3.

use std::net::SocketAddr;

use log::trace;

use crate::config::{Dhcpv6Mode, Ipv6Config, GATEWAY_LINK_LOCAL};
use crate::dhcpv6::{self, Answer, Dhcpv6Lease};
use crate::host::HostIo;
use crate::link::LinkView;
use crate::offload::PayloadOffload;
use crate::reassembly;
use crate::stack::{Core, IpPayload, Stack};
use crate::time::{Duration, Instant};
use crate::wire::dhcpv6::{opt, Dhcpv6Repr, CLIENT_PORT, SERVER_PORT};
use crate::wire::icmpv6::{
    na_flags, prefix_flags, ra_flags, unreachable, Icmpv6Repr, NdpOptions, PrefixInfo,
    MAX_ERROR_QUOTE,
};
use crate::wire::ipv6::{self as wire_ipv6, walk_extension_headers, ExtError};
use crate::wire::{
    ethernet, udp, EtherType, EthernetAddress, EthernetRepr, IpProtocol, Ipv6Address, Ipv6Packet,
    Ipv6Repr, UdpPacket,
};

/// RFC 4861 §6.1 / §7.1: NDP messages are sent, and must arrive, with hop limit 255 (proof that
/// they did not cross a router).
const NDP_HOP_LIMIT: u8 = 255;
/// The hop limit of what the gateway originates (RFC 8200 §3; Linux's default).
const DEFAULT_HOP_LIMIT: u8 = 64;
/// RFC 4861 §10: MIN_DELAY_BETWEEN_RAS.
const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// RFC 4861 §10: MAX_INITIAL_RTR_ADVERTISEMENTS and MAX_INITIAL_RTR_ADVERT_INTERVAL.
const INITIAL_RAS: u8 = 3;
const INITIAL_RA_INTERVAL: Duration = Duration::from_secs(16);
/// ff02::1:2, All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
const ALL_DHCP_SERVERS: Ipv6Address = Ipv6Address::new([0xff02, 0, 0, 0, 0, 0, 1, 2]);

/// Where a packet from the guest is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// One of the gateway's unicast addresses.
    Gateway,
    /// A multicast group the gateway listens to.
    OurGroup,
    /// Another multicast group (only MLD reports for it are of interest).
    OtherGroup,
    /// An address on the link that is not ours (nobody else is there).
    OnLink,
    /// Beyond the gateway.
    Routed,
}

impl<H: HostIo> Stack<H> {
    /// The guest's DHCPv6 bindings.
    pub fn dhcpv6_leases(&self) -> Vec<Dhcpv6Lease> {
        self.link.lock().v6.dhcp.leases().collect()
    }

    /// An IPv6 packet from the guest (RFC 8200 §3-4).
    pub(crate) fn process_ipv6(&mut self, now: Instant, eth: &EthernetRepr, payload: &[u8]) {
        let Some(cfg) = self.cfg.ipv6.clone() else {
            self.stats.drop_ipv6_unsupported += 1;
            trace!("drop: IPv6 is off");
            return;
        };
        self.stats.ipv6_rx_packets += 1;
        let packet = match Ipv6Packet::new_checked(payload) {
            Ok(p) => p,
            Err(crate::wire::Error::Truncated) => {
                self.stats.drop_ipv6_truncated += 1;
                return;
            }
            Err(_) => {
                self.stats.drop_ipv6_malformed += 1;
                return;
            }
        };
        let repr = Ipv6Repr::parse(&packet);
        // Sources: the guest's link-local or prefix addresses, or :: for DAD and early MLD
        // (checked per message below). Never multicast (RFC 4291 §2.7), never ours.
        // A network routed via the guest sends through it.
        let behind_guest = self.behind_guest(repr.src.into());
        let src_ok = repr.src.is_unspecified()
            || behind_guest
            || ((repr.src.is_link_local() || cfg.prefix.contains(repr.src))
                && !cfg.is_gateway_address(repr.src)
                && repr.src != cfg.prefix.network());
        if !src_ok {
            self.stats.drop_ipv6_bad_source += 1;
            trace!("drop: IPv6 from {}: not a guest address", repr.src);
            return;
        }
        if !repr.src.is_unspecified() && !behind_guest && !self.source_allowed_v6(repr.src) {
            self.stats.drop_ipv6_spoofed += 1;
            trace!("drop: IPv6 from {}: not claimed with DAD", repr.src);
            return;
        }
        if !repr.src.is_unspecified() && !behind_guest {
            self.learn_v6(now, repr.src, eth.src);
            if cfg.prefix.contains(repr.src) && self.view.last_guest_global != Some(repr.src) {
                self.link.lock().v6.last_guest_global = Some(repr.src);
            }
        }
        let Some(upper) = self.walk_ipv6(now, &repr, &packet) else {
            return;
        };
        if self.ipv6_too_big(now, &cfg, &repr, &packet) {
            return;
        }
        if upper.fragment.is_none() {
            return self.deliver_ipv6(now, eth, &cfg, &repr, &packet, &upper);
        }
        self.stats.ipv6_rx_fragments += 1;
        let mut whole = core::mem::take(&mut self.reasm_buf);
        match self
            .reassembly
            .add_v6(now, packet.packet(), &upper, &mut whole)
        {
            reassembly::Outcome::Pending => {}
            reassembly::Outcome::Complete => {
                self.stats.ipv6_reassembled += 1;
                if !self.hand_over_reassembled(eth, &whole) {
                    self.process_reassembled_ipv6(now, eth, &whole);
                }
            }
            reassembly::Outcome::Overlap => self.stats.drop_ipv6_reasm_overlap += 1,
            reassembly::Outcome::Invalid => self.stats.drop_ipv6_fragment += 1,
        }
        self.stats.reasm_evicted = self.reassembly.evictions;
        self.reasm_buf = whole;
    }

    /// A datagram reassembled from the guest's fragments (here or by the home shard).
    pub(crate) fn process_reassembled_ipv6(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        whole: &[u8],
    ) {
        let Some(cfg) = self.cfg.ipv6.clone() else {
            return;
        };
        // The datagram is walked again as a whole, once: never a second reassembly (the walk
        // refuses a Fragment header in it), never a recursion.
        if let Ok(whole) = Ipv6Packet::new_checked(whole) {
            let repr = Ipv6Repr::parse(&whole);
            if let Some(upper) = self.walk_ipv6(now, &repr, &whole) {
                if upper.fragment.is_some() {
                    self.stats.drop_ipv6_nested_fragment += 1;
                } else {
                    self.deliver_ipv6(now, eth, &cfg, &repr, &whole, &upper);
                }
            }
        }
    }

    /// Walks the extension headers of a packet from the guest (RFC 8200 §4), counting and
    /// answering what stops it.
    fn walk_ipv6(
        &mut self,
        now: Instant,
        repr: &Ipv6Repr,
        packet: &Ipv6Packet<&[u8]>,
    ) -> Option<wire_ipv6::UpperLayer> {
        let upper = match walk_extension_headers(
            u8::from(repr.next_header),
            packet.payload(),
            repr.dst.is_multicast(),
        ) {
            Ok(u) => u,
            Err(ExtError::Drop) => {
                self.stats.drop_ipv6_ext_header += 1;
                return None;
            }
            Err(ExtError::NestedFragment) => {
                self.stats.drop_ipv6_nested_fragment += 1;
                return None;
            }
            Err(ExtError::ParameterProblem { code, pointer }) => {
                self.stats.drop_ipv6_ext_header += 1;
                // RFC 4443 §2.4(e.3): to a multicast destination, only code 2 is reported.
                if !repr.dst.is_multicast() || code == wire_ipv6::param_problem::UNKNOWN_OPTION {
                    self.send_icmpv6_error(
                        now,
                        repr,
                        packet.packet(),
                        Icmpv6Repr::ParamProblem {
                            code,
                            pointer,
                            data: packet.packet(),
                        },
                    );
                }
                return None;
            }
        };
        // Counted in whole packets only: a first fragment's are counted once reassembled.
        if upper.fragment.is_none() {
            self.stats.ipv6_rx_atomic_fragments += upper.atomic_fragments as u64;
        }
        Some(upper)
    }

    /// A whole packet from the guest (never a fragment), its headers walked: to the gateway, to
    /// route, or to drop.
    fn deliver_ipv6(
        &mut self,
        now: Instant,
        eth: &EthernetRepr,
        cfg: &Ipv6Config,
        repr: &Ipv6Repr,
        packet: &Ipv6Packet<&[u8]>,
        upper: &wire_ipv6::UpperLayer,
    ) {
        let dest = self.classify(cfg, repr.dst);
        let body = &packet.payload()[upper.offset..];
        match dest {
            Destination::OnLink => {
                self.stats.drop_ipv6_foreign_destination += 1;
                return;
            }
            Destination::OtherGroup if upper.protocol != IpProtocol::Icmpv6 => {
                self.stats.drop_ipv6_foreign_destination += 1;
                return;
            }
            Destination::Routed => {
                self.ipv6_routed(now, repr, upper.protocol, body, packet.packet());
                return;
            }
            _ => {}
        }
        match upper.protocol {
            IpProtocol::Icmpv6 => self.process_icmpv6(now, cfg, eth, repr, dest, body),
            IpProtocol::Udp => self.process_udp6(now, cfg, repr, dest, body, packet.packet()),
            IpProtocol::Tcp if dest == Destination::Gateway => {
                self.process_tcp(now, repr.src.into(), repr.dst.into(), body)
            }
            IpProtocol::Tcp => self.stats.drop_ipv6_foreign_destination += 1,
            _ => {
                self.stats.drop_ipv6_unknown_next_header += 1;
                if dest == Destination::Gateway {
                    // RFC 8200 §4: code 1, pointing at the field that named it.
                    self.send_icmpv6_error(
                        now,
                        repr,
                        packet.packet(),
                        Icmpv6Repr::ParamProblem {
                            code: wire_ipv6::param_problem::UNKNOWN_NEXT_HEADER,
                            pointer: upper.next_header_at,
                            data: packet.packet(),
                        },
                    );
                }
            }
        }
    }

    /// A packet for beyond the gateway: TCP and UDP go through host sockets; other protocols have
    /// no route (ICMPv6 echo through the host is not done yet).
    fn ipv6_routed(
        &mut self,
        now: Instant,
        repr: &Ipv6Repr,
        protocol: IpProtocol,
        body: &[u8],
        packet: &[u8],
    ) {
        if repr.hop_limit <= 1 {
            // RFC 4443 §3.3: a router that would forward a packet whose hop limit runs out.
            self.stats.drop_ipv6_hop_limit += 1;
            self.send_icmpv6_error(
                now,
                repr,
                packet,
                Icmpv6Repr::TimeExceeded {
                    code: 0,
                    data: packet,
                },
            );
            return;
        }
        match protocol {
            IpProtocol::Tcp => {
                self.process_tcp(now, repr.src.into(), repr.dst.into(), body);
                return;
            }
            IpProtocol::Udp => {
                if let Ok(udp) = UdpPacket::new_checked(body) {
                    if self.inbound.checksum.is_some() || udp_checksum_ok(repr, body) {
                        self.stats.udp_rx_datagrams += 1;
                        self.udp_to_host(now, repr.src.into(), repr.dst.into(), &udp, packet);
                    } else {
                        self.stats.drop_udp_checksum += 1;
                    }
                } else {
                    self.stats.drop_udp_malformed += 1;
                }
                return;
            }
            IpProtocol::Icmpv6 => {
                let msg = Icmpv6Repr::parse(body, repr.src, repr.dst);
                if let Ok(Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) = msg
                {
                    self.stats.icmpv6_rx_echo_requests += 1;
                    self.echo_to_host(now, repr.src.into(), repr.dst.into(), ident, seq_no, data);
                    return;
                }
            }
            _ => {}
        }
        self.stats.drop_ipv6_not_routed += 1;
        self.send_icmpv6_error(
            now,
            repr,
            packet,
            Icmpv6Repr::DstUnreachable {
                code: unreachable::NO_ROUTE,
                data: packet,
            },
        );
    }
}

impl<H: HostIo> Core<H> {
    fn v6cfg(&self) -> Option<&Ipv6Config> {
        self.cfg.ipv6.as_ref()
    }

    /// The guest's global IPv6 address, as last seen in its traffic.
    pub fn guest_ipv6(&self) -> Option<Ipv6Address> {
        self.link.lock().v6.last_guest_global
    }

    fn classify(&self, cfg: &Ipv6Config, dst: Ipv6Address) -> Destination {
        if cfg.is_gateway_address(dst) {
            return Destination::Gateway;
        }
        if dst.is_multicast() {
            let ours = [
                Ipv6Address::ALL_NODES,
                Ipv6Address::ALL_ROUTERS,
                Ipv6Address::ALL_MLDV2_ROUTERS,
                ALL_DHCP_SERVERS,
                GATEWAY_LINK_LOCAL.solicited_node(),
                cfg.gateway.solicited_node(),
                cfg.dns.solicited_node(),
            ];
            return if ours.contains(&dst) {
                Destination::OurGroup
            } else {
                Destination::OtherGroup
            };
        }
        if dst.is_link_local() || cfg.prefix.contains(dst) {
            return Destination::OnLink;
        }
        Destination::Routed
    }

    /// Whether a packet as it came from the guest (a fragment or a whole packet) is larger than
    /// the next link takes: then Packet Too Big is sent and the packet is dropped. Fragments are
    /// measured one by one, as a router on the path would see them, never the reassembled whole.
    fn ipv6_too_big(
        &mut self,
        now: Instant,
        cfg: &Ipv6Config,
        repr: &Ipv6Repr,
        packet: &Ipv6Packet<&[u8]>,
    ) -> bool {
        let dest = self.classify(cfg, repr.dst);
        // A routed packet whose hop limit runs out gets Time Exceeded first (ipv6_routed), as a
        // router checks the hop limit before the next link's MTU.
        let expiring = dest == Destination::Routed && repr.hop_limit <= 1;
        if matches!(dest, Destination::Gateway | Destination::Routed) && !expiring {
            // The next link: the emulated path's MTU, and beyond the gateway never more than the
            // link's own (RFC 8200 §5, RFC 4443 §3.2).
            let link = (dest == Destination::Routed).then_some(self.cfg.mtu);
            let path = crate::pmtu::lookup(&self.path_mtus, repr.dst.into());
            if let Some(mtu) = [link, path].into_iter().flatten().min() {
                if self.wire_packet_len(packet.packet().len()) > usize::from(mtu) {
                    if path == Some(mtu) {
                        self.stats.drop_ipv6_path_mtu += 1;
                    } else {
                        self.stats.drop_ipv6_too_big += 1;
                    }
                    self.send_icmpv6_error(
                        now,
                        repr,
                        packet.packet(),
                        Icmpv6Repr::PacketTooBig {
                            mtu: u32::from(mtu),
                            data: packet.packet(),
                        },
                    );
                    return true;
                }
            }
        }
        false
    }

    /// Whether the guest may send from `src` (see [`crate::sources`]), from the view.
    fn source_allowed_v6(&mut self, src: Ipv6Address) -> bool {
        self.refresh_view();
        !self.view.source_check
            || src.is_link_local()
            || self.view.sources_v6.contains(&src)
            || self.link.lock().sources.allow_v6(src)
    }

    fn learn_v6(&mut self, now: Instant, ip: Ipv6Address, mac: EthernetAddress) {
        if !mac.is_unicast() {
            return;
        }
        self.refresh_view();
        if LinkView::confirmed(&self.view.neighbors_v6, now, ip, mac) {
            return;
        }
        let parked = self.link.lock().v6.neighbors.fill(now, ip, mac);
        if let Some(frame) = parked {
            self.stats.ipv6_tx_packets += 1;
            self.queue_frame(frame);
        }
    }

    fn process_icmpv6(
        &mut self,
        now: Instant,
        cfg: &Ipv6Config,
        eth: &EthernetRepr,
        ip: &Ipv6Repr,
        dest: Destination,
        body: &[u8],
    ) {
        let msg = match Icmpv6Repr::parse(body, ip.src, ip.dst) {
            Ok(m) => m,
            Err(crate::wire::Error::Checksum) => {
                self.stats.drop_icmpv6_checksum += 1;
                return;
            }
            Err(_) => {
                self.stats.drop_icmpv6_malformed += 1;
                return;
            }
        };
        self.stats.icmpv6_rx_messages += 1;
        let ndp = matches!(
            msg,
            Icmpv6Repr::RouterSolicit { .. }
                | Icmpv6Repr::RouterAdvert { .. }
                | Icmpv6Repr::NeighborSolicit { .. }
                | Icmpv6Repr::NeighborAdvert { .. }
        );
        if ndp && ip.hop_limit != NDP_HOP_LIMIT {
            self.stats.drop_ndp_invalid += 1;
            return;
        }
        if ip.src.is_unspecified()
            && !matches!(
                msg,
                Icmpv6Repr::NeighborSolicit { .. }
                    | Icmpv6Repr::RouterSolicit { .. }
                    | Icmpv6Repr::MldReport { .. }
            )
        {
            self.stats.drop_ipv6_bad_source += 1;
            return;
        }
        // Groups we do not listen to: only MLD reports (sent to the group they report) and the
        // guest's DAD probes (to its own solicited-node group, counted and left alone) matter.
        if dest == Destination::OtherGroup
            && !matches!(
                msg,
                Icmpv6Repr::MldReport { .. } | Icmpv6Repr::NeighborSolicit { .. }
            )
        {
            self.stats.drop_ipv6_foreign_destination += 1;
            return;
        }
        match msg {
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                self.stats.icmpv6_rx_echo_requests += 1;
                // The gateway address is the host's ::1, reached through a host ICMPv6 socket
                // (as 10.0.2.2 is 127.0.0.1); the DNS and link-local addresses and groups are
                // the gateway's own.
                if ip.dst == cfg.gateway
                    && self.echo_to_host(now, ip.src.into(), ip.dst.into(), ident, seq_no, data)
                {
                    return;
                }
                // From the address asked, or for a group, from the address of the same scope.
                let src = if dest == Destination::Gateway {
                    ip.dst
                } else if ip.src.is_link_local() {
                    GATEWAY_LINK_LOCAL
                } else {
                    cfg.gateway
                };
                let reply = Icmpv6Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                if self.send_icmpv6(now, src, ip.src, DEFAULT_HOP_LIMIT, Some(eth.src), &reply) {
                    self.stats.icmpv6_tx_echo_replies += 1;
                }
            }
            Icmpv6Repr::RouterSolicit { options } => {
                self.stats.ndp_rx_router_solicits += 1;
                // RFC 4861 §6.1.1: no source link-layer option from the unspecified address.
                if ip.src.is_unspecified() && options.source_lladdr.is_some() {
                    self.stats.drop_ndp_invalid += 1;
                    return;
                }
                if let Some(mac) = options.source_lladdr.filter(|_| !ip.src.is_unspecified()) {
                    self.learn_v6(now, ip.src, mac);
                }
                // RFC 4861 §6.2.6: answer (to all nodes) no sooner than MIN_DELAY_BETWEEN_RAS
                // after the previous multicast RA.
                let last_ra_at = self.link.lock().v6.last_ra_at;
                let earliest = last_ra_at.map_or(now, |t| (t + MIN_DELAY_BETWEEN_RAS).max(now));
                if earliest <= now {
                    self.send_router_advert(now, cfg);
                } else {
                    let mut link = self.link.lock();
                    let next = link.v6.next_ra_at.map_or(earliest, |n| n.min(earliest));
                    link.v6.next_ra_at = Some(next);
                }
            }
            Icmpv6Repr::NeighborSolicit { target, options } => {
                self.stats.ndp_rx_neighbor_solicits += 1;
                let dad = ip.src.is_unspecified();
                if dad {
                    // RFC 4861 §7.1.1: a DAD probe goes to the solicited-node group, alone.
                    if !ip.dst.is_multicast() || options.source_lladdr.is_some() {
                        self.stats.drop_ndp_invalid += 1;
                        return;
                    }
                    self.stats.ndp_rx_dad_probes += 1;
                    if !cfg.is_gateway_address(target) {
                        self.link.lock().sources.claimed_v6(target);
                    }
                }
                if !cfg.is_gateway_address(target) {
                    // Not ours: in particular the guest's own tentative address, which we never
                    // claim (its DAD must succeed). The first global one it probes is where
                    // forwarded IPv6 connections go until it speaks from one itself.
                    if dad && cfg.prefix.contains(target) {
                        self.link.lock().v6.last_guest_global.get_or_insert(target);
                    }
                    return;
                }
                if let Some(mac) = options.source_lladdr {
                    self.learn_v6(now, ip.src, mac);
                }
                let (dst, flags) = if dad {
                    // RFC 4862 §5.4.3: defend the address, to all nodes, unsolicited.
                    (
                        Ipv6Address::ALL_NODES,
                        na_flags::ROUTER | na_flags::OVERRIDE,
                    )
                } else {
                    (
                        ip.src,
                        na_flags::ROUTER | na_flags::SOLICITED | na_flags::OVERRIDE,
                    )
                };
                let dst_mac = (!dad).then(|| options.source_lladdr.unwrap_or(eth.src));
                self.send_neighbor_advert(now, target, dst, dst_mac, flags);
            }
            Icmpv6Repr::NeighborAdvert {
                target, options, ..
            } => {
                self.stats.ndp_rx_neighbor_adverts += 1;
                if target.is_link_local() || cfg.prefix.contains(target) {
                    if cfg.is_gateway_address(target) {
                        // Someone claims our address: nothing we can do but count it.
                        self.stats.drop_ndp_invalid += 1;
                        return;
                    }
                    let mac = options.target_lladdr.unwrap_or(eth.src);
                    self.learn_v6(now, target, mac);
                }
            }
            Icmpv6Repr::RouterAdvert { .. } => {
                // Another router on the link: we are the only one; counted and ignored.
                self.stats.drop_icmpv6_unsupported += 1;
            }
            Icmpv6Repr::MldReport { groups, .. } => {
                self.stats.mld_rx_reports += 1;
                self.stats.mld_rx_group_records += u64::from(groups);
                let outcome = self.link.lock().querier.mld(now, body[0], &body[4..]);
                self.stats.drop_multicast_table_full += outcome.table_full;
                self.count_multicast_groups();
            }
            Icmpv6Repr::Other { msg_type: 132, .. } if body.len() >= 24 => {
                // MLDv1 Done (RFC 2710 §3.7): ask whether anyone still listens.
                self.stats.mld_rx_dones += 1;
                self.link.lock().querier.mld(now, 132, &body[4..]);
                self.count_multicast_groups();
            }
            Icmpv6Repr::EchoReply { .. } => self.stats.icmpv6_rx_echo_replies += 1,
            m if m.is_error() => {
                self.stats.icmpv6_rx_errors += 1;
                match m {
                    Icmpv6Repr::TimeExceeded { .. } => self.stats.icmpv6_rx_time_exceeded += 1,
                    Icmpv6Repr::ParamProblem { .. } => self.stats.icmpv6_rx_param_problems += 1,
                    Icmpv6Repr::PacketTooBig { .. } => self.stats.icmpv6_rx_packet_too_big += 1,
                    _ => self.stats.icmpv6_rx_dest_unreachable += 1,
                }
            }
            _ => self.stats.drop_icmpv6_unsupported += 1,
        }
    }

    fn process_udp6(
        &mut self,
        now: Instant,
        cfg: &Ipv6Config,
        ip: &Ipv6Repr,
        dest: Destination,
        body: &[u8],
        packet: &[u8],
    ) {
        let Ok(udp) = UdpPacket::new_checked(body) else {
            self.stats.drop_udp_malformed += 1;
            return;
        };
        // A partial checksum (offloaded by the guest) is not checked: the bytes are the guest's own.
        if self.inbound.checksum.is_none() && !udp_checksum_ok(ip, body) {
            self.stats.drop_udp_checksum += 1;
            return;
        }
        if udp.dst_port() == SERVER_PORT
            && udp.src_port() == CLIENT_PORT
            && (ip.dst == ALL_DHCP_SERVERS || dest == Destination::Gateway)
        {
            self.process_dhcpv6(now, cfg, ip, udp.payload());
            return;
        }
        if dest != Destination::Gateway {
            self.stats.drop_ipv6_foreign_destination += 1;
            return;
        }
        // The gateway's addresses: the host's loopback and the DNS upstream, as over IPv4.
        self.stats.udp_rx_datagrams += 1;
        self.udp_to_host(now, ip.src.into(), ip.dst.into(), &udp, packet);
    }

    /// Where a guest connection or datagram to `dst` goes on the host (`None`: nothing serves
    /// it): the gateway's addresses stand for the host's `::1` (unless `--no-map-gw`), the DNS
    /// address on port 53 for the first upstream resolver, addresses beyond the link for
    /// themselves.
    pub(crate) fn ipv6_host_destination(&self, dst: Ipv6Address, port: u16) -> Option<SocketAddr> {
        let cfg = self.cfg.ipv6.as_ref()?;
        if dst == cfg.dns {
            return (port == 53)
                .then(|| self.cfg.dns_upstreams.first().copied())
                .flatten();
        }
        if dst == cfg.gateway || dst == GATEWAY_LINK_LOCAL {
            return self
                .cfg
                .map_gateway_to_loopback
                .then(|| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)));
        }
        if dst.is_link_local() || dst.is_multicast() || cfg.prefix.contains(dst) {
            return None;
        }
        Some(SocketAddr::from((std::net::Ipv6Addr::from(dst), port)))
    }

    fn process_dhcpv6(&mut self, now: Instant, cfg: &Ipv6Config, ip: &Ipv6Repr, payload: &[u8]) {
        if cfg.dhcpv6 == Dhcpv6Mode::Off {
            self.stats.drop_dhcpv6_off += 1;
            return;
        }
        let Ok(m) = Dhcpv6Repr::parse(payload) else {
            self.stats.drop_dhcpv6_malformed += 1;
            return;
        };
        self.stats.dhcpv6_rx_messages += 1;
        // One look at the link's DHCPv6 state: the server's DUID, the binding, the domains.
        let (duid, answer, domains) = {
            let mut link = self.link.lock();
            let duid = link.v6.duid;
            let for_us = m.server_id == Some(&duid[..]);
            let answer = link.v6.dhcp.handle(now, cfg, &m, for_us);
            (duid, answer, link.v6.dnssl.clone())
        };
        let Answer::Reply {
            msg_type,
            ia,
            status,
            rapid_commit,
        } = answer
        else {
            self.stats.drop_dhcpv6_foreign_server += 1;
            return;
        };
        let dns = cfg.dns.0;
        let reply = Dhcpv6Repr {
            msg_type,
            transaction_id: m.transaction_id,
            client_id: m.client_id,
            server_id: Some(&duid),
            ia_na: ia.map(|(iaid, got)| dhcpv6::ia_option(iaid, got)),
            rapid_commit,
            status: status.map(|c| (c, "")),
            dns_servers: dhcpv6::wants(&m, opt::DNS_SERVERS).then_some(&dns[..]),
            domain_list: (!domains.is_empty() && dhcpv6::wants(&m, opt::DOMAIN_LIST))
                .then_some(&domains[..]),
            ..Dhcpv6Repr::default()
        };
        if reply.ia_na.is_some_and(|i| i.addr.is_some())
            && msg_type != crate::wire::dhcpv6::msg::ADVERTISE
        {
            self.stats.dhcpv6_addresses_bound += 1;
        }
        // RFC 8415 §18.3.10: the reply goes to the client's link-local source, port 546.
        let len = udp::HEADER_LEN + reply.buffer_len();
        let repr = Ipv6Repr {
            src: GATEWAY_LINK_LOCAL,
            dst: ip.src,
            next_header: IpProtocol::Udp,
            payload_len: len,
            hop_limit: DEFAULT_HOP_LIMIT,
        };
        let (src, dst) = (repr.src, repr.dst);
        let sent = self.dispatch_ipv6(now, None, &repr, |b| {
            reply.emit(&mut b[udp::HEADER_LEN..]);
            emit_udp6(b, SERVER_PORT, CLIENT_PORT, src, dst);
        });
        if sent {
            self.stats.dhcpv6_tx_replies += 1;
        }
    }

    /// The timers: periodic Router Advertisements and neighbour resolution.
    pub(crate) fn ipv6_poll(&mut self, now: Instant) {
        let Some(cfg) = self.cfg.ipv6.clone() else {
            return;
        };
        if self.link.lock().v6.next_ra_at.is_some_and(|t| t <= now) {
            self.send_router_advert(now, &cfg);
        }
        let mut due = [(Ipv6Address::UNSPECIFIED, None); 8];
        let mut n = 0;
        let result = self.link.lock().v6.neighbors.poll(now, |ip, mac| {
            if n < due.len() {
                due[n] = (ip, mac);
                n += 1;
            }
        });
        self.stats.drop_ndp_unresolved += result.dropped;
        for (ip, mac) in due[..n].iter().copied() {
            self.send_neighbor_solicit(now, &cfg, ip, mac);
        }
    }

    /// The link came up (a guest driver is there): announce the gateway's addresses (unsolicited
    /// Neighbor Advertisements, RFC 4861 §7.2.6) and start the initial Router Advertisements
    /// (§6.2.4).
    pub(crate) fn ipv6_link_up(&mut self, now: Instant) {
        let Some(cfg) = self.cfg.ipv6.clone() else {
            return;
        };
        for target in [GATEWAY_LINK_LOCAL, cfg.gateway, cfg.dns] {
            self.send_neighbor_advert(
                now,
                target,
                Ipv6Address::ALL_NODES,
                None,
                na_flags::ROUTER | na_flags::OVERRIDE,
            );
        }
        {
            let mut link = self.link.lock();
            link.v6.initial_ras = INITIAL_RAS;
            link.v6.last_ra_at = None;
        }
        self.send_router_advert(now, &cfg);
    }

    /// A Router Advertisement to all nodes, and the next one scheduled.
    fn send_router_advert(&mut self, now: Instant, cfg: &Ipv6Config) {
        let secs = |d: Duration| d.total_secs().min(u64::from(u32::MAX)) as u32;
        let mut flags = 0;
        match cfg.dhcpv6 {
            Dhcpv6Mode::Off => {}
            Dhcpv6Mode::Stateless => flags |= ra_flags::OTHER,
            Dhcpv6Mode::Stateful => flags |= ra_flags::MANAGED | ra_flags::OTHER,
        }
        // RFC 8106 §5.1: the RDNSS lifetime at least 3 × MaxRtrAdvInterval.
        let dns_lifetime = 3 * secs(cfg.ra_interval);
        let (rdnss, dnssl) = {
            let mut link = self.link.lock();
            (link.v6.rdnss, core::mem::take(&mut link.v6.dnssl))
        };
        let ra = Icmpv6Repr::RouterAdvert {
            hop_limit: DEFAULT_HOP_LIMIT,
            flags,
            router_lifetime: secs(cfg.router_lifetime).min(9000) as u16,
            reachable_time: 0,
            retrans_time: 0,
            options: NdpOptions {
                source_lladdr: Some(self.cfg.gateway_mac),
                mtu: Some(u32::from(self.cfg.mtu)),
                prefix: Some(PrefixInfo {
                    prefix_len: cfg.prefix.prefix_len(),
                    flags: prefix_flags::ON_LINK | prefix_flags::AUTONOMOUS,
                    valid_lifetime: secs(cfg.valid_lifetime),
                    preferred_lifetime: secs(cfg.preferred_lifetime),
                    prefix: cfg.prefix.network(),
                }),
                rdnss: Some((dns_lifetime, &rdnss)),
                dnssl: (!dnssl.is_empty()).then_some((dns_lifetime, &dnssl[..])),
                ..NdpOptions::default()
            },
        };
        let sent = self.send_icmpv6(
            now,
            GATEWAY_LINK_LOCAL,
            Ipv6Address::ALL_NODES,
            NDP_HOP_LIMIT,
            None,
            &ra,
        );
        let mut link = self.link.lock();
        link.v6.dnssl = dnssl;
        if sent {
            self.stats.ndp_tx_router_adverts += 1;
        }
        link.v6.last_ra_at = Some(now);
        link.v6.ra_count += 1;
        // RFC 4861 §6.2.4: the first few close together, then uniformly between
        // MinRtrAdvInterval (a third of the maximum) and MaxRtrAdvInterval; the spread is a fixed
        // sequence here, so runs repeat.
        let max = cfg.ra_interval.total_micros();
        let mut wait = max / 3 + (link.v6.ra_count.wrapping_mul(0x9e37_79b9) % (max - max / 3 + 1));
        if link.v6.initial_ras > 0 {
            link.v6.initial_ras -= 1;
            wait = wait.min(INITIAL_RA_INTERVAL.total_micros());
        }
        link.v6.next_ra_at = Some(now + Duration::from_micros(wait));
    }

    fn send_neighbor_advert(
        &mut self,
        now: Instant,
        target: Ipv6Address,
        dst: Ipv6Address,
        dst_mac: Option<EthernetAddress>,
        flags: u8,
    ) {
        let na = Icmpv6Repr::NeighborAdvert {
            flags,
            target,
            options: NdpOptions {
                target_lladdr: Some(self.cfg.gateway_mac),
                ..NdpOptions::default()
            },
        };
        // From the target itself (as Linux answers), so the guest learns it directly.
        if self.send_icmpv6(now, target, dst, NDP_HOP_LIMIT, dst_mac, &na) {
            self.stats.ndp_tx_neighbor_adverts += 1;
        }
    }

    /// Resolves `target` (multicast to its solicited-node group) or confirms it (`mac`: unicast).
    fn send_neighbor_solicit(
        &mut self,
        now: Instant,
        cfg: &Ipv6Config,
        target: Ipv6Address,
        mac: Option<EthernetAddress>,
    ) {
        let src = if target.is_link_local() {
            GATEWAY_LINK_LOCAL
        } else {
            cfg.gateway
        };
        let dst = if mac.is_some() {
            target
        } else {
            target.solicited_node()
        };
        let ns = Icmpv6Repr::NeighborSolicit {
            target,
            options: NdpOptions {
                source_lladdr: Some(self.cfg.gateway_mac),
                ..NdpOptions::default()
            },
        };
        let dst_mac = Some(mac.unwrap_or_else(|| dst.multicast_mac()));
        if self.send_icmpv6(now, src, dst, NDP_HOP_LIMIT, dst_mac, &ns) {
            self.stats.ndp_tx_neighbor_solicits += 1;
        }
    }

    /// An ICMPv6 error about `packet` (whose header is `ip`) to its source, unless RFC 4443 §2.4(e)
    /// forbids it or the rate limit (§2.4(f)) is spent.
    pub(crate) fn send_icmpv6_error(
        &mut self,
        now: Instant,
        ip: &Ipv6Repr,
        packet: &[u8],
        error: Icmpv6Repr,
    ) {
        self.send_icmpv6_error_from(now, None, ip, packet, error)
    }

    /// [`Stack::send_icmpv6_error`] from `from` (the host that refused, for a port unreachable)
    /// rather than the gateway's address of the same scope.
    pub(crate) fn send_icmpv6_error_from(
        &mut self,
        now: Instant,
        from: Option<Ipv6Address>,
        ip: &Ipv6Repr,
        packet: &[u8],
        error: Icmpv6Repr,
    ) {
        if ip.src.is_unspecified() || ip.src.is_multicast() {
            return;
        }
        // Never about an ICMPv6 error (§2.4(e.1)).
        if ip.next_header == IpProtocol::Icmpv6 {
            let body = &packet[wire_ipv6::HEADER_LEN..];
            if body.first().is_some_and(|t| *t < 128) {
                return;
            }
        }
        if !self.link.lock().v6.errors.allow(now) {
            self.stats.drop_icmpv6_rate_limited += 1;
            return;
        }
        let Some(cfg) = self.v6cfg() else {
            return;
        };
        let src = if let Some(from) = from {
            from
        } else if ip.src.is_link_local() {
            GATEWAY_LINK_LOCAL
        } else if cfg.is_gateway_address(ip.dst) {
            ip.dst
        } else {
            cfg.gateway
        };
        let quote = &packet[..packet.len().min(MAX_ERROR_QUOTE)];
        let error = match error {
            Icmpv6Repr::DstUnreachable { code, .. } => {
                Icmpv6Repr::DstUnreachable { code, data: quote }
            }
            Icmpv6Repr::PacketTooBig { mtu, .. } => Icmpv6Repr::PacketTooBig { mtu, data: quote },
            Icmpv6Repr::TimeExceeded { code, .. } => Icmpv6Repr::TimeExceeded { code, data: quote },
            Icmpv6Repr::ParamProblem { code, pointer, .. } => Icmpv6Repr::ParamProblem {
                code,
                pointer,
                data: quote,
            },
            other => other,
        };
        if self.send_icmpv6(now, src, ip.src, DEFAULT_HOP_LIMIT, None, &error) {
            self.stats.icmpv6_tx_errors += 1;
        }
    }

    /// An echo reply relayed from a host socket.
    pub(crate) fn send_icmpv6_echo_reply(
        &mut self,
        now: Instant,
        src: Ipv6Address,
        dst: Ipv6Address,
        reply: &Icmpv6Repr,
    ) -> bool {
        self.send_icmpv6(now, src, dst, DEFAULT_HOP_LIMIT, None, reply)
    }

    /// Queues an ICMPv6 message; false if it could not be.
    fn send_icmpv6(
        &mut self,
        now: Instant,
        src: Ipv6Address,
        dst: Ipv6Address,
        hop_limit: u8,
        dst_mac: Option<EthernetAddress>,
        msg: &Icmpv6Repr,
    ) -> bool {
        let repr = Ipv6Repr {
            src,
            dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: msg.buffer_len(),
            hop_limit,
        };
        let sent = self.dispatch_ipv6(now, dst_mac, &repr, |b| msg.emit(b, src, dst));
        if sent {
            self.stats.icmpv6_tx_messages += 1;
        }
        sent
    }

    /// Queues an IPv6 packet; `emit_payload` writes the payload. Multicast goes to its group
    /// MAC; unicast to `dst_mac`, or through the neighbour cache (resolved with NDP).
    pub(crate) fn dispatch_ipv6(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        repr: &Ipv6Repr,
        emit_payload: impl FnOnce(&mut [u8]),
    ) -> bool {
        self.dispatch_ipv6_offload(now, dst_mac, repr, PayloadOffload::NONE, emit_payload)
    }

    /// [`Stack::dispatch_ipv6`] for a payload that leaves work to the NIC, as
    /// [`Stack::dispatch_ipv4_offload`].
    pub(crate) fn dispatch_ipv6_offload<P: IpPayload>(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        repr: &Ipv6Repr,
        offload: PayloadOffload,
        payload: P,
    ) -> bool {
        let ip_len = repr.buffer_len();
        if ip_len > usize::from(self.cfg.mtu) && offload.gso.is_none() {
            // Larger than the link (a host datagram): fragments, which the guest reassembles.
            return self.dispatch_ipv6_fragmented(now, dst_mac, repr, |buf: &mut [u8]| {
                payload.write(buf);
                offload.complete(buf);
            });
        }
        let src_mac = self.cfg.gateway_mac;
        // `head_only`: see `Core::queue_ip_frame`.
        let build = |buf: &mut [u8], dst: EthernetAddress, payload: P, head_only: bool| {
            EthernetRepr {
                src: src_mac,
                dst,
                ethertype: EtherType::Ipv6,
            }
            .emit(buf);
            let ip = &mut buf[ethernet::HEADER_LEN..];
            repr.emit(ip);
            payload.write_as(&mut ip[wire_ipv6::HEADER_LEN..], head_only);
        };
        let frame_len = ethernet::HEADER_LEN + ip_len;
        let mac = self.ipv6_link_destination(now, dst_mac, repr.dst);
        match mac {
            Some(mac) => {
                let meta = offload.frame_meta(ethernet::HEADER_LEN + wire_ipv6::HEADER_LEN);
                let zeroed = !offload.fills_payload;
                if !self.queue_ip_frame(frame_len, meta, zeroed, payload, |b, p, head_only| {
                    build(b, mac, p, head_only)
                }) {
                    return false;
                }
                self.stats.ipv6_tx_packets += 1;
                true
            }
            None if offload.gso.is_some() => {
                // Too large to park: the sender (TCP) sends again once the guest answers.
                self.stats.drop_ndp_unresolved += 1;
                self.solicit_neighbor(now, self.next_hop_v6(repr.dst));
                false
            }
            None => {
                let mut scratch = self.take_scratch();
                scratch.clear();
                scratch.resize(frame_len, 0);
                build(&mut scratch, EthernetAddress([0; 6]), payload, false);
                offload.complete(&mut scratch[ethernet::HEADER_LEN + wire_ipv6::HEADER_LEN..]);
                let hop = self.next_hop_v6(repr.dst);
                let (request, replaced) = self.link.lock().v6.neighbors.park(now, hop, &scratch);
                self.put_scratch(scratch);
                if replaced {
                    self.stats.drop_ndp_unresolved += 1;
                }
                if request {
                    self.solicit_neighbor(now, hop);
                }
                true
            }
        }
    }
}

impl<H: HostIo> Core<H> {
    /// Where an IPv6 packet to `dst` goes on the link: a multicast group's MAC, `dst_mac` when the
    /// caller knows it, or the neighbour cache's entry (`None`: not resolved).
    fn ipv6_link_destination(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        dst: Ipv6Address,
    ) -> Option<EthernetAddress> {
        if dst.is_multicast() {
            Some(dst.multicast_mac())
        } else {
            let hop = self.next_hop_v6(dst);
            dst_mac.or_else(|| {
                self.refresh_view();
                LinkView::neighbor(&self.view.neighbors_v6, now, hop)
                    .or_else(|| self.link.lock().v6.neighbors.lookup(now, hop))
            })
        }
    }

    /// The link neighbour an IPv6 packet to `dst` goes to: the guest itself (its global address)
    /// for a prefix routed via the guest, else `dst`.
    fn next_hop_v6(&self, dst: Ipv6Address) -> Ipv6Address {
        if self.behind_guest(dst.into()) {
            if let Some(guest) = self.link.lock().v6.last_guest_global {
                return guest;
            }
        }
        dst
    }

    /// Starts resolving `dst` with a Neighbor Solicitation (when IPv6 is served).
    fn solicit_neighbor(&mut self, now: Instant, dst: Ipv6Address) {
        if let Some(cfg) = self.cfg.ipv6.clone() {
            self.send_neighbor_solicit(now, &cfg, dst, None);
        }
    }

    /// Queues an IPv6 packet larger than the MTU as fragments (RFC 8200 §4.5: the source
    /// fragments; pieces of a multiple of 8 bytes behind a Fragment header, M on all but the
    /// last, one identification). All pieces are queued or none. The destination must be
    /// resolved already (the guest spoke first); otherwise it is solicited and the packet dropped.
    fn dispatch_ipv6_fragmented(
        &mut self,
        now: Instant,
        dst_mac: Option<EthernetAddress>,
        repr: &Ipv6Repr,
        emit_payload: impl FnOnce(&mut [u8]),
    ) -> bool {
        let mac = self.ipv6_link_destination(now, dst_mac, repr.dst);
        let Some(mac) = mac else {
            self.stats.drop_ndp_unresolved += 1;
            self.solicit_neighbor(now, self.next_hop_v6(repr.dst));
            return false;
        };
        let overhead = wire_ipv6::HEADER_LEN + wire_ipv6::FragmentHeader::LEN;
        let piece = (usize::from(self.cfg.mtu) - overhead) & !7;
        let pieces = repr.payload_len.div_ceil(piece);
        if repr.payload_len > usize::from(u16::MAX) || self.tx_room() < pieces {
            self.stats.drop_ipv6_too_big += 1;
            return false;
        }
        let mut whole = self.take_scratch();
        whole.clear();
        whole.resize(repr.payload_len, 0);
        emit_payload(&mut whole);
        let ident = {
            let mut link = self.link.lock();
            link.v6.frag_ident = link.v6.frag_ident.wrapping_add(1);
            link.v6.frag_ident
        };
        let src_mac = self.cfg.gateway_mac;
        let next = u8::from(repr.next_header);
        for (i, chunk) in whole.chunks(piece).enumerate() {
            let header = Ipv6Repr {
                next_header: IpProtocol::from(wire_ipv6::next_header::FRAGMENT),
                payload_len: wire_ipv6::FragmentHeader::LEN + chunk.len(),
                ..*repr
            };
            let frag = wire_ipv6::FragmentHeader {
                offset: i * piece,
                more: (i + 1) * piece < whole.len(),
                ident,
            };
            let len = ethernet::HEADER_LEN + overhead + chunk.len();
            let queued = self.queue_frame_with(len, |buf| {
                EthernetRepr {
                    src: src_mac,
                    dst: mac,
                    ethertype: EtherType::Ipv6,
                }
                .emit(buf);
                let ip = &mut buf[ethernet::HEADER_LEN..];
                header.emit(ip);
                frag.emit(&mut ip[wire_ipv6::HEADER_LEN..], next);
                ip[overhead..].copy_from_slice(chunk);
            });
            debug_assert!(queued, "room was checked");
            self.stats.ipv6_tx_packets += 1;
            self.stats.ipv6_tx_fragments += 1;
        }
        self.put_scratch(whole);
        true
    }

    /// A reassembly of the guest's fragments timed out with its first fragment in: Time Exceeded
    /// code 1 quoting it (RFC 8200 §4.5).
    pub(crate) fn ipv6_reassembly_timed_out(&mut self, now: Instant, quote: &[u8]) {
        if quote.len() < wire_ipv6::HEADER_LEN {
            return;
        }
        let ip = Ipv6Repr {
            src: Ipv6Address::from_bytes(&quote[8..24]),
            dst: Ipv6Address::from_bytes(&quote[24..40]),
            next_header: IpProtocol::from(quote[6]),
            payload_len: quote.len() - wire_ipv6::HEADER_LEN,
            hop_limit: quote[7],
        };
        self.send_icmpv6_error(
            now,
            &ip,
            quote,
            Icmpv6Repr::TimeExceeded {
                code: 1,
                data: quote,
            },
        );
    }
}

/// UDP over IPv6 must carry a checksum (RFC 8200 §8.1: a zero one is invalid).
fn udp_checksum_ok(ip: &Ipv6Repr, body: &[u8]) -> bool {
    if body.len() < 8 || body[6..8] == [0, 0] {
        return false;
    }
    let sum = wire_ipv6::pseudo_header_sum(ip.src, ip.dst, 17, body.len() as u32);
    crate::wire::checksum::finish(crate::wire::checksum::accumulate(sum, body)) == 0
}

/// Writes a UDP header over `b` (the whole datagram, payload in place) with its IPv6 checksum.
pub(crate) fn emit_udp6(
    b: &mut [u8],
    src_port: u16,
    dst_port: u16,
    src: Ipv6Address,
    dst: Ipv6Address,
) {
    b[0..2].copy_from_slice(&src_port.to_be_bytes());
    b[2..4].copy_from_slice(&dst_port.to_be_bytes());
    let len = b.len() as u16;
    b[4..6].copy_from_slice(&len.to_be_bytes());
    b[6..8].fill(0);
    let sum = wire_ipv6::pseudo_header_sum(src, dst, 17, b.len() as u32);
    let mut c = crate::wire::checksum::finish(crate::wire::checksum::accumulate(sum, b));
    if c == 0 {
        c = 0xffff;
    }
    b[6..8].copy_from_slice(&c.to_be_bytes());
}
