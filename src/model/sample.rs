//! What a classifier consumes: a [`Sample`] (a sentence with whatever knowledge its model
//! attaches, already fetched), the [`AttachSpec`] that says which knowledge, and the
//! [`Needs`] a model declares so the knowledge stage can build its samples.
//!
//! Models never fetch anything: the knowledge stage reads the store (or embeds and retrieves
//! for new text) and hands them finished samples.

use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::spec::{EncoderInfo, ExampleId, Neighbour, NeighbourSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Separator between a sentence and its knowledge.
pub const SEP: &str = " [SEP] ";

/// Where the sentence itself stands in a rendered context ([`Sample::context`]): the
/// sentences before it, this marker, the sentences after it.
pub const CONTEXT_MARK: &str = " [CTX] ";

/// Default number of sentences on each side `show` prints.
pub const DEFAULT_CONTEXT: usize = 2;

/// Default number of sentences on each side a context mode attaches to training examples
/// (chosen with the linear model on validation rows of unseen documents; see README).
pub const DEFAULT_TRAIN_CONTEXT: usize = 3;

/// One sample's probabilities, canonical label order.
pub type Probs = [f32; NUM_EMOTIONS];

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
    /// Rationale and neighbours (and, for models that read it, the document context).
    All,
    /// The text of the surrounding sentences of the same document ([`AttachSpec::context`]).
    Context,
}

impl KnowledgeMode {
    /// Whether a rationale is attached.
    pub fn rationale(self) -> bool {
        matches!(self, KnowledgeMode::Rationale | KnowledgeMode::All)
    }

    /// Whether neighbours are attached.
    pub fn neighbours(self) -> bool {
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
    /// Neighbours source (its stored records are attached to stored examples).
    pub neighbours_source: Option<String>,
    /// How many neighbours' labels to attach (at most what was stored).
    pub neighbours_k: usize,
    /// How the neighbours source was retrieved when the model was trained: new texts get
    /// neighbours found exactly this way. Absent in models trained before it was recorded
    /// (the store's record of the source tells then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbours: Option<NeighbourSpec>,
    /// Sentences of the same document attached on each side (their text only, never their
    /// labels); 0 = none. Absent in models trained before documents were known: none.
    #[serde(default)]
    pub context: usize,
}

impl AttachSpec {
    /// The rationale source for training (`eval` false) or evaluation examples.
    pub fn rationale_source(&self, eval: bool) -> Option<&String> {
        if eval {
            self.eval_source.as_ref().or(self.source.as_ref())
        } else {
            self.source.as_ref()
        }
    }
}

/// What a single (non-ensemble) model needs in its samples. The knowledge stage reads it and
/// fills the samples; the model reads nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct Needs {
    /// The knowledge attached to the text (rationale, stored neighbours).
    pub attach: AttachSpec,
    /// Vectors of this encoder in [`Sample::vector`] (and of the rationale in
    /// [`Sample::rationale_vector`] when a rationale is attached): frozen models.
    pub vectors: Option<EncoderInfo>,
    /// Where to load that encoder (or the kNN model's) to embed text without stored vectors
    /// (default: where the vectors were made).
    pub encoder_dir: Option<PathBuf>,
    /// Neighbours found now, with these settings, for every sample (stored or not) in
    /// [`Sample::neighbours`]: kNN models.
    pub retrieve: Option<NeighbourSpec>,
}

/// A classifier input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// The example (0 for text that is not in the store).
    pub id: ExampleId,
    /// The sentence.
    pub text: String,
    /// The sanitized rationale attached (rationale modes).
    pub rationale: Option<String>,
    /// The neighbours attached (neighbours modes) or retrieved for a kNN model.
    pub neighbours: Vec<Neighbour>,
    /// Rationale and rendered neighbour labels as one string (empty when none).
    pub knowledge: String,
    /// The surrounding sentences of its document when the spec attaches context: the ones
    /// before it, [`CONTEXT_MARK`], the ones after it (`None`: no context attached; a
    /// sentence alone has `Some` of just the mark).
    pub context: Option<String>,
    /// Gold labels (empty when unknown).
    pub labels: LabelSet,
    /// The text's vector (when the model needs vectors).
    pub vector: Option<Vec<f32>>,
    /// The attached rationale's vector (when the model needs vectors and a rationale is
    /// attached).
    pub rationale_vector: Option<Vec<f32>>,
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
        if !neighbours.is_empty() && spec.mode.neighbours() {
            parts.push(render_neighbour_labels(&neighbours, spec.neighbours_k));
        }
        Sample {
            id,
            text,
            rationale,
            neighbours,
            knowledge: parts.join(SEP),
            context: None,
            labels,
            vector: None,
            rationale_vector: None,
        }
    }

    /// Text and knowledge joined by [`SEP`], as text models read them.
    pub fn joined(&self) -> String {
        if self.knowledge.is_empty() {
            self.text.clone()
        } else {
            format!("{}{SEP}{}", self.text, self.knowledge)
        }
    }
}

/// Renders a context: the sentences before, [`CONTEXT_MARK`], the sentences after (each side
/// joined by a space).
pub fn render_context(before: &[&str], after: &[&str]) -> String {
    format!("{}{CONTEXT_MARK}{}", before.join(" "), after.join(" "))
}

/// The two sides of a context [`render_context`] rendered (all of it before the mark when
/// there is none).
pub fn split_context(context: &str) -> (&str, &str) {
    match context.split_once(CONTEXT_MARK.trim()) {
        Some((b, a)) => (b.trim(), a.trim()),
        None => (context.trim(), ""),
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

/// Score-weighted label vote of neighbours: per label, the share of (positive) similarity
/// carried by neighbours with that label. Probabilities in [0, 1].
pub fn knn_vote(neighbours: &[Neighbour]) -> Probs {
    let mut p = [0f32; NUM_EMOTIONS];
    let total: f32 = neighbours.iter().map(|h| h.score.max(0.0)).sum();
    if total <= 0.0 {
        for h in neighbours {
            for e in h.labels.iter() {
                p[e.index()] += 1.0 / neighbours.len() as f32;
            }
        }
        return p;
    }
    for h in neighbours {
        for e in h.labels.iter() {
            p[e.index()] += h.score.max(0.0) / total;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u64, score: f32, labels: &str) -> Neighbour {
        Neighbour {
            id,
            score,
            labels: labels.parse().unwrap(),
        }
    }

    #[test]
    fn vote_is_score_weighted() {
        let p = knn_vote(&[n(1, 0.75, "Love"), n(2, 0.25, "Love,Joy")]);
        assert_eq!(p[0], 1.0);
        assert_eq!(p[1], 0.25);
    }

    #[test]
    fn knowledge_renders_rationale_then_neighbour_labels() {
        let spec = AttachSpec {
            mode: KnowledgeMode::All,
            neighbours_k: 1,
            ..Default::default()
        };
        let s = Sample::new(
            1,
            "文".into(),
            LabelSet::EMPTY,
            Some("甲".into()),
            vec![n(2, 0.9, "Love,Joy"), n(3, 0.8, "Anger")],
            &spec,
        );
        assert_eq!(s.knowledge, "甲 [SEP] 近邻: Love,Joy");
        assert_eq!(s.joined(), "文 [SEP] 甲 [SEP] 近邻: Love,Joy");
        let text_only = Sample::new(1, "文".into(), LabelSet::EMPTY, None, vec![], &spec);
        assert_eq!(text_only.joined(), "文");
    }
}
