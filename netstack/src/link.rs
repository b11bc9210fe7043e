//! The link's state: what the gateway knows of the guest as a host on the link (its MAC, its
//! neighbour entries, its DHCP leases, its IPv6 addresses and multicast memberships) and the
//! link-level protocols' timers (ARP/NDP, DHCP, Router Advertisements, the multicast querier, the
//! link-up announcements).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::arp::NeighborCache;
use crate::config::Ipv6Config;
use crate::dhcpv4::DhcpServer;
use crate::dhcpv6::Dhcpv6Server;
use crate::ratelimit::ErrorBudget;
use crate::time::{Duration, Instant};
use crate::wire::icmpv6::encode_domains;
use crate::wire::{EthernetAddress, EthernetRepr, Ipv4Address, Ipv6Address};

/// The link's state (see the module documentation).
pub(crate) struct Link {
    pub(crate) neighbors: NeighborCache,
    pub(crate) dhcp: DhcpServer,
    pub(crate) guest_mac: Option<EthernetAddress>,
    /// The source address of the guest's most recent IPv4 packet.
    pub(crate) last_guest_ipv4: Option<Ipv4Address>,
    pub(crate) v6: Ipv6State,
    /// Link-up announcements, IPv4 (ARP) and IPv6 (NDP), each started by the guest's first frame
    /// of that family: a guest speaks IPv6 only once its IPv6 on the interface is up (routes in
    /// place), and an IPv4-only guest still gets its ARP announcements.
    pub(crate) announce_v4: Announce,
    pub(crate) announce_v6: Announce,
    /// Which sources the guest may use.
    pub(crate) sources: crate::sources::SourcePolicy,
    /// The multicast querier and the guest's memberships.
    pub(crate) querier: crate::multicast::Querier,
}

/// Where the link-up announcement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce {
    Idle,
    /// A new link: waiting for the guest's first frame.
    AwaitingGuest,
    /// Due at this instant.
    At(Instant),
}

/// From the guest's first frame on a new link to the gateway's announcements.
const ANNOUNCE_DELAY: Duration = crate::time::Duration::from_millis(500);

impl Announce {
    pub(crate) fn guest_spoke(&mut self, now: Instant) {
        if *self == Announce::AwaitingGuest {
            *self = Announce::At(now + ANNOUNCE_DELAY);
        }
    }

    pub(crate) fn due(&self) -> Option<Instant> {
        match *self {
            Announce::At(t) => Some(t),
            _ => None,
        }
    }

    /// Whether the announcement is due at `now` (it is then done).
    pub(crate) fn take_due(&mut self, now: Instant) -> bool {
        if self.due().is_some_and(|t| t <= now) {
            *self = Announce::Idle;
            return true;
        }
        false
    }
}

/// The link's IPv6 state: neighbours, Router Advertisements, DHCPv6, the guest's global address.
#[derive(Debug)]
pub(crate) struct Ipv6State {
    pub(crate) neighbors: NeighborCache<Ipv6Address>,
    /// When the next unsolicited Router Advertisement is due.
    pub(crate) next_ra_at: Option<Instant>,
    /// When the last multicast Router Advertisement left.
    pub(crate) last_ra_at: Option<Instant>,
    pub(crate) initial_ras: u8,
    pub(crate) ra_count: u64,
    /// ICMPv6 errors (RFC 4443 §2.4(f)).
    pub(crate) errors: ErrorBudget,
    /// The guest's most recent global address (the destination of forwarded connections).
    pub(crate) last_guest_global: Option<Ipv6Address>,
    /// RDNSS and DNSSL payloads, built once from the configuration.
    pub(crate) rdnss: [u8; 16],
    pub(crate) dnssl: Vec<u8>,
    pub(crate) dhcp: Dhcpv6Server,
    /// Our DHCPv6 DUID (DUID-LL from the gateway MAC, RFC 8415 §11.4).
    pub(crate) duid: [u8; 10],
    /// Identification of the last packet the gateway fragmented (RFC 8200 §4.5).
    pub(crate) frag_ident: u32,
}

impl Ipv6State {
    pub(crate) fn new(
        cfg: Option<&Ipv6Config>,
        mac: EthernetAddress,
        domain: Option<&str>,
    ) -> Self {
        let mut duid = [0u8; 10];
        duid[..4].copy_from_slice(&[0, 3, 0, 1]);
        duid[4..].copy_from_slice(&mac.0);
        Ipv6State {
            neighbors: NeighborCache::default(),
            next_ra_at: None,
            last_ra_at: None,
            initial_ras: 0,
            ra_count: 0,
            errors: ErrorBudget::default(),
            last_guest_global: None,
            rdnss: cfg.map_or([0; 16], |c| c.dns.0),
            dnssl: domain.map_or_else(Vec::new, |d| encode_domains(&[d])),
            dhcp: Dhcpv6Server::default(),
            duid,
            frag_ident: 0,
        }
    }

    pub(crate) fn poll_at(&self) -> Option<Instant> {
        [self.next_ra_at, self.neighbors.poll_at()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The link's state as every shard of the stack shares it (see [`crate::stack::Stack::sharded`]):
/// behind a mutex, taken for the link's own protocols (ARP, NDP, DHCP, Router Advertisements,
/// multicast) and their timers, and by a shard only when its [`LinkView`] cannot answer.
pub(crate) struct SharedLink {
    state: Mutex<Link>,
    /// Bumped by every change of the state (a [`LinkGuard`] used mutably), so that a shard's
    /// view is known current with one atomic load.
    generation: AtomicU64,
    /// The guest ports of the inbound forwards, TCP then UDP, one bit per port: their
    /// conversations belong to the home shard, which holds the listening sockets.
    forward_ports: Box<[AtomicU64]>,
    /// Datagrams one shard reassembled for another, per receiving shard.
    mail: Vec<Mutex<Vec<Mail>>>,
    /// Whether a shard has mail (read without its lock).
    mail_waiting: Vec<AtomicBool>,
}

/// The most datagrams waiting in one shard's mailbox; beyond it they are dropped and counted
/// (`drop_shard_mail_full`).
pub const MAIL_CAPACITY: usize = 64;

/// A reassembled datagram (IP header on) from the guest, handed to the shard that owns its flow.
pub(crate) struct Mail {
    pub(crate) eth: EthernetRepr,
    pub(crate) datagram: Vec<u8>,
}

impl SharedLink {
    pub(crate) fn new(link: Link, shards: usize) -> Self {
        SharedLink {
            state: Mutex::new(link),
            generation: AtomicU64::new(1),
            forward_ports: (0..2 * 65536 / 64).map(|_| AtomicU64::new(0)).collect(),
            mail: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            mail_waiting: (0..shards).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn port_bit(tcp: bool, port: u16) -> (usize, u64) {
        let i = usize::from(!tcp) * 65536 + usize::from(port);
        (i / 64, 1 << (i % 64))
    }

    /// Whether `port` is a forward's guest port (of TCP, or UDP).
    pub(crate) fn is_forward_port(&self, tcp: bool, port: u16) -> bool {
        let (word, bit) = Self::port_bit(tcp, port);
        self.forward_ports[word].load(Ordering::Relaxed) & bit != 0
    }

    /// Marks `port` a forward's guest port, for good: TCP connections made through a forward
    /// outlive it, so its port is never unmarked.
    pub(crate) fn set_forward_port(&self, tcp: bool, port: u16) {
        let (word, bit) = Self::port_bit(tcp, port);
        self.forward_ports[word].fetch_or(bit, Ordering::Relaxed);
    }

    /// Hands `mail` to shard `to`; false (dropped) when its mailbox is full.
    pub(crate) fn post(&self, to: usize, mail: Mail) -> bool {
        let mut box_ = self.mail[to].lock().unwrap_or_else(PoisonError::into_inner);
        if box_.len() >= MAIL_CAPACITY {
            return false;
        }
        box_.push(mail);
        self.mail_waiting[to].store(true, Ordering::Release);
        true
    }

    pub(crate) fn has_mail(&self, shard: usize) -> bool {
        self.mail_waiting[shard].load(Ordering::Acquire)
    }

    /// Shard `shard`'s mail, swapped into `out` (which should be empty).
    pub(crate) fn take_mail(&self, shard: usize, out: &mut Vec<Mail>) {
        if !self.has_mail(shard) {
            return;
        }
        let mut box_ = self.mail[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *box_, out);
        self.mail_waiting[shard].store(false, Ordering::Release);
    }

    /// The link's state, locked (a poisoned lock is taken over: the state is plain data kept
    /// consistent by every method that changes it).
    pub(crate) fn lock(&self) -> LinkGuard<'_> {
        LinkGuard {
            guard: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            generation: &self.generation,
            changed: false,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The locked link; used mutably, it bumps the generation when released.
pub(crate) struct LinkGuard<'a> {
    guard: MutexGuard<'a, Link>,
    generation: &'a AtomicU64,
    changed: bool,
}

impl core::ops::Deref for LinkGuard<'_> {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.guard
    }
}

impl core::ops::DerefMut for LinkGuard<'_> {
    fn deref_mut(&mut self) -> &mut Link {
        self.changed = true;
        &mut self.guard
    }
}

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        // Before the mutex is released (the guard field drops after this): a shard that then
        // takes the lock to refresh its view reads the new generation with the new state.
        if self.changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// What a shard reads of the link on the per-packet path, copied from the shared state when
/// its generation moved: the guest's MAC and sources, the neighbour mappings usable as they
/// are, whether the guest's first frame is still awaited. Anything it cannot answer (an
/// unresolved or expiring neighbour, an unknown source, a new MAC) goes to the locked state.
/// Its vectors are bounded by the neighbour caches' and the source policy's capacities and
/// reused across refreshes.
#[derive(Default)]
pub(crate) struct LinkView {
    generation: u64,
    pub(crate) guest_mac: Option<EthernetAddress>,
    /// The guest's first frame of the family would change something (announcement, querier).
    pub(crate) awaiting_v4: bool,
    pub(crate) awaiting_v6: bool,
    pub(crate) source_check: bool,
    pub(crate) sources_v4: Vec<Ipv4Address>,
    pub(crate) sources_v6: Vec<Ipv6Address>,
    pub(crate) neighbors_v4: Vec<(Ipv4Address, EthernetAddress, Instant)>,
    pub(crate) neighbors_v6: Vec<(Ipv6Address, EthernetAddress, Instant)>,
    pub(crate) last_guest_global: Option<Ipv6Address>,
    pub(crate) last_guest_ipv4: Option<Ipv4Address>,
}

impl LinkView {
    /// Brings the view up to date with `shared` if its generation moved.
    pub(crate) fn refresh(&mut self, shared: &SharedLink) {
        if shared.generation() == self.generation {
            return;
        }
        let link = shared.lock();
        self.generation = shared.generation();
        self.guest_mac = link.guest_mac;
        self.awaiting_v4 =
            link.announce_v4 == Announce::AwaitingGuest || link.querier.awaits_guest(false);
        self.awaiting_v6 =
            link.announce_v6 == Announce::AwaitingGuest || link.querier.awaits_guest(true);
        self.source_check = link.sources.enabled;
        link.sources.allowed_into(
            link.dhcp.leases().filter(|l| l.bound).map(|l| l.addr),
            &mut self.sources_v4,
            &mut self.sources_v6,
        );
        link.neighbors.usable(&mut self.neighbors_v4);
        link.v6.neighbors.usable(&mut self.neighbors_v6);
        self.last_guest_global = link.v6.last_guest_global;
        self.last_guest_ipv4 = link.last_guest_ipv4;
    }

    /// The MAC of `ip` if the view may use it at `now`.
    pub(crate) fn neighbor<A: PartialEq + Copy>(
        entries: &[(A, EthernetAddress, Instant)],
        now: Instant,
        ip: A,
    ) -> Option<EthernetAddress> {
        entries
            .iter()
            .find(|e| e.0 == ip)
            .and_then(|&(_, mac, until)| (until > now).then_some(mac))
    }

    /// Whether traffic from `ip` at `mac` would change nothing worth the lock: a reachable entry
    /// with more than half its lifetime left (the cache is told again after that).
    pub(crate) fn confirmed<A: PartialEq + Copy>(
        entries: &[(A, EthernetAddress, Instant)],
        now: Instant,
        ip: A,
        mac: EthernetAddress,
    ) -> bool {
        entries.iter().any(|&(a, m, until)| {
            a == ip
                && m == mac
                && until.total_micros() != u64::MAX
                && until.saturating_since(now) > crate::arp::ENTRY_LIFETIME / 2
        })
    }
}
