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

/// Where the sentence itself stands in a rendered context ([`Context::render`]): the
/// sentences before it, this marker, the sentences after it.
pub const CONTEXT_MARK: &str = " [CTX] ";

/// Default number of sentences on each side `show` prints.
pub const DEFAULT_CONTEXT: usize = 2;

/// Default number of sentences on each side a context mode attaches to training examples
/// (chosen with the linear model on validation rows of unseen documents; see docs/results.md).
pub const DEFAULT_TRAIN_CONTEXT: usize = 3;

/// Default number of sentences on each side a fine-tune attaches: every one lengthens each
/// input by a sentence (28 tokens on average here), and a step's cost grows with its tokens.
pub const DEFAULT_FINETUNE_CONTEXT: usize = 1;

/// One sample's probabilities, canonical label order.
pub type Probs = [f32; NUM_EMOTIONS];

/// How a frozen model pools the vectors of the context sentences ([`Sample::context_vectors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextPool {
    /// Two blocks: the (weighted) mean of the sentences before, and of those after.
    #[default]
    Sides,
    /// One block: the (weighted) mean of every context sentence.
    Mean,
}

impl ContextPool {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ContextPool::Sides => "sides",
            ContextPool::Mean => "mean",
        }
    }
}

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// How a model reading vectors pools the context sentences' vectors (ignored by text
    /// models). Absent: two sides.
    #[serde(default, skip_serializing_if = "is_default")]
    pub context_pool: ContextPool,
    /// Weight of a context sentence at distance d is `context_decay^(d-1)` when its vectors
    /// are pooled (1: a plain mean). Absent: 1.
    #[serde(default = "default_decay", skip_serializing_if = "is_default_decay")]
    pub context_decay: f32,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_decay() -> f32 {
    1.0
}

fn is_default_decay(d: &f32) -> bool {
    *d == 1.0
}

impl Default for AttachSpec {
    fn default() -> AttachSpec {
        AttachSpec {
            mode: KnowledgeMode::None,
            source: None,
            eval_source: None,
            neighbours_source: None,
            neighbours_k: 0,
            neighbours: None,
            context: 0,
            context_pool: ContextPool::Sides,
            context_decay: 1.0,
        }
    }
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
    /// The surrounding sentences of its document when the spec attaches context (`None`: no
    /// context attached; a sentence alone has `Some` of two empty sides).
    pub context: Option<Context>,
    /// Gold labels (empty when unknown).
    pub labels: LabelSet,
    /// The text's vector (when the model needs vectors).
    pub vector: Option<Vec<f32>>,
    /// The attached rationale's vector (when the model needs vectors and a rationale is
    /// attached).
    pub rationale_vector: Option<Vec<f32>>,
    /// The context sentences' vectors, pooled per side (when the model needs vectors and
    /// attaches context).
    pub context_vectors: Option<ContextVectors>,
}

/// A sample's document context: the sentences before it and after it, each side in document
/// order (the nearest sentence before is the last of `before`, the nearest after the first of
/// `after`). Text only: a context never carries labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// The sentences before, in document order.
    pub before: Vec<String>,
    /// The sentences after, in document order.
    pub after: Vec<String>,
}

impl Context {
    /// A context of the given sides (each in document order).
    pub fn new(before: &[&str], after: &[&str]) -> Context {
        let own = |side: &[&str]| side.iter().map(|s| s.to_string()).collect();
        Context {
            before: own(before),
            after: own(after),
        }
    }

    /// The sentences before, joined by a space.
    pub fn before_text(&self) -> String {
        self.before.join(" ")
    }

    /// The sentences after, joined by a space.
    pub fn after_text(&self) -> String {
        self.after.join(" ")
    }

    /// Both sides as one string: the sentences before, [`CONTEXT_MARK`], the sentences after
    /// (what a training run's fingerprint hashes).
    pub fn render(&self) -> String {
        format!("{}{CONTEXT_MARK}{}", self.before_text(), self.after_text())
    }
}

/// The vectors of a sample's context sentences, pooled per side: each side's weighted mean
/// (sentence at distance d weighs `decay^(d-1)`), zeros for an empty side.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContextVectors {
    /// Weighted mean of the sentences before.
    pub before: Vec<f32>,
    /// Weighted mean of the sentences after.
    pub after: Vec<f32>,
    /// Sum of the weights before (0: no sentence before).
    pub before_weight: f32,
    /// Sum of the weights after.
    pub after_weight: f32,
}

impl ContextVectors {
    /// Pools `before` (nearest last) and `after` (nearest first), vectors of dimension `dim`.
    pub fn pool(before: &[&[f32]], after: &[&[f32]], dim: usize, decay: f32) -> ContextVectors {
        let side = |vs: &mut dyn Iterator<Item = &&[f32]>| -> (Vec<f32>, f32) {
            let mut acc = vec![0f32; dim];
            let mut total = 0f32;
            let mut w = 1f32;
            for v in vs {
                for (a, x) in acc.iter_mut().zip(v.iter()) {
                    *a += w * x;
                }
                total += w;
                w *= decay;
            }
            if total > 0.0 {
                acc.iter_mut().for_each(|a| *a /= total);
            }
            (acc, total)
        };
        let (b, bw) = side(&mut before.iter().rev());
        let (a, aw) = side(&mut after.iter());
        ContextVectors {
            before: b,
            after: a,
            before_weight: bw,
            after_weight: aw,
        }
    }

    /// The features of `pool`: before ⊕ after, or their weighted mean (zeros when empty).
    pub fn features(&self, pool: ContextPool) -> Vec<f32> {
        match pool {
            ContextPool::Sides => {
                let mut v = self.before.clone();
                v.extend_from_slice(&self.after);
                v
            }
            ContextPool::Mean => {
                let total = self.before_weight + self.after_weight;
                self.before
                    .iter()
                    .zip(&self.after)
                    .map(|(b, a)| {
                        if total > 0.0 {
                            (b * self.before_weight + a * self.after_weight) / total
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
        }
    }

    /// The number of features of `pool` for vectors of dimension `dim`.
    pub fn dim(pool: ContextPool, dim: usize) -> usize {
        match pool {
            ContextPool::Sides => dim.saturating_mul(2),
            ContextPool::Mean => dim,
        }
    }
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
            context_vectors: None,
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

    /// [`Sample::joined`], then, when a context is attached, the sentences before it and the
    /// sentences after it, each side behind a [`SEP`] (an empty side stays, so each side keeps
    /// its place): `text [SEP] before [SEP] after`, the sentence pair a fine-tuned encoder
    /// reads. Truncation to the model's length cuts from the end.
    pub fn paired(&self) -> String {
        let mut s = self.joined();
        if let Some(c) = &self.context {
            for side in [c.before_text(), c.after_text()] {
                s.push_str(SEP);
                s.push_str(&side);
            }
        }
        s
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neighbours::vote::tests::n;

    #[test]
    fn context_vectors_pool_by_side_and_distance() {
        let (a, b, c) = ([1.0f32, 0.0], [0.0f32, 1.0], [2.0f32, 2.0]);
        // Before: a then b (b nearest); after: c. Decay 0.5: b weighs 1, a 0.5.
        let p = ContextVectors::pool(&[&a, &b], &[&c], 2, 0.5);
        assert_eq!(p.before, [0.5 / 1.5, 1.0 / 1.5]);
        assert_eq!((p.before_weight, p.after_weight), (1.5, 1.0));
        assert_eq!(
            p.features(ContextPool::Sides),
            [0.5 / 1.5, 1.0 / 1.5, 2.0, 2.0]
        );
        let mean = p.features(ContextPool::Mean);
        assert!((mean[0] - 2.5 / 2.5).abs() < 1e-6 && (mean[1] - 3.0 / 2.5).abs() < 1e-6);
        let none = ContextVectors::pool(&[], &[], 2, 1.0);
        assert_eq!(none.features(ContextPool::Sides), [0.0; 4]);
        assert_eq!(none.features(ContextPool::Mean), [0.0; 2]);
        assert_eq!(ContextVectors::dim(ContextPool::Sides, 2), 4);
    }

    #[test]
    fn old_attach_specs_load_with_default_pooling() {
        let old = r#"{"mode":"context","source":null,"eval_source":null,"neighbours_source":null,"neighbours_k":5,"context":3}"#;
        let spec: AttachSpec = serde_json::from_str(old).unwrap();
        assert_eq!(
            (spec.context_pool, spec.context_decay),
            (ContextPool::Sides, 1.0)
        );
        // Defaults are not written, so a linear model's meta.json reads as before.
        assert!(!serde_json::to_string(&spec)
            .unwrap()
            .contains("context_pool"));
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
        assert_eq!(text_only.paired(), "文");
    }

    #[test]
    fn paired_puts_each_side_of_the_context_behind_a_separator() {
        let mut s = Sample {
            text: "文".into(),
            knowledge: "甲".into(),
            context: Some(Context::new(&["前 一", "前 二"], &["后"])),
            ..Sample::default()
        };
        assert_eq!(s.paired(), "文 [SEP] 甲 [SEP] 前 一 前 二 [SEP] 后");
        s.knowledge.clear();
        s.context = Some(Context::new(&[], &["后"]));
        assert_eq!(s.paired(), "文 [SEP]  [SEP] 后");
        s.context = Some(Context::default());
        assert_eq!(s.paired(), "文 [SEP]  [SEP] ");
    }
}
