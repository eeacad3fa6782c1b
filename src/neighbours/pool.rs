//! The pool of labelled examples neighbours come from, and retrieval over it: dense (cosine
//! through exact [`BruteForce`] or the ANN index, [`AnnSearch`]) or sparse (BM25 over the store's index), never returning the query
//! itself, an example with the same text, or (with `exclude_within`) its own document.

use super::ann::{AnnIndex, AnnSearch};
use super::search::{BruteForce, NeighbourSearch};
use crate::error::{Error, Result};
use crate::labels::LabelSet;
use crate::spec::{ExampleId, Neighbour};
use crate::store::records::Example;
use crate::store::vectors::VectorSet;
use crate::store::{Filter, Store};
use std::collections::HashMap;
use std::sync::Arc;

/// Labelled examples that can be retrieved: the pool (usually the train split) with vectors.
pub struct Pool {
    /// The pool's examples, row-aligned with the vectors.
    pub examples: Vec<Example>,
    index: Option<Box<dyn NeighbourSearch + Send + Sync>>,
    /// Text → rows with that exact text (to keep duplicates of the query out).
    by_text: HashMap<String, Vec<usize>>,
    /// Examples whose id is within this distance of the query's id are never returned (0: only
    /// the query itself). See [`Pool::exclude_within`].
    exclude_within: u64,
}

/// One retrieved neighbour, with its text.
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
        let set = VectorSet::from_rows(examples.iter().map(|e| e.id).collect(), vectors.dim, data)?;
        Ok(Pool {
            index: Some(Box::new(BruteForce::new(&set)?)),
            by_text: Self::texts(&examples),
            examples,
            exclude_within: 0,
        })
    }

    /// A pool over `examples` searched through `index` (an ANN index over the encoder's text
    /// vectors, which holds `vectors`): the index may hold examples outside the pool, which its
    /// filtered search never returns.
    pub fn dense_ann(
        examples: Vec<Example>,
        vectors: &VectorSet,
        index: Arc<AnnIndex>,
    ) -> Result<Pool> {
        if let Some(ex) = examples.iter().find(|e| vectors.position(e.id).is_none()) {
            return Err(Error::NotFound(format!(
                "example {} has no stored vector (run `emoknow embed` on its split)",
                ex.id
            )));
        }
        let ids: Vec<ExampleId> = examples.iter().map(|e| e.id).collect();
        Ok(Pool {
            index: Some(Box::new(AnnSearch::for_pool(index, &ids, vectors))),
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
    /// Dense pools need a vector per probe; sparse pools search `store`'s index by BM25 (and
    /// need it).
    pub fn retrieve(
        &self,
        store: Option<&Store>,
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
                let store = store.ok_or_else(|| {
                    Error::Invalid(
                        "BM25 retrieval searches the store's index: it needs the store".into(),
                    )
                })?;
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

impl Hit {
    /// The neighbour as classifiers and records hold it (without its text).
    pub fn neighbour(&self) -> Neighbour {
        Neighbour {
            id: self.id,
            score: self.score,
            labels: self.labels,
        }
    }
}
