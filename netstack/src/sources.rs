//! Source-address policy (anti-spoofing): which source addresses the guest may use.
//!
//! A gateway that hands out addresses knows which ones the guest was given, and a packet from
//! any other is a spoof (or a misconfiguration) that a real router's reverse-path and
//! first-hop-security filters drop (RFC 2827 ingress filtering, RFC 6620 FCFS SAVI for SLAAC).
//!
//! - IPv4: the addresses of the guest's bound DHCP leases. Before any lease was bound (a guest
//!   configured by hand, `--no-dhcp`), the first source the guest uses is learned and the only
//!   one allowed, as libvirt's `clean-traffic` filter learns a guest's address
//!   (`CTRL_IP_LEARNING=any`). `0.0.0.0` is allowed for DHCP only (checked by the caller).
//! - IPv6: link-local sources (self-assigned by design, and NDP needs them), `::` where the RFCs
//!   allow it (DAD, early MLD; checked per message by the caller), and global addresses the guest
//!   claimed with duplicate address detection (RFC 4862 §5.4, the binding anchor of RFC 6620):
//!   SLAAC, privacy (RFC 8981) and DHCPv6 addresses all run DAD. An address added without DAD
//!   (`nodad`, `accept_dad=0`) is refused.
//!
//! Bound: at most [`MAX_IPV6_SOURCES`] claimed IPv6 addresses are remembered; a newer claim
//! evicts the oldest (a guest cycling privacy addresses keeps its recent ones).

use std::collections::VecDeque;

use crate::wire::{Ipv4Address, Ipv6Address};

/// The most claimed IPv6 addresses remembered for the guest.
pub const MAX_IPV6_SOURCES: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct SourcePolicy {
    /// `--no-source-check` turns the policy off.
    pub(crate) enabled: bool,
    /// The IPv4 source learned before any DHCP lease was bound.
    learned_v4: Option<Ipv4Address>,
    /// Global IPv6 addresses the guest claimed with DAD, oldest first.
    claimed_v6: VecDeque<Ipv6Address>,
}

impl SourcePolicy {
    pub(crate) fn new(enabled: bool) -> Self {
        SourcePolicy {
            enabled,
            ..SourcePolicy::default()
        }
    }

    /// Whether the guest may send from `src`; `leased` are its bound DHCP lease addresses.
    pub(crate) fn allow_v4(
        &mut self,
        src: Ipv4Address,
        mut leased: impl Iterator<Item = Ipv4Address>,
    ) -> bool {
        if !self.enabled {
            return true;
        }
        let mut any_lease = false;
        if leased.any(|a| {
            any_lease = true;
            a == src
        }) {
            return true;
        }
        if any_lease {
            return false;
        }
        *self.learned_v4.get_or_insert(src) == src
    }

    /// The guest probed `target` for duplicates: it claims the address.
    pub(crate) fn claimed_v6(&mut self, target: Ipv6Address) {
        if self.claimed_v6.contains(&target) {
            return;
        }
        if self.claimed_v6.len() == MAX_IPV6_SOURCES {
            self.claimed_v6.pop_front();
        }
        self.claimed_v6.push_back(target);
    }

    /// The sources [`SourcePolicy::allow_v4`] and [`SourcePolicy::allow_v6`] accept now (besides
    /// link-local ones): the bound leases `leased`, or the learned address without one; the
    /// claimed IPv6 addresses.
    pub(crate) fn allowed_into(
        &self,
        leased: impl Iterator<Item = Ipv4Address>,
        v4: &mut Vec<Ipv4Address>,
        v6: &mut Vec<Ipv6Address>,
    ) {
        v4.clear();
        v4.extend(leased);
        if v4.is_empty() {
            v4.extend(self.learned_v4);
        }
        v6.clear();
        v6.extend(self.claimed_v6.iter().copied());
    }

    /// Whether the guest may send from the global or link-local address `src`.
    pub(crate) fn allow_v6(&self, src: Ipv6Address) -> bool {
        !self.enabled || src.is_link_local() || self.claimed_v6.contains(&src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_leases_rule_and_the_first_source_is_learned_before_any() {
        let a = Ipv4Address::new(10, 0, 2, 15);
        let b = Ipv4Address::new(10, 0, 2, 16);
        let mut p = SourcePolicy::new(true);
        // No lease: the first source is learned, another refused.
        assert!(p.allow_v4(a, std::iter::empty()));
        assert!(p.allow_v4(a, std::iter::empty()));
        assert!(!p.allow_v4(b, std::iter::empty()));
        // A bound lease takes over.
        assert!(p.allow_v4(b, std::iter::once(b)));
        assert!(!p.allow_v4(a, std::iter::once(b)));
        assert!(SourcePolicy::new(false).allow_v4(b, std::iter::once(a)));
    }

    #[test]
    fn ipv6_claims_are_remembered_up_to_the_bound() {
        let addr = |i: u16| Ipv6Address::new([0xfd00, 0, 0, 0, 0, 0, 0, i]);
        let mut p = SourcePolicy::new(true);
        assert!(!p.allow_v6(addr(1)));
        assert!(p.allow_v6(Ipv6Address::new([0xfe80, 0, 0, 0, 0, 0, 0, 9])));
        p.claimed_v6(addr(1));
        p.claimed_v6(addr(1));
        assert!(p.allow_v6(addr(1)));
        for i in 2..=MAX_IPV6_SOURCES as u16 + 1 {
            p.claimed_v6(addr(i));
        }
        assert!(!p.allow_v6(addr(1)), "the oldest claim was evicted");
        assert!(p.allow_v6(addr(2)) && p.allow_v6(addr(MAX_IPV6_SOURCES as u16 + 1)));
        assert!(SourcePolicy::new(false).allow_v6(addr(1)));
    }
}
