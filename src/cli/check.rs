//! `emoknow check` and `emoknow reindex`: keeping the index in step with sled.

use super::{output, Ctx};
use std::process::ExitCode;
use std::time::Instant;

/// Verify that the store is consistent; exit 1 if it is not.
///
/// Checks that every record decodes, that the search index opens, passes its checksums and
/// reads in full (every term, posting list and column), that it holds exactly the examples and
/// knowledge sled holds (counts, ids, labels), that nothing is pending indexing, and that every
/// example of an embedded split has a vector of the encoder's dimension, and that each ANN
/// index agrees with its record and the stored vectors (count, dimension, ids). Fix index
/// problems with `emoknow reindex` (ANN indexes: `emoknow index build`).
#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

/// Rebuild the search index from sled (the source of truth), repair damaged vector files, and
/// rebuild the ANN index of each encoder that has one (or has 200,000 vectors or more).
///
/// Works whatever state the index is in (missing, truncated, corrupted): a new index is built
/// next to it and then put in its place. A vector file that lost rows (truncated) keeps the
/// rows it still holds whole; one that is missing or not a vector file is dropped. Then
/// `emoknow embed` recomputes the lost vectors.
#[derive(clap::Args, Debug)]
pub struct ReindexArgs {}

pub fn run_check(_args: CheckArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let mut r = store.check()?;
    emoknow::neighbours::ann::check(&store, &mut r)?;
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            ok: bool,
            #[serde(flatten)]
            report: &'a emoknow::store::CheckReport,
        }
        output::print_json(&Out {
            ok: r.ok(),
            report: &r,
        })?;
    } else {
        println!(
            "examples {} (indexed {}), knowledge {} (indexed {}), vectors {}",
            r.examples, r.indexed_examples, r.knowledge, r.indexed_knowledge, r.vectors
        );
        for p in &r.problems {
            println!("problem: {p}");
        }
        println!("{}", if r.ok() { "ok" } else { "NOT OK" });
        if r.problems.iter().any(|p| p.contains("corrupt record")) {
            println!("hint: {}", super::hint::DAMAGED_RECORDS);
        }
    }
    Ok(if r.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn run_reindex(_args: ReindexArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let t0 = Instant::now();
    let pb = output::spinner("reindexing", ctx.quiet);
    let (ne, nk) = store.reindex()?;
    let vectors = store.repair_vectors()?;
    pb.finish_and_clear();
    let mut ann_built = Vec::new();
    for info in store.encoders()? {
        let had = store.ann_record(&info.id)?.is_some();
        let n = store
            .vectors(&info, &emoknow::store::vectors::What::Text, None)?
            .ids
            .len();
        if n > 0 && emoknow::neighbours::ann::wanted(&store, &info, had, n) {
            ann_built.push(super::index::build_with_bar(
                &store, &info, None, true, ctx,
            )?);
        }
    }
    if ctx.json {
        output::print_json(&serde_json::json!({
            "examples": ne, "knowledge": nk, "vector_repairs": vectors, "ann": ann_built,
            "elapsed_secs": t0.elapsed().as_secs_f64()
        }))?;
    } else {
        println!(
            "reindexed {ne} examples and {nk} knowledge records in {:.2}s",
            t0.elapsed().as_secs_f64()
        );
        for line in &vectors {
            println!("{line}");
        }
        if !vectors.is_empty() {
            println!("run `emoknow embed` to recompute the vectors lost");
        }
        for s in &ann_built {
            println!(
                "rebuilt the ANN index of {} ({} vectors)",
                s.encoder, s.vectors
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
