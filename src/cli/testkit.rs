//! `emoknow tiny-bert`: test tooling of [`emoknow::testkit`] for tests outside this crate (the
//! Python package's pytest suite): a tiny random BERT checkpoint, so that frozen, kNN and
//! fine-tuned models can be trained in seconds without a real model.

use super::Ctx;
use emoknow::testkit::tiny::{write_random_checkpoint, TinyBertSpec};
use std::path::PathBuf;
use std::process::ExitCode;

/// Write a tiny random BERT checkpoint (2 layers, hidden 32) for tests: its vocabulary holds the
/// characters of the given file's lines. Not a model for real use.
///
/// Example: emoknow tiny-bert --out tiny-bert --texts corpus.csv
#[derive(clap::Args, Debug)]
pub struct TinyBertArgs {
    /// Directory to write (config.json, model.safetensors, vocab.txt).
    #[arg(long)]
    out: PathBuf,

    /// A text file whose characters make the vocabulary.
    #[arg(long)]
    texts: PathBuf,

    /// Seed of the random weights.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

pub fn run_tiny_bert(a: TinyBertArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.texts).map_err(|e| emoknow::Error::io(&a.texts, e))?;
    let spec = TinyBertSpec {
        texts: text.lines().map(str::to_string).collect(),
        ..TinyBertSpec::default()
    };
    write_random_checkpoint(&a.out, &spec, a.seed)?;
    ctx.note(format!("wrote a tiny random BERT to {}", a.out.display()));
    Ok(ExitCode::SUCCESS)
}
