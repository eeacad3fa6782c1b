//! The store side of the rationale workflow: which sentences a source still lacks
//! ([`pending`]), annotating them into the store as the answers arrive
//! ([`annotate_into_store`]), and the stored rationales as LLaMA-Factory records
//! ([`export_records`]).
//!
//! [`annotate`](crate::knowledge::annotate) is the engine and touches no store; this module is
//! its caller for `emoknow annotate`. Each outcome is written as it arrives, in one short
//! atomic write: an accepted answer is sanitized ([`sanitize`]: the reason part, emotion words
//! removed) and stored as [`Knowledge`] of the source with the raw answer beside it; a verdict
//! on the sentence (no label, gold never matched, refused) is stored as [`Missing`]; an
//! endpoint that stayed down or answered garbage is not recorded at all, so a rerun tries that
//! sentence again. The search index catches up every few seconds and once at the end.

use crate::corpus::Split;
use crate::knowledge::annotate::{annotate, AnnotateConfig, Item, Outcome, Progress, Summary};
use crate::knowledge::llama_factory::SftRecord;
use crate::knowledge::llm::LlmClient;
use crate::knowledge::prompts::Prompts;
use crate::knowledge::sanitize::{sanitize, Lexicon};
use crate::labels::LabelSet;
use crate::neighbours::{Choice, Retriever};
use crate::store::records::{now_secs, Example, Knowledge, KnowledgeKind, Missing};
use crate::store::Store;
use crate::{Error, Result};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How often, at most, the search index is brought up to date during a run (answers are on
/// disk in sled at once; the index follows in bulk).
const SYNC_EVERY: Duration = Duration::from_secs(10);

/// The examples of `split` that `source` has not answered yet, by id, at most `limit` of them.
///
/// An example with knowledge from `source` is done. One with a missing record (an earlier
/// answer was unusable, or the endpoint refused it) is skipped too, unless `retry_failed`.
pub fn pending(
    store: &Store,
    split: Split,
    source: &str,
    limit: Option<usize>,
    retry_failed: bool,
) -> Result<Vec<Example>> {
    let mut todo = Vec::new();
    for e in store.examples(Some(split))? {
        if limit.is_some_and(|n| todo.len() >= n) {
            break;
        }
        let done = store.knowledge_of(e.id, source)?.is_some();
        let failed = !done && store.has_attempt(e.id, source)?;
        if done || (failed && !retry_failed) {
            continue;
        }
        todo.push(e);
    }
    Ok(todo)
}

/// The engine's items for `examples`, in order.
///
/// A training example's gold labels go along (enabling the guided prompt) unless
/// `blind_only` or it has none. Validation and test sentences never get them: their
/// rationales are features when models are evaluated, and the guided prompt states the
/// answer. `shots[i]` are the retrieved few-shot turns for `examples[i]`; examples past the
/// end of `shots` get none (pass an empty vector for no retrieval).
pub fn items(
    examples: &[Example],
    shots: Vec<Vec<(String, LabelSet)>>,
    blind_only: bool,
) -> Vec<Item> {
    let mut shots = shots.into_iter();
    examples
        .iter()
        .map(|e| Item {
            id: e.id,
            text: e.text.clone(),
            gold: (!blind_only && e.split == Split::Train && !e.labels.is_empty())
                .then_some(e.labels),
            shots: shots.next().unwrap_or_default(),
        })
        .collect()
}

/// How [`annotate_into_store`] runs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Knowledge source the answers are stored under.
    pub source: String,
    /// The engine's settings (jobs, guided tries, blind-only).
    pub engine: AnnotateConfig,
}

/// What [`annotate_into_store`] did.
#[derive(Debug)]
pub struct StoredRun {
    /// The engine's totals, or the error that stopped the run. Outcomes that arrived before the
    /// error are stored either way.
    pub result: Result<Summary>,
    /// Outcomes handled before the run ended: stored (as knowledge or missing), or left
    /// unrecorded for a rerun.
    pub handled: usize,
    /// The reason of the last outcome left unrecorded (the endpoint failed or answered garbage
    /// through every retry), for the message that asks for a rerun.
    pub last_unfinished: Option<String>,
}

/// Annotates `items` with [`annotate`] and stores each outcome under `cfg.source` as it
/// arrives (see the module doc), then brings the search index up to date.
///
/// `cancel` and `on_progress` are the engine's (progress reports, wait notices). The run's
/// own error (fatal endpoint error, a failed store write, a dead endpoint) comes back in
/// [`StoredRun::result`], with what was stored still indexed; `Err` here means the final index
/// update failed.
pub fn annotate_into_store(
    store: &Store,
    client: &LlmClient,
    prompts: &Prompts,
    items: Vec<Item>,
    cfg: &StoreConfig,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<StoredRun> {
    let lexicon = Lexicon::default();
    let source = cfg.source.as_str();
    let mut last_sync = Instant::now();
    let mut handled = 0usize;
    let mut last_unfinished: Option<String> = None;
    let result = annotate(
        client,
        prompts,
        items,
        &cfg.engine,
        cancel,
        &mut |o| {
            let now = now_secs();
            match o {
                Outcome::Accepted {
                    id,
                    raw,
                    asserted,
                    prompt_kind,
                    attempts,
                    model,
                } => {
                    let s = sanitize(&raw, &lexicon, false);
                    store.put_knowledge_deferred(
                        &[Knowledge {
                            example_id: id,
                            source: source.to_string(),
                            kind: KnowledgeKind::Rationale,
                            sanitized: s.text,
                            raw,
                            asserted,
                            prompt_kind,
                            attempts,
                            model,
                            created_at: now,
                            neighbours: Vec::new(),
                        }],
                        &[],
                    )?;
                }
                Outcome::Failed {
                    id, reason, kind, ..
                } => {
                    // Endpoint failures and garbage are not recorded: the next run tries again.
                    if !kind.is_verdict() {
                        last_unfinished = Some(reason);
                    } else {
                        store.put_knowledge_deferred(
                            &[],
                            &[Missing {
                                example_id: id,
                                source: source.to_string(),
                                reason,
                                created_at: now,
                            }],
                        )?;
                    }
                }
            }
            handled += 1;
            if last_sync.elapsed() > SYNC_EVERY {
                store.sync_index()?;
                last_sync = Instant::now();
            }
            Ok(())
        },
        on_progress,
    );
    // Index whatever arrived, whether or not the run finished.
    store.sync_index()?;
    Ok(StoredRun {
        result,
        handled,
        last_unfinished,
    })
}

/// LLaMA-Factory records from the store; see [`export_records`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRecords {
    /// One per example of the training split with a rationale from the source: the blind
    /// prompt, the raw answer as output.
    pub train: Vec<SftRecord>,
    /// One per sentence of the prediction split: the blind prompt, an empty output.
    pub predict: Vec<SftRecord>,
}

/// The training records (every `split` example with a rationale from `source`, the seed's
/// blind prompt with the raw answer as output) and the prediction records (every
/// `predict_split` sentence, empty output) for a LLaMA-Factory dataset.
///
/// Errors: [`Error::NotFound`] when no `split` example has a rationale from `source`.
pub fn export_records(
    store: &Store,
    prompts: &Prompts,
    source: &str,
    split: Split,
    predict_split: Split,
) -> Result<ExportRecords> {
    let mut train = Vec::new();
    for e in store.examples(Some(split))? {
        if let Some(k) = store.knowledge_of(e.id, source)? {
            if k.kind == KnowledgeKind::Rationale {
                train.push(SftRecord::from_messages(
                    e.id,
                    &prompts.blind(&e.text, &[]),
                    k.raw,
                )?);
            }
        }
    }
    if train.is_empty() {
        return Err(Error::NotFound(format!(
            "no {split} example has a rationale from {source:?}: annotate or import first"
        )));
    }
    let predict = store
        .examples(Some(predict_split))?
        .iter()
        .map(|e| SftRecord::from_messages(e.id, &prompts.blind(&e.text, &[]), ""))
        .collect::<Result<_>>()?;
    Ok(ExportRecords { train, predict })
}

/// Each example's `k` nearest training examples (text and gold labels), as extra few-shot
/// turns for its prompt (`annotate --retrieved K`): dense when the store holds vectors, BM25
/// otherwise.
pub fn retrieved_shots(
    store: &Store,
    todo: &[Example],
    k: usize,
) -> Result<Vec<Vec<(String, LabelSet)>>> {
    let r = Retriever::choose(store, &Choice::nearest(k))?;
    Ok(r.for_examples(store, todo, k, LabelSet::EMPTY)?
        .into_iter()
        .map(|hits| hits.into_iter().map(|h| (h.text, h.labels)).collect())
        .collect())
}
