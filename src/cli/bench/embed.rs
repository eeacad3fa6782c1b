//! `bench embed`: embedding throughput in corpus order against length-sorted batches.

use crate::cli::{output, Ctx};
use emoknow::corpus;
use emoknow::encoder::embed::BenchPhase;
use std::path::PathBuf;
use std::process::ExitCode;

/// Embedding throughput of an encoder on the corpus: (a) corpus order in batches of 32 — the
/// baseline, what a plain loop does — and (b) length-sorted batches of 64, in one run (so
/// --batch is refused).
///
/// scripts/bench_embed_torch.py runs the same two setups in PyTorch (when torch is installed)
/// and prints its ratio to these numbers.
///
/// Example: cargo run --release -- bench embed --encoder ../models/m3e-small --max-len 64
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    #[command(flatten)]
    encoder: crate::cli::embed::EncoderArgs,

    /// The corpus (any format `ingest` reads).
    #[arg(long, default_value = "data/Train.csv")]
    corpus: PathBuf,

    /// Sentences to embed (from the start of the corpus; 0 = all).
    #[arg(long, default_value_t = 2000)]
    sentences: usize,
}

pub(super) fn run(a: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if a.encoder.batch != 64 {
        anyhow::bail!(
            "bench embed runs batches of 32 (corpus order) and 64 (length-sorted), the setups \
             of scripts/bench_embed_torch.py: drop --batch {}",
            a.encoder.batch
        );
    }
    let parsed = corpus::read_file(&a.corpus)?;
    let n = if a.sentences == 0 {
        parsed.rows.len()
    } else {
        a.sentences.min(parsed.rows.len())
    };
    let texts: Vec<&str> = parsed.rows[..n].iter().map(|r| r.text.as_str()).collect();
    let pb = output::bar(2 * n as u64, "embedding", ctx.quiet);
    let r = emoknow::encoder::bench_embed(
        &a.encoder.encoder,
        &texts,
        &a.encoder.options(),
        &mut |phase, done| {
            let base = match phase {
                BenchPhase::CorpusOrder => 0,
                BenchPhase::LengthSorted => n as u64,
            };
            pb.set_position(base + done as u64);
        },
    )?;
    pb.finish_and_clear();
    if ctx.json {
        output::print_json(&r)?;
    } else {
        println!(
            "encoder {} (dim {}), {} sentences, ≤{} tokens, {} threads, AVX-512 {}",
            r.encoder_id, r.dim, n, r.max_len, r.effective_threads, r.avx512
        );
        for (name, run) in [
            ("corpus order, batch 32 (baseline)", &r.corpus_order),
            ("length-sorted, batch 64", &r.length_sorted),
        ] {
            println!(
                "  {name:<36} {:>7.1} sentences/s  ({:.1} s; {} real of {} padded tokens)",
                run.sentences_per_sec, run.secs, run.real_tokens, run.padded_tokens
            );
        }
        println!(
            "  length sorting: ×{:.2}; max |difference| between the runs' vectors {:.1e}",
            r.speedup, r.max_abs_diff
        );
    }
    Ok(ExitCode::SUCCESS)
}
