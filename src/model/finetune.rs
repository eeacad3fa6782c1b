//! The `finetune` classifier: our BERT, initialised from an encoder directory, plus dropout and
//! a classification head, trained end to end with BCE and AdamW.
//!
//! Two heads: `shared` (one linear layer to 8 logits, as the seed's bert-base-chinese model)
//! and `per_label` (the seed's "binary tasks": each emotion gets its own dense+tanh layer and a
//! 1-logit output, so the labels share only the encoder). Training uses AdamW with decoupled
//! weight decay (not on biases and LayerNorm), linear warmup then linear decay, global-norm
//! gradient clipping, an optional `pos_weight` per label, and length-bucketed batches (shuffled,
//! then sorted by length inside pools of 50 batches, so padding stays small).
//!
//! Full fine-tuning on a CPU is slow: m3e-small at seq 64, batch 16 trained at 7.6 examples/s on
//! 2 shared cores (11 with `CANDLE_NUM_THREADS=1`, which stops candle's element-wise ops from
//! spin-waiting for a busy second core), i.e. about an hour per epoch of the seed corpus. A
//! CPU-friendly alternative is a head trained on stored embeddings, which is not this module's
//! job. This
//! module owns training, prediction and saving of this model; thresholds and metrics beyond a
//! quick validation micro-F1 belong to the caller.

use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::model::bert::{self, BertModel, Pooling};
use crate::model::encoder::{load_tokenizer, weights_builder, ModelFiles};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

/// The classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// One linear layer from the pooled vector to 8 logits.
    #[default]
    Shared,
    /// Eight binary heads, each dense(hidden→hidden) + tanh + dropout + linear(hidden→1).
    PerLabel,
}

/// Training settings. Every field has a default, so a JSON with only `encoder` is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FinetuneConfig {
    /// The pretrained BERT directory to start from (config.json, weights, tokenizer).
    pub encoder: PathBuf,
    /// Passes over the training set.
    pub epochs: usize,
    /// Peak learning rate (reached after warmup, then decays linearly to 0).
    pub lr: f64,
    /// Examples per step.
    pub batch: usize,
    /// Longest input in tokens (`[CLS]`/`[SEP]` included); longer texts are truncated.
    pub max_len: usize,
    /// Pooling of the last hidden states fed to the head.
    pub pooling: Pooling,
    /// Head kind.
    pub head: HeadKind,
    /// Fraction of all steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay (not applied to biases and LayerNorm).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub max_grad_norm: f64,
    /// Dropout before the head (the encoder uses its config's dropout).
    pub dropout: f64,
    /// Weight of positive targets per label in the BCE (as PyTorch's `pos_weight`), canonical
    /// label order; `None` = 1 for all.
    pub pos_weight: Option<[f32; NUM_EMOTIONS]>,
    /// Seed of shuffling, dropout and head initialisation.
    pub seed: u64,
    /// Also evaluate on the validation set every this many steps (0 = only after each epoch).
    pub eval_every_steps: usize,
    /// Keep the weights of the epoch/evaluation with the best validation micro-F1 (when a
    /// validation set is given).
    pub keep_best: bool,
    /// Do not train the word-embedding matrix (fewer updates per step: faster on CPU).
    pub freeze_embeddings: bool,
}

impl Default for FinetuneConfig {
    /// 3 epochs, lr 5e-5, batch 16, 128 tokens, mean pooling, shared head, 10 % warmup,
    /// weight decay 0.01, clip 1.0, dropout 0.1, seed 42, keep best.
    fn default() -> Self {
        FinetuneConfig {
            encoder: PathBuf::new(),
            epochs: 3,
            lr: 5e-5,
            batch: 16,
            max_len: 128,
            pooling: Pooling::Mean,
            head: HeadKind::Shared,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            dropout: 0.1,
            pos_weight: None,
            seed: 42,
            eval_every_steps: 0,
            keep_best: true,
            freeze_embeddings: false,
        }
    }
}

/// What [`train`] reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum FinetuneEvent {
    /// After every optimizer step.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step over the whole run.
        step: usize,
        /// Steps in the whole run.
        total_steps: usize,
        /// This batch's mean BCE.
        loss: f32,
        /// Learning rate used for this step.
        lr: f64,
    },
    /// After a validation pass (end of epoch, or every `eval_every_steps`).
    Eval {
        /// 1-based epoch.
        epoch: usize,
        /// Step count at evaluation.
        step: usize,
        /// Validation mean BCE.
        val_loss: f32,
        /// Validation micro-F1 at threshold 0.5 (at least one label per sentence).
        val_micro_f1: f32,
        /// Whether this is the best so far (its weights are kept when `keep_best`).
        best: bool,
    },
    /// After every epoch.
    Epoch {
        /// 1-based epoch.
        epoch: usize,
        /// Mean training loss over the epoch.
        train_loss: f32,
        /// Seconds the epoch took (evaluation included).
        secs: f64,
        /// Training examples per second in this epoch.
        examples_per_sec: f64,
    },
}

/// Saved alongside the weights (`finetune.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedMeta {
    finetune: FinetuneConfig,
    /// File name of the tokenizer copied into the model directory.
    tokenizer_file: String,
    best_val_micro_f1: Option<f32>,
}

const WEIGHTS_FILE: &str = "model.safetensors";

/// A lower bound on the f32 bytes of a BERT of `cfg` (embeddings, attention and feed-forward
/// matrices; biases, norms and the head left out).
fn min_param_bytes(cfg: &bert::Config) -> u128 {
    let u = |v: usize| v as u128;
    let h = u(cfg.hidden_size);
    let emb = u(cfg.vocab_size)
        .saturating_add(u(cfg.max_position_embeddings))
        .saturating_add(u(cfg.type_vocab_size))
        .saturating_mul(h);
    let layer = h
        .saturating_mul(h)
        .saturating_mul(4)
        .saturating_add(h.saturating_mul(u(cfg.intermediate_size)).saturating_mul(2));
    emb.saturating_add(u(cfg.num_hidden_layers).saturating_mul(layer))
        .saturating_mul(4)
}

const META_FILE: &str = "finetune.json";

enum Head {
    Shared(Linear),
    PerLabel(Vec<(Linear, Linear)>),
}

impl Head {
    fn load(kind: HeadKind, hidden: usize, vb: VarBuilder) -> candle_core::Result<Head> {
        let lin = |i: usize, o: usize, vb: VarBuilder| {
            let w = vb.get_with_hints(
                (o, i),
                "weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?;
            let b = vb.get_with_hints(o, "bias", candle_nn::Init::Const(0.0))?;
            Ok::<_, candle_core::Error>(Linear::new(w, Some(b)))
        };
        Ok(match kind {
            HeadKind::Shared => Head::Shared(lin(hidden, NUM_EMOTIONS, vb.pp("out"))?),
            HeadKind::PerLabel => Head::PerLabel(
                (0..NUM_EMOTIONS)
                    .map(|i| {
                        let vb = vb.pp(i.to_string());
                        Ok((
                            lin(hidden, hidden, vb.pp("dense"))?,
                            lin(hidden, 1, vb.pp("out"))?,
                        ))
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?,
            ),
        })
    }

    /// (batch, hidden) -> (batch, 8) logits. `drop` applies dropout to a tensor.
    fn forward(
        &self,
        x: &Tensor,
        drop: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        match self {
            Head::Shared(out) => out.forward(&drop(x)?),
            Head::PerLabel(heads) => {
                let x = drop(x)?;
                let cols = heads
                    .iter()
                    .map(|(dense, out)| out.forward(&drop(&dense.forward(&x)?.tanh()?)?))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&cols, 1)
            }
        }
    }
}

/// A fine-tuned BERT classifier.
pub struct FinetuneModel {
    bert: BertModel,
    head: Head,
    varmap: VarMap,
    tokenizer: Tokenizer,
    tokenizer_file: PathBuf,
    cfg: FinetuneConfig,
    best_val_micro_f1: Option<f32>,
}

impl FinetuneModel {
    /// Builds the network on a fresh `VarMap` (random init; names without prefix, head under
    /// `head.`).
    fn build(
        bert_cfg: &bert::Config,
        cfg: &FinetuneConfig,
    ) -> crate::Result<(VarMap, BertModel, Head)> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let bert = BertModel::load(vb.clone(), bert_cfg)?;
        let head = Head::load(cfg.head, bert_cfg.hidden_size, vb.pp("head"))?;
        Ok((varmap, bert, head))
    }

    /// Probabilities of the 8 emotions (canonical order) for each text, in input order.
    ///
    /// Runs at inference (no dropout, fused ops), in length-sorted batches of 64.
    pub fn predict_proba(&self, texts: &[&str]) -> crate::Result<Vec<[f32; NUM_EMOTIONS]>> {
        let ids = tokenize(&self.tokenizer, texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![[0f32; NUM_EMOTIONS]; ids.len()];
        for chunk in order.chunks(64) {
            let batch = Batch::new(&ids, chunk, self.pad_id())?;
            let logits = self.logits(&batch, false)?;
            let probs = candle_nn::ops::sigmoid(&logits)?.to_vec2::<f32>()?;
            for (&i, p) in chunk.iter().zip(probs) {
                out[i].copy_from_slice(&p);
            }
        }
        Ok(out)
    }

    /// Its tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The configuration it was trained with.
    pub fn config(&self) -> &FinetuneConfig {
        &self.cfg
    }

    /// Best validation micro-F1 seen during training, if there was a validation set.
    pub fn best_val_micro_f1(&self) -> Option<f32> {
        self.best_val_micro_f1
    }

    /// Writes `model.safetensors` (encoder + head), `config.json` (the encoder's, so the
    /// directory also loads as an [`crate::model::encoder::Encoder`]), `finetune.json` and the
    /// tokenizer file into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> crate::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        let wpath = dir.join(WEIGHTS_FILE);
        self.varmap
            .save(&wpath)
            .map_err(|e| crate::Error::Model(format!("{}: {e}", wpath.display())))?;
        let cpath = dir.join("config.json");
        let cjson = serde_json::to_string_pretty(self.bert.config())
            .map_err(|e| crate::Error::Model(format!("{}: {e}", cpath.display())))?;
        std::fs::write(&cpath, cjson).map_err(|e| crate::Error::io(&cpath, e))?;
        let tname = self
            .tokenizer_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tokenizer.json".into());
        let tdest = dir.join(&tname);
        if tdest != self.tokenizer_file {
            std::fs::copy(&self.tokenizer_file, &tdest).map_err(|e| crate::Error::io(&tdest, e))?;
        }
        let meta = SavedMeta {
            finetune: self.cfg.clone(),
            tokenizer_file: tname,
            best_val_micro_f1: self.best_val_micro_f1,
        };
        let mpath = dir.join(META_FILE);
        std::fs::write(
            &mpath,
            serde_json::to_string_pretty(&meta)
                .map_err(|e| crate::Error::Model(format!("{}: {e}", mpath.display())))?,
        )
        .map_err(|e| crate::Error::io(&mpath, e))?;
        Ok(())
    }

    /// Loads a directory written by [`FinetuneModel::save`]. Errors: [`crate::Error::Io`],
    /// [`crate::Error::Input`] for a missing or bad file, [`crate::Error::Model`] for weights
    /// that do not match.
    pub fn load(dir: &Path) -> crate::Result<FinetuneModel> {
        let mpath = dir.join(META_FILE);
        let text = std::fs::read_to_string(&mpath).map_err(|e| crate::Error::io(&mpath, e))?;
        let meta: SavedMeta = serde_json::from_str(&text)
            .map_err(|e| crate::Error::input(&mpath, e.line(), e.to_string()))?;
        let cpath = dir.join("config.json");
        let bert_cfg = bert::Config::from_file(&cpath)?;
        let wpath = dir.join(WEIGHTS_FILE);
        // The network is allocated before the weights are read into it: refuse a config
        // describing more parameters than the weight file can hold.
        let wlen = std::fs::metadata(&wpath)
            .map_err(|e| crate::Error::io(&wpath, e))?
            .len();
        let need = min_param_bytes(&bert_cfg);
        if need > wlen as u128 {
            return Err(crate::Error::Model(format!(
                "{}: describes a network of at least {need} bytes of weights, but {} has {wlen} bytes: they do not belong together; retrain the model",
                cpath.display(),
                wpath.display()
            )));
        }
        let (mut varmap, bert, head) = FinetuneModel::build(&bert_cfg, &meta.finetune)?;
        varmap
            .load(&wpath)
            .map_err(|e| crate::Error::Model(format!("{}: {e}", wpath.display())))?;
        let tokenizer_file = dir.join(&meta.tokenizer_file);
        let tokenizer = load_tokenizer(&tokenizer_file, meta.finetune.max_len)?;
        Ok(FinetuneModel {
            bert,
            head,
            varmap,
            tokenizer,
            tokenizer_file,
            cfg: meta.finetune,
            best_val_micro_f1: meta.best_val_micro_f1,
        })
    }

    fn pad_id(&self) -> u32 {
        self.tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(self.bert.config().pad_token_id as u32)
    }

    fn logits(&self, b: &Batch, train: bool) -> crate::Result<Tensor> {
        let hidden = self.bert.forward_t(&b.ids, &b.types, &b.mask, train)?;
        let pooled = bert::pool(&hidden, &b.mask, self.cfg.pooling)?;
        let p = self.cfg.dropout;
        let drop = |t: &Tensor| -> candle_core::Result<Tensor> {
            if train && p > 0.0 {
                self.bert_dropout(t, p)
            } else {
                Ok(t.clone())
            }
        };
        Ok(self.head.forward(&pooled, &drop)?)
    }

    fn bert_dropout(&self, t: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        self.bert.dropout(t, p)
    }
}

/// One padded batch.
struct Batch {
    ids: Tensor,
    types: Tensor,
    mask: Tensor,
}

impl Batch {
    fn new(ids: &[Vec<u32>], chunk: &[usize], pad: u32) -> crate::Result<Batch> {
        let width = chunk
            .iter()
            .map(|&i| ids[i].len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut id_buf = Vec::with_capacity(chunk.len() * width);
        let mut mask_buf = Vec::with_capacity(chunk.len() * width);
        for &i in chunk {
            let row = &ids[i];
            id_buf.extend_from_slice(row);
            id_buf.resize(id_buf.len() + width - row.len(), pad);
            mask_buf.resize(mask_buf.len() + row.len(), 1u32);
            mask_buf.resize(mask_buf.len() + width - row.len(), 0);
        }
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(id_buf, (chunk.len(), width), &dev)?;
        let mask = Tensor::from_vec(mask_buf, (chunk.len(), width), &dev)?;
        let types = ids.zeros_like()?;
        Ok(Batch { ids, types, mask })
    }
}

fn tokenize(tok: &Tokenizer, texts: &[&str]) -> crate::Result<Vec<Vec<u32>>> {
    let enc = tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| crate::Error::Model(format!("tokenizer: {e}")))?;
    Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
}

/// Mean binary cross-entropy with logits in the stable form
/// `(1 − t)·x + w·(log(1 + e^−|x|) + max(−x, 0))`, `w = 1 + (pos_weight − 1)·t`
/// (PyTorch's `BCEWithLogitsLoss`; with `pos_weight = 1` it is `max(x,0) − x·t + log(1+e^−|x|)`).
/// `logits`, `targets`: (batch, labels); `pos_weight`: (labels) or `None`.
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&Tensor>,
) -> crate::Result<Tensor> {
    let softplus_neg = {
        // log(1 + e^-|x|) + max(-x, 0)
        let e = logits.abs()?.neg()?.exp()?;
        ((e + 1.0)?.log()? + logits.neg()?.relu()?)?
    };
    let one_minus_t = targets.affine(-1.0, 1.0)?;
    let weighted = match pos_weight {
        None => softplus_neg,
        Some(pw) => {
            let w = targets.broadcast_mul(&(pw - 1.0)?)?.affine(1.0, 1.0)?;
            (softplus_neg * w)?
        }
    };
    Ok(((one_minus_t * logits)? + weighted)?.mean_all()?)
}

/// Micro-F1 of `probs` against `gold` at `threshold`; a sentence with no label over the
/// threshold gets its most probable one (every sentence has at least one emotion).
pub fn micro_f1(probs: &[[f32; NUM_EMOTIONS]], gold: &[LabelSet], threshold: f32) -> f32 {
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (p, g) in probs.iter().zip(gold) {
        let pred = decide(p, threshold);
        for e in crate::labels::Emotion::ALL {
            match (pred.contains(e), g.contains(e)) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                _ => {}
            }
        }
    }
    if tp == 0 {
        return 0.0;
    }
    2.0 * tp as f32 / (2 * tp + fp + fn_) as f32
}

/// Labels over `threshold`, or the single most probable one when none is.
pub fn decide(p: &[f32; NUM_EMOTIONS], threshold: f32) -> LabelSet {
    let mut s: LabelSet = crate::labels::Emotion::ALL
        .into_iter()
        .filter(|e| p[e.index()] >= threshold)
        .collect();
    if s.is_empty() {
        let best = (0..NUM_EMOTIONS)
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .unwrap_or(0);
        s.insert(crate::labels::Emotion::from_index(best));
    }
    s
}

/// AdamW with decoupled weight decay, bias correction and per-variable decay flags.
///
/// The update of each variable is one parallel pass over plain slices (moments live in
/// `Vec<f32>`): as candle tensor ops it took a dozen full-size temporaries per variable per
/// step, which on 24M parameters cost more than a small batch's forward pass.
struct AdamW {
    vars: Vec<Slot>,
    t: i32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

struct Slot {
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
    decay: bool,
}

/// Contiguous f32 CPU values of `t` (copied).
fn values(t: &Tensor) -> crate::Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

impl AdamW {
    fn new(named: Vec<(String, Var)>, weight_decay: f64) -> crate::Result<AdamW> {
        let vars = named
            .into_iter()
            .map(|(name, var)| {
                let decay = !(name.ends_with(".bias") || name.contains("LayerNorm"));
                let n = var.elem_count();
                Slot {
                    var,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                    decay,
                }
            })
            .collect();
        Ok(AdamW {
            vars,
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: weight_decay as f32,
        })
    }

    /// Global L2 norm of the gradients of our variables.
    fn grad_norm(&self, grads: &candle_core::backprop::GradStore) -> crate::Result<f64> {
        let mut sq = 0f64;
        for slot in &self.vars {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                let g = values(g)?;
                sq += g
                    .par_chunks(1 << 16)
                    .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                    .sum::<f64>();
            }
        }
        Ok(sq.sqrt())
    }

    fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> crate::Result<()> {
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bc1 = 1.0 - b1.powi(self.t);
        let bc2 = 1.0 - b2.powi(self.t);
        let lr = lr as f32;
        let scale = grad_scale as f32;
        for slot in self.vars.iter_mut() {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let g = values(g)?;
            let mut theta = values(slot.var.as_tensor())?;
            let shrink = if slot.decay {
                1.0 - lr * self.weight_decay
            } else {
                1.0
            };
            const C: usize = 1 << 14;
            theta
                .par_chunks_mut(C)
                .zip(slot.m.par_chunks_mut(C))
                .zip(slot.v.par_chunks_mut(C))
                .zip(g.par_chunks(C))
                .for_each(|(((th, m), v), g)| {
                    for (((th, m), v), &g) in th.iter_mut().zip(m).zip(v).zip(g) {
                        let g = g * scale;
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        let update = (*m / bc1) / ((*v / bc2).sqrt() + eps);
                        *th = *th * shrink - lr * update;
                    }
                });
            let t = Tensor::from_vec(theta, slot.var.shape(), slot.var.device())?;
            slot.var.set(&t)?;
        }
        Ok(())
    }
}

/// Learning rate at 0-based `step` of `total`: linear warmup over `warmup` steps, then linear
/// decay to 0.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if warmup > 0 && step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else {
        let rest = total.saturating_sub(warmup).max(1);
        peak * (total.saturating_sub(step) as f64 / rest as f64).clamp(0.0, 1.0)
    }
}

/// Length-bucketed batches: shuffle, sort by length inside pools of 50 batches, cut into
/// batches, shuffle the batches.
fn bucketed_batches(lens: &[usize], batch: usize, rng: &mut rand::rngs::StdRng) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lens.len()).collect();
    idx.shuffle(rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for pool in idx.chunks(batch * 50) {
        let mut pool = pool.to_vec();
        pool.sort_by_key(|&i| lens[i]);
        batches.extend(pool.chunks(batch).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

fn targets(labels: &[LabelSet], chunk: &[usize]) -> crate::Result<Tensor> {
    let t: Vec<f32> = chunk
        .iter()
        .flat_map(|&i| labels[i].to_bools().map(|b| if b { 1.0 } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(
        t,
        (chunk.len(), NUM_EMOTIONS),
        &Device::Cpu,
    )?)
}

/// Fine-tunes `cfg.encoder` on `texts`/`labels`, evaluating on `val_texts`/`val_labels`
/// (may be empty) after each epoch.
///
/// Errors: [`crate::Error::Invalid`] for mismatched lengths, an empty training set or bad
/// settings; loading errors as [`crate::model::encoder::Encoder::load`]; [`crate::Error::Model`]
/// if the loss becomes NaN. Cost: the full encoder runs forward and backward for every example
/// (see the module docs for measured examples/s).
pub fn train(
    texts: &[&str],
    labels: &[LabelSet],
    val_texts: &[&str],
    val_labels: &[LabelSet],
    cfg: &FinetuneConfig,
    progress: &mut dyn FnMut(FinetuneEvent),
) -> crate::Result<FinetuneModel> {
    if texts.len() != labels.len() || val_texts.len() != val_labels.len() {
        return Err(crate::Error::Invalid(
            "texts and labels differ in length".into(),
        ));
    }
    if texts.is_empty() {
        return Err(crate::Error::Invalid("no training examples".into()));
    }
    if cfg.batch == 0 || cfg.epochs == 0 || !(cfg.lr > 0.0) || !(0.0..1.0).contains(&cfg.dropout) {
        return Err(crate::Error::Invalid(
            "batch, epochs and lr must be positive and dropout in [0, 1)".into(),
        ));
    }
    let files = ModelFiles::find(&cfg.encoder)?;
    let bert_cfg = bert::Config::from_file(&files.config)?;
    let mut cfg = cfg.clone();
    cfg.max_len = cfg.max_len.clamp(2, bert_cfg.max_position_embeddings);
    let tokenizer = load_tokenizer(&files.tokenizer, cfg.max_len)?;
    let dev = Device::Cpu;

    // Fresh variables, then the pretrained values copied in one by one (the head stays random).
    let (mut varmap, bert, head) = FinetuneModel::build(&bert_cfg, &cfg)?;
    let src = weights_builder(&files, &dev)?;
    let prefix = bert::detect_prefix(&src, &bert_cfg);
    let names = bert::var_shapes(&varmap);
    for (name, shape) in &names {
        if name.starts_with("head.") {
            continue;
        }
        let t = src
            .get(shape.as_slice(), &format!("{prefix}{name}"))
            .or_else(|_| {
                // gamma/beta naming of old checkpoints
                let alt = name
                    .replace("LayerNorm.weight", "LayerNorm.gamma")
                    .replace("LayerNorm.bias", "LayerNorm.beta");
                src.get(shape.as_slice(), &format!("{prefix}{alt}"))
            })
            .map_err(|e| crate::Error::Model(format!("{}: {e}", files.weights.display())))?;
        varmap.set_one(name, t)?;
    }
    drop(src);

    // Seeded head init as PyTorch's nn.Linear default, U(±1/sqrt(fan_in)) for weights and
    // biases (VarMap's own init uses candle's unseeded CPU generator).
    {
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let hidden = bert_cfg.hidden_size;
        for (name, shape) in names.iter().filter(|(n, _)| n.starts_with("head.")) {
            let n: usize = shape.iter().product();
            let fan_in = if shape.len() == 2 { shape[1] } else { hidden };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let vals: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            varmap.set_one(name, Tensor::from_vec(vals, shape.as_slice(), &dev)?)?;
        }
    }
    bert.set_dropout_seed(cfg.seed);

    let mut model = FinetuneModel {
        bert,
        head,
        varmap,
        tokenizer,
        tokenizer_file: files.tokenizer.clone(),
        cfg: cfg.clone(),
        best_val_micro_f1: None,
    };

    let named: Vec<(String, Var)> = {
        let data = model
            .varmap
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| !(cfg.freeze_embeddings && k.contains("word_embeddings")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut opt = AdamW::new(named, cfg.weight_decay)?;

    let ids = tokenize(&model.tokenizer, texts)?;
    let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    let val_ids = tokenize(&model.tokenizer, val_texts)?;
    let pos_weight = match cfg.pos_weight {
        Some(w) => Some(Tensor::new(&w, &dev)?),
        None => None,
    };
    let pad = model.pad_id();
    let steps_per_epoch = texts.len().div_ceil(cfg.batch);
    let total_steps = steps_per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_ratio * total_steps as f64).round() as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut best: Option<(f32, Vec<Tensor>)> = None;
    let mut step = 0usize;

    let evaluate = |model: &mut FinetuneModel,
                    epoch: usize,
                    step: usize,
                    best: &mut Option<(f32, Vec<Tensor>)>,
                    progress: &mut dyn FnMut(FinetuneEvent)|
     -> crate::Result<()> {
        if val_ids.is_empty() {
            return Ok(());
        }
        let (loss, probs) = eval_loss(model, &val_ids, val_labels, pos_weight.as_ref(), pad)?;
        let f1 = micro_f1(&probs, val_labels, 0.5);
        let is_best = best.as_ref().is_none_or(|(b, _)| f1 > *b);
        if is_best {
            let snapshot = if cfg.keep_best {
                model
                    .varmap
                    .all_vars()
                    .iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            *best = Some((f1, snapshot));
            model.best_val_micro_f1 = Some(f1);
        }
        progress(FinetuneEvent::Eval {
            epoch,
            step,
            val_loss: loss,
            val_micro_f1: f1,
            best: is_best,
        });
        Ok(())
    };

    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let mut sum = 0f64;
        let batches = bucketed_batches(&lens, cfg.batch, &mut rng);
        for chunk in &batches {
            let batch = Batch::new(&ids, chunk, pad)?;
            let logits = model.logits(&batch, true)?;
            let loss = bce_with_logits(&logits, &targets(labels, chunk)?, pos_weight.as_ref())?;
            let loss_val = loss.to_scalar::<f32>()?;
            if !loss_val.is_finite() {
                return Err(crate::Error::Model(format!(
                    "loss became {loss_val} at step {} (lower the learning rate)",
                    step + 1
                )));
            }
            let grads = loss.backward()?;
            let scale = if cfg.max_grad_norm > 0.0 {
                let norm = opt.grad_norm(&grads)?;
                if norm > cfg.max_grad_norm {
                    cfg.max_grad_norm / (norm + 1e-6)
                } else {
                    1.0
                }
            } else {
                1.0
            };
            let lr = lr_at(step, total_steps, warmup, cfg.lr);
            opt.step(&grads, lr, scale)?;
            step += 1;
            sum += loss_val as f64;
            progress(FinetuneEvent::Step {
                epoch,
                step,
                total_steps,
                loss: loss_val,
                lr,
            });
            if cfg.eval_every_steps > 0 && step.is_multiple_of(cfg.eval_every_steps) {
                evaluate(&mut model, epoch, step, &mut best, progress)?;
            }
        }
        if cfg.eval_every_steps == 0 || !step.is_multiple_of(cfg.eval_every_steps) {
            evaluate(&mut model, epoch, step, &mut best, progress)?;
        }
        let secs = t0.elapsed().as_secs_f64();
        progress(FinetuneEvent::Epoch {
            epoch,
            train_loss: (sum / batches.len().max(1) as f64) as f32,
            secs,
            examples_per_sec: texts.len() as f64 / secs.max(1e-9),
        });
    }
    if let Some((_, snapshot)) = best {
        if cfg.keep_best && !snapshot.is_empty() {
            for (var, saved) in model.varmap.all_vars().iter().zip(&snapshot) {
                var.set(saved)?;
            }
        }
    }
    Ok(model)
}

/// Validation loss and probabilities, at inference settings.
fn eval_loss(
    model: &FinetuneModel,
    ids: &[Vec<u32>],
    labels: &[LabelSet],
    pos_weight: Option<&Tensor>,
    pad: u32,
) -> crate::Result<(f32, Vec<[f32; NUM_EMOTIONS]>)> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut probs = vec![[0f32; NUM_EMOTIONS]; ids.len()];
    let mut loss_sum = 0f64;
    for chunk in order.chunks(64) {
        let batch = Batch::new(ids, chunk, pad)?;
        let logits = model.logits(&batch, false)?;
        let loss = bce_with_logits(&logits, &targets(labels, chunk)?, pos_weight)?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        for (&i, p) in chunk
            .iter()
            .zip(candle_nn::ops::sigmoid(&logits)?.to_vec2::<f32>()?)
        {
            probs[i].copy_from_slice(&p);
        }
    }
    Ok(((loss_sum / ids.len().max(1) as f64) as f32, probs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::tiny::{write_random_checkpoint, TinyBertSpec};

    fn data() -> (Vec<&'static str>, Vec<LabelSet>) {
        let rows = [
            ("我 很 焦虑 担心 明天 的 考试", "Anxiety"),
            ("心里 七上八下 的 很 担忧", "Anxiety"),
            ("他 愤怒 地 拍 着 桌子", "Anger"),
            ("气 死 我 了 真 可恶", "Anger,Hate"),
            ("今天 真 高兴 我们 去 公园 玩", "Joy"),
            ("收到 礼物 她 开心 地 笑 了", "Joy,Love"),
            ("我 爱 我的 家人", "Love"),
            ("奶奶 去世 了 我 很 悲伤", "Sorrow"),
        ];
        (
            rows.iter().map(|r| r.0).collect(),
            rows.iter().map(|r| r.1.parse().unwrap()).collect(),
        )
    }

    fn tiny_encoder() -> tempfile::TempDir {
        let (texts, _) = data();
        let d = tempfile::tempdir().unwrap();
        let spec = TinyBertSpec {
            texts: texts.iter().map(|s| s.to_string()).collect(),
            ..TinyBertSpec::default()
        };
        write_random_checkpoint(d.path(), &spec, 11).unwrap();
        d
    }

    #[test]
    fn stable_bce_matches_hand_values_and_survives_large_logits() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0f32, 2.0, -3.0, 100.0]], &dev).unwrap();
        let t = Tensor::new(&[[1f32, 0.0, 1.0, 0.0]], &dev).unwrap();
        // By hand: ln2, 2+ln(1+e^-2), 3+ln(1+e^-3), 100 (+ln(1+e^-100))
        let want = ((2f64).ln()
            + 2.0
            + (1.0 + (-2f64).exp()).ln()
            + 3.0
            + (1.0 + (-3f64).exp()).ln()
            + 100.0)
            / 4.0;
        let got = bce_with_logits(&x, &t, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!((got * 1e4).round(), (want as f32 * 1e4).round());
        // pos_weight 2 doubles the positive terms only.
        let pw = Tensor::new(&[2f32, 2.0, 2.0, 2.0], &dev).unwrap();
        let want_pw = want + ((2f64).ln() + 3.0 + (1.0 + (-3f64).exp()).ln()) / 4.0;
        let got_pw = bce_with_logits(&x, &t, Some(&pw))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!((got_pw * 1e4).round(), (want_pw as f32 * 1e4).round());
    }

    #[test]
    fn micro_f1_and_at_least_one_label() {
        let p = [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.2, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let gold: Vec<LabelSet> = vec!["Love,Joy".parse().unwrap(), "Joy".parse().unwrap()];
        assert_eq!(decide(&p[1], 0.5).to_string(), "Joy");
        // tp = 2 (Love, Joy), fn = 1 (Joy of row 0), fp = 0 -> 4/5
        assert_eq!(micro_f1(&p, &gold, 0.5), 0.8);
    }

    #[test]
    fn adamw_matches_candle_nn() {
        use candle_nn::Optimizer;
        let dev = Device::Cpu;
        let init = [1f32, -2.0, 3.0, 0.5];
        let ours = Var::new(&init, &dev).unwrap();
        let theirs = Var::new(&init, &dev).unwrap();
        let mut a = AdamW::new(vec![("w".into(), ours.clone())], 0.01).unwrap();
        let mut b = candle_nn::AdamW::new(
            vec![theirs.clone()],
            candle_nn::ParamsAdamW {
                lr: 0.1,
                weight_decay: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..3 {
            let ga = ours
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            a.step(&ga, 0.1, 1.0).unwrap();
            let gb = theirs
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            b.step(&gb).unwrap();
        }
        let va = ours.as_tensor().to_vec1::<f32>().unwrap();
        let vb = theirs.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            crate::model::bert::tests::max_abs_diff(&va, &vb) < 1e-5,
            "{va:?} {vb:?}"
        );
        assert!(va[0] < 1.0 && va[1] > -2.0, "moved towards 0: {va:?}");
    }

    #[test]
    fn lr_schedule_warms_up_then_decays() {
        assert_eq!(lr_at(0, 10, 2, 1.0), 0.5);
        assert_eq!(lr_at(1, 10, 2, 1.0), 1.0);
        assert_eq!(lr_at(2, 10, 2, 1.0), 1.0);
        assert_eq!(lr_at(6, 10, 2, 1.0), 0.5);
        assert_eq!(lr_at(10, 10, 2, 1.0), 0.0);
    }

    #[test]
    fn bucketed_batches_cover_every_example_once() {
        let lens: Vec<usize> = (0..103).map(|i| i % 17).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let b = bucketed_batches(&lens, 10, &mut rng);
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert!(b.iter().all(|c| c.len() <= 10));
    }

    #[test]
    fn training_lowers_loss_and_reload_predicts_identically() {
        let enc = tiny_encoder();
        let (texts, labels) = data();
        for head in [HeadKind::Shared, HeadKind::PerLabel] {
            let cfg = FinetuneConfig {
                encoder: enc.path().to_path_buf(),
                epochs: 40,
                lr: 3e-3,
                batch: 4,
                head,
                warmup_ratio: 0.0,
                keep_best: false,
                ..FinetuneConfig::default()
            };
            let mut losses = vec![];
            let mut evals = 0;
            let model = train(&texts, &labels, &texts, &labels, &cfg, &mut |e| match e {
                FinetuneEvent::Epoch { train_loss, .. } => losses.push(train_loss),
                FinetuneEvent::Eval { .. } => evals += 1,
                _ => {}
            })
            .unwrap();
            assert_eq!(evals, 40);
            assert!(
                losses.last().unwrap() < &(losses[0] * 0.7),
                "{head:?}: loss did not fall: {losses:?}"
            );
            let p = model.predict_proba(&texts).unwrap();
            assert!(micro_f1(&p, &labels, 0.5) > 0.5, "{head:?}: {p:?}");
            let dir = tempfile::tempdir().unwrap();
            model.save(dir.path()).unwrap();
            let back = FinetuneModel::load(dir.path()).unwrap();
            assert_eq!(back.config(), model.config());
            // Same stored f32 weights, same computation: bit-identical.
            assert_eq!(back.predict_proba(&texts).unwrap(), p);
            // The saved directory also works as an embedding encoder.
            let e = crate::model::encoder::Encoder::load(
                dir.path(),
                crate::model::encoder::EncoderOptions::default(),
            )
            .unwrap();
            assert_eq!(e.encode(&texts[..2], &mut |_| {}).unwrap().len(), 2);
        }
    }

    #[test]
    fn lower_layers_are_trained() {
        let enc = tiny_encoder();
        let (texts, labels) = data();
        let cfg = FinetuneConfig {
            encoder: enc.path().to_path_buf(),
            epochs: 1,
            lr: 1e-3,
            batch: 8,
            warmup_ratio: 0.0,
            ..FinetuneConfig::default()
        };
        let model = train(&texts, &labels, &[], &[], &cfg, &mut |_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let name = "encoder.layer.0.attention.self.query.weight";
        let load = |p: &Path| {
            candle_core::safetensors::load(p, &Device::Cpu).unwrap()[name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let before = load(&enc.path().join("model.safetensors"));
        let after = load(&dir.path().join(WEIGHTS_FILE));
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| (*a - *b).abs() > 1e-5)
            .count();
        assert!(
            moved > before.len() / 2,
            "only {moved} of {} moved",
            before.len()
        );
    }

    #[test]
    fn rejects_bad_input() {
        let enc = tiny_encoder();
        let cfg = FinetuneConfig {
            encoder: enc.path().to_path_buf(),
            ..FinetuneConfig::default()
        };
        let err = train(&["a"], &[], &[], &[], &cfg, &mut |_| {})
            .err()
            .unwrap();
        assert!(matches!(err, crate::Error::Invalid(_)));
        let err = train(&[], &[], &[], &[], &cfg, &mut |_| {}).err().unwrap();
        assert!(matches!(err, crate::Error::Invalid(_)));
    }

    #[test]
    fn a_config_larger_than_its_weights_is_refused_before_allocating() {
        let enc = tiny_encoder();
        let (texts, labels) = data();
        let cfg = FinetuneConfig {
            encoder: enc.path().to_path_buf(),
            epochs: 1,
            batch: 8,
            ..FinetuneConfig::default()
        };
        let model = train(&texts, &labels, &[], &[], &cfg, &mut |_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let cpath = dir.path().join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
        // 640 MB of embeddings for a file of a few hundred KB.
        c["vocab_size"] = 5_000_000.into();
        std::fs::write(&cpath, c.to_string()).unwrap();
        let err = FinetuneModel::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("do not belong together"), "{err}");
    }
}
