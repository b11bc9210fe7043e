//! The multicast querier and the guest's group memberships, for both families: IGMPv3
//! (RFC 3376) and MLDv2 (RFC 3810), with the older versions' reports understood.
//!
//! A router on a link queries it so that hosts report their groups (`--no-mcast-querier` turns it
//! off; `--mcast-query-interval` sets the Query Interval, 125 s by default, RFC 3376 §8.2):
//! - general queries: at start-up (the guest's first frame of the family) twice a quarter
//!   interval apart (Startup Query Count and Interval, §8.6-8.7), then every interval; IGMPv3 to
//!   224.0.0.1 with TTL 1 and Router Alert (RFC 2113) from the gateway's address; MLDv2 to ff02::1
//!   from fe80::2 with hop limit 1 and a Hop-by-Hop Router Alert (RFC 2711), as §5.1.14 asks.
//! - group-specific queries when the guest leaves a group (IGMPv2 Leave, MLDv1 Done, or a
//!   version-3/2 record that leaves no source): Last Member Query Count 2, one second apart
//!   (§8.8-8.9); without a report in that time the membership is gone.
//!
//! The table holds, per family and group, the guest's filter mode and sources as its last
//! records said (the guest is the only host on the link, so §6.4's merging of several hosts'
//! states reduces to taking the guest's own). A membership nobody refreshes expires after the
//! Group Membership Interval (2 × interval + 10 s, §8.4).
//!
//! Bounds: [`MAX_GROUPS`] groups per family and [`MAX_SOURCES`] sources per group; reports beyond
//! them are counted (`drop_multicast_table_full`) and the rest of the report still applies.

use crate::time::{Duration, Instant};
use crate::wire::craft;
use crate::wire::{read_u16, IpAddress, Ipv4Address, Ipv6Address};

/// The most groups tracked per family.
pub const MAX_GROUPS: usize = 64;
/// The most sources tracked per group.
pub const MAX_SOURCES: usize = 16;
/// The default Query Interval (RFC 3376 §8.2, RFC 3810 §9.2).
pub const DEFAULT_QUERY_INTERVAL: Duration = Duration::from_secs(125);
/// Query Response Interval of general queries (§8.3): 10 s.
const RESPONSE_INTERVAL: Duration = Duration::from_secs(10);
/// Last Member Query Interval (§8.8) and Count (§8.9).
const LAST_MEMBER_INTERVAL: Duration = Duration::from_secs(1);
const LAST_MEMBER_COUNT: u8 = 2;
/// Startup Query Count (§8.7).
const STARTUP_COUNT: u8 = 2;

/// INCLUDE (only these sources) or EXCLUDE (all but these; none listed: any source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    Include,
    Exclude,
}

/// The guest's membership of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub group: IpAddress,
    pub mode: FilterMode,
    pub sources: Vec<IpAddress>,
    /// When it lapses unless reported again.
    pub expires: Instant,
}

/// A query the querier wants sent now: general (`group` None) or for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub group: Option<IpAddress>,
    /// Maximum Response Time.
    pub max_response: Duration,
}

/// What the querier counted while handling a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    pub records: u64,
    pub leaves: u64,
    pub table_full: u64,
}

/// One family's querier state.
#[derive(Debug, Default)]
pub(crate) struct FamilyQuerier {
    /// The next general query; `None` until the guest first speaks this family.
    next_general: Option<Instant>,
    startup_left: u8,
    /// Group-specific queries still to send: (group, sends left, next send).
    specific: Vec<(IpAddress, u8, Instant)>,
    groups: Vec<Membership>,
}

#[derive(Debug)]
pub(crate) struct Querier {
    pub(crate) enabled: bool,
    pub(crate) interval: Duration,
    pub(crate) v4: FamilyQuerier,
    pub(crate) v6: FamilyQuerier,
}

impl Querier {
    pub(crate) fn new(enabled: bool, interval: Duration) -> Self {
        Querier {
            enabled,
            interval,
            v4: FamilyQuerier::default(),
            v6: FamilyQuerier::default(),
        }
    }

    /// Group Membership Interval (§8.4): robustness 2.
    fn membership_interval(&self) -> Duration {
        self.interval + self.interval + RESPONSE_INTERVAL
    }

    pub(crate) fn family(&mut self, v6: bool) -> &mut FamilyQuerier {
        if v6 {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }

    /// The guest spoke this family: start querying it (once; a second after, so that its stack
    /// is up).
    /// Whether [`Querier::guest_spoke`] would start the querier for the family.
    pub(crate) fn awaits_guest(&self, v6: bool) -> bool {
        self.enabled && if v6 { &self.v6 } else { &self.v4 }.next_general.is_none()
    }

    pub(crate) fn guest_spoke(&mut self, v6: bool, now: Instant) {
        let enabled = self.enabled;
        let f = self.family(v6);
        if enabled && f.next_general.is_none() {
            f.next_general = Some(now + Duration::from_secs(1));
            f.startup_left = STARTUP_COUNT;
        }
    }

    pub(crate) fn poll_at(&self) -> Option<Instant> {
        [&self.v4, &self.v6]
            .into_iter()
            .flat_map(|f| {
                f.next_general
                    .into_iter()
                    .chain(f.specific.iter().map(|s| s.2))
                    .chain(f.groups.iter().map(|g| g.expires))
            })
            .min()
    }

    /// The queries due at `now` for one family; memberships that lapsed are dropped.
    pub(crate) fn due(&mut self, v6: bool, now: Instant, out: &mut Vec<Query>) {
        let interval = self.interval;
        let f = self.family(v6);
        if f.next_general.is_some_and(|t| t <= now) {
            out.push(Query {
                group: None,
                max_response: RESPONSE_INTERVAL,
            });
            let gap = if f.startup_left > 1 {
                f.startup_left -= 1;
                interval / 4
            } else {
                f.startup_left = 0;
                interval
            };
            f.next_general = Some(now + gap);
        }
        f.specific.retain_mut(|(group, left, at)| {
            if *at > now {
                return true;
            }
            out.push(Query {
                group: Some(*group),
                max_response: LAST_MEMBER_INTERVAL,
            });
            *left -= 1;
            *at = now + LAST_MEMBER_INTERVAL;
            *left > 0
        });
        f.groups.retain(|g| g.expires > now);
    }

    /// The guest left `group` (or may have): ask whether anyone still wants it, and let the
    /// membership lapse after the Last Member Query Time unless a report renews it.
    fn leaving(&mut self, v6: bool, group: IpAddress, now: Instant) {
        let enabled = self.enabled;
        let f = self.family(v6);
        if let Some(g) = f.groups.iter_mut().find(|g| g.group == group) {
            let lapse = now + LAST_MEMBER_INTERVAL * u32::from(LAST_MEMBER_COUNT);
            g.expires = g.expires.min(lapse);
        }
        if enabled && !f.specific.iter().any(|s| s.0 == group) {
            f.specific.push((group, LAST_MEMBER_COUNT, now));
        }
    }

    /// Applies one record of a report: `kind` is the IGMPv3/MLDv2 record type (1 IS_IN, 2 IS_EX,
    /// 3 TO_IN, 4 TO_EX, 5 ALLOW, 6 BLOCK); a version 1/2 report is IS_EX with no sources.
    fn record(
        &mut self,
        v6: bool,
        now: Instant,
        kind: u8,
        group: IpAddress,
        sources: &[IpAddress],
        out: &mut ReportOutcome,
    ) {
        out.records += 1;
        let expires = now + self.membership_interval();
        let f = self.family(v6);
        // A report for a group being asked about answers the question.
        f.specific.retain(|s| s.0 != group);
        let at = match f.groups.iter().position(|g| g.group == group) {
            Some(i) => i,
            None => {
                if matches!(kind, 3 | 6) && sources.is_empty() {
                    return; // leaving a group we never saw joined
                }
                if f.groups.len() == MAX_GROUPS {
                    out.table_full += 1;
                    return;
                }
                f.groups.push(Membership {
                    group,
                    mode: FilterMode::Include,
                    sources: Vec::new(),
                    expires,
                });
                f.groups.len() - 1
            }
        };
        let g = &mut f.groups[at];
        g.expires = expires;
        let mut add = |g: &mut Membership, s: &IpAddress| {
            if !g.sources.contains(s) {
                if g.sources.len() == MAX_SOURCES {
                    out.table_full += 1;
                } else {
                    g.sources.push(*s);
                }
            }
        };
        match kind {
            1 | 3 => {
                g.mode = FilterMode::Include;
                g.sources.clear();
                sources.iter().for_each(|s| add(g, s));
            }
            2 | 4 => {
                g.mode = FilterMode::Exclude;
                g.sources.clear();
                sources.iter().for_each(|s| add(g, s));
            }
            5 => match g.mode {
                FilterMode::Include => sources.iter().for_each(|s| add(g, s)),
                FilterMode::Exclude => g.sources.retain(|s| !sources.contains(s)),
            },
            6 => match g.mode {
                FilterMode::Include => g.sources.retain(|s| !sources.contains(s)),
                FilterMode::Exclude => sources.iter().for_each(|s| add(g, s)),
            },
            _ => {}
        }
        if g.mode == FilterMode::Include && g.sources.is_empty() {
            out.leaves += 1;
            self.leaving(v6, group, now);
        }
    }

    /// An IGMP message from the guest (checksum verified by the caller).
    pub(crate) fn igmp(&mut self, now: Instant, msg: &[u8]) -> ReportOutcome {
        let mut out = ReportOutcome::default();
        let group = |at: usize| -> Option<IpAddress> {
            Some(IpAddress::V4(Ipv4Address::from_bytes(msg.get(at..at + 4)?)))
        };
        match msg[0] {
            // v1 and v2 reports: membership of any source.
            0x12 | 0x16 => {
                if let Some(g) = group(4) {
                    self.record(false, now, 2, g, &[], &mut out);
                }
            }
            0x17 => {
                if let Some(g) = group(4) {
                    out.leaves += 1;
                    self.leaving(false, g, now);
                }
            }
            0x22 => {
                let count = usize::from(read_u16(msg, 6));
                self.records(false, now, msg.get(8..).unwrap_or(&[]), count, &mut out);
            }
            _ => {}
        }
        out
    }

    /// An MLD message body (after the ICMPv6 type, code and checksum): `msg_type` 131 (v1
    /// report), 132 (v1 done) or 143 (v2 report).
    pub(crate) fn mld(&mut self, now: Instant, msg_type: u8, body: &[u8]) -> ReportOutcome {
        let mut out = ReportOutcome::default();
        let addr = |at: usize| -> Option<IpAddress> {
            Some(IpAddress::V6(Ipv6Address::from_bytes(
                body.get(at..at + 16)?,
            )))
        };
        match msg_type {
            131 => {
                if let Some(g) = addr(4) {
                    self.record(true, now, 2, g, &[], &mut out);
                }
            }
            132 => {
                if let Some(g) = addr(4) {
                    out.leaves += 1;
                    self.leaving(true, g, now);
                }
            }
            143 => {
                let count = usize::from(body.get(2..4).map_or(0, |b| read_u16(b, 0)));
                self.records(true, now, body.get(4..).unwrap_or(&[]), count, &mut out);
            }
            _ => {}
        }
        out
    }

    /// The `count` group records of an IGMPv3 or MLDv2 report (RFC 3376 §4.2.4, RFC 3810
    /// §5.2.4): type, aux data length, number of sources, the group, its sources, the aux data;
    /// addresses of 4 bytes (IPv4) or 16 (IPv6). A truncated record ends the walk.
    fn records(
        &mut self,
        v6: bool,
        now: Instant,
        mut rest: &[u8],
        count: usize,
        out: &mut ReportOutcome,
    ) {
        let len = if v6 { 16 } else { 4 };
        let addr = |b: &[u8]| {
            if v6 {
                IpAddress::V6(Ipv6Address::from_bytes(b))
            } else {
                IpAddress::V4(Ipv4Address::from_bytes(b))
            }
        };
        for _ in 0..count {
            let Some(&[kind, aux, s0, s1]) = rest.get(..4) else {
                break;
            };
            let sources_at = 4 + len;
            let sources_end = sources_at + len * usize::from(u16::from_be_bytes([s0, s1]));
            let (Some(group), Some(sources)) =
                (rest.get(4..sources_at), rest.get(sources_at..sources_end))
            else {
                break;
            };
            let sources: Vec<IpAddress> = sources.chunks(len).map(addr).collect();
            self.record(v6, now, kind, addr(group), &sources, out);
            rest = rest
                .get(sources_end + 4 * usize::from(aux)..)
                .unwrap_or(&[]);
        }
    }

    /// The guest's memberships of one family.
    pub(crate) fn groups(&self, v6: bool) -> &[Membership] {
        if v6 {
            &self.v6.groups
        } else {
            &self.v4.groups
        }
    }
}

/// A time as an IGMPv3 QQIC or Max Resp Code (RFC 3376 §4.1.1, §4.1.7): literal below 128 units,
/// else a floating-point form (mantissa 4 bits, exponent 3 bits), rounded down.
fn code8(units: u64) -> u8 {
    if units < 128 {
        return units as u8;
    }
    let units = units.min(31744);
    let exp = (0..8u32)
        .rev()
        .find(|e| units >= (0x10u64 << (e + 3)))
        .unwrap_or(0);
    let mant = ((units >> (exp + 3)) & 0x0f) as u8;
    0x80 | ((exp as u8) << 4) | mant
}

/// An IGMPv3 query from the gateway: general to 224.0.0.1, or group-specific to the group; TTL 1,
/// Router Alert, precedence Internetwork Control (RFC 3376 §4.1, §4.1.12).
pub fn igmp_query_frame(
    gateway_mac: crate::wire::EthernetAddress,
    gateway: Ipv4Address,
    q: &Query,
    interval: Duration,
) -> Vec<u8> {
    let group = match q.group {
        Some(IpAddress::V4(g)) => g,
        _ => Ipv4Address::UNSPECIFIED,
    };
    let dst = if group.is_unspecified() {
        Ipv4Address::new(224, 0, 0, 1)
    } else {
        group
    };
    let mut msg = vec![0x11, code8(q.max_response.total_micros() / 100_000), 0, 0];
    msg.extend_from_slice(&group.0);
    // S flag 0, QRV 2, QQIC, no sources.
    msg.extend_from_slice(&[2, code8(interval.total_secs()), 0, 0]);
    let sum = crate::wire::checksum::compute(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut h = craft::Ipv4Header::new(gateway, dst, 2);
    h.ttl = 1;
    h.tos = 0xc0;
    h.options = vec![0x94, 4, 0, 0];
    let mac = crate::wire::EthernetAddress([0x01, 0x00, 0x5e, dst.0[1] & 0x7f, dst.0[2], dst.0[3]]);
    craft::ethernet(mac, gateway_mac, 0x0800, &h.emit(&msg))
}

/// An MLDv2 query from the gateway's link-local address `src` (RFC 3810 §5.1.14: hosts ignore
/// queries from other sources):
/// general to ff02::1, or address-specific to the address; hop limit 1, Hop-by-Hop Router Alert.
pub fn mld_query_frame(
    gateway_mac: crate::wire::EthernetAddress,
    src: Ipv6Address,
    q: &Query,
    interval: Duration,
) -> Vec<u8> {
    let group = match q.group {
        Some(IpAddress::V6(g)) => g,
        _ => Ipv6Address::UNSPECIFIED,
    };
    let dst = if group.is_unspecified() {
        Ipv6Address::ALL_NODES
    } else {
        group
    };
    // Max Response Code in milliseconds (literal below 32768, §5.1.3).
    let max_resp = q.max_response.total_micros() / 1000;
    let rest = (max_resp.min(32767) as u16).to_be_bytes();
    let mut body = group.0.to_vec();
    body.extend_from_slice(&[2, code8(interval.total_secs()), 0, 0]);
    let icmp = craft::icmpv6(130, 0, [rest[0], rest[1], 0, 0], &body, src, dst);
    let mut payload = craft::options_header(58, &[5, 2, 0, 0]);
    payload.extend_from_slice(&icmp);
    let mut h = craft::Ipv6Header::new(src, dst, 0);
    h.hop_limit = 1;
    craft::ethernet(dst.multicast_mac(), gateway_mac, 0x86dd, &h.emit(&payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g4(d: u8) -> IpAddress {
        IpAddress::V4(Ipv4Address::new(239, 1, 1, d))
    }

    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn general_queries_start_when_the_guest_speaks_then_follow_the_interval() {
        let mut q = Querier::new(true, Duration::from_secs(100));
        assert_eq!(q.poll_at(), None);
        q.guest_spoke(false, t(0));
        let mut out = Vec::new();
        let mut times = Vec::new();
        for s in 0..300 {
            q.due(false, t(s), &mut out);
            if out.drain(..).any(|x| x.group.is_none()) {
                times.push(s);
            }
        }
        // 1 s after, a quarter interval later (start-up), then every interval.
        assert_eq!(times, [1, 26, 126, 226]);
        let mut off = Querier::new(false, Duration::from_secs(100));
        off.guest_spoke(true, t(0));
        assert_eq!(off.poll_at(), None);
    }

    #[test]
    fn igmpv3_records_build_the_table_and_a_leave_is_queried_then_lapses() {
        let mut q = Querier::new(true, DEFAULT_QUERY_INTERVAL);
        // Report: TO_EX({}) for .1, IS_IN({10.0.2.2}) for .2.
        let mut r = vec![0x22, 0, 0, 0, 0, 0, 0, 2];
        r.extend([4, 0, 0, 0, 239, 1, 1, 1]);
        r.extend([1, 0, 0, 1, 239, 1, 1, 2, 10, 0, 2, 2]);
        let o = q.igmp(t(0), &r);
        assert_eq!((o.records, o.leaves), (2, 0));
        let groups = q.groups(false);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].mode, FilterMode::Exclude);
        assert_eq!(
            groups[1].sources,
            [IpAddress::V4(Ipv4Address::new(10, 0, 2, 2))]
        );
        // BLOCK the only source of .2: a leave, queried twice a second apart, then gone.
        let block = [
            0x22, 0, 0, 0, 0, 0, 0, 1, 6, 0, 0, 1, 239, 1, 1, 2, 10, 0, 2, 2,
        ];
        assert_eq!(q.igmp(t(10), &block).leaves, 1);
        let mut out = Vec::new();
        for s in 10..=13 {
            q.due(false, t(s), &mut out);
        }
        let specific: Vec<_> = out.iter().filter(|x| x.group == Some(g4(2))).collect();
        assert_eq!(specific.len(), 2);
        assert_eq!(q.groups(false).len(), 1);
        // An IGMPv2 leave of .1 with a report in time keeps it.
        q.igmp(t(20), &[0x17, 0, 0, 0, 239, 1, 1, 1]);
        q.igmp(t(21), &[0x16, 0, 0, 0, 239, 1, 1, 1]);
        q.due(false, t(25), &mut out);
        assert_eq!(q.groups(false).len(), 1);
        // Unrefreshed memberships lapse after the Group Membership Interval.
        q.due(false, t(21 + 261), &mut out);
        assert!(q.groups(false).is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut q = Querier::new(true, DEFAULT_QUERY_INTERVAL);
        let mut full = 0;
        for i in 0..MAX_GROUPS + 3 {
            let msg = [0x16, 0, 0, 0, 239, 2, (i / 256) as u8, i as u8];
            full += q.igmp(t(0), &msg).table_full;
        }
        assert_eq!((q.groups(false).len(), full), (MAX_GROUPS, 3));
        // Sources beyond the bound are counted too.
        let mut r = vec![0x22, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 20, 239, 3, 0, 1];
        for i in 0..20u8 {
            r.extend([10, 0, 0, i]);
        }
        let mut q = Querier::new(true, DEFAULT_QUERY_INTERVAL);
        assert_eq!(q.igmp(t(0), &r).table_full, 4);
        assert_eq!(q.groups(false)[0].sources.len(), MAX_SOURCES);
        // Truncated records stop the walk without a panic.
        assert_eq!(q.igmp(t(0), &r[..30]).records, 0);
    }

    #[test]
    fn query_codes_and_frames() {
        assert_eq!(code8(125), 125);
        // 0x80 | exp << 4 | mant stands for (mant | 0x10) << (exp + 3).
        for v in [128u64, 200, 1000, 31744] {
            let c = code8(v);
            let back = u64::from((c & 0x0f) | 0x10) << (((c >> 4) & 7) + 3);
            assert!(
                back <= v && v - back < back / 8 + 8,
                "{v} -> {c:#x} -> {back}"
            );
        }
        let q = Query {
            group: None,
            max_response: RESPONSE_INTERVAL,
        };
        let mac = crate::wire::EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
        let f = igmp_query_frame(
            mac,
            Ipv4Address::new(10, 0, 2, 2),
            &q,
            DEFAULT_QUERY_INTERVAL,
        );
        let ip = crate::wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.ttl(), ip.header_len(), ip.dst_addr()),
            (1, 24, Ipv4Address::new(224, 0, 0, 1))
        );
        assert_eq!(&ip.payload()[..2], &[0x11, 100]);
        assert_eq!(crate::wire::checksum::compute(ip.payload()), 0);
        let f = mld_query_frame(
            mac,
            crate::config::GATEWAY_LINK_LOCAL,
            &q,
            DEFAULT_QUERY_INTERVAL,
        );
        let ip = crate::wire::Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.hop_limit(), ip.next_header()), (1, 0));
        assert_eq!(ip.src_addr(), crate::config::GATEWAY_LINK_LOCAL);
        assert_eq!(&ip.payload()[8..10], &[130, 0]);
        assert_eq!(&ip.payload()[12..14], &10_000u16.to_be_bytes());
    }

    #[test]
    fn mldv2_records_and_v1_done() {
        let mut q = Querier::new(true, DEFAULT_QUERY_INTERVAL);
        let group = [0xff, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        // Body after type/code/checksum: reserved(2), count(2), record TO_EX({}).
        let mut body = vec![0, 0, 0, 1, 4, 0, 0, 0];
        body.extend(group);
        assert_eq!(q.mld(t(0), 143, &body).records, 1);
        assert_eq!(q.groups(true).len(), 1);
        let mut done = vec![0, 0, 0, 0];
        done.extend(group);
        assert_eq!(q.mld(t(1), 132, &done).leaves, 1);
        let mut out = Vec::new();
        q.due(true, t(1), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].group.is_some());
    }
}
