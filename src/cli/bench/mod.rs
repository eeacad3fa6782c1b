//! `emoknow bench`: end-to-end benchmarks, each against a baseline measured in the same run.
//! One file per workload; [`ann`] holds the ANN sweep that `similar` and `scale` share.

mod ann;
mod annotate;
mod embed;
mod scale;
mod serve;
mod similar;
mod store;

use super::Ctx;
use emoknow::corpus::{self, SplitPlan};
use emoknow::knowledge::import::{import_file, Alignment, Field, ImportConfig};
use emoknow::knowledge::sanitize::Lexicon;
use emoknow::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

/// Measure emoknow's speed against baselines measured in the same run.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    Store(store::Args),
    Annotate(annotate::Args),
    Embed(embed::Args),
    Similar(similar::Args),
    Scale(scale::Args),
    Serve(serve::Args),
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Store(a) => store::run(a, ctx),
        Sub::Annotate(a) => annotate::run(a, ctx),
        Sub::Embed(a) => embed::run(a, ctx),
        Sub::Similar(a) => similar::run(a, ctx),
        Sub::Scale(a) => scale::run(a, ctx),
        Sub::Serve(a) => serve::run(a, ctx),
    }
}

/// The corpus a benchmark ingests into its temporary store, and the rationales it imports.
#[derive(clap::Args, Debug)]
struct Input {
    /// The corpus (seed layout).
    #[arg(long, default_value = "data/Train.csv")]
    corpus: PathBuf,

    /// Rationales to import (LLaMA-Factory JSONL for ids 1..), as the demo does.
    #[arg(long, default_value = "data/generated_predictions.jsonl")]
    predictions: PathBuf,
}

impl Input {
    /// Ingests `rows` as `Train.csv` with the demo's split (1,000 test rows, 8% validation).
    fn ingest(&self, store: &Store, rows: &[corpus::Row]) -> emoknow::Result<()> {
        let plan = SplitPlan {
            test_rows: 1000,
            val_fraction: 0.08,
            ..Default::default()
        };
        let keys: Vec<u64> = rows.iter().map(|r| r.id.unwrap_or(0)).collect();
        store.ingest("Train.csv", rows, &plan.assign(&keys), false)?;
        Ok(())
    }

    /// Imports the rationales' `field` as knowledge of `source` (ids from 1): records stored.
    fn import(
        &self,
        store: &Store,
        source: &str,
        field: Field,
        lex: &Lexicon,
    ) -> emoknow::Result<usize> {
        let cfg = ImportConfig {
            source: source.into(),
            field,
            align: Alignment::FirstId(1),
            model: None,
        };
        Ok(import_file(store, &self.predictions, &cfg, lex)?.imported)
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The process's peak resident memory so far (VmHWM), in MB.
fn peak_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// The process's resident memory now (VmRSS), in MB.
fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// A memory line of /proc/self/status, in MB (0 where there is none).
fn proc_status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Up to `n` keyword queries from sentences' words of two or more characters: alternately a
/// single word and two words glued together unsegmented ("担忧未来" style).
fn bench_keywords<'a>(texts: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let mut keywords = Vec::new();
    for t in texts {
        let words: Vec<&str> = t
            .split_whitespace()
            .filter(|w| w.chars().count() >= 2)
            .collect();
        if words.len() >= 2 {
            keywords.push(if keywords.len() % 2 == 0 {
                words[0].to_string()
            } else {
                format!("{}{}", words[0], words[words.len() - 1])
            });
        }
        if keywords.len() == n {
            break;
        }
    }
    keywords
}
