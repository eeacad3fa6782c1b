//! The frozen kind: a head over the samples' vectors (text ⊕ rationale ⊕ neighbour vote ⊕ the
//! stacked linear model's scores), and its training.

use super::{gold, refs, texts_of, KindMeta, Meta, TrainEvent, STACK_DIR};
use crate::error::{Error, Result};
use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::model::linear::{LinearConfig, LinearModel};
use crate::model::mlp::{Features, Mlp, MlpConfig};
use crate::model::sample::{AttachSpec, ContextVectors, Probs, Sample};
use crate::neighbours::knn_vote;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;

/// Whether frozen features of `spec` carry a rationale block (evaluation source when `eval`).
fn has_rationale_block(spec: &AttachSpec, eval: bool) -> bool {
    spec.mode.rationale() && spec.rationale_source(eval).is_some()
}

/// The number of features a frozen head of `meta` reads (what [`features`] builds at
/// prediction).
pub(super) fn in_dim(meta: &Meta) -> usize {
    let KindMeta::Frozen {
        encoder,
        stack_folds,
        ..
    } = &meta.kind
    else {
        return 0;
    };
    let dim = encoder.dim;
    let mut n = dim;
    if has_rationale_block(&meta.attach, true) {
        n = n.saturating_add(dim).saturating_add(1);
    }
    if meta.attach.mode.neighbours() {
        n = n.saturating_add(NUM_EMOTIONS);
    }
    if meta.attach.context > 0 {
        n = n.saturating_add(ContextVectors::dim(meta.attach.context_pool, dim));
    }
    if *stack_folds > 0 {
        n = n.saturating_add(NUM_EMOTIONS);
    }
    n
}

/// Frozen features: text vector ⊕ (rationale vector and a has-rationale flag, when the spec
/// attaches rationales) ⊕ (the neighbours' label vote, when it attaches neighbours) ⊕ (the
/// context sentences' pooled vectors, when it attaches context: before ⊕ after, or their
/// mean) ⊕ (the stacked linear model's logits, when given). Vectors come with the samples.
pub(super) fn features(
    meta: &Meta,
    samples: &[Sample],
    eval: bool,
    stacked: Option<&[Probs]>,
) -> Result<Vec<f32>> {
    let KindMeta::Frozen { encoder, .. } = &meta.kind else {
        return Err(Error::Model(
            "frozen features of a model of another kind".into(),
        ));
    };
    let dim = encoder.dim;
    let spec = &meta.attach;
    let rationale = has_rationale_block(spec, eval);
    let votes = spec.mode.neighbours();
    let mut out = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let t = s
            .vector
            .as_ref()
            .ok_or_else(|| Error::NotFound(format!("no vector for example {}", s.id)))?;
        if t.len() != dim {
            return Err(Error::Model(format!(
                "the vector of example {} has dimension {}, encoder {} has {dim}",
                s.id,
                t.len(),
                encoder.name
            )));
        }
        out.extend_from_slice(t);
        if rationale {
            let has = s.rationale.as_ref().is_some_and(|r| !r.is_empty());
            match s.rationale_vector.as_ref().filter(|_| has) {
                Some(v) if v.len() == dim => {
                    out.extend_from_slice(v);
                    out.push(1.0);
                }
                _ => {
                    out.extend(std::iter::repeat_n(0.0, dim));
                    out.push(0.0);
                }
            }
        }
        if votes {
            out.extend_from_slice(&knn_vote(&s.neighbours));
        }
        if spec.context > 0 {
            let c = s.context_vectors.as_ref().ok_or_else(|| {
                Error::NotFound(format!("no context vectors for example {}", s.id))
            })?;
            if c.before.len() != dim || c.after.len() != dim {
                return Err(Error::Model(format!(
                    "the context vectors of example {} have dimension {}, encoder {} has {dim}",
                    s.id,
                    c.before.len(),
                    encoder.name
                )));
            }
            out.extend(c.features(spec.context_pool));
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

/// Linear scores to stack under a frozen head: out-of-fold probabilities for the training
/// samples (each scored by a model that never saw it, so the head does not learn to trust
/// memorized scores), and the probabilities of a model trained on all of them for validation;
/// that model is saved in `out/stack-linear` for prediction.
fn stack_scores(
    train_s: &[Sample],
    val_s: &[Sample],
    folds: usize,
    linear: &LinearConfig,
    seed: u64,
    out: &Path,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<(Vec<Probs>, Vec<Probs>)> {
    if train_s.len() < folds {
        return Err(Error::Setting {
            name: "stack_folds",
            msg: format!(
                "stacking the linear model's scores in {folds} folds needs at least {folds} training examples, there are {}",
                train_s.len()
            ),
        });
    }
    let texts = texts_of(train_s);
    let y = gold(train_s);
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
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
        let m = LinearModel::train(&fit_t, &fit_y, linear, &mut |_| {})?;
        let held_t: Vec<&str> = held.iter().map(|&i| texts[i].as_str()).collect();
        for (&i, p) in held.iter().zip(m.predict_proba(&held_t)) {
            oof[i] = p;
        }
    }
    progress(TrainEvent::Phase("stacked linear: all folds".into()));
    let m = LinearModel::train(&refs(&texts), &y, linear, &mut |_| {})?;
    let dir = out.join(STACK_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    m.save(&dir)?;
    Ok((oof, m.predict_proba(&refs(&texts_of(val_s)))))
}

/// Trains the head of a frozen model (whose `meta.kind` is filled) into `out`; returns the
/// validation probabilities.
#[allow(clippy::too_many_arguments)] // the training inputs, each used once
pub(super) fn train(
    meta: &Meta,
    mlp: &MlpConfig,
    linear: &LinearConfig,
    stack_folds: usize,
    seed: u64,
    train_s: &[Sample],
    val_s: &[Sample],
    out: &Path,
    progress: &mut dyn FnMut(TrainEvent),
) -> Result<Vec<Probs>> {
    let (sx, sv) = match stack_folds {
        0 => (None, None),
        1 => {
            return Err(Error::Setting {
                name: "stack_folds",
                msg: "stacking the linear model's scores needs at least 2 folds (or 0 for none)"
                    .into(),
            })
        }
        k => {
            let (sx, sv) = stack_scores(train_s, val_s, k, linear, seed, out, progress)?;
            (Some(sx), Some(sv))
        }
    };
    progress(TrainEvent::Phase("features".into()));
    let fx = features(meta, train_s, false, sx.as_deref())?;
    let fv = features(meta, val_s, true, sv.as_deref())?;
    let dim = fx.len() / train_s.len().max(1);
    let head = Mlp::train(
        Features { data: &fx, dim },
        &gold(train_s),
        Features { data: &fv, dim },
        &gold(val_s),
        mlp,
        &mut |r| {
            progress(TrainEvent::Epoch {
                epoch: r.epoch,
                loss: r.train_loss,
                val: format!("val loss {:.4}", r.val_loss),
            })
        },
    )?;
    head.save(out, "head")?;
    head.predict_proba(Features { data: &fv, dim })
}
