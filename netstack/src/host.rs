//! The host side of the gateway: the one trait through which the stack reaches host sockets.
//!
//! The stack never opens a socket itself. It asks a [`HostIo`] to open, use and close them, and the
//! device tells it when one is ready ([`crate::Stack::host_ready`]). virtgate implements the trait
//! with real non-blocking sockets; [`ScriptedHost`] implements it in memory so that protocol tests
//! are deterministic.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};

/// A host socket, named by the [`HostIo`] that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// Host sockets, as the stack needs them. Every call is non-blocking: an operation that would block
/// fails with `io::ErrorKind::WouldBlock`.
pub trait HostIo {
    /// A UDP socket connected to `remote` (errors from the remote, such as ICMP port unreachable,
    /// surface on later calls as `ConnectionRefused`).
    fn udp_connect(&mut self, remote: SocketAddr) -> io::Result<SocketId>;
    /// A UDP socket bound to `local`, for inbound port forwards.
    fn udp_bind(&mut self, local: SocketAddr) -> io::Result<SocketId>;
    /// Sends on a connected socket.
    fn send(&mut self, sock: SocketId, payload: &[u8]) -> io::Result<usize>;
    /// Sends from a bound socket to `remote`.
    fn send_to(&mut self, sock: SocketId, payload: &[u8], remote: SocketAddr) -> io::Result<usize>;
    /// Sends `payload` as datagrams of `segment` bytes (the last may be shorter), on a connected
    /// socket or from a bound one to `remote`: a guest's UDP segmentation request. Returns how
    /// many datagrams left and whether they left in one system call; the error of the first
    /// when none did. This default sends them one by one and stops at the first error.
    fn send_segments(
        &mut self,
        sock: SocketId,
        payload: &[u8],
        segment: usize,
        remote: Option<SocketAddr>,
    ) -> io::Result<(usize, bool)> {
        let mut n = 0;
        for datagram in payload.chunks(segment.max(1)) {
            let sent = match remote {
                Some(r) => self.send_to(sock, datagram, r),
                None => self.send(sock, datagram),
            };
            match sent {
                Ok(_) => n += 1,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok((n, false))
    }
    /// Receives one datagram and its sender.
    fn recv_from(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Receives up to `bufs.len()` datagrams of a connected socket at once (`recvmmsg`), each
    /// into `bufs[i][at..]`, and their lengths into `lens[i]`: how many (at least one), or the
    /// error the first receive met (`WouldBlock` when there was nothing). One system call for
    /// a burst instead of one per datagram; this default receives them one by one.
    fn recv_batch(
        &mut self,
        sock: SocketId,
        bufs: &mut [Vec<u8>],
        at: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let mut n = 0;
        for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
            match self.recv_from(sock, &mut buf[at..]) {
                Ok((got, _)) => {
                    *len = got;
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
    /// An ICMP echo socket towards `remote` (a ping socket, or a raw socket where ping sockets are
    /// not allowed). The identifier on the wire is the host's business: replies come back on this
    /// socket only.
    fn icmp_echo_open(&mut self, remote: IpAddr) -> io::Result<SocketId>;
    /// Sends an echo request with this sequence number and data.
    fn icmp_echo_send(&mut self, sock: SocketId, seq: u16, data: &[u8]) -> io::Result<()>;
    /// Receives one echo reply into `buf`: its sequence number and data length.
    fn icmp_echo_recv(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<(u16, usize)>;
    /// A listening TCP socket on `local`, for inbound forwards.
    fn tcp_listen(&mut self, local: SocketAddr) -> io::Result<SocketId>;
    /// Accepts one pending connection: the new socket and the peer's address.
    fn tcp_accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)>;
    /// Starts a non-blocking TCP connection; completion is reported through
    /// [`HostIo::tcp_connect_result`] once the socket becomes ready.
    fn tcp_connect(&mut self, remote: SocketAddr) -> io::Result<SocketId>;
    /// `Ok` once the connection is established, `WouldBlock` while pending, the error if it failed.
    fn tcp_connect_result(&mut self, sock: SocketId) -> io::Result<()>;
    /// Writes what fits of the buffers, in order, in one call (`writev`); `WouldBlock` when
    /// nothing does.
    fn tcp_send(&mut self, sock: SocketId, data: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Reads what is there; `Ok(0)` is the peer's FIN.
    fn tcp_recv(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one byte as urgent data (`send(..., MSG_OOB)`).
    fn tcp_send_urgent(&mut self, sock: SocketId, byte: u8) -> io::Result<()>;
    /// Whether the next byte to read is the urgent byte (SIOCATMARK; urgent data is read inline).
    fn tcp_at_mark(&mut self, sock: SocketId) -> io::Result<bool>;
    /// Sends FIN (shutdown for writing).
    fn tcp_shutdown_write(&mut self, sock: SocketId) -> io::Result<()>;
    /// Closes with a reset (SO_LINGER 0), as for a guest's RST.
    fn tcp_abort(&mut self, sock: SocketId);
    /// Which readiness the stack wants to hear about for `sock`.
    fn set_interest(&mut self, sock: SocketId, readable: bool, writable: bool);
    /// Closes a socket; its id may be reused.
    fn close(&mut self, sock: SocketId);
}

/// A host with no network: every open fails with `Unsupported`. For a gateway that only serves
/// link-local protocols (ARP, DHCP, echo to itself).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHost;

fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "no host network")
}

impl HostIo for NoHost {
    fn udp_connect(&mut self, _: SocketAddr) -> io::Result<SocketId> {
        Err(unsupported())
    }
    fn udp_bind(&mut self, _: SocketAddr) -> io::Result<SocketId> {
        Err(unsupported())
    }
    fn send(&mut self, _: SocketId, _: &[u8]) -> io::Result<usize> {
        Err(unsupported())
    }
    fn send_to(&mut self, _: SocketId, _: &[u8], _: SocketAddr) -> io::Result<usize> {
        Err(unsupported())
    }
    fn recv_from(&mut self, _: SocketId, _: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Err(unsupported())
    }
    fn icmp_echo_open(&mut self, _: IpAddr) -> io::Result<SocketId> {
        Err(unsupported())
    }
    fn icmp_echo_send(&mut self, _: SocketId, _: u16, _: &[u8]) -> io::Result<()> {
        Err(unsupported())
    }
    fn icmp_echo_recv(&mut self, _: SocketId, _: &mut [u8]) -> io::Result<(u16, usize)> {
        Err(unsupported())
    }
    fn tcp_listen(&mut self, _: SocketAddr) -> io::Result<SocketId> {
        Err(unsupported())
    }
    fn tcp_accept(&mut self, _: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        Err(unsupported())
    }
    fn tcp_connect(&mut self, _: SocketAddr) -> io::Result<SocketId> {
        Err(unsupported())
    }
    fn tcp_connect_result(&mut self, _: SocketId) -> io::Result<()> {
        Err(unsupported())
    }
    fn tcp_send(&mut self, _: SocketId, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(unsupported())
    }
    fn tcp_recv(&mut self, _: SocketId, _: &mut [u8]) -> io::Result<usize> {
        Err(unsupported())
    }
    fn tcp_send_urgent(&mut self, _: SocketId, _: u8) -> io::Result<()> {
        Err(unsupported())
    }
    fn tcp_at_mark(&mut self, _: SocketId) -> io::Result<bool> {
        Err(unsupported())
    }
    fn tcp_shutdown_write(&mut self, _: SocketId) -> io::Result<()> {
        Err(unsupported())
    }
    fn tcp_abort(&mut self, _: SocketId) {}
    fn set_interest(&mut self, _: SocketId, _: bool, _: bool) {}
    fn close(&mut self, _: SocketId) {}
}

/// What a [`ScriptedHost`] socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptedSocket {
    Tcp(SocketAddr),
    TcpListener(SocketAddr),
    /// Accepted from a listener, from this peer.
    TcpAccepted(SocketAddr),
    UdpConnected(SocketAddr),
    UdpBound(SocketAddr),
    IcmpEcho(IpAddr),
}

/// Something the stack sent to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Udp {
        sock: SocketId,
        to: SocketAddr,
        payload: Vec<u8>,
    },
    Echo {
        sock: SocketId,
        seq: u16,
        data: Vec<u8>,
    },
}

enum Inbound {
    Datagram(SocketAddr, Vec<u8>),
    Echo(u16, Vec<u8>),
    Error(io::ErrorKind),
}

/// An in-memory host for tests: records what the stack sends, and delivers what the test injects.
#[derive(Default)]
pub struct ScriptedHost {
    next: u32,
    pub sockets: HashMap<SocketId, ScriptedSocket>,
    pub sent: Vec<Sent>,
    pub closed: Vec<SocketId>,
    inbound: HashMap<SocketId, VecDeque<Inbound>>,
    /// Opens fail with this error while set.
    pub refuse: Option<io::ErrorKind>,
    /// TCP: the outcome of pending connects (absent: still pending).
    pub tcp_connected: HashMap<SocketId, Result<(), io::ErrorKind>>,
    /// TCP: bytes the host side received from the stack, per socket.
    pub tcp_written: HashMap<SocketId, Vec<u8>>,
    /// TCP: calls of `tcp_send` that wrote something (a gathered write is one).
    pub tcp_writes: usize,
    /// TCP: bytes (and, as `None`, the FIN) the host side will deliver to the stack.
    pub tcp_incoming: HashMap<SocketId, VecDeque<Option<Vec<u8>>>>,
    /// TCP: how many bytes a `tcp_send` accepts at most (a full socket buffer when 0).
    pub tcp_send_limit: Option<usize>,
    /// TCP: `tcp_send` fails with this error while set (the host peer went away).
    pub tcp_send_error: Option<io::ErrorKind>,
    pub tcp_shutdowns: Vec<SocketId>,
    /// TCP: urgent bytes sent, with how many ordinary bytes preceded each on the socket.
    pub tcp_urgent_sent: Vec<(SocketId, usize, u8)>,
    /// TCP: the next incoming chunk starts with the urgent byte.
    pub tcp_mark_next: HashMap<SocketId, bool>,
    pub tcp_aborted: Vec<SocketId>,
    pub interest: HashMap<SocketId, (bool, bool)>,
    /// TCP: peers waiting to be accepted, per listener.
    pub tcp_pending_accepts: HashMap<SocketId, VecDeque<SocketAddr>>,
}

impl ScriptedHost {
    pub fn new() -> Self {
        Self::default()
    }

    fn open(&mut self, s: ScriptedSocket) -> io::Result<SocketId> {
        if let Some(kind) = self.refuse {
            return Err(io::Error::from(kind));
        }
        self.next += 1;
        let id = SocketId(self.next);
        self.sockets.insert(id, s);
        Ok(id)
    }

    /// The socket opened for `s`, if any.
    pub fn find(&self, s: &ScriptedSocket) -> Option<SocketId> {
        self.sockets.iter().find(|(_, v)| *v == s).map(|(k, _)| *k)
    }

    /// Queues a datagram from `from` for `sock`.
    pub fn inject_datagram(&mut self, sock: SocketId, from: SocketAddr, payload: &[u8]) {
        self.inbound
            .entry(sock)
            .or_default()
            .push_back(Inbound::Datagram(from, payload.to_vec()));
    }

    /// Queues an echo reply for `sock`.
    pub fn inject_echo_reply(&mut self, sock: SocketId, seq: u16, data: &[u8]) {
        self.inbound
            .entry(sock)
            .or_default()
            .push_back(Inbound::Echo(seq, data.to_vec()));
    }

    /// Queues an error (as the kernel reports ICMP errors on a connected socket).
    pub fn inject_error(&mut self, sock: SocketId, kind: io::ErrorKind) {
        self.inbound
            .entry(sock)
            .or_default()
            .push_back(Inbound::Error(kind));
    }

    fn pop(&mut self, sock: SocketId) -> io::Result<Inbound> {
        self.inbound
            .get_mut(&sock)
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
    }
}

impl HostIo for ScriptedHost {
    fn udp_connect(&mut self, remote: SocketAddr) -> io::Result<SocketId> {
        self.open(ScriptedSocket::UdpConnected(remote))
    }

    fn udp_bind(&mut self, local: SocketAddr) -> io::Result<SocketId> {
        self.open(ScriptedSocket::UdpBound(local))
    }

    fn send(&mut self, sock: SocketId, payload: &[u8]) -> io::Result<usize> {
        let Some(ScriptedSocket::UdpConnected(to)) = self.sockets.get(&sock).cloned() else {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        };
        self.sent.push(Sent::Udp {
            sock,
            to,
            payload: payload.to_vec(),
        });
        Ok(payload.len())
    }

    fn send_to(&mut self, sock: SocketId, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sent.push(Sent::Udp {
            sock,
            to,
            payload: payload.to_vec(),
        });
        Ok(payload.len())
    }

    fn recv_from(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.pop(sock)? {
            Inbound::Datagram(from, data) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok((n, from))
            }
            Inbound::Error(kind) => Err(io::Error::from(kind)),
            Inbound::Echo(..) => Err(io::Error::from(io::ErrorKind::InvalidData)),
        }
    }

    fn icmp_echo_open(&mut self, remote: IpAddr) -> io::Result<SocketId> {
        self.open(ScriptedSocket::IcmpEcho(remote))
    }

    fn icmp_echo_send(&mut self, sock: SocketId, seq: u16, data: &[u8]) -> io::Result<()> {
        self.sent.push(Sent::Echo {
            sock,
            seq,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn icmp_echo_recv(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<(u16, usize)> {
        match self.pop(sock)? {
            Inbound::Echo(seq, data) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok((seq, n))
            }
            Inbound::Error(kind) => Err(io::Error::from(kind)),
            Inbound::Datagram(..) => Err(io::Error::from(io::ErrorKind::InvalidData)),
        }
    }

    fn tcp_listen(&mut self, local: SocketAddr) -> io::Result<SocketId> {
        self.open(ScriptedSocket::TcpListener(local))
    }

    fn tcp_accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        let peer = self
            .tcp_pending_accepts
            .get_mut(&listener)
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        let id = self.open(ScriptedSocket::TcpAccepted(peer))?;
        Ok((id, peer))
    }

    fn tcp_connect(&mut self, remote: SocketAddr) -> io::Result<SocketId> {
        self.open(ScriptedSocket::Tcp(remote))
    }

    fn tcp_connect_result(&mut self, sock: SocketId) -> io::Result<()> {
        match self.tcp_connected.get(&sock) {
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Some(Ok(())) => Ok(()),
            Some(Err(kind)) => Err(io::Error::from(*kind)),
        }
    }

    fn tcp_send(&mut self, sock: SocketId, data: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(kind) = self.tcp_send_error {
            return Err(io::Error::from(kind));
        }
        let total: usize = data.iter().map(|d| d.len()).sum();
        let n = self.tcp_send_limit.map_or(total, |l| l.min(total));
        if n == 0 && total > 0 {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let written = self.tcp_written.entry(sock).or_default();
        let mut left = n;
        for d in data {
            let k = left.min(d.len());
            written.extend_from_slice(&d[..k]);
            left -= k;
        }
        self.tcp_writes += usize::from(n > 0);
        if let Some(l) = self.tcp_send_limit.as_mut() {
            *l -= n;
        }
        Ok(n)
    }

    fn tcp_recv(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        let q = self.tcp_incoming.entry(sock).or_default();
        match q.front_mut() {
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Some(None) => Ok(0),
            Some(Some(data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                data.drain(..n);
                if data.is_empty() {
                    q.pop_front();
                }
                Ok(n)
            }
        }
    }

    fn tcp_send_urgent(&mut self, sock: SocketId, byte: u8) -> io::Result<()> {
        let before = self.tcp_written.get(&sock).map_or(0, Vec::len);
        self.tcp_urgent_sent.push((sock, before, byte));
        Ok(())
    }

    fn tcp_at_mark(&mut self, sock: SocketId) -> io::Result<bool> {
        Ok(self.tcp_mark_next.remove(&sock).unwrap_or(false))
    }

    fn tcp_shutdown_write(&mut self, sock: SocketId) -> io::Result<()> {
        self.tcp_shutdowns.push(sock);
        Ok(())
    }

    fn tcp_abort(&mut self, sock: SocketId) {
        self.tcp_aborted.push(sock);
        self.close(sock);
    }

    fn set_interest(&mut self, sock: SocketId, readable: bool, writable: bool) {
        self.interest.insert(sock, (readable, writable));
    }

    fn close(&mut self, sock: SocketId) {
        self.sockets.remove(&sock);
        self.inbound.remove(&sock);
        self.closed.push(sock);
    }
}
