//! The ANN index's parameters as bench flags, and the sweep that times an index against exact
//! answers (`bench similar`, `bench scale`).

use super::percentile;
use emoknow::neighbours::{AnnParams, Quantization};
use serde::Serialize;
use std::time::Instant;

/// The ANN index's parameters, as bench flags.
#[derive(clap::Args, Debug)]
pub(super) struct AnnArgs {
    /// ANN graph degree (HNSW M).
    #[arg(long = "m", default_value_t = AnnParams::default().connectivity)]
    pub(super) connectivity: usize,

    /// ANN candidates kept while inserting (ef_construction).
    #[arg(long, default_value_t = AnnParams::default().expansion_add)]
    pub(super) ef_construction: usize,

    /// ANN candidates kept while searching (ef); repeat to compare several on one index.
    #[arg(long = "ef", default_values_t = [AnnParams::default().expansion_search])]
    pub(super) ef: Vec<usize>,

    /// Scalar type inside the ANN index (f32, f16, i8); repeat to compare (one build each).
    #[arg(long, default_values_t = [AnnParams::default().quantization])]
    pub(super) quantization: Vec<Quantization>,

    /// Candidates per neighbour re-ranked by exact cosine (1: none); repeat to compare.
    #[arg(long, default_values_t = [emoknow::neighbours::ann::RERANK_FACTOR])]
    pub(super) rerank: Vec<usize>,
}

impl AnnArgs {
    /// One parameter set per quantization (the first `ef` as its search setting).
    pub(super) fn params(&self) -> Vec<AnnParams> {
        self.quantization
            .iter()
            .map(|&quantization| AnnParams {
                connectivity: self.connectivity,
                expansion_add: self.ef_construction,
                expansion_search: self.ef[0],
                quantization,
            })
            .collect()
    }
}

/// One measured ANN configuration: an index and a search setting.
#[derive(Debug, Serialize)]
pub(super) struct AnnRun {
    pub(super) quantization: Quantization,
    pub(super) rerank: usize,
    pub(super) m: usize,
    pub(super) ef_construction: usize,
    pub(super) ef: usize,
    pub(super) build_secs: f64,
    pub(super) p50_ms: f64,
    pub(super) p95_ms: f64,
    pub(super) recall_at_k: f64,
}

/// Queries with their exact answers, to score an index against.
pub(super) struct Reference<'a> {
    pub(super) queries: &'a [&'a [f32]],
    /// The row query `i` must not return (itself).
    pub(super) exclude: &'a [usize],
    /// Exact top-k of each query.
    pub(super) truth: &'a [Vec<(usize, f32)>],
    pub(super) k: usize,
}

/// Times single queries through `index` (over every row of `vectors`) at each `--ef` and
/// `--rerank` of `sweep`, with recall against the exact answers.
pub(super) fn ann_runs(
    index: &std::sync::Arc<emoknow::neighbours::AnnIndex>,
    vectors: &emoknow::store::vectors::VectorSet,
    params: &AnnParams,
    build_secs: f64,
    sweep: &AnnArgs,
    reference: &Reference,
) -> anyhow::Result<Vec<AnnRun>> {
    use emoknow::neighbours::{AnnSearch, NeighbourSearch};
    let Reference {
        queries,
        exclude,
        truth,
        k,
    } = *reference;
    let mut runs = Vec::new();
    for (&ef, &rerank) in sweep
        .ef
        .iter()
        .flat_map(|e| sweep.rerank.iter().map(move |r| (e, r)))
    {
        let search = AnnSearch::new(index.clone(), &vectors.ids).reranked(vectors.clone(), rerank);
        index.set_expansion_search(ef);
        let mut ms = Vec::new();
        let mut hit = 0usize;
        for (qi, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let r = search.search(&[*q], k, &|_, r| r != exclude[qi])?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            hit += r[0]
                .iter()
                .filter(|h| truth[qi].iter().any(|e| e.0 == h.0))
                .count();
        }
        runs.push(AnnRun {
            quantization: params.quantization,
            rerank,
            m: params.connectivity,
            ef_construction: params.expansion_add,
            ef,
            build_secs,
            p50_ms: percentile(&mut ms, 0.5),
            p95_ms: percentile(&mut ms, 0.95),
            recall_at_k: hit as f64 / (queries.len() * k).max(1) as f64,
        });
    }
    index.set_expansion_search(params.expansion_search);
    Ok(runs)
}
