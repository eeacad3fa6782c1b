//! Retrieval of similar labelled examples: brute-force cosine over stored vectors (batched
//! through a matmul), or BM25 over the tantivy index when no encoder is at hand; the
//! "retrieved neighbours" knowledge built from them; and the kNN label vote.
//!
//! [`NeighbourSearch`] is the seam where an ANN index could replace brute force later.

use crate::error::{Error, Result};
use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::store::records::{
    now_secs, Example, ExampleId, Knowledge, KnowledgeKind, Neighbour, PromptKind,
};
use crate::store::vectors::VectorSet;
use crate::store::{Filter, Store};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// Anything that returns the `k` nearest allowed rows for a batch of query vectors.
pub trait NeighbourSearch {
    /// For each query: up to `k` (row, score) pairs, best first, skipping rows for which
    /// `allowed(query index, row)` is false.
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        allowed: &dyn Fn(usize, usize) -> bool,
    ) -> Result<Vec<Vec<(usize, f32)>>>;
}

/// Exact cosine search: vectors L2-normalized once, queries scored in batches by one matmul.
pub struct BruteForce {
    matrix: Tensor,
    rows: usize,
    dim: usize,
}

/// Queries scored per matmul (bounds the score buffer to `QUERY_BATCH × rows` floats).
const QUERY_BATCH: usize = 256;

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

impl BruteForce {
    /// Builds the index over the rows of `set` (copied and normalized).
    pub fn new(set: &VectorSet) -> Result<BruteForce> {
        let mut data = Vec::with_capacity(set.data.len());
        for i in 0..set.ids.len() {
            data.extend(normalized(set.row(i)));
        }
        let rows = set.ids.len();
        let matrix = Tensor::from_vec(data, (rows, set.dim), &Device::Cpu)?
            .t()?
            .contiguous()?;
        Ok(BruteForce {
            matrix,
            rows,
            dim: set.dim,
        })
    }
}

impl NeighbourSearch for BruteForce {
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        allowed: &dyn Fn(usize, usize) -> bool,
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let mut out = Vec::with_capacity(queries.len());
        for (b, chunk) in queries.chunks(QUERY_BATCH).enumerate() {
            let mut q = Vec::with_capacity(chunk.len() * self.dim);
            for v in chunk {
                if v.len() != self.dim {
                    return Err(Error::Invalid(format!(
                        "query vector has dimension {}, the index {}",
                        v.len(),
                        self.dim
                    )));
                }
                q.extend(normalized(v));
            }
            let q = Tensor::from_vec(q, (chunk.len(), self.dim), &Device::Cpu)?;
            let scores: Vec<f32> = q.matmul(&self.matrix)?.flatten_all()?.to_vec1()?;
            for (j, row) in scores.chunks_exact(self.rows).enumerate() {
                let qi = b * QUERY_BATCH + j;
                out.push(top_k(row, k, |r| allowed(qi, r)));
            }
        }
        Ok(out)
    }
}

/// The `k` best (index, score) of `scores` among allowed indices, best first.
fn top_k(scores: &[f32], k: usize, allowed: impl Fn(usize) -> bool) -> Vec<(usize, f32)> {
    let mut cand: Vec<(usize, f32)> = scores
        .iter()
        .enumerate()
        .filter(|&(i, _)| allowed(i))
        .map(|(i, &s)| (i, s))
        .collect();
    let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if cand.len() > k && k > 0 {
        cand.select_nth_unstable_by(k - 1, by_score);
        cand.truncate(k);
    }
    cand.sort_by(by_score);
    cand.truncate(k);
    cand
}

/// Labelled examples that can be retrieved: the pool (usually the train split) with vectors.
pub struct Pool {
    /// The pool's examples, row-aligned with the vectors.
    pub examples: Vec<Example>,
    index: Option<BruteForce>,
    /// Text → rows with that exact text (to keep duplicates of the query out).
    by_text: HashMap<String, Vec<usize>>,
    /// Examples whose id is within this distance of the query's id are never returned (0: only
    /// the query itself). See [`Pool::exclude_within`].
    exclude_within: u64,
}

/// One retrieved neighbour.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// Example id.
    pub id: ExampleId,
    /// Cosine similarity (or BM25 score).
    pub score: f32,
    /// Gold labels.
    pub labels: LabelSet,
    /// Text.
    pub text: String,
}

/// A retrieval query: a vector (dense) or text (BM25), and what to exclude.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    /// The query example's id, never returned.
    pub id: Option<ExampleId>,
    /// The query text; pool examples with exactly this text are never returned.
    pub text: &'a str,
    /// The query vector (dense retrieval).
    pub vector: Option<&'a [f32]>,
}

impl Pool {
    /// A pool over `examples` with their vectors (`vectors` must hold a row for each).
    pub fn dense(examples: Vec<Example>, vectors: &VectorSet) -> Result<Pool> {
        let mut data = Vec::with_capacity(examples.len() * vectors.dim);
        for ex in &examples {
            let row = vectors.position(ex.id).ok_or_else(|| {
                Error::NotFound(format!(
                    "example {} has no stored vector (run `emoknow embed` on its split)",
                    ex.id
                ))
            })?;
            data.extend_from_slice(vectors.row(row));
        }
        let set = VectorSet {
            ids: examples.iter().map(|e| e.id).collect(),
            dim: vectors.dim,
            data,
        };
        Ok(Pool {
            index: Some(BruteForce::new(&set)?),
            by_text: Self::texts(&examples),
            examples,
            exclude_within: 0,
        })
    }

    /// A pool without vectors: retrieval goes through BM25.
    pub fn sparse(examples: Vec<Example>) -> Pool {
        Pool {
            index: None,
            by_text: Self::texts(&examples),
            examples,
            exclude_within: 0,
        }
    }

    /// Never return examples whose id is within `w` of the query's id. In a corpus stored in
    /// document order (ids are rows), nearby ids are the same document: its sentences share
    /// topic and emotions, so a training sentence's same-document neighbours tell more about
    /// its labels than a new document's neighbours ever can. Excluding them makes the
    /// neighbours knowledge of training examples look like that of unseen text.
    pub fn exclude_within(mut self, w: u64) -> Pool {
        self.exclude_within = w;
        self
    }

    fn texts(examples: &[Example]) -> HashMap<String, Vec<usize>> {
        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in examples.iter().enumerate() {
            m.entry(e.text.clone()).or_default().push(i);
        }
        m
    }

    fn hit(&self, row: usize, score: f32) -> Hit {
        let e = &self.examples[row];
        Hit {
            id: e.id,
            score,
            labels: e.labels,
            text: e.text.clone(),
        }
    }

    /// The `k` nearest pool examples of each probe, never the probe itself nor an example
    /// with the same text, restricted to examples carrying every emotion of `emotions`.
    /// Dense pools need a vector per probe; sparse pools search `store`'s index by BM25.
    pub fn retrieve(
        &self,
        store: &Store,
        probes: &[Probe],
        k: usize,
        emotions: LabelSet,
    ) -> Result<Vec<Vec<Hit>>> {
        let w = self.exclude_within;
        let excluded = |p: &Probe, row: usize| {
            let e = &self.examples[row];
            p.id.is_some_and(|q| e.id.abs_diff(q) <= w)
                || e.text == p.text
                || !e.labels.is_superset(emotions)
        };
        match &self.index {
            Some(index) => {
                let mut vecs = Vec::with_capacity(probes.len());
                for p in probes {
                    vecs.push(p.vector.ok_or_else(|| {
                        Error::Invalid("dense retrieval needs a query vector".into())
                    })?);
                }
                let found = index.search(&vecs, k, &|qi, row| !excluded(&probes[qi], row))?;
                Ok(found
                    .into_iter()
                    .map(|hits| hits.into_iter().map(|(r, s)| self.hit(r, s)).collect())
                    .collect())
            }
            None => {
                let row_of: HashMap<ExampleId, usize> = self
                    .examples
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.id, i))
                    .collect();
                let mut out = Vec::with_capacity(probes.len());
                for p in probes {
                    let filter = Filter {
                        emotions,
                        exclude: p.id,
                        ..Default::default()
                    };
                    // Over-fetch: hits outside the pool or with the same text are dropped.
                    let dup = self.by_text.get(p.text).map_or(0, Vec::len)
                        + if p.id.is_some() { 2 * w as usize } else { 0 };
                    let docs = store
                        .index()
                        .search_similar(p.text, &filter, (k + dup) * 3 + 10)?;
                    let hits: Vec<Hit> = docs
                        .into_iter()
                        .filter_map(|d| row_of.get(&d.id).map(|&r| (r, d.score)))
                        .filter(|&(r, _)| !excluded(p, r))
                        .take(k)
                        .map(|(r, s)| self.hit(r, s))
                        .collect();
                    out.push(hits);
                }
                Ok(out)
            }
        }
    }
}

/// Score-weighted label vote of neighbours: per label, the share of (positive) similarity
/// carried by neighbours with that label. Probabilities in [0, 1].
pub fn knn_vote(hits: &[Hit]) -> [f32; NUM_EMOTIONS] {
    let mut p = [0f32; NUM_EMOTIONS];
    let total: f32 = hits.iter().map(|h| h.score.max(0.0)).sum();
    if total <= 0.0 {
        for h in hits {
            for e in h.labels.iter() {
                p[e.index()] += 1.0 / hits.len() as f32;
            }
        }
        return p;
    }
    for h in hits {
        for e in h.labels.iter() {
            p[e.index()] += h.score.max(0.0) / total;
        }
    }
    p
}

/// Renders neighbours as knowledge text: `相似例句: <text> → Love,Joy; …`.
pub fn render_neighbours(hits: &[Hit]) -> String {
    let parts: Vec<String> = hits
        .iter()
        .map(|h| format!("{} → {}", h.text.replace(' ', ""), h.labels))
        .collect();
    format!("相似例句: {}", parts.join("; "))
}

/// A "retrieved neighbours" knowledge record about `example_id`.
pub fn neighbours_knowledge(
    example_id: ExampleId,
    source: &str,
    model: &str,
    hits: &[Hit],
) -> Knowledge {
    let text = render_neighbours(hits);
    Knowledge {
        example_id,
        source: source.to_string(),
        kind: KnowledgeKind::Neighbours,
        raw: text.clone(),
        sanitized: text,
        asserted: {
            let vote = knn_vote(hits);
            LabelSet::from_emotions(
                crate::labels::Emotion::ALL
                    .into_iter()
                    .filter(|e| vote[e.index()] >= 0.5),
            )
        },
        prompt_kind: PromptKind::Computed,
        attempts: 0,
        model: model.to_string(),
        created_at: now_secs(),
        neighbours: hits
            .iter()
            .map(|h| Neighbour {
                id: h.id,
                score: h.score,
                labels: h.labels,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[[f32; 2]]) -> VectorSet {
        VectorSet {
            ids: (1..=rows.len() as u64).collect(),
            dim: 2,
            data: rows.iter().flatten().copied().collect(),
        }
    }

    #[test]
    fn brute_force_ranks_by_cosine_and_respects_allowed() {
        let s = set(&[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]);
        let bf = BruteForce::new(&s).unwrap();
        let q = [2.0f32, 0.1];
        let r = bf.search(&[&q], 2, &|_, _| true).unwrap();
        assert_eq!(r[0].iter().map(|x| x.0).collect::<Vec<_>>(), [0, 2]);
        assert!((r[0][0].1 - 0.99875).abs() < 1e-4);
        let r = bf.search(&[&q], 2, &|_, row| row != 0).unwrap();
        assert_eq!(r[0].iter().map(|x| x.0).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn many_queries_across_batches_match_one_by_one() {
        let rows: Vec<[f32; 2]> = (0..50)
            .map(|i| [(i as f32).cos(), (i as f32).sin()])
            .collect();
        let bf = BruteForce::new(&set(&rows)).unwrap();
        let queries: Vec<[f32; 2]> = (0..600).map(|i| [(i as f32 * 0.3).sin(), 1.0]).collect();
        let refs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
        let all = bf.search(&refs, 3, &|_, _| true).unwrap();
        for i in [0, 255, 256, 599] {
            assert_eq!(all[i], bf.search(&[refs[i]], 3, &|_, _| true).unwrap()[0]);
        }
    }

    #[test]
    fn vote_is_score_weighted() {
        let h = |score, labels: &str| Hit {
            id: 0,
            score,
            labels: labels.parse().unwrap(),
            text: String::new(),
        };
        let p = knn_vote(&[h(0.75, "Love"), h(0.25, "Love,Joy")]);
        assert_eq!(p[0], 1.0);
        assert_eq!(p[1], 0.25);
        let r = render_neighbours(&[h(0.5, "Love,Joy")]);
        assert_eq!(r, "相似例句:  → Love,Joy");
    }
}
