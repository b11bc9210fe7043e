//! The neighbour cache: guest IPv4 addresses to MACs, and ARP resolution of guest addresses (RFC 826,
//! RFC 1122 §2.3.2).
//!
//! Entries are learned from ARP and from the source of the guest's IPv4 frames. When the gateway has a
//! packet for a guest address it has no MAC for, the packet waits in the entry (one packet, the most
//! recent, as RFC 1122 §2.3.2.2 allows) while ARP requests go out once a second.

use crate::time::{Duration, Instant};
use crate::wire::{EthernetAddress, Ipv4Address};

/// At most this many guest addresses are remembered; when full, the entry that expires first (or the
/// oldest unresolved one) is evicted.
pub const CAPACITY: usize = 64;
/// A learned mapping lives this long unless traffic from the guest refreshes it.
pub const ENTRY_LIFETIME: Duration = Duration::from_secs(60);
/// RFC 1122 §2.3.2.1: at most one request per second per destination.
pub const REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Requests sent before a resolution is abandoned and its packet dropped.
pub const MAX_REQUESTS: u8 = 3;

#[derive(Debug)]
enum State {
    Reachable {
        mac: EthernetAddress,
        expires_at: Instant,
    },
    Incomplete {
        requests_sent: u8,
        next_request_at: Instant,
        /// A complete Ethernet frame whose destination MAC is filled in on resolution.
        parked: Vec<u8>,
    },
}

#[derive(Debug)]
struct Entry {
    ip: Ipv4Address,
    state: State,
}

/// What a timer run asks of the stack.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollResult {
    /// Packets dropped because resolution failed.
    pub dropped: u64,
}

/// The neighbour cache.
#[derive(Debug, Default)]
pub struct NeighborCache {
    entries: Vec<Entry>,
}

impl NeighborCache {
    pub fn new() -> Self {
        NeighborCache {
            entries: Vec::with_capacity(CAPACITY),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The MAC of `ip`, if resolved and not expired.
    pub fn lookup(&self, now: Instant, ip: Ipv4Address) -> Option<EthernetAddress> {
        self.entries
            .iter()
            .find(|e| e.ip == ip)
            .and_then(|e| match e.state {
                State::Reachable { mac, expires_at } if expires_at > now => Some(mac),
                _ => None,
            })
    }

    /// Records `ip` at `mac`. If a packet was waiting for this address, it is returned with its
    /// destination MAC filled in, for the caller to send.
    pub fn fill(&mut self, now: Instant, ip: Ipv4Address, mac: EthernetAddress) -> Option<Vec<u8>> {
        let expires_at = now + ENTRY_LIFETIME;
        if let Some(e) = self.entries.iter_mut().find(|e| e.ip == ip) {
            let old = core::mem::replace(&mut e.state, State::Reachable { mac, expires_at });
            return match old {
                State::Incomplete { mut parked, .. } if !parked.is_empty() => {
                    parked[..6].copy_from_slice(&mac.0);
                    Some(parked)
                }
                _ => None,
            };
        }
        self.make_room();
        self.entries.push(Entry {
            ip,
            state: State::Reachable { mac, expires_at },
        });
        None
    }

    /// Parks `frame` until `ip` resolves, replacing any packet already waiting (counted by the caller
    /// through the return value). Returns `(request_now, replaced_a_packet)`: whether an ARP request
    /// should go out now.
    pub fn park(&mut self, now: Instant, ip: Ipv4Address, frame: &[u8]) -> (bool, bool) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.ip == ip) {
            match &mut e.state {
                State::Incomplete { parked, .. } => {
                    let replaced = !parked.is_empty();
                    parked.clear();
                    parked.extend_from_slice(frame);
                    return (false, replaced);
                }
                State::Reachable { .. } => {
                    // Expired mapping: start resolving again.
                    e.state = State::Incomplete {
                        requests_sent: 1,
                        next_request_at: now + REQUEST_INTERVAL,
                        parked: frame.to_vec(),
                    };
                    return (true, false);
                }
            }
        }
        self.make_room();
        self.entries.push(Entry {
            ip,
            state: State::Incomplete {
                requests_sent: 1,
                next_request_at: now + REQUEST_INTERVAL,
                parked: frame.to_vec(),
            },
        });
        (true, false)
    }

    /// Runs the timers: calls `request` for each address due another ARP request, forgets expired
    /// mappings and abandoned resolutions.
    pub fn poll(&mut self, now: Instant, mut request: impl FnMut(Ipv4Address)) -> PollResult {
        let mut result = PollResult::default();
        self.entries.retain_mut(|e| match &mut e.state {
            State::Reachable { expires_at, .. } => *expires_at > now,
            State::Incomplete {
                requests_sent,
                next_request_at,
                parked,
            } => {
                if *next_request_at > now {
                    return true;
                }
                if *requests_sent >= MAX_REQUESTS {
                    if !parked.is_empty() {
                        result.dropped += 1;
                    }
                    return false;
                }
                *requests_sent += 1;
                *next_request_at = now + REQUEST_INTERVAL;
                request(e.ip);
                true
            }
        });
        result
    }

    /// The next time [`NeighborCache::poll`] has work.
    pub fn poll_at(&self) -> Option<Instant> {
        self.entries
            .iter()
            .map(|e| match e.state {
                State::Reachable { expires_at, .. } => expires_at,
                State::Incomplete {
                    next_request_at, ..
                } => next_request_at,
            })
            .min()
    }

    fn make_room(&mut self) {
        if self.entries.len() < CAPACITY {
            return;
        }
        // Evict the entry whose deadline comes first: the stalest mapping or resolution.
        if let Some((i, _)) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| match e.state {
                State::Reachable { expires_at, .. } => expires_at,
                State::Incomplete {
                    next_request_at, ..
                } => next_request_at,
            })
        {
            self.entries.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
    const MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    #[test]
    fn learned_entries_expire() {
        let mut c = NeighborCache::new();
        let t0 = Instant::from_secs(10);
        assert_eq!(c.fill(t0, IP, MAC), None);
        assert_eq!(c.lookup(t0, IP), Some(MAC));
        assert_eq!(c.poll_at(), Some(t0 + ENTRY_LIFETIME));
        let later = t0 + ENTRY_LIFETIME;
        assert_eq!(c.lookup(later, IP), None);
        c.poll(later, |_| panic!("no request for a learned entry"));
        assert!(c.is_empty());
    }

    #[test]
    fn parked_packet_is_released_on_resolution() {
        let mut c = NeighborCache::new();
        let t0 = Instant::from_secs(1);
        let frame = [0u8; 20];
        assert_eq!(c.park(t0, IP, &frame), (true, false));
        // A second packet replaces the first; no second request yet (one per second).
        assert_eq!(c.park(t0, IP, &[1u8; 20]), (false, true));
        let out = c.fill(t0, IP, MAC).expect("parked frame released");
        assert_eq!(&out[..6], &MAC.0);
        assert_eq!(&out[6..], &[1u8; 14]);
        assert_eq!(c.lookup(t0, IP), Some(MAC));
    }

    #[test]
    fn resolution_retries_then_gives_up() {
        let mut c = NeighborCache::new();
        let mut t = Instant::from_secs(1);
        c.park(t, IP, &[0u8; 20]);
        let mut requests = 0;
        let mut dropped = 0;
        for _ in 0..10 {
            t = t + REQUEST_INTERVAL;
            dropped += c
                .poll(t, |ip| {
                    assert_eq!(ip, IP);
                    requests += 1;
                })
                .dropped;
        }
        // One request at park time, then MAX_REQUESTS - 1 retries.
        assert_eq!(requests, u32::from(MAX_REQUESTS) - 1);
        assert_eq!(dropped, 1);
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_is_bounded() {
        let mut c = NeighborCache::new();
        for i in 0..(CAPACITY as u32 + 10) {
            let ip = Ipv4Address::from_u32(0x0a00_0000 + i);
            c.fill(Instant::from_secs(u64::from(i)), ip, MAC);
        }
        assert_eq!(c.len(), CAPACITY);
        // The oldest entries were evicted, the newest kept.
        assert_eq!(
            c.lookup(Instant::from_secs(80), Ipv4Address::from_u32(0x0a00_0000)),
            None
        );
        let newest = Ipv4Address::from_u32(0x0a00_0000 + CAPACITY as u32 + 9);
        assert_eq!(c.lookup(Instant::from_secs(80), newest), Some(MAC));
    }
}
