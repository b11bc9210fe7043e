//! The `virtgate` binary: arguments in, `server::run` out; `virtgate ctl ...` talks to a running
//! one's control API.

use std::process::ExitCode;

use clap::Parser;
use virtgate::config::Args;

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    if std::env::args_os().nth(1).is_some_and(|a| a == "ctl") {
        argv.nth(1);
        return virtgate::ctl::main(argv);
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
