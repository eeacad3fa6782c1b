//! `emoknow model`: model directories as things to hand on.

use super::Ctx;
use anyhow::Context;
use emoknow::model::classifier::{pack, Kind, KindMeta, Model};
use emoknow::neighbours::{stored_spec, PackedPool};
use emoknow::spec::NeighbourBy;
use emoknow::store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Model directories: pack one so that it predicts without its store.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    Pack(PackArgs),
    Verify(VerifyArgs),
}

/// Verify model directories against the checksums their `meta.json` records (as every load
/// does), and say which were written before checksums and so cannot be verified.
///
/// With --rewrite, records the checksums of such a directory's files as they are now (the
/// directory rewritten whole; predictions do not change), so that any later change to them is
/// refused. An ensemble's unverified members are rewritten first and the ensemble re-pinned to
/// them; another ensemble pinning one of those members must be re-pinned too (`emoknow model
/// pack ENSEMBLE`). Exit 0 when every directory is verified, 1 when some could not be.
///
/// Example: emoknow model verify --rewrite models/linear
#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Model directories.
    #[arg(required = true)]
    models: Vec<PathBuf>,

    /// Record checksums in the directories written before them.
    #[arg(long)]
    rewrite: bool,
}

/// Pack what a model reads for new text into its directory, so that `predict`, `eval --file`
/// and `serve` run it without its store (and several processes at once).
///
/// Models trained now are packed when trained; this is for models trained before. A model
/// that retrieves neighbours (a kNN model, `--knowledge neighbours|all`) gets the pool it
/// retrieves from, read from the store (`pool/`: ids, labels, texts and vectors of the train
/// split; about 2 KB per example of a 512-dimensional encoder); an ensemble gets each member
/// packed and is pinned to them again. Predictions do not change. BM25 retrieval reads the
/// store's search index and cannot be packed. The directory is rewritten whole or not at all.
///
/// Example: emoknow model pack models/ens4_ctx
#[derive(clap::Args, Debug)]
struct PackArgs {
    /// Model directories.
    #[arg(required = true)]
    models: Vec<PathBuf>,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match args.command {
        Cmd::Pack(a) => run_pack(a, ctx),
        Cmd::Verify(a) => run_verify(a, ctx),
    }
}

fn run_verify(a: VerifyArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut report = Vec::new();
    let mut unverified_left = false;
    for dir in &a.models {
        let model = Model::load(dir).with_context(|| format!("loading model {}", dir.display()))?;
        let unverified: Vec<PathBuf> = (model.unverified_dirs().into_iter())
            .map(Path::to_path_buf)
            .collect();
        let ensemble = matches!(model.meta.kind, KindMeta::Ensemble { .. });
        drop(model);
        if a.rewrite && !unverified.is_empty() {
            // Members first (depth first), then the model itself (an ensemble re-pinned to
            // its rewritten members even when its own files had checksums).
            for u in unverified.iter().filter(|u| !same_dir(u, dir)) {
                pack::record_checksums(u)
                    .with_context(|| format!("recording checksums in {}", u.display()))?;
            }
            if ensemble {
                pack::repin(dir)?;
            } else {
                pack::record_checksums(dir)?;
            }
            // Loaded again: every file now verified against what was just recorded.
            Model::load(dir).with_context(|| format!("loading model {}", dir.display()))?;
        }
        let state = match (unverified.is_empty(), a.rewrite) {
            (true, _) => "verified",
            (false, true) => "checksums recorded",
            (false, false) => {
                unverified_left = true;
                "written before checksums: not verified (--rewrite records them)"
            }
        };
        let dirs: Vec<String> = unverified.iter().map(|d| d.display().to_string()).collect();
        if !ctx.json {
            println!("{}: {state}", dir.display());
            if !dirs.is_empty() && !a.rewrite {
                for d in &dirs {
                    println!("  unverified: {d}");
                }
            }
        }
        report.push(serde_json::json!({
            "model": dir, "state": state, "unverified": dirs,
        }));
    }
    if ctx.json {
        super::output::print_json(&report)?;
    }
    Ok(if unverified_left {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn run_pack(a: PackArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    for dir in &a.models {
        pack_dir(&store, dir, ctx).with_context(|| format!("packing {}", dir.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Packs the model in `dir` (an ensemble: its members, depth first, then its pins).
fn pack_dir(store: &Store, dir: &Path, ctx: &Ctx) -> anyhow::Result<()> {
    let model = Model::load(dir).with_context(|| format!("loading model {}", dir.display()))?;
    if let KindMeta::Ensemble { members, .. } = &model.meta.kind {
        for m in members {
            pack_dir(store, m, ctx)?;
        }
        drop(model);
        pack::repin(dir)?;
        ctx.note(format!(
            "{}: ensemble pinned to its packed members",
            dir.display()
        ));
        return Ok(());
    }
    if model.packed_pool().is_some() {
        ctx.note(format!("{}: packed already", dir.display()));
        return Ok(());
    }
    let spec = match model.pool_spec() {
        Some(s) => s,
        None => match (&model.meta.attach.neighbours_source, model.kind()) {
            (Some(src), _) if model.meta.attach.mode.neighbours() => stored_spec(store, src)?,
            (_, Kind::Knn) => anyhow::bail!("a kNN model without its retrieval recorded"),
            _ => {
                ctx.note(format!(
                    "{}: nothing to pack (it reads no neighbours: its directory holds all it needs)",
                    dir.display()
                ));
                return Ok(());
            }
        },
    };
    if spec.by == NeighbourBy::Bm25 {
        anyhow::bail!(
            "it retrieves neighbours by BM25, which reads the store's search index: it predicts \
             only with its store (a model attaching dense neighbours can be packed)"
        );
    }
    let Some(pool) = PackedPool::from_store(store, &spec)? else {
        anyhow::bail!("its retrieval cannot be packed");
    };
    pack::pack_pool(&model, &spec, &pool)?;
    ctx.note(format!(
        "{}: packed the pool of {} {} examples ({})",
        dir.display(),
        pool.header.rows,
        spec.from,
        pool.header.encoder.name
    ));
    Ok(())
}
