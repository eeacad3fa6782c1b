//! Every classifier kind behind one interface: the model directory, loading, and
//! probabilities for samples. Models read nothing but the samples they are given: a model
//! says what it needs ([`Model::needs`], one [`Needs`] per single model it holds), the
//! knowledge stage builds those samples, and the model turns them into probabilities.
//!
//! A model directory holds `meta.json` ([`Meta`]: kind and its settings, labels, thresholds,
//! knowledge spec, training-data hash, validation metrics, weight checksums) and the kind's
//! weights (safetensors). Thresholds are always tuned on the validation split, never on test.
//!
//! - [`train`]: what training asks for ([`TrainConfig`]) and one training function per kind.
//! - `frozen`: the frozen kind's features (stored vectors, votes, stacked linear scores).
//! - `check`: what `meta.json` must satisfy, loading with bounds, and the paths training
//!   refuses.

mod check;
mod frozen;
pub mod pack;
pub mod train;

pub use train::{prepare, train, KindConfig, Prepared, TrainConfig, TrainInputs};

use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::metrics::Report;
use crate::model::calibration::Calibration;
use crate::model::decode::{Candidates, SetDecoder};
use crate::model::finetune::{FinetuneConfig, FinetuneModel};
use crate::model::linear::{LinearConfig, LinearModel};
use crate::model::mlp::{Features, Mlp, MlpConfig};
use crate::model::modeldir::FileSum;
use crate::model::sample::{AttachSpec, Context, KnowledgeMode, Needs, Probs, Sample};
use crate::model::thresholds::{Objective, Thresholds};
use crate::neighbours::knn_vote;
use crate::neighbours::Retriever;
use crate::spec::{EncoderInfo, NeighbourBy, NeighbourSpec};
use crate::text::{Normalizer, TextStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the model directory format.
pub const MODEL_FORMAT: u32 = 1;

/// Classifier kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// TF-IDF (words + character n-grams) → one-vs-rest logistic regression. No encoder.
    Linear,
    /// Stored sentence embeddings (+ knowledge embeddings, + neighbour votes) → MLP head.
    Frozen,
    /// Score-weighted label vote of the k nearest training examples.
    Knn,
    /// Our BERT fine-tuned end to end with a classification head.
    Finetune,
    /// Average of member models' probabilities, thresholds re-tuned.
    Ensemble,
}

impl Kind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Linear => "linear",
            Kind::Frozen => "frozen",
            Kind::Knn => "knn",
            Kind::Finetune => "finetune",
            Kind::Ensemble => "ensemble",
        }
    }
}

/// How a kNN model retrieves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnConfig {
    /// Neighbours voting.
    pub k: usize,
    /// Dense (with the kind's `encoder`) or BM25 when no encoder.
    pub dense: bool,
}

/// The settings of one kind, as `meta.json` holds them (the `kind` field names the variant;
/// the field names are those of the first model format, which still loads).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // one per model directory
pub enum KindMeta {
    /// TF-IDF + logistic regression.
    Linear {
        /// Its settings.
        linear: LinearConfig,
    },
    /// A head over stored embeddings.
    Frozen {
        /// The encoder whose vectors the head reads.
        encoder: EncoderInfo,
        /// Where to load the encoder to embed text without stored vectors.
        encoder_dir: Option<PathBuf>,
        /// Head settings.
        mlp: MlpConfig,
        /// Folds of the stacked linear model whose scores join the features (0 = none; its
        /// weights are in the `stack-linear` subdirectory).
        #[serde(default)]
        stack_folds: usize,
        /// The stacked linear model's settings.
        #[serde(default)]
        linear: Option<LinearConfig>,
    },
    /// A vote of the nearest training examples.
    Knn {
        /// k and dense/BM25.
        knn: KnnConfig,
        /// The encoder of dense retrieval.
        encoder: Option<EncoderInfo>,
        /// Where to load the encoder to embed new text.
        encoder_dir: Option<PathBuf>,
    },
    /// BERT fine-tuned end to end.
    Finetune {
        /// Its settings (including the starting checkpoint).
        finetune: FinetuneConfig,
    },
    /// The average of member models.
    Ensemble {
        /// Member model directories, absolute.
        members: Vec<PathBuf>,
        /// SHA-256 of each member's `meta.json` when the ensemble was trained: a member
        /// retrained since is refused (its thresholds were tuned on the old one). Empty in
        /// ensembles trained before it was recorded (not checked).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        member_meta_sha256: Vec<String>,
    },
}

impl KindMeta {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            KindMeta::Linear { .. } => Kind::Linear,
            KindMeta::Frozen { .. } => Kind::Frozen,
            KindMeta::Knn { .. } => Kind::Knn,
            KindMeta::Finetune { .. } => Kind::Finetune,
            KindMeta::Ensemble { .. } => Kind::Ensemble,
        }
    }
}

/// `meta.json` of a model directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// [`MODEL_FORMAT`].
    pub format: u32,
    /// The kind and its settings.
    #[serde(flatten)]
    pub kind: KindMeta,
    /// Label names in output order.
    pub labels: Vec<String>,
    /// Per-label thresholds (tuned on validation).
    pub thresholds: Thresholds,
    /// What the thresholds were tuned for.
    pub objective: Objective,
    /// Knowledge attached to the text.
    pub attach: AttachSpec,
    /// SHA-256 over the training examples (ids, labels, text, attached knowledge).
    pub train_hash: String,
    /// Training examples.
    pub n_train: usize,
    /// Validation examples.
    pub n_val: usize,
    /// Metrics on validation, with the tuned thresholds.
    pub val: Report,
    /// Wall-clock training time, seconds (embedding excluded: it is stored beforehand).
    pub train_secs: f64,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Size and SHA-256 of every other file of the model directory, checked when it is
    /// loaded (absent in models written before they were recorded: not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, FileSum>>,
    /// How the training text is written: new text is brought into this style before the model
    /// reads it, segmented with the words of [`VOCABULARY_FILE`]. Absent in models trained
    /// before styles were learned, or on a store that reads text as written: new text is read
    /// as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_style: Option<TextStyle>,
    /// Per-label Platt scaling fitted on validation: what [`Model::predict_proba`] reports is
    /// calibrated by it (absent in models trained before calibration: their scores as they are).
    /// Thresholds apply to the scores before it, so it never changes a thresholded decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Label-set decoding (`train --decode sets`), chosen on validation; absent: per-label
    /// thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<SetDecoder>,
}

/// The file of a model directory holding its training text's vocabulary
/// ([`crate::text::Vocabulary`], `word<TAB>count`), beside a [`Meta::text_style`].
pub const VOCABULARY_FILE: &str = "vocabulary.tsv";

/// A loaded model.
pub struct Model {
    /// Its meta.json.
    pub meta: Meta,
    dir: PathBuf,
    /// `dir` canonicalized (cycle and overlap checks).
    canon: PathBuf,
    inner: Inner,
    /// SHA-256 of its `meta.json` (an ensemble pins its members by it).
    meta_sha256: String,
    /// What brings new text into its training text's style (`None`: read as given).
    text: Option<Arc<Normalizer>>,
    /// Its packed neighbour pool ([`crate::neighbours::packed`]), if it has one.
    pool: Option<Arc<Retriever>>,
    /// [`Meta::decode`]'s candidate sets, or every non-empty set with labels independent
    /// (for [`Model::top_sets`] of a model that thresholds).
    sets: Candidates,
}

enum Inner {
    Linear(LinearModel),
    Frozen(Mlp, Option<LinearModel>),
    Knn,
    Finetune(Box<FinetuneModel>),
    Ensemble(Vec<Model>),
}

/// What [`Model::decide`] gives.
pub struct Decided {
    /// Scores before calibration (what thresholds apply to).
    pub scores: Vec<Probs>,
    /// Calibrated probabilities.
    pub probs: Vec<Probs>,
    /// The label sets.
    pub labels: Vec<LabelSet>,
}

/// Where a stacked frozen model keeps its linear model.
const STACK_DIR: &str = "stack-linear";

/// The average of members' probabilities (each row of each member weighs `1 / members`).
fn average(members: Vec<Vec<Probs>>, rows: usize) -> Vec<Probs> {
    let n = members.len().max(1) as f32;
    let mut sum = vec![[0f32; NUM_EMOTIONS]; rows];
    for probs in members {
        for (acc, p) in sum.iter_mut().zip(probs) {
            for i in 0..NUM_EMOTIONS {
                acc[i] += p[i] / n;
            }
        }
    }
    sum
}

/// Progress of training, for the CLI.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// A phase began.
    Phase(String),
    /// One epoch (frozen head, finetune) finished.
    Epoch {
        /// 1-based epoch.
        epoch: usize,
        /// Training loss.
        loss: f32,
        /// Validation loss or F1, named.
        val: String,
    },
}

fn gold(samples: &[Sample]) -> Vec<LabelSet> {
    samples.iter().map(|s| s.labels).collect()
}

fn texts_of(samples: &[Sample]) -> Vec<String> {
    samples.iter().map(Sample::joined).collect()
}

/// Text, knowledge and context as one input ([`Sample::paired`]): what a fine-tune reads.
fn paired_texts(samples: &[Sample]) -> Vec<String> {
    samples.iter().map(Sample::paired).collect()
}

/// The samples' contexts, when every sample carries one (a model trained with context).
fn contexts_of(samples: &[Sample]) -> Option<Vec<&Context>> {
    samples.iter().map(|s| s.context.as_ref()).collect()
}

/// Each sample's context, if any.
fn sample_contexts(samples: &[Sample]) -> Vec<Option<&Context>> {
    samples.iter().map(|s| s.context.as_ref()).collect()
}

fn refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

impl Model {
    /// Loads a model directory.
    ///
    /// Checks `meta.json` (at most 64 MB; known labels in order, thresholds in [0, 1], the
    /// settings of its kind), that the weight files are the ones it records, and that shapes
    /// agree before allocating; follows ensemble members at most 8 deep and 64 directories in
    /// all, refusing cycles, duplicates and members changed since. Errors name the file at
    /// fault.
    pub fn load(dir: &Path) -> Result<Model> {
        check::Loader::default().load(dir)
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directories of this model and, for an ensemble, of its members (depth first,
    /// members before the ensemble) written before model files carried checksums: their files
    /// were loaded unverified (`emoknow model verify --rewrite` records checksums).
    pub fn unverified_dirs(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        if let Inner::Ensemble(members) = &self.inner {
            for m in members {
                out.extend(m.unverified_dirs());
            }
        }
        if self.meta.files.is_none() {
            out.push(self.dir());
        }
        out
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.meta.kind.kind()
    }

    /// The canonical directories of this model and, for an ensemble, of every model it reads.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![self.canon.clone()];
        if let Inner::Ensemble(members) = &self.inner {
            for m in members {
                out.extend(m.dirs());
            }
        }
        out
    }

    /// How many ensembles deep this model nests (0: not an ensemble; 1: an ensemble of single
    /// models).
    pub fn nesting(&self) -> usize {
        match &self.inner {
            Inner::Ensemble(members) => 1 + members.iter().map(Model::nesting).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The single models this model consists of, depth first (itself when not an ensemble).
    pub fn leaves(&self) -> Vec<&Model> {
        match &self.inner {
            Inner::Ensemble(members) => members.iter().flat_map(Model::leaves).collect(),
            _ => vec![self],
        }
    }

    /// What each of [`Model::leaves`] needs in its samples, in the same order:
    /// [`Model::predict_proba`] takes one sample list per entry.
    pub fn needs(&self) -> Vec<Needs> {
        self.leaves().into_iter().map(Model::own_needs).collect()
    }

    fn own_needs(&self) -> Needs {
        needs_of(&self.meta.attach, &self.meta.kind)
    }

    /// What brings new text into the style of this model's training text (`None`: the
    /// model reads text as given). An ensemble's members each have their own.
    pub fn normalizer(&self) -> Option<&Normalizer> {
        self.text.as_deref()
    }

    /// The neighbour pool packed into this (single) model's directory: new text's neighbours
    /// come from it, with or without a store.
    pub fn packed_pool(&self) -> Option<&Retriever> {
        self.pool.as_deref()
    }

    /// The retrieval this single model runs for new text, whose pool it packs: its kNN vote,
    /// or the neighbours it attaches (`None`: it retrieves nothing; also when the neighbours'
    /// retrieval was not recorded, in models trained before it was: the store's record of its
    /// source tells).
    pub fn pool_spec(&self) -> Option<NeighbourSpec> {
        pool_spec_of(&self.own_needs())
    }

    /// Why predicting new text with this model (any member of an ensemble) needs the store it
    /// was trained on, if it does: it retrieves neighbours and has no packed pool (BM25
    /// retrieval, or a model trained before pools were packed).
    pub fn needs_store(&self) -> Option<String> {
        self.leaves().into_iter().find_map(|m| {
            let retrieves = m.meta.attach.mode.neighbours() || m.kind() == Kind::Knn;
            (retrieves && m.pool.is_none()).then(|| {
                format!(
                    "model {} retrieves neighbours from its store's pool ({}): give --store, \
                     or run `emoknow model pack {}` with its store",
                    m.dir.display(),
                    if m.uses_bm25() {
                        "BM25 reads the store's search index"
                    } else {
                        "it was trained before pools were packed into models"
                    },
                    m.dir.display()
                )
            })
        })
    }

    /// Whether this model retrieves by BM25 (its attached neighbours, or its kNN vote).
    fn uses_bm25(&self) -> bool {
        self.pool_spec().is_none_or(|s| s.by == NeighbourBy::Bm25)
    }

    /// The knowledge this model (for an ensemble: its first member using any) attaches.
    pub fn knowledge_spec(&self) -> &AttachSpec {
        self.leaves()
            .into_iter()
            .map(|m| &m.meta.attach)
            .find(|a| a.mode != KnowledgeMode::None)
            .unwrap_or(&self.meta.attach)
    }

    /// Calibrated probabilities per sample (canonical label order). `inputs` holds one sample
    /// list per entry of [`Model::needs`], all of the same examples in the same order.
    pub fn predict_proba(&self, inputs: &[Vec<Sample>]) -> Result<Vec<Probs>> {
        Ok(self.calibrate(&self.scores(inputs)?))
    }

    /// Scores before this model's calibration, `inputs` as for [`Model::predict_proba`].
    fn scores(&self, inputs: &[Vec<Sample>]) -> Result<Vec<Probs>> {
        let want = self.leaves().len();
        if inputs.len() != want {
            return Err(Error::Model(format!(
                "{}: {} sample lists for {want} model(s)",
                self.dir.display(),
                inputs.len()
            )));
        }
        let mut rest = inputs;
        self.scores_from(&mut rest)
    }

    /// Takes this model's sample lists from the front of `inputs`: its scores before its own
    /// calibration (an ensemble's: the average of its members' calibrated probabilities).
    fn scores_from(&self, inputs: &mut &[Vec<Sample>]) -> Result<Vec<Probs>> {
        if let Inner::Ensemble(members) = &self.inner {
            let mut all = Vec::with_capacity(members.len());
            let mut rows = 0;
            for m in members {
                let p = m.calibrate(&m.scores_from(inputs)?);
                rows = p.len();
                all.push(p);
            }
            return Ok(average(all, rows));
        }
        let Some((samples, rest)) = inputs.split_first() else {
            return Err(Error::Model(format!(
                "{}: no samples given",
                self.dir.display()
            )));
        };
        *inputs = rest;
        self.predict_leaf(samples)
    }

    fn predict_leaf(&self, samples: &[Sample]) -> Result<Vec<Probs>> {
        match &self.inner {
            Inner::Linear(m) => Ok(
                m.predict_proba_with_context(&refs(&texts_of(samples)), &sample_contexts(samples))
            ),
            Inner::Frozen(head, stack) => {
                let stacked = stack
                    .as_ref()
                    .map(|m| m.predict_proba(&refs(&texts_of(samples))));
                let f = frozen::features(&self.meta, samples, true, stacked.as_deref())?;
                head.predict_proba(Features {
                    data: &f,
                    dim: head.in_dim(),
                })
            }
            Inner::Knn => Ok(samples.iter().map(|s| knn_vote(&s.neighbours)).collect()),
            Inner::Finetune(m) => m.predict_proba(&refs(&paired_texts(samples))),
            Inner::Ensemble(_) => Err(Error::Model("an ensemble is not a single model".into())),
        }
    }

    /// Calibrated probabilities and label sets: by the model's set decoder, or by its
    /// thresholds (which apply to the scores before calibration).
    pub fn predict(&self, inputs: &[Vec<Sample>]) -> Result<(Vec<Probs>, Vec<LabelSet>)> {
        let d = self.decide(inputs)?;
        Ok((d.probs, d.labels))
    }

    /// [`Model::predict`] with the scores before calibration.
    pub fn decide(&self, inputs: &[Vec<Sample>]) -> Result<Decided> {
        let scores = self.scores(inputs)?;
        let probs = self.calibrate(&scores);
        let labels = match &self.meta.decode {
            Some(_) => probs.iter().map(|p| self.sets.decode(p)).collect(),
            None => self.meta.thresholds.apply(&scores),
        };
        Ok(Decided {
            scores,
            probs,
            labels,
        })
    }

    /// Calibrated probabilities (the scores themselves for a model without calibration).
    fn calibrate(&self, scores: &[Probs]) -> Vec<Probs> {
        match &self.meta.calibration {
            Some(c) => c.apply(scores),
            None => scores.to_vec(),
        }
    }

    /// The `n` most probable label sets of one row of calibrated probabilities, with their
    /// probabilities: under the model's set decoder, or with labels independent.
    pub fn top_sets(&self, probs: &Probs, n: usize) -> Vec<(LabelSet, f64)> {
        self.sets.top(probs, n)
    }

    /// For a model decoding sets for micro-F1, each label's probability under its label sets
    /// (what decides: the labels are those above the cut) and the cut; `None` for a model
    /// that thresholds or chooses a whole set.
    pub fn set_label_probabilities(&self, probs: &Probs) -> Option<(Probs, f32)> {
        self.sets.label_probabilities(probs)
    }

    /// The thresholds as calibrated probabilities (where a thresholded label's calibrated
    /// probability crosses its threshold), for display beside [`Model::predict_proba`].
    pub fn calibrated_thresholds(&self) -> [f32; NUM_EMOTIONS] {
        let t = &self.meta.thresholds.per_label;
        match &self.meta.calibration {
            Some(c) => std::array::from_fn(|j| c.apply_label(j, t[j])),
            None => *t,
        }
    }

    /// For each sample, whether its text has nothing the model knows: no n-gram of a linear
    /// model's vocabulary, only unknown tokens (or none) for the encoder's or fine-tuned
    /// model's tokenizer, no neighbour found by a BM25 kNN model; for an ensemble, for every
    /// member. The prediction for such a text is the model's prior, not about the text.
    /// `false` where it cannot be told (e.g. the encoder directory is gone). `inputs` as for
    /// [`Model::predict_proba`].
    pub fn unknown_texts(&self, inputs: &[Vec<Sample>]) -> Result<Vec<bool>> {
        let leaves = self.leaves();
        if inputs.len() != leaves.len() || inputs.is_empty() {
            return Err(Error::Model(format!(
                "{}: {} sample lists for {} model(s)",
                self.dir.display(),
                inputs.len(),
                leaves.len()
            )));
        }
        let mut all = vec![true; inputs[0].len()];
        for (m, samples) in leaves.iter().zip(inputs) {
            for (a, u) in all.iter_mut().zip(m.unknown_leaf(samples)) {
                *a &= u;
            }
        }
        Ok(all)
    }

    fn unknown_leaf(&self, samples: &[Sample]) -> Vec<bool> {
        let texts: Vec<&str> = samples.iter().map(|s| s.text.as_str()).collect();
        let by_tokenizer = |tok: Option<&tokenizers::Tokenizer>| -> Vec<bool> {
            texts
                .iter()
                .map(|t| tok.is_some_and(|tok| known_tokens(tok, t) == Some(0)))
                .collect()
        };
        match &self.inner {
            Inner::Linear(m) => texts.iter().map(|t| m.known_features(t) == 0).collect(),
            Inner::Frozen(_, stack) => match (self.encoder_tokenizer(), stack) {
                (Some(tok), _) => by_tokenizer(Some(&tok)),
                (None, Some(m)) => texts.iter().map(|t| m.known_features(t) == 0).collect(),
                (None, None) => vec![false; texts.len()],
            },
            Inner::Knn => match &self.meta.kind {
                KindMeta::Knn { knn, .. } if knn.dense => {
                    by_tokenizer(self.encoder_tokenizer().as_ref())
                }
                _ => samples.iter().map(|s| s.neighbours.is_empty()).collect(),
            },
            Inner::Finetune(m) => by_tokenizer(Some(m.tokenizer())),
            Inner::Ensemble(_) => vec![false; texts.len()],
        }
    }

    /// The tokenizer of the encoder a frozen or kNN model reads, if its directory is there.
    fn encoder_tokenizer(&self) -> Option<tokenizers::Tokenizer> {
        let (info, encoder_dir) = match &self.meta.kind {
            KindMeta::Frozen {
                encoder,
                encoder_dir,
                ..
            } => (encoder, encoder_dir),
            KindMeta::Knn {
                encoder: Some(encoder),
                encoder_dir,
                ..
            } => (encoder, encoder_dir),
            _ => return None,
        };
        let dir = encoder_dir
            .clone()
            .or_else(|| (!info.dir.is_empty()).then(|| PathBuf::from(&info.dir)))?;
        let files = crate::encoder::embed::ModelFiles::find(&dir).ok()?;
        crate::encoder::embed::load_tokenizer(&files.tokenizer, info.max_len.max(2)).ok()
    }
}

/// What a single model of `kind` attaching `attach` needs in its samples.
fn needs_of(attach: &AttachSpec, kind: &KindMeta) -> Needs {
    let mut needs = Needs {
        attach: attach.clone(),
        vectors: None,
        encoder_dir: None,
        retrieve: None,
    };
    match kind {
        KindMeta::Frozen {
            encoder,
            encoder_dir,
            ..
        } => {
            needs.vectors = Some(encoder.clone());
            needs.encoder_dir = encoder_dir.clone();
        }
        KindMeta::Knn {
            knn,
            encoder,
            encoder_dir,
        } => {
            needs.retrieve = Some(knn_spec(knn, encoder.as_ref()));
            needs.encoder_dir = encoder_dir.clone();
        }
        _ => {}
    }
    needs
}

/// The retrieval a single model with `needs` runs for new text: its kNN vote, or the
/// neighbours it attaches (when their retrieval is recorded).
fn pool_spec_of(needs: &Needs) -> Option<NeighbourSpec> {
    needs.retrieve.clone().or_else(|| {
        needs
            .attach
            .mode
            .neighbours()
            .then(|| needs.attach.neighbours.clone())
            .flatten()
    })
}

/// The retrieval a kNN model votes over: the train split, dense with its encoder or BM25.
fn knn_spec(knn: &KnnConfig, encoder: Option<&EncoderInfo>) -> NeighbourSpec {
    NeighbourSpec {
        by: match (knn.dense, encoder) {
            (true, Some(e)) => NeighbourBy::Dense {
                encoder_id: e.id.clone(),
            },
            _ => NeighbourBy::Bm25,
        },
        k: knn.k,
        from: Split::Train,
        exclude_within: 0,
    }
}

/// Tokens of `text` that `tok` knows (special and unknown tokens not counted); `None` when it
/// cannot tokenize the text.
fn known_tokens(tok: &tokenizers::Tokenizer, text: &str) -> Option<usize> {
    let enc = tok.encode(text, false).ok()?;
    let unk = tok.token_to_id("[UNK]");
    Some(
        enc.get_ids()
            .iter()
            .zip(enc.get_special_tokens_mask())
            .filter(|&(&id, &special)| special == 0 && Some(id) != unk)
            .count(),
    )
}
