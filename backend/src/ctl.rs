//! `virtgate ctl`: the control API (see [`crate::api`]) for people.
//!
//! ```text
//! virtgate ctl --api-socket PATH stats
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
    /// Prints every counter (the stats document, JSON).
    Stats,
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

/// Runs `virtgate ctl` with `args` (after the `ctl` word).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match CtlArgs::try_parse_from(
        std::iter::once(OsString::from("virtgate ctl")).chain(args),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let socket = args.api_socket.clone();
    let (method, path, body) = match args.command {
        CtlCommand::Stats => ("GET", "/stats", None),
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
