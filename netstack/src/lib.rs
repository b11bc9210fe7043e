//! netstack: virtgate's gateway TCP/IP stack. Ethernet frames in, Ethernet frames out, time passed in.
//!
//! The stack is the guest's peer on the link: its gateway for IPv4 and IPv6 (ARP and NDP, router
//! advertisements, DHCPv4 and DHCPv6, ICMP and ICMPv6, MLD and IGMP), and the far end of its TCP,
//! UDP and ICMP echo traffic, which it relays through host sockets. It performs no I/O and reads
//! no clock: the device hands it frames with [`Stack::process_frame`], pulls frames with
//! [`Stack::dispatch`], tells it of host socket readiness, and asks [`Stack::poll_at`] when to call
//! [`Stack::poll`] again.
//!
//! Module map:
//! - [`wire`]: packet views and values (Ethernet, ARP, IPv4, IPv6 and its extension headers,
//!   ICMPv4, ICMPv6 with NDP and MLD, UDP, TCP, DHCPv4, DHCPv6), checksums, and `craft` for the
//!   exerciser's hand-made frames.
//! - [`stack`]: the interface: [`Stack`] (the TCP table beside `Core`, the state every layer
//!   shares), Ethernet demultiplexing, the bounded egress queue per queue pair, timers; a stack
//!   in shards (`Stack::sharded`, one per queue pair) and `ShardMap`, which names a guest
//!   frame's shard.
//! - `link`: the link's state the shards share (neighbours, DHCP, IPv6, multicast, sources)
//!   behind a mutex, each shard's lock-free `LinkView` of it, and the shards' mailboxes.
//! - `steering`: the symmetric flow hash that picks a frame's queue pair and shard (re-exported
//!   by [`stack`]).
//! - `ipv4`: the IPv4 layer: header and source checks, reassembly, ARP, ICMP, IGMP, DHCPv4
//!   demultiplexing, egress in one frame or in fragments.
//! - `ipv6`: the IPv6 layer: the extension-header walk, Neighbor Discovery, router advertisements,
//!   ICMPv6, MLD reports.
//! - [`arp`]: the neighbour cache and ARP resolution of guest addresses.
//! - [`dhcpv4`], [`dhcpv6`]: the DHCP servers and their lease tables.
//! - [`host`]: the [`HostIo`] trait, the only way to host sockets; `ScriptedHost` for tests.
//! - `deadlines`: the min-heap of deadlines behind the TCP timers and the flows' expiry.
//! - [`flows`]: the flow table mapping guest UDP and ICMP conversations to host sockets.
//! - `udp`, `icmp`: UDP and ICMP through the gateway (guest to host and back, forwards, errors).
//! - [`tcp`]: guest TCP connections terminated here and spliced to host sockets: `conn` (one
//!   connection's state), `input`, `output`, `timer` (with the heap of deadlines), `host` (the
//!   socket side), over `sendbuf`, `ooo`, `scoreboard`, `congestion`.
//! - [`multicast`]: the IGMP/MLD querier and the guest's group memberships.
//! - [`offload`]: checksum and segmentation offloads: per-frame metadata both ways.
//! - [`pmtu`]: path-MTU emulation per destination prefix.
//! - [`probe`]: the exerciser's crafted frames towards the guest (built with `wire::craft`).
//! - [`reassembly`]: reassembly of the guest's IPv4 and IPv6 fragments, bounded.
//! - `ratelimit`: the rate limit of the ICMP errors sent to the guest.
//! - [`sources`]: the source addresses the guest may use (anti-spoofing).
//! - [`config`]: the addresses and limits the stack serves, validated.
//! - [`stats`]: counters, with one counter per drop reason.
//! - [`time`]: `Instant` and `Duration`, supplied by the caller.
//! - [`testing`]: protocol samples and the emitted-frame check shared by the property tests and
//!   the fuzz targets (not part of the API).

pub mod arp;
pub mod config;
mod deadlines;
pub mod dhcpv4;
pub mod dhcpv6;
pub mod flows;
pub mod host;
mod icmp;
mod ipv4;
mod ipv6;
mod link;
pub mod multicast;
pub mod offload;
pub mod pmtu;
pub mod probe;
mod ratelimit;
pub mod reassembly;
pub mod sources;
pub mod stack;
pub mod stats;
mod steering;
pub mod tcp;
#[doc(hidden)]
pub mod testing;
pub mod time;
mod udp;
pub mod wire;

pub use config::{
    Config, ConfigError, Dhcpv6Mode, Forward, ForwardProtocol, Ipv6Config, Keepalive, TcpOptions,
    GATEWAY_LINK_LOCAL,
};
pub use host::{HostIo, NoHost, SocketId};
pub use stack::Stack;
pub use stats::Stats;
pub use time::{Duration, Instant};
