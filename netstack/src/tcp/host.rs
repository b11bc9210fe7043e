//! The host side of a connection: its socket written from the guest's data, read into the
//! send buffer within the memory budget, its readiness interest, its release.

use std::io;

use log::debug;

use super::*;
use crate::host::HostIo;
use crate::time::Instant;
use crate::wire::SeqNumber;

impl<E: Env> Cx<'_, E> {
    /// Gives up the host socket: closed (orderly) or aborted (RST on the host side).
    pub(super) fn release(&mut self, conn: &mut TcpConn, abort: bool) {
        if conn.released {
            return;
        }
        conn.released = true;
        self.book.by_socket.remove(&conn.sock);
        if abort {
            self.core.host().tcp_abort(conn.sock);
        } else {
            self.core.host().close(conn.sock);
        }
        self.core.stats().flows_closed += 1;
    }

    /// Writes buffered guest data to the host; after the guest's FIN, shuts the host side down.
    /// What the socket does not take stays in the connection's own buffer: nothing stays lent
    /// from the ingress buffer past this call (see `tohost`).
    pub(super) fn flush_to_host(&mut self, conn: &mut TcpConn) {
        if conn.host_urgent.is_some() {
            // The urgent byte goes alone (MSG_OOB): the rare path works on copied bytes.
            self.spill(conn);
        }
        while !conn.to_host.is_empty() {
            if conn.host_urgent == Some(0) {
                let Some(byte) = conn.to_host.front() else {
                    break;
                };
                match self.core.host().tcp_send_urgent(conn.sock, byte) {
                    Ok(()) => {
                        conn.to_host.pop_front();
                        conn.host_urgent = None;
                        self.core.stats().tcp_tx_host_bytes += 1;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!("tcp {:?}: urgent byte refused by the host: {e}", conn.key);
                        conn.host_urgent = None;
                        continue;
                    }
                }
            }
            // Ordinary bytes stop short of the urgent one.
            let limit = conn.host_urgent.unwrap_or(usize::MAX);
            let (sock, host) = (conn.sock, self.core.host());
            let written = conn
                .to_host
                .write(&self.book.ingress, limit, |bufs| host.tcp_send(sock, bufs));
            match written {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(u) = conn.host_urgent.as_mut() {
                        *u -= n;
                    }
                    self.core.stats().tcp_tx_host_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The host peer is gone (EPIPE, ECONNRESET): the guest's data has nowhere to
                    // go, and the guest must learn it (a reset, as from a closed socket).
                    debug!("tcp {:?}: host write failed: {e}", conn.key);
                    conn.to_host.clear();
                    conn.host_write_failed = true;
                    break;
                }
            }
        }
        self.spill(conn);
        if conn.guest_fin && conn.to_host.is_empty() && !conn.host_shut {
            let _ = self.core.host().tcp_shutdown_write(conn.sock);
            conn.host_shut = true;
        }
    }

    /// Copies what the connection was lent from the ingress buffer into its own buffer.
    pub(super) fn spill(&mut self, conn: &mut TcpConn) {
        let n = conn.to_host.spill(&self.book.ingress);
        self.core.stats().tcp_tx_host_buffered_bytes += n as u64;
    }

    /// After a failed host write: reset the guest's side and abort the host socket.
    pub(super) fn check_host_write(&mut self, now: Instant, conn: &mut TcpConn) {
        if !conn.host_write_failed || conn.state == TcpState::Closed {
            return;
        }
        self.core.stats().tcp_host_resets += 1;
        self.reset_guest(now, conn);
        self.release(conn, true);
        conn.set_state(TcpState::Closed);
    }

    pub(super) fn update_interest(&mut self, conn: &mut TcpConn) {
        if conn.state == TcpState::Closed || conn.released {
            return;
        }
        if conn.host_eof && conn.host_shut && conn.to_host.is_empty() {
            // Both directions are done on the host side: the socket has nothing more to say (and a
            // level-triggered hang-up would wake us for ever).
            self.release(conn, false);
            return;
        }
        let connecting = conn.state == TcpState::Connecting;
        let readable = !matches!(conn.state, TcpState::Connecting | TcpState::SynSent)
            && !conn.host_eof
            && !conn.memory_starved
            && conn.to_guest.len() < TO_GUEST_CAP;
        let writable = connecting || !conn.to_host.is_empty();
        self.core.host().set_interest(conn.sock, readable, writable);
    }

    /// Host readiness for the connection's socket: the connect completed, or there is room to
    /// write, or data to read.
    pub(super) fn host_ready(&mut self, now: Instant, conn: &mut TcpConn) {
        let sock = conn.sock;
        if conn.state == TcpState::Connecting {
            match self.core.host().tcp_connect_result(sock) {
                Ok(()) => {
                    conn.set_state(TcpState::SynReceived);
                    conn.snd_nxt = conn.iss + 1;
                    conn.deadline = Some(now + conn.rto);
                    self.send_syn_ack(now, conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    debug!("tcp {:?}: host connect failed: {e}", conn.key);
                    self.core.stats().tcp_refused += 1;
                    let isn = SeqNumber(conn.rcv_nxt.0.wrapping_sub(1));
                    self.refuse(now, conn.key, isn, &e);
                    conn.set_state(TcpState::Closed);
                }
            }
            self.update_interest(conn);
            return;
        }
        self.flush_to_host(conn);
        self.check_host_write(now, conn);
        if conn.state == TcpState::Closed {
            return;
        }
        // Read while there is room for what the guest has not acknowledged, straight into the
        // send buffer.
        while !conn.host_eof && conn.to_guest.room() > 0 {
            // The budget, counting what this connection holds now rather than when last settled.
            let budget = (self.memory_budget() + conn.accounted)
                .saturating_sub(self.book.buffered + conn.buffered());
            if budget == 0 {
                self.core.stats().tcp_memory_waits += 1;
                if !conn.memory_starved {
                    conn.memory_starved = true;
                    self.book.starved.push(conn.key);
                }
                break;
            }
            // As much as the ring has allocated room for, at least READ_CHUNK (growing it only
            // as it fills, so a ring stays within twice its data). Few large reads rather than
            // many small ones: every read that frees the socket's buffer sends the host peer an
            // ACK, and on the host's loopback the peer's answer to it (its next segments, their
            // delivery into our socket) runs in our context: with 64 KiB reads, a fifth of
            // virtgate's CPU host → guest (docs/performance.md).
            let want = conn
                .to_guest
                .room()
                .min(conn.to_guest.allocated_room().max(READ_CHUNK))
                .min(budget);
            // The kernel stops a read at the urgent mark: the byte at the mark comes first in the
            // next read, inline (SO_OOBINLINE).
            if self.core.host().tcp_at_mark(sock).unwrap_or(false) && conn.guest_urgent.is_none() {
                conn.guest_urgent = Some(conn.snd_una + conn.to_guest.len());
                self.core.stats().tcp_urgent_from_host += 1;
            }
            match self
                .core
                .host()
                .tcp_recv(sock, conn.to_guest.free_mut(want))
            {
                Ok(0) => conn.host_eof = true,
                Ok(n) => {
                    conn.to_guest.commit(n);
                    self.core.stats().tcp_rx_host_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The host peer reset (or its keepalive timed out): so does the guest's
                    // connection.
                    debug!("tcp {:?}: host read failed: {e}", conn.key);
                    self.core.stats().tcp_host_resets += 1;
                    self.reset_guest(now, conn);
                    conn.set_state(TcpState::Closed);
                    break;
                }
            }
        }
        if conn.state != TcpState::Closed {
            self.output(now, conn);
            let receiving = matches!(
                conn.state,
                TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
            );
            if receiving && conn.window_update_due(self.budget_room()) {
                self.core.stats().tcp_window_updates += 1;
                conn.ack_owed = true;
                conn.ack_now = true;
            }
            self.ack_if_owed(now, conn);
        }
        self.update_interest(conn);
    }
}
