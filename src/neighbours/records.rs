//! Neighbours as stored knowledge: each example's k nearest training examples written as a
//! record of a source (resumably, with the retrieval's [`NeighbourSpec`] recorded beside
//! them), and reading back how a source's neighbours were found.

use super::pool::Hit;
use super::retriever::Retriever;
use super::vote::knn_vote;
use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::labels::{Emotion, LabelSet};
use crate::spec::{ExampleId, Neighbour, NeighbourBy, NeighbourSpec};
use crate::store::records::{now_secs, Knowledge, KnowledgeKind, NeighbourRun, PromptKind};
use crate::store::{fingerprint, Store};
use serde::Serialize;

/// Renders neighbours as knowledge text: `相似例句: <text> → Love,Joy; …`.
pub fn render_neighbours(hits: &[Hit]) -> String {
    let parts: Vec<String> = hits
        .iter()
        .map(|h| format!("{} → {}", h.text.replace(' ', ""), h.labels))
        .collect();
    format!("相似例句: {}", parts.join("; "))
}

/// A "retrieved neighbours" knowledge record about `example_id`; `model` names what found
/// them (an encoder id, or `bm25`).
pub fn neighbours_knowledge(
    example_id: ExampleId,
    source: &str,
    model: &str,
    hits: &[Hit],
) -> Knowledge {
    let text = render_neighbours(hits);
    let neighbours: Vec<Neighbour> = hits.iter().map(Hit::neighbour).collect();
    let vote = knn_vote(&neighbours);
    Knowledge {
        example_id,
        source: source.to_string(),
        kind: KnowledgeKind::Neighbours,
        raw: text.clone(),
        sanitized: text,
        asserted: LabelSet::from_emotions(
            Emotion::ALL.into_iter().filter(|e| vote[e.index()] >= 0.5),
        ),
        prompt_kind: PromptKind::Computed,
        attempts: 0,
        model: model.to_string(),
        created_at: now_secs(),
        neighbours,
    }
}

/// How `knowledge retrieve` went.
#[derive(Debug, Clone, Serialize)]
pub struct RetrieveSummary {
    /// The source written.
    pub source: String,
    /// Examples given neighbours by this run.
    pub examples: usize,
    /// Examples that already had neighbours of this retrieval (a resumed run).
    pub already_done: usize,
    /// Neighbours per example.
    pub k: usize,
}

/// Examples given neighbours per atomic write.
const BATCH: usize = 2048;

/// Stores each example's neighbours (of `split`, or every split) as knowledge of `source`.
///
/// Resumable: the retrieval's spec and a fingerprint of its pool are recorded first (as an
/// unfinished [`NeighbourRun`]), each batch of 2,048 examples is one atomic write, and the run
/// is marked complete at the end. A run with the same spec over the same pool as the recorded
/// one fills only the examples without neighbours; anything else (or `fresh`) drops the
/// source's neighbours first, so a source never mixes two retrievals. A source holding
/// rationales is refused. `cancelled` is polled between batches; `progress` gets the examples
/// done.
pub fn retrieve_into_store(
    store: &Store,
    r: &Retriever,
    source: &str,
    split: Option<Split>,
    fresh: bool,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RetrieveSummary> {
    let model = match &r.spec.by {
        NeighbourBy::Dense { encoder_id } => encoder_id.clone(),
        NeighbourBy::Bm25 => "bm25".to_string(),
    };
    let mut run = NeighbourRun {
        spec: r.spec.clone(),
        pool: fingerprint(&r.pool.examples),
        split,
        complete: false,
        updated_at: now_secs(),
    };
    let resume = !fresh
        && store
            .neighbour_run(source)?
            .is_some_and(|prev| prev.spec == run.spec && prev.pool == run.pool);
    if !resume {
        if store
            .all_knowledge(Some(source))?
            .iter()
            .any(|k| k.kind != KnowledgeKind::Neighbours)
        {
            return Err(Error::Invalid(format!(
                "source {source} holds rationales, not neighbours; store neighbours under another source name"
            )));
        }
        store.delete_source(source)?;
    }
    store.put_neighbour_run(source, &run)?;
    let mut examples = store.examples(split)?;
    let asked = examples.len();
    if resume {
        let mut todo = Vec::with_capacity(examples.len());
        for e in examples {
            if !store.has_attempt(e.id, source)? {
                todo.push(e);
            }
        }
        examples = todo;
    }
    // Each batch is durable in sled at once; the search index (which lists an example's
    // knowledge sources) catches up in bulk at the end, or at the next open after a kill: one
    // index commit per batch made a million-row retrieval spend its time merging segments.
    let mut stored = 0;
    for chunk in examples.chunks(BATCH) {
        if cancelled() {
            store.sync_index()?;
            return Err(Error::Interrupted);
        }
        let found = r.for_examples(store, chunk, r.spec.k, LabelSet::EMPTY)?;
        let records: Vec<Knowledge> = chunk
            .iter()
            .zip(&found)
            .map(|(e, hits)| neighbours_knowledge(e.id, source, &model, hits))
            .collect();
        store.put_knowledge_deferred(&records, &[])?;
        stored += records.len();
        progress(stored, examples.len());
    }
    store.sync_index()?;
    run.complete = true;
    run.updated_at = now_secs();
    store.put_neighbour_run(source, &run)?;
    Ok(RetrieveSummary {
        source: source.to_string(),
        examples: stored,
        already_done: asked - stored,
        k: r.spec.k,
    })
}

/// How the stored neighbours of `source` were found: the recorded run, or for neighbours
/// stored before runs were recorded, what their records say (the encoder id or `bm25` in
/// the model field, with `, exclude-within W` when used; the pool was the train split).
pub fn stored_spec(store: &Store, source: &str) -> Result<NeighbourSpec> {
    if let Some(run) = store.neighbour_run(source)? {
        return Ok(run.spec);
    }
    let records = store.all_knowledge(Some(source))?;
    let first = records
        .iter()
        .find(|k| k.kind == KnowledgeKind::Neighbours)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no neighbours of source {source:?} in the store (run `emoknow knowledge retrieve`)"
            ))
        })?;
    let (by, rest) = match first.model.split_once(", ") {
        Some((by, rest)) => (by, Some(rest)),
        None => (first.model.as_str(), None),
    };
    let exclude_within = match rest.and_then(|r| r.strip_prefix("exclude-within ")) {
        Some(w) => w.trim().parse().map_err(|_| {
            Error::Corrupt(format!(
                "neighbours of {source}: unreadable model field {:?}",
                first.model
            ))
        })?,
        None => 0,
    };
    let k = records
        .iter()
        .map(|k| k.neighbours.len())
        .max()
        .unwrap_or(0);
    Ok(NeighbourSpec {
        by: if by == "bm25" {
            NeighbourBy::Bm25
        } else {
            NeighbourBy::Dense {
                encoder_id: by.to_string(),
            }
        },
        k,
        from: Split::Train,
        exclude_within,
    })
}
