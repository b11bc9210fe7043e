//! The rate limit of the ICMP errors the gateway sends to the guest.

use crate::time::{Duration, Instant};

/// The rate limit of the ICMP errors the gateway sends, one per family (RFC 1812 §4.3.2.8 for
/// ICMPv4, RFC 4443 §2.4(f) for ICMPv6): a bucket of [`ErrorBudget::BURST`] tokens, one back every
/// [`ErrorBudget::INTERVAL`] (10 errors per second sustained, like Linux's 100 ms
/// `icmp_ratelimit` towards one peer). A guest that sends a flood of packets that earn errors
/// gets at most that many back.
#[derive(Debug)]
pub(crate) struct ErrorBudget {
    tokens: u32,
    at: Instant,
}

impl Default for ErrorBudget {
    fn default() -> Self {
        ErrorBudget {
            tokens: Self::BURST,
            at: Instant::ZERO,
        }
    }
}

impl ErrorBudget {
    pub(crate) const BURST: u32 = 10;
    pub(crate) const INTERVAL: crate::time::Duration = Duration::from_millis(100);

    /// Takes a token for one error, if one is left.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let step = Self::INTERVAL.total_micros();
        let earned = now.saturating_since(self.at).total_micros() / step;
        if earned > 0 {
            self.tokens =
                (self.tokens + earned.min(u64::from(Self::BURST)) as u32).min(Self::BURST);
            self.at = self.at + Duration::from_micros(earned * step);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}
