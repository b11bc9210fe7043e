//! Interrupt moderation, modelled on the e1000/e1000e timers.
//!
//! QEMU handles the virtio control queue itself and never forwards coalescing settings to a
//! vhost-user backend, and the call eventfd virtgate writes is the guest's interrupt (a KVM irqfd),
//! so the device moderates its own interrupts, per queue:
//!
//! | setting (`ethtool -C` name) | e1000 register | meaning |
//! | --- | --- | --- |
//! | `rx-usecs` / `tx-usecs` | RDTR / TIDV, the packet timer | signal this long after the last used frame; every new frame restarts it |
//! | `rx-usecs-abs` / `tx-usecs-abs` | RADV / TADV, the absolute timer | never later than this after the first unsignalled frame |
//! | `rx-frames` / `tx-frames` | (a frame-count threshold, as most NICs have) | signal as soon as this many frames wait |
//! | `itr` | ITR, the throttle | at most this many interrupts per second |
//! | `adaptive-rx` | dynamic ITR (`InterruptThrottleRate=1/3`) | pick the RX throttle from the traffic between interrupts |
//!
//! All zero (the default) means no moderation: signal as soon as used buffers are published.
//! Moderation only ever delays and merges interrupts. The EVENT_IDX check (does the guest want
//! one?) is made when buffers are used, as a NIC latches an interrupt cause; the device then holds
//! the owed interrupt until the policy says it is due. A batch the guest did not want an interrupt
//! for owes nothing ([`Moderator::not_wanted`]). So moderation never raises an interrupt that the
//! same batches would not have raised without it.
//!
//! The policy is a pure object over time passed in, so that it is tested in simulated time; the
//! device drives it from its batches and its timerfd.

use netstack::{Duration, Instant};

/// One queue's moderation settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCoalesce {
    /// The packet timer, microseconds (0: off).
    pub usecs: u32,
    /// The frame-count threshold (0: off).
    pub frames: u32,
    /// The absolute timer, microseconds (0: off).
    pub usecs_abs: u32,
}

impl QueueCoalesce {
    fn is_off(&self) -> bool {
        self.usecs == 0 && self.frames == 0 && self.usecs_abs == 0
    }
}

/// The device's moderation settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coalesce {
    pub rx: QueueCoalesce,
    pub tx: QueueCoalesce,
    /// At most this many interrupts per second per queue (0: no limit).
    pub itr: u32,
    /// Adaptive RX throttle: spaces RX interrupts as the traffic's class asks (never closer than
    /// `itr`).
    pub adaptive_rx: bool,
}

/// What the device should do about a queue's interrupt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing waits to be signalled.
    Idle,
    /// Signal now (if the guest wants it).
    Now,
    /// Signal at this instant, unless more frames change the plan.
    At(Instant),
}

/// The traffic classes of e1000's dynamic ITR, with the rates they allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatencyClass {
    /// 70 000 interrupts per second.
    Lowest,
    /// 20 000 interrupts per second.
    Low,
    /// 4 000 interrupts per second.
    Bulk,
    /// 1 000 interrupts per second: frames averaging more than [`JUMBO_FRAME_BYTES`], TSO's and
    /// jumbo MTUs' (a class e1000 never needed: its frames stop at 16 KB).
    Jumbo,
}

/// Frames averaging more than this many bytes are TSO's 64 KiB frames or a jumbo MTU's: bulk
/// whose every interrupt costs the guest a NAPI round for a few frames. Measured (docs/nic.md):
/// a TCG guest receiving 64 KiB frames took an interrupt every 6 frames unmoderated (1800 per
/// second), and moved 12% more with at most 1000 per second.
const JUMBO_FRAME_BYTES: u64 = 16_000;

impl LatencyClass {
    fn interrupts_per_second(self) -> u32 {
        match self {
            LatencyClass::Lowest => 70_000,
            LatencyClass::Low => 20_000,
            LatencyClass::Bulk => 4_000,
            LatencyClass::Jumbo => 1_000,
        }
    }

    /// e1000's `e1000_update_itr`: the class for the frames and bytes since the last interrupt,
    /// starting from the current class (the hysteresis keeps it from flapping).
    fn next(self, frames: u64, bytes: u64) -> LatencyClass {
        if frames == 0 {
            return self;
        }
        let per_frame = bytes / frames;
        if per_frame > JUMBO_FRAME_BYTES {
            return LatencyClass::Jumbo;
        }
        match self {
            // Out of jumbo traffic: small exchanges go straight to low latency, the rest through
            // bulk's hysteresis.
            LatencyClass::Jumbo if bytes < 6_000 => LatencyClass::Low,
            LatencyClass::Jumbo => LatencyClass::Bulk,
            // Frames over 8000 bytes are bulk; a few mid-sized frames are not the lowest latency
            // any more.
            LatencyClass::Lowest if per_frame > 8_000 => LatencyClass::Bulk,
            LatencyClass::Lowest if frames < 5 && bytes > 512 => LatencyClass::Low,
            LatencyClass::Low if bytes > 10_000 => {
                if per_frame > 8_000 || frames < 10 || per_frame > 1_200 {
                    LatencyClass::Bulk
                } else if frames > 35 {
                    LatencyClass::Lowest
                } else {
                    self
                }
            }
            LatencyClass::Low if per_frame > 2_000 => LatencyClass::Bulk,
            LatencyClass::Low if frames <= 2 && bytes < 512 => LatencyClass::Lowest,
            LatencyClass::Bulk if bytes > 25_000 && frames > 35 => LatencyClass::Low,
            LatencyClass::Bulk if bytes < 6_000 => LatencyClass::Low,
            _ => self,
        }
    }
}

/// One queue's moderation state.
#[derive(Debug, Clone)]
pub struct Moderator {
    params: QueueCoalesce,
    /// The throttle's minimum gap between interrupts (zero: none).
    throttle: Duration,
    adaptive: Option<LatencyClass>,
    pending_frames: u64,
    pending_bytes: u64,
    first_pending: Option<Instant>,
    last_frame: Option<Instant>,
    last_signal: Option<Instant>,
    /// The guest ran out of buffers with the pending frames written: see [`Moderator::starved`].
    starved: bool,
}

fn interval(per_second: u32) -> Duration {
    if per_second == 0 {
        Duration::ZERO
    } else {
        Duration::from_micros(1_000_000 / u64::from(per_second))
    }
}

impl Moderator {
    pub fn new(params: QueueCoalesce, itr: u32, adaptive: bool) -> Self {
        Moderator {
            params,
            throttle: interval(itr),
            adaptive: adaptive.then_some(LatencyClass::Lowest),
            pending_frames: 0,
            pending_bytes: 0,
            first_pending: None,
            last_frame: None,
            last_signal: None,
            starved: false,
        }
    }

    /// New settings, keeping what is pending (so that nothing waits for ever on a moderator that
    /// no longer knows about it).
    pub fn reconfigure(&mut self, params: QueueCoalesce, itr: u32, adaptive: bool) {
        self.params = params;
        self.throttle = interval(itr);
        self.adaptive = match (adaptive, self.adaptive) {
            (true, Some(class)) => Some(class),
            (true, None) => Some(LatencyClass::Lowest),
            (false, _) => None,
        };
    }

    /// `frames` frames (`bytes` bytes) were just made used.
    pub fn used(&mut self, now: Instant, frames: u64, bytes: u64) {
        if frames == 0 {
            return;
        }
        self.pending_frames += frames;
        self.pending_bytes += bytes;
        self.first_pending.get_or_insert(now);
        self.last_frame = Some(now);
    }

    /// When the interrupt for what is pending is due.
    pub fn decide(&self, now: Instant) -> Decision {
        self.decide_as(now, self.starved)
    }

    /// Whether the guest's starvation is what makes the pending interrupt due now (it would have
    /// been held otherwise): for the device's `rx_interrupts_starved`.
    pub fn due_to_starvation(&self, now: Instant) -> bool {
        self.starved && matches!(self.decide_as(now, false), Decision::At(_))
    }

    fn decide_as(&self, now: Instant, starved: bool) -> Decision {
        let Some(first) = self.first_pending else {
            return Decision::Idle;
        };
        let p = self.params;
        let mut due = now;
        let threshold_met = p.frames > 0 && self.pending_frames >= u64::from(p.frames);
        if !p.is_off() && !threshold_met && !starved {
            let packet = (p.usecs > 0).then(|| {
                self.last_frame.unwrap_or(first) + Duration::from_micros(u64::from(p.usecs))
            });
            let absolute =
                (p.usecs_abs > 0).then(|| first + Duration::from_micros(u64::from(p.usecs_abs)));
            if let Some(t) = [packet, absolute].into_iter().flatten().min() {
                due = t;
            }
        }
        // The throttle (`--itr`) bounds every interrupt; the adaptive class may space them
        // further, unless the guest is starved.
        let adaptive = match self.adaptive {
            Some(class) if !starved => interval(class.interrupts_per_second()),
            _ => Duration::ZERO,
        };
        let throttle = self.throttle.max(adaptive);
        if let Some(last) = self.last_signal {
            if throttle > Duration::ZERO {
                due = due.max(last + throttle);
            }
        }
        if due <= now {
            Decision::Now
        } else {
            Decision::At(due)
        }
    }

    /// The guest's ring ran out of buffers while frames wait to be signalled: it cannot take more
    /// until it runs, so holding its interrupt only adds latency. As an e1000's receive-descriptor
    /// minimum threshold (ICR.RXDMT0) is an interrupt cause of its own, the packet and absolute
    /// timers and the adaptive throttle stop holding what is pending; the throttle a user set
    /// (`--itr`, ITR) still bounds it, as ITR bounds every cause. Without this a fast guest (KVM)
    /// would wait out an adaptive throttle with its ring full.
    pub fn starved(&mut self) {
        if self.first_pending.is_some() {
            self.starved = true;
        }
    }

    /// The guest wanted no interrupt for what is pending (it is polling the ring): nothing is
    /// owed, and the timers start again from the next frame. The throttle still counts from the
    /// last interrupt actually raised.
    pub fn not_wanted(&mut self) {
        self.pending_frames = 0;
        self.pending_bytes = 0;
        self.first_pending = None;
        self.last_frame = None;
        self.starved = false;
    }

    /// The interrupt fired: what was pending is signalled.
    pub fn signalled(&mut self, now: Instant) {
        if let Some(class) = self.adaptive {
            self.adaptive = Some(class.next(self.pending_frames, self.pending_bytes));
        }
        self.pending_frames = 0;
        self.pending_bytes = 0;
        self.first_pending = None;
        self.starved = false;
        self.last_signal = Some(now);
    }

    /// The timer deadline this queue needs, if any.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        match self.decide(now) {
            Decision::At(t) => Some(t),
            Decision::Now => Some(now),
            Decision::Idle => None,
        }
    }

    /// The current adaptive throttle, interrupts per second.
    pub fn adaptive_rate(&self) -> Option<u32> {
        self.adaptive.map(LatencyClass::interrupts_per_second)
    }

    /// The throttle in force, interrupts per second (0: none): the user's or the adaptive
    /// class's, whichever spaces interrupts further (for the stats).
    pub fn throttle_rate(&self) -> u32 {
        let user = (self.throttle > Duration::ZERO)
            .then(|| (1_000_000 / self.throttle.total_micros().max(1)) as u32);
        user.into_iter()
            .chain(self.adaptive_rate())
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Instant {
        Instant::from_micros(n)
    }

    #[test]
    fn off_signals_at_once() {
        let mut m = Moderator::new(QueueCoalesce::default(), 0, false);
        assert_eq!(m.decide(us(0)), Decision::Idle);
        m.used(us(10), 1, 100);
        assert_eq!(m.decide(us(10)), Decision::Now);
        m.signalled(us(10));
        assert_eq!(m.decide(us(11)), Decision::Idle);
    }

    #[test]
    fn the_packet_timer_restarts_and_the_absolute_timer_caps_it() {
        let p = QueueCoalesce {
            usecs: 100,
            frames: 0,
            usecs_abs: 250,
        };
        let mut m = Moderator::new(p, 0, false);
        m.used(us(0), 1, 60);
        assert_eq!(m.decide(us(0)), Decision::At(us(100)));
        // Frames keep coming every 80 µs: the packet timer keeps moving...
        m.used(us(80), 1, 60);
        assert_eq!(m.decide(us(80)), Decision::At(us(180)));
        m.used(us(160), 1, 60);
        // ...until the absolute timer (250 µs after the first frame) caps the delay.
        assert_eq!(m.decide(us(160)), Decision::At(us(250)));
        assert_eq!(m.decide(us(250)), Decision::Now);
    }

    #[test]
    fn the_frame_threshold_fires_early() {
        let p = QueueCoalesce {
            usecs: 1000,
            frames: 4,
            usecs_abs: 0,
        };
        let mut m = Moderator::new(p, 0, false);
        m.used(us(0), 3, 180);
        assert_eq!(m.decide(us(1)), Decision::At(us(1000)));
        m.used(us(2), 1, 60);
        assert_eq!(m.decide(us(2)), Decision::Now);
    }

    #[test]
    fn the_throttle_spaces_interrupts() {
        // 1000 interrupts per second: at least 1 ms apart.
        let mut m = Moderator::new(QueueCoalesce::default(), 1000, false);
        m.used(us(0), 1, 60);
        assert_eq!(m.decide(us(0)), Decision::Now);
        m.signalled(us(0));
        m.used(us(300), 1, 60);
        assert_eq!(m.decide(us(300)), Decision::At(us(1000)));
        assert_eq!(m.deadline(us(300)), Some(us(1000)));
        assert_eq!(m.decide(us(1000)), Decision::Now);
    }

    #[test]
    fn adaptive_mode_follows_the_traffic() {
        let mut m = Moderator::new(QueueCoalesce::default(), 0, true);
        assert_eq!(m.adaptive_rate(), Some(70_000));
        // Bulk: full-sized frames, many bytes per interrupt.
        let mut t = 0;
        for _ in 0..3 {
            m.used(us(t), 20, 20 * 9000);
            m.signalled(us(t));
            t += 1000;
        }
        assert_eq!(m.adaptive_rate(), Some(4_000));
        // Back to pings: small and few, the throttle relaxes step by step.
        for _ in 0..3 {
            m.used(us(t), 1, 98);
            m.signalled(us(t));
            t += 1000;
        }
        assert_eq!(m.adaptive_rate(), Some(70_000));
    }

    #[test]
    fn tso_frames_are_jumbo_and_a_ping_after_them_is_not_held() {
        let mut m = Moderator::new(QueueCoalesce::default(), 0, true);
        // A download in 64 KiB frames: six to an interrupt, 500 µs apart.
        let mut t = 0;
        for _ in 0..3 {
            m.used(us(t), 6, 6 * 65_000);
            assert_ne!(m.decide(us(t)), Decision::Idle);
            m.signalled(us(t));
            t += 500;
        }
        assert_eq!(m.adaptive_rate(), Some(1_000));
        // More frames 500 µs after the last interrupt wait for 1 ms after it.
        m.used(us(t), 2, 2 * 65_000);
        assert_eq!(m.decide(us(t)), Decision::At(us(t - 500 + 1_000)));
        m.signalled(us(t + 500));
        // A ping reply after a quiet spell goes at once, and the class steps down: small
        // exchanges reach low latency, then the lowest.
        t += 50_000;
        m.used(us(t), 1, 98);
        assert_eq!(m.decide(us(t)), Decision::Now);
        m.signalled(us(t));
        assert_eq!(m.adaptive_rate(), Some(20_000));
        t += 200_000;
        m.used(us(t), 1, 98);
        assert_eq!(m.decide(us(t)), Decision::Now);
        m.signalled(us(t));
        assert_eq!(m.adaptive_rate(), Some(70_000));
    }

    #[test]
    fn a_starved_ring_ends_the_hold_but_not_the_users_throttle() {
        // Adaptive at jumbo: a frame 100 µs after the last interrupt would wait 900 µs more...
        let mut m = Moderator::new(QueueCoalesce::default(), 0, true);
        m.used(us(0), 4, 4 * 65_000);
        m.signalled(us(0));
        m.used(us(100), 1, 65_000);
        assert_eq!(m.decide(us(100)), Decision::At(us(1_000)));
        // ...unless the guest has no buffers left: then it goes now.
        assert!(!m.due_to_starvation(us(100)));
        m.starved();
        assert_eq!(m.decide(us(100)), Decision::Now);
        assert!(m.due_to_starvation(us(100)));
        m.signalled(us(100));
        // Starvation is over with the interrupt.
        m.used(us(200), 1, 65_000);
        assert_eq!(m.decide(us(200)), Decision::At(us(1_100)));

        // The packet timers give way as well...
        let p = QueueCoalesce {
            usecs: 500,
            frames: 0,
            usecs_abs: 0,
        };
        let mut m = Moderator::new(p, 0, false);
        m.used(us(0), 1, 1500);
        assert_eq!(m.decide(us(0)), Decision::At(us(500)));
        m.starved();
        assert_eq!(m.decide(us(0)), Decision::Now);
        // ...but a user's throttle is a bound on every interrupt, as ITR is.
        let mut m = Moderator::new(QueueCoalesce::default(), 1_000, true);
        m.used(us(0), 1, 1500);
        m.signalled(us(0));
        m.used(us(100), 1, 1500);
        m.starved();
        assert_eq!(m.decide(us(100)), Decision::At(us(1_000)));
        // Starvation noted with nothing pending means nothing.
        let mut m = Moderator::new(QueueCoalesce::default(), 0, true);
        m.starved();
        assert_eq!(m.decide(us(0)), Decision::Idle);
    }

    #[test]
    fn the_users_throttle_bounds_the_adaptive_class() {
        // --itr 10 with adaptive on: the lowest-latency class never brings interrupts closer than
        // 100 ms.
        let mut m = Moderator::new(QueueCoalesce::default(), 10, true);
        m.used(us(0), 1, 98);
        m.signalled(us(0));
        m.used(us(1_000), 1, 98);
        assert_eq!(m.decide(us(1_000)), Decision::At(us(100_000)));
        assert_eq!(m.throttle_rate(), 10);
        assert_eq!(
            Moderator::new(QueueCoalesce::default(), 0, true).throttle_rate(),
            70_000
        );
        assert_eq!(
            Moderator::new(QueueCoalesce::default(), 0, false).throttle_rate(),
            0
        );
    }
}
