//! What the guest told us it holds beyond its cumulative ACK (SACK blocks, RFC 2018), for the
//! sender's loss recovery (RFC 6675): which bytes to resend and how much is still in the network.

use crate::wire::SeqNumber;

/// Ranges remembered per connection; blocks beyond this are ignored (SACK is advisory).
const MAX_RANGES: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct Scoreboard {
    /// SACKed `[start, end)` ranges above `snd_una`: disjoint, non-adjacent, sorted.
    ranges: Vec<(SeqNumber, SeqNumber)>,
}

impl Scoreboard {
    /// Records a block from an ACK whose cumulative point is `snd_una`; blocks that are not within
    /// `(snd_una, snd_nxt]` (D-SACK reports, RFC 2883, or nonsense) are ignored.
    pub(crate) fn add(
        &mut self,
        block: (SeqNumber, SeqNumber),
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
    ) {
        let (start, end) = block;
        if !start.is_before(end) || !start.is_after(snd_una) || end.is_after(snd_nxt) {
            return;
        }
        let first = self
            .ranges
            .iter()
            .position(|r| !r.1.is_before(start))
            .unwrap_or(self.ranges.len());
        let touching = self.ranges[first..]
            .iter()
            .take_while(|r| !r.0.is_after(end))
            .count();
        if touching == 0 && self.ranges.len() >= MAX_RANGES {
            return;
        }
        let merged = self.ranges[first..first + touching]
            .iter()
            .fold((start, end), |(s, e), r| {
                (if r.0.is_before(s) { r.0 } else { s }, e.max(r.1))
            });
        self.ranges.splice(first..first + touching, [merged]);
    }

    /// The cumulative ACK moved to `snd_una`: forgets what it covers.
    pub(crate) fn advance(&mut self, snd_una: SeqNumber) {
        self.ranges.retain(|r| r.1.is_after(snd_una));
        if let Some(r) = self.ranges.first_mut() {
            if r.0.is_before(snd_una) {
                r.0 = snd_una;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// The end of the highest SACKed byte, if any.
    pub(crate) fn high(&self) -> Option<SeqNumber> {
        self.ranges.last().map(|r| r.1)
    }

    /// SACKed bytes within `[from, to)`.
    pub(crate) fn sacked_in(&self, from: SeqNumber, to: SeqNumber) -> usize {
        self.ranges
            .iter()
            .map(|&(s, e)| {
                let s = s.max(from);
                let e = if e.is_after(to) { to } else { e };
                if s.is_before(e) {
                    e - s
                } else {
                    0
                }
            })
            .sum()
    }

    /// The first byte at or after `from`, before `to`, that is not SACKed, and how many bytes
    /// from it up to the next SACKed range (or `to`).
    pub(crate) fn next_hole(&self, from: SeqNumber, to: SeqNumber) -> Option<(SeqNumber, usize)> {
        let mut at = from;
        for &(s, e) in &self.ranges {
            if !e.is_after(at) {
                continue;
            }
            if s.is_after(at) {
                break;
            }
            at = e;
        }
        if !at.is_before(to) {
            return None;
        }
        let stop = self
            .ranges
            .iter()
            .map(|r| r.0)
            .find(|s| s.is_after(at))
            .map_or(to, |s| if s.is_before(to) { s } else { to });
        Some((at, stop - at))
    }

    /// Distinct SACKed ranges.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn blocks_merge_and_advance() {
        let mut b = Scoreboard::default();
        b.add((s(300), s(400)), s(100), s(1000));
        b.add((s(500), s(600)), s(100), s(1000));
        b.add((s(400), s(500)), s(100), s(1000));
        assert_eq!(b.ranges, vec![(s(300), s(600))]);
        // D-SACK (below the ACK) and blocks beyond what was sent are ignored.
        b.add((s(50), s(90)), s(100), s(1000));
        b.add((s(900), s(1100)), s(100), s(1000));
        assert_eq!(b.len(), 1);
        b.advance(s(350));
        assert_eq!(b.ranges, vec![(s(350), s(600))]);
        b.advance(s(600));
        assert_eq!(b.high(), None);
    }

    #[test]
    fn holes_skip_what_the_guest_holds() {
        let mut b = Scoreboard::default();
        b.add((s(200), s(300)), s(100), s(1000));
        b.add((s(400), s(500)), s(100), s(1000));
        assert_eq!(b.next_hole(s(100), s(500)), Some((s(100), 100)));
        assert_eq!(b.next_hole(s(200), s(500)), Some((s(300), 100)));
        assert_eq!(b.next_hole(s(450), s(500)), None);
        assert_eq!(b.next_hole(s(450), s(1000)), Some((s(500), 500)));
        assert_eq!(b.sacked_in(s(100), s(450)), 150);
    }
}
