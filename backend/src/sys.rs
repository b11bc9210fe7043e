//! Thin wrappers over the few Linux primitives the std library lacks: a non-blocking timerfd and
//! poll(2).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

/// A non-blocking CLOCK_MONOTONIC timerfd that can be registered with epoll.
#[derive(Debug)]
pub struct Timer {
    fd: File,
}

impl Timer {
    pub fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes no pointers; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Timer {
            // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
            fd: unsafe { File::from_raw_fd(fd) },
        })
    }

    /// Arms the timer to fire once after `after` (a zero duration fires as soon as possible), or
    /// disarms it with `None`.
    pub fn set(&mut self, after: Option<Duration>) -> io::Result<()> {
        let value = match after {
            // A zero it_value would disarm: fire after one nanosecond instead.
            Some(d) => libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: if d.is_zero() {
                    1
                } else {
                    d.subsec_nanos() as libc::c_long
                },
            },
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: value,
        };
        // SAFETY: `spec` is a valid itimerspec on the stack; the old-value pointer may be null.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes the expiration count; returns whether the timer had fired.
    pub fn acknowledge(&mut self) -> bool {
        let mut buf = [0u8; 8];
        matches!(io::Read::read(&mut &self.fd, &mut buf), Ok(8))
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (forever with `None`); returns the index
/// of the first readable descriptor. Retries on EINTR.
pub fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Option<usize>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: `pfds` is a valid, live array of `pfds.len()` pollfd structures.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(pfds.iter().position(|p| p.revents != 0));
    }
}

/// Binds a listening unix socket at `path` so that the path appears only once the socket accepts
/// connections: it is bound and listening under a temporary name beside `path`, then renamed
/// into place (replacing whatever was there). A client that waits for the file and connects at
/// once (QEMU without `reconnect`, a test harness) never meets a bound socket that does not listen
/// yet (ECONNREFUSED). Where the temporary name would be too long for a socket address, `path` is
/// bound directly.
pub fn bind_listening(path: &std::path::Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::net::UnixListener;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixListener::bind(path);
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = match UnixListener::bind(&tmp) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => return UnixListener::bind(path),
        Err(e) => return Err(e),
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_and_can_be_disarmed() {
        let mut t = Timer::new().unwrap();
        assert!(!t.acknowledge(), "a new timer has not fired");
        t.set(Some(Duration::ZERO)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !t.acknowledge() {
            assert!(std::time::Instant::now() < deadline, "timer never fired");
            std::thread::sleep(Duration::from_millis(1));
        }
        t.set(Some(Duration::from_secs(3600))).unwrap();
        t.set(None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!t.acknowledge());
    }
}
