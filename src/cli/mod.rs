//! The command line: clap definitions, one file per subcommand, shared output helpers.
//!
//! Each subcommand turns its arguments into the library's plain config, calls in, and prints:
//! data to stdout (a table, or one JSON document with `--json`), messages and progress to
//! stderr. Exit codes: 0 ok, 1 ran but found nothing (or `check` found problems), 2 error,
//! 130 interrupted. An error is printed as `emoknow: <what>: <cause>`, then, when the flags
//! can fix it, `hint: <flag-level advice>`.
//!
//! - `ingest`; `query` (query, show, stats); `check` (check, reindex); `index` (the ANN index
//!   build); `knowledge` (import;
//!   retrieve is in `similar`); `similar` (similar, knowledge retrieve); `embed`;
//!   `annotate` (annotate, the LLaMA-Factory export, dev-server); `export` (llama-factory,
//!   parquet); `migrate` (format migration, vector file compaction); `train` (train, eval,
//!   predict); `model` (pack); `serve` (the
//!   HTTP API and pages of [`emoknow::serve`]); `demo`; `bench`; `reference` (completions, man pages, docs/cli.md); `testkit` (tiny-bert, hidden:
//!   test tooling for the Python tests); `output` (JSON, progress
//!   bars, highlights); `hint` (library errors in flag terms).

mod annotate;
mod bench;
mod bounds;
mod check;
mod demo;
mod embed;
mod eval;
mod export;
mod hint;
mod index;
mod ingest;
mod knowledge;
mod migrate;
mod model;
mod output;
mod predict;
mod query;
mod reference;
mod serve;
mod similar;
mod testkit;
mod train;

pub use hint::hint;

use anyhow::Context;
use clap::{Parser, Subcommand};
use emoknow::model::classifier::Model;
use emoknow::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C; long loops check it and stop cleanly.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Knowledge-augmented multi-label Chinese emotion classification.
///
/// emoknow keeps a corpus of word-segmented Chinese sentences labelled with eight emotions
/// (Love, Joy, Anxiety, Sorrow, Expect, Hate, Surprise, Anger), LLM rationales about them,
/// and embeddings in one embedded store (sled + tantivy). It queries rationales by emotion
/// or keyword, annotates through any OpenAI-compatible endpoint, exports to and imports from
/// LLaMA-Factory, retrieves similar examples, trains, evaluates and predicts.
///
/// Start with `emoknow demo`, or:
///
///   emoknow ingest data/Train.csv
///
///   emoknow knowledge import data/generated_predictions.jsonl --source qwen-max --field label --first-id 1
///
///   emoknow query --emotion Anxiety --keyword 担忧未来
#[derive(Parser, Debug)]
#[command(name = "emoknow", version, max_term_width = 100)]
pub struct Cli {
    /// Store directory (created by `ingest`).
    #[arg(
        long,
        global = true,
        env = "EMOKNOW_STORE",
        hide_env_values = true,
        default_value = "store"
    )]
    store: PathBuf,

    /// Print one JSON document on stdout instead of a table.
    #[arg(long, global = true)]
    json: bool,

    /// No progress bars or messages on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether the command fine-tunes an encoder (`train --classifier finetune`): the workload
    /// [`emoknow::model::tune_candle_threads`] is for.
    pub fn fine_tunes(&self) -> bool {
        matches!(&self.command, Command::Train(a) if a.fine_tunes())
    }
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    Ingest(ingest::Args),
    Query(query::QueryArgs),
    Show(query::ShowArgs),
    Stats(query::StatsArgs),
    Check(check::CheckArgs),
    Reindex(check::ReindexArgs),
    Migrate(migrate::MigrateArgs),
    Index(index::Args),
    Knowledge(knowledge::Args),
    Embed(embed::EmbedArgs),
    Similar(similar::SimilarArgs),
    Annotate(annotate::AnnotateArgs),
    Export(export::ExportArgs),
    DevServer(annotate::DevServerArgs),
    #[command(hide = true)]
    TinyBert(testkit::TinyBertArgs),
    Train(train::TrainArgs),
    Eval(eval::EvalArgs),
    Predict(predict::PredictArgs),
    Model(model::Args),
    Serve(serve::ServeArgs),
    Demo(demo::Args),
    Bench(bench::Args),
    Completions(reference::CompletionsArgs),
    Man(reference::ManArgs),
    #[command(hide = true)]
    HelpMarkdown(reference::HelpMarkdownArgs),
}

/// What every subcommand gets.
pub struct Ctx {
    /// `--store`.
    pub store: PathBuf,
    /// `--json`.
    pub json: bool,
    /// `-q`.
    pub quiet: bool,
}

impl Ctx {
    /// Opens the existing store (migrating an older format first, saying so).
    pub fn open(&self) -> anyhow::Result<Store> {
        Ok(self.open_migrating(false)?.0)
    }

    /// Opens the store, creating it when absent (migrating an older format first).
    pub fn open_or_create(&self) -> anyhow::Result<Store> {
        Ok(self.open_migrating(true)?.0)
    }

    /// Opens the store; one of an older format is migrated first, with a message and a
    /// progress bar on stderr. Returns what the migration did, if there was one.
    pub fn open_migrating(
        &self,
        create: bool,
    ) -> anyhow::Result<(Store, Option<emoknow::store::MigrateSummary>)> {
        let mut pb: Option<indicatif::ProgressBar> = None;
        let opened = Store::open_migrating(&self.store, create, &mut |from, done, total| {
            let bar = pb.get_or_insert_with(|| {
                // Said even with -q: the store is rewritten.
                eprintln!(
                    "migrating vectors of store {} to flat files (format {from} → {}) …",
                    self.store.display(),
                    emoknow::store::FORMAT_VERSION
                );
                output::bar(total, "migrating", self.quiet)
            });
            bar.set_position(done);
        });
        if let Some(bar) = pb {
            bar.finish_and_clear();
        }
        opened.with_context(|| format!("opening store {}", self.store.display()))
    }

    /// The store, when there is one, for commands that can run on model directories alone
    /// (`predict`, `eval --file`, `serve`): none when `--store` holds no store, or when another
    /// process holds it (said on stderr), as long as no model of `models` needs it (one that
    /// retrieves neighbours from its store's pool; [`Model::needs_store`]).
    pub fn open_for(&self, models: &[&Model]) -> anyhow::Result<Option<Store>> {
        self.open_for_with(models, || self.open())
    }

    /// [`Ctx::open_for`], the store opened by `open`.
    pub fn open_for_with(
        &self,
        models: &[&Model],
        open: impl FnOnce() -> anyhow::Result<Store>,
    ) -> anyhow::Result<Option<Store>> {
        let err = match open() {
            Ok(s) => return Ok(Some(s)),
            Err(e) => e,
        };
        let cause = err.chain().find_map(|c| c.downcast_ref::<emoknow::Error>());
        let locked = match cause {
            Some(emoknow::Error::NoStore { .. }) => false,
            Some(emoknow::Error::StoreLocked { .. }) => true,
            _ => return Err(err),
        };
        if let Some(why) = models.iter().find_map(|m| m.needs_store()) {
            return Err(err.context(why));
        }
        if locked {
            self.note(format!(
                "{err:#}: going on without it (the model directories hold all they need)"
            ));
        }
        Ok(None)
    }

    /// Warns, once per directory, about model directories of `models` written before model
    /// files carried checksums (loaded unverified), naming the command that records them.
    pub fn warn_unverified(&self, models: &[&Model]) {
        let mut seen = std::collections::HashSet::new();
        for dir in models.iter().flat_map(|m| m.unverified_dirs()) {
            if seen.insert(dir.to_path_buf()) {
                eprintln!(
                    "warning: model {} was written before checksums: its files are not verified; run `emoknow model verify --rewrite {}` to record them",
                    dir.display(),
                    dir.display()
                );
            }
        }
    }

    /// Prints a status line on stderr unless `-q`.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Commands that only read, or whose writes land whole at their end (a sled batch, a file or
    // a model directory renamed into place), stop at the first Ctrl-C: temporary files removed,
    // the old state kept as a kill would keep it, exit 130. The others finish what they were
    // doing (embed, annotate and retrieval keep what is done; serve ends its requests) and exit
    // 130 then.
    let at_once = match &cli.command {
        Command::Ingest(_)
        | Command::Query(_)
        | Command::Show(_)
        | Command::Stats(_)
        | Command::Similar(_)
        | Command::Check(_)
        | Command::Reindex(_)
        | Command::Export(_)
        | Command::Train(_)
        | Command::Eval(_)
        | Command::Predict(_)
        | Command::Model(_)
        | Command::Demo(_) => true,
        Command::Knowledge(k) => k.lands_whole(),
        _ => false,
    };
    let _ = ctrlc::set_handler(move || {
        if INTERRUPTED.swap(true, Ordering::SeqCst) || at_once {
            // A second Ctrl-C gives up at once.
            emoknow::temps::abort(130);
        }
    });
    let ctx = Ctx {
        store: cli.store,
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Ingest(a) => ingest::run(a, &ctx),
        Command::Query(a) => query::run_query(a, &ctx),
        Command::Show(a) => query::run_show(a, &ctx),
        Command::Stats(a) => query::run_stats(a, &ctx),
        Command::Check(a) => check::run_check(a, &ctx),
        Command::Reindex(a) => check::run_reindex(a, &ctx),
        Command::Migrate(a) => migrate::run(a, &ctx),
        Command::Index(a) => index::run(a, &ctx),
        Command::Knowledge(a) => knowledge::run(a, &ctx),
        Command::Embed(a) => embed::run_embed(a, &ctx),
        Command::Similar(a) => similar::run_similar(a, &ctx),
        Command::Annotate(a) => annotate::run_annotate(a, &ctx),
        Command::Export(a) => export::run(a, &ctx),
        Command::DevServer(a) => annotate::run_dev_server(a, &ctx),
        Command::TinyBert(a) => testkit::run_tiny_bert(a, &ctx),
        Command::Train(a) => train::run_train(a, &ctx),
        Command::Eval(a) => eval::run_eval(a, &ctx),
        Command::Predict(a) => predict::run_predict(a, &ctx),
        Command::Model(a) => model::run(a, &ctx),
        Command::Serve(a) => serve::run(a, &ctx),
        Command::Demo(a) => demo::run(a, &ctx),
        Command::Bench(a) => bench::run(a, &ctx),
        Command::Completions(a) => reference::run_completions(a, &ctx),
        Command::Man(a) => reference::run_man(a, &ctx),
        Command::HelpMarkdown(a) => reference::run_help_markdown(a, &ctx),
    }
}

/// 130 after Ctrl-C, 2 for every other error.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    let interrupted = err
        .chain()
        .any(|e| matches!(e.downcast_ref(), Some(emoknow::Error::Interrupted)));
    if interrupted || INTERRUPTED.load(Ordering::SeqCst) {
        ExitCode::from(130)
    } else {
        ExitCode::from(2)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn only_a_finetune_training_run_counts_as_fine_tuning() {
        let fine_tunes = |args: &str| {
            let argv = std::iter::once("emoknow").chain(args.split_whitespace());
            Cli::try_parse_from(argv).unwrap().fine_tunes()
        };
        assert!(fine_tunes("train --classifier finetune --out m"));
        assert!(fine_tunes("-q train --out m --classifier finetune"));
        assert!(!fine_tunes("train --classifier frozen --out m"));
        assert!(!fine_tunes("train --out m"));
        assert!(!fine_tunes("predict --model m text"));
    }
}
