//! `virtgate generate`: the man pages and shell completions, rendered from the same clap
//! definitions the binary parses (so they cannot drift from it). `scripts/package-deb.sh` calls
//! it when it builds the Debian package.
//!
//! ```text
//! virtgate generate man DIR            # DIR/virtgate.1 and DIR/virtgate-ctl.1
//! virtgate generate completions SHELL  # bash, zsh, fish, elvish or powershell, on stdout
//! ```

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::config::Args;
use crate::ctl::CtlArgs;

#[derive(Debug, Parser)]
#[command(name = "virtgate generate")]
struct GenerateArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Writes the man pages virtgate.1 and virtgate-ctl.1 into DIR.
    Man { dir: PathBuf },
    /// Prints the completions of `virtgate` (and `virtgate ctl`) for SHELL.
    Completions { shell: Shell },
}

/// The whole command line as a shell sees it: the server's options, and `ctl` beside them
/// (`main` dispatches `ctl` before clap parses the server's arguments).
fn full_command() -> clap::Command {
    Args::command()
        .subcommand(CtlArgs::command().name("ctl"))
        .args_conflicts_with_subcommands(true)
}

fn write_man(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pages = [
        ("virtgate.1", Args::command()),
        ("virtgate-ctl.1", CtlArgs::command().name("virtgate-ctl")),
    ];
    for (file, cmd) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        std::fs::write(dir.join(file), out)?;
    }
    Ok(())
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: GenerateArgs = match crate::ctl::parse_subcommand("virtgate generate", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let result = match args.what {
        What::Man { dir } => write_man(&dir),
        What::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut full_command(), "virtgate", &mut out);
            io::stdout().write_all(&out)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtgate generate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_combined_command_line_is_consistent() {
        full_command().debug_assert();
    }

    #[test]
    fn man_pages_name_every_option() {
        let dir = std::env::temp_dir().join(format!("virtgate-man-{}", std::process::id()));
        write_man(&dir).unwrap();
        let page = std::fs::read_to_string(dir.join("virtgate.1")).unwrap();
        for arg in Args::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                // roff escapes the dashes of an option: \-\-socket.
                let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&escaped), "--{long} missing from virtgate.1");
            }
        }
        let ctl = std::fs::read_to_string(dir.join("virtgate-ctl.1")).unwrap();
        for sub in CtlArgs::command().get_subcommands() {
            assert!(
                ctl.contains(&sub.get_name().replace('-', "\\-")),
                "{} missing from virtgate-ctl.1",
                sub.get_name()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
