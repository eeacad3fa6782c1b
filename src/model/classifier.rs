//! Every classifier kind behind one interface: the model directory, training from the store,
//! loading, and probabilities for samples.
//!
//! A model directory holds `meta.json` ([`Meta`]: kind, labels, thresholds, knowledge spec,
//! encoder, training-data hash, validation metrics) and the kind's weights (safetensors).
//! Thresholds are always tuned on the validation split, never on test.

use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::knowledge::attach::{self, AttachSpec, KnowledgeMode, Sample};
use crate::knowledge::retrieve::{knn_vote, Hit, Pool, Probe};
use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use crate::metrics::{self, Report};
use crate::model::encoder::{Encoder, EncoderOptions};
use crate::model::finetune::{self, FinetuneConfig, FinetuneModel};
use crate::model::linear::{LinearConfig, LinearModel};
use crate::model::mlp::{Features, Mlp, MlpConfig};
use crate::model::modeldir::{self, FileSum, Staging};
use crate::model::thresholds::{self, Objective, Thresholds};
use crate::store::records::{now_secs, Example, Neighbour};
use crate::store::vectors::{EncoderInfo, What};
use crate::store::Store;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// Dense (with `Meta::encoder`) or BM25 when no encoder.
    pub dense: bool,
}

/// `meta.json` of a model directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// [`MODEL_FORMAT`].
    pub format: u32,
    /// Kind.
    pub kind: Kind,
    /// Label names in output order.
    pub labels: Vec<String>,
    /// Per-label thresholds (tuned on validation).
    pub thresholds: Thresholds,
    /// What the thresholds were tuned for.
    pub objective: Objective,
    /// Knowledge attached to the text.
    pub attach: AttachSpec,
    /// The encoder whose vectors the model reads (frozen, knn, finetune).
    pub encoder: Option<EncoderInfo>,
    /// The encoder directory, to embed texts the store has no vectors for.
    pub encoder_dir: Option<PathBuf>,
    /// Linear settings.
    pub linear: Option<LinearConfig>,
    /// Head settings (frozen).
    pub mlp: Option<MlpConfig>,
    /// Frozen: folds of the stacked linear model whose scores join the features (0 = none;
    /// its settings are `linear`, its weights in the `stack-linear` subdirectory).
    #[serde(default)]
    pub stack_folds: usize,
    /// kNN settings.
    pub knn: Option<KnnConfig>,
    /// Fine-tune settings.
    pub finetune: Option<FinetuneConfig>,
    /// Member model directories (ensemble), relative to this one or absolute.
    pub members: Vec<PathBuf>,
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
}

/// What `emoknow train` asks for.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Kind.
    pub kind: Kind,
    /// Knowledge to attach.
    pub attach: AttachSpec,
    /// Threshold objective.
    pub objective: Objective,
    /// Train and validate only on examples that have a rationale of the spec's source
    /// (training) and evaluation source (validation), whatever the knowledge mode.
    pub only_with_knowledge: bool,
    /// Use at most this many training examples (a seeded random subset).
    pub max_train: Option<usize>,
    /// Stored encoder (id, prefix or name) for frozen/knn.
    pub encoder: Option<String>,
    /// Encoder directory (finetune; or frozen/knn to embed unseen text later).
    pub encoder_dir: Option<PathBuf>,
    /// Linear settings.
    pub linear: LinearConfig,
    /// Head settings.
    pub mlp: MlpConfig,
    /// kNN neighbours.
    pub knn_k: usize,
    /// Frozen: stack the linear model's out-of-fold scores into the features (folds; 0 = off).
    pub stack_folds: usize,
    /// Fine-tune settings.
    pub finetune: FinetuneConfig,
    /// Ensemble members.
    pub members: Vec<PathBuf>,
    /// Seed for subsets.
    pub seed: u64,
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

/// A loaded model.
pub struct Model {
    /// Its meta.json.
    pub meta: Meta,
    dir: PathBuf,
    /// `dir` canonicalized (cycle and overlap checks).
    canon: PathBuf,
    inner: Inner,
}

enum Inner {
    Linear(LinearModel),
    Frozen(Mlp, Option<LinearModel>),
    Knn,
    Finetune(Box<FinetuneModel>),
    Ensemble(Vec<Model>),
}

fn hash_samples(samples: &[Sample]) -> String {
    let mut h = Sha256::new();
    for s in samples {
        h.update(s.id.to_le_bytes());
        h.update([s.labels.0]);
        h.update(s.text.as_bytes());
        h.update([0]);
        h.update(s.knowledge.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

fn gold(samples: &[Sample]) -> Vec<LabelSet> {
    samples.iter().map(|s| s.labels).collect()
}

/// The examples of a split, restricted as the config asks.
fn split_examples(
    store: &Store,
    split: Split,
    cfg_only: bool,
    attach: &AttachSpec,
    eval: bool,
) -> Result<Vec<Example>> {
    let mut ex = store.examples(Some(split))?;
    // With a source named, the restriction holds even for text-only models, so a text-only
    // baseline can be trained on exactly the rows the knowledge model sees.
    if cfg_only && (attach.mode != KnowledgeMode::None || attach.source.is_some()) {
        let mut keep = Vec::with_capacity(ex.len());
        for e in ex {
            if attach::has_rationale(store, e.id, attach, eval)? {
                keep.push(e);
            }
        }
        ex = keep;
    }
    Ok(ex)
}

/// Refuses paths that training would destroy or that make no model: an `--out` that is (or
/// holds, or lies inside) an ensemble member or a model such a member contains, or the
/// encoder directory; duplicate members, fewer than two, or members for another kind. Returns
/// the loaded members (canonical directory, model) of an ensemble.
fn check_train_paths(cfg: &TrainConfig, out: &Path) -> Result<Vec<(PathBuf, Model)>> {
    if let Some(enc) = &cfg.encoder_dir {
        if modeldir::absolute(enc)?.starts_with(out) {
            return Err(Error::Invalid(format!(
                "--out {} would replace --encoder-dir {}: choose another --out",
                out.display(),
                enc.display()
            )));
        }
    }
    if cfg.kind != Kind::Ensemble {
        if !cfg.members.is_empty() {
            return Err(Error::Invalid(
                "--member is only for --classifier ensemble".into(),
            ));
        }
        return Ok(Vec::new());
    }
    if cfg.members.len() < 2 {
        return Err(Error::Invalid(format!(
            "an ensemble needs at least two --member DIR ({} given)",
            cfg.members.len()
        )));
    }
    let mut loaded: Vec<(PathBuf, Model)> = Vec::with_capacity(cfg.members.len());
    for m in &cfg.members {
        let canon = std::fs::canonicalize(m).map_err(|e| Error::io(m, e))?;
        if loaded.iter().any(|(c, _)| *c == canon) {
            return Err(Error::Invalid(format!(
                "--member {} is given twice (each member counts once in the average)",
                m.display()
            )));
        }
        if modeldir::overlaps(&canon, out) {
            let how = if canon == out {
                "is"
            } else if out.starts_with(&canon) {
                "is inside"
            } else {
                "holds"
            };
            return Err(Error::Invalid(format!(
                "--out {} {how} --member {}: training would overwrite the member; choose another --out",
                out.display(),
                m.display()
            )));
        }
        let model = Model::load(m)?;
        if let Some(d) = model
            .dirs()
            .into_iter()
            .find(|d| modeldir::overlaps(d, out))
        {
            return Err(Error::Invalid(format!(
                "--member {} is an ensemble that reads {}, and --out {} would overwrite it (the new ensemble would contain itself); choose another --out",
                m.display(),
                d.display(),
                out.display()
            )));
        }
        loaded.push((canon, model));
    }
    Ok(loaded)
}

/// Trains a model from the store into `out` and returns its meta.
///
/// The model is written into a staging directory next to `out` and swapped into place when
/// complete ([`modeldir::Staging`]): an existing model at `out` stays whole until then, and an
/// interrupted train never leaves a mix of two models. `out` must be absent, empty or a model
/// directory (it is replaced whole).
pub fn train(
    store: &Store,
    cfg: &TrainConfig,
    out: &Path,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<Meta> {
    let out = modeldir::absolute(out)?;
    let members = check_train_paths(cfg, &out)?;
    modeldir::check_out(&out)?;
    if cfg.attach.mode != KnowledgeMode::None {
        attach::validate(store, &cfg.attach)?;
    }
    let mut train_ex = split_examples(
        store,
        Split::Train,
        cfg.only_with_knowledge,
        &cfg.attach,
        false,
    )?;
    let val_ex = split_examples(
        store,
        Split::Val,
        cfg.only_with_knowledge,
        &cfg.attach,
        true,
    )?;
    if let Some(n) = cfg.max_train {
        if n < train_ex.len() {
            let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
            train_ex.shuffle(&mut rng);
            train_ex.truncate(n);
            train_ex.sort_by_key(|e| e.id);
        }
    }
    if train_ex.is_empty() {
        return Err(Error::Invalid(
            "no training examples (ingest a corpus; check --only-with-knowledge)".into(),
        ));
    }
    if val_ex.is_empty() {
        return Err(Error::Invalid(
            "no validation examples: thresholds are tuned on the val split (ingest with --val-fraction)".into(),
        ));
    }
    let train_s = attach::samples(store, &train_ex, &cfg.attach, false)?;
    let val_s = attach::samples(store, &val_ex, &cfg.attach, true)?;
    let staging = Staging::begin(&out)?;
    let tmp = staging.path().to_path_buf();
    let out: &Path = &tmp;
    let t0 = Instant::now();
    let mut meta = Meta {
        format: MODEL_FORMAT,
        kind: cfg.kind,
        labels: Emotion::ALL.iter().map(|e| e.name().to_string()).collect(),
        thresholds: Thresholds::default(),
        objective: cfg.objective,
        attach: cfg.attach.clone(),
        encoder: None,
        encoder_dir: cfg.encoder_dir.clone(),
        linear: None,
        mlp: None,
        stack_folds: 0,
        knn: None,
        finetune: None,
        members: Vec::new(),
        train_hash: hash_samples(&train_s),
        n_train: train_s.len(),
        n_val: val_s.len(),
        val: metrics::evaluate(&[], &[]),
        train_secs: 0.0,
        created_at: now_secs(),
        files: None,
    };
    let val_probs = match cfg.kind {
        Kind::Linear => {
            progress(TrainEvent::Phase(format!(
                "linear: {} examples",
                train_s.len()
            )));
            let texts: Vec<String> = train_s.iter().map(Sample::joined).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let m = LinearModel::train(&refs, &gold(&train_s), &cfg.linear, &mut |p| {
                progress(TrainEvent::Phase(p.to_string()))
            })?;
            m.save(out)?;
            meta.linear = Some(cfg.linear.clone());
            let vt: Vec<String> = val_s.iter().map(Sample::joined).collect();
            m.predict_proba(&vt.iter().map(String::as_str).collect::<Vec<_>>())
        }
        Kind::Frozen => {
            let info = pick_encoder(store, cfg.encoder.as_deref())?;
            meta.encoder = Some(info.clone());
            let enc = OnceEncoder::new(cfg.encoder_dir.as_deref(), &info);
            let (sx, sv) = match cfg.stack_folds {
                0 => (None, None),
                1 => {
                    return Err(Error::Invalid(
                        "--stack-linear needs at least 2 folds".into(),
                    ))
                }
                k => {
                    let (sx, sv) = stack_scores(&train_s, &val_s, k, cfg, out, progress)?;
                    meta.linear = Some(cfg.linear.clone());
                    meta.stack_folds = k;
                    (Some(sx), Some(sv))
                }
            };
            progress(TrainEvent::Phase("features".into()));
            let fx = frozen_features(
                store,
                &info,
                &enc,
                &cfg.attach,
                &train_s,
                false,
                sx.as_deref(),
            )?;
            let fv = frozen_features(store, &info, &enc, &cfg.attach, &val_s, true, sv.as_deref())?;
            let dim = fx.len() / train_s.len();
            let head = Mlp::train(
                Features { data: &fx, dim },
                &gold(&train_s),
                Features { data: &fv, dim },
                &gold(&val_s),
                &cfg.mlp,
                &mut |r| {
                    progress(TrainEvent::Epoch {
                        epoch: r.epoch,
                        loss: r.train_loss,
                        val: format!("val loss {:.4}", r.val_loss),
                    })
                },
            )?;
            head.save(out, "head")?;
            meta.mlp = Some(cfg.mlp.clone());
            head.predict_proba(Features { data: &fv, dim })?
        }
        Kind::Knn => {
            let info = match &cfg.encoder {
                Some(_) => Some(pick_encoder(store, cfg.encoder.as_deref())?),
                None => store.encoders()?.into_iter().next(),
            };
            meta.knn = Some(KnnConfig {
                k: cfg.knn_k,
                dense: info.is_some(),
            });
            meta.encoder = info;
            let model = Model {
                meta: meta.clone(),
                dir: out.to_path_buf(),
                canon: out.to_path_buf(),
                inner: Inner::Knn,
            };
            model.knn_probs(store, &val_s)?
        }
        Kind::Finetune => {
            let dir = cfg.encoder_dir.as_deref().ok_or_else(|| {
                Error::Invalid(
                    "finetune needs --encoder-dir DIR (a BERT checkpoint to start from)".into(),
                )
            })?;
            let texts: Vec<String> = train_s.iter().map(Sample::joined).collect();
            let vtexts: Vec<String> = val_s.iter().map(Sample::joined).collect();
            let ft = FinetuneConfig {
                encoder: dir.to_path_buf(),
                ..cfg.finetune.clone()
            };
            let m = finetune::train(
                &texts.iter().map(String::as_str).collect::<Vec<_>>(),
                &gold(&train_s),
                &vtexts.iter().map(String::as_str).collect::<Vec<_>>(),
                &gold(&val_s),
                &ft,
                &mut |e| {
                    progress(match e {
                        finetune::FinetuneEvent::Step {
                            epoch,
                            step,
                            total_steps,
                            loss,
                            lr,
                        } => TrainEvent::Phase(format!(
                            "epoch {epoch}, step {step}/{total_steps}: loss {loss:.4}, lr {lr:.1e}"
                        )),
                        finetune::FinetuneEvent::Eval {
                            epoch,
                            val_loss,
                            val_micro_f1,
                            best,
                            ..
                        } => TrainEvent::Epoch {
                            epoch,
                            loss: val_loss,
                            val: format!(
                                "val micro-F1 {val_micro_f1:.3}{}",
                                if best { " (best)" } else { "" }
                            ),
                        },
                        finetune::FinetuneEvent::Epoch {
                            epoch,
                            train_loss,
                            examples_per_sec,
                            ..
                        } => TrainEvent::Epoch {
                            epoch,
                            loss: train_loss,
                            val: format!("{examples_per_sec:.1} examples/s"),
                        },
                    })
                },
            )?;
            m.save(out)?;
            meta.finetune = Some(ft);
            m.predict_proba(&vtexts.iter().map(String::as_str).collect::<Vec<_>>())?
        }
        Kind::Ensemble => {
            let mut sum = vec![[0f32; NUM_EMOTIONS]; val_ex.len()];
            for (canon, member) in &members {
                // Each member attaches its own knowledge.
                let s = attach::samples(store, &val_ex, &member.meta.attach, true)?;
                for (acc, p) in sum.iter_mut().zip(member.predict_proba(store, &s)?) {
                    for i in 0..NUM_EMOTIONS {
                        acc[i] += p[i] / members.len() as f32;
                    }
                }
                meta.members.push(canon.clone());
            }
            sum
        }
    };
    meta.thresholds = thresholds::tune(&val_probs, &gold(&val_s), cfg.objective);
    meta.val = metrics::evaluate(&gold(&val_s), &meta.thresholds.apply(&val_probs));
    meta.train_secs = t0.elapsed().as_secs_f64();
    // Weights are all written: record them, then meta.json last, then swap into place.
    meta.files = Some(modeldir::checksums(out)?);
    let path = out.join("meta.json");
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, json).map_err(|e| Error::io(&path, e))?;
    staging.commit()?;
    Ok(meta)
}

fn pick_encoder(store: &Store, key: Option<&str>) -> Result<EncoderInfo> {
    match key {
        Some(k) => store.find_encoder(k),
        None => {
            let mut all = store.encoders()?;
            match all.len() {
                1 => Ok(all.remove(0)),
                0 => Err(Error::NotFound(
                    "no stored embeddings: run `emoknow embed --encoder DIR` first".into(),
                )),
                _ => Err(Error::Invalid(
                    "the store holds vectors of several encoders: choose one with --encoder".into(),
                )),
            }
        }
    }
}

/// Loads the encoder on first use only (most predictions read stored vectors).
struct OnceEncoder<'a> {
    dir: Option<&'a Path>,
    info: &'a EncoderInfo,
    cell: std::sync::OnceLock<Result<Encoder>>,
}

impl<'a> OnceEncoder<'a> {
    fn new(dir: Option<&'a Path>, info: &'a EncoderInfo) -> Self {
        OnceEncoder {
            dir,
            info,
            cell: Default::default(),
        }
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let enc = self.cell.get_or_init(|| {
            // The directory given at training, else where the vectors were made.
            let dir = self
                .dir
                .map(Path::to_path_buf)
                .or_else(|| (!self.info.dir.is_empty()).then(|| PathBuf::from(&self.info.dir)))
                .filter(|d| d.exists())
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{} text(s) have no stored vector of encoder {}, and its directory {:?} is gone (pass --encoder-dir)",
                        texts.len(),
                        self.info.name,
                        self.info.dir
                    ))
                })?;
            let dir = dir.as_path();
            let enc = Encoder::load(
                dir,
                EncoderOptions {
                    max_len: self.info.max_len,
                    pooling: self.info.pooling.parse()?,
                    ..Default::default()
                },
            )?;
            if enc.encoder_id() != self.info.id {
                return Err(Error::Invalid(format!(
                    "encoder at {} has id {}, the model was trained with {}",
                    dir.display(),
                    enc.encoder_id(),
                    self.info.id
                )));
            }
            Ok(enc)
        });
        match enc {
            Ok(e) => e.encode(texts, &mut |_| {}),
            Err(e) => Err(Error::Model(e.to_string())),
        }
    }
}

/// Vectors for the samples' texts (or another text per sample): stored ones where the store
/// has them, embedded otherwise.
fn vectors_for(
    store: &Store,
    info: &EncoderInfo,
    enc: &OnceEncoder,
    what: &What,
    samples: &[Sample],
    text_of: impl Fn(usize) -> Option<String>,
) -> Result<Vec<Option<Vec<f32>>>> {
    let ids: HashSet<u64> = samples.iter().map(|s| s.id).filter(|&id| id != 0).collect();
    let stored = store.vectors(info, what, Some(&ids))?;
    let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(samples.len());
    let mut todo: Vec<(usize, String)> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match stored.position(s.id).filter(|_| s.id != 0) {
            Some(r) => out.push(Some(stored.row(r).to_vec())),
            None => {
                out.push(None);
                if let Some(t) = text_of(i) {
                    todo.push((i, t));
                }
            }
        }
    }
    if !todo.is_empty() {
        let texts: Vec<&str> = todo.iter().map(|(_, t)| t.as_str()).collect();
        for ((i, _), v) in todo.iter().zip(enc.embed(&texts)?) {
            out[*i] = Some(v);
        }
    }
    Ok(out)
}

/// One sample's probabilities, canonical label order.
type Probs = [f32; NUM_EMOTIONS];

/// Where a stacked frozen model keeps its linear model.
const STACK_DIR: &str = "stack-linear";

/// Linear scores to stack under a frozen head: out-of-fold probabilities for the training
/// samples (each scored by a model that never saw it, so the head does not learn to trust
/// memorized scores), and the probabilities of a model trained on all of them for validation;
/// that model is saved in `out/stack-linear` for prediction.
fn stack_scores(
    train_s: &[Sample],
    val_s: &[Sample],
    folds: usize,
    cfg: &TrainConfig,
    out: &Path,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<(Vec<Probs>, Vec<Probs>)> {
    if train_s.len() < folds {
        return Err(Error::Invalid(format!(
            "--stack-linear {folds}: only {} training examples",
            train_s.len()
        )));
    }
    let texts: Vec<String> = train_s.iter().map(Sample::joined).collect();
    let y = gold(train_s);
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(cfg.seed));
    let mut fold_of = vec![0; texts.len()];
    for (pos, &i) in order.iter().enumerate() {
        fold_of[i] = pos % folds;
    }
    let mut oof = vec![[0f32; NUM_EMOTIONS]; texts.len()];
    for f in 0..folds {
        progress(TrainEvent::Phase(format!(
            "stacked linear: fold {}/{folds}",
            f + 1
        )));
        let (fit, held): (Vec<usize>, Vec<usize>) =
            (0..texts.len()).partition(|&i| fold_of[i] != f);
        let fit_t: Vec<&str> = fit.iter().map(|&i| texts[i].as_str()).collect();
        let fit_y: Vec<LabelSet> = fit.iter().map(|&i| y[i]).collect();
        let m = LinearModel::train(&fit_t, &fit_y, &cfg.linear, &mut |_| {})?;
        let held_t: Vec<&str> = held.iter().map(|&i| texts[i].as_str()).collect();
        for (&i, p) in held.iter().zip(m.predict_proba(&held_t)) {
            oof[i] = p;
        }
    }
    progress(TrainEvent::Phase("stacked linear: all folds".into()));
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let m = LinearModel::train(&refs, &y, &cfg.linear, &mut |_| {})?;
    let dir = out.join(STACK_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    m.save(&dir)?;
    let vt: Vec<String> = val_s.iter().map(Sample::joined).collect();
    Ok((
        oof,
        m.predict_proba(&vt.iter().map(String::as_str).collect::<Vec<_>>()),
    ))
}

/// Frozen features: text vector ⊕ (rationale vector and a has-rationale flag, when the spec
/// attaches rationales) ⊕ (the neighbours' label vote, when it attaches neighbours) ⊕ (the
/// stacked linear model's logits, when given).
fn frozen_features(
    store: &Store,
    info: &EncoderInfo,
    enc: &OnceEncoder,
    spec: &AttachSpec,
    samples: &[Sample],
    eval: bool,
    stacked: Option<&[[f32; NUM_EMOTIONS]]>,
) -> Result<Vec<f32>> {
    let dim = info.dim;
    let text = vectors_for(store, info, enc, &What::Text, samples, |i| {
        Some(samples[i].text.clone())
    })?;
    let src = if eval {
        spec.eval_source.as_ref().or(spec.source.as_ref())
    } else {
        spec.source.as_ref()
    };
    let rationale = match (spec.mode, src) {
        (KnowledgeMode::Rationale | KnowledgeMode::All, Some(src)) => {
            let what = What::Knowledge(src.clone());
            let has: Vec<bool> = samples
                .iter()
                .map(|s| s.rationale.as_ref().is_some_and(|r| !r.is_empty()))
                .collect();
            Some((
                has.clone(),
                vectors_for(store, info, enc, &what, samples, |i| {
                    samples[i].rationale.clone().filter(|_| has[i])
                })?,
            ))
        }
        _ => None,
    };
    let votes = matches!(spec.mode, KnowledgeMode::Neighbours | KnowledgeMode::All);
    let mut out = Vec::new();
    for (i, t) in text.into_iter().enumerate() {
        let t =
            t.ok_or_else(|| Error::NotFound(format!("no vector for example {}", samples[i].id)))?;
        out.extend(t);
        if let Some((has, r)) = &rationale {
            match r[i].as_ref().filter(|_| has[i]) {
                Some(v) => {
                    out.extend_from_slice(v);
                    out.push(1.0);
                }
                None => {
                    out.extend(std::iter::repeat_n(0.0, dim));
                    out.push(0.0);
                }
            }
        }
        if votes {
            out.extend_from_slice(&knn_vote(&as_hits(&samples[i].neighbours)));
        }
        if let Some(p) = stacked {
            out.extend(p[i].iter().map(|&q| {
                let q = q.clamp(1e-4, 1.0 - 1e-4);
                (q / (1.0 - q)).ln()
            }));
        }
    }
    Ok(out)
}

fn as_hits(neighbours: &[Neighbour]) -> Vec<Hit> {
    neighbours
        .iter()
        .map(|n| Hit {
            id: n.id,
            score: n.score,
            labels: n.labels,
            text: String::new(),
        })
        .collect()
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Deepest nesting of ensembles a load follows.
const MAX_ENSEMBLE_DEPTH: usize = 8;
/// Most model directories one load reads (an ensemble and all it contains).
const MAX_LOADED_MODELS: usize = 64;
/// Largest `k` (kNN, attached neighbours) a model may ask for.
const MAX_K: usize = 100_000;
/// Largest embedding dimension a frozen or kNN model may name.
const MAX_ENCODER_DIM: usize = 1 << 16;

/// Checks what serde cannot: labels, thresholds, the settings each kind needs, and bounds on
/// the sizes a load or prediction would allocate. Errors name `path` (the meta.json).
fn check_meta(meta: &Meta, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let bad = |msg: String| -> Result<()> {
        Err(Error::input(
            path,
            0,
            format!(
                "{msg}: not as emoknow writes it (edited by hand?); restore it or retrain the model (`emoknow train … --out {}`)",
                dir.display()
            ),
        ))
    };
    if meta.format != MODEL_FORMAT {
        return Err(Error::Invalid(format!(
            "{}: model format {}, this emoknow reads {MODEL_FORMAT}",
            path.display(),
            meta.format
        )));
    }
    let names: Vec<&str> = Emotion::ALL.iter().map(|e| e.name()).collect();
    if let Some(l) = meta.labels.iter().find(|l| !names.contains(&l.as_str())) {
        return bad(format!(
            "unknown label {l:?} in \"labels\" (the labels are {})",
            names.join(", ")
        ));
    }
    if meta.labels != names {
        return bad(format!(
            "\"labels\" is [{}], models output [{}] in that order",
            meta.labels.join(", "),
            names.join(", ")
        ));
    }
    for (t, name) in meta.thresholds.per_label.iter().zip(&names) {
        if !(t.is_finite() && (0.0..=1.0).contains(t)) {
            return bad(format!("the threshold of {name} is {t}, outside [0, 1]"));
        }
    }
    if meta.attach.neighbours_k > MAX_K {
        return bad(format!(
            "neighbours_k {} is above {MAX_K}",
            meta.attach.neighbours_k
        ));
    }
    if let Some(e) = &meta.encoder {
        if e.dim == 0 || e.dim > MAX_ENCODER_DIM {
            return bad(format!(
                "encoder {:?} has dimension {}, outside 1..={MAX_ENCODER_DIM}",
                e.name, e.dim
            ));
        }
    }
    let kind = meta.kind.name();
    let need = |what: &str, present: bool| -> Result<()> {
        if present {
            Ok(())
        } else {
            bad(format!("a {kind} model without its \"{what}\" settings"))
        }
    };
    match meta.kind {
        Kind::Linear => need("linear", meta.linear.is_some())?,
        Kind::Frozen => {
            need("mlp", meta.mlp.is_some())?;
            need("encoder", meta.encoder.is_some())?;
            if meta.stack_folds > 0 {
                need("linear", meta.linear.is_some())?;
            }
        }
        Kind::Knn => {
            let Some(knn) = &meta.knn else {
                return need("knn", false);
            };
            if knn.k == 0 || knn.k > MAX_K {
                return bad(format!("kNN k = {}, outside 1..={MAX_K}", knn.k));
            }
            if knn.dense {
                need("encoder", meta.encoder.is_some())?;
            }
        }
        Kind::Finetune => need("finetune", meta.finetune.is_some())?,
        Kind::Ensemble => {
            if meta.members.is_empty() {
                return bad("an ensemble with no \"members\"".into());
            }
        }
    }
    Ok(())
}

/// The number of features a frozen head of `meta` reads (what [`frozen_features`] builds at
/// prediction).
fn frozen_in_dim(meta: &Meta) -> usize {
    let dim = meta.encoder.as_ref().map_or(0, |e| e.dim);
    let spec = &meta.attach;
    let mut n = dim;
    let rationale = matches!(spec.mode, KnowledgeMode::Rationale | KnowledgeMode::All)
        && spec.eval_source.as_ref().or(spec.source.as_ref()).is_some();
    if rationale {
        n = n.saturating_add(dim).saturating_add(1);
    }
    if matches!(spec.mode, KnowledgeMode::Neighbours | KnowledgeMode::All) {
        n = n.saturating_add(NUM_EMOTIONS);
    }
    if meta.stack_folds > 0 {
        n = n.saturating_add(NUM_EMOTIONS);
    }
    n
}

/// Loads model directories, following ensemble members with a bound on depth and count and
/// refusing cycles.
struct Loader {
    /// Canonical directories of the ensembles being loaded, outermost first.
    chain: Vec<PathBuf>,
    /// Directories read so far.
    loaded: usize,
}

impl Loader {
    fn load(&mut self, dir: &Path) -> Result<Model> {
        let path = dir.join("meta.json");
        let bytes = modeldir::read_meta(dir)?;
        let canon = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let meta: Meta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&path, e.line(), format!("not an emoknow model: {e}")))?;
        check_meta(&meta, &path)?;
        if let Some(files) = &meta.files {
            modeldir::verify(dir, &path, files)?;
        }
        self.loaded += 1;
        if self.loaded > MAX_LOADED_MODELS {
            return Err(Error::input(
                &path,
                0,
                format!("the ensemble reads more than {MAX_LOADED_MODELS} model directories"),
            ));
        }
        let inner = match meta.kind {
            Kind::Linear => Inner::Linear(LinearModel::load(dir)?),
            Kind::Frozen => {
                let head = Mlp::load(dir, "head")?;
                let want = frozen_in_dim(&meta);
                if head.in_dim() != want {
                    return Err(Error::Model(format!(
                        "{}: the head reads {} features, but {} (encoder dimension and knowledge) gives {want}: the head does not belong to this meta.json; retrain the model",
                        dir.join("head.safetensors").display(),
                        head.in_dim(),
                        path.display()
                    )));
                }
                let stack = match meta.stack_folds {
                    0 => None,
                    _ => Some(LinearModel::load(&dir.join(STACK_DIR))?),
                };
                Inner::Frozen(head, stack)
            }
            Kind::Knn => Inner::Knn,
            Kind::Finetune => Inner::Finetune(Box::new(FinetuneModel::load(dir)?)),
            Kind::Ensemble => {
                if self.chain.len() >= MAX_ENSEMBLE_DEPTH {
                    return Err(Error::input(
                        &path,
                        0,
                        format!("ensembles nested more than {MAX_ENSEMBLE_DEPTH} deep"),
                    ));
                }
                self.chain.push(canon.clone());
                let mut members = Vec::with_capacity(meta.members.len());
                let mut seen = HashSet::new();
                for m in &meta.members {
                    let p = resolve(dir, m);
                    let c = std::fs::canonicalize(&p).map_err(|e| {
                        Error::input(&path, 0, format!("member {}: {e}", p.display()))
                    })?;
                    if self.chain.contains(&c) {
                        let what = if c == canon {
                            "this ensemble itself".to_string()
                        } else {
                            format!("the ensemble {} that contains it", c.display())
                        };
                        return Err(Error::input(
                            &path,
                            0,
                            format!(
                                "member {} is {what}: an ensemble cannot contain itself; edit \"members\" or retrain the ensemble",
                                m.display()
                            ),
                        ));
                    }
                    if !seen.insert(c) {
                        return Err(Error::input(
                            &path,
                            0,
                            format!("member {} is listed twice", m.display()),
                        ));
                    }
                    members.push(self.load(&p)?);
                }
                self.chain.pop();
                Inner::Ensemble(members)
            }
        };
        Ok(Model {
            meta,
            dir: dir.to_path_buf(),
            canon,
            inner,
        })
    }
}

impl Model {
    /// Loads a model directory.
    ///
    /// Checks `meta.json` (at most 64 MB; known labels in order, thresholds in [0, 1], the
    /// settings of its kind), that the weight files are the ones it records, and that shapes
    /// agree before allocating; follows ensemble members at most 8 deep and 64 directories in
    /// all, refusing cycles and duplicates. Errors name the file at fault.
    pub fn load(dir: &Path) -> Result<Model> {
        Loader {
            chain: Vec::new(),
            loaded: 0,
        }
        .load(dir)
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

    /// The knowledge this model (for an ensemble: its first member using any) attaches.
    pub fn knowledge_spec(&self) -> &AttachSpec {
        match &self.inner {
            Inner::Ensemble(members) => members
                .iter()
                .map(|m| m.knowledge_spec())
                .find(|a| a.mode != KnowledgeMode::None)
                .unwrap_or(&self.meta.attach),
            _ => &self.meta.attach,
        }
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Samples for stored examples, with this model's knowledge (evaluation sources).
    pub fn samples(&self, store: &Store, examples: &[Example]) -> Result<Vec<Sample>> {
        attach::samples(store, examples, &self.meta.attach, true)
    }

    fn knn_probs(&self, store: &Store, samples: &[Sample]) -> Result<Vec<[f32; NUM_EMOTIONS]>> {
        let knn = self.meta.knn.as_ref().ok_or_else(|| {
            Error::Model(format!(
                "{}: a knn model without knn settings",
                self.dir.display()
            ))
        })?;
        let pool_ex = store.examples(Some(Split::Train))?;
        let (pool, vecs) = match (&self.meta.encoder, knn.dense) {
            (Some(info), true) => {
                let all = store.vectors(info, &What::Text, None)?;
                let enc = OnceEncoder::new(self.meta.encoder_dir.as_deref(), info);
                let v = vectors_for(store, info, &enc, &What::Text, samples, |i| {
                    Some(samples[i].text.clone())
                })?;
                (Pool::dense(pool_ex, &all)?, Some(v))
            }
            _ => (Pool::sparse(pool_ex), None),
        };
        let probes: Vec<Probe> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| Probe {
                id: (s.id != 0).then_some(s.id),
                text: &s.text,
                vector: vecs.as_ref().and_then(|v| v[i].as_deref()),
            })
            .collect();
        let hits = pool.retrieve(store, &probes, knn.k, LabelSet::EMPTY)?;
        Ok(hits.iter().map(|h| knn_vote(h)).collect())
    }

    /// Probabilities per sample (canonical label order), before thresholds.
    pub fn predict_proba(
        &self,
        store: &Store,
        samples: &[Sample],
    ) -> Result<Vec<[f32; NUM_EMOTIONS]>> {
        match &self.inner {
            Inner::Linear(m) => {
                let t: Vec<String> = samples.iter().map(Sample::joined).collect();
                Ok(m.predict_proba(&t.iter().map(String::as_str).collect::<Vec<_>>()))
            }
            Inner::Frozen(head, stack) => {
                let info = self.meta.encoder.as_ref().ok_or_else(|| {
                    Error::Model(format!(
                        "{}: a frozen model without its encoder",
                        self.dir.display()
                    ))
                })?;
                let enc = OnceEncoder::new(self.meta.encoder_dir.as_deref(), info);
                let stacked = stack.as_ref().map(|m| {
                    let t: Vec<String> = samples.iter().map(Sample::joined).collect();
                    m.predict_proba(&t.iter().map(String::as_str).collect::<Vec<_>>())
                });
                let f = frozen_features(
                    store,
                    info,
                    &enc,
                    &self.meta.attach,
                    samples,
                    true,
                    stacked.as_deref(),
                )?;
                head.predict_proba(Features {
                    data: &f,
                    dim: head.in_dim(),
                })
            }
            Inner::Knn => self.knn_probs(store, samples),
            Inner::Finetune(m) => {
                let t: Vec<String> = samples.iter().map(Sample::joined).collect();
                m.predict_proba(&t.iter().map(String::as_str).collect::<Vec<_>>())
            }
            Inner::Ensemble(members) => {
                let mut sum = vec![[0f32; NUM_EMOTIONS]; samples.len()];
                for m in members {
                    // Members attach their own knowledge: rebuild their samples.
                    let own = member_samples(store, m, samples)?;
                    for (acc, p) in sum.iter_mut().zip(m.predict_proba(store, &own)?) {
                        for i in 0..NUM_EMOTIONS {
                            acc[i] += p[i] / members.len() as f32;
                        }
                    }
                }
                Ok(sum)
            }
        }
    }

    /// Samples for texts the store does not hold: no rationale (they were never annotated),
    /// neighbours retrieved now when the model attaches them.
    pub fn samples_for_texts(&self, store: &Store, texts: &[String]) -> Result<Vec<Sample>> {
        // An ensemble attaches nothing itself; show the first knowledge-using member's (each
        // member rebuilds its own inputs when predicting).
        if let Inner::Ensemble(members) = &self.inner {
            if let Some(m) = members
                .iter()
                .find(|m| m.meta.attach.mode != KnowledgeMode::None)
            {
                return m.samples_for_texts(store, texts);
            }
        }
        let spec = self.knowledge_spec();
        let mut neighbours: Vec<Vec<Neighbour>> = vec![Vec::new(); texts.len()];
        if matches!(spec.mode, KnowledgeMode::Neighbours | KnowledgeMode::All) {
            let src = spec.neighbours_source.clone().unwrap_or_default();
            let pool_ex = store.examples(Some(Split::Train))?;
            let dense = store
                .encoders()?
                .into_iter()
                .find(|e| src == format!("knn-{}", e.name));
            let (pool, vecs) = match &dense {
                Some(info) => {
                    let all = store.vectors(info, &What::Text, None)?;
                    let enc = OnceEncoder::new(self.meta.encoder_dir.as_deref(), info);
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    (Pool::dense(pool_ex, &all)?, Some(enc.embed(&refs)?))
                }
                None => (Pool::sparse(pool_ex), None),
            };
            let probes: Vec<Probe> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| Probe {
                    id: None,
                    text: t,
                    vector: vecs.as_ref().map(|v| v[i].as_slice()),
                })
                .collect();
            let k = spec.neighbours_k.max(1);
            for (slot, hits) in
                neighbours
                    .iter_mut()
                    .zip(pool.retrieve(store, &probes, k, LabelSet::EMPTY)?)
            {
                *slot = hits
                    .into_iter()
                    .map(|h| Neighbour {
                        id: h.id,
                        score: h.score,
                        labels: h.labels,
                    })
                    .collect();
            }
        }
        Ok(texts
            .iter()
            .zip(neighbours)
            .map(|(t, n)| Sample::new(0, t.clone(), LabelSet::EMPTY, None, n, spec))
            .collect())
    }

    /// For each sample, whether its text has nothing the model knows: no n-gram of a linear
    /// model's vocabulary, only unknown tokens (or none) for the encoder's or fine-tuned
    /// model's tokenizer, no BM25 match for a sparse kNN model; for an ensemble, for every
    /// member. The prediction for such a text is the model's prior, not about the text.
    /// `false` where it cannot be told (e.g. the encoder directory is gone).
    pub fn unknown_texts(&self, store: &Store, samples: &[Sample]) -> Result<Vec<bool>> {
        let texts: Vec<&str> = samples.iter().map(|s| s.text.as_str()).collect();
        let by_tokenizer = |tok: Option<&tokenizers::Tokenizer>| -> Vec<bool> {
            texts
                .iter()
                .map(|t| tok.is_some_and(|tok| known_tokens(tok, t) == Some(0)))
                .collect()
        };
        Ok(match &self.inner {
            Inner::Linear(m) => texts.iter().map(|t| m.known_features(t) == 0).collect(),
            Inner::Frozen(_, stack) => match (self.encoder_tokenizer(), stack) {
                (Some(tok), _) => by_tokenizer(Some(&tok)),
                (None, Some(m)) => texts.iter().map(|t| m.known_features(t) == 0).collect(),
                (None, None) => vec![false; texts.len()],
            },
            Inner::Knn => {
                if self.meta.knn.as_ref().is_some_and(|k| k.dense) {
                    by_tokenizer(self.encoder_tokenizer().as_ref())
                } else {
                    let pool = Pool::sparse(store.examples(Some(Split::Train))?);
                    let probes: Vec<Probe> = texts
                        .iter()
                        .map(|t| Probe {
                            id: None,
                            text: t,
                            vector: None,
                        })
                        .collect();
                    pool.retrieve(store, &probes, 1, LabelSet::EMPTY)?
                        .iter()
                        .map(Vec::is_empty)
                        .collect()
                }
            }
            Inner::Finetune(m) => by_tokenizer(Some(m.tokenizer())),
            Inner::Ensemble(members) => {
                let mut all = vec![true; texts.len()];
                for m in members {
                    for (a, u) in all.iter_mut().zip(m.unknown_texts(store, samples)?) {
                        *a &= u;
                    }
                }
                all
            }
        })
    }

    /// The tokenizer of the encoder a frozen or kNN model reads, if its directory is there.
    fn encoder_tokenizer(&self) -> Option<tokenizers::Tokenizer> {
        let info = self.meta.encoder.as_ref()?;
        let dir = self
            .meta
            .encoder_dir
            .clone()
            .or_else(|| (!info.dir.is_empty()).then(|| PathBuf::from(&info.dir)))?;
        let files = crate::model::encoder::ModelFiles::find(&dir).ok()?;
        crate::model::encoder::load_tokenizer(&files.tokenizer, info.max_len.max(2)).ok()
    }

    /// Label sets with the model's thresholds.
    pub fn predict(
        &self,
        store: &Store,
        samples: &[Sample],
    ) -> Result<(Vec<[f32; NUM_EMOTIONS]>, Vec<LabelSet>)> {
        let p = self.predict_proba(store, samples)?;
        let l = self.meta.thresholds.apply(&p);
        Ok((p, l))
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

fn member_samples(store: &Store, m: &Model, samples: &[Sample]) -> Result<Vec<Sample>> {
    samples
        .iter()
        .map(|s| {
            if s.id == 0 {
                let mut fresh = m.samples_for_texts(store, std::slice::from_ref(&s.text))?;
                return Ok(fresh.remove(0));
            }
            let (r, n) = attach::pick(&store.knowledge(s.id)?, &m.meta.attach, true);
            Ok(Sample::new(
                s.id,
                s.text.clone(),
                s.labels,
                r,
                n,
                &m.meta.attach,
            ))
        })
        .collect()
}
