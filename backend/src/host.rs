//! Real host sockets for the stack: the one implementation of [`netstack::HostIo`].
//!
//! Every socket is non-blocking and registered, with its id as the event data, on an epoll
//! instance of its own. That epoll descriptor is itself registered on the vring worker's epoll as
//! one event ([`crate::device::HOST_EVENT`]): the worker stays one thread, with no thread per
//! connection, and host sockets can be numbered freely (the worker's event ids are 16 bits).
//!
//! ICMP echo uses ping sockets (`SOCK_DGRAM`, `IPPROTO_ICMP`) where `net.ipv4.ping_group_range`
//! allows them, and raw ICMP sockets (needing CAP_NET_RAW) otherwise. A raw socket sees every echo
//! reply from its remote, so each raw flow gets an identifier of its own and filters on it.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use log::{debug, info};
use netstack::wire::{Icmpv4Packet, Icmpv4Repr, Ipv4Packet};
use netstack::{HostIo, SocketId};
use socket2::{Domain, Protocol, Socket, Type};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

enum HostSocket {
    Udp(UdpSocket),
    Tcp(Socket),
    /// A ping socket (ICMP or ICMPv6): the kernel owns the identifier and the checksum.
    Ping {
        socket: Socket,
        v6: bool,
    },
    /// A raw ICMP or ICMPv6 socket, connected to its remote: the flow's identifier is ours. Every
    /// raw socket on the host sees every reply from the remote, so a reply is taken only if it
    /// answers a request of this flow still outstanding (which also drops duplicates).
    Raw {
        socket: Socket,
        ident: u16,
        outstanding: VecDeque<u16>,
        v6: bool,
    },
}

impl HostSocket {
    fn fd(&self) -> RawFd {
        match self {
            HostSocket::Udp(s) => s.as_raw_fd(),
            HostSocket::Tcp(s) => s.as_raw_fd(),
            HostSocket::Ping { socket: s, .. } | HostSocket::Raw { socket: s, .. } => s.as_raw_fd(),
        }
    }
}

/// `SIOCATMARK` from <asm-generic/sockios.h> (the libc crate does not export it).
const SIOCATMARK: libc::Ioctl = 0x8905;

/// Echo requests remembered per raw flow for matching replies.
const OUTSTANDING_ECHOES: usize = 64;

/// Which ICMP echo sockets the host allows; learned on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EchoMode {
    Unknown,
    Ping,
    Raw,
    Unavailable,
}

/// The host sockets of one stack.
pub struct HostSockets {
    epoll: Epoll,
    slots: Vec<Option<HostSocket>>,
    free: Vec<u32>,
    echo_mode: EchoMode,
    /// Random identifiers for raw echo flows: other processes' raw sockets share the replies.
    ident_seed: RandomState,
    idents_issued: u64,
    /// One ICMP message being built or read.
    icmp_buf: Vec<u8>,
    /// The epoll events each slot is registered for (`EventSet` bits), so that an unchanged
    /// interest costs no system call.
    interest: Vec<u32>,
    /// SO_KEEPALIVE settings for TCP sockets: a host peer that vanished is noticed.
    keepalive: Option<netstack::Keepalive>,
}

impl HostSockets {
    pub fn new() -> io::Result<Self> {
        Ok(HostSockets {
            epoll: Epoll::new()?,
            slots: Vec::new(),
            free: Vec::new(),
            echo_mode: EchoMode::Unknown,
            ident_seed: RandomState::new(),
            idents_issued: 0,
            icmp_buf: vec![0; 65536],
            interest: Vec::new(),
            keepalive: None,
        })
    }

    /// TCP keepalive on every host TCP socket opened from now on (`None`: the kernel's default,
    /// off).
    pub fn set_tcp_keepalive(&mut self, keepalive: Option<netstack::Keepalive>) {
        self.keepalive = keepalive;
    }

    /// The options every connected host TCP socket gets.
    fn prepare_tcp(&self, s: &Socket) -> io::Result<()> {
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.set_nodelay(true)?;
        // Urgent data arrives inline; SIOCATMARK tells where (see `tcp_at_mark`).
        s.set_out_of_band_inline(true)?;
        if let Some(k) = self.keepalive {
            let secs = |d: netstack::Duration| std::time::Duration::from_secs(d.total_secs());
            s.set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(secs(k.idle))
                    .with_interval(secs(k.interval))
                    .with_retries(k.probes),
            )?;
        }
        Ok(())
    }

    /// The epoll descriptor to register with the worker.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Sockets with events, into `events`; returns how many. Never blocks.
    pub fn ready(&self, events: &mut [EpollEvent]) -> usize {
        self.epoll.wait(0, events).unwrap_or(0)
    }

    fn add(&mut self, s: HostSocket) -> io::Result<SocketId> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        if let Err(e) = self.epoll.ctl(
            ControlOperation::Add,
            s.fd(),
            EpollEvent::new(EventSet::IN, u64::from(id)),
        ) {
            self.free.push(id);
            return Err(e);
        }
        self.slots[id as usize] = Some(s);
        self.interest.resize(self.slots.len(), 0);
        self.interest[id as usize] = EventSet::IN.bits();
        Ok(SocketId(id))
    }

    fn get(&self, sock: SocketId) -> io::Result<&HostSocket> {
        self.slots
            .get(sock.0 as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn tcp(&self, sock: SocketId) -> io::Result<&Socket> {
        match self.get(sock)? {
            HostSocket::Tcp(s) => Ok(s),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }

    fn udp(&self, sock: SocketId) -> io::Result<&UdpSocket> {
        match self.get(sock)? {
            HostSocket::Udp(s) => Ok(s),
            _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }

    fn open_echo(&mut self, remote: IpAddr, mode: EchoMode) -> io::Result<HostSocket> {
        let ty = match mode {
            EchoMode::Ping => Type::DGRAM,
            _ => Type::RAW,
        };
        let v6 = remote.is_ipv6();
        let (domain, protocol) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let socket = Socket::new(domain, ty, Some(protocol))?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        socket.connect(&SocketAddr::from((remote, 0)).into())?;
        Ok(match mode {
            EchoMode::Ping => HostSocket::Ping { socket, v6 },
            _ => {
                self.idents_issued += 1;
                HostSocket::Raw {
                    socket,
                    ident: self.ident_seed.hash_one(self.idents_issued) as u16,
                    outstanding: VecDeque::with_capacity(OUTSTANDING_ECHOES),
                    v6,
                }
            }
        })
    }
}

impl HostIo for HostSockets {
    fn udp_connect(&mut self, remote: SocketAddr) -> io::Result<SocketId> {
        let local: SocketAddr = match remote {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let s = UdpSocket::bind(local)?;
        s.connect(remote)?;
        s.set_nonblocking(true)?;
        self.add(HostSocket::Udp(s))
    }

    fn udp_bind(&mut self, local: SocketAddr) -> io::Result<SocketId> {
        let s = UdpSocket::bind(local)?;
        s.set_nonblocking(true)?;
        self.add(HostSocket::Udp(s))
    }

    fn send(&mut self, sock: SocketId, payload: &[u8]) -> io::Result<usize> {
        self.udp(sock)?.send(payload)
    }

    fn send_to(&mut self, sock: SocketId, payload: &[u8], remote: SocketAddr) -> io::Result<usize> {
        self.udp(sock)?.send_to(payload, remote)
    }

    fn recv_from(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.udp(sock)?.recv_from(buf)
    }

    /// One `sendmsg` with UDP_SEGMENT (Linux 4.18+: the kernel cuts the payload into the
    /// datagrams, as the guest's own stack would have); where the kernel refuses that request
    /// (too many segments for it, a socket that cannot segment), one `sendmmsg` with a message per
    /// datagram. Either way one system call for the request.
    fn send_segments(
        &mut self,
        sock: SocketId,
        payload: &[u8],
        segment: usize,
        remote: Option<SocketAddr>,
    ) -> io::Result<(usize, bool)> {
        let segment = segment.clamp(1, usize::from(u16::MAX));
        let count = payload.len().div_ceil(segment).max(1);
        let fd = self.udp(sock)?.as_raw_fd();
        let name = remote.map(socket2::SockAddr::from);
        match send_gso(fd, payload, segment as u16, name.as_ref()) {
            Ok(_) => return Ok((count, true)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                ) => {}
            Err(e) => return Err(e),
        }
        send_each(fd, payload, segment, name.as_ref()).map(|n| (n, false))
    }

    fn recv_batch(
        &mut self,
        sock: SocketId,
        bufs: &mut [Vec<u8>],
        at: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        const MAX: usize = 64;
        let fd = self.udp(sock)?.as_raw_fd();
        let count = bufs.len().min(lens.len()).min(MAX);
        // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers, zero lengths).
        let mut iovs: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
        for i in 0..count {
            let space = &mut bufs[i][at..];
            iovs[i] = libc::iovec {
                iov_base: space.as_mut_ptr().cast(),
                iov_len: space.len(),
            };
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..count]` each point at one iovec describing memory of `bufs[i]`, which
        // is borrowed mutably for the whole call and outlives it; no name or control buffers are
        // given; recvmmsg writes at most `count` entries' `msg_len` and the buffers' bytes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, msg) in lens.iter_mut().zip(&msgs[..n]) {
            *len = msg.msg_len as usize;
        }
        Ok(n)
    }

    fn icmp_echo_open(&mut self, remote: IpAddr) -> io::Result<SocketId> {
        let socket = match self.echo_mode {
            EchoMode::Unavailable => return Err(io::Error::from(io::ErrorKind::PermissionDenied)),
            EchoMode::Ping | EchoMode::Raw => self.open_echo(remote, self.echo_mode)?,
            EchoMode::Unknown => match self.open_echo(remote, EchoMode::Ping) {
                Ok(s) => {
                    info!("ICMP echo through ping sockets");
                    self.echo_mode = EchoMode::Ping;
                    s
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    match self.open_echo(remote, EchoMode::Raw) {
                        Ok(s) => {
                            info!("ping sockets not allowed (net.ipv4.ping_group_range); ICMP echo through raw sockets");
                            self.echo_mode = EchoMode::Raw;
                            s
                        }
                        Err(e) => {
                            info!("no ICMP sockets allowed: guests' pings beyond the gateway are refused ({e})");
                            self.echo_mode = EchoMode::Unavailable;
                            return Err(e);
                        }
                    }
                }
                Err(e) => return Err(e),
            },
        };
        self.add(socket)
    }

    fn icmp_echo_send(&mut self, sock: SocketId, seq: u16, data: &[u8]) -> io::Result<()> {
        let (socket, ident, v6) = match self.slots.get_mut(sock.0 as usize).and_then(Option::as_mut)
        {
            Some(HostSocket::Ping { socket, v6 }) => (&*socket, 0, *v6),
            Some(HostSocket::Raw {
                socket,
                ident,
                outstanding,
                v6,
            }) => {
                if outstanding.len() == OUTSTANDING_ECHOES {
                    outstanding.pop_front();
                }
                outstanding.push_back(seq);
                (&*socket, *ident, *v6)
            }
            Some(HostSocket::Udp(_) | HostSocket::Tcp(_)) => {
                return Err(io::Error::from(io::ErrorKind::InvalidInput))
            }
            None => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        let len = 8 + data.len();
        if len > self.icmp_buf.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        if v6 {
            // RFC 4443 §4.1; the kernel fills in the checksum of ping and raw ICMPv6 sockets
            // (RFC 3542 §3.1), and the identifier of ping sockets.
            let b = &mut self.icmp_buf[..len];
            b[..4].copy_from_slice(&[128, 0, 0, 0]);
            b[4..6].copy_from_slice(&ident.to_be_bytes());
            b[6..8].copy_from_slice(&seq.to_be_bytes());
            b[8..].copy_from_slice(data);
        } else {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no: seq,
                data,
            }
            .emit(&mut self.icmp_buf[..len]);
        }
        (&*socket).write(&self.icmp_buf[..len]).map(|_| ())
    }

    fn icmp_echo_recv(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<(u16, usize)> {
        let (socket, raw_ident, mut outstanding, v6) =
            match self.slots.get_mut(sock.0 as usize).and_then(Option::as_mut) {
                Some(HostSocket::Ping { socket, v6 }) => (&*socket, None, None, *v6),
                Some(HostSocket::Raw {
                    socket,
                    ident,
                    outstanding,
                    v6,
                }) => (&*socket, Some(*ident), Some(outstanding), *v6),
                _ => return Err(io::Error::from(io::ErrorKind::NotFound)),
            };
        // Skip what is not ours (a raw socket sees every ICMP message from its remote); bounded by
        // the socket's queue, as each read consumes one message.
        loop {
            let n = (&*socket).read(&mut self.icmp_buf)?;
            let msg = &self.icmp_buf[..n];
            // Raw IPv4 sockets deliver the IPv4 header too; ICMPv6 sockets never do.
            let icmp = match raw_ident {
                Some(_) if !v6 => match Ipv4Packet::new_checked(msg) {
                    Ok(ip) => &msg[usize::from(ip.header_len())..n],
                    Err(_) => continue,
                },
                _ => msg,
            };
            if icmp.len() < 8 {
                continue;
            }
            let reply_type = if v6 {
                129
            } else {
                netstack::wire::icmpv4::TYPE_ECHO_REPLY
            };
            let (ident, seq) = (
                u16::from_be_bytes([icmp[4], icmp[5]]),
                u16::from_be_bytes([icmp[6], icmp[7]]),
            );
            if icmp[0] != reply_type || raw_ident.is_some_and(|id| id != ident) {
                continue;
            }
            if !v6 && Icmpv4Packet::new_checked(icmp).is_err() {
                continue;
            }
            if let Some(out) = outstanding.as_mut() {
                let Some(i) = out.iter().position(|s| *s == seq) else {
                    debug!("host ICMP: reply seq {seq} answers nothing outstanding");
                    continue;
                };
                out.remove(i);
            }
            let data = &icmp[8..];
            let len = data.len().min(buf.len());
            buf[..len].copy_from_slice(&data[..len]);
            return Ok((seq, len));
        }
    }

    fn tcp_listen(&mut self, local: SocketAddr) -> io::Result<SocketId> {
        let s = Socket::new(
            Domain::for_address(local),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind(&local.into())?;
        s.listen(128)?;
        self.add(HostSocket::Tcp(s))
    }

    fn tcp_accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        let (s, peer) = self.tcp(listener)?.accept()?;
        self.prepare_tcp(&s)?;
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        let id = self.add(HostSocket::Tcp(s))?;
        Ok((id, peer))
    }

    fn tcp_connect(&mut self, remote: SocketAddr) -> io::Result<SocketId> {
        let s = Socket::new(
            Domain::for_address(remote),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        self.prepare_tcp(&s)?;
        match s.connect(&remote.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let id = self.add(HostSocket::Tcp(s))?;
        self.set_interest(id, false, true);
        Ok(id)
    }

    fn tcp_connect_result(&mut self, sock: SocketId) -> io::Result<()> {
        let s = self.tcp(sock)?;
        if let Some(e) = s.take_error()? {
            return Err(e);
        }
        match s.peer_addr() {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
            Err(e) => Err(e),
        }
    }

    fn tcp_send(&mut self, sock: SocketId, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.tcp(sock)?.write_vectored(data)
    }

    fn tcp_recv(&mut self, sock: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp(sock)?.read(buf)
    }

    fn tcp_send_urgent(&mut self, sock: SocketId, byte: u8) -> io::Result<()> {
        self.tcp(sock)?.send_out_of_band(&[byte]).map(|_| ())
    }

    fn tcp_at_mark(&mut self, sock: SocketId) -> io::Result<bool> {
        let fd = self.tcp(sock)?.as_raw_fd();
        let mut at: libc::c_int = 0;
        // SAFETY: SIOCATMARK writes one int through the pointer, which points at `at`.
        let rc = unsafe { libc::ioctl(fd, SIOCATMARK, &mut at) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(at != 0)
    }

    fn tcp_shutdown_write(&mut self, sock: SocketId) -> io::Result<()> {
        self.tcp(sock)?.shutdown(std::net::Shutdown::Write)
    }

    fn tcp_abort(&mut self, sock: SocketId) {
        if let Ok(s) = self.tcp(sock) {
            // SO_LINGER 0: close sends a RST (RFC 9293 §3.10.7 "abort").
            let _ = s.set_linger(Some(std::time::Duration::ZERO));
        }
        self.close(sock);
    }

    fn set_interest(&mut self, sock: SocketId, readable: bool, writable: bool) {
        let Ok(s) = self.get(sock) else { return };
        let mut events = EventSet::empty();
        if readable {
            events |= EventSet::IN;
        }
        if writable {
            events |= EventSet::OUT;
        }
        let fd = s.fd();
        let slot = &mut self.interest[sock.0 as usize];
        if *slot == events.bits() {
            return;
        }
        *slot = events.bits();
        let _ = self.epoll.ctl(
            ControlOperation::Modify,
            fd,
            EpollEvent::new(events, u64::from(sock.0)),
        );
    }

    fn close(&mut self, sock: SocketId) {
        if let Some(slot) = self.slots.get_mut(sock.0 as usize) {
            if let Some(s) = slot.take() {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    s.fd(),
                    EpollEvent::new(EventSet::IN, u64::from(sock.0)),
                );
                self.free.push(sock.0);
            }
        }
    }
}

impl AsRawFd for HostSockets {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

/// Linux's UDP_SEGMENT socket option and control message (`linux/udp.h`), which the libc crate
/// names for uclibc only.
const UDP_SEGMENT: libc::c_int = 103;
/// The most datagrams [`send_each`] sends in one call (Linux's UDP_MAX_SEGMENTS is 128 at most).
const SEND_BATCH: usize = 128;

/// `msg_name` and `msg_namelen` for `addr`, or none (a connected socket).
fn msg_name(addr: Option<&socket2::SockAddr>) -> (*mut libc::c_void, libc::socklen_t) {
    match addr {
        // sendmsg and sendmmsg only read the name.
        Some(a) => (a.as_ptr().cast_mut().cast(), a.len()),
        None => (std::ptr::null_mut(), 0),
    }
}

/// Sends `payload` as datagrams of `segment` bytes in one `sendmsg` with a UDP_SEGMENT control
/// message.
fn send_gso(
    fd: RawFd,
    payload: &[u8],
    segment: u16,
    name: Option<&socket2::SockAddr>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // Room for one control message carrying a u16, aligned as cmsghdr needs.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    (msg.msg_name, msg.msg_namelen) = msg_name(name);
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `control`, which has room for the one header CMSG_FIRSTHDR returns
    // (checked non-null) and its u16 of data, written unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
    }
    // SAFETY: `msg` describes memory (the payload, the name, the control buffer) that outlives
    // the call; sendmsg only reads it.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends `payload` as datagrams of `segment` bytes with `sendmmsg`, a message each (at most
/// [`SEND_BATCH`]); returns how many left, or the first one's error.
fn send_each(
    fd: RawFd,
    payload: &[u8],
    segment: usize,
    name: Option<&socket2::SockAddr>,
) -> io::Result<usize> {
    // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers, zero lengths).
    let mut iovs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let (name, namelen) = msg_name(name);
    let mut count = 0;
    for (i, datagram) in payload.chunks(segment).take(SEND_BATCH).enumerate() {
        iovs[i] = libc::iovec {
            iov_base: datagram.as_ptr().cast_mut().cast(),
            iov_len: datagram.len(),
        };
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = name;
        msgs[i].msg_hdr.msg_namelen = namelen;
        count = i + 1;
    }
    // SAFETY: `msgs[..count]` each point at one iovec into `payload` and at `name`, both alive
    // for the call; sendmmsg reads them and writes only the entries' `msg_len`.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segmentation request leaves as its datagrams: in one `sendmsg` with UDP_SEGMENT, and
    /// through the `sendmmsg` fallback, connected or to a given address.
    #[test]
    fn segments_leave_as_datagrams_both_ways() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let payload: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let received = |n: usize| -> Vec<Vec<u8>> {
            (0..n)
                .map(|_| {
                    let mut buf = [0u8; 2048];
                    let (len, _) = server.recv_from(&mut buf).unwrap();
                    buf[..len].to_vec()
                })
                .collect()
        };
        let chunks: Vec<Vec<u8>> = payload.chunks(1000).map(<[u8]>::to_vec).collect();
        let mut h = HostSockets::new().unwrap();
        let connected = h.udp_connect(to).unwrap();
        assert_eq!(
            h.send_segments(connected, &payload, 1000, None).unwrap(),
            (3, true)
        );
        assert_eq!(received(3), chunks);
        let bound = h.udp_bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(
            h.send_segments(bound, &payload, 1000, Some(to)).unwrap(),
            (3, true)
        );
        assert_eq!(received(3), chunks);
        let fd = h.udp(bound).unwrap().as_raw_fd();
        let name = socket2::SockAddr::from(to);
        assert_eq!(send_each(fd, &payload, 1000, Some(&name)).unwrap(), 3);
        assert_eq!(received(3), chunks);
    }

    #[test]
    fn udp_connected_and_bound_sockets_report_readiness() {
        let mut h = HostSockets::new().unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = h.udp_connect(server.local_addr().unwrap()).unwrap();
        h.send(s, b"hello").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        server.send_to(b"back", from).unwrap();
        let mut events = vec![EpollEvent::default(); 8];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while h.ready(&mut events) == 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(events[0].data(), u64::from(s.0));
        let (n, _) = h.recv_from(s, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
        assert_eq!(
            h.recv_from(s, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        h.close(s);
        assert_eq!(h.send(s, b"x").unwrap_err().kind(), io::ErrorKind::NotFound);
        // Ids are reused.
        let again = h.udp_bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn a_burst_of_datagrams_is_received_in_one_batch() {
        let mut h = HostSockets::new().unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = h.udp_connect(server.local_addr().unwrap()).unwrap();
        h.send(s, b"hello").unwrap();
        let mut buf = [0u8; 16];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        let sent: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        for d in &sent {
            server.send_to(d, from).unwrap();
        }
        let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0xee; 42 + 2048]).collect();
        let mut lens = [0usize; 4];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < sent.len() {
            assert!(std::time::Instant::now() < deadline, "got {got:?}");
            match h.recv_batch(s, &mut bufs, 42, &mut lens) {
                Ok(n) => {
                    assert!((1..=4).contains(&n));
                    for (b, &len) in bufs.iter().zip(&lens[..n]) {
                        // Received behind the room left for headers, which is untouched.
                        assert!(b[..42].iter().all(|&x| x == 0xee));
                        got.push(b[42..42 + len].to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, sent);
        assert_eq!(
            h.recv_batch(s, &mut bufs, 42, &mut lens)
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn connected_udp_reports_port_unreachable() {
        let mut h = HostSockets::new().unwrap();
        // A port nobody listens on: bind and drop a socket to find one.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = h.udp_connect(port).unwrap();
        h.send(s, b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match h.recv_from(s, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn echo_to_loopback_comes_back() {
        let mut h = HostSockets::new().unwrap();
        let s = match h.icmp_echo_open(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
            Ok(s) => s,
            Err(e) => panic!("neither ping nor raw ICMP sockets are allowed here: {e}"),
        };
        h.icmp_echo_send(s, 42, b"virtgate").unwrap();
        let mut buf = [0u8; 64];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match h.icmp_echo_recv(s, &mut buf) {
                Ok((seq, n)) => {
                    assert_eq!((seq, &buf[..n]), (42, &b"virtgate"[..]));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no echo reply");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
