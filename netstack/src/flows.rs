//! The flow table: which host socket carries which guest conversation.
//!
//! Theory of operation. A flow is created by the first packet of a guest conversation to a host
//! destination (or by a datagram arriving on an inbound port forward) and maps the guest's view
//! (`FlowKey`: guest address and port or ICMP identifier, remote address and port) to a host
//! socket. Flows are looked up by key for guest packets and by socket for host events. Every flow
//! has an idle timeout, refreshed by traffic in either direction; the table has a fixed capacity and
//! evicts the least recently used flow when a new one needs room.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::deadlines::Deadlines;
use crate::host::SocketId;
use crate::time::{Duration, Instant};
use crate::wire::IpAddress;

/// At most this many flows opened by the guest; a new one beyond it evicts the least recently
/// used of them (`flows_evicted`).
pub const MAX_FLOWS: usize = 4096;
/// At most this many flows opened by host peers through inbound forwards, counted apart: a
/// host-side flood (a port scan, many spoofed peers) evicts only its own kind, never the guest's
/// conversations.
pub const MAX_FORWARD_FLOWS: usize = 1024;
/// RFC 4787 REQ-5: a UDP mapping must not expire in less than two minutes; 180 s as passt and
/// Linux conntrack's assured UDP streams.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// RFC 5508 REQ-1: an ICMP query mapping must live at least 60 s.
pub const ICMP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A guest conversation as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKey {
    Udp {
        guest: (IpAddress, u16),
        remote: (IpAddress, u16),
    },
    IcmpEcho {
        guest: IpAddress,
        ident: u16,
        remote: IpAddress,
    },
}

impl FlowKey {
    fn idle_timeout(&self) -> Duration {
        match self {
            FlowKey::Udp { .. } => UDP_IDLE_TIMEOUT,
            FlowKey::IcmpEcho { .. } => ICMP_IDLE_TIMEOUT,
        }
    }
}

/// Who opened the flow, and so how its host side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The guest: the flow owns a socket connected to the host destination.
    Guest,
    /// A host peer through an inbound forward: replies go out of the forward's bound socket to
    /// `peer`; the socket belongs to the forward, not the flow.
    Forward { peer: SocketAddr },
}

#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub key: FlowKey,
    pub socket: SocketId,
    pub origin: Origin,
    pub last_active: Instant,
}

impl Flow {
    pub fn expires_at(&self) -> Instant {
        self.last_active + self.key.idle_timeout()
    }
}

/// Why a flow left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Expired,
    Evicted,
}

/// The table.
///
/// Expiry runs off a min-heap of deadlines (`crate::deadlines`) rather than a pass over every
/// flow per poll: each flow has one live entry (at the expiry it had when the entry was pushed,
/// `Slot::scheduled`). Traffic only moves a flow's expiry later, so nothing is pushed then: when
/// the entry comes due, a flow that has been active meanwhile is scheduled again at its real
/// expiry (one wake-up per idle timeout of an active flow). Entries of flows removed meanwhile
/// are stale; the heap never holds more than twice the flows plus 65.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<FlowKey, Slot>,
    deadlines: Deadlines<FlowKey>,
    /// Sockets owned by guest-originated flows.
    by_socket: HashMap<SocketId, FlowKey>,
    /// Forward flows by the forward's socket and the host peer.
    by_peer: HashMap<(SocketId, SocketAddr), FlowKey>,
}

#[derive(Debug)]
struct Slot {
    flow: Flow,
    /// The deadline of the flow's live entry in `deadlines`.
    scheduled: Instant,
}

impl FlowTable {
    pub fn new() -> Self {
        FlowTable::default()
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        self.flows.get_mut(key).map(|s| &mut s.flow)
    }

    pub fn by_socket(&self, sock: SocketId) -> Option<FlowKey> {
        self.by_socket.get(&sock).copied()
    }

    /// The forward flow of `peer` on listener `sock`, if any.
    pub fn forward_flow(&self, sock: SocketId, peer: SocketAddr) -> Option<FlowKey> {
        self.by_peer.get(&(sock, peer)).copied()
    }

    /// Forward flows in the table.
    pub fn forward_len(&self) -> usize {
        self.by_peer.len()
    }

    /// Inserts a flow; when its kind (guest or forward) is at its bound, the least recently used
    /// flow of that kind is evicted first and returned, for the caller to close its socket.
    pub fn insert(&mut self, flow: Flow) -> Option<Flow> {
        let forward = matches!(flow.origin, Origin::Forward { .. });
        let (count, bound) = if forward {
            (self.by_peer.len(), MAX_FORWARD_FLOWS)
        } else {
            (self.flows.len() - self.by_peer.len(), MAX_FLOWS)
        };
        let evicted = if count >= bound && !self.flows.contains_key(&flow.key) {
            let lru = self
                .flows
                .values()
                .map(|s| &s.flow)
                .filter(|f| matches!(f.origin, Origin::Forward { .. }) == forward)
                .min_by_key(|f| f.last_active)
                .map(|f| f.key);
            lru.and_then(|k| self.remove(&k))
        } else {
            None
        };
        // The same key again replaces the flow (and its indexes).
        self.remove(&flow.key);
        match flow.origin {
            Origin::Guest => {
                self.by_socket.insert(flow.socket, flow.key);
            }
            Origin::Forward { peer } => {
                self.by_peer.insert((flow.socket, peer), flow.key);
            }
        }
        let scheduled = flow.expires_at();
        self.deadlines.push(scheduled, flow.key);
        self.flows.insert(flow.key, Slot { flow, scheduled });
        self.compact();
        evicted
    }

    /// Drops the stale heap entries once they outnumber the flows (amortized: the heap then
    /// holds only live ones).
    fn compact(&mut self) {
        let flows = &self.flows;
        self.deadlines.compact(flows.len(), |key, at| {
            flows.get(key).is_some_and(|s| s.scheduled == at)
        });
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<Flow> {
        let flow = self.flows.remove(key)?.flow;
        self.compact();
        match flow.origin {
            Origin::Guest => {
                self.by_socket.remove(&flow.socket);
            }
            Origin::Forward { peer } => {
                self.by_peer.remove(&(flow.socket, peer));
            }
        }
        Some(flow)
    }

    /// Removes the flows carried by `socket` (a forward's, going away); returns how many.
    pub fn remove_by_socket(&mut self, socket: SocketId) -> usize {
        let keys: Vec<FlowKey> = self
            .flows
            .values()
            .filter(|s| s.flow.socket == socket)
            .map(|s| s.flow.key)
            .collect();
        for k in &keys {
            self.remove(k);
        }
        keys.len()
    }

    /// Removes the flows idle past their timeout, handing each to `gone`.
    pub fn expire(&mut self, now: Instant, mut gone: impl FnMut(Flow)) {
        // Each pass pops an entry; what is pushed again lies after `now`.
        while let Some((at, key)) = self.deadlines.pop_due(now) {
            let Some(slot) = self.flows.get_mut(&key) else {
                continue;
            };
            if slot.scheduled != at {
                continue;
            }
            let expires = slot.flow.expires_at();
            if expires > now {
                // Active since: due again at its real expiry.
                slot.scheduled = expires;
                self.deadlines.push(expires, key);
                continue;
            }
            if let Some(f) = self.remove(&key) {
                gone(f);
            }
        }
    }

    /// When [`FlowTable::expire`] next has work: the earliest entry of the heap (a flow active
    /// since may turn out not to be due yet).
    pub fn poll_at(&self) -> Option<Instant> {
        self.deadlines.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv4Address;

    fn udp(port: u16) -> FlowKey {
        FlowKey::Udp {
            guest: (Ipv4Address::new(10, 0, 2, 15).into(), port),
            remote: (Ipv4Address::new(127, 0, 0, 1).into(), 53),
        }
    }

    fn flow(port: u16, sock: u32, t: u64) -> Flow {
        Flow {
            key: udp(port),
            socket: SocketId(sock),
            origin: Origin::Guest,
            last_active: Instant::from_secs(t),
        }
    }

    #[test]
    fn lookup_by_key_and_socket_and_expiry() {
        let mut t = FlowTable::new();
        assert!(t.insert(flow(1000, 7, 10)).is_none());
        assert_eq!(t.by_socket(SocketId(7)), Some(udp(1000)));
        assert_eq!(t.poll_at(), Some(Instant::from_secs(10) + UDP_IDLE_TIMEOUT));
        t.get_mut(&udp(1000)).unwrap().last_active = Instant::from_secs(100);
        let mut gone = Vec::new();
        t.expire(Instant::from_secs(10) + UDP_IDLE_TIMEOUT, |f| {
            gone.push(f.key)
        });
        assert!(gone.is_empty(), "refreshed flows stay");
        t.expire(Instant::from_secs(100) + UDP_IDLE_TIMEOUT, |f| {
            gone.push(f.key)
        });
        assert_eq!(gone, vec![udp(1000)]);
        assert!(t.is_empty());
        assert_eq!(t.by_socket(SocketId(7)), None);
    }

    #[test]
    fn the_deadline_heap_stays_bounded_under_churn() {
        let mut t = FlowTable::new();
        // Flows come and go far faster than they expire: their entries go stale.
        for round in 0..100u32 {
            for i in 0..50u16 {
                t.insert(flow(i, round * 100 + u32::from(i), u64::from(round)));
            }
            for i in 0..50u16 {
                t.remove(&udp(i));
            }
            assert!(t.deadlines.len() <= 2 * t.len() + crate::deadlines::COMPACT_SLACK + 1);
        }
        // A live flow keeps its entry through compactions and expires on time.
        t.insert(flow(7, 1, 500));
        for i in 0..200u16 {
            t.insert(flow(1000 + i, 2000 + u32::from(i), 500));
            t.remove(&udp(1000 + i));
        }
        let mut gone = Vec::new();
        t.expire(Instant::from_secs(500) + UDP_IDLE_TIMEOUT, |f| {
            gone.push(f.key)
        });
        assert_eq!(gone, vec![udp(7)]);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_evicts_the_least_recently_used() {
        let mut t = FlowTable::new();
        for i in 0..MAX_FLOWS {
            t.insert(flow(i as u16, i as u32, 1000 + i as u64));
        }
        let evicted = t.insert(flow(60000, 99999, 9999)).expect("eviction");
        assert_eq!(evicted.key, udp(0));
        assert_eq!(t.len(), MAX_FLOWS);
        assert_eq!(t.by_socket(SocketId(0)), None);
    }

    #[test]
    fn a_flood_of_forward_flows_never_evicts_the_guests() {
        let mut t = FlowTable::new();
        for i in 0..10 {
            t.insert(flow(1000 + i, u32::from(i), 1));
        }
        // A host-side port scan through a forward: thousands of peers, newer than the guest's.
        let mut evicted = 0;
        for i in 0..5000u16 {
            let peer = SocketAddr::from(([127, 0, 0, 1], 20000 + i));
            let key = FlowKey::Udp {
                guest: (Ipv4Address::new(10, 0, 2, 15).into(), 53),
                remote: (Ipv4Address::new(10, 0, 2, 2).into(), 20000 + i),
            };
            let old = t.insert(Flow {
                key,
                socket: SocketId(500),
                origin: Origin::Forward { peer },
                last_active: Instant::from_secs(100 + u64::from(i)),
            });
            if let Some(old) = old {
                assert!(matches!(old.origin, Origin::Forward { .. }));
                evicted += 1;
            }
        }
        assert_eq!(t.forward_len(), MAX_FORWARD_FLOWS);
        assert_eq!(evicted, 5000 - MAX_FORWARD_FLOWS);
        for i in 0..10 {
            assert!(
                t.get_mut(&udp(1000 + i)).is_some(),
                "guest flow {i} evicted"
            );
        }
        assert_eq!(t.len(), 10 + MAX_FORWARD_FLOWS);
    }

    #[test]
    fn forward_flows_do_not_own_their_socket() {
        let mut t = FlowTable::new();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        t.insert(Flow {
            key: udp(53),
            socket: SocketId(3),
            origin: Origin::Forward { peer },
            last_active: Instant::ZERO,
        });
        assert_eq!(t.by_socket(SocketId(3)), None);
        assert_eq!(t.forward_flow(SocketId(3), peer), Some(udp(53)));
    }
}
