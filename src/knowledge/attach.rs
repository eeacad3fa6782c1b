//! Attaching knowledge to examples for classifiers: what is appended to a sentence, from the
//! store. Trainers, evaluators and `predict` all build their inputs here, so training and
//! inference see knowledge in the same form.
//!
//! The seed's protocol is expressible: train on one rationale source (qwen-max, written with
//! the gold answer in view) and evaluate on another (the fine-tuned LLM's, written blind).

use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::labels::LabelSet;
use crate::store::records::{Example, ExampleId, Knowledge, KnowledgeKind, Neighbour};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Separator between a sentence and its knowledge.
pub const SEP: &str = " [SEP] ";

/// What knowledge is appended to the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KnowledgeMode {
    /// Text only.
    #[default]
    None,
    /// The sanitized rationale of a source.
    Rationale,
    /// The labels of retrieved neighbours.
    Neighbours,
    /// Rationale and neighbours.
    All,
}

impl KnowledgeMode {
    fn rationale(self) -> bool {
        matches!(self, KnowledgeMode::Rationale | KnowledgeMode::All)
    }
    fn neighbours(self) -> bool {
        matches!(self, KnowledgeMode::Neighbours | KnowledgeMode::All)
    }
}

/// Which knowledge to attach, saved with a model so inference repeats it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachSpec {
    /// Mode.
    pub mode: KnowledgeMode,
    /// Rationale source for training examples.
    pub source: Option<String>,
    /// Rationale source at evaluation and prediction (default: `source`).
    pub eval_source: Option<String>,
    /// Neighbours source (`knn-bm25`, `knn-<encoder>`), for the neighbours modes.
    pub neighbours_source: Option<String>,
    /// How many neighbours' labels to attach (at most what was stored).
    pub neighbours_k: usize,
}

/// A classifier input.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The example (0 for text that is not in the store).
    pub id: ExampleId,
    /// The sentence.
    pub text: String,
    /// The sanitized rationale attached (rationale modes).
    pub rationale: Option<String>,
    /// The neighbours attached (neighbours modes).
    pub neighbours: Vec<Neighbour>,
    /// Rationale and rendered neighbour labels as one string (empty when none).
    pub knowledge: String,
    /// Gold labels (empty when unknown).
    pub labels: LabelSet,
}

impl Sample {
    /// A sample with the given knowledge, rendered as `spec` says.
    pub fn new(
        id: ExampleId,
        text: String,
        labels: LabelSet,
        rationale: Option<String>,
        neighbours: Vec<Neighbour>,
        spec: &AttachSpec,
    ) -> Sample {
        let mut parts = Vec::new();
        if let Some(r) = rationale.as_ref().filter(|r| !r.is_empty()) {
            parts.push(r.clone());
        }
        if !neighbours.is_empty() {
            parts.push(render_neighbour_labels(&neighbours, spec.neighbours_k));
        }
        Sample {
            id,
            text,
            rationale,
            neighbours,
            knowledge: parts.join(SEP),
            labels,
        }
    }

    /// Text and knowledge joined by [`SEP`], as linear models read them.
    pub fn joined(&self) -> String {
        if self.knowledge.is_empty() {
            self.text.clone()
        } else {
            format!("{}{SEP}{}", self.text, self.knowledge)
        }
    }
}

/// Renders neighbours' labels for a classifier: `近邻: Love,Joy | Anxiety | …`.
pub fn render_neighbour_labels(neighbours: &[Neighbour], k: usize) -> String {
    let parts: Vec<String> = neighbours
        .iter()
        .take(k)
        .map(|n| n.labels.to_string())
        .collect();
    format!("近邻: {}", parts.join(" | "))
}

/// The rationale and neighbours `spec` attaches, picked from an example's stored records.
pub fn pick(
    records: &[Knowledge],
    spec: &AttachSpec,
    eval: bool,
) -> (Option<String>, Vec<Neighbour>) {
    let mut rationale = None;
    let mut neighbours = Vec::new();
    if spec.mode.rationale() {
        let src = if eval {
            spec.eval_source.as_ref().or(spec.source.as_ref())
        } else {
            spec.source.as_ref()
        };
        rationale = records
            .iter()
            .find(|k| Some(&k.source) == src && k.kind == KnowledgeKind::Rationale)
            .map(|k| k.sanitized.clone());
    }
    if spec.mode.neighbours() {
        if let Some(k) = records.iter().find(|k| {
            Some(&k.source) == spec.neighbours_source.as_ref()
                && k.kind == KnowledgeKind::Neighbours
        }) {
            neighbours = k
                .neighbours
                .iter()
                .take(spec.neighbours_k.max(1))
                .cloned()
                .collect();
        }
    }
    (rationale, neighbours)
}

/// Checks that the sources a spec names exist in the store.
pub fn validate(store: &Store, spec: &AttachSpec) -> Result<()> {
    let stats_sources: Vec<String> = store.stats()?.sources.into_keys().collect();
    let need = |name: &Option<String>, what: &str| -> Result<()> {
        match name {
            Some(n) if !stats_sources.contains(n) => Err(Error::NotFound(format!(
                "no knowledge from source {n:?} ({what}); the store has: {}",
                if stats_sources.is_empty() {
                    "none".to_string()
                } else {
                    stats_sources.join(", ")
                }
            ))),
            None => Err(Error::Invalid(format!(
                "knowledge mode needs a {what} source"
            ))),
            _ => Ok(()),
        }
    };
    if spec.mode.rationale() {
        need(&spec.source, "rationale (--source)")?;
        if spec.eval_source.is_some() {
            need(&spec.eval_source, "evaluation rationale (--eval-source)")?;
        }
    }
    if spec.mode.neighbours() {
        need(&spec.neighbours_source, "neighbours (--neighbours-source)")?;
    }
    Ok(())
}

/// Samples for stored examples. `eval` picks the evaluation rationale source.
///
/// Attached neighbours must be other examples of the train split: neighbours stored before the
/// splits changed (a re-ingest with another draw) could carry validation or test labels into
/// the features, so they are refused with the fix.
pub fn samples(
    store: &Store,
    examples: &[Example],
    spec: &AttachSpec,
    eval: bool,
) -> Result<Vec<Sample>> {
    let train: HashSet<ExampleId> = if spec.mode.neighbours() {
        store
            .examples(Some(Split::Train))?
            .iter()
            .map(|e| e.id)
            .collect()
    } else {
        HashSet::new()
    };
    examples
        .iter()
        .map(|e| {
            let (rationale, neighbours) = if spec.mode == KnowledgeMode::None {
                (None, Vec::new())
            } else {
                let records = store.knowledge(e.id)?;
                if spec.mode.neighbours()
                    && !records.iter().any(|k| {
                        Some(&k.source) == spec.neighbours_source.as_ref()
                            && k.kind == KnowledgeKind::Neighbours
                    })
                {
                    return Err(Error::NotFound(format!(
                        "example {} ({}) has no neighbours of source {}: the retrieval stopped part-way or did not cover the {} split; run `emoknow knowledge retrieve` again (it resumes)",
                        e.id,
                        e.split,
                        spec.neighbours_source.as_deref().unwrap_or("?"),
                        e.split
                    )));
                }
                pick(&records, spec, eval)
            };
            if let Some(n) = neighbours
                .iter()
                .find(|n| n.id == e.id || !train.contains(&n.id))
            {
                return Err(Error::Invalid(format!(
                    "the stored neighbours ({}) of example {} include example {}, which is {}: \
                     the splits changed after they were retrieved; run `emoknow knowledge \
                     retrieve` again",
                    spec.neighbours_source.as_deref().unwrap_or("?"),
                    e.id,
                    n.id,
                    if n.id == e.id {
                        "itself"
                    } else {
                        "not in the train split now"
                    }
                )));
            }
            Ok(Sample::new(
                e.id,
                e.text.clone(),
                e.labels,
                rationale,
                neighbours,
                spec,
            ))
        })
        .collect()
}

/// Whether the example has a rationale of the spec's source (evaluation source when `eval`),
/// whatever the mode (for `--only-with-knowledge`).
pub fn has_rationale(store: &Store, id: ExampleId, spec: &AttachSpec, eval: bool) -> Result<bool> {
    let src = if eval {
        spec.eval_source.as_ref().or(spec.source.as_ref())
    } else {
        spec.source.as_ref()
    };
    Ok(match src {
        Some(s) => store.knowledge_of(id, s)?.is_some(),
        None => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::PromptKind;

    fn k(source: &str, kind: KnowledgeKind, sanitized: &str, nb: Vec<Neighbour>) -> Knowledge {
        Knowledge {
            example_id: 1,
            source: source.into(),
            kind,
            raw: String::new(),
            sanitized: sanitized.into(),
            asserted: LabelSet::EMPTY,
            prompt_kind: PromptKind::Imported,
            attempts: 0,
            model: String::new(),
            created_at: 0,
            neighbours: nb,
        }
    }

    #[test]
    fn train_and_eval_sources_differ_and_neighbours_render_labels() {
        let nb = vec![
            Neighbour {
                id: 2,
                score: 0.9,
                labels: "Love,Joy".parse().unwrap(),
            },
            Neighbour {
                id: 3,
                score: 0.8,
                labels: "Anger".parse().unwrap(),
            },
        ];
        let recs = vec![
            k("qwen", KnowledgeKind::Rationale, "甲", vec![]),
            k("glm", KnowledgeKind::Rationale, "乙", vec![]),
            k("knn", KnowledgeKind::Neighbours, "", nb),
        ];
        let spec = AttachSpec {
            mode: KnowledgeMode::All,
            source: Some("qwen".into()),
            eval_source: Some("glm".into()),
            neighbours_source: Some("knn".into()),
            neighbours_k: 1,
        };
        let sample = |eval| {
            let (r, n) = pick(&recs, &spec, eval);
            Sample::new(1, "文".into(), LabelSet::EMPTY, r, n, &spec)
        };
        assert_eq!(sample(false).knowledge, "甲 [SEP] 近邻: Love,Joy");
        assert_eq!(sample(true).knowledge, "乙 [SEP] 近邻: Love,Joy");
        assert_eq!(sample(true).joined(), "文 [SEP] 乙 [SEP] 近邻: Love,Joy");
        let (r, n) = pick(&recs, &AttachSpec::default(), false);
        assert_eq!((r, n.len()), (None, 0));
    }
}
