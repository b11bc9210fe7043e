//! The `virtgate` binary: arguments in, `server::run` out; `virtgate ctl ...` talks to a running
//! one's control API; `virtgate generate ...` writes the man pages and shell completions.

use std::process::ExitCode;

use clap::Parser;
use virtgate::config::Args;

/// A panic anywhere ends the process at once (docs/qemu-interop.md, "When virtgate fails"). A
/// worker that unwound would leave a device with a poisoned lock and dead queues behind, and QEMU
/// waiting on it; a process that is gone closes its sockets, so QEMU's `reconnect=` and the service
/// manager's restart bring a fresh virtgate back.
fn abort_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::force_capture();
        eprintln!(
            "virtgate: internal error in thread '{name}': {info}\n{backtrace}\n\
             virtgate: aborting; QEMU with reconnect= attaches to a restarted virtgate"
        );
        std::process::abort();
    }));
}

fn main() -> ExitCode {
    abort_on_panic();
    let mut argv = std::env::args_os();
    match std::env::args_os().nth(1) {
        Some(a) if a == "ctl" => {
            argv.nth(1);
            return virtgate::ctl::main(argv);
        }
        Some(a) if a == "generate" => {
            argv.nth(1);
            return virtgate::generate::main(argv);
        }
        _ => {}
    }
    let args = Args::parse();
    let default_level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("virtgate: {e}");
            return ExitCode::from(2);
        }
    };
    match virtgate::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("virtgate: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
