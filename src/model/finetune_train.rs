//! Fine-tuning a [`FinetuneModel`]: the training loop, end to end with a stable BCE
//! ([`crate::model::mlp::bce_with_logits`]) and AdamW.
//!
//! This file owns training: [`train`], the events it reports ([`FinetuneEvent`]), the optimizer,
//! the learning-rate schedule ([`lr_at`]), batching and validation. The network, its settings
//! and saving/loading are `finetune.rs`, which re-exports this file's public items (use them as
//! `model::finetune::train` and so on).
//!
//! AdamW with decoupled weight decay (not on biases and LayerNorm), linear warmup then linear
//! decay, global-norm gradient clipping, an optional `pos_weight` per label, and length-bucketed
//! batches (shuffled, then sorted by length inside pools of 50 batches, so padding stays small).
//! Validation micro-F1 is [`crate::metrics::micro_f1`] of the label sets that
//! [`Thresholds::default`] gives (0.5 per label, at least one label per sentence).

use crate::encoder::embed::token_ids;
use crate::encoder::train_kernels::with_values;
use crate::labels::{LabelSet, NUM_EMOTIONS};
use crate::metrics;
use crate::model::finetune::{Batch, FinetuneConfig, FinetuneModel};
use crate::model::mlp::{balanced_pos_weight, bce_with_logits};
use crate::model::thresholds::Thresholds;
use candle_core::{CpuStorage, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::time::Instant;

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
        /// Seconds of those spent training (forward, backward, optimizer; no evaluation).
        train_secs: f64,
        /// Training examples per second of training time.
        examples_per_sec: f64,
    },
}

/// Fine-tunes `cfg.encoder` on `texts`/`labels`, evaluating on `val_texts`/`val_labels`
/// (may be empty) after each epoch.
///
/// Errors: [`crate::Error::Invalid`] for mismatched lengths, an empty training set or bad
/// settings; loading errors as [`crate::encoder::embed::Encoder::load`]; [`crate::Error::Model`]
/// if the loss becomes NaN. Cost: the full encoder runs forward and backward for every example
/// (docs/benchmarks.md gives measured examples/s).
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
    let lr_positive = cfg.lr > 0.0; // false for NaN too
    if cfg.batch == 0 || cfg.epochs == 0 || !lr_positive || !(0.0..1.0).contains(&cfg.dropout) {
        return Err(crate::Error::Invalid(
            "batch, epochs and lr must be positive and dropout in [0, 1)".into(),
        ));
    }
    crate::model::keep_large_buffers();
    let mut model = FinetuneModel::from_pretrained(cfg)?;
    let cfg = model.cfg.clone();
    let dev = Device::Cpu;

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
    // The word-embedding table's gradient comes as rows (BertModel::sparse_word_grads).
    let sparse = (!cfg.freeze_embeddings).then(|| model.sparse_word_grads());
    let mut opt = AdamW::new(named, cfg.weight_decay, sparse)?;

    let ids = token_ids(&model.tokenizer, texts)?;
    let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    let val_ids = token_ids(&model.tokenizer, val_texts)?;
    let pos_weight = match cfg.pos_weight {
        Some(w) => Some(w),
        None => cfg.pos_weight_auto.then(|| balanced_pos_weight(labels)),
    }
    .map(|w| Tensor::new(&w, &dev))
    .transpose()?;
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
        let f1 = val_micro_f1(&probs, val_labels);
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
        let mut eval_secs = 0f64;
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
            if let Some(rows) = model.take_word_grads(&grads)? {
                opt.add_rows(&rows)?;
            }
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
                let t = Instant::now();
                evaluate(&mut model, epoch, step, &mut best, progress)?;
                eval_secs += t.elapsed().as_secs_f64();
            }
        }
        if cfg.eval_every_steps == 0 || !step.is_multiple_of(cfg.eval_every_steps) {
            let t = Instant::now();
            evaluate(&mut model, epoch, step, &mut best, progress)?;
            eval_secs += t.elapsed().as_secs_f64();
        }
        let secs = t0.elapsed().as_secs_f64();
        let train_secs = (secs - eval_secs).max(0.0);
        progress(FinetuneEvent::Epoch {
            epoch,
            train_loss: (sum / batches.len().max(1) as f64) as f32,
            secs,
            train_secs,
            examples_per_sec: texts.len() as f64 / train_secs.max(1e-9),
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

/// Micro-F1 of `probs` against `gold` with [`Thresholds::default`] (0.5, at least one label).
fn val_micro_f1(probs: &[[f32; NUM_EMOTIONS]], gold: &[LabelSet]) -> f32 {
    metrics::micro_f1(gold, &Thresholds::default().apply(probs)) as f32
}

/// AdamW with decoupled weight decay over the model's variables.
///
/// The update of each variable is one parallel pass over its values, moments (plain
/// `Vec<f32>`) and gradient, in the variable's own storage ([`Update`]): as candle tensor ops it
/// took a dozen full-size temporaries per variable per step, which on 24M parameters cost more
/// than a small batch's forward pass.
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
    /// For the word-embedding table when its gradient comes as rows
    /// ([`BertModel::take_word_grads`](crate::encoder::bert::BertModel::take_word_grads)).
    rows: Option<DenseRows>,
}

/// A dense gradient kept between steps for a variable whose gradient arrives as rows: rows are
/// added in, used, and only the touched ones zeroed again.
struct DenseRows {
    grad: Vec<f32>,
    width: usize,
    touched: Vec<u32>,
}

impl DenseRows {
    /// Adds `rows` into the gradient.
    fn add(&mut self, rows: &crate::encoder::bert::SparseRows) -> crate::Result<()> {
        let w = self.width;
        if rows.grad.len() != rows.ids.len() * w {
            return Err(crate::Error::Model(format!(
                "AdamW: {} gradient values for {} rows of {w}",
                rows.grad.len(),
                rows.ids.len()
            )));
        }
        for (&id, g) in rows.ids.iter().zip(rows.grad.chunks(w)) {
            let Some(dst) = self.grad.get_mut(id as usize * w..(id as usize + 1) * w) else {
                return Err(crate::Error::Model(format!(
                    "AdamW: token id {id} out of range"
                )));
            };
            dst.iter_mut().zip(g).for_each(|(d, g)| *d += g);
            self.touched.push(id);
        }
        Ok(())
    }

    /// Sum of squares of the gradient (only touched rows can be non-zero).
    fn sum_sq(&self) -> f64 {
        let mut ids = self.touched.clone();
        ids.sort_unstable();
        ids.dedup();
        let w = self.width;
        ids.iter()
            .map(|&id| sum_sq(&self.grad[id as usize * w..(id as usize + 1) * w]))
            .sum()
    }

    /// Zeroes the touched rows: the gradient is all zeros again.
    fn clear(&mut self) {
        let w = self.width;
        for id in self.touched.drain(..) {
            self.grad[id as usize * w..(id as usize + 1) * w].fill(0.0);
        }
    }
}

fn sum_sq(g: &[f32]) -> f64 {
    g.par_chunks(1 << 16)
        .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
        .sum()
}

impl AdamW {
    /// `sparse`: the variable (by tensor id) whose gradient will come as rows.
    fn new(
        named: Vec<(String, Var)>,
        weight_decay: f64,
        sparse: Option<candle_core::TensorId>,
    ) -> crate::Result<AdamW> {
        let vars = named
            .into_iter()
            .map(|(name, var)| {
                let decay = !(name.ends_with(".bias") || name.contains("LayerNorm"));
                let n = var.elem_count();
                let rows = (Some(var.as_tensor().id()) == sparse).then(|| DenseRows {
                    grad: vec![0.0; n],
                    width: var.dims().last().copied().unwrap_or(1).max(1),
                    touched: Vec::new(),
                });
                Slot {
                    var,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                    decay,
                    rows,
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

    /// Adds the rows of this step's sparse gradient into the slot that takes them.
    fn add_rows(&mut self, rows: &crate::encoder::bert::SparseRows) -> crate::Result<()> {
        match self.vars.iter_mut().find_map(|s| s.rows.as_mut()) {
            Some(dense) => dense.add(rows),
            None => Ok(()),
        }
    }

    /// Global L2 norm of the gradients of our variables.
    fn grad_norm(&self, grads: &candle_core::backprop::GradStore) -> crate::Result<f64> {
        let mut sq = 0f64;
        for slot in &self.vars {
            if let Some(dense) = &slot.rows {
                sq += dense.sum_sq();
            } else if let Some(g) = grads.get(slot.var.as_tensor()) {
                sq += with_values(g, |g| Ok(sum_sq(g)))?;
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
        let lr = lr as f32;
        let (b1, b2, eps, wd, t) = (self.beta1, self.beta2, self.eps, self.weight_decay, self.t);
        for slot in self.vars.iter_mut() {
            let Slot {
                var,
                m,
                v,
                decay,
                rows,
            } = slot;
            let settings = Settings {
                b1,
                b2,
                bc1: 1.0 - b1.powi(t),
                bc2: 1.0 - b2.powi(t),
                eps,
                lr,
                scale: grad_scale as f32,
                shrink: if *decay { 1.0 - lr * wd } else { 1.0 },
            };
            let var: &Var = var;
            let mut update = |g: &[f32]| update_var(var, m, v, g, settings);
            match rows {
                Some(dense) => {
                    update(&dense.grad)?;
                    dense.clear();
                }
                None => {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        with_values(g, update)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One AdamW update of `var` with gradient `g`: in place in its storage on the CPU ([`Update`]),
/// through a copy of its values elsewhere.
fn update_var(
    var: &Var,
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    settings: Settings,
) -> candle_core::Result<()> {
    if var.device().is_cpu() {
        let update = Update {
            g,
            moments: std::sync::Mutex::new((m, v)),
            settings,
        };
        var.as_tensor().inplace_op1(&update)
    } else {
        let mut theta = with_values(var.as_tensor(), |t| Ok(t.to_vec()))?;
        adamw_pass(&mut theta, m, v, g, settings);
        var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)
    }
}

/// One AdamW update, in parallel chunks: `theta ← theta·shrink − lr·m̂/(√v̂ + eps)`.
fn adamw_pass(theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: Settings) {
    let Settings {
        b1,
        b2,
        bc1,
        bc2,
        eps,
        lr,
        scale,
        shrink,
    } = s;
    const C: usize = 1 << 14;
    theta
        .par_chunks_mut(C)
        .zip(m.par_chunks_mut(C))
        .zip(v.par_chunks_mut(C))
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
}

/// One step's AdamW constants for a variable.
#[derive(Clone, Copy)]
struct Settings {
    b1: f32,
    b2: f32,
    bc1: f32,
    bc2: f32,
    eps: f32,
    lr: f32,
    scale: f32,
    shrink: f32,
}

/// One AdamW update of a variable with gradient `g`, written into the variable's own storage:
/// one parallel pass over its values, moments and gradient (copying them out and back cost as
/// much again).
struct Update<'a> {
    g: &'a [f32],
    moments: std::sync::Mutex<(&'a mut [f32], &'a mut [f32])>,
    settings: Settings,
}

impl candle_core::InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "emoknow-adamw"
    }

    fn cpu_fwd(&self, theta: &mut CpuStorage, tl: &candle_core::Layout) -> candle_core::Result<()> {
        let mut moments = self
            .moments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (m, v) = &mut *moments;
        let g = self.g;
        let theta = match (theta, tl.contiguous_offsets()) {
            (CpuStorage::F32(t), Some((a, b))) if b - a == m.len() && g.len() == m.len() => {
                &mut t[a..b]
            }
            _ => candle_core::bail!(
                "AdamW: variable and gradient must be contiguous f32 of one size"
            ),
        };
        adamw_pass(theta, m, v, g, self.settings);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::finetune::tests::{data, tiny_encoder};
    use crate::model::finetune::WEIGHTS_FILE;
    use std::path::Path;

    #[test]
    fn validation_micro_f1_and_at_least_one_label() {
        let p = [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.2, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let gold: Vec<LabelSet> = vec!["Love,Joy".parse().unwrap(), "Joy".parse().unwrap()];
        assert_eq!(Thresholds::default().apply_one(&p[1]).to_string(), "Joy");
        // tp = 2 (Love, Joy), fn = 1 (Joy of row 0), fp = 0 -> 4/5
        assert_eq!(val_micro_f1(&p, &gold), 0.8);
    }

    #[test]
    fn adamw_matches_candle_nn() {
        use candle_nn::Optimizer;
        let dev = Device::Cpu;
        let init = [1f32, -2.0, 3.0, 0.5];
        let ours = Var::new(&init, &dev).unwrap();
        let theirs = Var::new(&init, &dev).unwrap();
        let mut a = AdamW::new(vec![("w".into(), ours.clone())], 0.01, None).unwrap();
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
            crate::encoder::bert::tests::max_abs_diff(&va, &vb) < 1e-5,
            "{va:?} {vb:?}"
        );
        assert!(va[0] < 1.0 && va[1] > -2.0, "moved towards 0: {va:?}");
    }

    #[test]
    fn adamw_with_gradient_rows_matches_the_dense_gradient() {
        let dev = Device::Cpu;
        let init = Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap();
        let dense = Var::from_tensor(&init).unwrap();
        let rows = Var::from_tensor(&init).unwrap();
        let mut a = AdamW::new(vec![("t".into(), dense.clone())], 0.01, None).unwrap();
        let id = rows.as_tensor().id();
        let mut b = AdamW::new(vec![("t".into(), rows.clone())], 0.01, Some(id)).unwrap();
        // Ids 1 and 3 (1 twice) in step one, 0 in step two: untouched rows still decay and
        // move with their moments.
        for ids in [vec![1u32, 3, 1], vec![0]] {
            let r = Tensor::randn(0f32, 1.0, (ids.len(), 3), &dev).unwrap();
            let idx = Tensor::new(ids.as_slice(), &dev).unwrap();
            let loss = (dense.as_tensor().index_select(&idx, 0).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap();
            let ga = loss.backward().unwrap();
            let gb = Tensor::new(0f32, &dev).unwrap().backward().unwrap();
            b.add_rows(&crate::encoder::bert::SparseRows {
                ids: ids.clone(),
                grad: r.flatten_all().unwrap().to_vec1().unwrap(),
            })
            .unwrap();
            let (na, nb) = (a.grad_norm(&ga).unwrap(), b.grad_norm(&gb).unwrap());
            assert!((na - nb).abs() < 1e-5, "{na} {nb}");
            a.step(&ga, 0.1, 0.5).unwrap();
            b.step(&gb, 0.1, 0.5).unwrap();
        }
        let flat = |v: &Var| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let d = crate::encoder::bert::tests::max_abs_diff(&flat(&dense), &flat(&rows));
        assert!(d < 1e-6, "{d}");
        assert!(
            crate::encoder::bert::tests::max_abs_diff(
                &flat(&dense),
                &init.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            ) > 1e-3
        );
        assert!(
            b.vars[0]
                .rows
                .as_ref()
                .unwrap()
                .grad
                .iter()
                .all(|&x| x == 0.0),
            "rows zeroed after the step"
        );
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

    /// `pos_weight_auto` trains with the training labels' balanced weights: the same steps as
    /// passing those weights, and not the unweighted ones.
    #[test]
    fn pos_weight_auto_is_the_balanced_weights() {
        let enc = tiny_encoder();
        let (texts, labels) = data();
        let balanced = balanced_pos_weight(&labels);
        // Love 2 of 8 → 6/2, Sorrow 1 of 8 → 7/1, Surprise none → counted as one, 7/1.
        assert_eq!(balanced, [3.0, 3.0, 3.0, 7.0, 7.0, 7.0, 7.0, 3.0]);
        let losses = |pos_weight, pos_weight_auto| {
            let cfg = FinetuneConfig {
                encoder: enc.path().to_path_buf(),
                epochs: 1,
                lr: 1e-3,
                batch: 4,
                warmup_ratio: 0.0,
                pos_weight,
                pos_weight_auto,
                ..FinetuneConfig::default()
            };
            let mut out = Vec::new();
            train(&texts, &labels, &[], &[], &cfg, &mut |e| {
                if let FinetuneEvent::Step { loss, .. } = e {
                    out.push(loss);
                }
            })
            .unwrap();
            out
        };
        let auto = losses(None, true);
        let given = losses(Some(balanced), false);
        let plain = losses(None, false);
        assert_eq!(auto.len(), 2);
        for (a, g) in auto.iter().zip(&given) {
            assert!((a - g).abs() < 1e-5, "{auto:?} vs {given:?}");
        }
        // Weights above 1 on the positive terms raise the first step's loss.
        assert!(auto[0] > plain[0] + 0.1, "{auto:?} vs {plain:?}");
        // Explicit weights win over the flag.
        let ones = losses(Some([1.0; NUM_EMOTIONS]), true);
        assert!((ones[0] - plain[0]).abs() < 1e-5, "{ones:?} vs {plain:?}");
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
}
