//! Output helpers: JSON, progress bars, highlighted snippets.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Prints `v` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// A progress bar on stderr (hidden under `-q` or when stderr is not a terminal).
pub fn bar(len: u64, msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta}) {prefix}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_string());
    pb
}

/// A spinner on stderr for work of unknown length.
pub fn spinner(msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Whether stdout is a terminal (colour highlights) or not (bracket highlights).
pub fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `text` with every occurrence of a token marked (ANSI bold red on a terminal, 【】 otherwise)
/// and cut to about `width` characters around the first match ([`emoknow::views::snippet`]).
pub fn highlight(text: &str, tokens: &[String], width: usize) -> String {
    let (open, close) = if color() {
        ("\x1b[1;31m", "\x1b[0m")
    } else {
        ("【", "】")
    };
    emoknow::views::snippet(text, tokens, width).render(open, close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_line() {
        assert_eq!(
            highlight("理由:\n\n担忧\n未来", &["担忧".into()], 40),
            "理由: 【担忧】 未来"
        );
    }

    #[test]
    fn highlights_all_tokens_in_window() {
        let h = highlight("我 担忧 孩子 的 未来", &["担忧".into(), "未来".into()], 40);
        assert_eq!(h, "我 【担忧】 孩子 的 【未来】");
        let long = format!("{}担忧{}", "甲".repeat(50), "乙".repeat(50));
        let h = highlight(&long, &["担忧".into()], 20);
        assert!(
            h.starts_with('…') && h.ends_with('…') && h.contains("【担忧】"),
            "{h}"
        );
    }
}
