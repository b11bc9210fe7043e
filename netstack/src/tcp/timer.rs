//! Time in: the connection timers (connect, retransmission and persist, TIME-WAIT, delayed ACK,
//! keepalive) and the heap of deadlines that says which connections are due.

use log::debug;

use std::collections::HashMap;

use super::*;
use crate::config::Keepalive;
use crate::deadlines::Deadlines;
use crate::time::Instant;
use crate::wire::SeqNumber;

/// Every connection's next deadline in one min-heap (`crate::deadlines`).
///
/// A connection's deadline moving earlier (a delayed ACK armed under a retransmission timer)
/// adds an entry and makes the connection's `timer_at` point at it; one moving later (the
/// retransmission timer restarted by an ACK) adds nothing: the earlier entry fires, the
/// connection finds nothing due, and the next deadline is scheduled then, as Linux's TCP timers
/// do (a lazy timer that is re-armed when it fires early costs one wake-up per RTO, not one heap
/// operation per ACK). An entry whose deadline is not its connection's `timer_at` is stale.
///
/// Bound: at most one live entry per connection; with the stale ones, never more than
/// `2 * MAX_CONNECTIONS + COMPACT_SLACK + 1`.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    deadlines: Deadlines<ConnKey>,
}

impl Timers {
    /// Makes sure the heap holds an entry no later than `conn`'s next deadline.
    pub(super) fn schedule(&mut self, conn: &mut TcpConn, keepalive: Option<&Keepalive>) {
        let Some(at) = conn.next_timer(keepalive) else {
            return;
        };
        if conn.timer_at.is_some_and(|t| t <= at) {
            return;
        }
        conn.timer_at = Some(at);
        self.deadlines.push(at, conn.key);
    }

    /// The earliest entry's deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Moves the connections with a live entry due at `now` into `due` (each once: its entry
    /// is then no longer live), dropping stale entries on the way.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
        conns: &mut HashMap<ConnKey, TcpConn>,
        due: &mut Vec<ConnKey>,
    ) {
        while let Some((at, key)) = self.deadlines.pop_due(now) {
            if let Some(conn) = conns.get_mut(&key) {
                if conn.timer_at == Some(at) {
                    conn.timer_at = None;
                    due.push(key);
                }
            }
        }
    }

    /// Drops the stale entries once they outnumber the connections (see the bound above).
    pub(super) fn compact(&mut self, conns: &HashMap<ConnKey, TcpConn>) {
        self.deadlines.compact(conns.len(), |key, at| {
            conns.get(key).is_some_and(|c| c.timer_at == Some(at))
        });
    }
}

impl<E: Env> Cx<'_, E> {
    /// The connection's timers that are due at `now`.
    pub(super) fn on_timers(
        &mut self,
        now: Instant,
        conn: &mut TcpConn,
        keepalive: Option<Keepalive>,
    ) {
        if conn.delack.is_some_and(|d| d <= now) {
            conn.delack = None;
            if conn.ack_owed {
                self.core.stats().tcp_delayed_acks += 1;
                self.send_ack(now, conn);
            }
        }
        if conn
            .keepalive_at(keepalive.as_ref())
            .is_some_and(|d| d <= now)
        {
            self.keepalive(now, conn, keepalive.unwrap_or_default());
        }
        if conn.deadline.is_some_and(|d| d <= now) {
            conn.deadline = None;
            self.timeout(now, conn);
        }
        self.update_interest(conn);
    }

    /// The connection's deadline passed.
    pub(super) fn timeout(&mut self, now: Instant, conn: &mut TcpConn) {
        match conn.state {
            TcpState::Connecting => {
                self.core.stats().tcp_refused += 1;
                self.reset_guest(now, conn);
                conn.set_state(TcpState::Closed);
            }
            TcpState::TimeWait => conn.set_state(TcpState::Closed),
            TcpState::Closed => {}
            _ if conn.snd_nxt == conn.snd_una && conn.unsent() > 0 && conn.snd_wnd == 0 => {
                // Zero-window probe: one byte past the window; the guest answers with its
                // current window (and takes the byte if it has room by then).
                let seq = conn.snd_nxt;
                if self.send_data(now, conn, seq, 1, false) {
                    self.core.stats().tcp_window_probes += 1;
                    conn.snd_nxt = conn.snd_nxt + 1;
                }
                conn.rto = (conn.rto + conn.rto).min(MAX_RTO);
                conn.deadline = Some(now + conn.rto);
            }
            _ if conn.snd_nxt != conn.snd_una => {
                conn.retries += 1;
                if conn.retries > MAX_RETRIES {
                    debug!("tcp {:?}: guest stopped answering; reset", conn.key);
                    self.release(conn, true);
                    self.reset_guest(now, conn);
                    conn.set_state(TcpState::Closed);
                    return;
                }
                // RFC 6298 §5.5-5.6: back off and retransmit the earliest unacknowledged;
                // Karn's algorithm: no RTT sample from a retransmitted segment.
                conn.rto = (conn.rto + conn.rto).min(MAX_RTO);
                conn.rtt_probe = None;
                conn.dup_acks = 0;
                if conn.state == TcpState::SynReceived {
                    self.core.stats().tcp_retransmitted_segments += 1;
                    self.send_syn_ack(now, conn);
                } else if conn.state == TcpState::SynSent {
                    self.core.stats().tcp_retransmitted_segments += 1;
                    self.send_syn(now, conn);
                } else if conn.snd_wnd == 0 && conn.snd_nxt - conn.snd_una == 1 {
                    // The window probe went unanswered: probe again, the window is not congestion.
                    let seq = conn.snd_una;
                    if self.send_data(now, conn, seq, 1, false) {
                        self.core.stats().tcp_window_probes += 1;
                    }
                } else {
                    self.core.stats().tcp_retransmits += 1;
                    self.enter_recovery(now, conn, true);
                }
                conn.deadline = Some(now + conn.rto);
            }
            // A segment that could not be queued (the guest's MAC was unknown): try again.
            _ if !conn.queue_blocked => self.output(now, conn),
            _ => {}
        }
    }

    /// Keepalive (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6): a segment one byte before the window,
    /// which makes the guest answer with an ACK; no answer to `probes` of them resets both sides.
    pub(super) fn keepalive(&mut self, now: Instant, conn: &mut TcpConn, k: Keepalive) {
        if conn.keepalive_probes >= k.probes {
            debug!("tcp {:?}: no answer to keepalive; reset", conn.key);
            self.core.stats().tcp_keepalive_timeouts += 1;
            self.release(conn, true);
            self.reset_guest(now, conn);
            conn.set_state(TcpState::Closed);
            return;
        }
        conn.keepalive_probes += 1;
        self.core.stats().tcp_keepalive_probes += 1;
        let seq = SeqNumber(conn.snd_una.0.wrapping_sub(1));
        let mut repr = self.header(now, conn, seq, 0, 0);
        repr.sack_ranges = [None; 3];
        self.emit(now, conn.key, &repr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::SocketId;
    use crate::wire::Ipv4Address;

    fn conn(port: u16, now: Instant) -> TcpConn {
        let key = ConnKey {
            guest: (IpAddress::V4(Ipv4Address([10, 0, 2, 15])), port),
            remote: (IpAddress::V4(Ipv4Address([10, 0, 2, 2])), 80),
        };
        TcpConn::new(
            key,
            1,
            SocketId(u32::from(port)),
            TcpState::Established,
            SeqNumber(1),
            now,
        )
    }

    #[test]
    fn due_connections_come_once_and_stale_entries_are_skipped() {
        let t0 = Instant::from_secs(10);
        let mut conns = HashMap::new();
        let mut timers = Timers::default();
        let mut c = conn(1000, t0);
        c.deadline = Some(t0 + Duration::from_millis(200));
        timers.schedule(&mut c, None);
        // Moving later adds nothing; moving earlier adds an entry and makes the first stale.
        c.deadline = Some(t0 + Duration::from_millis(400));
        timers.schedule(&mut c, None);
        assert_eq!(timers.deadlines.len(), 1);
        c.delack = Some(t0 + Duration::from_millis(40));
        timers.schedule(&mut c, None);
        assert_eq!(timers.deadlines.len(), 2);
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(40)));
        conns.insert(c.key, c);
        let mut due = Vec::new();
        timers.take_due(t0 + Duration::from_millis(39), &mut conns, &mut due);
        assert!(due.is_empty());
        timers.take_due(t0 + Duration::from_millis(300), &mut conns, &mut due);
        // Both entries were due; only the live one (40 ms) names the connection.
        assert_eq!(due.len(), 1);
        assert!(timers.deadlines.len() == 0);
        assert_eq!(conns.values().next().unwrap().timer_at, None);
    }

    #[test]
    fn stale_entries_stay_bounded() {
        let t0 = Instant::from_secs(10);
        let mut conns = HashMap::new();
        let mut timers = Timers::default();
        for port in 0..4u16 {
            let c = conn(1000 + port, t0);
            conns.insert(c.key, c);
        }
        let keys: Vec<ConnKey> = conns.keys().copied().collect();
        // A far keepalive-like deadline, then many delayed ACKs that fire: each cycle leaves the
        // far entry behind as it is scheduled anew.
        for round in 0..1000u64 {
            let now = t0 + Duration::from_millis(round * 50);
            for key in &keys {
                let c = conns.get_mut(key).unwrap();
                c.deadline = Some(now + Duration::from_secs(7200));
                c.delack = Some(now + Duration::from_millis(40));
                timers.schedule(c, None);
            }
            let mut due = Vec::new();
            timers.take_due(now + Duration::from_millis(40), &mut conns, &mut due);
            for key in &keys {
                let c = conns.get_mut(key).unwrap();
                c.delack = None;
                timers.schedule(c, None);
            }
            timers.compact(&conns);
            assert!(
                timers.deadlines.len() <= 2 * conns.len() + crate::deadlines::COMPACT_SLACK + 1
            );
        }
        // Every connection still has its live entry.
        for c in conns.values() {
            assert_eq!(c.timer_at, c.deadline);
        }
    }
}
