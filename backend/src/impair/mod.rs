//! Link impairments: netem's behaviours on the virtual wire between the guest and virtgate, per
//! direction and per flow, changed at run time (docs/impairments.md).
//!
//! Like the interrupt moderator this is a pure policy object over time passed in: the device asks
//! [`Impairment::decide`] about each frame and carries out the [`Verdict`] (drop it, send it now,
//! flip a bit, let a copy wait in a [`line::DelayLines`] until its release time). Nothing here
//! touches a queue, so it is tested in simulated time.
//!
//! Submodules: [`spec`] (what rules say, their grammar and text), [`frame`] (what rules look at
//! in a frame), [`random`] (seeded draws, correlation, distributions), [`line`](mod@line) (frames waiting
//! on virtgate's side, in recycled buffers).
//!
//! Cost: with no rule in a direction, [`Impairment::decide`] is one length check. With rules it
//! reads the frame's headers in place and allocates nothing.

pub mod frame;
pub mod line;
pub mod random;
pub mod segment;
pub mod spec;

use std::collections::VecDeque;

use netstack::Instant;

use frame::{Corruption, FrameView};
use random::{Correlated, Rng};
pub use spec::{parse_rules, LinkDirection, RuleSpec};
use spec::{Loss, Match, Protocol};

/// The most steps a schedule may hold.
pub const MAX_SCHEDULE_STEPS: usize = 256;
/// The latest a scheduled step may be, from the schedule's start.
pub const MAX_SCHEDULE_MS: u64 = 3_600_000;

netstack::counters! {
    /// One rule's counters, from the moment the rules were installed.
    pub struct RuleCounters {
        /// Frames the rule took (its match held, inside its `frames` window).
        matched,
        /// Copies dropped by its loss model.
        dropped,
        /// Of `dropped`, TCP segments with payload (the sender must resend them).
        dropped_tcp_data,
        /// Frames duplicated (one extra copy each).
        duplicated,
        /// Copies with one bit flipped.
        corrupted,
        /// Of `corrupted`, flips in the IPv4 header (its checksum catches them) or the IPv6 header
        /// chain.
        corrupted_network,
        /// Of `corrupted`, flips in a TCP segment outside its data offset, checked by the
        /// receiver's TCP checksum (Linux: `TcpInCsumErrors`).
        corrupted_tcp,
        /// Of `corrupted`, flips in a checksummed UDP datagram outside its length field
        /// (`UdpInCsumErrors`).
        corrupted_udp,
        /// Of `corrupted`, the rest: ARP, ICMP, fragments, length fields, padding.
        corrupted_other,
        /// Copies that waited (delay, jitter or the rate queue).
        delayed,
        /// Copies sent at once, ahead of delayed ones (`reorder`).
        reordered,
        /// Copies that waited in the rate queue.
        rate_queued,
        /// Copies dropped because the rate queue held `limit` frames (tail drop).
        limit_drops,
        /// Copies dropped because virtgate's delay line was full (its bound, not the rule's).
        line_drops,
    }
}

/// One installed rule: what it says, its counters and its random state.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub counters: RuleCounters,
    rng: Rng,
    loss: Correlated,
    /// Gilbert-Elliott: in the bad state.
    bad: bool,
    duplicate: Correlated,
    corrupt: Correlated,
    delay: Correlated,
    reorder: Correlated,
    /// Frames since the last reordered one (netem's `gap` counter).
    since_reorder: u32,
    /// Frames the match's other terms held for (the `frames` window counts these).
    seen: u64,
    /// The rate's token bucket: bytes available at `rate_time`.
    tokens: f64,
    rate_time: Instant,
    /// Departure times of the frames in the rate queue, oldest first (at most `limit`).
    departures: VecDeque<Instant>,
}

impl Rule {
    fn new(spec: RuleSpec, seed: u64, index: u64) -> Rule {
        let limit = spec.actions.limit.unwrap_or(spec::DEFAULT_LIMIT) as usize;
        let queue = if spec.actions.rate.is_some() {
            limit
        } else {
            0
        };
        Rule {
            rng: Rng::new(seed, index),
            counters: RuleCounters::default(),
            loss: Correlated::default(),
            bad: false,
            duplicate: Correlated::default(),
            corrupt: Correlated::default(),
            delay: Correlated::default(),
            reorder: Correlated::default(),
            since_reorder: 0,
            seen: 0,
            tokens: spec.actions.rate.map_or(0.0, |r| r.burst as f64),
            rate_time: Instant::ZERO,
            departures: VecDeque::with_capacity(queue),
            spec,
        }
    }

    /// Whether the rule takes this frame (counting it in the `frames` window).
    fn takes(&mut self, v: &FrameView) -> bool {
        if !matches(&self.spec.filter, v) {
            return false;
        }
        self.seen += 1;
        match self.spec.filter.frames {
            Some((a, b)) => (a..=b).contains(&self.seen),
            None => true,
        }
    }

    fn lost(&mut self) -> bool {
        match self.spec.actions.loss {
            None => false,
            Some(Loss::Random(c)) => self.loss.happens(&mut self.rng, c),
            Some(Loss::GilbertElliott { p, r, h1, k1 }) => {
                // netem's order: the state moves first, then the loss is drawn in the new state.
                if self.bad {
                    if self.rng.unit() < r {
                        self.bad = false;
                    }
                } else if self.rng.unit() < p {
                    self.bad = true;
                }
                let loss = if self.bad { h1 } else { k1 };
                self.rng.unit() < loss
            }
        }
    }

    /// When a copy of `size` bytes leaves the rate queue, or None when the queue is full.
    fn rate_departure(&mut self, now: Instant, size: usize) -> Option<Instant> {
        let Some(rate) = self.spec.actions.rate else {
            return Some(now);
        };
        while self.departures.front().is_some_and(|&d| d <= now) {
            self.departures.pop_front();
        }
        let limit = self.spec.actions.limit.unwrap_or(spec::DEFAULT_LIMIT) as usize;
        if self.departures.len() >= limit {
            return None;
        }
        let bytes_per_us = rate.bits_per_sec as f64 / 8e6;
        let size = (size as i64 + i64::from(rate.overhead)).max(1) as f64;
        // The bucket fills while the link is idle, up to the burst; a frame larger than what is
        // there waits for the rest at the link's rate (so with no burst each frame takes its
        // serialisation time, as netem's rate does).
        let start = now.max(self.rate_time);
        let idle = (start - self.rate_time).total_micros() as f64;
        let tokens = (self.tokens + idle * bytes_per_us).min(rate.burst as f64);
        let (depart, left) = if tokens >= size {
            (start, tokens - size)
        } else {
            let wait = ((size - tokens) / bytes_per_us).ceil() as u64;
            (start + netstack::Duration::from_micros(wait), 0.0)
        };
        self.tokens = left;
        self.rate_time = depart;
        if depart > now {
            self.departures.push_back(depart);
        }
        Some(depart)
    }

    /// The extra time a copy waits for the delay (with jitter), or zero when reordered.
    fn delay(&mut self) -> (u64, bool) {
        let Some(d) = self.spec.actions.delay else {
            return (0, false);
        };
        if let Some(r) = self.spec.actions.reorder {
            // netem: `gap` N sends at most every N-th frame at once (N of 0 or 1: any frame).
            let gap = r.gap.max(1);
            if self.since_reorder + 1 >= gap && self.reorder.happens(&mut self.rng, r.chance) {
                self.since_reorder = 0;
                return (0, true);
            }
            self.since_reorder += 1;
        }
        if d.jitter_us == 0 {
            return (d.latency_us, false);
        }
        let u = self.delay.draw(&mut self.rng, d.correlation);
        let v = self.rng.unit();
        let offset = d.distribution.standard(u, v) * d.jitter_us as f64;
        let us = (d.latency_us as f64 + offset).clamp(0.0, spec::MAX_DELAY_US as f64);
        (us as u64, false)
    }
}

/// Whether every term of `m` holds for the frame (the `frames` window aside).
fn matches(m: &Match, v: &FrameView) -> bool {
    for p in &m.protocols {
        let ok = match p {
            Protocol::Ipv4 => v.is_ipv4(),
            Protocol::Ipv6 => v.is_ipv6(),
            Protocol::Arp => v.ethertype == frame::ETHERTYPE_ARP,
            Protocol::Tcp => v.protocol == Some(frame::PROTO_TCP),
            Protocol::Udp => v.protocol == Some(frame::PROTO_UDP),
            Protocol::Icmp => v.is_icmp(),
            Protocol::Number(n) => v.protocol == Some(*n),
        };
        if !ok {
            return false;
        }
    }
    let addr_in = |p: &Option<spec::Prefix>, a: Option<std::net::IpAddr>| match p {
        None => true,
        Some(p) => a.is_some_and(|a| p.contains(a)),
    };
    if !addr_in(&m.src, v.src) || !addr_in(&m.dst, v.dst) {
        return false;
    }
    if m.host.is_some() && !(addr_in(&m.host, v.src) || addr_in(&m.host, v.dst)) {
        return false;
    }
    let port_in = |r: Option<(u16, u16)>, p: Option<u16>| match r {
        None => true,
        Some((a, b)) => p.is_some_and(|p| (a..=b).contains(&p)),
    };
    if !port_in(m.sport, v.sport) || !port_in(m.dport, v.dport) {
        return false;
    }
    if m.port.is_some() && !(port_in(m.port, v.sport) || port_in(m.port, v.dport)) {
        return false;
    }
    if let Some((set, clear)) = m.flags {
        match v.tcp_flags {
            Some(f) if f & set == set && f & clear == 0 => {}
            _ => return false,
        }
    }
    if m.data && (v.protocol != Some(frame::PROTO_TCP) || v.tcp_payload == 0) {
        return false;
    }
    true
}

/// What happens to one copy of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// Flip the bits of `mask` in the byte at this offset.
    pub corrupt: Option<(usize, u8)>,
    /// When it crosses the link (`now` for at once).
    pub release: Instant,
}

/// What to do with a frame a rule took: up to two copies (a duplicate); none if all were lost.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    /// Index of the rule in [`Impairment::rules`].
    pub rule: usize,
    pub copies: [Option<Copy>; 2],
    /// The frame was duplicated.
    pub duplicated: bool,
    /// Copies the loss model dropped.
    pub lost: u8,
    /// Copies the full rate queue dropped.
    pub limited: u8,
    /// The frame's headers as read for matching (for classifying a corruption).
    pub view: FrameView,
}

impl Verdict {
    /// One copy, unchanged, now: the frame goes on as if no rule had taken it.
    pub fn untouched(&self, now: Instant) -> bool {
        matches!(
            self.copies,
            [Some(Copy { corrupt: None, release }), None] if release <= now
        )
    }
}

/// A scheduled change: at `at`, the rules become `rules` (None: those in force when the schedule
/// was set).
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Instant,
    pub rules: Option<Vec<RuleSpec>>,
}

/// The device's impairments: the rules of both directions and a schedule of changes.
#[derive(Debug, Default)]
pub struct Impairment {
    seed: u64,
    rules: Vec<Rule>,
    /// Rules of each direction (indices into `rules`, in order).
    to_guest: Vec<usize>,
    from_guest: Vec<usize>,
    schedule: VecDeque<Step>,
    /// The rules in force when the schedule was set (what a `restore` step brings back).
    before_schedule: Vec<RuleSpec>,
}

impl Impairment {
    pub fn new(rules: Vec<RuleSpec>, seed: u64) -> Impairment {
        let mut i = Impairment {
            seed,
            ..Impairment::default()
        };
        i.replace(rules);
        i
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// Installs `rules` in place of the current ones, with fresh counters and random state (so
    /// the same seed and rules repeat their decisions).
    pub fn replace(&mut self, specs: Vec<RuleSpec>) {
        self.rules = specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| Rule::new(s, self.seed, i as u64))
            .collect();
        self.to_guest.clear();
        self.from_guest.clear();
        for (i, r) in self.rules.iter().enumerate() {
            match r.spec.direction {
                LinkDirection::ToGuest => self.to_guest.push(i),
                LinkDirection::FromGuest => self.from_guest.push(i),
            }
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn specs(&self) -> Vec<RuleSpec> {
        self.rules.iter().map(|r| r.spec.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule looks at frames going `dir`.
    pub fn active(&self, dir: LinkDirection) -> bool {
        match dir {
            LinkDirection::ToGuest => !self.to_guest.is_empty(),
            LinkDirection::FromGuest => !self.from_guest.is_empty(),
        }
    }

    /// Sets a schedule: `steps` as (milliseconds from `now`, rules or None to restore), in any
    /// order. Replaces a pending schedule.
    pub fn set_schedule(&mut self, now: Instant, steps: Vec<(u64, Option<Vec<RuleSpec>>)>) {
        let mut steps: Vec<Step> = steps
            .into_iter()
            .map(|(ms, rules)| Step {
                at: now + netstack::Duration::from_millis(ms),
                rules,
            })
            .collect();
        steps.sort_by_key(|s| s.at);
        self.before_schedule = self.specs();
        self.schedule = steps.into();
    }

    pub fn cancel_schedule(&mut self) {
        self.schedule.clear();
    }

    pub fn schedule(&self) -> impl Iterator<Item = &Step> {
        self.schedule.iter()
    }

    /// The next scheduled change.
    pub fn poll_at(&self) -> Option<Instant> {
        self.schedule.front().map(|s| s.at)
    }

    /// Applies the steps due at `now`; returns how many were applied.
    pub fn run_schedule(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while self.schedule.front().is_some_and(|s| s.at <= now) {
            let Some(step) = self.schedule.pop_front() else {
                break;
            };
            let rules = step.rules.unwrap_or_else(|| self.before_schedule.clone());
            self.replace(rules);
            n += 1;
        }
        n
    }

    /// What the first rule of `dir` that takes the frame does to it; None when no rule takes it.
    pub fn decide(&mut self, dir: LinkDirection, frame: &[u8], now: Instant) -> Option<Verdict> {
        let indices = match dir {
            LinkDirection::ToGuest => &self.to_guest,
            LinkDirection::FromGuest => &self.from_guest,
        };
        if indices.is_empty() {
            return None;
        }
        let view = FrameView::parse(frame);
        let rules = &mut self.rules;
        let index = *indices.iter().find(|&&i| rules[i].takes(&view))?;
        let rule = &mut rules[index];
        rule.counters.matched += 1;
        let a = &rule.spec.actions;
        let duplicate = a
            .duplicate
            .is_some_and(|c| rule.duplicate.happens(&mut rule.rng, c));
        rule.counters.duplicated += u64::from(duplicate);
        let mut copies = [None; 2];
        let (mut lost, mut limited) = (0, 0);
        for slot in copies.iter_mut().take(1 + usize::from(duplicate)) {
            if rule.lost() {
                rule.counters.dropped += 1;
                lost += 1;
                rule.counters.dropped_tcp_data +=
                    u64::from(view.protocol == Some(frame::PROTO_TCP) && view.tcp_payload > 0);
                continue;
            }
            // After the Ethernet header (and a VLAN tag), which a frame too short to have one
            // keeps whole.
            let start = view.l3.max(14);
            let corrupt = match rule.spec.actions.corrupt {
                Some(c) if frame.len() > start && rule.corrupt.happens(&mut rule.rng, c) => {
                    let bits = (frame.len() - start) as u64 * 8;
                    let bit = rule.rng.below(bits);
                    Some((start + (bit / 8) as usize, 1u8 << (bit % 8)))
                }
                _ => None,
            };
            rule.counters.corrupted += u64::from(corrupt.is_some());
            let Some(departure) = rule.rate_departure(now, frame.len()) else {
                rule.counters.limit_drops += 1;
                limited += 1;
                continue;
            };
            rule.counters.rate_queued += u64::from(departure > now);
            let (delay, reordered) = rule.delay();
            rule.counters.reordered += u64::from(reordered);
            let release = departure + netstack::Duration::from_micros(delay);
            rule.counters.delayed += u64::from(release > now);
            *slot = Some(Copy { corrupt, release });
        }
        // A duplicate whose original was lost moves up, so copies[0] is always the first left.
        if copies[0].is_none() {
            copies.swap(0, 1);
        }
        Some(Verdict {
            rule: index,
            copies,
            duplicated: duplicate,
            lost,
            limited,
            view,
        })
    }

    /// Counts where a corruption of the rule's landed (the device classifies it, knowing whether
    /// the receiver verifies the checksum).
    pub fn count_corruption(&mut self, rule: usize, c: Corruption) {
        if let Some(r) = self.rules.get_mut(rule) {
            let counter = match c {
                Corruption::NetworkHeader => &mut r.counters.corrupted_network,
                Corruption::Tcp => &mut r.counters.corrupted_tcp,
                Corruption::Udp => &mut r.counters.corrupted_udp,
                Corruption::Other => &mut r.counters.corrupted_other,
            };
            *counter += 1;
        }
    }

    /// Counts a copy the delay line had no room for.
    pub fn count_line_drop(&mut self, rule: usize) {
        if let Some(r) = self.rules.get_mut(rule) {
            r.counters.line_drops += 1;
        }
    }
}

#[cfg(test)]
mod tests;

/// Fuzzing entry: the bytes before the first zero are rules in the grammar, the rest frames
/// (each a length byte and that many bytes) offered to both directions over advancing time.
/// Invariants: no panic; the canonical text of parsed rules parses to the same text; a verdict
/// has at most two copies, none released before now, a flip inside the frame after its
/// Ethernet header.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let (text, mut frames) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(rules) = parse_rules(text) else {
        return;
    };
    let canonical: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    let again = parse_rules(&canonical.join("; ")).expect("canonical text parses");
    let twice: Vec<String> = again.iter().map(|r| r.to_string()).collect();
    assert_eq!(canonical, twice);
    let mut imp = Impairment::new(rules, 1);
    let mut now = Instant::from_secs(1);
    while let Some((&len, rest)) = frames.split_first() {
        let n = usize::from(len).min(rest.len());
        let (frame, rest) = rest.split_at(n);
        frames = rest;
        now = now + netstack::Duration::from_micros(u64::from(len) * 37);
        for dir in [LinkDirection::ToGuest, LinkDirection::FromGuest] {
            if let Some(v) = imp.decide(dir, frame, now) {
                for c in v.copies.iter().flatten() {
                    assert!(c.release >= now);
                    if let Some((at, mask)) = c.corrupt {
                        assert!(at < frame.len() && at >= 14 && mask.count_ones() == 1);
                    }
                }
            }
        }
    }
}
