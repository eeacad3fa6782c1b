//! `emoknow index build`: the approximate nearest-neighbour index of an encoder's vectors.

use super::{output, Ctx, INTERRUPTED};
use emoknow::neighbours::{ann, pick_encoder};
use emoknow::store::Store;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Manage the approximate nearest-neighbour (ANN) index of stored embeddings.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    Build(BuildArgs),
}

/// Build (or rebuild) the ANN index of an encoder's stored text vectors.
///
/// The index (a usearch HNSW graph, cosine) lives in STORE/ann/<encoder id>.usearch with a
/// record in the store saying what it was built from. Dense retrieval (`similar`,
/// `knowledge retrieve`, training and prediction) uses it from 200,000 vectors on, or always
/// with `--ann`; `--exact` compares with every vector instead. `embed` keeps an existing index
/// up to date and `reindex` rebuilds it; `check` reports one that no longer matches the
/// vectors, and `stats` shows its state. A build killed part-way leaves the store as it was
/// (the old index, or none); run it again.
///
/// Example: emoknow index build --encoder m3e-small
#[derive(clap::Args, Debug)]
struct BuildArgs {
    /// Stored encoder (id, id prefix or name) [default: the only one].
    #[arg(long, value_name = "ENCODER")]
    encoder: Option<String>,
}

pub fn run(a: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match a.command {
        Sub::Build(b) => run_build(b, ctx),
    }
}

fn run_build(a: BuildArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let info = pick_encoder(&store, a.encoder.as_deref())?;
    let t0 = Instant::now();
    let s = build_with_bar(&store, &info, None, true, ctx)?;
    let secs = t0.elapsed().as_secs_f64();
    if ctx.json {
        output::print_json(&serde_json::json!({"index": s, "secs": secs}))?;
    } else {
        println!(
            "ANN index of {} ({} vectors) built in {secs:.1}s: {} ({:.1} MB)",
            s.encoder,
            s.vectors,
            s.file.display(),
            s.bytes as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// [`ann::refresh`] with a progress bar (shared by `index build`, `embed` and `reindex`).
pub fn build_with_bar(
    store: &Store,
    info: &emoknow::spec::EncoderInfo,
    base: Option<emoknow::store::ann::AnnRecord>,
    full: bool,
    ctx: &Ctx,
) -> anyhow::Result<ann::BuildSummary> {
    let pb = output::bar(0, "indexing", ctx.quiet);
    let s = ann::refresh(
        store,
        info,
        base,
        full,
        &|done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
        &|| INTERRUPTED.load(Ordering::SeqCst),
    );
    pb.finish_and_clear();
    Ok(s?)
}
