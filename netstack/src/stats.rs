//! The stack's counters: traffic per protocol and one counter per drop reason.
//!
//! Counters are plain `u64`s incremented by the single thread that owns the stack; the device
//! publishes a copy once per batch. [`Stats::for_each`] walks them by name so that every consumer
//! (stats file, logs, tests) sees the same names.

/// Declares a struct of `u64` counters with `for_each` and `get` by name. Exported so that the
/// device's counters share the same shape.
#[macro_export]
macro_rules! counters {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[doc = $doc:literal])* $field:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl $name {
            /// Calls `f` with each counter's name and value, in declaration order.
            pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
                $(f(stringify!($field), self.$field);)*
            }

            /// Adds every counter of `other` to this one (totals over queues).
            pub fn add(&mut self, other: &Self) {
                $(self.$field += other.$field;)*
            }

            /// The value of the counter called `name`.
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $(stringify!($field) => Some(self.$field),)*
                    _ => None,
                }
            }

            /// What the counter called `name` counts: its doc comment, lines joined (the
            /// `# HELP` text of `/metrics`).
            pub fn help(name: &str) -> Option<&'static str> {
                match name {
                    $(stringify!($field) => Some(concat!($($doc),*).trim_ascii()),)*
                    _ => None,
                }
            }
        }
    };
}

crate::counters! {
    /// Counters of the gateway stack. `drop_*` counters each name one reason a frame was discarded.
    pub struct Stats {
        /// Frames handed to the stack by the device.
        eth_rx_frames,
        /// Bytes of those frames.
        eth_rx_bytes,
        /// Frames the stack handed to the device.
        eth_tx_frames,
        /// Bytes of those frames.
        eth_tx_bytes,
        /// Shorter than an Ethernet header.
        drop_eth_truncated,
        /// Source MAC is a group address.
        drop_eth_bad_source,
        /// Unicast to a MAC that is not the gateway's.
        drop_eth_foreign_destination,
        /// EtherType the stack does not speak.
        drop_eth_unknown_ethertype,
        /// IPv6 frames while IPv6 is off, and IPv6 TCP/UDP for the gateway itself (served with the
        /// IPv6 gateway).
        drop_ipv6_unsupported,
        /// ARP requests from the guest.
        arp_rx_requests,
        /// ARP replies from the guest.
        arp_rx_replies,
        /// ARP requests the gateway sent to resolve guest addresses.
        arp_tx_requests,
        /// ARP replies the gateway sent for its own addresses.
        arp_tx_replies,
        /// Gratuitous ARP announcements of the gateway's addresses at link up.
        arp_tx_announcements,
        /// Not Ethernet/IPv4 ARP, or shorter than 28 bytes.
        drop_arp_malformed,
        /// A request for an address the gateway does not own.
        drop_arp_foreign_target,
        /// Packets waiting for an ARP reply that never came.
        drop_arp_unresolved,
        /// IPv4 packets from the guest (before validation).
        ipv4_rx_packets,
        /// IPv4 packets the gateway sent.
        ipv4_tx_packets,
        /// Shorter than the header or the total length says.
        drop_ipv4_truncated,
        /// Bad version, header length or total length.
        drop_ipv4_malformed,
        /// Bad IPv4 header checksum.
        drop_ipv4_checksum,
        /// Invalid fragments: not a multiple of 8, beyond 64 KiB, or more than 64 holes in one
        /// datagram.
        drop_ipv4_fragment,
        /// Fragments from the guest.
        ipv4_rx_fragments,
        /// Datagrams reassembled from the guest's fragments.
        ipv4_reassembled,
        /// Datagrams discarded because a fragment overlapped another.
        drop_ipv4_reasm_overlap,
        /// Datagrams whose fragments did not all arrive within 30 s.
        ipv4_reasm_timeouts,
        /// Source outside the guest network, or one of the gateway's own addresses.
        drop_ipv4_bad_source,
        /// Packets from an address the guest was not given (its DHCP lease, or the first address it
        /// used before any lease): see `sources`; off with `--no-source-check`.
        drop_ipv4_spoofed,
        /// Guest packets with DF larger than an emulated path MTU (`--path-mtu`): answered with
        /// Destination Unreachable code 4 and the path\'s MTU.
        drop_ipv4_path_mtu,
        /// Guest packets without DF larger than an emulated path MTU (the path would fragment them).
        ipv4_path_mtu_fragmented,
        /// Destination beyond the gateway: host-side forwarding is not implemented yet.
        drop_ipv4_not_routed,
        /// A protocol the gateway does not serve, sent to the gateway.
        drop_ipv4_unknown_protocol,
        /// Echo requests to a gateway address.
        icmp_rx_echo_requests,
        /// Echo replies sent.
        icmp_tx_echo_replies,
        /// Shorter than an ICMP header.
        drop_icmp_truncated,
        /// Bad ICMP checksum.
        drop_icmp_checksum,
        /// IGMP membership reports from the guest (v1, v2 and v3).
        igmp_rx_reports,
        /// Group records in those reports (one per v1/v2 report).
        igmp_rx_group_records,
        /// IGMPv2 Leave Group messages from the guest.
        igmp_rx_leaves,
        /// IGMP messages too short, with a bad checksum, or of a type a host does not send.
        drop_igmp_invalid,
        /// IGMP queries sent (general and group-specific; `--no-mcast-querier` stops them).
        igmp_tx_queries,
        /// Groups or sources not tracked because the membership table was full.
        drop_multicast_table_full,
        /// The guest's multicast memberships tracked now, both families (a gauge; the table:
        /// `GET /multicast`).
        multicast_groups,
        /// Echo replies from the guest to a gateway address (answers to probes).
        icmp_rx_echo_replies,
        /// Destination Unreachable from the guest.
        icmp_rx_dest_unreachable,
        /// Time Exceeded from the guest (code 1: its reassembly of a probe timed out).
        icmp_rx_time_exceeded,
        /// Parameter Problem from the guest (a probe's bad header).
        icmp_rx_param_problems,
        /// ICMP types the gateway does not answer (including echo to a broadcast address).
        drop_icmp_unsupported,
        /// UDP datagrams for the gateway (unicast or broadcast).
        udp_rx_datagrams,
        /// UDP length field below 8 or beyond the packet.
        drop_udp_malformed,
        /// Bad UDP checksum.
        drop_udp_checksum,
        /// No service at that port.
        drop_udp_no_service,
        /// TCP to a broadcast address.
        drop_tcp_unsupported,
        /// DHCPDISCOVER received.
        dhcp_rx_discovers,
        /// DHCPREQUEST received.
        dhcp_rx_requests,
        /// DHCPRELEASE received.
        dhcp_rx_releases,
        /// DHCPDECLINE received.
        dhcp_rx_declines,
        /// DHCPINFORM received.
        dhcp_rx_informs,
        /// DHCPOFFER sent.
        dhcp_tx_offers,
        /// DHCPACK sent.
        dhcp_tx_acks,
        /// DHCPNAK sent.
        dhcp_tx_naks,
        /// Not a DHCP client message we can parse.
        drop_dhcp_malformed,
        /// No free address in the pool.
        drop_dhcp_pool_exhausted,
        /// Addressed to another server, relayed, or a type a server does not receive.
        drop_dhcp_ignored,
        /// Outgoing frames dropped because the egress queue was full.
        drop_tx_queue_full,
        /// Frames queued for the guest by the exerciser (`inject`, `probe`): they leave through
        /// the same RX path and are counted there too.
        rx_injected_frames,
        /// Injected or probe frames dropped because their egress queue was full.
        drop_inject_queue_full,
        /// Probes built and sent (`virtgate ctl probe`), each of one or more frames.
        probes_sent,
        /// Queued large segments dropped because a new driver (a reconnect) takes no TSO.
        drop_tx_offload_withdrawn,
        /// Queued TCP segments dropped before the device took them because the guest had
        /// acknowledged their bytes meanwhile (a retransmission overtaken by an ACK) or their
        /// connection was gone: their payload, read from the send buffer at delivery, was no
        /// longer there.
        drop_tcp_stale_segment,
        /// Routed packets whose TTL ran out at the gateway (answered with Time Exceeded).
        drop_ipv4_ttl_exceeded,
        /// ICMP errors (unreachable, time exceeded) sent to the guest.
        icmp_tx_errors,
        /// ICMP errors not sent because of the rate limit (RFC 1812 §4.3.2.8; 10 per second,
        /// Fragmentation Needed exempt).
        drop_icmp_rate_limited,
        /// Echo requests forwarded through a host ICMP socket.
        icmp_tx_host_echo_requests,
        /// Echo replies received on host ICMP sockets.
        icmp_rx_host_echo_replies,
        /// Echo to the gateway answered by the stack because the host allows no ICMP socket.
        icmp_host_unavailable,
        /// Guest datagrams sent out of host sockets.
        udp_tx_host_datagrams,
        /// Guest UDP segmentation requests (USO) sent to the host in one system call
        /// (UDP_SEGMENT), each as the datagrams it stands for.
        udp_tx_host_gso_sends,
        /// Host datagrams delivered to the guest.
        udp_rx_host_datagrams,
        /// A host socket refused a guest datagram (other than a remote's port unreachable).
        drop_udp_host_error,
        /// Host datagrams too large for an IPv4 packet (over 65507 bytes).
        drop_udp_too_big,
        /// Fragments sent to the guest (datagrams larger than the link MTU).
        ipv4_tx_fragments,
        /// Datagrams on an inbound forward while the guest has no known address.
        drop_udp_forward_no_guest,
        /// DNS queries while no upstream resolver is configured.
        drop_dns_no_upstream,
        /// IPv6 packets from the guest.
        ipv6_rx_packets,
        /// IPv6 packets sent to the guest.
        ipv6_tx_packets,
        /// IPv6 packets shorter than their header or payload length.
        drop_ipv6_truncated,
        /// IPv6 packets with a version other than 6.
        drop_ipv6_malformed,
        /// IPv6 packets from a source that is not the guest's (multicast, ours, off-link).
        drop_ipv6_bad_source,
        /// Packets from a global address the guest never claimed with duplicate address
        /// detection: see `sources`; off with `--no-source-check`.
        drop_ipv6_spoofed,
        /// Guest packets larger than an emulated path MTU (`--path-mtu`): answered with Packet
        /// Too Big and the path\'s MTU.
        drop_ipv6_path_mtu,
        /// IPv6 packets for another address on the link or a group we do not listen to.
        drop_ipv6_foreign_destination,
        /// Extension headers that are truncated, say "discard", or earned a Parameter Problem.
        drop_ipv6_ext_header,
        /// Upper-layer protocols the gateway does not serve (Parameter Problem code 1).
        drop_ipv6_unknown_next_header,
        /// Guest IPv6 fragments received.
        ipv6_rx_fragments,
        /// Guest IPv6 packets reassembled from fragments.
        ipv6_reassembled,
        /// Atomic fragments (offset 0, M 0) from the guest, processed in place (RFC 6946).
        ipv6_rx_atomic_fragments,
        /// Fragments inside fragments (a second, non-atomic Fragment header): dropped.
        drop_ipv6_nested_fragment,
        /// IPv6 fragments sent to the guest (host datagrams larger than the MTU).
        ipv6_tx_fragments,
        /// Reassemblies abandoned after 60 s (Time Exceeded code 1 sent if the first fragment came).
        ipv6_reasm_timeouts,
        /// Fragments overlapping earlier ones: the whole datagram is discarded (RFC 5722).
        drop_ipv6_reasm_overlap,
        /// Reassembled datagrams the home shard handed to the shard that owns their flow (with
        /// `--queues` above 1; see docs/architecture.md, "Queue pairs in parallel").
        shard_mail_sent,
        /// Reassembled datagrams dropped because the owning shard's mailbox was full (64).
        drop_shard_mail_full,
        /// Datagrams in reassembly (either family) discarded to make room for newer ones: over
        /// 64 datagrams or 4 MiB held.
        reasm_evicted,
        /// Invalid IPv6 fragments: bad length or offset, a datagram longer than a packet, or
        /// more than 64 holes in one datagram.
        drop_ipv6_fragment,
        /// Packets to route whose hop limit ran out (Time Exceeded sent).
        drop_ipv6_hop_limit,
        /// Packets larger than the link MTU to route (Packet Too Big sent), or too large to
        /// fragment towards the guest.
        drop_ipv6_too_big,
        /// Packets for beyond the gateway while IPv6 is not routed (Destination Unreachable).
        drop_ipv6_not_routed,
        /// ICMPv6 messages from the guest.
        icmpv6_rx_messages,
        /// ICMPv6 messages sent to the guest.
        icmpv6_tx_messages,
        /// ICMPv6 echo requests to the gateway's addresses.
        icmpv6_rx_echo_requests,
        /// ICMPv6 echo replies sent.
        icmpv6_tx_echo_replies,
        /// ICMPv6 errors from the guest.
        icmpv6_rx_errors,
        /// Of those: Destination Unreachable.
        icmpv6_rx_dest_unreachable,
        /// Of those: Packet Too Big.
        icmpv6_rx_packet_too_big,
        /// Of those: Time Exceeded (code 1: its reassembly of a probe timed out).
        icmpv6_rx_time_exceeded,
        /// Of those: Parameter Problem (a probe's bad header or option).
        icmpv6_rx_param_problems,
        /// Echo replies from the guest to a gateway address (answers to probes).
        icmpv6_rx_echo_replies,
        /// ICMPv6 errors sent (unreachable, packet too big, time exceeded, parameter problem).
        icmpv6_tx_errors,
        /// ICMPv6 errors not sent because of the rate limit (RFC 4443 §2.4(f)).
        drop_icmpv6_rate_limited,
        /// ICMPv6 messages with a bad checksum (RFC 4443 §2.3).
        drop_icmpv6_checksum,
        /// ICMPv6 messages too short or with invalid options.
        drop_icmpv6_malformed,
        /// ICMPv6 messages the gateway has no use for (router advertisements from the guest...).
        drop_icmpv6_unsupported,
        /// Router Solicitations from the guest.
        ndp_rx_router_solicits,
        /// Router Advertisements sent.
        ndp_tx_router_adverts,
        /// Neighbor Solicitations from the guest (DAD probes included).
        ndp_rx_neighbor_solicits,
        /// Duplicate Address Detection probes from the guest.
        ndp_rx_dad_probes,
        /// Neighbor Advertisements sent (answers, DAD defence, link-up announcements).
        ndp_tx_neighbor_adverts,
        /// Neighbor Advertisements from the guest.
        ndp_rx_neighbor_adverts,
        /// Neighbor Solicitations sent to resolve or confirm a guest address.
        ndp_tx_neighbor_solicits,
        /// NDP messages with a hop limit other than 255 or invalid for their source.
        drop_ndp_invalid,
        /// Packets dropped because the guest's address did not resolve.
        drop_ndp_unresolved,
        /// MLD reports (v1 and v2) from the guest.
        mld_rx_reports,
        /// Group records in those reports.
        mld_rx_group_records,
        /// MLDv1 Done messages from the guest.
        mld_rx_dones,
        /// MLD queries sent (general and address-specific; `--no-mcast-querier` stops them).
        mld_tx_queries,
        /// DHCPv6 messages from the guest.
        dhcpv6_rx_messages,
        /// DHCPv6 Advertise and Reply messages sent.
        dhcpv6_tx_replies,
        /// Addresses bound (or renewed) by DHCPv6.
        dhcpv6_addresses_bound,
        /// DHCPv6 messages while DHCPv6 is off.
        drop_dhcpv6_off,
        /// DHCPv6 messages too short or with a truncated option.
        drop_dhcpv6_malformed,
        /// DHCPv6 messages for another server or that this mode does not answer.
        drop_dhcpv6_foreign_server,
        /// Flows currently in the table (a gauge).
        flows_active,
        /// Flows created.
        flows_opened,
        /// Flows closed by their idle timeout.
        flows_closed,
        /// Flows the host refused to open a socket for.
        flows_refused,
        /// Flows evicted to make room (the table was full).
        flows_evicted,
        /// TCP segments from the guest.
        tcp_rx_segments,
        /// TCP segments to the guest.
        tcp_tx_segments,
        /// Guest segments larger than their MSS (the guest's TSO), taken whole.
        tcp_rx_large_segments,
        /// Segments to the guest carrying several MSS of data (the guest accepts TSO).
        tcp_tx_large_segments,
        /// UDP segmentation requests (the guest's USO), split into datagrams towards the host.
        udp_rx_segmented,
        /// UDP segmentation requests for more than 128 datagrams (Linux's limit), dropped.
        drop_udp_gso_invalid,
        /// TCP connections in the table (a gauge).
        tcp_connections,
        /// Guest connections refused (host port closed or unreachable, nothing serves the address).
        tcp_refused,
        /// RSTs sent to the guest.
        tcp_resets_sent,
        /// Connections that never completed their handshake, evicted for a new SYN while the
        /// table was full (a SYN flood); established ones never are.
        tcp_embryonic_evicted,
        /// Times a connection found its egress queue full and waited for it to drain (its
        /// segments are sent later, not lost).
        tcp_queue_waits,
        /// Bytes of TCP data buffered across connections, both ways (a gauge; at most about
        /// `--tcp-memory`).
        tcp_buffered_bytes,
        /// Times a connection stopped reading its host socket because `--tcp-memory` was spent.
        tcp_memory_waits,
        /// Host connections reset by their peer (the guest's connection is reset too).
        tcp_host_resets,
        /// Retransmission timeouts (RFC 6298): the window collapses to one segment.
        tcp_retransmits,
        /// Loss recoveries started by three duplicate ACKs or by SACK (RFC 6675, RFC 6582).
        tcp_fast_retransmits,
        /// Segments sent to the guest again, for any reason.
        tcp_retransmitted_segments,
        /// SACK blocks received from the guest (RFC 2018).
        tcp_sack_blocks_received,
        /// Guest segments held out of order until the gap before them filled.
        tcp_out_of_order_queued,
        /// Guest segments, or parts, that we already had (retransmissions).
        tcp_duplicate_segments,
        /// ACKs sent when the delayed-ACK timer fired.
        tcp_delayed_acks,
        /// Window updates sent because the host drained our buffer.
        tcp_window_updates,
        /// Keepalive probes sent to an idle guest connection.
        tcp_keepalive_probes,
        /// Connections reset because the guest stopped answering keepalive probes.
        tcp_keepalive_timeouts,
        /// Zero-window probes sent (the guest's window stayed closed).
        tcp_window_probes,
        /// Guest bytes written to host sockets.
        tcp_tx_host_bytes,
        /// Guest data copied into a connection's own buffer on its way to the host: what the
        /// host socket did not take at the end of its batch, or what did not come from the
        /// ingress buffer (a reassembled datagram, an impaired frame); the rest is written from
        /// where the device read it.
        tcp_tx_host_buffered_bytes,
        /// Host bytes read for the guest.
        tcp_rx_host_bytes,
        /// Urgent bytes from the guest sent to the host with MSG_OOB.
        tcp_urgent_from_guest,
        /// Urgent bytes from the host marked URG towards the guest.
        tcp_urgent_from_host,
        /// Connections opened to the guest through inbound forwards.
        tcp_forwarded,
        /// Forwarded connections while the guest has no known address (reset).
        tcp_forward_no_guest,
        /// Segments too short, with a bad header length or bad options.
        drop_tcp_malformed,
        /// Segments with a bad checksum (not checked when the guest offloaded it: its own bytes).
        drop_tcp_checksum,
        /// Segments for no connection (answered with RST).
        drop_tcp_no_connection,
        /// Out-of-order data with no room left to hold it (too many gaps; the guest resends it).
        drop_tcp_out_of_order,
        /// Segments with an old timestamp (PAWS, RFC 7323 §5), answered with an ACK.
        drop_tcp_paws,
        /// Data beyond the window we advertised.
        drop_tcp_window_full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_each_and_get_agree() {
        let s = Stats {
            eth_rx_frames: 3,
            flows_evicted: 9,
            ..Stats::default()
        };
        let mut seen = Vec::new();
        s.for_each(|name, v| seen.push((name, v)));
        assert_eq!(seen.first(), Some(&("eth_rx_frames", 3)));
        assert!(seen.contains(&("flows_evicted", 9)));
        assert_eq!(seen.iter().filter(|(_, v)| *v != 0).count(), 2);
        for (name, v) in seen {
            assert_eq!(s.get(name), Some(v));
        }
        assert_eq!(s.get("no_such_counter"), None);
    }

    #[test]
    fn every_counter_has_its_doc_comment_as_help() {
        assert_eq!(
            Stats::help("eth_rx_frames"),
            Some("Frames handed to the stack by the device.")
        );
        // A comment over two lines is one line of help, a space where the line broke.
        assert_eq!(
            Stats::help("drop_ipv6_unsupported"),
            Some("IPv6 frames while IPv6 is off, and IPv6 TCP/UDP for the gateway itself (served with the IPv6 gateway).")
        );
        Stats::default().for_each(|name, _| {
            let help = Stats::help(name).unwrap();
            assert!(!help.is_empty() && !help.contains('\n'), "{name}: {help:?}");
        });
        assert_eq!(Stats::help("no_such_counter"), None);
    }
}
