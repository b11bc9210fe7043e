//! What the gateway serves: its addresses, the DHCP pool and the link MTU, checked for consistency.

use std::net::SocketAddr;

use crate::time::Duration;
use crate::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

/// The largest MTU virtio-net can carry: a 64 KiB IP packet less headers (the same bound QEMU and
/// Linux use for virtio-net, 65535 - 14 - 1, rounded to 65520).
pub const MAX_MTU: u16 = 65520;
/// RFC 791: every IPv4 host must accept 68-byte packets.
pub const MIN_MTU: u16 = 68;

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
        }
    }
}

/// Why a configuration is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
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
}

impl Config {
    /// Checks that the addresses fit together; the stack is built only from a valid config.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }
}
