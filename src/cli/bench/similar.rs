//! `bench similar`: dense top-k over the store's vectors, single and batched, against a loop
//! of dot products; then through an ANN index built in memory.

use super::ann::{ann_runs, AnnArgs, Reference};
use super::percentile;
use crate::cli::{output, Ctx};
use std::process::ExitCode;
use std::time::Instant;

/// Dense top-k retrieval over the store's stored text vectors: one query at a time, and
/// batched through one matmul, against a plain loop of dot products (the baseline); then
/// through an ANN index built in memory: recall@k against the exact answers and its p50
/// against one query per matmul, in the same run.
///
/// Needs a store with embeddings (`emoknow embed`).
///
/// Example: emoknow bench similar -k 10 --queries 500
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// Neighbours per query.
    #[arg(short, default_value_t = 10, value_parser = crate::cli::bounds::k)]
    k: usize,

    /// Queries: the first stored vectors of the encoder, in the store's order.
    #[arg(long, default_value_t = 500)]
    queries: usize,

    /// Stored encoder (id, id prefix or name) [default: the only one].
    #[arg(long)]
    encoder: Option<String>,

    #[command(flatten)]
    ann: AnnArgs,
}

pub(super) fn run(a: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use emoknow::neighbours::{AnnIndex, BruteForce, NeighbourSearch};
    use emoknow::store::vectors::What;
    let store = ctx.open()?;
    let info = emoknow::neighbours::pick_encoder(&store, a.encoder.as_deref())?;
    let t = Instant::now();
    let all = store.vectors(&info, &What::Text, None)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let index = BruteForce::new(&all)?;
    let queries: Vec<&[f32]> = (0..a.queries.min(all.ids.len()))
        .map(|i| all.row(i))
        .collect();
    let allowed = |q: usize, r: usize| q != r;
    let mut one = Vec::new();
    let mut first = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        let hits = index.search(&[*q], a.k, &|_, r| r != i)?;
        one.push(t.elapsed().as_secs_f64() * 1e3);
        first.push(hits[0].clone());
    }
    let t = Instant::now();
    let batched = index.search(&queries, a.k, &allowed)?;
    let batched_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    anyhow::ensure!(batched == first, "batched and single queries disagree");
    // Baseline: a loop of dot products over the normalized rows, then a full sort.
    let norm: Vec<Vec<f32>> = (0..all.ids.len())
        .map(|i| {
            let r = all.row(i);
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(|x| x / n).collect()
        })
        .collect();
    let mut naive = Vec::new();
    for (i, q) in queries.iter().enumerate().take(100) {
        let t = Instant::now();
        let n = q.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        let mut s: Vec<(usize, f32)> = norm
            .iter()
            .enumerate()
            .filter(|(r, _)| *r != i)
            .map(|(r, v)| (r, v.iter().zip(*q).map(|(a, b)| a * b).sum::<f32>() / n))
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.truncate(a.k);
        std::hint::black_box(&s);
        naive.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p95, naive50) = (
        percentile(&mut one, 0.5),
        percentile(&mut one, 0.95),
        percentile(&mut naive, 0.5),
    );
    // The ANN index (built here in memory, as `index build` would) on the same queries.
    let qrows: Vec<usize> = (0..queries.len()).collect();
    let reference = Reference {
        queries: &queries,
        exclude: &qrows,
        truth: &first,
        k: a.k,
    };
    let mut runs = Vec::new();
    for params in a.ann.params() {
        let t = Instant::now();
        let index = std::sync::Arc::new(AnnIndex::build(&all, &params, &|_| {}, &|| false)?);
        let build_secs = t.elapsed().as_secs_f64();
        runs.extend(ann_runs(
            &index, &all, &params, build_secs, &a.ann, &reference,
        )?);
    }
    if ctx.json {
        output::print_json(&serde_json::json!({
            "vectors": all.ids.len(), "dim": all.dim, "k": a.k, "queries": queries.len(),
            "single_p50_ms": p50, "single_p95_ms": p95, "batched_ms_per_query": batched_ms,
            "naive_loop_p50_ms": naive50, "load_ms": load_ms,
            "ann": runs,
        }))?;
    } else {
        println!(
            "top-{} over {} vectors of dim {} ({}), {} queries",
            a.k,
            all.ids.len(),
            all.dim,
            info.name,
            queries.len()
        );
        println!("  vectors loaded in {load_ms:.1} ms (read in place from the vector file)");
        println!("  one query per matmul   p50 {p50:.2} ms, p95 {p95:.2} ms");
        println!("  batched (256 per matmul) {batched_ms:.3} ms per query");
        println!("  baseline: loop of dot products + sort, p50 {naive50:.2} ms  (single ×{:.1}, batched ×{:.0})", naive50 / p50, naive50 / batched_ms);
        for r in &runs {
            println!(
                "  ANN index (usearch HNSW, {} M {} ef_construction {}, built in {:.1} s) ef {} rerank ×{}: p50 {:.3} ms, p95 {:.3} ms, recall@{} {:.4} vs exact, ×{:.1} vs one query per matmul",
                r.quantization, r.m, r.ef_construction, r.build_secs, r.ef, r.rerank, r.p50_ms, r.p95_ms, a.k, r.recall_at_k, p50 / r.p50_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
