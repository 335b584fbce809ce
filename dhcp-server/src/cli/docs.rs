//! `dhcp-server generate-docs --out DIR`: the man pages (clap_mangen) and the bash, zsh and
//! fish completions (clap_complete) of this binary's own command line. Generated from the
//! binary rather than written by hand, so what the package documents is what it runs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

/// The shells whose completion directories Debian packages install into.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

#[derive(Debug, clap::Args)]
pub struct DocsArgs {
    /// Directory to fill: `man/` gets one page per visible command, `completions/` one
    /// file per shell (`dhcp-server.bash`, `_dhcp-server`, `dhcp-server.fish`).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: clap::Command, args: &DocsArgs) -> ExitCode {
    match write(cmd, &args.out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "dhcp-server: cannot write the docs into {}: {e}",
                args.out.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn write(mut cmd: clap::Command, out: &Path) -> io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    // Pages for the subcommands too (dhcp-server-run.1, ...), which the top page lists.
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let name = cmd.get_name().to_owned();
    for shell in SHELLS {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions)?;
    }
    Ok(())
}
