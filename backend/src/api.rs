//! The control API: HTTP/1.1 with JSON bodies on a unix socket (`--api-socket PATH`), so that
//! `curl --unix-socket PATH http://virtgate/stats` works, and `virtgate ctl` for people.
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `GET /stats` | | the stats document (as `--stats-file`) |
//! | `GET /metrics` | | every counter in the Prometheus text format |
//! | `GET /coalesce` | | the interrupt moderation settings |
//! | `PUT /coalesce` | any of `rx_usecs`, `rx_frames`, `rx_usecs_abs`, `tx_usecs`, `tx_frames`, `tx_usecs_abs`, `itr`, `adaptive_rx` | the settings now in force |
//! | `POST /capture/start` | `{"file": PATH}` | starts a pcapng capture (replacing a running one) |
//! | `POST /capture/stop` | | stops it; the file is complete when the answer comes |
//! | `GET /forwards` | | the inbound forwards open now |
//! | `POST /forwards` | `{"spec": "tcp:[ADDR:]PORT:GUEST_PORT"}` | opens one (the `--forward` syntax) |
//! | `DELETE /forwards` | `{"spec": ...}` | closes the one of that protocol and host address |
//! | `GET /link` | | `{"up": BOOL}` |
//! | `POST /inject` | `{"frames": [HEX...]}` or `{"file": PCAP}`; optional `"interval_us"`, `"fix_checksums"` | `{"injected": N, "dropped": N}`: the frames, in order, on the guest's RX path |
//! | `GET /path-mtu` | | `{"paths": ["PREFIX=MTU", ...]}`: the emulated path MTUs |
//! | `PUT /path-mtu` | `{"paths": ["198.51.100.0/24=1400", ...]}` | replaces them (`[]` clears) |
//! | `GET /tcp-options` | | `{"timestamps": BOOL, "sack": BOOL, "window_scale": BOOL}`: the TCP options new connections negotiate |
//! | `PUT /tcp-options` | any of `timestamps`, `sack`, `window_scale` | the options now in force (open connections keep theirs) |
//! | `GET /multicast` | | the querier's settings and the guest's group memberships per family (group, filter mode, sources, seconds left) |
//! | `GET /probes` | | every built-in probe: name, what it drives, what proves it, its parameters |
//! | `POST /probe` | `{"name": NAME, "params": {"count": 3, ...}}` | `{"probe": NAME, "frames": N, "dropped": N}` |
//! | `POST /link/down`, `POST /link/up` | | takes the link down (QEMU's connection is closed and new ones refused) or up |
//! | `GET /impair` | | the link impairments: seed, rules with their counters, schedule, frames waiting |
//! | `PUT /impair` | `{"rules": RULES, "seed": N}` | replaces the rules (docs/impairments.md) |
//! | `DELETE /impair` | | clears the rules and the schedule |
//! | `POST /impair/schedule` | `{"steps": [{"after_ms": N, "rules": RULES} or {"after_ms": N, "restore": true}]}` | schedules changes |
//!
//! `--metrics-address` serves `GET /metrics` alone over TCP, for Prometheus ([`serve_metrics`]).
//!
//! One request per connection (`Connection: close`); requests are bounded (16 MiB, which holds
//! an inject of 8 MiB of frames as hex; 5 s to arrive).
//! Whatever the device must do is sent to the vring worker as a [`Command`] and waited for (2 s),
//! so the datapath has no locks shared with this thread.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::{json, Map, Value};
use vmm_sys_util::eventfd::EventFd;

use crate::control::{Command, ImpairChange, MulticastState, Shared};
use crate::moderation::Coalesce;
use crate::stats;

/// Requests are at most this large.
const MAX_REQUEST: usize = 16 << 20;
/// Clients served at once, each on a thread of its own; one more is answered 503 at once. A slow
/// or stuck client holds only its own thread.
const MAX_CLIENTS: usize = 8;
/// The longest a client may take to send its whole request (line, headers and body).
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// The longest a client may take to read the reply (per write).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The request line and each header line are at most this long, and there are at most
/// `MAX_HEADERS` headers.
const MAX_LINE: usize = 8192;
const MAX_HEADERS: usize = 64;
/// The longest an inject with `interval_us` may take in all.
const MAX_INJECT_DURATION: Duration = Duration::from_secs(60);
/// How long the device may take to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The link, as the server keeps it: whether QEMU may be connected.
pub trait Link: Send + Sync {
    fn set_up(&self, up: bool);
    fn is_up(&self) -> bool;
}

/// The API's way to the device: a queue in [`Shared`] and an eventfd the worker listens on; and
/// to the link, through the server.
pub struct DeviceHandle {
    pub shared: Arc<Shared>,
    pub wake: EventFd,
    pub link: Arc<dyn Link>,
}

impl DeviceHandle {
    fn send(&self, c: Command) {
        self.shared
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
        let _ = self.wake.write(1);
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, Reply> {
        let (tx, rx) = mpsc::channel();
        self.send(make(tx));
        rx.recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| Reply::error(503, "the device did not answer"))
    }
}

/// An HTTP answer.
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn json(v: &Value) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: format!("{v:#}\n"),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: format!("{:#}\n", json!({ "error": message })),
        }
    }

    fn metrics(shared: &Shared) -> Reply {
        Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: metrics(shared),
        }
    }
}

/// Binds the API socket (replacing a stale file); [`serve`] it once the sandbox is on.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let listener = crate::sys::bind_listening(path)?;
    info!("control API on {}", path.display());
    Ok(listener)
}

/// Serves the API on a bound socket: a thread accepts, and each client is served on a thread of
/// its own, at most `MAX_CLIENTS` at once.
pub fn serve(listener: UnixListener, device: DeviceHandle) -> io::Result<()> {
    let device = Arc::new(device);
    let incoming = std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s)));
    serve_clients("virtgate-api", incoming, move |req| route(req, &device))
}

/// Binds `--metrics-address`: Prometheus scrapes TCP, not a unix socket. [`serve_metrics`] it
/// once the sandbox is on.
pub fn bind_metrics(address: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(address)?;
    info!("metrics on http://{}/metrics", listener.local_addr()?);
    Ok(listener)
}

/// Serves `GET /metrics` alone on the metrics address, read-only: the address may be reachable
/// by more than the API's socket is, so nothing else of the API is there.
pub fn serve_metrics(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    let incoming = std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s)));
    serve_clients("virtgate-metrics", incoming, move |req| {
        match (req.method.as_str(), req.route()) {
            ("GET", "/metrics") => Reply::metrics(&shared),
            (_, "/metrics") => Reply::error(405, "only GET /metrics is served here"),
            _ => Reply::error(404, "only GET /metrics is served here"),
        }
    })
}

/// A connected client: of the API's unix socket or of the metrics address.
trait Client: Read + Write + Send + 'static {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Client for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
}

impl Client for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
}

/// A thread named `name` accepts; each client is answered by `answer` on a thread of its own, at
/// most `MAX_CLIENTS` at once.
fn serve_clients<S: Client>(
    name: &str,
    incoming: impl Iterator<Item = io::Result<S>> + Send + 'static,
    answer: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> io::Result<()> {
    let answer: Answer = Arc::new(answer);
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for conn in incoming {
                match conn {
                    Ok(s) => serve_on_thread(s, &answer, &clients),
                    Err(e) => {
                        warn!("api: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

/// What answers a request: the API's router or the metrics address's.
type Answer = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Counts a client while it is served (also when its thread panics).
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve_on_thread<S: Client>(s: S, answer: &Answer, clients: &Arc<AtomicUsize>) {
    let _ = s.set_write_timeout(Some(REPLY_TIMEOUT));
    if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
        clients.fetch_sub(1, Ordering::AcqRel);
        debug!("api: {MAX_CLIENTS} clients already, one refused");
        let _ = write_reply(s, &Reply::error(503, "too many clients at once"));
        return;
    }
    let slot = ClientSlot(Arc::clone(clients));
    let answer = Arc::clone(answer);
    let spawned = std::thread::Builder::new()
        .name("virtgate-api-client".into())
        .spawn(move || {
            let _slot = slot;
            if let Err(e) = serve_one(s, &*answer) {
                debug!("api: {e}");
            }
        });
    if let Err(e) = spawned {
        warn!("api: cannot start a client thread: {e}");
    }
}

/// One request: its method, path and body.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

impl Request {
    /// The path without its query (`/metrics?x` is `/metrics`).
    fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// Reads from a client until a fixed deadline, however the bytes trickle in.
struct DeadlineReader<'a, S: Client> {
    s: &'a mut S,
    deadline: Instant,
}

impl<S: Client> Read for DeadlineReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request took too long",
            ));
        }
        self.s.set_read_timeout(Some(left))?;
        self.s.read(buf)
    }
}

/// A line of at most [`MAX_LINE`] bytes.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    r.take(MAX_LINE as u64).read_line(&mut line)?;
    if line.len() >= MAX_LINE && !line.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a line longer than 8 KiB",
        ));
    }
    Ok(line)
}

fn read_request<S: Client>(s: &mut S) -> io::Result<Request> {
    parse_request(DeadlineReader {
        s,
        deadline: Instant::now() + REQUEST_DEADLINE,
    })
}

/// Reads one request from `reader`, within the bounds above.
fn parse_request(reader: impl Read) -> io::Result<Request> {
    let mut r = BufReader::new(reader.take(MAX_REQUEST as u64));
    let line = read_line(&mut r)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut length = 0usize;
    for n in 0.. {
        if n == MAX_HEADERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more than 64 headers",
            ));
        }
        let h = read_line(&mut r)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                })?;
            }
        }
    }
    if length > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a body larger than 16 MiB",
        ));
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok(Request { method, path, body })
}

fn serve_one<S: Client>(mut s: S, answer: &dyn Fn(&Request) -> Reply) -> io::Result<()> {
    let reply = match read_request(&mut s) {
        Ok(req) => answer(&req),
        Err(e) => Reply::error(400, &e.to_string()),
    };
    write_reply(s, &reply)
}

fn write_reply<S: Client>(mut s: S, reply: &Reply) -> io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    write!(
        s,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reply.content_type,
        reply.body.len(),
        reply.body
    )?;
    s.flush()
}

fn route(req: &Request, device: &DeviceHandle) -> Reply {
    let path = req.route();
    match (req.method.as_str(), path) {
        ("GET", "/stats") => Reply::json(&stats_document(&device.shared)),
        ("GET", "/metrics") => Reply::metrics(&device.shared),
        ("GET", "/coalesce") => match device.ask(Command::GetCoalesce) {
            Ok(c) => Reply::json(&coalesce_json(&c)),
            Err(r) => r,
        },
        ("PUT", "/coalesce") => put_fields(
            device,
            &req.body,
            Command::GetCoalesce,
            apply_update,
            Command::SetCoalesce,
            |c| coalesce_json(&c),
        ),
        ("POST", "/capture/start") => {
            let file = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v.get("file").and_then(Value::as_str).map(PathBuf::from));
            let Some(file) = file else {
                return Reply::error(400, "body must be {\"file\": PATH}");
            };
            match device.ask(|tx| Command::CaptureStart(file.clone(), tx)) {
                Ok(Ok(())) => Reply::json(&json!({ "capturing": file })),
                Ok(Err(e)) => Reply::error(400, &e),
                Err(r) => r,
            }
        }
        ("POST", "/capture/stop") => match device.ask(Command::CaptureStop) {
            Ok(was) => Reply::json(&json!({ "stopped": was })),
            Err(r) => r,
        },
        ("GET", "/forwards") => match device.ask(Command::ListForwards) {
            Ok(list) => Reply::json(&Value::Array(list.iter().map(forward_json).collect())),
            Err(r) => r,
        },
        ("POST" | "DELETE", "/forwards") => {
            let spec = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v.get("spec").and_then(Value::as_str).map(str::to_string));
            let Some(spec) = spec else {
                return Reply::error(
                    400,
                    "body must be {\"spec\": \"tcp|udp:[ADDR:]PORT:GUEST_PORT\"}",
                );
            };
            let f = match crate::config::parse_forward(&spec) {
                Ok(f) => f,
                Err(e) => return Reply::error(400, &e.to_string()),
            };
            if req.method == "POST" {
                match device.ask(|tx| Command::AddForward(f, tx)) {
                    Ok(Ok(())) => Reply::json(&forward_json(&f)),
                    Ok(Err(e)) => Reply::error(400, &e),
                    Err(r) => r,
                }
            } else {
                match device.ask(|tx| Command::RemoveForward(f, tx)) {
                    Ok(true) => Reply::json(&json!({ "removed": forward_json(&f) })),
                    Ok(false) => Reply::error(404, "no such forward"),
                    Err(r) => r,
                }
            }
        }
        ("POST", "/inject") => inject(&req.body, device),
        ("GET", "/probes") => Reply::json(&probe_list()),
        ("GET", "/multicast") => match device.ask(Command::Multicast) {
            Ok(m) => Reply::json(&multicast_json(&m)),
            Err(r) => r,
        },
        ("GET", "/path-mtu") => match device.ask(Command::GetPathMtus) {
            Ok(t) => Reply::json(&path_mtus_json(&t)),
            Err(r) => r,
        },
        ("PUT", "/path-mtu") => {
            let specs: Option<Vec<String>> = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| serde_json::from_value(v.get("paths")?.clone()).ok());
            let Some(specs) = specs else {
                return Reply::error(400, "body must be {\"paths\": [\"PREFIX=MTU\", ...]}");
            };
            let table = match crate::config::parse_path_mtus(&specs) {
                Ok(t) => t,
                Err(e) => return Reply::error(400, &e),
            };
            match device.ask(|tx| Command::SetPathMtus(table.clone(), tx)) {
                Ok(Ok(())) => Reply::json(&path_mtus_json(&table)),
                Ok(Err(e)) => Reply::error(400, &e),
                Err(r) => r,
            }
        }
        ("GET", "/tcp-options") => match device.ask(Command::GetTcpOptions) {
            Ok(o) => Reply::json(&tcp_options_json(o)),
            Err(r) => r,
        },
        ("PUT", "/tcp-options") => put_fields(
            device,
            &req.body,
            Command::GetTcpOptions,
            apply_tcp_options,
            Command::SetTcpOptions,
            tcp_options_json,
        ),
        ("POST", "/probe") => probe(&req.body, device),
        ("GET", "/impair") => match device.ask(Command::GetImpair) {
            Ok(state) => Reply::json(&stats::impair_json(&state, true)),
            Err(r) => r,
        },
        ("PUT" | "DELETE", "/impair") | ("POST", "/impair/schedule") => {
            let change = if req.method == "DELETE" {
                Ok(ImpairChange {
                    rules: Some(Vec::new()),
                    ..ImpairChange::default()
                })
            } else {
                parse_impair_change(&req.body, path == "/impair/schedule")
            };
            match change {
                Ok(c) => match device.ask(|tx| Command::SetImpair(c, tx)) {
                    Ok(state) => Reply::json(&stats::impair_json(&state, true)),
                    Err(r) => r,
                },
                Err(e) => Reply::error(400, &e),
            }
        }
        ("GET", "/link") => Reply::json(&json!({ "up": device.link.is_up() })),
        ("POST", "/link/down" | "/link/up") => {
            device.link.set_up(path == "/link/up");
            Reply::json(&json!({ "up": device.link.is_up() }))
        }
        (
            _,
            "/stats" | "/metrics" | "/coalesce" | "/capture/start" | "/capture/stop" | "/link"
            | "/link/down" | "/link/up" | "/forwards" | "/inject" | "/probes" | "/probe"
            | "/path-mtu" | "/multicast" | "/impair" | "/impair/schedule" | "/tcp-options",
        ) => Reply::error(405, "method not allowed"),
        _ => Reply::error(404, "no such endpoint"),
    }
}

/// `POST /inject`: the frames of the body (hex or a capture file), checked whole before any is
/// sent, then queued at once or one every `interval_us`.
fn inject(body: &[u8], device: &DeviceHandle) -> Reply {
    let v = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Reply::error(
                400,
                "body must be {\"frames\": [HEX, ...]} or {\"file\": PCAP}, with optional \"interval_us\" and \"fix_checksums\"",
            )
        }
    };
    for k in v.keys() {
        if !["frames", "file", "interval_us", "fix_checksums"].contains(&k.as_str()) {
            return Reply::error(400, &format!("unknown field {k}"));
        }
    }
    let mut frames = match (v.get("frames"), v.get("file")) {
        (Some(Value::Array(list)), None) => {
            if list.len() > crate::pcapfile::MAX_FRAMES {
                return Reply::error(
                    400,
                    &format!("more than {} frames", crate::pcapfile::MAX_FRAMES),
                );
            }
            let parsed: Result<Vec<Vec<u8>>, String> = list
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    f.as_str()
                        .ok_or_else(|| format!("frames[{i}] is not a string"))
                        .and_then(|h| {
                            crate::pcapfile::parse_hex(h, crate::control::MAX_FRAME_LEN)
                                .map_err(|e| format!("frames[{i}]: {e}"))
                        })
                })
                .collect();
            match parsed {
                Ok(f) => f,
                Err(e) => return Reply::error(400, &e),
            }
        }
        (None, Some(Value::String(path))) => {
            match std::fs::read(path)
                .map_err(|e| format!("{path}: {e}"))
                .and_then(|d| {
                    crate::pcapfile::read_frames(&d, crate::control::MAX_FRAME_LEN)
                        .map_err(|e| format!("{path}: {e}"))
                }) {
                Ok(f) => f,
                Err(e) => return Reply::error(400, &e),
            }
        }
        _ => {
            return Reply::error(
                400,
                "give either frames (a list of hex strings) or file (a path)",
            )
        }
    };
    let interval = match v.get("interval_us") {
        None => 0,
        Some(i) => match i.as_u64() {
            Some(i) if i <= 10_000_000 => i,
            _ => return Reply::error(400, "interval_us must be a number from 0 to 10000000"),
        },
    };
    if Duration::from_micros(interval).saturating_mul(frames.len() as u32) > MAX_INJECT_DURATION {
        return Reply::error(
            400,
            &format!("interval_us times the frames exceeds {MAX_INJECT_DURATION:?}"),
        );
    }
    match v.get("fix_checksums") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            for f in &mut frames {
                netstack::wire::craft::fix_checksums(f);
            }
        }
        Some(_) => return Reply::error(400, "fix_checksums must be true or false"),
    }
    let total = frames.len();
    let mut injected = 0;
    if interval == 0 {
        match device.ask(|tx| Command::Inject(frames, tx)) {
            Ok(n) => injected = n,
            Err(r) => return r,
        }
    } else {
        // Spaced frames go one command each: the device never sleeps, the API thread does.
        let start = std::time::Instant::now();
        for (i, f) in frames.into_iter().enumerate() {
            let due = start + Duration::from_micros(interval) * i as u32;
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            match device.ask(|tx| Command::Inject(vec![f], tx)) {
                Ok(n) => injected += n,
                Err(r) => return r,
            }
        }
    }
    Reply::json(&json!({ "injected": injected, "dropped": total - injected }))
}

fn multicast_json(m: &MulticastState) -> Value {
    let groups = |list: &[netstack::multicast::Membership]| {
        list.iter()
            .map(|g| {
                json!({
                    "group": g.group.to_string(),
                    "mode": match g.mode {
                        netstack::multicast::FilterMode::Include => "include",
                        netstack::multicast::FilterMode::Exclude => "exclude",
                    },
                    "sources": g.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "expires_in_s": (g.expires - m.now).total_secs(),
                })
            })
            .collect::<Vec<_>>()
    };
    json!({
        "querier": m.querier,
        "query_interval_s": m.query_interval_s,
        "ipv4": groups(&m.ipv4),
        "ipv6": groups(&m.ipv6),
    })
}

fn path_mtus_json(table: &[netstack::pmtu::PathMtu]) -> Value {
    json!({ "paths": table.iter().map(ToString::to_string).collect::<Vec<_>>() })
}

/// A `PUT` of some fields of a setting: the setting in force, the body's fields applied to it
/// (a body that is no JSON object, or a bad field, is a 400 and changes nothing), the result set;
/// answers what is in force then.
fn put_fields<T>(
    device: &DeviceHandle,
    body: &[u8],
    get: impl FnOnce(Sender<T>) -> Command,
    apply: impl FnOnce(T, &Map<String, Value>) -> Result<T, String>,
    set: impl FnOnce(T, Sender<T>) -> Command,
    to_json: impl FnOnce(T) -> Value,
) -> Reply {
    let current = match device.ask(get) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let update = match serde_json::from_slice::<Map<String, Value>>(body) {
        Ok(m) => m,
        Err(e) => return Reply::error(400, &format!("body: {e}")),
    };
    let wanted = match apply(current, &update) {
        Ok(c) => c,
        Err(e) => return Reply::error(400, &e),
    };
    match device.ask(|tx| set(wanted, tx)) {
        Ok(c) => Reply::json(&to_json(c)),
        Err(r) => r,
    }
}

/// The body of `GET /tcp-options`, and of the `PUT` that sets all three.
pub(crate) fn tcp_options_json(o: netstack::TcpOptions) -> Value {
    json!({ "timestamps": o.timestamps, "sack": o.sack, "window_scale": o.window_scale })
}

/// `o` with the fields of `update` changed (each a boolean; an unknown field is an error, not
/// ignored).
fn apply_tcp_options(
    mut o: netstack::TcpOptions,
    update: &Map<String, Value>,
) -> Result<netstack::TcpOptions, String> {
    for (k, v) in update {
        let field = match k.as_str() {
            "timestamps" => &mut o.timestamps,
            "sack" => &mut o.sack,
            "window_scale" => &mut o.window_scale,
            _ => {
                return Err(format!(
                    "unknown field {k:?} (expected timestamps, sack, window_scale)"
                ))
            }
        };
        *field = v
            .as_bool()
            .ok_or_else(|| format!("{k} must be true or false"))?;
    }
    Ok(o)
}

/// `GET /probes`.
fn probe_list() -> Value {
    Value::Array(
        netstack::probe::PROBES
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "drives": p.drives,
                    "proves": p.proves,
                    "params": p.param_docs().iter().map(|(n, d, m)| {
                        json!({ "name": n, "default": d, "meaning": m })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// `POST /probe`: parameters may be given as JSON strings, numbers or booleans.
fn probe(body: &[u8], device: &DeviceHandle) -> Reply {
    let v = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let Some(name) = v.get("name").and_then(Value::as_str).map(str::to_string) else {
        return Reply::error(400, "body must be {\"name\": NAME, \"params\": {...}}");
    };
    let mut params = BTreeMap::new();
    match v.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => u8::from(*b).to_string(),
                    _ => return Reply::error(400, &format!("params.{k}: a string or a number")),
                };
                params.insert(k.clone(), text);
            }
        }
        Some(_) => return Reply::error(400, "params must be an object"),
    }
    match device.ask(|tx| Command::Probe(name.clone(), params, tx)) {
        Ok(Ok((built, queued))) => {
            Reply::json(&json!({ "probe": name, "frames": queued, "dropped": built - queued }))
        }
        Ok(Err(e)) => Reply::error(400, &e),
        Err(r) => r,
    }
}

fn stats_document(shared: &Shared) -> Value {
    let host_mtu = *shared.host_mtu.lock().unwrap_or_else(|e| e.into_inner());
    stats::to_json(&shared.snapshot(), host_mtu)
}

/// The stack's counters that are levels, not running totals (the device's and the rules' are all
/// totals).
const GAUGES: [&str; 4] = [
    "tcp_connections",
    "tcp_buffered_bytes",
    "flows_active",
    "multicast_groups",
];

/// A metric family's samples: (labels, value), the labels written out (`{pair="0"}`) or empty.
type Samples = Vec<(String, u64)>;

/// The Prometheus text exposition format (version 0.0.4), as `promtool check metrics` lints it:
/// running totals are counters called `virtgate_<group>_<name>_total`, levels are gauges called
/// `virtgate_<group>_<name>`, and every family has its counter's doc comment as `# HELP`.
fn metrics(shared: &Shared) -> String {
    use crate::control::DeviceStats;
    use crate::impair::RuleCounters;
    use netstack::stats::Stats;

    let snap = shared.snapshot();
    let mut out = String::new();
    let mut family =
        |group: &str, name: &str, gauge: bool, help: Option<&str>, samples: Samples| {
            let (kind, suffix) = if gauge {
                ("gauge", "")
            } else {
                ("counter", "_total")
            };
            // HELP escapes a backslash and a line break, the format's only escapes there.
            let help = help
                .unwrap_or_default()
                .replace('\\', "\\\\")
                .replace('\n', "\\n");
            // Prometheus wants base units: a count of nanoseconds is exported as seconds, exactly.
            let (name, nanoseconds) = match name.strip_suffix("_ns") {
                Some(stem) => (format!("virtgate_{group}_{stem}_seconds{suffix}"), true),
                None => (format!("virtgate_{group}_{name}{suffix}"), false),
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                if nanoseconds {
                    let (s, ns) = (v / 1_000_000_000, v % 1_000_000_000);
                    let _ = writeln!(out, "{name}{labels} {s}.{ns:09}");
                } else {
                    let _ = writeln!(out, "{name}{labels} {v}");
                }
            }
        };
    let one = |v: u64| vec![(String::new(), v)];
    snap.device
        .for_each(|n, v| family("device", n, false, DeviceStats::help(n), one(v)));
    snap.stack
        .for_each(|n, v| family("stack", n, GAUGES.contains(&n), Stats::help(n), one(v)));
    // Per queue pair: one labelled series per counter (`ethtool -S`'s per-queue lines).
    let pair = |i: usize| format!("{{pair=\"{i}\"}}");
    DeviceStats::default().for_each(|n, _| {
        let samples = (snap.queues.iter().enumerate())
            .map(|(i, q)| (pair(i), q.get(n).unwrap_or(0)))
            .collect();
        family("queue", n, false, DeviceStats::help(n), samples);
    });
    family(
        "queue",
        "pairs_active",
        true,
        Some("Queue pairs the guest uses, of those configured (--queues)."),
        one(snap.active_queue_pairs as u64),
    );
    family(
        "queue",
        "rx_itr",
        true,
        Some("The pair's RX interrupt throttle in force, interrupts per second (0: none)."),
        (snap.rx_itr.iter().enumerate())
            .map(|(i, r)| (pair(i), u64::from(*r)))
            .collect(),
    );
    // Per impairment rule: labelled by its place and direction (the text is in GET /impair).
    RuleCounters::default().for_each(|n, _| {
        let samples = (snap.impair.rules.iter().enumerate())
            .map(|(i, r)| {
                let labels = format!("{{rule=\"{i}\",direction=\"{}\"}}", r.direction.name());
                (labels, r.counters.get(n).unwrap_or(0))
            })
            .collect();
        family("impair", n, false, RuleCounters::help(n), samples);
    });
    family(
        "impair",
        "held_frames",
        true,
        Some("Frames the impairments hold now: delayed, reordered or queued behind a rate."),
        vec![
            (
                "{direction=\"to-guest\"}".into(),
                snap.impair.held[0] as u64,
            ),
            (
                "{direction=\"from-guest\"}".into(),
                snap.impair.held[1] as u64,
            ),
        ],
    );
    out
}

/// `PUT /impair` `{"rules": RULES, "seed": N}` or `POST /impair/schedule`
/// `{"steps": [{"after_ms": N, "rules": RULES} or {"after_ms": N, "restore": true}], "seed": N}`.
/// RULES is the `--impair` text, or a list of such texts.
fn parse_impair_change(body: &[u8], schedule: bool) -> Result<ImpairChange, String> {
    let usage = if schedule {
        "body must be {\"steps\": [{\"after_ms\": N, \"rules\": RULES} or {\"after_ms\": N, \"restore\": true}, ...]}, with an optional \"seed\""
    } else {
        "body must be {\"rules\": RULES}, RULES as in --impair (a string or a list of strings), with an optional \"seed\""
    };
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return Err(usage.into());
    };
    let allowed: &[&str] = if schedule {
        &["steps", "seed"]
    } else {
        &["rules", "seed"]
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown field {k}: {usage}"));
    }
    let rules_of = |v: &Value| -> Result<Vec<crate::impair::RuleSpec>, String> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Array(list) => list
                .iter()
                .map(|r| r.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("rules: a string or a list of strings")?
                .join(";"),
            _ => return Err("rules: a string or a list of strings".into()),
        };
        crate::impair::parse_rules(&text)
    };
    let seed = match m.get("seed") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or("seed: a number from 0 to 2^64-1")?),
    };
    if !schedule {
        let rules = rules_of(m.get("rules").ok_or(usage)?)?;
        return Ok(ImpairChange {
            rules: Some(rules),
            seed,
            schedule: None,
        });
    }
    let Some(Value::Array(list)) = m.get("steps") else {
        return Err(usage.into());
    };
    if list.len() > crate::impair::MAX_SCHEDULE_STEPS {
        return Err(format!(
            "at most {} steps",
            crate::impair::MAX_SCHEDULE_STEPS
        ));
    }
    let mut steps = Vec::with_capacity(list.len());
    for (i, step) in list.iter().enumerate() {
        let Value::Object(s) = step else {
            return Err(format!("steps[{i}]: {usage}"));
        };
        if let Some(k) = s
            .keys()
            .find(|k| !["after_ms", "rules", "restore"].contains(&k.as_str()))
        {
            return Err(format!("steps[{i}]: unknown field {k}"));
        }
        let after = s
            .get("after_ms")
            .and_then(Value::as_u64)
            .filter(|&ms| ms <= crate::impair::MAX_SCHEDULE_MS)
            .ok_or_else(|| {
                format!(
                    "steps[{i}].after_ms: a number of milliseconds up to {}",
                    crate::impair::MAX_SCHEDULE_MS
                )
            })?;
        let rules = match (s.get("rules"), s.get("restore")) {
            (Some(r), None) => Some(rules_of(r).map_err(|e| format!("steps[{i}]: {e}"))?),
            (None, Some(Value::Bool(true))) => None,
            _ => {
                return Err(format!(
                    "steps[{i}]: give either rules or \"restore\": true"
                ))
            }
        };
        steps.push((after, rules));
    }
    Ok(ImpairChange {
        rules: None,
        seed,
        schedule: Some(steps),
    })
}

fn forward_json(f: &netstack::Forward) -> Value {
    json!({
        "protocol": f.protocol.to_string(),
        "host": f.host.to_string(),
        "guest_port": f.guest_port,
    })
}

fn coalesce_json(c: &Coalesce) -> Value {
    json!({
        "rx_usecs": c.rx.usecs,
        "rx_frames": c.rx.frames,
        "rx_usecs_abs": c.rx.usecs_abs,
        "tx_usecs": c.tx.usecs,
        "tx_frames": c.tx.frames,
        "tx_usecs_abs": c.tx.usecs_abs,
        "itr": c.itr,
        "adaptive_rx": c.adaptive_rx,
    })
}

/// `c` with the fields of `update` changed, checked as the command line checks them.
fn apply_update(mut c: Coalesce, update: &Map<String, Value>) -> Result<Coalesce, String> {
    for (k, v) in update {
        if k == "adaptive_rx" {
            c.adaptive_rx = v.as_bool().ok_or("adaptive_rx must be true or false")?;
            continue;
        }
        let n = v
            .as_u64()
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| format!("{k} must be a number from 0 to 1000000"))?
            as u32;
        match k.as_str() {
            "rx_usecs" => c.rx.usecs = n,
            "rx_frames" => c.rx.frames = n,
            "rx_usecs_abs" => c.rx.usecs_abs = n,
            "tx_usecs" => c.tx.usecs = n,
            "tx_frames" => c.tx.frames = n,
            "tx_usecs_abs" => c.tx.usecs_abs = n,
            "itr" => c.itr = n,
            _ => return Err(format!("unknown setting {k}")),
        }
    }
    for (q, name) in [(c.rx, "rx_frames"), (c.tx, "tx_frames")] {
        if q.frames > 0 && q.usecs == 0 && q.usecs_abs == 0 {
            return Err(format!("{name} needs a timer too"));
        }
    }
    Ok(c)
}

/// `virtgate ctl`: one request to the API of a running virtgate; prints the answer's body.
/// Returns the body, or the error the API gave.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<String, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the API at {}: {e}", socket.display()))?;
    // An inject with an interval may take up to a minute.
    s.set_read_timeout(Some(MAX_INJECT_DURATION + Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: virtgate\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or("a malformed answer from the API")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("a malformed answer from the API")?;
    if status == 200 {
        Ok(body.to_string())
    } else {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        Err(format!("{status}: {message}"))
    }
}

/// Fuzzing entry: parses `data` as a request and routes nothing; the parser's bounds hold.
#[doc(hidden)]
pub fn fuzz_parse_request(data: &[u8]) {
    if let Ok(req) = parse_request(data) {
        assert!(req.body.len() <= MAX_REQUEST);
        assert!(req.method.len() + req.path.len() <= MAX_LINE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_checked() {
        let base = Coalesce::default();
        let m = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        let c = apply_update(
            base,
            &m(r#"{"rx_usecs": 100, "rx_frames": 8, "adaptive_rx": true}"#),
        )
        .unwrap();
        assert_eq!((c.rx.usecs, c.rx.frames, c.adaptive_rx), (100, 8, true));
        assert!(apply_update(base, &m(r#"{"rx_frames": 8}"#)).is_err());
        assert!(apply_update(base, &m(r#"{"itr": -1}"#)).is_err());
        assert!(apply_update(base, &m(r#"{"nonsense": 1}"#)).is_err());
    }
}
