//! NewReno congestion control (RFC 5681, RFC 6582) for what the gateway sends to the guest, with
//! appropriate byte counting (RFC 3465) so that the guest's delayed ACKs do not slow the window's
//! growth, an initial window of ten segments (RFC 6928), a restart window after idle (RFC 5681
//! §4.1), and growth only while the window is what limits sending (RFC 7661).
//!
//! The link to the guest is a virtio ring, but the guest can still drop (a full RX ring, `--loss`,
//! a busy guest), and a sender that ignores that keeps re-filling a queue that is overflowing.

use crate::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    /// Congestion window, bytes.
    pub(crate) cwnd: usize,
    /// Slow-start threshold, bytes.
    pub(crate) ssthresh: usize,
    mss: usize,
    /// Bytes acknowledged in congestion avoidance since cwnd last grew.
    acked_in_ca: usize,
}

impl NewReno {
    pub(crate) fn new(mss: usize) -> Self {
        NewReno {
            cwnd: Self::initial_window(mss),
            ssthresh: usize::MAX,
            mss,
            acked_in_ca: 0,
        }
    }

    /// RFC 6928: min(10*MSS, max(2*MSS, 14600)).
    fn initial_window(mss: usize) -> usize {
        (10 * mss).min((2 * mss).max(14600))
    }

    pub(crate) fn set_mss(&mut self, mss: usize) {
        self.mss = mss;
        self.cwnd = Self::initial_window(mss);
    }

    /// `acked` new bytes were acknowledged outside loss recovery. `cwnd_limited`: the window was
    /// full when the data went out (RFC 7661: do not grow a window that is not being used).
    pub(crate) fn on_ack(&mut self, acked: usize, cwnd_limited: bool) {
        if !cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            // RFC 3465 §2.2: slow start counts bytes, at most 2*SMSS per ACK (L = 2).
            self.cwnd += acked.min(2 * self.mss);
        } else {
            // RFC 5681 §3.1 eq. 3 by byte counting (RFC 3465 §2.1): one SMSS per cwnd acked.
            self.acked_in_ca += acked;
            if self.acked_in_ca >= self.cwnd {
                self.acked_in_ca -= self.cwnd;
                self.cwnd += self.mss;
            }
        }
    }

    /// Loss seen by duplicate ACKs or SACK (RFC 5681 §3.2 step 2, eq. 4).
    pub(crate) fn on_fast_loss(&mut self, flight: usize) {
        self.ssthresh = (flight / 2).max(2 * self.mss);
        self.cwnd = self.ssthresh;
        self.acked_in_ca = 0;
    }

    /// The retransmission timer expired (RFC 5681 §3.1: cwnd is the loss window, one segment).
    /// `first`: the first expiry for this data; later backoffs leave ssthresh alone (eq. 4 is
    /// computed once per loss, as Linux does).
    pub(crate) fn on_timeout(&mut self, flight: usize, first: bool) {
        if first {
            self.ssthresh = (flight / 2).max(2 * self.mss);
        }
        self.cwnd = self.mss;
        self.acked_in_ca = 0;
    }

    /// Loss recovery ended at its recovery point (RFC 6582 §3.2 step 3, "full ACK").
    pub(crate) fn on_recovered(&mut self, flight: usize) {
        self.cwnd = self.ssthresh.min(flight.max(self.mss) + self.mss);
    }

    /// RFC 5681 §4.1: after an idle period longer than the RTO, start again from the restart
    /// window (the initial window).
    pub(crate) fn on_idle(&mut self, idle: Duration, rto: Duration) {
        if idle > rto {
            self.cwnd = self.cwnd.min(Self::initial_window(self.mss));
        }
    }
}

/// When the sender last sent data, for the idle restart.
pub(crate) fn idle_since(last: Option<Instant>, now: Instant) -> Duration {
    last.map_or(Duration::ZERO, |l| now.saturating_since(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_then_avoidance() {
        let mut c = NewReno::new(1000);
        assert_eq!(c.cwnd, 10_000);
        // Delayed ACKs acknowledge two segments each: slow start still doubles per round trip.
        for _ in 0..5 {
            c.on_ack(2000, true);
        }
        assert_eq!(c.cwnd, 20_000);
        // An unused window does not grow.
        c.on_ack(2000, false);
        assert_eq!(c.cwnd, 20_000);
        c.on_fast_loss(20_000);
        assert_eq!((c.cwnd, c.ssthresh), (10_000, 10_000));
        // Congestion avoidance: one segment per window's worth of ACKed bytes.
        for _ in 0..10 {
            c.on_ack(1000, true);
        }
        assert_eq!(c.cwnd, 11_000);
    }

    #[test]
    fn timeouts_collapse_the_window_once_per_loss() {
        let mut c = NewReno::new(1000);
        c.on_timeout(40_000, true);
        assert_eq!((c.cwnd, c.ssthresh), (1000, 20_000));
        c.on_timeout(1000, false);
        assert_eq!((c.cwnd, c.ssthresh), (1000, 20_000));
        c.on_ack(1000, true);
        assert_eq!(c.cwnd, 2000);
        // Idle for longer than the RTO: back to the initial window at most.
        c.cwnd = 50_000;
        c.on_idle(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(c.cwnd, 10_000);
    }
}
