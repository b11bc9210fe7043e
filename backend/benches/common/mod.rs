//! What the benchmarks share (each bench compiles this module on its own and uses part of it).
#![allow(dead_code)]

/// CPU seconds the calling thread has used.
pub fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// utime + stime of a /proc stat file, in seconds.
fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU seconds (user + system) thread `tid` of process `pid` has used.
pub fn task_cpu_seconds(pid: u32, tid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/task/{tid}/stat"))
}

/// The virtgate binary running for a benchmark, its sockets in a directory of its own (removed,
/// and the process killed, when dropped).
pub struct Virtgate {
    pub child: std::process::Child,
    pub dir: std::path::PathBuf,
}

impl Virtgate {
    /// Starts virtgate with `extra` arguments (the QEMU socket and `--api-socket` are given), waits
    /// for its socket and connects the in-process frontend with `features`.
    pub fn start(
        tag: &str,
        features: u64,
        extra: &[&str],
    ) -> (Virtgate, virtgate::frontend::TestFrontend) {
        Self::start_pairs(tag, features, extra, 1)
    }

    /// [`Virtgate::start`] with the frontend setting up `pairs` queue pairs (give `--queues`
    /// in `extra` and MQ in `features`).
    pub fn start_pairs(
        tag: &str,
        features: u64,
        extra: &[&str],
        pairs: usize,
    ) -> (Virtgate, virtgate::frontend::TestFrontend) {
        use std::time::{Duration, Instant};
        let dir = std::env::temp_dir().join(format!("virtgate-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vm.sock");
        // `VIRTGATE_BENCH_BIN`: another build to measure (an A/B comparison in one session).
        let binary = std::env::var_os("VIRTGATE_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_virtgate").into());
        let child = std::process::Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--api-socket")
            .arg(dir.join("api.sock"))
            .args(extra)
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("virtgate");
        let vg = Virtgate { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let fe = virtgate::frontend::TestFrontend::connect_pairs(
            &socket,
            features,
            virtgate::frontend::EnableOrder::AfterSetup,
            pairs,
        )
        .expect("the frontend connects");
        (vg, fe)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stats document, from the API.
    pub fn stats(&self) -> Result<String, String> {
        virtgate::api::request(&self.dir.join("api.sock"), "GET", "/stats", None)
    }
}

impl Drop for Virtgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
