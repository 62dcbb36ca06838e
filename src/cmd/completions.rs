//! `quire completions SHELL` and `quire man`: shell completions and man pages, generated from
//! the command-line definition itself, so they always list what this binary accepts.

use super::output;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write one page per command (quire.1, quire-run.1, ...) into DIR instead of printing the
    /// page of `quire` to standard output.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script of `args.shell` for `cli`.
pub fn completions(args: CompletionsArgs, cli: clap::Command) -> anyhow::Result<u8> {
    let mut cli = without_hidden_subcommands(cli);
    let mut script = Vec::new();
    let name = cli.get_name().to_string();
    clap_complete::generate(args.shell, &mut cli, name, &mut script);
    output::bytes(&script)?;
    Ok(crate::exit::OK)
}

/// `cli` less its hidden subcommands (the PDF worker), which clap_complete would offer.
fn without_hidden_subcommands(cli: clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new(env!("CARGO_BIN_NAME"))
        .args(cli.get_arguments().cloned())
        .subcommands(visible)
}

/// Prints the roff man page of `cli`, or writes the pages of every command into a folder.
pub fn man(args: ManArgs, cli: clap::Command) -> anyhow::Result<u8> {
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cli, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli).render(&mut page)?;
            output::bytes(&page)?;
        }
    }
    Ok(crate::exit::OK)
}
