//! `virtgate ctl`: the control API (see [`crate::api`]) for people.
//!
//! ```text
//! virtgate ctl --api-socket PATH stats
//! virtgate ctl --api-socket PATH metrics
//! virtgate ctl --api-socket PATH coalesce [--rx-usecs N] [--rx-frames N] ... [--adaptive-rx BOOL]
//! virtgate ctl --api-socket PATH capture start FILE | capture stop
//! virtgate ctl --api-socket PATH link [up | down]
//! virtgate ctl --api-socket PATH forward list | add SPEC | remove SPEC
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
