//! The `linear` classifier: TF-IDF n-gram features and one-vs-rest L2 logistic regression,
//! trained in Rust with no encoder. The default, CPU-friendly model.
//!
//! Features (all configurable in [`LinearConfig`]):
//! - a word block: whitespace-separated tokens (the corpus is word-segmented) as unigrams and
//!   optionally bigrams;
//! - a character block: character n-grams of the text with all whitespace removed;
//! - with a document context (the surrounding sentences, [`crate::model::sample::Sample::context`]),
//!   a context block: the same word and character n-grams of the context text (sentences
//!   before and after together), with its own vocabulary fit on the training contexts, each
//!   sub-block L2-normalized on its own and scaled by [`LinearConfig::context_weight`];
//! - with a document context and [`LinearConfig::context_scores`] > 0, a context-score block:
//!   a text-only model's probabilities for the context sentences, per side (`scores.rs`).
//!
//! Each block uses sublinear term frequency (1 + ln tf), smoothed idf
//! (ln((1 + n) / (1 + df)) + 1, as scikit-learn) and is L2-normalized on its own. Input text is
//! plain text: appended knowledge (an LLM rationale after `" [SEP] "`) is featurized like the
//! sentence itself.
//!
//! On these features, each *head* ([`HeadConfig`]) trains one logistic regression per label
//! (L2 penalty, unpenalized bias, optional positive-class weight), optionally on features
//! scaled by naive-Bayes log-count ratios (NBSVM-style) and by per-block weights; the scales are
//! folded into the stored weights, so inference is a plain sparse dot product. The model's
//! probability is the mean of its heads' probabilities. Each regression is minimized to a
//! relative gradient tolerance with L-BFGS over sparse CSR rows; the heads × 8 regressions
//! train in parallel with rayon. Training is deterministic: no random initialization, and each
//! regression's arithmetic runs in a fixed order on one thread.
//!
//! Turning probabilities into label sets is [`crate::model::thresholds`]' job; reading texts
//! and knowledge from the store is the caller's.
//!
//! Where the code lives:
//! - this file: the configuration ([`LinearConfig`], [`HeadConfig`]), [`LinearProgress`] and
//!   [`LinearModel`] (train, predict, save, load);
//! - `features`: tokenizing and the TF-IDF featurizer (word and character n-grams, term
//!   statistics, idf);
//! - `lbfgs`: the sparse CSR matrix, the logistic-regression problem, its L-BFGS fit and the
//!   naive-Bayes ratios;
//! - `scores`: the context-score block's scorer (held-out and full text-only models, saving
//!   and loading them).

mod features;
mod lbfgs;
mod scores;

use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::model::sample::Context;
use features::{index_of, Featurizer};
use lbfgs::{fit_label, sigmoid, Csr, Fit};
use scores::Scorer;

/// Hyper-parameters of the linear classifier. Serialized with the model.
///
/// The features are shared; each [`HeadConfig`] trains its own one-vs-rest logistic
/// regressions on them, and the model's probability is the mean of the heads' probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinearConfig {
    /// Longest word n-gram: 0 = no word features, 1 = unigrams, 2 = unigrams + bigrams, ….
    pub word_ngrams: usize,
    /// Shortest character n-gram.
    pub char_ngram_min: usize,
    /// Longest character n-gram; 0 = no character features.
    pub char_ngram_max: usize,
    /// Drop n-grams that occur in fewer than this many training texts.
    pub min_df: usize,
    /// Keep at most this many n-grams per block (the most frequent; 0 = no limit).
    pub max_features: usize,
    /// The regressions whose probabilities are averaged (at least one).
    pub heads: Vec<HeadConfig>,
    /// L-BFGS iteration cap per label and head.
    pub max_iter: usize,
    /// Stop when ‖gradient‖ ≤ tol · ‖initial gradient‖.
    pub tol: f64,
    /// Scale of the (L2-normalized) context block, when the model is trained with contexts
    /// (chosen on validation; see docs/results.md). Unused without contexts.
    pub context_weight: f64,
    /// Longest word n-gram of the context block (0 = no word features there).
    pub context_word_ngrams: usize,
    /// Longest character n-gram of the context block (from `char_ngram_min`; 0 = none).
    pub context_char_ngram_max: usize,
    /// Scale of the context-score block (a text-only model's probabilities for the context
    /// sentences, held out for training texts; see `scores.rs`), when the model is trained
    /// with contexts; 0 = no such block (models saved before it read as 0).
    #[serde(default)]
    pub context_scores: f64,
    /// Weight of a context sentence at distance d in its side's mean score: this ^ (d - 1).
    #[serde(default = "default_score_decay")]
    pub context_score_decay: f64,
    /// The one head of the text-only models that score the context sentences (chosen on
    /// validation of unseen documents: the plain head, C = 2, over both heads).
    #[serde(default = "default_score_head")]
    pub context_score_head: HeadConfig,
}

fn default_score_head() -> HeadConfig {
    HeadConfig {
        c: 2.0,
        ..HeadConfig::default()
    }
}

fn default_score_decay() -> f64 {
    DEFAULT_CONTEXT_SCORE_DECAY
}

/// One set of eight logistic regressions over the shared features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeadConfig {
    /// Inverse regularization strength: the objective is ½‖w‖² + C · Σ loss (liblinear's form).
    pub c: f64,
    /// Scale each feature by its naive-Bayes log-count ratio for the label (NBSVM-style,
    /// Wang & Manning 2012).
    pub nb_scale: bool,
    /// Positive-class weight exponent: positives of a label weigh (negatives / positives) ^ this.
    /// 0 = unweighted, 1 = balanced.
    pub class_balance: f64,
    /// Scale of the (L2-normalized) word block for this head; 0 ignores words.
    pub word_weight: f64,
    /// Scale of the (L2-normalized) character block for this head; 0 ignores characters.
    pub char_weight: f64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            c: 1.0,
            nb_scale: false,
            class_balance: 0.0,
            word_weight: 1.0,
            char_weight: 1.0,
        }
    }
}

impl Default for LinearConfig {
    /// The configuration chosen on the seed split's validation rows (see
    /// examples/linear_seed.rs).
    fn default() -> Self {
        LinearConfig {
            word_ngrams: 2,
            char_ngram_min: 1,
            char_ngram_max: 3,
            min_df: 2,
            max_features: 0,
            heads: vec![
                HeadConfig {
                    c: 1.0,
                    nb_scale: true,
                    ..HeadConfig::default()
                },
                HeadConfig {
                    c: 2.0,
                    ..HeadConfig::default()
                },
            ],
            max_iter: 500,
            tol: 1e-4,
            context_weight: DEFAULT_CONTEXT_WEIGHT,
            context_word_ngrams: 1,
            context_char_ngram_max: 0,
            context_scores: DEFAULT_CONTEXT_SCORES,
            context_score_decay: DEFAULT_CONTEXT_SCORE_DECAY,
            context_score_head: default_score_head(),
        }
    }
}

/// The context block's weight, chosen on validation rows of unseen documents (the seed split
/// ingested with validation in runs of 100 rows; see docs/results.md).
pub const DEFAULT_CONTEXT_WEIGHT: f64 = 0.6;

/// Weight of the context-score block of a model trained with contexts, chosen on validation
/// rows of unseen documents (see docs/results.md). Models saved before the block read as 0.
pub const DEFAULT_CONTEXT_SCORES: f64 = 0.5;

/// Decay of the context-score block's per-side means (see [`LinearConfig::context_score_decay`]).
pub const DEFAULT_CONTEXT_SCORE_DECAY: f64 = 0.5;

impl LinearConfig {
    /// The n-gram settings of the context block's featurizer.
    fn context_features(&self) -> LinearConfig {
        LinearConfig {
            word_ngrams: self.context_word_ngrams,
            char_ngram_max: self.context_char_ngram_max,
            ..self.clone()
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("linear model config: {msg}")));
        if !(self.context_weight >= 0.0 && self.context_weight.is_finite()) {
            return bad(format!(
                "context_weight must be a number >= 0, got {}",
                self.context_weight
            ));
        }
        if !(self.context_scores >= 0.0 && self.context_scores.is_finite()) {
            return bad(format!(
                "context_scores must be a number >= 0, got {}",
                self.context_scores
            ));
        }
        if !(self.context_score_decay > 0.0 && self.context_score_decay <= 1.0) {
            return bad(format!(
                "context_score_decay must be in (0, 1], got {}",
                self.context_score_decay
            ));
        }
        if self.word_ngrams == 0 && self.char_ngram_max == 0 {
            return bad("no features: word_ngrams and char_ngram_max are both 0".into());
        }
        if self.char_ngram_max > 0
            && (self.char_ngram_min == 0 || self.char_ngram_min > self.char_ngram_max)
        {
            return bad(format!(
                "char n-gram range {}..={} is empty (need 1 <= min <= max)",
                self.char_ngram_min, self.char_ngram_max
            ));
        }
        if self.context_char_ngram_max > 0
            && (self.char_ngram_min == 0 || self.char_ngram_min > self.context_char_ngram_max)
        {
            return bad(format!(
                "context char n-gram range {}..={} is empty (need 1 <= min <= max)",
                self.char_ngram_min, self.context_char_ngram_max
            ));
        }
        if self.context_word_ngrams > MAX_NGRAM || self.context_char_ngram_max > MAX_NGRAM {
            return bad(format!(
                "context n-grams longer than {MAX_NGRAM} (context_word_ngrams {}, context_char_ngram_max {})",
                self.context_word_ngrams, self.context_char_ngram_max
            ));
        }
        if self.word_ngrams > MAX_NGRAM || self.char_ngram_max > MAX_NGRAM {
            return bad(format!(
                "n-grams longer than {MAX_NGRAM} (word_ngrams {}, char_ngram_max {})",
                self.word_ngrams, self.char_ngram_max
            ));
        }
        if self.heads.is_empty() {
            return bad("no heads".into());
        }
        let named = self
            .heads
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("head {i}"), h));
        let score_head = ("context_score_head".to_string(), &self.context_score_head);
        for (name, h) in named.chain([score_head]) {
            if !(h.c > 0.0 && h.c.is_finite()) {
                return bad(format!("{name}: c must be a positive number, got {}", h.c));
            }
            if !(h.class_balance >= 0.0 && h.class_balance.is_finite()) {
                return bad(format!(
                    "{name}: class_balance must be >= 0, got {}",
                    h.class_balance
                ));
            }
            if !(h.word_weight >= 0.0 && h.char_weight >= 0.0)
                || h.word_weight + h.char_weight <= 0.0
            {
                return bad(format!("{name}: block weights must be >= 0 and not both 0"));
            }
        }
        Ok(())
    }
}

/// What a linear model with a document context reads besides its texts
/// ([`LinearModel::train_with_context`]).
#[derive(Debug, Clone, Copy)]
pub struct ContextInput<'a> {
    /// Each example's context.
    pub contexts: &'a [&'a Context],
    /// Each example's sentence alone (its text may carry knowledge after the sentence): what
    /// the context-score block's scorers are trained on and look training sentences up by, so
    /// a context sentence that is a training example finds its held-out score.
    pub sentences: &'a [&'a str],
}

/// Progress of [`LinearModel::train`].
#[derive(Debug, Clone, PartialEq)]
pub enum LinearProgress {
    /// The vocabulary is built and the training texts are vectorized.
    Features {
        /// Training texts.
        docs: usize,
        /// Word n-gram features kept.
        word_features: usize,
        /// Character n-gram features kept.
        char_features: usize,
        /// Context n-gram features kept (0 without contexts).
        context_features: usize,
    },
    /// A text-only model of the context-score block is trained (held-out runs, then all).
    Scorer {
        /// Models trained so far.
        done: usize,
        /// Models in all.
        total: usize,
    },
    /// One (head, label) regression has converged; they finish in any order.
    Label {
        /// Index of the head in [`LinearConfig::heads`].
        head: usize,
        /// The label.
        label: Emotion,
        /// Regressions finished so far, 1..=total.
        done: usize,
        /// Regressions in all: heads × 8.
        total: usize,
        /// L-BFGS iterations it took.
        iterations: usize,
    },
}

impl fmt::Display for LinearProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinearProgress::Features {
                docs,
                word_features,
                char_features,
                context_features,
            } => {
                write!(
                    f,
                    "{docs} texts vectorized: {word_features} word + {char_features} char n-grams"
                )?;
                if *context_features > 0 {
                    write!(f, " + {context_features} context n-grams")?;
                }
                Ok(())
            }
            LinearProgress::Scorer { done, total } => write!(
                f,
                "context scorer: {done}/{total} text-only models trained (held-out scores of \
                 the training texts, then all)"
            ),
            LinearProgress::Label {
                head,
                label,
                done,
                total,
                iterations,
            } => write!(
                f,
                "head {head} label {label} trained ({done}/{total}, {iterations} iterations)"
            ),
        }
    }
}

/// A trained linear classifier: vocabulary, idf, and per head one weight vector + bias per
/// label.
#[derive(Debug, Clone)]
pub struct LinearModel {
    cfg: LinearConfig,
    feat: Featurizer,
    /// The context block's featurizer (features after the text's), when trained with contexts.
    ctx_feat: Option<Featurizer>,
    /// Number of heads.
    heads: usize,
    /// Weights transposed for inference: `weights_t[j * K + h * 8 + l]` = weight of feature j
    /// for head h, label l, where K = heads × 8.
    weights_t: Vec<f32>,
    /// `bias[h * 8 + l]`.
    bias: Vec<f32>,
    /// Scores the context sentences for the context-score block (features after the context
    /// block's), when trained with contexts and [`LinearConfig::context_scores`] > 0.
    scorer: Option<Scorer>,
}

/// Longest word or character n-gram a config may ask for (prediction cost grows with it).
const MAX_NGRAM: usize = 16;

const WEIGHTS_FILE: &str = "weights.safetensors";
const VOCAB_FILE: &str = "vocab.json";
const CONFIG_FILE: &str = "config.json";
const FORMAT: &str = "emoknow-linear";
const FORMAT_VERSION: u32 = 1;
/// The version of models with a context-score block (older builds cannot read them).
const FORMAT_VERSION_SCORES: u32 = 2;

#[derive(Serialize, Deserialize)]
struct SavedConfig {
    format: String,
    version: u32,
    config: LinearConfig,
    word_features: usize,
    char_features: usize,
    /// Context block sizes (absent in models without one).
    #[serde(default, skip_serializing_if = "is_zero")]
    context_word_features: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    context_char_features: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct SavedVocab {
    words: Vec<String>,
    chars: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    context_words: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    context_chars: Vec<String>,
}

impl LinearModel {
    /// Fits the vocabulary on `texts` and trains, for every head, one logistic regression per
    /// label.
    ///
    /// `texts[i]` has gold labels `labels[i]`. Progress goes to `progress` on the calling
    /// thread (the regressions train on rayon's pool). Cost: two tokenizing passes over the
    /// texts plus, per head and label, some hundred sparse passes — about 10 CPU-seconds per
    /// head for 23,000 sentences.
    ///
    /// Errors: [`Error::Invalid`] when the lengths differ, there are no texts, the config is
    /// invalid or no n-gram survives `min_df`.
    pub fn train(
        texts: &[&str],
        labels: &[LabelSet],
        cfg: &LinearConfig,
        progress: &mut dyn FnMut(LinearProgress),
    ) -> Result<LinearModel> {
        LinearModel::train_with_context(texts, None, labels, cfg, progress)
    }

    /// [`LinearModel::train`] with each text's document context ([`ContextInput`]; `texts`
    /// in document order when [`LinearConfig::context_scores`] > 0): the model gains a context
    /// block (and a context-score block), and predicting then reads contexts too
    /// ([`LinearModel::predict_proba_with_context`]). `None` trains a text-only model. The
    /// context-score block costs six single-head text-only trainings more.
    pub fn train_with_context(
        texts: &[&str],
        context: Option<ContextInput<'_>>,
        labels: &[LabelSet],
        cfg: &LinearConfig,
        progress: &mut dyn FnMut(LinearProgress),
    ) -> Result<LinearModel> {
        cfg.validate()?;
        if let Some(c) = &context {
            if c.contexts.len() != texts.len() || c.sentences.len() != texts.len() {
                return Err(Error::Invalid(format!(
                    "linear model: {} texts but {} contexts and {} sentences",
                    texts.len(),
                    c.contexts.len(),
                    c.sentences.len()
                )));
            }
        }
        let contexts = context.as_ref().map(|c| c.contexts);
        if texts.len() != labels.len() {
            return Err(Error::Invalid(format!(
                "linear model: {} texts but {} label sets",
                texts.len(),
                labels.len()
            )));
        }
        if texts.is_empty() {
            return Err(Error::Invalid("linear model: no training texts".into()));
        }
        let feat = Featurizer::fit(texts, cfg);
        if feat.n_features() == 0 {
            return Err(Error::Invalid(format!(
                "linear model: no n-gram occurs in at least min_df = {} texts",
                cfg.min_df
            )));
        }
        let scorer = match &context {
            Some(c) if cfg.context_scores > 0.0 => Some(Scorer::train(
                c.sentences,
                labels,
                cfg,
                &mut |done, total| progress(LinearProgress::Scorer { done, total }),
            )?),
            _ => None,
        };
        let ctx_texts: Option<Vec<String>> =
            contexts.map(|c| c.iter().map(|c| context_text(c)).collect());
        let ctx_feat = ctx_texts.as_ref().map(|c| {
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            Featurizer::fit(&refs, &cfg.context_features())
        });
        let n_text = feat.n_features();
        let n_ngrams = n_text + ctx_feat.as_ref().map_or(0, Featurizer::n_features);
        let n_all = n_ngrams + scorer.as_ref().map_or(0, |_| scores::WIDTH);
        let score_rows = match (&scorer, contexts) {
            (Some(s), Some(c)) => s.features_of(c, cfg.context_score_decay, cfg.context_scores),
            _ => Vec::new(),
        };
        let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..texts.len())
            .into_par_iter()
            .map(|i| {
                let (mut ids, mut vals) = row(
                    &feat,
                    ctx_feat.as_ref(),
                    cfg.context_weight,
                    texts[i],
                    ctx_texts.as_ref().map(|c| c[i].as_str()),
                );
                if let Some(block) = score_rows.get(i) {
                    push_scores(&mut ids, &mut vals, n_ngrams, block);
                }
                (ids, vals)
            })
            .collect();
        let x = Csr::from_rows(rows, n_all);
        progress(LinearProgress::Features {
            docs: texts.len(),
            word_features: feat.word_terms.len(),
            char_features: feat.char_terms.len(),
            context_features: ctx_feat.as_ref().map_or(0, Featurizer::n_features),
        });

        let heads = cfg.heads.len();
        let total = heads * NUM_EMOTIONS;
        let n_word = feat.word_terms.len();
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Emotion, usize)>();
        let fits: Vec<Fit> = std::thread::scope(|scope| -> Result<Vec<Fit>> {
            let x = &x;
            let worker = scope.spawn(move || {
                (0..total)
                    .into_par_iter()
                    .map(|k| {
                        let (h, e) = (k / NUM_EMOTIONS, Emotion::from_index(k % NUM_EMOTIONS));
                        let fit = fit_label(
                            x,
                            (n_word, n_text),
                            labels,
                            e,
                            &cfg.heads[h],
                            cfg.max_iter,
                            cfg.tol,
                        );
                        // The receiver lives until every regression is done.
                        let _ = tx.send((h, e, fit.iterations));
                        fit
                    })
                    .collect::<Vec<Fit>>()
            });
            for (done, (head, label, iterations)) in rx.iter().enumerate() {
                progress(LinearProgress::Label {
                    head,
                    label,
                    done: done + 1,
                    total,
                    iterations,
                });
            }
            worker
                .join()
                .map_err(|_| Error::Model("a linear model training thread panicked".into()))
        })?;

        let d = n_all;
        let mut weights_t = vec![0.0f32; d * total];
        let mut bias = vec![0.0f32; total];
        for (k, fit) in fits.iter().enumerate() {
            bias[k] = fit.b as f32;
            for (j, &w) in fit.w.iter().enumerate() {
                weights_t[j * total + k] = w as f32;
            }
        }
        Ok(LinearModel {
            cfg: cfg.clone(),
            feat,
            ctx_feat,
            heads,
            weights_t,
            bias,
            scorer,
        })
    }

    /// The configuration the model was trained with.
    pub fn config(&self) -> &LinearConfig {
        &self.cfg
    }

    /// Number of features (word + character n-grams, and the context blocks').
    pub fn n_features(&self) -> usize {
        self.n_ngram_features() + self.scorer.as_ref().map_or(0, |_| scores::WIDTH)
    }

    /// The n-gram features: the text's and the context block's.
    fn n_ngram_features(&self) -> usize {
        self.feat.n_features() + self.ctx_feat.as_ref().map_or(0, Featurizer::n_features)
    }

    /// Whether the model has a context block (was trained with contexts).
    pub fn reads_context(&self) -> bool {
        self.ctx_feat.is_some()
    }

    /// How many of the model's features (n-grams of its vocabulary) `text` has; 0 means the
    /// model knows nothing of it and predicts its bias, the training label frequencies.
    pub fn known_features(&self, text: &str) -> usize {
        self.feat.vectorize(text).0.len()
    }

    /// Mean over heads of the per-label probabilities of one text (and its context).
    fn proba(&self, text: &str, context: Option<&Context>) -> [f32; NUM_EMOTIONS] {
        let k = self.heads * NUM_EMOTIONS;
        let ctx = context.map(context_text);
        let (mut ids, mut vals) = row(
            &self.feat,
            self.ctx_feat.as_ref(),
            self.cfg.context_weight,
            text,
            ctx.as_deref(),
        );
        if let Some(s) = &self.scorer {
            let none = Context::default();
            let block = s.features(
                context.unwrap_or(&none),
                self.cfg.context_score_decay,
                self.cfg.context_scores,
            );
            push_scores(&mut ids, &mut vals, self.n_ngram_features(), &block);
        }
        let mut z: Vec<f64> = self.bias.iter().map(|&b| b as f64).collect();
        for (&j, &v) in ids.iter().zip(&vals) {
            let w = &self.weights_t[j as usize * k..(j as usize + 1) * k];
            for (zk, &wk) in z.iter_mut().zip(w) {
                *zk += v as f64 * wk as f64;
            }
        }
        let mut p = [0.0f64; NUM_EMOTIONS];
        for (i, zk) in z.iter().enumerate() {
            p[i % NUM_EMOTIONS] += sigmoid(*zk);
        }
        p.map(|x| (x / self.heads as f64) as f32)
    }

    /// Per-label probabilities for each text (same order), in canonical label order: the mean
    /// of the heads' probabilities. Texts are processed in parallel; the result does not
    /// depend on the thread count.
    /// A model with a context block reads every text here without context (as a sentence
    /// alone).
    pub fn predict_proba(&self, texts: &[&str]) -> Vec<[f32; NUM_EMOTIONS]> {
        texts.par_iter().map(|t| self.proba(t, None)).collect()
    }

    /// [`LinearModel::predict_proba`] with each text's context (`contexts[i]` for `texts[i]`;
    /// ignored by a model without a context block; missing entries read as no context).
    pub fn predict_proba_with_context(
        &self,
        texts: &[&str],
        contexts: &[Option<&Context>],
    ) -> Vec<[f32; NUM_EMOTIONS]> {
        (0..texts.len())
            .into_par_iter()
            .map(|i| self.proba(texts[i], contexts.get(i).copied().flatten()))
            .collect()
    }

    /// Writes the model into directory `dir` (created if missing): `config.json` (format,
    /// config), `vocab.json` (the n-grams in feature order) and `weights.safetensors`
    /// (`weight` [heads, 8, features], `bias` [heads, 8], `idf` [features], all f32).
    ///
    /// Errors: [`Error::Io`] naming the file that could not be written.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let d = self.n_features();
        let k = self.heads * NUM_EMOTIONS;
        let mut weight = vec![0.0f32; k * d];
        for j in 0..d {
            for i in 0..k {
                weight[i * d + j] = self.weights_t[j * k + i];
            }
        }
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        tensors.insert(
            "weight",
            Tensor::from_vec(weight, (self.heads, NUM_EMOTIONS, d), &dev)?,
        );
        tensors.insert(
            "bias",
            Tensor::from_vec(self.bias.clone(), (self.heads, NUM_EMOTIONS), &dev)?,
        );
        let mut idf = self.feat.idf.clone();
        if let Some(c) = &self.ctx_feat {
            idf.extend_from_slice(&c.idf);
        }
        tensors.insert("idf", Tensor::from_vec(idf, self.n_ngram_features(), &dev)?);
        let wpath = dir.join(WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &wpath)
            .map_err(|e| Error::model_file(&wpath, e))?;
        if let Some(s) = &self.scorer {
            s.save(dir)?;
        }
        let cfg = SavedConfig {
            format: FORMAT.into(),
            version: if self.scorer.is_some() {
                FORMAT_VERSION_SCORES
            } else {
                FORMAT_VERSION
            },
            config: self.cfg.clone(),
            word_features: self.feat.word_terms.len(),
            char_features: self.feat.char_terms.len(),
            context_word_features: self.ctx_feat.as_ref().map_or(0, |c| c.word_terms.len()),
            context_char_features: self.ctx_feat.as_ref().map_or(0, |c| c.char_terms.len()),
        };
        write_json(&dir.join(CONFIG_FILE), &cfg)?;
        let vocab = SavedVocab {
            words: self.feat.word_terms.clone(),
            chars: self.feat.char_terms.clone(),
            context_words: self
                .ctx_feat
                .as_ref()
                .map(|c| c.word_terms.clone())
                .unwrap_or_default(),
            context_chars: self
                .ctx_feat
                .as_ref()
                .map(|c| c.char_terms.clone())
                .unwrap_or_default(),
        };
        write_json(&dir.join(VOCAB_FILE), &vocab)
    }

    /// Reads a model written by [`LinearModel::save`]. Predictions equal the saved model's.
    ///
    /// Errors: [`Error::Io`] for a missing or unreadable file, [`Error::ModelFile`] for one that
    /// does not parse, [`Error::Model`] for a file of another format or with inconsistent
    /// shapes.
    pub fn load(dir: &Path) -> Result<LinearModel> {
        let cpath = dir.join(CONFIG_FILE);
        let saved: SavedConfig = read_json(&cpath)?;
        if saved.format != FORMAT
            || !(saved.version == FORMAT_VERSION || saved.version == FORMAT_VERSION_SCORES)
        {
            return Err(Error::Model(format!(
                "{}: format {:?} version {}, expected {FORMAT:?} version {FORMAT_VERSION} or \
                 {FORMAT_VERSION_SCORES} (a model written by a newer emoknow?)",
                cpath.display(),
                saved.format,
                saved.version
            )));
        }
        saved
            .config
            .validate()
            .map_err(|e| Error::model_file(&cpath, e))?;
        let vpath = dir.join(VOCAB_FILE);
        let vocab: SavedVocab = read_json(&vpath)?;
        if vocab.words.len() != saved.word_features
            || vocab.chars.len() != saved.char_features
            || vocab.context_words.len() != saved.context_word_features
            || vocab.context_chars.len() != saved.context_char_features
        {
            return Err(Error::Model(format!(
                "{}: {} + {} + {} + {} n-grams, config.json says {} + {} + {} + {}",
                vpath.display(),
                vocab.words.len(),
                vocab.chars.len(),
                vocab.context_words.len(),
                vocab.context_chars.len(),
                saved.word_features,
                saved.char_features,
                saved.context_word_features,
                saved.context_char_features
            )));
        }
        let n_text = vocab.words.len() + vocab.chars.len();
        let n_ctx = vocab.context_words.len() + vocab.context_chars.len();
        // The context-score block: in models of version 2 with a context block.
        let scorer = if saved.version == FORMAT_VERSION_SCORES {
            if n_ctx == 0 || saved.config.context_scores <= 0.0 {
                return Err(Error::Model(format!(
                    "{}: version {FORMAT_VERSION_SCORES} without a context block or context_scores",
                    cpath.display()
                )));
            }
            Some(Scorer::load(dir)?)
        } else {
            None
        };
        let d = n_text + n_ctx + scorer.as_ref().map_or(0, |_| scores::WIDTH);
        let heads = saved.config.heads.len();
        let k = heads * NUM_EMOTIONS;
        let wpath = dir.join(WEIGHTS_FILE);
        let tensors = load_tensors(&wpath)?;
        let bad = |e: String| Error::Model(format!("{}: {e}", wpath.display()));
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("no tensor {name:?}")))?;
            if t.dims() != shape {
                return Err(bad(format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| bad(format!("tensor {name:?}: {e}")))
        };
        let weight = get("weight", &[heads, NUM_EMOTIONS, d])?;
        let bias = get("bias", &[heads, NUM_EMOTIONS])?;
        let idf = get("idf", &[n_text + n_ctx])?;
        let mut weights_t = vec![0.0f32; d * k];
        for i in 0..k {
            for j in 0..d {
                weights_t[j * k + i] = weight[i * d + j];
            }
        }
        let cfg = saved.config;
        let ctx_cfg = cfg.context_features();
        let featurizer = |cfg: &LinearConfig,
                          words: Vec<String>,
                          chars: Vec<String>,
                          idf: Vec<f32>| Featurizer {
            word_ngrams: cfg.word_ngrams,
            char_min: cfg.char_ngram_min,
            char_max: cfg.char_ngram_max,
            word_index: index_of(&words),
            char_index: index_of(&chars),
            word_terms: words,
            char_terms: chars,
            idf,
        };
        let ctx_idf = idf.get(n_text..).unwrap_or_default().to_vec();
        let text_idf = idf.get(..n_text).unwrap_or_default().to_vec();
        let ctx_feat = (n_ctx > 0)
            .then(|| featurizer(&ctx_cfg, vocab.context_words, vocab.context_chars, ctx_idf));
        let feat = featurizer(&cfg, vocab.words, vocab.chars, text_idf);
        Ok(LinearModel {
            cfg,
            feat,
            ctx_feat,
            heads,
            weights_t,
            bias,
            scorer,
        })
    }
}

/// The text a context block featurizes: both sides of a context.
fn context_text(context: &Context) -> String {
    format!("{} {}", context.before_text(), context.after_text())
}

/// Appends a context-score block to a sparse row, at feature `offset` on.
fn push_scores(ids: &mut Vec<u32>, vals: &mut Vec<f32>, offset: usize, block: &[f32]) {
    for (j, &v) in block.iter().enumerate() {
        if v != 0.0 {
            ids.push((offset + j) as u32);
            vals.push(v);
        }
    }
}

/// The sparse feature row of a text and (with a context block) its context text: text
/// features first, then the context's, offset past them and scaled by `context_weight`.
fn row(
    feat: &Featurizer,
    ctx_feat: Option<&Featurizer>,
    context_weight: f64,
    text: &str,
    context: Option<&str>,
) -> (Vec<u32>, Vec<f32>) {
    let (mut ids, mut vals) = feat.vectorize(text);
    if let (Some(cf), Some(c)) = (ctx_feat, context) {
        let offset = feat.n_features() as u32;
        let (cids, cvals) = cf.vectorize(c);
        ids.extend(cids.into_iter().map(|j| j + offset));
        vals.extend(cvals.into_iter().map(|v| v * context_weight as f32));
    }
    (ids, vals)
}

/// The tensors of a safetensors file of a model. Errors: [`Error::Io`] naming a missing file,
/// [`Error::ModelFile`] for one that does not parse.
fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::model_file(path, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| Error::model_file(path, e))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::model_file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;
    use crate::model::thresholds::{tune, Objective};

    /// A synthetic corpus: each label has two cue words and a cue character; sentences carry
    /// one or two labels plus filler words drawn with a fixed-seed LCG.
    fn refs_of(texts: &[String]) -> Vec<&str> {
        texts.iter().map(String::as_str).collect()
    }

    pub(super) fn synthetic(n: usize, seed: u64) -> (Vec<String>, Vec<LabelSet>) {
        const CUES: [[&str; 2]; NUM_EMOTIONS] = [
            ["喜欢", "可爱"],
            ["开心", "高兴"],
            ["担心", "紧张"],
            ["难过", "伤心"],
            ["希望", "盼望"],
            ["讨厌", "恶心"],
            ["竟然", "居然"],
            ["生气", "愤怒"],
        ];
        const FILLER: [&str; 10] = [
            "我们", "今天", "一个", "时候", "觉得", "他", "她", "那", "去", "说",
        ];
        let mut state = seed;
        let mut next = |m: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % m
        };
        let mut texts = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let mut set = LabelSet::EMPTY;
            let mut words: Vec<&str> = Vec::new();
            let k = 1 + next(2);
            for _ in 0..k {
                let l = next(NUM_EMOTIONS);
                set.insert(Emotion::from_index(l));
                words.push(CUES[l][next(2)]);
            }
            for _ in 0..3 + next(4) {
                let pos = next(words.len() + 1);
                words.insert(pos, FILLER[next(FILLER.len())]);
            }
            texts.push(words.join(" "));
            labels.push(set);
        }
        (texts, labels)
    }

    /// Defaults with `min_df` 1, so the small synthetic corpora keep every word.
    pub(super) fn small_cfg() -> LinearConfig {
        LinearConfig {
            min_df: 1,
            ..LinearConfig::default()
        }
    }

    #[test]
    fn learns_a_synthetic_task() {
        let (texts, labels) = synthetic(400, 1);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut events = Vec::new();
        let model =
            LinearModel::train(&refs, &labels, &small_cfg(), &mut |e| events.push(e)).unwrap();
        let probs = model.predict_proba(&refs);
        let th = tune(&probs, &labels, Objective::Micro);
        let pred = th.apply(&probs);
        let r = metrics::evaluate(&labels, &pred);
        assert!(r.micro_f1 > 0.95, "train micro-F1 {}", r.micro_f1);
        assert!(r.exact_match > 0.9, "train exact {}", r.exact_match);

        // Held-out sentences from the same generator.
        let (test_texts, test_labels) = synthetic(200, 2);
        let test_refs: Vec<&str> = test_texts.iter().map(String::as_str).collect();
        let test_pred = th.apply(&model.predict_proba(&test_refs));
        assert!(metrics::micro_f1(&test_labels, &test_pred) > 0.9);

        assert!(matches!(
            events[0],
            LinearProgress::Features { docs: 400, .. }
        ));
        let done: Vec<usize> = events[1..]
            .iter()
            .map(|e| match e {
                LinearProgress::Label { done, .. } => *done,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(done, (1..=8 * small_cfg().heads.len()).collect::<Vec<_>>());
    }

    #[test]
    fn training_is_deterministic() {
        let (texts, labels) = synthetic(200, 3);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let a = LinearModel::train(&refs, &labels, &small_cfg(), &mut |_| {}).unwrap();
        let b = LinearModel::train(&refs, &labels, &small_cfg(), &mut |_| {}).unwrap();
        assert_eq!(a.predict_proba(&refs), b.predict_proba(&refs));
    }

    #[test]
    fn save_load_predicts_identically() {
        let (texts, labels) = synthetic(300, 4);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let model = LinearModel::train(&refs, &labels, &small_cfg(), &mut |_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linear");
        model.save(&path).unwrap();
        let loaded = LinearModel::load(&path).unwrap();
        assert_eq!(loaded.config(), model.config());
        assert_eq!(loaded.n_features(), model.n_features());
        let unseen = ["完全 没有 见过 的 词", "喜欢 [SEP] 他很开心"];
        for input in [&refs[..], &unseen[..]] {
            assert_eq!(loaded.predict_proba(input), model.predict_proba(input));
        }
    }

    #[test]
    fn context_block_saves_loads_and_changes_predictions() {
        let (texts, labels) = synthetic(200, 6);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        // Each text's context is the text before it.
        let ctx: Vec<Context> = (0..refs.len())
            .map(|i| Context::new(&refs[i.saturating_sub(1)..i], &[]))
            .collect();
        let ctx_refs: Vec<&Context> = ctx.iter().collect();
        let model = LinearModel::train_with_context(
            &refs,
            Some(ContextInput {
                contexts: &ctx_refs,
                sentences: &refs,
            }),
            &labels,
            &small_cfg(),
            &mut |_| {},
        )
        .unwrap();
        assert!(model.reads_context());
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let loaded = LinearModel::load(dir.path()).unwrap();
        let some: Vec<Option<&Context>> = ctx_refs.iter().map(|c| Some(*c)).collect();
        let with = model.predict_proba_with_context(&refs, &some);
        assert_eq!(loaded.predict_proba_with_context(&refs, &some), with);
        assert_ne!(model.predict_proba(&refs), with);
        // A text-only model ignores contexts.
        let plain = LinearModel::train(&refs, &labels, &small_cfg(), &mut |_| {}).unwrap();
        assert!(!plain.reads_context());
        assert_eq!(
            plain.predict_proba_with_context(&refs, &some),
            plain.predict_proba(&refs)
        );
    }

    #[test]
    fn context_scores_add_their_block_save_and_reload_identically() {
        let (texts, labels) = synthetic(200, 8);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ctx: Vec<Context> = (0..refs.len())
            .map(|i| {
                Context::new(
                    &refs[i.saturating_sub(2)..i],
                    &refs[(i + 1).min(200)..(i + 3).min(200)],
                )
            })
            .collect();
        let ctx_refs: Vec<&Context> = ctx.iter().collect();
        // The texts carry knowledge after the sentence, as `--knowledge all` gives them.
        let with_knowledge: Vec<String> = refs.iter().map(|t| format!("{t} [SEP] 甲")).collect();
        let train = |context_scores: f64| {
            let cfg = LinearConfig {
                context_scores,
                ..small_cfg()
            };
            let input = ContextInput {
                contexts: &ctx_refs,
                sentences: &refs,
            };
            let mut events = Vec::new();
            let m = LinearModel::train_with_context(
                &refs_of(&with_knowledge),
                Some(input),
                &labels,
                &cfg,
                &mut |e| events.push(e),
            )
            .unwrap();
            (m, events)
        };
        let (scored, events) = train(0.5);
        // Every training sentence, as a context sentence, finds its held-out score.
        let scorer = scored.scorer.as_ref().unwrap();
        assert!(refs.iter().all(|t| scorer.holds(t)));
        assert!(!scorer.holds(&with_knowledge[0]));
        let (plain, plain_events) = train(0.0);
        assert_eq!(scored.n_features(), plain.n_features() + scores::WIDTH);
        let scorer_events = |ev: &[LinearProgress]| {
            ev.iter()
                .filter(|e| matches!(e, LinearProgress::Scorer { .. }))
                .count()
        };
        assert_eq!(scorer_events(&events), scores::FOLDS + 2);
        assert_eq!(scorer_events(&plain_events), 0);
        let some: Vec<Option<&Context>> = ctx_refs.iter().map(|c| Some(*c)).collect();
        let refs = refs_of(&with_knowledge);
        let with = scored.predict_proba_with_context(&refs, &some);
        assert_ne!(with, plain.predict_proba_with_context(&refs, &some));

        let dir = tempfile::tempdir().unwrap();
        scored.save(dir.path()).unwrap();
        let saved: SavedConfig = read_json(&dir.path().join(CONFIG_FILE)).unwrap();
        assert_eq!(saved.version, FORMAT_VERSION_SCORES);
        let loaded = LinearModel::load(dir.path()).unwrap();
        assert_eq!(loaded.config(), scored.config());
        assert_eq!(loaded.predict_proba_with_context(&refs, &some), with);
        // A sentence alone: both sides of the block are zeros, still the same after reload.
        assert_eq!(
            loaded.predict_proba(&refs[..5]),
            scored.predict_proba(&refs[..5])
        );

        // Without the block the model keeps version 1, which older builds read.
        let plain_dir = tempfile::tempdir().unwrap();
        plain.save(plain_dir.path()).unwrap();
        let saved: SavedConfig = read_json(&plain_dir.path().join(CONFIG_FILE)).unwrap();
        assert_eq!(saved.version, FORMAT_VERSION);

        // A config written before the block existed reads as no block.
        let mut old = serde_json::to_value(plain.config()).unwrap();
        for k in [
            "context_scores",
            "context_score_decay",
            "context_score_head",
        ] {
            old.as_object_mut().unwrap().remove(k);
        }
        let old: LinearConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.context_scores, 0.0);

        // The held-out scores are part of the model: without them it does not load.
        std::fs::remove_file(dir.path().join("held_out_scores.safetensors")).unwrap();
        let err = LinearModel::load(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("held_out_scores.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn load_reports_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = LinearModel::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::Io { ref path, .. } if path.ends_with(CONFIG_FILE)),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let cfg = small_cfg();
        let set = LabelSet::parse_list("Love").unwrap();
        assert!(LinearModel::train(&["a"], &[], &cfg, &mut |_| {}).is_err());
        assert!(LinearModel::train(&[], &[], &cfg, &mut |_| {}).is_err());
        let bad = LinearConfig {
            char_ngram_min: 4,
            char_ngram_max: 2,
            ..cfg.clone()
        };
        assert!(matches!(
            LinearModel::train(&["a b"], &[set], &bad, &mut |_| {}),
            Err(Error::Invalid(_))
        ));
        let strict = LinearConfig { min_df: 5, ..cfg };
        assert!(matches!(
            LinearModel::train(&["a b"], &[set], &strict, &mut |_| {}),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn head_block_weights_and_nb_scale_fold_into_weights() {
        let (texts, labels) = synthetic(200, 5);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let cfg = LinearConfig {
            heads: vec![
                HeadConfig {
                    word_weight: 0.0,
                    nb_scale: true,
                    ..HeadConfig::default()
                },
                HeadConfig {
                    char_weight: 0.0,
                    ..HeadConfig::default()
                },
            ],
            ..small_cfg()
        };
        let model = LinearModel::train(&refs, &labels, &cfg, &mut |_| {}).unwrap();
        let n_word = model.feat.word_terms.len();
        let k = 2 * NUM_EMOTIONS;
        let weight =
            |j: usize, head: usize, l: usize| model.weights_t[j * k + head * NUM_EMOTIONS + l];
        for l in 0..NUM_EMOTIONS {
            // head 0 sees only characters, head 1 only words
            assert!((0..n_word).all(|j| weight(j, 0, l) == 0.0));
            assert!((n_word..model.n_features()).all(|j| weight(j, 1, l) == 0.0));
            assert!((0..n_word).any(|j| weight(j, 1, l) != 0.0));
            assert!((n_word..model.n_features()).any(|j| weight(j, 0, l) != 0.0));
        }
        // Both heads learn the task on their own block.
        let probs = model.predict_proba(&refs);
        let pred = tune(&probs, &labels, Objective::Micro).apply(&probs);
        assert!(metrics::micro_f1(&labels, &pred) > 0.95);
    }
}
