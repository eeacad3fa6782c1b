//! `bench scale`: the ANN index over millions of synthetic vectors, against exact search.

use super::ann::{ann_runs, AnnArgs, Reference};
use super::{peak_mb, percentile, rss_mb};
use crate::cli::{output, Ctx};
use std::process::ExitCode;
use std::time::Instant;

/// Dense retrieval at scale (vectors part): generates --rows synthetic vectors (seeded
/// clusters with a low-rank spread, like sentence embeddings; not stored), builds the ANN
/// index (time, peak memory), then on --queries queries: recall@k against exact search and
/// query p50 against exact search (one query per matmul) in the same run; then a
/// retrieve-like pass, k neighbours of every one of --retrieve-rows rows through the index on
/// all cores, measured inside the bench (as `knowledge retrieve` would search, without the
/// store writes).
///
/// Example: emoknow bench scale --rows 1000000 --dim 512
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// Vectors to generate.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,

    /// Their dimension (m3e-small: 512).
    #[arg(long, default_value_t = 512)]
    dim: usize,

    /// Clusters the vectors are drawn around.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,

    /// Queries for recall and latency (rows of the set; each excludes itself).
    #[arg(long, default_value_t = 1000)]
    queries: usize,

    /// Neighbours per query.
    #[arg(short, default_value_t = 10, value_parser = crate::cli::bounds::k)]
    k: usize,

    /// Rows of the retrieve-like pass [default: all].
    #[arg(long)]
    retrieve_rows: Option<usize>,

    #[command(flatten)]
    ann: AnnArgs,
}

pub(super) fn run(a: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use emoknow::neighbours::{AnnIndex, AnnSearch, BruteForce, NeighbourSearch};
    use rayon::prelude::*;
    anyhow::ensure!(a.rows > a.queries, "--rows must exceed --queries");
    let interrupted = || crate::cli::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
    let pb = output::spinner(&format!("generating {} × {}", a.rows, a.dim), ctx.quiet);
    let t = Instant::now();
    let set = emoknow::testkit::vectors::clustered(a.rows, a.dim, a.clusters, 7)?;
    let gen_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let peak_data = peak_mb();

    // Queries spread over the set; each excludes itself.
    let step = a.rows / a.queries;
    let qrows: Vec<usize> = (0..a.queries).map(|i| i * step).collect();
    let queries: Vec<&[f32]> = qrows.iter().map(|&r| set.row(r)).collect();
    let pb = output::spinner("exact search", ctx.quiet);
    let exact = BruteForce::new(&set)?;
    let t = Instant::now();
    let truth = exact.search(&queries, a.k, &|qi, r| r != qrows[qi])?;
    let exact_batched_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    let mut exact_ms = Vec::new();
    for (qi, q) in queries.iter().enumerate().take(50) {
        let t = Instant::now();
        let r = exact.search(&[*q], a.k, &|_, r| r != qrows[qi])?;
        exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            r[0] == truth[qi],
            "batched and single exact queries disagree"
        );
    }
    drop(exact);
    pb.finish_and_clear();
    let peak_exact = peak_mb();
    let reference = Reference {
        queries: &queries,
        exclude: &qrows,
        truth: &truth,
        k: a.k,
    };

    // One index per quantization; the first is kept for the retrieve-like pass.
    let mut runs = Vec::new();
    let mut builds = Vec::new();
    let mut kept = None;
    for params in a.ann.params() {
        let rss_before = rss_mb();
        let pb = output::bar(
            a.rows as u64,
            &format!("indexing ({})", params.quantization),
            ctx.quiet,
        );
        let t = Instant::now();
        let index = AnnIndex::build(&set, &params, &|d| pb.set_position(d as u64), &interrupted)?;
        let build_secs = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let peak_build = peak_mb();
        let index_mb = rss_mb() - rss_before;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bench.usearch");
        let t = Instant::now();
        index.save(&file)?;
        let save_secs = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&file)?.len();
        let t = Instant::now();
        let viewed = AnnIndex::view(&file)?;
        let view_secs = t.elapsed().as_secs_f64();
        drop(viewed);
        // What every open of a stored index adds: its checksum, verified before usearch reads it.
        let t = Instant::now();
        emoknow::store::ann::file_crc32(&file)?;
        let checksum_secs = t.elapsed().as_secs_f64();
        let index = std::sync::Arc::new(index);
        let pb = output::spinner("timing queries", ctx.quiet);
        runs.extend(ann_runs(
            &index, &set, &params, build_secs, &a.ann, &reference,
        )?);
        pb.finish_and_clear();
        builds.push(serde_json::json!({
            "quantization": params.quantization, "build_secs": build_secs,
            "build_vectors_per_sec": a.rows as f64 / build_secs, "peak_mb_after_build": peak_build,
            "index_mb": index_mb, "index_bytes": bytes, "save_secs": save_secs, "view_secs": view_secs,
            "checksum_secs": checksum_secs,
        }));
        if kept.is_none() {
            kept = Some(index);
        }
    }
    let index = kept.ok_or_else(|| anyhow::anyhow!("no --quantization given"))?;
    let ann = AnnSearch::new(index.clone(), &set.ids).reranked(set.clone(), a.ann.rerank[0]);
    let exact50 = percentile(&mut exact_ms, 0.5);

    let n = a.retrieve_rows.unwrap_or(a.rows).min(a.rows);
    let pb = output::bar(n as u64, "retrieving", ctx.quiet);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let found: usize = (0..n)
        .into_par_iter()
        .chunks(1024)
        .map(|rows| {
            let qs: Vec<&[f32]> = rows.iter().map(|&r| set.row(r)).collect();
            let r = ann.search(&qs, a.k, &|qi, row| row != rows[qi]);
            let d = done.fetch_add(rows.len(), std::sync::atomic::Ordering::Relaxed);
            pb.set_position((d + rows.len()) as u64);
            r.map(|hits| hits.iter().map(Vec::len).sum::<usize>())
        })
        .collect::<emoknow::Result<Vec<usize>>>()?
        .into_iter()
        .sum();
    let retrieve_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let report = serde_json::json!({
        "rows": a.rows, "dim": a.dim, "clusters": a.clusters, "k": a.k,
        "generate_secs": gen_secs,
        "peak_mb_after_data": peak_data, "peak_mb_after_exact": peak_exact,
        "builds": builds, "queries": a.queries, "ann": runs,
        "exact_single_p50_ms": exact50, "exact_batched_ms_per_query": exact_batched_ms,
        "retrieve_rows": n, "retrieve_secs": retrieve_secs,
        "retrieve_rows_per_sec": n as f64 / retrieve_secs, "retrieve_neighbours": found,
        "threads": rayon::current_num_threads(),
    });
    if ctx.json {
        output::print_json(&report)?;
    } else {
        println!(
            "{} synthetic vectors of dim {} ({} clusters), generated in {gen_secs:.1} s; peak memory {peak_data:.0} MB with the vectors, {peak_exact:.0} MB after the exact reference",
            a.rows, a.dim, a.clusters
        );
        println!(
            "  exact: p50 {exact50:.1} ms one query per matmul, batched {exact_batched_ms:.2} ms/query ({} threads)",
            rayon::current_num_threads()
        );
        for b in &builds {
            println!(
                "  ANN build ({}) {:.1} s ({:.0} vectors/s); index memory {:.0} MB, peak {:.0} MB; file {:.0} MB, saved in {:.1} s, mapped in {:.3} s, checksum verified in {:.3} s",
                b["quantization"].as_str().unwrap_or("?"),
                b["build_secs"].as_f64().unwrap_or(0.0),
                b["build_vectors_per_sec"].as_f64().unwrap_or(0.0),
                b["index_mb"].as_f64().unwrap_or(0.0),
                b["peak_mb_after_build"].as_f64().unwrap_or(0.0),
                b["index_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                b["save_secs"].as_f64().unwrap_or(0.0),
                b["view_secs"].as_f64().unwrap_or(0.0),
                b["checksum_secs"].as_f64().unwrap_or(0.0),
            );
        }
        for r in &runs {
            println!(
                "  {} M {} ef_construction {} ef {} rerank ×{}: {} queries, recall@{} {:.4} vs exact; p50 {:.3} ms (p95 {:.3}): ×{:.0} vs exact",
                r.quantization, r.m, r.ef_construction, r.ef, r.rerank, a.queries, a.k, r.recall_at_k, r.p50_ms, r.p95_ms, exact50 / r.p50_ms
            );
        }
        println!(
            "  retrieve-like pass ({}, ef {}): k={} for {n} rows in {retrieve_secs:.1} s ({:.0} rows/s, inside the bench, no store writes)",
            a.ann.quantization[0],
            a.ann.ef[0],
            a.k,
            n as f64 / retrieve_secs
        );
    }
    Ok(ExitCode::SUCCESS)
}
