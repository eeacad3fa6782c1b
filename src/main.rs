//! The `emoknow` binary: parse arguments, run, print errors, exit with a meaningful code.

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `println!` panics when stdout is a closed pipe (`emoknow show 2 | head`): that is the
    // reader's choice, not an error, so leave quietly with success.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    emoknow::model::tune_allocator();
    let cli = cli::Cli::parse();
    if cli.fine_tunes() {
        emoknow::model::tune_candle_threads();
    }
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`emoknow query … | head`) is not an error.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            let what: &(dyn std::error::Error + 'static) = err.as_ref();
            eprintln!("emoknow: {}", emoknow::error::chain(what));
            if let Some(hint) = cli::hint(&err) {
                eprintln!("hint: {hint}");
            }
            cli::exit_code_for(&err)
        }
    }
}
