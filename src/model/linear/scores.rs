//! The context-score block: what a text-only model says of the surrounding sentences.
//!
//! Emotion carries across neighbouring sentences of a text, and a text-only model's eight
//! probabilities for a sentence are a compact, document-independent summary of what it
//! expresses. With [`crate::model::LinearConfig::context_scores`] above 0, a linear model with
//! contexts gains a block of 16 features: for each side of the context, the mean of those
//! probabilities over its sentences, a sentence at distance d weighing
//! `context_score_decay^(d-1)` (an empty side is zeros). It is stacking, with the usual care
//! against memorized scores:
//!
//! - a context sentence that is a training text gets its *held-out* score: the training texts
//!   are cut into [`FOLDS`] runs of consecutive texts (training order is document order, so a
//!   sentence and its context mostly share a run) and each run is scored by a text-only model
//!   trained on the other runs;
//! - any other sentence (validation, test, new text) is scored by a text-only model trained on
//!   all training texts.
//!
//! Both are part of the saved model, so scores at evaluation are the ones training saw. Only
//! texts are scored: no label of a context sentence ever reaches the features.

use super::{LinearConfig, LinearModel};
use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::model::sample::{Context, Probs};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// Runs the training texts are cut into for their held-out scores.
pub const FOLDS: usize = 5;

/// Features the block adds: eight probabilities for each side.
pub const WIDTH: usize = 2 * NUM_EMOTIONS;

/// Subdirectory of a linear model holding its text-only scorer.
const SCORER_DIR: &str = "scorer";

/// File of a linear model holding the held-out scores of its training texts.
const HELD_OUT_FILE: &str = "held_out_scores.safetensors";

/// Scores context sentences for the context-score block.
#[derive(Debug, Clone)]
pub(super) struct Scorer {
    /// Text-only model trained on every training text: scores any other sentence.
    model: Box<LinearModel>,
    /// Held-out scores of the training texts, by [`text_key`].
    held_out: HashMap<u64, Probs>,
}

/// A stable 64-bit key of a text (the first 8 bytes of its SHA-256).
fn text_key(text: &str) -> u64 {
    let d = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

impl Scorer {
    /// Trains the scorer on the training texts (in document order): [`FOLDS`] text-only models
    /// for the held-out scores, and one on all texts. `cfg` is the context model's config: the
    /// scorers use its text features and [`LinearConfig::context_score_head`]. `progress` gets
    /// (models trained, models in all).
    pub(super) fn train(
        texts: &[&str],
        labels: &[LabelSet],
        cfg: &LinearConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Scorer> {
        let n = texts.len();
        if n < FOLDS {
            return Err(Error::Invalid(format!(
                "linear model: context scores are held out in {FOLDS} runs and need at least \
                 {FOLDS} training texts, there are {n}"
            )));
        }
        let text_cfg = LinearConfig {
            context_scores: 0.0,
            heads: vec![cfg.context_score_head.clone()],
            ..cfg.clone()
        };
        let mut held_out = HashMap::with_capacity(n);
        for f in 0..FOLDS {
            progress(f, FOLDS + 1);
            let run = f * n / FOLDS..(f + 1) * n / FOLDS;
            let (fit_t, fit_y): (Vec<&str>, Vec<LabelSet>) = (0..n)
                .filter(|i| !run.contains(i))
                .map(|i| (texts[i], labels[i]))
                .unzip();
            let m = LinearModel::train(&fit_t, &fit_y, &text_cfg, &mut |_| {})?;
            let held = &texts[run];
            for (t, p) in held.iter().zip(m.predict_proba(held)) {
                // A text repeated in the corpus keeps its first held-out score.
                held_out.entry(text_key(t)).or_insert(p);
            }
        }
        progress(FOLDS, FOLDS + 1);
        let model = LinearModel::train(texts, labels, &text_cfg, &mut |_| {})?;
        progress(FOLDS + 1, FOLDS + 1);
        Ok(Scorer {
            model: Box::new(model),
            held_out,
        })
    }

    /// The score of one sentence: held out when it is a training text, else the full model's.
    fn score(&self, text: &str) -> Probs {
        match self.held_out.get(&text_key(text)) {
            Some(p) => *p,
            None => self.model.proba(text, None),
        }
    }

    /// Whether `text` has a held-out score.
    #[cfg(test)]
    pub(super) fn holds(&self, text: &str) -> bool {
        self.held_out.contains_key(&text_key(text))
    }

    /// The block of a context: each side's decayed mean of its sentences' scores (before,
    /// then after; zeros for an empty side), times `weight`.
    pub(super) fn features(&self, context: &Context, decay: f64, weight: f64) -> [f32; WIDTH] {
        let mut out = [0f32; WIDTH];
        // Nearest first on each side.
        let sides = [
            context.before.iter().rev().collect::<Vec<_>>(),
            context.after.iter().collect::<Vec<_>>(),
        ];
        for (s, side) in sides.iter().enumerate() {
            let (mut sum, mut total) = ([0f64; NUM_EMOTIONS], 0f64);
            let mut w = 1f64;
            for sentence in side {
                for (acc, p) in sum.iter_mut().zip(self.score(sentence)) {
                    *acc += w * p as f64;
                }
                total += w;
                w *= decay;
            }
            if total > 0.0 {
                for (l, acc) in sum.iter().enumerate() {
                    out[s * NUM_EMOTIONS + l] = (acc / total * weight) as f32;
                }
            }
        }
        out
    }

    /// The blocks of many contexts, in parallel.
    pub(super) fn features_of(
        &self,
        contexts: &[&Context],
        decay: f64,
        weight: f64,
    ) -> Vec<[f32; WIDTH]> {
        contexts
            .par_iter()
            .map(|c| self.features(c, decay, weight))
            .collect()
    }

    /// Writes the scorer into the linear model's directory `dir`: the text-only model in
    /// `scorer/`, the held-out scores in `held_out_scores.safetensors` (`keys` [n, 2] u32, the
    /// texts' 64-bit keys as low and high halves, sorted; `scores` [n, 8] f32).
    pub(super) fn save(&self, dir: &Path) -> Result<()> {
        self.model.save(&dir.join(SCORER_DIR))?;
        let mut entries: Vec<(&u64, &Probs)> = self.held_out.iter().collect();
        entries.sort_by_key(|e| *e.0);
        let n = entries.len();
        let keys: Vec<u32> = entries
            .iter()
            .flat_map(|(k, _)| [**k as u32, (**k >> 32) as u32])
            .collect();
        let scores: Vec<f32> = entries
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        tensors.insert("keys", Tensor::from_vec(keys, (n, 2), &dev)?);
        tensors.insert("scores", Tensor::from_vec(scores, (n, NUM_EMOTIONS), &dev)?);
        let path = dir.join(HELD_OUT_FILE);
        candle_core::safetensors::save(&tensors, &path).map_err(|e| Error::model_file(&path, e))
    }

    /// Reads a scorer [`Scorer::save`] wrote into `dir`.
    ///
    /// Errors: as [`LinearModel::load`] for the scorer model; [`Error::Io`] for a missing held-out
    /// file, [`Error::Model`] naming it when its tensors are missing or of other shapes.
    pub(super) fn load(dir: &Path) -> Result<Scorer> {
        let model = LinearModel::load(&dir.join(SCORER_DIR))?;
        if model.reads_context() {
            return Err(Error::Model(format!(
                "{}: a context model, expected a text-only scorer",
                dir.join(SCORER_DIR).display()
            )));
        }
        let path = dir.join(HELD_OUT_FILE);
        let tensors = super::load_tensors(&path)?;
        let bad = |e: String| Error::Model(format!("{}: {e}", path.display()));
        let (Some(keys), Some(scores)) = (tensors.get("keys"), tensors.get("scores")) else {
            return Err(bad("expected tensors \"keys\" and \"scores\"".into()));
        };
        let n = keys.dims().first().copied().unwrap_or(0);
        if keys.dims() != [n, 2] || scores.dims() != [n, NUM_EMOTIONS] {
            return Err(bad(format!(
                "keys {:?} and scores {:?}, expected [n, 2] and [n, {NUM_EMOTIONS}]",
                keys.dims(),
                scores.dims()
            )));
        }
        let keys: Vec<u32> = keys
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(|e| bad(e.to_string()))?;
        let scores: Vec<f32> = scores
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(|e| bad(e.to_string()))?;
        let held_out = keys
            .chunks_exact(2)
            .zip(scores.chunks_exact(NUM_EMOTIONS))
            .map(|(k, s)| {
                let key = k[0] as u64 | (k[1] as u64) << 32;
                let mut probs: Probs = [0.0; NUM_EMOTIONS];
                probs.copy_from_slice(s);
                (key, probs)
            })
            .collect();
        Ok(Scorer {
            model: Box::new(model),
            held_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{small_cfg, synthetic};
    use super::*;

    fn corpus() -> (Vec<String>, Vec<LabelSet>) {
        synthetic(200, 11)
    }

    #[test]
    fn a_training_texts_score_is_held_out_from_its_own_label() {
        let (texts, mut labels) = corpus();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        // A text that occurs once, in the middle of the second run.
        let j = (60..80)
            .find(|&j| refs.iter().filter(|t| **t == refs[j]).count() == 1)
            .expect("a unique text");
        let before = Scorer::train(&refs, &labels, &small_cfg(), &mut |_, _| {}).unwrap();
        // Give it every label it did not have.
        labels[j] = LabelSet(!labels[j].0);
        let after = Scorer::train(&refs, &labels, &small_cfg(), &mut |_, _| {}).unwrap();
        assert_eq!(before.score(refs[j]), after.score(refs[j]));
        // The model trained on all texts did see the label: its score moved.
        assert_ne!(
            before.model.proba(refs[j], None),
            after.model.proba(refs[j], None)
        );
        // A text that is not a training text is scored by that model.
        let new = "完全 没有 见过 的 句子";
        assert_eq!(before.score(new), before.model.proba(new, None));
    }

    #[test]
    fn each_side_is_a_decayed_mean_of_its_sentences_scores() {
        let (texts, labels) = corpus();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let s = Scorer::train(&refs, &labels, &small_cfg(), &mut |_, _| {}).unwrap();
        let c = Context::new(&[refs[3], refs[4]], &[refs[6]]);
        let block = s.features(&c, 0.5, 2.0);
        let (near, far, after) = (s.score(refs[4]), s.score(refs[3]), s.score(refs[6]));
        for l in 0..NUM_EMOTIONS {
            let want = (near[l] as f64 + 0.5 * far[l] as f64) / 1.5 * 2.0;
            assert!((block[l] as f64 - want).abs() < 1e-6, "before, label {l}");
            let want = after[l] as f64 * 2.0;
            assert!(
                (block[NUM_EMOTIONS + l] as f64 - want).abs() < 1e-6,
                "after, label {l}"
            );
        }
        assert_eq!(s.features(&Context::default(), 0.5, 2.0), [0.0; WIDTH]);
        assert!(block.iter().any(|&v| v > 0.0));
    }

    #[test]
    fn too_few_texts_for_the_runs_are_refused() {
        let err = Scorer::train(
            &["a", "b"],
            &[LabelSet::EMPTY; 2],
            &small_cfg(),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("at least 5 training texts"),
            "{err}"
        );
    }
}
