//! `virtgate ctl`: the control API (see [`crate::api`]) for people.
//!
//! ```text
//! virtgate ctl --api-socket PATH stats [--json]
//! virtgate ctl --api-socket PATH watch [--interval SECS] [--count N]
//! virtgate ctl --api-socket PATH metrics
//! virtgate ctl --api-socket PATH coalesce [--rx-usecs N] [--rx-frames N] ... [--adaptive-rx BOOL]
//! virtgate ctl --api-socket PATH capture start FILE | capture stop
//! virtgate ctl --api-socket PATH link [up | down]
//! virtgate ctl --api-socket PATH forward list | add SPEC | remove SPEC
//! virtgate ctl --api-socket PATH inject [FILE.pcap|FILE.pcapng] [--hex HEX]... [--interval-us N] [--fix-checksums]
//! virtgate ctl --api-socket PATH probe list | NAME [--PARAM VALUE]... | NAME --help
//! virtgate ctl --api-socket PATH path-mtu [PREFIX=MTU... | --clear]
//! virtgate ctl --api-socket PATH multicast
//! virtgate ctl --api-socket PATH tcp-options [LIST]
//! virtgate ctl --api-socket PATH impair [RULES | --clear] [--seed N] [--schedule AFTER=RULES|AFTER=restore]...
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};

/// Talks to the control API of a running virtgate (`--api-socket`).
#[derive(Debug, Parser)]
#[command(name = "virtgate ctl")]
pub struct CtlArgs {
    /// The API socket virtgate was started with.
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,

    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Prints a summary: the guest, each queue pair's traffic, drops and interrupts, the stack's
    /// connections, flows and leases, the most frequent drop reasons.
    Stats {
        /// Print the whole stats document (JSON) instead.
        #[arg(long)]
        json: bool,
    },
    /// Shows live per-second rates (per queue pair: frames, bytes, drops and interrupts each
    /// way; the stack: connections, flows, drops), refreshed in the terminal like top.
    Watch {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Prints every counter in the Prometheus text format.
    Metrics,
    /// Shows the interrupt moderation settings, or changes the ones given.
    Coalesce {
        #[arg(long)]
        rx_usecs: Option<u32>,
        #[arg(long)]
        rx_frames: Option<u32>,
        #[arg(long)]
        rx_usecs_abs: Option<u32>,
        #[arg(long)]
        tx_usecs: Option<u32>,
        #[arg(long)]
        tx_frames: Option<u32>,
        #[arg(long)]
        tx_usecs_abs: Option<u32>,
        #[arg(long)]
        itr: Option<u32>,
        #[arg(long)]
        adaptive_rx: Option<bool>,
    },
    /// Starts or stops a packet capture (pcapng).
    Capture {
        #[command(subcommand)]
        action: CaptureAction,
    },
    /// Lists, adds or removes inbound forwards (the `--forward` syntax).
    Forward {
        #[command(subcommand)]
        action: ForwardAction,
    },
    /// Shows the link, or takes it down (QEMU is disconnected and refused) or up.
    Link {
        #[command(subcommand)]
        action: Option<LinkAction>,
    },
    /// Puts frames on the guest's RX path exactly as given, in order: from a pcap or pcapng
    /// file, or as hex.
    Inject {
        /// A pcap or pcapng file of Ethernet frames (read here, sent as hex).
        file: Option<PathBuf>,
        /// A frame as hex digits (`:` and white space allowed); repeatable, after the file's.
        #[arg(long = "hex", value_name = "HEX")]
        hex: Vec<String>,
        /// Microseconds between frames (0: all at once).
        #[arg(long, default_value_t = 0)]
        interval_us: u64,
        /// Recompute IPv4 header and TCP/UDP/ICMP checksums before sending.
        #[arg(long)]
        fix_checksums: bool,
    },
    /// Shows the multicast querier and the guest's group memberships.
    Multicast,
    /// Shows the emulated path MTUs, or replaces them with the ones given (`PREFIX=MTU`).
    PathMtu {
        /// `PREFIX=MTU`, as `--path-mtu`.
        specs: Vec<String>,
        /// Remove every emulated path MTU.
        #[arg(long, conflicts_with = "specs")]
        clear: bool,
    },
    /// Shows the TCP options new connections negotiate with the guest, or sets them.
    TcpOptions {
        /// `all`, `none`, or a list of ts, sack, wscale (as `--tcp-options`).
        list: Option<String>,
    },
    /// Shows the link impairments and their counters, replaces them with RULES (the --impair
    /// grammar, docs/impairments.md), clears them, or schedules changes.
    Impair {
        /// The new rules (words are joined with spaces), e.g. 'to-guest: loss 2% delay 20ms'.
        rules: Vec<String>,
        /// Remove every rule (and a pending schedule).
        #[arg(long, conflicts_with_all = ["rules", "schedule"])]
        clear: bool,
        /// Seed of the random decisions from now on.
        #[arg(long)]
        seed: Option<u64>,
        /// A scheduled change, AFTER (a time from now: 2s, 500ms) = RULES, or AFTER=restore for
        /// the rules in force now; repeatable. Replaces a pending schedule.
        #[arg(long, value_name = "AFTER=RULES", conflicts_with = "rules")]
        schedule: Vec<String>,
    },
    /// Sends a built-in probe to the guest (`probe list` names them, `probe NAME --help` shows a
    /// probe's parameters); parameters are `--NAME VALUE`.
    #[command(disable_help_flag = true)]
    Probe {
        /// `list`, or the probe's name.
        name: String,
        /// `--PARAM VALUE` pairs (or `--PARAM=VALUE`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        params: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ForwardAction {
    /// The forwards open now.
    List,
    /// Opens `tcp|udp:[ADDR:]PORT:GUEST_PORT`.
    Add { spec: String },
    /// Closes the forward of that protocol and host address.
    Remove { spec: String },
}

#[derive(Debug, Subcommand)]
enum LinkAction {
    Up,
    Down,
}

#[derive(Debug, Subcommand)]
enum CaptureAction {
    /// Captures into FILE (replacing a running capture).
    Start { file: PathBuf },
    /// Stops the capture; the file is complete when this returns.
    Stop,
}

/// Parses `args` as the command line of `name`, one of virtgate's subcommands: its arguments,
/// or the exit code once clap printed the help (0) or the mistake (2).
pub(crate) fn parse_subcommand<P: Parser>(
    name: &str,
    args: impl IntoIterator<Item = OsString>,
) -> Result<P, ExitCode> {
    P::try_parse_from(std::iter::once(OsString::from(name)).chain(args)).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Runs `virtgate ctl` with `args` (after the `ctl` word).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: CtlArgs = match parse_subcommand("virtgate ctl", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let socket = args.api_socket.clone();
    let (method, path, body) = match args.command {
        CtlCommand::Stats { json: false } => {
            return match fetch_stats(&socket) {
                Ok(doc) => {
                    print!("{}", summary(&doc));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("virtgate ctl: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        CtlCommand::Stats { json: true } => ("GET", "/stats", None),
        CtlCommand::Watch { interval, count } => return watch(&socket, interval, count),
        CtlCommand::Metrics => ("GET", "/metrics", None),
        CtlCommand::Coalesce {
            rx_usecs,
            rx_frames,
            rx_usecs_abs,
            tx_usecs,
            tx_frames,
            tx_usecs_abs,
            itr,
            adaptive_rx,
        } => {
            let mut m = Map::new();
            for (k, v) in [
                ("rx_usecs", rx_usecs),
                ("rx_frames", rx_frames),
                ("rx_usecs_abs", rx_usecs_abs),
                ("tx_usecs", tx_usecs),
                ("tx_frames", tx_frames),
                ("tx_usecs_abs", tx_usecs_abs),
                ("itr", itr),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            if let Some(a) = adaptive_rx {
                m.insert("adaptive_rx".into(), json!(a));
            }
            if m.is_empty() {
                ("GET", "/coalesce", None)
            } else {
                ("PUT", "/coalesce", Some(Value::Object(m)))
            }
        }
        CtlCommand::Capture {
            action: CaptureAction::Start { file },
        } => {
            // The server opens the file: give it a path that means the same there.
            let file = std::path::absolute(&file).unwrap_or(file);
            ("POST", "/capture/start", Some(json!({ "file": file })))
        }
        CtlCommand::Capture {
            action: CaptureAction::Stop,
        } => ("POST", "/capture/stop", None),
        CtlCommand::Forward {
            action: ForwardAction::List,
        } => ("GET", "/forwards", None),
        CtlCommand::Forward {
            action: ForwardAction::Add { spec },
        } => ("POST", "/forwards", Some(json!({ "spec": spec }))),
        CtlCommand::Forward {
            action: ForwardAction::Remove { spec },
        } => ("DELETE", "/forwards", Some(json!({ "spec": spec }))),
        CtlCommand::Link { action: None } => ("GET", "/link", None),
        CtlCommand::Link {
            action: Some(LinkAction::Up),
        } => ("POST", "/link/up", None),
        CtlCommand::Link {
            action: Some(LinkAction::Down),
        } => ("POST", "/link/down", None),
        CtlCommand::Inject {
            file,
            hex,
            interval_us,
            fix_checksums,
        } => match inject_body(file.as_deref(), &hex, interval_us, fix_checksums) {
            Ok(b) => ("POST", "/inject", Some(b)),
            Err(e) => {
                eprintln!("virtgate ctl: {e}");
                return ExitCode::from(2);
            }
        },
        CtlCommand::Multicast => ("GET", "/multicast", None),
        CtlCommand::PathMtu { specs, clear } => {
            if specs.is_empty() && !clear {
                ("GET", "/path-mtu", None)
            } else {
                ("PUT", "/path-mtu", Some(json!({ "paths": specs })))
            }
        }
        CtlCommand::TcpOptions { list: None } => ("GET", "/tcp-options", None),
        CtlCommand::TcpOptions { list: Some(list) } => match netstack::TcpOptions::parse(&list) {
            Ok(o) => ("PUT", "/tcp-options", Some(crate::api::tcp_options_json(o))),
            Err(e) => {
                eprintln!("virtgate ctl: tcp-options {list:?}: {e}");
                return ExitCode::from(2);
            }
        },
        CtlCommand::Impair {
            rules,
            clear,
            seed,
            schedule,
        } => match impair_request(&rules, clear, seed, &schedule) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("virtgate ctl impair: {e}");
                return ExitCode::from(2);
            }
        },
        CtlCommand::Probe { name, params } => {
            if name == "list" || params.iter().any(|p| p == "--help" || p == "-h") {
                return probe_help(&socket, &name);
            }
            match parse_params(&params) {
                Ok(p) => ("POST", "/probe", Some(json!({ "name": name, "params": p }))),
                Err(e) => {
                    eprintln!("virtgate ctl probe: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    match crate::api::request(&args.api_socket, method, path, body.as_ref()) {
        Ok(body) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("virtgate ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Bytes for people: B, KiB, MiB, GiB, TiB.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The stats document, `GET /stats`.
fn fetch_stats(socket: &std::path::Path) -> Result<Value, String> {
    crate::api::request(socket, "GET", "/stats", None)
        .and_then(|b| serde_json::from_str(&b).map_err(|e| e.to_string()))
}

/// Whether a device counter counts frames the device could not take or deliver.
fn is_drop_counter(name: &str) -> bool {
    name.contains("drop") || name.contains("_bad_")
}

/// A queue pair's drops: its counters of frames it could not take or deliver, summed.
fn pair_drops(pair: &Value) -> u64 {
    pair.as_object().map_or(0, |m| {
        m.iter()
            .filter(|(k, _)| is_drop_counter(k))
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    })
}

/// The reasons frames were dropped, most frequent first: the stack's `drop_*` counters and the
/// device's counters of frames it could not take or deliver, those that moved.
fn drop_reasons(doc: &Value) -> Vec<(String, u64)> {
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for (section, keep) in [
        (
            "stack",
            (|n: &str| n.starts_with("drop_")) as fn(&str) -> bool,
        ),
        ("device", is_drop_counter),
    ] {
        if let Some(m) = doc[section].as_object() {
            for (name, v) in m {
                match v.as_u64() {
                    Some(v) if v > 0 && keep(name) => reasons.push((name.clone(), v)),
                    _ => {}
                }
            }
        }
    }
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    reasons
}

/// `virtgate ctl stats`: the stats document (`GET /stats`) at a glance.
pub fn summary(doc: &Value) -> String {
    use std::fmt::Write as _;
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut out = String::new();
    let guest = &doc["guest"];
    let addr = |k: &str| guest[k].as_str().unwrap_or("-").to_string();
    let _ = writeln!(
        out,
        "guest        mac {}  ipv4 {}  ipv6 {}",
        addr("mac"),
        addr("ipv4"),
        addr("ipv6")
    );
    let pairs = doc["queues"]["pairs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "queue pairs  {} of {} in use",
        n(&doc["queues"], "active_pairs"),
        pairs.len()
    );
    let _ = writeln!(
        out,
        "{:<5}{:>12}{:>12}{:>12}{:>12}{:>9}{:>12}{:>12}",
        "pair", "rx frames", "rx bytes", "tx frames", "tx bytes", "drops", "rx irqs", "tx irqs"
    );
    for (i, q) in pairs.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:<5}{:>12}{:>12}{:>12}{:>12}{:>9}{:>12}{:>12}",
            i,
            n(q, "rx_frames"),
            human_bytes(n(q, "rx_bytes")),
            n(q, "tx_frames"),
            human_bytes(n(q, "tx_bytes")),
            pair_drops(q),
            n(q, "rx_interrupts"),
            n(q, "tx_interrupts")
        );
    }
    let stack = &doc["stack"];
    let v6_leases = guest["dhcpv6_leases"].as_array().map_or(0, Vec::len);
    let _ =
        writeln!(
        out,
        "stack        {} TCP connections ({} buffered), {} flows, DHCP lease {}, {} DHCPv6 leases",
        n(stack, "tcp_connections"),
        human_bytes(n(stack, "tcp_buffered_bytes")),
        n(stack, "flows_active"),
        if guest["ipv4"].is_string() { "held" } else { "none" },
        v6_leases
    );
    let reasons = drop_reasons(doc);
    if reasons.is_empty() {
        let _ = writeln!(out, "drops        none");
    } else {
        let top: Vec<String> = reasons
            .iter()
            .take(5)
            .map(|(name, v)| format!("{name} {v}"))
            .collect();
        let _ = writeln!(out, "top drops    {}", top.join(", "));
    }
    let rules = doc["impair"]["rules"].as_array().map_or(0, Vec::len);
    if rules > 0 {
        let _ = writeln!(out, "impairments  {rules} rules (virtgate ctl impair)");
    }
    out
}

/// `virtgate ctl watch`: the stats document every `interval` seconds, shown as rates over the
/// last interval, the screen redrawn in place (ANSI: cursor home, clear) as top does.
fn watch(socket: &std::path::Path, interval: f64, count: u64) -> ExitCode {
    use std::io::Write as _;
    if !(0.05..=3600.0).contains(&interval) {
        eprintln!("virtgate ctl watch: --interval is 0.05 to 3600 seconds");
        return ExitCode::from(2);
    }
    let mut before = match fetch_stats(socket) {
        Ok(d) => (d, std::time::Instant::now()),
        Err(e) => {
            eprintln!("virtgate ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut shown = 0u64;
    while count == 0 || shown < count {
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
        let now = match fetch_stats(socket) {
            Ok(d) => (d, std::time::Instant::now()),
            Err(e) => {
                eprintln!("virtgate ctl: {e}");
                return ExitCode::FAILURE;
            }
        };
        let secs = now.1.duration_since(before.1).as_secs_f64();
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\x1b[H\x1b[2J{}",
            rates(&before.0, &now.0, secs, interval)
        );
        let _ = out.flush();
        before = now;
        shown += 1;
    }
    ExitCode::SUCCESS
}

/// What moved between two stats documents `secs` apart, per second.
fn rates(before: &Value, now: &Value, secs: f64, interval: f64) -> String {
    use std::fmt::Write as _;
    let secs = secs.max(1e-3);
    let per_s = |a: &Value, b: &Value, k: &str| {
        b[k].as_u64()
            .unwrap_or(0)
            .saturating_sub(a[k].as_u64().unwrap_or(0)) as f64
            / secs
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "virtgate ctl watch: rates per second over {interval} s (Ctrl-C ends)"
    );
    let _ = writeln!(
        out,
        "{:<5}{:>12}{:>12}{:>12}{:>12}{:>10}{:>10}{:>10}",
        "pair",
        "rx frames/s",
        "rx Mbit/s",
        "tx frames/s",
        "tx Mbit/s",
        "drops/s",
        "rx irq/s",
        "tx irq/s"
    );
    let empty = Vec::new();
    let old_pairs = before["queues"]["pairs"].as_array().unwrap_or(&empty);
    for (i, q) in now["queues"]["pairs"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .enumerate()
    {
        let p = old_pairs.get(i).unwrap_or(&Value::Null);
        let mbit = |k: &str| per_s(p, q, k) * 8.0 / 1e6;
        let _ = writeln!(
            out,
            "{:<5}{:>12.0}{:>12.2}{:>12.0}{:>12.2}{:>10.0}{:>10.0}{:>10.0}",
            i,
            per_s(p, q, "rx_frames"),
            mbit("rx_bytes"),
            per_s(p, q, "tx_frames"),
            mbit("tx_bytes"),
            pair_drops(q).saturating_sub(pair_drops(p)) as f64 / secs,
            per_s(p, q, "rx_interrupts"),
            per_s(p, q, "tx_interrupts")
        );
    }
    let (s0, s1) = (&before["stack"], &now["stack"]);
    let _ = writeln!(
        out,
        "stack        {} TCP connections, {} flows, {:.0} flows opened/s, {:.0} drops/s",
        s1["tcp_connections"].as_u64().unwrap_or(0),
        s1["flows_active"].as_u64().unwrap_or(0),
        per_s(s0, s1, "flows_opened"),
        drop_reasons(now)
            .iter()
            .map(|r| r.1)
            .sum::<u64>()
            .saturating_sub(drop_reasons(before).iter().map(|r| r.1).sum::<u64>()) as f64
            / secs
    );
    out
}

/// The request of `ctl impair`; rules are checked here too, so mistakes are reported before
/// anything is sent.
fn impair_request(
    rules: &[String],
    clear: bool,
    seed: Option<u64>,
    schedule: &[String],
) -> Result<(&'static str, &'static str, Option<Value>), String> {
    let with_seed = |mut v: Value| {
        if let Some(s) = seed {
            v["seed"] = json!(s);
        }
        v
    };
    if clear {
        return Ok(("DELETE", "/impair", None));
    }
    if !schedule.is_empty() {
        let mut steps = Vec::new();
        for step in schedule {
            let (after, what) = step
                .split_once('=')
                .ok_or_else(|| format!("{step:?}: a step is AFTER=RULES or AFTER=restore"))?;
            let us = crate::impair::spec::parse_duration_us(
                after.trim(),
                crate::impair::MAX_SCHEDULE_MS * 1000,
            )?;
            let after_ms = us / 1000;
            if what.trim() == "restore" {
                steps.push(json!({ "after_ms": after_ms, "restore": true }));
            } else {
                crate::impair::parse_rules(what)?;
                steps.push(json!({ "after_ms": after_ms, "rules": what }));
            }
        }
        return Ok((
            "POST",
            "/impair/schedule",
            Some(with_seed(json!({ "steps": steps }))),
        ));
    }
    if rules.is_empty() {
        if seed.is_some() {
            return Err("--seed applies to new rules: give them too".into());
        }
        return Ok(("GET", "/impair", None));
    }
    let text = rules.join(" ");
    crate::impair::parse_rules(&text)?;
    Ok(("PUT", "/impair", Some(with_seed(json!({ "rules": text })))))
}

/// The body of an inject request: the file's frames, then the hex ones.
fn inject_body(
    file: Option<&std::path::Path>,
    hex: &[String],
    interval_us: u64,
    fix_checksums: bool,
) -> Result<Value, String> {
    let mut frames = Vec::new();
    if let Some(f) = file {
        let data = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let read = crate::pcapfile::read_frames(&data, crate::control::MAX_FRAME_LEN)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        frames.extend(read.iter().map(|f| crate::pcapfile::to_hex(f)));
    }
    for h in hex {
        // Checked here too, so that a typo is reported before anything is sent.
        crate::pcapfile::parse_hex(h, crate::control::MAX_FRAME_LEN)?;
        frames.push(h.clone());
    }
    if frames.is_empty() {
        return Err("nothing to inject: give a capture file or --hex".into());
    }
    Ok(json!({ "frames": frames, "interval_us": interval_us, "fix_checksums": fix_checksums }))
}

/// `--NAME VALUE` and `--NAME=VALUE` pairs.
fn parse_params(args: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(key) = a.strip_prefix("--") else {
            return Err(format!("{a}: parameters are --NAME VALUE"));
        };
        let (k, v) = match key.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (
                key.to_string(),
                it.next()
                    .ok_or_else(|| format!("--{key} needs a value"))?
                    .clone(),
            ),
        };
        out.insert(k, Value::String(v));
    }
    Ok(out)
}

/// `probe list` (a line per probe) or `probe NAME --help` (its parameters).
fn probe_help(socket: &std::path::Path, name: &str) -> ExitCode {
    let list = match crate::api::request(socket, "GET", "/probes", None)
        .and_then(|b| serde_json::from_str::<Vec<Value>>(&b).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("virtgate ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = |p: &Value, k: &str| p[k].as_str().unwrap_or("").to_string();
    if name == "list" {
        for p in &list {
            println!(
                "{:<26} {} (proves: {})",
                text(p, "name"),
                text(p, "drives"),
                text(p, "proves")
            );
        }
        return ExitCode::SUCCESS;
    }
    let Some(p) = list.iter().find(|p| p["name"] == name) else {
        eprintln!("virtgate ctl: no probe called {name} (see probe list)");
        return ExitCode::FAILURE;
    };
    println!(
        "{name}: {}\nproves: {}\nparameters:",
        text(p, "drives"),
        text(p, "proves")
    );
    for param in p["params"].as_array().into_iter().flatten() {
        let default = text(param, "default");
        let default = if default.is_empty() {
            String::new()
        } else {
            format!(" (default {default})")
        };
        println!(
            "  --{:<16} {}{default}",
            text(param, "name"),
            text(param, "meaning")
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_shows_pairs_the_stack_and_the_top_drops() {
        let doc = json!({
            "guest": { "mac": "52:54:00:12:34:56", "ipv4": "10.0.2.15", "ipv6": null,
                       "dhcpv6_leases": ["fd00::f"] },
            "queues": { "active_pairs": 2, "pairs": [
                { "rx_frames": 10, "rx_bytes": 1536, "tx_frames": 7, "tx_bytes": 512,
                  "tx_drop_runt": 2, "tx_bad_chain": 1, "rx_interrupts": 4, "tx_interrupts": 3 },
                { "rx_frames": 0, "rx_bytes": 0, "tx_frames": 0, "tx_bytes": 0 }
            ]},
            "device": { "tx_drop_runt": 2, "tx_bad_chain": 1, "rx_frames": 10 },
            "stack": { "tcp_connections": 3, "tcp_buffered_bytes": 2_097_152, "flows_active": 5,
                       "drop_tcp_checksum": 9, "drop_eth_foreign_destination": 1, "eth_rx_frames": 99 },
            "impair": { "rules": [] }
        });
        let text = summary(&doc);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "guest        mac 52:54:00:12:34:56  ipv4 10.0.2.15  ipv6 -"
        );
        assert_eq!(lines[1], "queue pairs  2 of 2 in use");
        let pair0: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            pair0,
            ["0", "10", "1.5", "KiB", "7", "512", "B", "3", "4", "3"]
        );
        assert!(
            lines[5].contains("3 TCP connections (2.0 MiB buffered), 5 flows"),
            "{text}"
        );
        assert!(
            lines[5].contains("DHCP lease held, 1 DHCPv6 leases"),
            "{text}"
        );
        assert_eq!(
            lines[6],
            "top drops    drop_tcp_checksum 9, tx_drop_runt 2, drop_eth_foreign_destination 1, tx_bad_chain 1"
        );
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
