//! What the gateway serves: its addresses, the DHCP pool and the link MTU, checked for consistency.

use std::net::SocketAddr;

use crate::time::Duration;
use crate::wire::{EthernetAddress, IpAddress, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

/// The largest MTU virtio-net can carry: a 64 KiB IP packet less headers (the same bound QEMU and
/// Linux use for virtio-net, 65535 - 14 - 1, rounded to 65520).
pub const MAX_MTU: u16 = 65520;
/// RFC 791: every IPv4 host must accept 68-byte packets.
pub const MIN_MTU: u16 = 68;
/// The default budget of buffered TCP data (`--tcp-memory`): 64 MiB, the full buffers of 128
/// busy connections (each may hold 256 KiB each way).
pub const DEFAULT_TCP_MEMORY: usize = 64 << 20;
/// The smallest budget: a connection's 256 KiB window from the guest and as much towards it.
pub const MIN_TCP_MEMORY: usize = 512 << 10;

/// The gateway's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The MAC the gateway answers ARP with and sends from.
    pub gateway_mac: EthernetAddress,
    /// The guest network (`10.0.2.0/24` by default, as in slirp).
    pub ipv4_net: Ipv4Cidr,
    /// The gateway's address (router option, echo target).
    pub gateway_ipv4: Ipv4Address,
    /// The DNS address handed to the guest (answered by the gateway).
    pub dns_ipv4: Ipv4Address,
    /// First address of the DHCP pool.
    pub dhcp_start: Ipv4Address,
    /// Number of addresses in the DHCP pool.
    pub dhcp_pool_size: u32,
    /// Whether the DHCPv4 server answers.
    pub dhcp_enabled: bool,
    /// Lease time handed out (RFC 2132 option 51).
    pub lease_time: Duration,
    /// Link MTU (RFC 2132 option 26), also the largest frame payload the stack emits.
    pub mtu: u16,
    /// Domain name (RFC 2132 option 15), if any.
    pub domain_name: Option<String>,
    /// Traffic to the gateway address goes to the host's loopback (127.0.0.1), as in slirp.
    pub map_gateway_to_loopback: bool,
    /// Resolvers that DNS queries to `dns_ipv4` are forwarded to (the first one is used).
    pub dns_upstreams: Vec<SocketAddr>,
    /// Inbound forwards: connections or datagrams to `host` go to the guest's `guest_port`.
    pub forwards: Vec<Forward>,
    /// TCP keepalive (RFC 9293 §3.8.4) towards the guest and on the host sockets; `None`: off.
    pub tcp_keepalive: Option<Keepalive>,
    /// The TCP options negotiated with the guest (changed at run time with
    /// `Stack::set_tcp_options`; a connection keeps what it negotiated).
    pub tcp_options: TcpOptions,
    /// Bytes of TCP data buffered at once across all connections (both directions and held
    /// out-of-order data); past it host sockets are not read and windows offered to the guest do
    /// not grow (see [`crate::tcp`]).
    pub tcp_memory: usize,
    /// IPv6 on the link; `None`: IPv6 frames are dropped and counted.
    pub ipv6: Option<Ipv6Config>,
    /// Announce the gateway at link up (gratuitous ARP, unsolicited NA, a Router Advertisement).
    pub link_announce: bool,
    /// Drop guest packets from source addresses it was not given (see [`crate::sources`]).
    pub source_check: bool,
    /// Emulated narrower paths behind the gateway (see [`crate::pmtu`]).
    pub path_mtus: Vec<crate::pmtu::PathMtu>,
    /// Prefixes behind the guest (the guest routes them): their sources are accepted from the
    /// guest, and packets for them go to the guest's MAC as their next hop.
    pub routes_via_guest: Vec<crate::wire::IpPrefix>,
    /// Query the link for multicast memberships, IGMPv3 and MLDv2 (see [`crate::multicast`]).
    pub mcast_querier: bool,
    /// The querier's Query Interval, 2 s to an hour.
    pub mcast_query_interval: Duration,
}

/// The most prefixes routed via the guest (`--route-via-guest`).
pub const MAX_ROUTES_VIA_GUEST: usize = 16;

/// The gateway's link-local address (RFC 4861 §6.1.2: routers advertise from one), mirroring
/// host 2 of the IPv4 network.
pub const GATEWAY_LINK_LOCAL: Ipv6Address = Ipv6Address::new([0xfe80, 0, 0, 0, 0, 0, 0, 2]);

/// What DHCPv6 serves (RFC 8415), announced by the RA's M and O flags (RFC 4861 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcpv6Mode {
    /// No DHCPv6 server; addresses by SLAAC, DNS by RDNSS.
    Off,
    /// Information-Request answered (DNS servers, search list); the O flag is set.
    Stateless,
    /// Addresses assigned from the pool as well; the M and O flags are set.
    Stateful,
}

/// IPv6 on the link: router advertisements for SLAAC, DHCPv6, and the gateway's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Config {
    /// The on-link prefix announced for SLAAC; a /64 (RFC 4862 §5.5.3 with 64-bit interface IDs).
    pub prefix: Ipv6Cidr,
    /// The gateway's address in the prefix (host 2, as 10.0.2.2).
    pub gateway: Ipv6Address,
    /// The DNS address announced by RDNSS and DHCPv6 (host 3, as 10.0.2.3).
    pub dns: Ipv6Address,
    /// Prefix lifetimes in the Prefix Information option (RFC 4861 §4.6.2).
    pub valid_lifetime: Duration,
    pub preferred_lifetime: Duration,
    /// How long the guest keeps the gateway as its default router (RFC 4861 §4.2).
    pub router_lifetime: Duration,
    /// The longest time between unsolicited router advertisements (MaxRtrAdvInterval, §6.2.1).
    pub ra_interval: Duration,
    pub dhcpv6: Dhcpv6Mode,
    /// First address of the stateful DHCPv6 pool and its size.
    pub dhcpv6_start: Ipv6Address,
    pub dhcpv6_pool_size: u32,
}

impl Default for Ipv6Config {
    /// `fd00::/64` with the gateway at `fd00::2` and DNS at `fd00::3`; prefix lifetimes of a day
    /// (valid) and four hours (preferred); RAs at most 10 minutes apart (RFC 4861's default
    /// MaxRtrAdvInterval); stateless DHCPv6; a stateful pool of 256 from `fd00::100`.
    fn default() -> Self {
        let prefix = Ipv6Cidr::new(Ipv6Address::new([0xfd00, 0, 0, 0, 0, 0, 0, 0]), 64)
            .expect("valid prefix");
        Ipv6Config {
            prefix,
            gateway: prefix.host(2),
            dns: prefix.host(3),
            valid_lifetime: Duration::from_secs(86400),
            preferred_lifetime: Duration::from_secs(14400),
            router_lifetime: Duration::from_secs(1800),
            ra_interval: Duration::from_secs(600),
            dhcpv6: Dhcpv6Mode::Stateless,
            dhcpv6_start: prefix.host(0x100),
            dhcpv6_pool_size: 256,
        }
    }
}

impl Ipv6Config {
    fn validate(&self, mtu: u16) -> Result<(), ConfigError> {
        let prefix = self.prefix;
        if prefix.prefix_len() != 64 {
            return Err(ConfigError::Ipv6PrefixLength(prefix));
        }
        let in_prefix = |a: Ipv6Address| prefix.contains(a) && a != prefix.network();
        for (what, addr) in [("gateway", self.gateway), ("DNS", self.dns)] {
            if !in_prefix(addr) {
                return Err(ConfigError::Ipv6NotInPrefix { what, addr, prefix });
            }
        }
        if self.gateway == self.dns {
            return Err(ConfigError::Ipv6SameAddress(self.gateway));
        }
        if usize::from(mtu) < crate::wire::ipv6::MIN_MTU {
            return Err(ConfigError::Ipv6Mtu(mtu));
        }
        let (preferred, valid) = (
            self.preferred_lifetime.total_secs(),
            self.valid_lifetime.total_secs(),
        );
        if preferred > valid || valid > u64::from(u32::MAX - 1) {
            return Err(ConfigError::Ipv6Lifetimes { preferred, valid });
        }
        let interval = self.ra_interval.total_secs();
        if self.router_lifetime.total_secs() > 9000 || !(4..=1800).contains(&interval) {
            return Err(ConfigError::Ipv6RouterTimes);
        }
        let start = u128::from_be_bytes(self.dhcpv6_start.0);
        let size = self.dhcpv6_pool_size;
        let last = start.checked_add(u128::from(size.saturating_sub(1)));
        let pool_ok = size > 0
            && in_prefix(self.dhcpv6_start)
            && last.is_some_and(|l| in_prefix(Ipv6Address(l.to_be_bytes())))
            && [self.gateway, self.dns].iter().all(|a| {
                let a = u128::from_be_bytes(a.0);
                a < start || last.is_some_and(|l| a > l)
            });
        if !pool_ok {
            return Err(ConfigError::Dhcpv6Pool {
                start: self.dhcpv6_start,
                size,
            });
        }
        Ok(())
    }

    /// Whether `addr` is one of the gateway's own IPv6 addresses.
    pub fn is_gateway_address(&self, addr: Ipv6Address) -> bool {
        addr == GATEWAY_LINK_LOCAL || addr == self.gateway || addr == self.dns
    }
}

/// The TCP options (beyond MSS) the gateway negotiates with the guest: its SYN-ACK carries one
/// only when the guest's SYN offered it and it is allowed here, and a SYN for a port forward
/// offers only these. All on by default, as Linux; turning one off drives the guest's TCP without
/// it (RTT estimation without timestamps, loss recovery without SACK, a 64 KiB window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// RFC 7323 timestamps (RTT samples, PAWS).
    pub timestamps: bool,
    /// RFC 2018 selective acknowledgements.
    pub sack: bool,
    /// RFC 7323 window scaling.
    pub window_scale: bool,
}

impl TcpOptions {
    pub const ALL: TcpOptions = TcpOptions {
        timestamps: true,
        sack: true,
        window_scale: true,
    };
    pub const NONE: TcpOptions = TcpOptions {
        timestamps: false,
        sack: false,
        window_scale: false,
    };

    /// `all`, `none`, or a comma-separated list of `ts`, `sack`, `wscale`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => return Ok(TcpOptions::ALL),
            "none" | "" => return Ok(TcpOptions::NONE),
            _ => {}
        }
        let mut o = TcpOptions::NONE;
        for name in s.split(',').map(str::trim) {
            match name {
                "ts" => o.timestamps = true,
                "sack" => o.sack = true,
                "wscale" => o.window_scale = true,
                other => {
                    return Err(format!(
                        "unknown TCP option {other:?} (expected ts, sack, wscale, all or none)"
                    ))
                }
            }
        }
        Ok(o)
    }
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions::ALL
    }
}

impl std::fmt::Display for TcpOptions {
    /// The form [`TcpOptions::parse`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            (self.timestamps, "ts"),
            (self.sack, "sack"),
            (self.window_scale, "wscale"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// TCP keepalive: after `idle` without a word from the peer, up to `probes` probes `interval`
/// apart; no answer to any of them resets the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
}

impl Default for Keepalive {
    /// Linux's defaults (`net.ipv4.tcp_keepalive_time`, `_intvl`, `_probes`): 2 h, 75 s, 9.
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(7200),
            interval: Duration::from_secs(75),
            probes: 9,
        }
    }
}

/// The protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardProtocol {
    Tcp,
    Udp,
}

impl core::fmt::Display for ForwardProtocol {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(match self {
            ForwardProtocol::Tcp => "tcp",
            ForwardProtocol::Udp => "udp",
        })
    }
}

/// An inbound port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub protocol: ForwardProtocol,
    pub host: SocketAddr,
    pub guest_port: u16,
}

impl Default for Config {
    /// slirp's addressing: network 10.0.2.0/24, gateway .2, DNS .3, guests from .15 (16 addresses).
    fn default() -> Self {
        Config {
            gateway_mac: EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]),
            ipv4_net: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 0), 24).expect("valid prefix"),
            gateway_ipv4: Ipv4Address::new(10, 0, 2, 2),
            dns_ipv4: Ipv4Address::new(10, 0, 2, 3),
            dhcp_start: Ipv4Address::new(10, 0, 2, 15),
            dhcp_pool_size: 16,
            dhcp_enabled: true,
            lease_time: Duration::from_secs(86400),
            mtu: 1500,
            domain_name: None,
            map_gateway_to_loopback: true,
            dns_upstreams: Vec::new(),
            forwards: Vec::new(),
            // On by default, unlike an endpoint (RFC 1122 §4.2.3.6): a gateway must reclaim the
            // connections of a guest that went away without a word (killed, rebooted).
            tcp_keepalive: Some(Keepalive::default()),
            tcp_options: TcpOptions::ALL,
            tcp_memory: DEFAULT_TCP_MEMORY,
            ipv6: Some(Ipv6Config::default()),
            link_announce: true,
            source_check: true,
            path_mtus: Vec::new(),
            routes_via_guest: Vec::new(),
            mcast_querier: true,
            mcast_query_interval: crate::multicast::DEFAULT_QUERY_INTERVAL,
        }
    }
}

/// Why a configuration is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} stack shards: 1 to {max}", max = crate::steering::MAX_QUEUES)]
    Shards(usize),
    #[error("TCP memory {0} bytes: at least {MIN_TCP_MEMORY} (a connection's window both ways)")]
    TcpMemory(usize),
    #[error("path MTUs: {0}")]
    PathMtu(String),
    #[error("routes via the guest: {0}")]
    RouteViaGuest(String),
    #[error("multicast query interval {0} s: must be 2 to 3600 s")]
    QueryInterval(u64),
    #[error("gateway MAC {0} must be a unicast address")]
    GatewayMac(EthernetAddress),
    #[error("network {0} must leave room for a gateway and a guest (prefix length 30 or less)")]
    NetworkTooSmall(Ipv4Cidr),
    #[error("{what} {addr} is not a host address of {net}")]
    NotInNetwork {
        what: &'static str,
        addr: Ipv4Address,
        net: Ipv4Cidr,
    },
    #[error("the gateway and DNS addresses must differ ({0})")]
    SameAddress(Ipv4Address),
    #[error("DHCP pool of {size} addresses from {start} leaves {net}")]
    PoolOutsideNetwork {
        start: Ipv4Address,
        size: u32,
        net: Ipv4Cidr,
    },
    #[error("DHCP pool {start} (+{size}) contains the gateway or DNS address")]
    PoolOverlapsGateway { start: Ipv4Address, size: u32 },
    #[error("MTU {0} is outside {MIN_MTU}..={MAX_MTU}")]
    Mtu(u16),
    #[error("lease time must be at least 60 s and at most 2^32-2 s, got {0} s")]
    LeaseTime(u64),
    #[error("domain name must be 1..=255 bytes")]
    DomainName,
    #[error("forward {0}: guest port 0 is not a port")]
    ForwardGuestPort(SocketAddr),
    #[error("two {0} forwards listen on {1}")]
    DuplicateForward(ForwardProtocol, SocketAddr),
    #[error("IPv6 prefix {0} must be a /64 (SLAAC forms addresses from 64-bit interface IDs)")]
    Ipv6PrefixLength(Ipv6Cidr),
    #[error(
        "IPv6 {what} {addr} is not in the prefix {prefix}, or is its subnet-router anycast address"
    )]
    Ipv6NotInPrefix {
        what: &'static str,
        addr: Ipv6Address,
        prefix: Ipv6Cidr,
    },
    #[error("the IPv6 gateway and DNS addresses must differ ({0})")]
    Ipv6SameAddress(Ipv6Address),
    #[error("IPv6 needs an MTU of at least 1280 (RFC 8200 §5), got {0}")]
    Ipv6Mtu(u16),
    #[error("IPv6 lifetimes: preferred ({preferred} s) must not exceed valid ({valid} s), both at most 2^32-2 s")]
    Ipv6Lifetimes { preferred: u64, valid: u64 },
    #[error(
        "the router lifetime must be 0..=9000 s and the RA interval 4..=1800 s (RFC 4861 §6.2.1)"
    )]
    Ipv6RouterTimes,
    #[error("DHCPv6 pool of {size} addresses from {start} leaves the prefix or holds the gateway or DNS address")]
    Dhcpv6Pool { start: Ipv6Address, size: u32 },
}

impl Config {
    /// Checks that the addresses fit together; the stack is built only from a valid config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::pmtu::validate(&self.path_mtus).map_err(ConfigError::PathMtu)?;
        if self.routes_via_guest.len() > MAX_ROUTES_VIA_GUEST {
            return Err(ConfigError::RouteViaGuest(format!(
                "at most {MAX_ROUTES_VIA_GUEST} prefixes"
            )));
        }
        for p in &self.routes_via_guest {
            // The link's own addresses must stay on the link.
            let gateway6 = self.ipv6.as_ref().map(|c| IpAddress::V6(c.gateway));
            let on_link = [Some(IpAddress::V4(self.gateway_ipv4)), gateway6]
                .into_iter()
                .flatten()
                .any(|a| p.contains(a));
            if on_link {
                return Err(ConfigError::RouteViaGuest(format!(
                    "{p} holds the gateway's own address"
                )));
            }
        }
        let qi = self.mcast_query_interval.total_secs();
        if !(2..=3600).contains(&qi) {
            return Err(ConfigError::QueryInterval(qi));
        }
        if !self.gateway_mac.is_unicast() || self.gateway_mac.is_zero() {
            return Err(ConfigError::GatewayMac(self.gateway_mac));
        }
        let net = self.ipv4_net;
        if net.prefix_len() > 30 {
            return Err(ConfigError::NetworkTooSmall(net));
        }
        let is_host =
            |a: Ipv4Address| net.contains(a) && a != net.network() && a != net.broadcast();
        for (what, addr) in [("gateway", self.gateway_ipv4), ("DNS", self.dns_ipv4)] {
            if !is_host(addr) {
                return Err(ConfigError::NotInNetwork { what, addr, net });
            }
        }
        if self.gateway_ipv4 == self.dns_ipv4 {
            return Err(ConfigError::SameAddress(self.gateway_ipv4));
        }
        let start = self.dhcp_start.to_u32();
        let size = self.dhcp_pool_size;
        let last = start.checked_add(size.saturating_sub(1));
        let in_net = size > 0
            && is_host(self.dhcp_start)
            && last.is_some_and(|l| is_host(Ipv4Address::from_u32(l)));
        if !in_net {
            return Err(ConfigError::PoolOutsideNetwork {
                start: self.dhcp_start,
                size,
                net,
            });
        }
        let last = last.unwrap_or(start);
        for a in [self.gateway_ipv4, self.dns_ipv4] {
            if (start..=last).contains(&a.to_u32()) {
                return Err(ConfigError::PoolOverlapsGateway {
                    start: self.dhcp_start,
                    size,
                });
            }
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(ConfigError::Mtu(self.mtu));
        }
        if self.tcp_memory < MIN_TCP_MEMORY {
            return Err(ConfigError::TcpMemory(self.tcp_memory));
        }
        let lease = self.lease_time.total_secs();
        if !(60..=u64::from(u32::MAX - 1)).contains(&lease) {
            return Err(ConfigError::LeaseTime(lease));
        }
        if let Some(d) = &self.domain_name {
            if d.is_empty() || d.len() > 255 {
                return Err(ConfigError::DomainName);
            }
        }
        for (i, f) in self.forwards.iter().enumerate() {
            if f.guest_port == 0 {
                return Err(ConfigError::ForwardGuestPort(f.host));
            }
            if self.forwards[..i]
                .iter()
                .any(|g| g.host == f.host && g.protocol == f.protocol)
            {
                return Err(ConfigError::DuplicateForward(f.protocol, f.host));
            }
        }
        if let Some(v6) = &self.ipv6 {
            v6.validate(self.mtu)?;
        }
        Ok(())
    }

    /// Whether `addr` is one of the gateway's own IPv4 addresses.
    pub fn is_gateway_address(&self, addr: Ipv4Address) -> bool {
        addr == self.gateway_ipv4 || addr == self.dns_ipv4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn inconsistent_configs_are_rejected() {
        let base = Config::default();
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    gateway_ipv4: Ipv4Address::new(10, 0, 3, 2),
                    ..base.clone()
                },
                "not a host address",
            ),
            (
                Config {
                    dns_ipv4: base.gateway_ipv4,
                    ..base.clone()
                },
                "must differ",
            ),
            (
                Config {
                    dhcp_pool_size: 300,
                    ..base.clone()
                },
                "leaves",
            ),
            (
                Config {
                    dhcp_start: Ipv4Address::new(10, 0, 2, 1),
                    ..base.clone()
                },
                "contains the gateway",
            ),
            (
                Config {
                    mtu: 65521,
                    ..base.clone()
                },
                "MTU",
            ),
            (
                Config {
                    lease_time: Duration::from_secs(5),
                    ..base.clone()
                },
                "lease time",
            ),
            (
                Config {
                    ipv4_net: "10.0.2.0/31".parse().unwrap(),
                    ..base.clone()
                },
                "room",
            ),
            (
                Config {
                    gateway_mac: EthernetAddress::BROADCAST,
                    ..base.clone()
                },
                "unicast",
            ),
        ];
        let v6 = Ipv6Config::default();
        let with_v6 = |v: Ipv6Config| Config {
            ipv6: Some(v),
            ..base.clone()
        };
        let mut cases = cases;
        cases.extend([
            (
                with_v6(Ipv6Config {
                    prefix: "fd00::/48".parse().unwrap(),
                    ..v6.clone()
                }),
                "/64",
            ),
            (
                with_v6(Ipv6Config {
                    gateway: "fd01::2".parse().unwrap(),
                    ..v6.clone()
                }),
                "not in the prefix",
            ),
            (
                with_v6(Ipv6Config {
                    dns: v6.gateway,
                    ..v6.clone()
                }),
                "must differ",
            ),
            (
                with_v6(Ipv6Config {
                    preferred_lifetime: Duration::from_secs(90000),
                    ..v6.clone()
                }),
                "preferred",
            ),
            (
                with_v6(Ipv6Config {
                    ra_interval: Duration::from_secs(2),
                    ..v6.clone()
                }),
                "RA interval",
            ),
            (
                with_v6(Ipv6Config {
                    dhcpv6_start: "fd00::1".parse().unwrap(),
                    ..v6.clone()
                }),
                "DHCPv6 pool",
            ),
            (
                Config {
                    mtu: 1000,
                    ..base.clone()
                },
                "1280",
            ),
        ]);
        assert!(Config {
            mtu: 1000,
            ipv6: None,
            ..base.clone()
        }
        .validate()
        .is_ok());
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }
}
