//! The DHCPv4 server (RFC 2131) with the options of RFC 2132.
//!
//! Theory of operation: the pool is a fixed range of the guest network; each address has at most one
//! lease, keyed by the client identifier (option 61) or, without one, the hardware address
//! (RFC 2131 §4.2). An OFFER reserves its address briefly; a REQUEST turns it into a bound lease.
//! A client keeps its address across DISCOVERs while its lease or offer lives, so a rebooting guest
//! gets the same address. DECLINEd addresses are held back for [`DECLINE_HOLD`]. The server never
//! allocates per packet beyond a lease's client key.

use crate::config::Config;
use crate::time::{Duration, Instant};
use crate::wire::dhcpv4::DhcpOp;
use crate::wire::{DhcpMessageType, DhcpRepr, EthernetAddress, Ipv4Address};

/// An offered address stays reserved for this long waiting for the REQUEST.
pub const OFFER_HOLD: Duration = Duration::from_secs(60);
/// RFC 2131 §3.1 step 5: a DECLINEd address is in use by someone else; keep it out of the pool a while.
pub const DECLINE_HOLD: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    Offered,
    Bound,
    Declined,
}

#[derive(Debug, Clone)]
struct Lease {
    addr: Ipv4Address,
    client: Vec<u8>,
    state: LeaseState,
    expires_at: Instant,
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 and the broadcast MAC.
    Broadcast,
    /// Unicast to this address at this MAC (the client's hardware address).
    Unicast(Ipv4Address, EthernetAddress),
}

/// A reply for the stack to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    pub repr: DhcpRepr<'a>,
    pub destination: Destination,
}

/// What the server made of a client message, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    Reply(Reply<'a>),
    /// Nothing to send (RELEASE, DECLINE, or a REQUEST for another server).
    Silent,
    /// Not for this server: relayed, a server-to-client type, or another server selected.
    Ignored,
    /// No address left to offer.
    PoolExhausted,
}

/// A lease as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub addr: Ipv4Address,
    pub bound: bool,
    pub expires_at: Instant,
}

/// The DHCPv4 server.
#[derive(Debug, Default)]
pub struct DhcpServer {
    leases: Vec<Lease>,
}

fn client_key<'k>(req: &'k DhcpRepr<'_>) -> &'k [u8] {
    match req.client_identifier {
        Some(id) => id,
        None => &req.client_hardware_address.0,
    }
}

impl DhcpServer {
    pub fn new() -> Self {
        DhcpServer::default()
    }

    /// Current bound leases and offers.
    pub fn leases(&self) -> impl Iterator<Item = LeaseInfo> + '_ {
        self.leases
            .iter()
            .filter(|l| l.state != LeaseState::Declined)
            .map(|l| LeaseInfo {
                addr: l.addr,
                bound: l.state == LeaseState::Bound,
                expires_at: l.expires_at,
            })
    }

    fn expire(&mut self, now: Instant) {
        self.leases.retain(|l| l.expires_at > now);
    }

    /// The next time a lease expires.
    pub fn poll_at(&self) -> Option<Instant> {
        self.leases.iter().map(|l| l.expires_at).min()
    }

    /// Forgets expired leases.
    pub fn poll(&mut self, now: Instant) {
        self.expire(now);
    }

    fn lease_of(&self, key: &[u8]) -> Option<usize> {
        self.leases
            .iter()
            .position(|l| l.state != LeaseState::Declined && l.client == key)
    }

    fn holder_of(&self, addr: Ipv4Address) -> Option<usize> {
        self.leases.iter().position(|l| l.addr == addr)
    }

    fn in_pool(cfg: &Config, addr: Ipv4Address) -> bool {
        let start = cfg.dhcp_start.to_u32();
        let a = addr.to_u32();
        a >= start && a - start < cfg.dhcp_pool_size
    }

    /// An address for a new client: its requested one if free, else the lowest free one.
    fn pick(&self, cfg: &Config, requested: Option<Ipv4Address>) -> Option<Ipv4Address> {
        if let Some(r) = requested {
            if Self::in_pool(cfg, r) && self.holder_of(r).is_none() {
                return Some(r);
            }
        }
        (0..cfg.dhcp_pool_size)
            .map(|i| Ipv4Address::from_u32(cfg.dhcp_start.to_u32() + i))
            .find(|a| self.holder_of(*a).is_none())
    }

    fn reply<'a>(
        cfg: &'a Config,
        req: &DhcpRepr<'_>,
        message_type: DhcpMessageType,
        your_ip: Ipv4Address,
    ) -> DhcpRepr<'a> {
        let mut r = DhcpRepr::reply_to(req, message_type);
        r.your_ip = your_ip;
        r.server_identifier = Some(cfg.gateway_ipv4);
        if message_type == DhcpMessageType::Nak {
            r.message = Some(b"address not available");
            // RFC 2131 §4.3.2: a NAK carries no other parameters.
            return r;
        }
        r.subnet_mask = Some(cfg.ipv4_net.netmask());
        r.router = Some(cfg.gateway_ipv4);
        r.dns_servers = [Some(cfg.dns_ipv4), None, None];
        r.interface_mtu = Some(cfg.mtu);
        r.broadcast_address = Some(cfg.ipv4_net.broadcast());
        r.domain_name = cfg.domain_name.as_deref().map(str::as_bytes);
        // Lease times go in every OFFER and ACK; the ACK to an INFORM clears them (RFC 2131 §4.3.5).
        let lease = cfg.lease_time.total_secs() as u32;
        r.lease_time = Some(lease);
        // RFC 2131 §4.4.5: T1 defaults to 0.5 and T2 to 0.875 of the lease.
        r.renewal_time = Some(lease / 2);
        r.rebinding_time = Some((u64::from(lease) * 7 / 8) as u32);
        r
    }

    /// RFC 2131 §4.1: how a reply reaches the client.
    fn destination(req: &DhcpRepr<'_>, reply: &DhcpRepr<'_>) -> Destination {
        if reply.message_type == DhcpMessageType::Nak {
            return Destination::Broadcast;
        }
        if !req.client_ip.is_unspecified() {
            return Destination::Unicast(req.client_ip, req.client_hardware_address);
        }
        if req.broadcast {
            return Destination::Broadcast;
        }
        Destination::Unicast(reply.your_ip, req.client_hardware_address)
    }

    /// Handles one client message.
    pub fn process<'a>(
        &mut self,
        now: Instant,
        cfg: &'a Config,
        req: &DhcpRepr<'_>,
    ) -> Outcome<'a> {
        self.expire(now);
        if req.op != DhcpOp::Request || !req.relay_agent_ip.is_unspecified() {
            return Outcome::Ignored;
        }
        let key = client_key(req);
        let lease_time = cfg.lease_time;
        let done = |reply: DhcpRepr<'a>| {
            Outcome::Reply(Reply {
                destination: Self::destination(req, &reply),
                repr: reply,
            })
        };
        match req.message_type {
            DhcpMessageType::Discover => {
                let addr = match self.lease_of(key) {
                    Some(i) => self.leases[i].addr,
                    None => {
                        let Some(addr) = self.pick(cfg, req.requested_ip) else {
                            return Outcome::PoolExhausted;
                        };
                        self.leases.push(Lease {
                            addr,
                            client: key.to_vec(),
                            state: LeaseState::Offered,
                            expires_at: now + OFFER_HOLD,
                        });
                        addr
                    }
                };
                done(Self::reply(cfg, req, DhcpMessageType::Offer, addr))
            }
            DhcpMessageType::Request => {
                // RFC 2131 §4.3.2: which state the client is in follows from the options present.
                let wanted = match (req.server_identifier, req.requested_ip) {
                    // SELECTING: the client answers one server's offer.
                    (Some(server), requested) => {
                        if server != cfg.gateway_ipv4 {
                            // It chose another server: release our offer.
                            if let Some(i) = self.lease_of(key) {
                                if self.leases[i].state == LeaseState::Offered {
                                    self.leases.remove(i);
                                }
                            }
                            return Outcome::Ignored;
                        }
                        requested.unwrap_or(req.client_ip)
                    }
                    // INIT-REBOOT: verify a remembered address.
                    (None, Some(requested)) => requested,
                    // RENEWING or REBINDING: extend the lease on ciaddr.
                    (None, None) => req.client_ip,
                };
                let ours = self
                    .lease_of(key)
                    .filter(|&i| self.leases[i].addr == wanted);
                let index = match ours {
                    Some(i) => Some(i),
                    // A client whose lease we forgot (virtgate restarted) may keep a free pool
                    // address: a stateless restart must not knock guests off the network.
                    None if Self::in_pool(cfg, wanted) && self.holder_of(wanted).is_none() => {
                        if let Some(old) = self.lease_of(key) {
                            self.leases.remove(old);
                        }
                        self.leases.push(Lease {
                            addr: wanted,
                            client: key.to_vec(),
                            state: LeaseState::Offered,
                            expires_at: now,
                        });
                        Some(self.leases.len() - 1)
                    }
                    None => None,
                };
                match index {
                    Some(i) => {
                        let lease = &mut self.leases[i];
                        lease.state = LeaseState::Bound;
                        lease.expires_at = now + lease_time;
                        done(Self::reply(cfg, req, DhcpMessageType::Ack, wanted))
                    }
                    None => {
                        // RFC 2131 §4.3.2: NAK a wrong address, unless INIT-REBOOT on another
                        // network, which is covered by the address not being in our pool.
                        done(Self::reply(
                            cfg,
                            req,
                            DhcpMessageType::Nak,
                            Ipv4Address::UNSPECIFIED,
                        ))
                    }
                }
            }
            DhcpMessageType::Release => {
                if req.server_identifier.is_some_and(|s| s != cfg.gateway_ipv4) {
                    return Outcome::Ignored;
                }
                if let Some(i) = self.lease_of(key) {
                    if self.leases[i].addr == req.client_ip {
                        self.leases.remove(i);
                    }
                }
                Outcome::Silent
            }
            DhcpMessageType::Decline => {
                if req.server_identifier.is_some_and(|s| s != cfg.gateway_ipv4) {
                    return Outcome::Ignored;
                }
                let Some(addr) = req.requested_ip else {
                    return Outcome::Ignored;
                };
                if let Some(i) = self.holder_of(addr) {
                    self.leases.remove(i);
                }
                if Self::in_pool(cfg, addr) {
                    self.leases.push(Lease {
                        addr,
                        client: Vec::new(),
                        state: LeaseState::Declined,
                        expires_at: now + DECLINE_HOLD,
                    });
                }
                Outcome::Silent
            }
            DhcpMessageType::Inform => {
                // RFC 2131 §4.3.5: parameters only, no lease, no yiaddr; unicast to ciaddr.
                let mut reply =
                    Self::reply(cfg, req, DhcpMessageType::Ack, Ipv4Address::UNSPECIFIED);
                reply.lease_time = None;
                reply.renewal_time = None;
                reply.rebinding_time = None;
                done(reply)
            }
            _ => Outcome::Ignored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0, 0, 0xa]);
    const MAC_B: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0, 0, 0xb]);

    fn msg(t: DhcpMessageType, mac: EthernetAddress) -> DhcpRepr<'static> {
        DhcpRepr {
            op: DhcpOp::Request,
            message_type: t,
            transaction_id: 42,
            broadcast: true,
            client_hardware_address: mac,
            ..DhcpRepr::empty()
        }
    }

    fn reply(o: Outcome<'_>) -> Reply<'_> {
        match o {
            Outcome::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn bind(s: &mut DhcpServer, cfg: &Config, now: Instant, mac: EthernetAddress) -> Ipv4Address {
        let offer = reply(s.process(now, cfg, &msg(DhcpMessageType::Discover, mac)));
        let mut req = msg(DhcpMessageType::Request, mac);
        req.server_identifier = Some(cfg.gateway_ipv4);
        req.requested_ip = Some(offer.repr.your_ip);
        let ack = reply(s.process(now, cfg, &req));
        assert_eq!(ack.repr.message_type, DhcpMessageType::Ack);
        ack.repr.your_ip
    }

    #[test]
    fn discover_offers_first_pool_address_with_all_options() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let r = reply(s.process(Instant::ZERO, &cfg, &msg(DhcpMessageType::Discover, MAC_A)));
        assert_eq!(r.destination, Destination::Broadcast);
        let o = r.repr;
        assert_eq!(o.message_type, DhcpMessageType::Offer);
        assert_eq!(o.transaction_id, 42);
        assert_eq!(o.your_ip, Ipv4Address::new(10, 0, 2, 15));
        assert_eq!(o.server_identifier, Some(cfg.gateway_ipv4));
        assert_eq!(o.subnet_mask, Some(Ipv4Address::new(255, 255, 255, 0)));
        assert_eq!(o.router, Some(cfg.gateway_ipv4));
        assert_eq!(o.dns_servers[0], Some(cfg.dns_ipv4));
        assert_eq!(o.interface_mtu, Some(1500));
        assert_eq!(o.lease_time, Some(86400));
        assert_eq!(o.renewal_time, Some(43200));
        assert_eq!(o.rebinding_time, Some(75600));
    }

    #[test]
    fn full_exchange_and_renewal() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let t0 = Instant::from_secs(1);
        let addr = bind(&mut s, &cfg, t0, MAC_A);
        assert_eq!(addr, Ipv4Address::new(10, 0, 2, 15));
        let lease = s.leases().next().unwrap();
        assert!(lease.bound);
        assert_eq!(lease.expires_at, t0 + cfg.lease_time);

        // RENEWING: ciaddr set, no server id or requested ip; unicast back.
        let mut renew = msg(DhcpMessageType::Request, MAC_A);
        renew.client_ip = addr;
        renew.broadcast = false;
        let t1 = t0 + Duration::from_secs(40000);
        let ack = reply(s.process(t1, &cfg, &renew));
        assert_eq!(ack.repr.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.destination, Destination::Unicast(addr, MAC_A));
        assert_eq!(s.leases().next().unwrap().expires_at, t1 + cfg.lease_time);

        // A second client gets the next address.
        assert_eq!(
            bind(&mut s, &cfg, t1, MAC_B),
            Ipv4Address::new(10, 0, 2, 16)
        );
        // The first client's DISCOVER again (reboot) offers its own address.
        let again = reply(s.process(t1, &cfg, &msg(DhcpMessageType::Discover, MAC_A)));
        assert_eq!(again.repr.your_ip, addr);
    }

    #[test]
    fn wrong_address_gets_nak() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let t0 = Instant::ZERO;
        bind(&mut s, &cfg, t0, MAC_A);
        // MAC_B asks, in INIT-REBOOT, for MAC_A's address.
        let mut req = msg(DhcpMessageType::Request, MAC_B);
        req.requested_ip = Some(Ipv4Address::new(10, 0, 2, 15));
        let nak = reply(s.process(t0, &cfg, &req));
        assert_eq!(nak.repr.message_type, DhcpMessageType::Nak);
        assert_eq!(nak.destination, Destination::Broadcast);
        assert_eq!(nak.repr.lease_time, None);
        // An address outside the pool.
        req.requested_ip = Some(Ipv4Address::new(192, 168, 1, 5));
        let nak = reply(s.process(t0, &cfg, &req));
        assert_eq!(nak.repr.message_type, DhcpMessageType::Nak);
    }

    #[test]
    fn init_reboot_after_restart_keeps_a_free_address() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let mut req = msg(DhcpMessageType::Request, MAC_A);
        req.requested_ip = Some(Ipv4Address::new(10, 0, 2, 20));
        let ack = reply(s.process(Instant::ZERO, &cfg, &req));
        assert_eq!(ack.repr.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.repr.your_ip, Ipv4Address::new(10, 0, 2, 20));
    }

    #[test]
    fn request_for_another_server_releases_the_offer() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        s.process(Instant::ZERO, &cfg, &msg(DhcpMessageType::Discover, MAC_A));
        let mut req = msg(DhcpMessageType::Request, MAC_A);
        req.server_identifier = Some(Ipv4Address::new(10, 0, 2, 99));
        req.requested_ip = Some(Ipv4Address::new(10, 0, 2, 15));
        assert_eq!(s.process(Instant::ZERO, &cfg, &req), Outcome::Ignored);
        assert_eq!(s.leases().count(), 0);
    }

    #[test]
    fn release_and_decline() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let t0 = Instant::ZERO;
        let addr = bind(&mut s, &cfg, t0, MAC_A);
        let mut rel = msg(DhcpMessageType::Release, MAC_A);
        rel.client_ip = addr;
        rel.server_identifier = Some(cfg.gateway_ipv4);
        assert_eq!(s.process(t0, &cfg, &rel), Outcome::Silent);
        assert_eq!(s.leases().count(), 0);

        // DECLINE: the address is held back, the next client gets another one.
        let addr = bind(&mut s, &cfg, t0, MAC_A);
        let mut dec = msg(DhcpMessageType::Decline, MAC_A);
        dec.requested_ip = Some(addr);
        dec.server_identifier = Some(cfg.gateway_ipv4);
        assert_eq!(s.process(t0, &cfg, &dec), Outcome::Silent);
        let offer = reply(s.process(t0, &cfg, &msg(DhcpMessageType::Discover, MAC_A)));
        assert_ne!(offer.repr.your_ip, addr);
        // After the hold, the address returns to the pool.
        let later = t0 + DECLINE_HOLD + OFFER_HOLD;
        let offer = reply(s.process(later, &cfg, &msg(DhcpMessageType::Discover, MAC_B)));
        assert_eq!(offer.repr.your_ip, addr);
    }

    #[test]
    fn inform_gets_parameters_without_lease() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let mut inf = msg(DhcpMessageType::Inform, MAC_A);
        inf.client_ip = Ipv4Address::new(10, 0, 2, 100);
        let r = reply(s.process(Instant::ZERO, &cfg, &inf));
        assert_eq!(r.repr.message_type, DhcpMessageType::Ack);
        assert_eq!(r.repr.your_ip, Ipv4Address::UNSPECIFIED);
        assert_eq!(r.repr.lease_time, None);
        assert_eq!(r.repr.router, Some(cfg.gateway_ipv4));
        assert_eq!(
            r.destination,
            Destination::Unicast(Ipv4Address::new(10, 0, 2, 100), MAC_A)
        );
    }

    #[test]
    fn pool_exhaustion_and_offer_expiry() {
        let cfg = Config {
            dhcp_pool_size: 2,
            ..Config::default()
        };
        let mut s = DhcpServer::new();
        let t0 = Instant::ZERO;
        for i in 0..2u8 {
            let mac = EthernetAddress([2, 0, 0, 0, 0, i]);
            reply(s.process(t0, &cfg, &msg(DhcpMessageType::Discover, mac)));
        }
        let third = EthernetAddress([2, 0, 0, 0, 0, 9]);
        assert_eq!(
            s.process(t0, &cfg, &msg(DhcpMessageType::Discover, third)),
            Outcome::PoolExhausted
        );
        // Unanswered offers lapse.
        let r = reply(s.process(
            t0 + OFFER_HOLD,
            &cfg,
            &msg(DhcpMessageType::Discover, third),
        ));
        assert_eq!(r.repr.your_ip, Ipv4Address::new(10, 0, 2, 15));
    }

    #[test]
    fn client_identifier_takes_precedence_over_mac() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let mut d = msg(DhcpMessageType::Discover, MAC_A);
        d.client_identifier = Some(b"\x00guest-one");
        let first = reply(s.process(Instant::ZERO, &cfg, &d)).repr.your_ip;
        // Same identifier from another MAC: the same client.
        d.client_hardware_address = MAC_B;
        assert_eq!(
            reply(s.process(Instant::ZERO, &cfg, &d)).repr.your_ip,
            first
        );
    }

    #[test]
    fn relayed_and_server_messages_are_ignored() {
        let cfg = Config::default();
        let mut s = DhcpServer::new();
        let mut relayed = msg(DhcpMessageType::Discover, MAC_A);
        relayed.relay_agent_ip = Ipv4Address::new(192, 0, 2, 1);
        assert_eq!(s.process(Instant::ZERO, &cfg, &relayed), Outcome::Ignored);
        let mut offer = msg(DhcpMessageType::Offer, MAC_A);
        offer.op = DhcpOp::Reply;
        assert_eq!(s.process(Instant::ZERO, &cfg, &offer), Outcome::Ignored);
    }
}
