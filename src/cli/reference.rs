//! `completions`, `man` and the hidden `help-markdown`: shell completions, man pages and
//! docs/cli.md, all generated from the clap definitions of [`super::Cli`], so none of them can
//! say something `--help` does not.

use super::Ctx;
use anyhow::Context;
use clap::{CommandFactory, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The width help is wrapped at in the generated reference, whatever the terminal.
const WIDTH: usize = 100;

/// Print a shell completion script.
///
/// Install it where your shell looks for completions, for example:
///
///   emoknow completions bash > ~/.local/share/bash-completion/completions/emoknow
///
///   emoknow completions zsh > "${fpath[1]}/_emoknow"
///
///   emoknow completions fish > ~/.config/fish/completions/emoknow.fish
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

/// Print the man page (roff), or write one page per command into a directory.
///
///   emoknow man | man -l -
///
///   emoknow man --dir /usr/local/share/man/man1    (emoknow.1, emoknow-ingest.1, …)
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write emoknow.1 and one emoknow-<command>.1 per command into this directory
    /// (created if absent) instead of printing emoknow.1.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Print the Markdown reference of every command (docs/cli.md).
#[derive(clap::Args, Debug)]
pub struct HelpMarkdownArgs {}

pub fn run_completions(args: CompletionsArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use clap_complete::Shell as S;
    let shell = match args.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    let mut cmd = super::Cli::command();
    // Into a buffer first: clap_complete panics on a write error, and a reader that closes
    // the pipe early (`| head`) is not one.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "emoknow", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_man(args: ManArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let cmd = super::Cli::command();
    match args.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::io::stdout().lock().write_all(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            let pages = std::fs::read_dir(&dir)?
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
                .count();
            ctx.note(format!("{pages} man pages in {}", dir.display()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_help_markdown(_args: HelpMarkdownArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    std::io::stdout().lock().write_all(markdown().as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// docs/cli.md: every visible command's `--help`, in the order `emoknow --help` lists them.
pub fn markdown() -> String {
    let mut cmd = super::Cli::command()
        .term_width(WIDTH)
        .max_term_width(WIDTH);
    cmd.build();
    let mut out = String::from(
        "# Command reference\n\n\
         Every command's `--help`, generated from the same clap definitions as the binary, its\n\
         shell completions (`emoknow completions bash|zsh|fish`) and its man pages\n\
         (`emoknow man`). `cargo test` fails when this file is stale; regenerate it with\n\
         `cargo run --release -- help-markdown > docs/cli.md`.\n\n",
    );
    let mut toc = String::new();
    let mut body = String::new();
    walk(&mut cmd, "emoknow", 0, &mut toc, &mut body);
    out.push_str(&toc);
    out.push('\n');
    out.push_str(&body);
    out
}

fn walk(cmd: &mut clap::Command, path: &str, depth: usize, toc: &mut String, body: &mut String) {
    let anchor = path.replace(' ', "-");
    toc.push_str(&format!("{}- [`{path}`](#{anchor})\n", "  ".repeat(depth)));
    let help = cmd.render_long_help().to_string();
    body.push_str(&format!("## `{path}`\n\n```text\n"));
    for line in help.lines() {
        body.push_str(line.trim_end());
        body.push('\n');
    }
    body.push_str("```\n\n");
    let names: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        if let Some(sub) = cmd.find_subcommand_mut(&name) {
            walk(sub, &format!("{path} {name}"), depth + 1, toc, body);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// docs/cli.md is what `help-markdown` prints. `EMOKNOW_BLESS=1 cargo test` rewrites it.
    #[test]
    fn docs_cli_md_is_what_the_generator_prints() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md");
        let want = markdown();
        if std::env::var_os("EMOKNOW_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        if have != want {
            let line = have
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .map_or(have.lines().count().min(want.lines().count()), |i| i)
                + 1;
            panic!(
                "docs/cli.md is stale from line {line}: regenerate it with \
                 `cargo run --release -- help-markdown > docs/cli.md`\n  docs/cli.md: {:?}\n  generated:   {:?}",
                have.lines().nth(line - 1).unwrap_or(""),
                want.lines().nth(line - 1).unwrap_or("")
            );
        }
    }

    #[test]
    fn every_visible_command_has_a_section_and_hidden_ones_none() {
        let md = markdown();
        for name in ["ingest", "query", "train", "serve", "completions", "man"] {
            assert!(md.contains(&format!("## `emoknow {name}`")), "{name}");
        }
        assert!(md.contains("## `emoknow knowledge import`"));
        assert!(!md.contains("tiny-bert") && !md.contains("## `emoknow help-markdown`"));
    }
}
