//! Training: what is asked ([`TrainConfig`], one variant per kind), what it is given
//! ([`TrainInputs`]: samples the knowledge stage built), and one function per kind. Every kind
//! tunes its thresholds on the validation samples; the model directory is written beside
//! `out` and swapped in when complete.

use super::check::check_train_paths;
use super::{
    average, contexts_of, frozen, gold, paired_texts, refs, sample_contexts, texts_of, KindMeta,
    KnnConfig, Meta, Model, TrainEvent, MODEL_FORMAT,
};
use crate::corpus::Split;
use crate::error::{Error, Result};
use crate::labels::Emotion;
use crate::metrics;
use crate::model::calibration::Calibration;
use crate::model::decode::{count_sets, Candidates, SetDecoder, SetTarget};
use crate::model::finetune::{self, FinetuneConfig, FinetuneEvent};
use crate::model::linear::{ContextInput, LinearConfig, LinearModel};
use crate::model::mlp::MlpConfig;
use crate::model::modeldir::{self, Staging};
use crate::model::sample::{AttachSpec, Needs, Probs, Sample};
use crate::model::thresholds::{self, Objective, Thresholds};
use crate::neighbours::knn_vote;
use crate::neighbours::PackedPool;
use crate::spec::{EncoderInfo, NeighbourSpec};
use crate::text::Normalizer;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The settings of the kind to train.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per training run
pub enum KindConfig {
    /// TF-IDF + logistic regression.
    Linear(LinearConfig),
    /// A head over stored vectors of `encoder`.
    Frozen {
        /// The encoder whose vectors the head reads.
        encoder: EncoderInfo,
        /// Where to load it to embed text without stored vectors (default: where the vectors
        /// were made).
        encoder_dir: Option<PathBuf>,
        /// Head settings.
        mlp: MlpConfig,
        /// Folds of the stacked linear model (0 = none).
        stack_folds: usize,
        /// The stacked linear model's settings.
        linear: LinearConfig,
    },
    /// A vote of the k nearest training examples, dense with `encoder` or BM25 without.
    Knn {
        /// Neighbours voting.
        k: usize,
        /// The encoder of dense retrieval (None: BM25).
        encoder: Option<EncoderInfo>,
        /// Where to load it to embed new text.
        encoder_dir: Option<PathBuf>,
    },
    /// BERT fine-tuned from the checkpoint `FinetuneConfig::encoder`.
    Finetune(FinetuneConfig),
    /// The average of trained models.
    Ensemble {
        /// Member model directories.
        members: Vec<PathBuf>,
    },
}

/// What `emoknow train` asks for.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The kind and its settings.
    pub kind: KindConfig,
    /// Knowledge to attach (with the neighbours' spec filled in when neighbours are attached).
    pub attach: AttachSpec,
    /// Threshold objective (with `decode_sets`: exact match chooses the most probable set,
    /// micro or macro the set of highest expected F1).
    pub objective: Objective,
    /// Decode label sets ([`crate::model::decode`]) instead of thresholding each label.
    pub decode_sets: bool,
    /// Seed of subsets, initialisation and shuffling.
    pub seed: u64,
}

impl TrainConfig {
    /// What the model being trained needs in its samples (an ensemble: only its own text;
    /// its members' needs come from [`Prepared::member_needs`]).
    pub fn needs(&self) -> Needs {
        super::needs_of(&self.attach, &self.kind_meta())
    }

    /// The retrieval the model runs for new text, whose pool [`TrainInputs::pool`] packs: a
    /// kNN model's vote, or the neighbours it attaches (none for an ensemble: its members
    /// have their own).
    pub fn pool_spec(&self) -> Option<NeighbourSpec> {
        super::pool_spec_of(&self.needs())
    }

    /// The settings `meta.json` will record for this kind (an ensemble's members are pinned
    /// once trained).
    fn kind_meta(&self) -> KindMeta {
        match &self.kind {
            KindConfig::Linear(linear) => KindMeta::Linear {
                linear: linear.clone(),
            },
            KindConfig::Frozen {
                encoder,
                encoder_dir,
                mlp,
                stack_folds,
                linear,
            } => KindMeta::Frozen {
                encoder: encoder.clone(),
                encoder_dir: encoder_dir.clone(),
                mlp: mlp.clone(),
                stack_folds: *stack_folds,
                linear: (*stack_folds > 0).then(|| linear.clone()),
            },
            KindConfig::Knn {
                k,
                encoder,
                encoder_dir,
            } => KindMeta::Knn {
                knn: KnnConfig {
                    k: *k,
                    dense: encoder.is_some(),
                },
                encoder: encoder.clone(),
                encoder_dir: encoder_dir.clone(),
            },
            KindConfig::Finetune(ft) => KindMeta::Finetune {
                finetune: ft.clone(),
            },
            KindConfig::Ensemble { members } => KindMeta::Ensemble {
                members: members.clone(),
                member_meta_sha256: Vec::new(),
            },
        }
    }
}

/// A training run whose paths were checked and whose ensemble members are loaded: what the
/// knowledge stage needs to know to build [`TrainInputs`].
pub struct Prepared {
    out: PathBuf,
    members: Vec<(PathBuf, Model)>,
}

impl Prepared {
    /// What each single model of the ensemble's members needs, depth first (empty for other
    /// kinds): [`TrainInputs::member_val`] holds one validation sample list per entry.
    pub fn member_needs(&self) -> Vec<Needs> {
        self.members.iter().flat_map(|(_, m)| m.needs()).collect()
    }
}

/// The samples a training run is given, built by the knowledge stage.
#[derive(Debug, Clone, Default)]
pub struct TrainInputs {
    /// Training samples, as [`TrainConfig::needs`] says.
    pub train: Vec<Sample>,
    /// Validation samples (evaluation rationale source), as [`TrainConfig::needs`] says.
    pub val: Vec<Sample>,
    /// Ensemble: the validation samples (the same examples as `val`) for each entry of
    /// [`Prepared::member_needs`].
    pub member_val: Vec<Vec<Sample>>,
    /// How the training text is written ([`crate::store::Store::normalizer`]): recorded with
    /// the model, which brings new text into it. `None`: new text is read as given.
    pub text: Option<Normalizer>,
    /// The neighbour pool the model retrieves from for new text ([`TrainConfig::pool_spec`]),
    /// packed into its directory. `None`: it retrieves nothing, or by BM25 from its store.
    pub pool: Option<PackedPool>,
}

/// Checks the output path (and, for an ensemble, loads the members) before anything is built:
/// an `out` that is, holds or lies inside a member or the encoder directory is refused, as
/// are fewer than two members or one given twice.
pub fn prepare(cfg: &TrainConfig, out: &Path) -> Result<Prepared> {
    if cfg.attach.context > 0
        && !matches!(
            cfg.kind,
            KindConfig::Linear(_) | KindConfig::Frozen { .. } | KindConfig::Finetune(_)
        )
    {
        return Err(Error::Setting {
            name: "context",
            msg: format!(
                "{} sentences of document context on each side: only the linear, frozen and finetune classifiers read the context (an ensemble's members bring their own)",
                cfg.attach.context
            ),
        });
    }
    if !(cfg.attach.context_decay > 0.0 && cfg.attach.context_decay <= 1.0) {
        return Err(Error::Setting {
            name: "context_decay",
            msg: format!(
                "the context decay must be in (0, 1], got {}",
                cfg.attach.context_decay
            ),
        });
    }
    let out = modeldir::absolute(out)?;
    let (encoder_dir, members) = match &cfg.kind {
        KindConfig::Frozen { encoder_dir, .. } | KindConfig::Knn { encoder_dir, .. } => {
            (encoder_dir.as_deref(), None)
        }
        KindConfig::Finetune(ft) => (Some(ft.encoder.as_path()), None),
        KindConfig::Ensemble { members } => (None, Some(members.as_slice())),
        KindConfig::Linear(_) => (None, None),
    };
    let members = check_train_paths(encoder_dir, members, &out)?;
    modeldir::check_out(&out)?;
    Ok(Prepared { out, members })
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
        if let Some(c) = &s.context {
            h.update(c.render().as_bytes());
            h.update([0]);
        }
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

/// Trains into the prepared output and returns the meta written.
///
/// The model is written into a staging directory next to `out` and swapped into place when
/// complete ([`Staging`]): an existing model at `out` stays whole until then, and an
/// interrupted train never leaves a mix of two models.
pub fn train(
    cfg: &TrainConfig,
    prepared: Prepared,
    inputs: TrainInputs,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<Meta> {
    let TrainInputs {
        train: train_s,
        val: val_s,
        member_val,
        text,
        pool,
    } = inputs;
    if train_s.is_empty() {
        return Err(Error::EmptySplit {
            split: Split::Train.name(),
            why: "nothing to train on (ingest a corpus; if only examples with knowledge are \
                  used, check that the knowledge source covers some)"
                .into(),
        });
    }
    if val_s.is_empty() {
        return Err(Error::EmptySplit {
            split: Split::Val.name(),
            why:
                "thresholds are tuned on the val split (ingest with a validation fraction above 0)"
                    .into(),
        });
    }
    let staging = Staging::begin(&prepared.out)?;
    let out = staging.path().to_path_buf();
    let t0 = Instant::now();
    let mut meta = Meta {
        format: MODEL_FORMAT,
        kind: cfg.kind_meta(),
        labels: Emotion::ALL.iter().map(|e| e.name().to_string()).collect(),
        thresholds: Thresholds::default(),
        objective: cfg.objective,
        attach: cfg.attach.clone(),
        train_hash: hash_samples(&train_s),
        n_train: train_s.len(),
        n_val: val_s.len(),
        val: metrics::evaluate(&[], &[]),
        train_secs: 0.0,
        created_at: crate::spec::now_secs(),
        files: None,
        text_style: text.as_ref().map(|n| n.style().clone()),
        calibration: None,
        decode: None,
    };
    let val_probs = match &cfg.kind {
        KindConfig::Linear(linear) => train_linear(linear, &train_s, &val_s, &out, progress)?,
        KindConfig::Frozen {
            mlp,
            stack_folds,
            linear,
            ..
        } => frozen::train(
            &meta,
            mlp,
            linear,
            *stack_folds,
            cfg.seed,
            &train_s,
            &val_s,
            &out,
            progress,
        )?,
        // The validation samples carry their k nearest training examples.
        KindConfig::Knn { .. } => val_s.iter().map(|s| knn_vote(&s.neighbours)).collect(),
        KindConfig::Finetune(ft) => train_finetune(ft, &train_s, &val_s, &out, progress)?,
        KindConfig::Ensemble { .. } => {
            let (kind, probs) = train_ensemble(&prepared, &member_val, val_s.len())?;
            meta.kind = kind;
            probs
        }
    };
    // Thresholds on the scores as they are; calibration fitted on the same validation rows
    // (it never changes a thresholded decision); set decoding on the calibrated probabilities.
    let val_gold = gold(&val_s);
    meta.thresholds = thresholds::tune(&val_probs, &val_gold, cfg.objective);
    let calibration = Calibration::fit(&val_probs, &val_gold);
    let val_pred = if cfg.decode_sets {
        let target = match cfg.objective {
            Objective::Exact => SetTarget::Exact,
            Objective::Micro => SetTarget::Micro,
            Objective::Macro => SetTarget::F1,
        };
        let calibrated = calibration.apply(&val_probs);
        let d = SetDecoder::choose(target, count_sets(&gold(&train_s)), &calibrated, &val_gold)?;
        let c = Candidates::new(&d)?;
        meta.decode = Some(d);
        calibrated.iter().map(|p| c.decode(p)).collect()
    } else {
        meta.thresholds.apply(&val_probs)
    };
    meta.calibration = Some(calibration);
    meta.val = metrics::evaluate(&val_gold, &val_pred);
    meta.train_secs = t0.elapsed().as_secs_f64();
    if let Some(n) = &text {
        n.vocabulary().write(&out.join(super::VOCABULARY_FILE))?;
    }
    if let Some(p) = &pool {
        p.write(&out)?;
    }
    // Weights are all written: record them, then meta.json last, then swap into place.
    super::pack::write_meta(&out, &mut meta)?;
    staging.commit()?;
    Ok(meta)
}

fn train_linear(
    linear: &LinearConfig,
    train_s: &[Sample],
    val_s: &[Sample],
    out: &Path,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<Vec<Probs>> {
    progress(TrainEvent::Phase(format!(
        "linear: {} examples",
        train_s.len()
    )));
    let contexts = contexts_of(train_s);
    let sentences: Vec<&str> = train_s.iter().map(|s| s.text.as_str()).collect();
    let m = LinearModel::train_with_context(
        &refs(&texts_of(train_s)),
        contexts.as_deref().map(|contexts| ContextInput {
            contexts,
            sentences: &sentences,
        }),
        &gold(train_s),
        linear,
        &mut |p| progress(TrainEvent::Phase(p.to_string())),
    )?;
    m.save(out)?;
    Ok(m.predict_proba_with_context(&refs(&texts_of(val_s)), &sample_contexts(val_s)))
}

fn train_finetune(
    ft: &FinetuneConfig,
    train_s: &[Sample],
    val_s: &[Sample],
    out: &Path,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<Vec<Probs>> {
    let texts = paired_texts(train_s);
    let vtexts = paired_texts(val_s);
    let m = finetune::train(
        &refs(&texts),
        &gold(train_s),
        &refs(&vtexts),
        &gold(val_s),
        ft,
        &mut |e| progress(finetune_event(e)),
    )?;
    m.save(out)?;
    m.predict_proba(&refs(&vtexts))
}

fn finetune_event(e: FinetuneEvent) -> TrainEvent {
    match e {
        FinetuneEvent::Step {
            epoch,
            step,
            total_steps,
            loss,
            lr,
        } => TrainEvent::Phase(format!(
            "epoch {epoch}, step {step}/{total_steps}: loss {loss:.4}, lr {lr:.1e}"
        )),
        FinetuneEvent::Eval {
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
        FinetuneEvent::Epoch {
            epoch,
            train_loss,
            secs,
            train_secs,
            examples_per_sec,
        } => TrainEvent::Epoch {
            epoch,
            loss: train_loss,
            val: format!(
                "{train_secs:.1} s training ({examples_per_sec:.1} examples/s), {secs:.1} s with validation"
            ),
        },
    }
}

/// The ensemble's meta (members pinned by their meta.json's SHA-256) and its validation
/// probabilities: the average of its members'.
fn train_ensemble(
    prepared: &Prepared,
    member_val: &[Vec<Sample>],
    rows: usize,
) -> Result<(KindMeta, Vec<Probs>)> {
    let mut rest = member_val;
    let mut all = Vec::with_capacity(prepared.members.len());
    for (_, m) in &prepared.members {
        let n = m.leaves().len();
        if rest.len() < n {
            return Err(Error::Model(format!(
                "{} validation sample lists for the ensemble's members, {n} more needed",
                member_val.len()
            )));
        }
        let (own, tail) = rest.split_at(n);
        rest = tail;
        let p = m.predict_proba(own)?;
        if p.len() != rows {
            return Err(Error::Model(format!(
                "member {} scored {} validation examples, not {rows}",
                m.dir().display(),
                p.len()
            )));
        }
        all.push(p);
    }
    let kind = KindMeta::Ensemble {
        members: prepared.members.iter().map(|(c, _)| c.clone()).collect(),
        member_meta_sha256: prepared
            .members
            .iter()
            .map(|(_, m)| m.meta_sha256.clone())
            .collect(),
    };
    Ok((kind, average(all, rows)))
}
