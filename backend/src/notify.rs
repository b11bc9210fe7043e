//! Readiness for a service manager: systemd's notification protocol (`sd_notify(3)`). When
//! `NOTIFY_SOCKET` names a unix datagram socket (a path, or `@name` in the abstract namespace),
//! virtgate sends `READY=1` once QEMU's socket listens and the API answers, so that a unit with
//! `Type=notify` starts QEMU only then, and `STOPPING=1` when it shuts down. Written here rather
//! than linked from libsystemd: the protocol is one datagram of `KEY=VALUE` lines.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// A connected socket to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
}

impl Notifier {
    /// The service manager's socket from `NOTIFY_SOCKET`, connected now (before the sandbox
    /// closes the file system); `None` when the variable is unset or empty.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Notifier::connect(Path::new(&v)).map(Some),
            _ => Ok(None),
        }
    }

    /// Connects to `target`: a socket's path, or `@name` for the abstract namespace.
    pub fn connect(target: &Path) -> io::Result<Notifier> {
        let socket = UnixDatagram::unbound()?;
        let text = target.to_string_lossy();
        match text.strip_prefix('@') {
            Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name)?)?,
            None => socket.connect(target)?,
        }
        Ok(Notifier { socket })
    }

    /// `READY=1`, with the process's id and a status line for `systemctl status`.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS={}\n",
            std::process::id(),
            one_line(status)
        ))
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\n")
    }

    fn send(&self, message: &str) -> io::Result<()> {
        self.socket.send(message.as_bytes()).map(|_| ())
    }
}

/// A status text stays one line (a newline would start another assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_stopping_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("virtgate-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(&path).unwrap();
        n.ready("serving\non vm.sock").unwrap();
        let mut buf = [0u8; 512];
        let len = manager.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        let pid = format!("MAINPID={}", std::process::id());
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["READY=1", pid.as_str(), "STATUS=serving on vm.sock"]
        );
        n.stopping().unwrap();
        let len = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_abstract_socket_is_named_with_an_at() {
        let name = format!("virtgate-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(&name).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::connect(Path::new(&format!("@{name}"))).unwrap();
        n.stopping().unwrap();
        let mut buf = [0u8; 64];
        let len = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\n");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        let err = Notifier::connect(Path::new("/nonexistent/virtgate/notify.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
