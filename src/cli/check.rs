//! `emoknow check` and `emoknow reindex`: keeping the index in step with sled.

use super::{output, Ctx};
use std::process::ExitCode;
use std::time::Instant;

/// Verify that the store is consistent; exit 1 if it is not.
///
/// Checks that every record decodes, that the search index opens, passes its checksums and
/// reads in full (every term, posting list and column), that it holds exactly the examples and
/// knowledge sled holds (counts, ids, labels), that nothing is pending indexing, and that every
/// example of an embedded split has a vector of the encoder's dimension. Fix index problems
/// with `emoknow reindex`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

/// Rebuild the search index from sled (the source of truth), and repair damaged vector files.
///
/// Works whatever state the index is in (missing, truncated, corrupted): a new index is built
/// next to it and then put in its place. A vector file that lost rows (truncated) keeps the
/// rows it still holds whole; one that is missing or not a vector file is dropped. Then
/// `emoknow embed` recomputes the lost vectors.
#[derive(clap::Args, Debug)]
pub struct ReindexArgs {}

pub fn run_check(_args: CheckArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let r = store.check()?;
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
    if ctx.json {
        output::print_json(&serde_json::json!({
            "examples": ne, "knowledge": nk, "vector_repairs": vectors,
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
    }
    Ok(ExitCode::SUCCESS)
}
