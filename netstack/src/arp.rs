//! The neighbour cache: guest addresses (IPv4 for ARP, RFC 826 and RFC 1122 §2.3.2; IPv6 for
//! Neighbor Discovery, RFC 4861 §7.3) to MACs, with neighbour unreachability detection.
//!
//! Entries are learned from ARP/NDP and from the source of the guest's frames. When the gateway
//! has a packet for an address it has no MAC for, the packet waits in the entry (one packet, the
//! most recent, as RFC 1122 §2.3.2.2 and RFC 4861 §7.2.2 allow) while requests go out once a
//! second. A mapping not confirmed for `ENTRY_LIFETIME` becomes stale (RFC 4861 §7.3.2): still
//! used, but its first use starts a probe, and when `MAX_REQUESTS` unicast probes go unanswered
//! the entry is removed — so a guest that changes its MAC (or leaves) is noticed without
//! dropping traffic to one that is still there.

use crate::time::{Duration, Instant};
use core::fmt::Debug;

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
/// RFC 4861 §10 DELAY_FIRST_PROBE_TIME: a stale entry in use is probed this long after.
pub const PROBE_DELAY: Duration = Duration::from_secs(5);
/// Stale entries nobody uses are forgotten after this long.
pub const STALE_LIFETIME: Duration = Duration::from_secs(600);

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
    /// Not confirmed lately; used as is until the first use starts a probe.
    Stale {
        mac: EthernetAddress,
        forget_at: Instant,
    },
    /// In use while unconfirmed: unicast probes from `next_probe_at` (RFC 4861 DELAY, PROBE).
    Probe {
        mac: EthernetAddress,
        probes_sent: u8,
        next_probe_at: Instant,
    },
}

impl State {
    /// When the entry next needs the timer.
    fn deadline(&self) -> Instant {
        match *self {
            State::Reachable { expires_at, .. } => expires_at,
            State::Incomplete {
                next_request_at, ..
            } => next_request_at,
            State::Stale { forget_at, .. } => forget_at,
            State::Probe { next_probe_at, .. } => next_probe_at,
        }
    }
}

#[derive(Debug)]
struct Entry<A> {
    ip: A,
    state: State,
}

/// What a timer run asks of the stack.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollResult {
    /// Packets dropped because resolution failed.
    pub dropped: u64,
}

/// The neighbour cache, for IPv4 (`Ipv4Address`) or IPv6 addresses.
#[derive(Debug)]
pub struct NeighborCache<A = Ipv4Address> {
    entries: Vec<Entry<A>>,
}

impl<A> Default for NeighborCache<A> {
    fn default() -> Self {
        NeighborCache {
            entries: Vec::new(),
        }
    }
}

impl<A: Copy + Eq + Debug> NeighborCache<A> {
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

    /// The MAC to send to `ip`, if known. Using a stale entry starts its probe (RFC 4861 §7.3.3:
    /// STALE to DELAY).
    pub fn lookup(&mut self, now: Instant, ip: A) -> Option<EthernetAddress> {
        let e = self.entries.iter_mut().find(|e| e.ip == ip)?;
        match e.state {
            State::Reachable { mac, expires_at } if expires_at > now => Some(mac),
            State::Reachable { mac, .. } | State::Stale { mac, .. } => {
                e.state = State::Probe {
                    mac,
                    probes_sent: 0,
                    next_probe_at: now + PROBE_DELAY,
                };
                Some(mac)
            }
            State::Probe { mac, .. } => Some(mac),
            State::Incomplete { .. } => None,
        }
    }

    /// The mappings [`NeighborCache::lookup`] would return without changing anything, with the
    /// instant until which that holds (a reachable entry's expiry; a probing entry's until the
    /// probe's outcome changes the cache): what a shard may use without the link's lock.
    pub fn usable(&self, out: &mut Vec<(A, EthernetAddress, Instant)>) {
        out.clear();
        out.extend(self.entries.iter().filter_map(|e| match e.state {
            State::Reachable { mac, expires_at } => Some((e.ip, mac, expires_at)),
            State::Probe { mac, .. } => Some((e.ip, mac, Instant::from_micros(u64::MAX))),
            State::Incomplete { .. } | State::Stale { .. } => None,
        }));
    }

    /// Whether `ip` has a confirmed mapping (no probe pending).
    pub fn is_reachable(&self, now: Instant, ip: A) -> bool {
        self.entries.iter().any(|e| {
            e.ip == ip && matches!(e.state, State::Reachable { expires_at, .. } if expires_at > now)
        })
    }

    /// Records `ip` at `mac`. If a packet was waiting for this address, it is returned with its
    /// destination MAC filled in, for the caller to send.
    pub fn fill(&mut self, now: Instant, ip: A, mac: EthernetAddress) -> Option<Vec<u8>> {
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
    pub fn park(&mut self, now: Instant, ip: A, frame: &[u8]) -> (bool, bool) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.ip == ip) {
            match &mut e.state {
                State::Incomplete { parked, .. } => {
                    let replaced = !parked.is_empty();
                    parked.clear();
                    parked.extend_from_slice(frame);
                    return (false, replaced);
                }
                State::Reachable { .. } | State::Stale { .. } | State::Probe { .. } => {
                    // A mapping the caller chose not to use: resolve it again.
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

    /// Runs the timers: calls `request` for each address due another request (with the MAC to
    /// probe unicast, or `None` for a broadcast/multicast resolution), turns unconfirmed mappings
    /// stale, forgets unused stale ones and those whose probes or resolution went unanswered.
    pub fn poll(
        &mut self,
        now: Instant,
        mut request: impl FnMut(A, Option<EthernetAddress>),
    ) -> PollResult {
        let mut result = PollResult::default();
        self.entries.retain_mut(|e| match &mut e.state {
            State::Reachable { expires_at, mac } => {
                if *expires_at <= now {
                    e.state = State::Stale {
                        mac: *mac,
                        forget_at: now + STALE_LIFETIME,
                    };
                }
                true
            }
            State::Stale { forget_at, .. } => *forget_at > now,
            State::Probe {
                mac,
                probes_sent,
                next_probe_at,
            } => {
                if *next_probe_at > now {
                    return true;
                }
                if *probes_sent >= MAX_REQUESTS {
                    return false;
                }
                *probes_sent += 1;
                *next_probe_at = now + REQUEST_INTERVAL;
                request(e.ip, Some(*mac));
                true
            }
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
                request(e.ip, None);
                true
            }
        });
        result
    }

    /// The next time [`NeighborCache::poll`] has work.
    pub fn poll_at(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.state.deadline()).min()
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
            .min_by_key(|(_, e)| e.state.deadline())
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
    fn unconfirmed_entries_go_stale_then_are_probed_when_used() {
        let mut c = NeighborCache::<Ipv4Address>::new();
        let t0 = Instant::from_secs(10);
        assert_eq!(c.fill(t0, IP, MAC), None);
        assert_eq!(c.lookup(t0, IP), Some(MAC));
        assert_eq!(c.poll_at(), Some(t0 + ENTRY_LIFETIME));
        let later = t0 + ENTRY_LIFETIME;
        c.poll(later, |_, _| panic!("no request for an unused entry"));
        assert!(!c.is_reachable(later, IP));
        // Still used; the use schedules unicast probes after the delay.
        assert_eq!(c.lookup(later, IP), Some(MAC));
        let mut probes = Vec::new();
        let mut t = later + PROBE_DELAY;
        for _ in 0..=MAX_REQUESTS {
            c.poll(t, |ip, mac| probes.push((ip, mac)));
            t = t + REQUEST_INTERVAL;
        }
        assert_eq!(probes, vec![(IP, Some(MAC)); usize::from(MAX_REQUESTS)]);
        assert!(c.is_empty(), "unanswered probes remove the entry");
    }

    #[test]
    fn an_answer_to_a_probe_confirms_the_entry() {
        let mut c = NeighborCache::<Ipv4Address>::new();
        let t0 = Instant::from_secs(1);
        c.fill(t0, IP, MAC);
        let t1 = t0 + ENTRY_LIFETIME;
        c.poll(t1, |_, _| {});
        c.lookup(t1, IP);
        c.poll(t1 + PROBE_DELAY, |_, _| {});
        c.fill(t1 + PROBE_DELAY, IP, MAC);
        assert!(c.is_reachable(t1 + PROBE_DELAY, IP));
        // Unused stale entries are forgotten eventually.
        let t2 = t1 + PROBE_DELAY + ENTRY_LIFETIME;
        c.poll(t2, |_, _| {});
        c.poll(t2 + STALE_LIFETIME, |_, _| {});
        assert!(c.is_empty());
    }

    #[test]
    fn parked_packet_is_released_on_resolution() {
        let mut c = NeighborCache::<Ipv4Address>::new();
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
        let mut c = NeighborCache::<Ipv4Address>::new();
        let mut t = Instant::from_secs(1);
        c.park(t, IP, &[0u8; 20]);
        let mut requests = 0;
        let mut dropped = 0;
        for _ in 0..10 {
            t = t + REQUEST_INTERVAL;
            dropped += c
                .poll(t, |ip, mac| {
                    assert_eq!((ip, mac), (IP, None));
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
        let mut c = NeighborCache::<Ipv4Address>::new();
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
