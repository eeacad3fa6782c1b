//! A small MLP head over fixed feature vectors (stored embeddings, optionally with other
//! models' scores), trained in candle with AdamW and a numerically stable BCE.
//!
//! Randomness (initialisation, dropout masks, shuffling) comes from one seeded `StdRng`:
//! candle's CPU generator cannot be seeded, and a trained head must be reproducible.

use crate::error::{Error, Result};
use crate::labels::{LabelSet, NUM_EMOTIONS};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Training settings of the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MlpConfig {
    /// Hidden units (0 = a linear model: logistic regression on the features).
    pub hidden: usize,
    /// Dropout on the input and hidden layer during training.
    pub dropout: f32,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Maximum epochs.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    /// Weight positives by negatives/positives per label (clamped to 10).
    pub pos_weight: bool,
    /// Seed of initialisation, dropout and shuffling.
    pub seed: u64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: 512,
            dropout: 0.3,
            lr: 1e-3,
            weight_decay: 1e-4,
            epochs: 40,
            batch: 128,
            patience: 5,
            pos_weight: false,
            seed: 42,
        }
    }
}

/// One epoch's numbers, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f32,
    /// Validation loss.
    pub val_loss: f32,
}

/// Feature rows: `n × dim`, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Features<'a> {
    /// Values.
    pub data: &'a [f32],
    /// Columns.
    pub dim: usize,
}

impl Features<'_> {
    fn rows(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
}

/// A trained head.
pub struct Mlp {
    params: HashMap<String, Tensor>,
    in_dim: usize,
    hidden: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// Per-label weights of positive targets that balance them against negatives: negatives /
/// positives among `labels`, clamped to 1..=10 (a label with no positive counts one), in
/// canonical label order. `--pos-weight auto` for the MLP head and the fine-tune.
pub fn balanced_pos_weight(labels: &[LabelSet]) -> [f32; NUM_EMOTIONS] {
    let n = labels.len() as f32;
    let mut w = [1f32; NUM_EMOTIONS];
    for (i, wi) in w.iter_mut().enumerate() {
        let pos = labels.iter().filter(|l| l.0 & (1 << i) != 0).count().max(1) as f32;
        *wi = ((n - pos) / pos).clamp(1.0, 10.0);
    }
    w
}

/// Stable BCE with logits, averaged: pw·t·softplus(−x) + (1−t)·softplus(x), where
/// softplus(x) = max(x,0) + ln(1+e^−|x|): PyTorch's `BCEWithLogitsLoss` with `pos_weight`
/// (tested against its form). (candle's `binary_cross_entropy_with_logit` takes the log of a
/// sigmoid and overflows.) `logits`, `targets`: (batch, labels); `pos_weight`: (labels) or
/// `None`. The loss of this head and of [`crate::model::finetune::train`].
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let softplus = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
    };
    let pos = (targets * softplus(&logits.neg()?)?)?;
    let pos = match pos_weight {
        Some(w) => pos.broadcast_mul(w)?,
        None => pos,
    };
    let neg = ((targets.neg()? + 1.0)? * softplus(logits)?)?;
    (pos + neg)?.mean_all()
}

fn targets(labels: &[LabelSet]) -> Vec<f32> {
    labels
        .iter()
        .flat_map(|l| l.to_bools().map(|b| b as u8 as f32))
        .collect()
}

fn uniform(rng: &mut StdRng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

fn dropout_mask(rng: &mut StdRng, shape: (usize, usize), p: f32) -> candle_core::Result<Tensor> {
    let keep = 1.0 / (1.0 - p);
    let m: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    Tensor::from_vec(m, shape, &Device::Cpu)
}

struct Net<'a> {
    w1: &'a Tensor,
    b1: &'a Tensor,
    w2: Option<(&'a Tensor, &'a Tensor)>,
}

impl Net<'_> {
    fn forward(
        &self,
        x: &Tensor,
        dropout: Option<(&mut StdRng, f32)>,
    ) -> candle_core::Result<Tensor> {
        let (n, d) = x.dims2()?;
        let mut rng = dropout;
        let x = match rng.as_mut() {
            Some((r, p)) if *p > 0.0 => (x * dropout_mask(r, (n, d), *p)?)?,
            _ => x.clone(),
        };
        let h = x.matmul(&self.w1.t()?)?.broadcast_add(self.b1)?;
        match self.w2 {
            None => Ok(h),
            Some((w2, b2)) => {
                let h = h.gelu_erf()?;
                let h = match rng.as_mut() {
                    Some((r, p)) if *p > 0.0 => {
                        let (n, m) = h.dims2()?;
                        (h * dropout_mask(r, (n, m), *p)?)?
                    }
                    _ => h,
                };
                h.matmul(&w2.t()?)?.broadcast_add(b2)
            }
        }
    }
}

impl Mlp {
    fn net(&self) -> Net<'_> {
        Net {
            w1: &self.params["w1"],
            b1: &self.params["b1"],
            w2: if self.hidden > 0 {
                Some((&self.params["w2"], &self.params["b2"]))
            } else {
                None
            },
        }
    }

    /// Trains on `x`/`y`, keeping the weights of the epoch with the lowest validation loss.
    pub fn train(
        x: Features,
        y: &[LabelSet],
        val_x: Features,
        val_y: &[LabelSet],
        cfg: &MlpConfig,
        progress: &mut dyn FnMut(EpochReport),
    ) -> Result<Mlp> {
        let n = x.rows();
        if n == 0 || n != y.len() || val_x.rows() != val_y.len() || x.dim != val_x.dim {
            return Err(Error::Invalid(format!(
                "MLP training data: {n} rows for {} labels, validation {} rows for {} labels",
                y.len(),
                val_x.rows(),
                val_y.len()
            )));
        }
        let d = x.dim;
        // Standardize features with training statistics (stored with the model).
        let mut mean = vec![0f32; d];
        let mut var = vec![0f32; d];
        for r in x.data.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n as f32;
            }
        }
        for r in x.data.chunks_exact(d) {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += (v - m) * (v - m) / n as f32;
            }
        }
        let std: Vec<f32> = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let out1 = if cfg.hidden > 0 {
            cfg.hidden
        } else {
            NUM_EMOTIONS
        };
        let b = 1.0 / (d as f32).sqrt();
        let w1 = Var::from_vec(uniform(&mut rng, out1 * d, b), (out1, d), &dev)?;
        let b1 = Var::from_vec(vec![0f32; out1], out1, &dev)?;
        let mut vars = vec![w1.clone(), b1.clone()];
        let second = if cfg.hidden > 0 {
            let b = 1.0 / (cfg.hidden as f32).sqrt();
            let w2 = Var::from_vec(
                uniform(&mut rng, NUM_EMOTIONS * cfg.hidden, b),
                (NUM_EMOTIONS, cfg.hidden),
                &dev,
            )?;
            let b2 = Var::from_vec(vec![0f32; NUM_EMOTIONS], NUM_EMOTIONS, &dev)?;
            vars.push(w2.clone());
            vars.push(b2.clone());
            Some((w2, b2))
        } else {
            None
        };
        let standardize = |data: &[f32]| -> Vec<f32> {
            data.chunks_exact(d)
                .flat_map(|r| r.iter().zip(&mean).zip(&std).map(|((v, m), s)| (v - m) / s))
                .collect()
        };
        let xs = Tensor::from_vec(standardize(x.data), (n, d), &dev)?;
        let ys = Tensor::from_vec(targets(y), (n, NUM_EMOTIONS), &dev)?;
        let vx = Tensor::from_vec(standardize(val_x.data), (val_x.rows(), d), &dev)?;
        let vy = Tensor::from_vec(targets(val_y), (val_y.len(), NUM_EMOTIONS), &dev)?;
        let pw = if cfg.pos_weight {
            Some(Tensor::new(&balanced_pos_weight(y), &dev)?)
        } else {
            None
        };
        let mut opt = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?;
        let snapshot = |vars: &[Var]| -> Result<HashMap<String, Tensor>> {
            let names = ["w1", "b1", "w2", "b2"];
            vars.iter()
                .zip(names)
                .map(|(v, n)| Ok((n.to_string(), v.as_tensor().copy()?)))
                .collect::<Result<_>>()
        };
        let mut best = (f32::INFINITY, snapshot(&vars)?);
        let mut stale = 0;
        let mut order: Vec<u32> = (0..n as u32).collect();
        for epoch in 1..=cfg.epochs {
            order.shuffle(&mut rng);
            let mut total = 0f32;
            let mut batches = 0;
            for chunk in order.chunks(cfg.batch.max(1)) {
                let idx = Tensor::from_slice(chunk, chunk.len(), &dev)?;
                let bx = xs.index_select(&idx, 0)?;
                let by = ys.index_select(&idx, 0)?;
                let net = Net {
                    w1: w1.as_tensor(),
                    b1: b1.as_tensor(),
                    w2: second.as_ref().map(|(a, b)| (a.as_tensor(), b.as_tensor())),
                };
                let logits = net.forward(&bx, Some((&mut rng, cfg.dropout)))?;
                let loss = bce_with_logits(&logits, &by, pw.as_ref())?;
                opt.backward_step(&loss)?;
                total += loss.to_scalar::<f32>()?;
                batches += 1;
            }
            let net = Net {
                w1: w1.as_tensor(),
                b1: b1.as_tensor(),
                w2: second.as_ref().map(|(a, b)| (a.as_tensor(), b.as_tensor())),
            };
            let val_loss =
                bce_with_logits(&net.forward(&vx, None)?, &vy, pw.as_ref())?.to_scalar::<f32>()?;
            progress(EpochReport {
                epoch,
                train_loss: total / batches.max(1) as f32,
                val_loss,
            });
            if val_loss < best.0 - 1e-5 {
                best = (val_loss, snapshot(&vars)?);
                stale = 0;
            } else {
                stale += 1;
                if stale >= cfg.patience {
                    break;
                }
            }
        }
        Ok(Mlp {
            params: best.1,
            in_dim: d,
            hidden: cfg.hidden,
            mean,
            std,
        })
    }

    /// Input dimension.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Sigmoid probabilities per row.
    pub fn predict_proba(&self, x: Features) -> Result<Vec<[f32; NUM_EMOTIONS]>> {
        if x.dim != self.in_dim {
            return Err(Error::Invalid(format!(
                "features have dimension {}, the head expects {}",
                x.dim, self.in_dim
            )));
        }
        let n = x.rows();
        let mut out = Vec::with_capacity(n);
        for chunk in x.data.chunks(4096 * x.dim) {
            let rows = chunk.len() / x.dim;
            let std: Vec<f32> = chunk
                .chunks_exact(x.dim)
                .flat_map(|r| {
                    r.iter()
                        .zip(&self.mean)
                        .zip(&self.std)
                        .map(|((v, m), s)| (v - m) / s)
                })
                .collect();
            let t = Tensor::from_vec(std, (rows, x.dim), &Device::Cpu)?;
            let p = candle_nn::ops::sigmoid(&self.net().forward(&t, None)?)?;
            for row in p.to_vec2::<f32>()? {
                out.push(row.try_into().map_err(|r: Vec<f32>| {
                    crate::Error::Model(format!("the head gives {} outputs, not 8", r.len()))
                })?);
            }
        }
        Ok(out)
    }

    /// Saves weights and normalisation to `dir/<name>.safetensors`.
    pub fn save(&self, dir: &Path, name: &str) -> Result<()> {
        let mut t = self.params.clone();
        t.insert(
            "mean".into(),
            Tensor::from_slice(&self.mean, self.in_dim, &Device::Cpu)?,
        );
        t.insert(
            "std".into(),
            Tensor::from_slice(&self.std, self.in_dim, &Device::Cpu)?,
        );
        let path = dir.join(format!("{name}.safetensors"));
        candle_core::safetensors::save(&t, &path).map_err(|e| Error::model_file(&path, e))
    }

    /// Loads what [`Mlp::save`] wrote. Errors: [`Error::ModelFile`] for a file that does not
    /// parse, [`Error::Model`] naming the file when a tensor is missing or its shape does not
    /// fit the others (so prediction cannot fail later).
    pub fn load(dir: &Path, name: &str) -> Result<Mlp> {
        let path = dir.join(format!("{name}.safetensors"));
        let bad = |msg: String| Error::Model(format!("{}: {msg}", path.display()));
        let t = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| Error::model_file(&path, e))?;
        let get = |k: &str| -> Result<Tensor> {
            t.get(k)
                .ok_or_else(|| bad(format!("no tensor {k}")))?
                .to_dtype(DType::F32)
                .map_err(|e| bad(format!("tensor {k}: {e}")))
        };
        let w1 = get("w1")?;
        let (out1, in_dim) = w1.dims2().map_err(|_| {
            bad(format!(
                "w1 has shape {:?}, expected 2 dimensions",
                w1.dims()
            ))
        })?;
        if out1 == 0 || in_dim == 0 {
            return Err(bad(format!("w1 has shape {:?}", w1.dims())));
        }
        let shape = |k: &str, t: &Tensor, want: &[usize]| -> Result<()> {
            if t.dims() == want {
                Ok(())
            } else {
                Err(bad(format!(
                    "tensor {k} has shape {:?}, expected {want:?}",
                    t.dims()
                )))
            }
        };
        let mean_t = get("mean")?;
        let std_t = get("std")?;
        shape("mean", &mean_t, &[in_dim])?;
        shape("std", &std_t, &[in_dim])?;
        let b1 = get("b1")?;
        shape("b1", &b1, &[out1])?;
        let mut params = HashMap::new();
        params.insert("w1".to_string(), w1);
        params.insert("b1".to_string(), b1);
        let hidden = if t.contains_key("w2") {
            let w2 = get("w2")?;
            let b2 = get("b2")?;
            shape("w2", &w2, &[NUM_EMOTIONS, out1])?;
            shape("b2", &b2, &[NUM_EMOTIONS])?;
            params.insert("w2".to_string(), w2);
            params.insert("b2".to_string(), b2);
            out1
        } else {
            if out1 != NUM_EMOTIONS {
                return Err(bad(format!(
                    "w1 has {out1} outputs and there is no w2: expected {NUM_EMOTIONS}"
                )));
            }
            0
        };
        let mean: Vec<f32> = mean_t.to_vec1()?;
        let std: Vec<f32> = std_t.to_vec1()?;
        Ok(Mlp {
            params,
            in_dim,
            hidden,
            mean,
            std,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_pos_weight_is_negatives_over_positives_clamped() {
        let labels: Vec<LabelSet> = ["Love", "Love,Joy", "Joy", "Sorrow"]
            .iter()
            .chain(std::iter::repeat_n(&"Love", 36))
            .map(|s| s.parse().unwrap())
            .collect();
        let w = balanced_pos_weight(&labels);
        // Love 38 of 40: below 1, clamped up; Joy 2 → 38/2 = 19, clamped to 10; Sorrow 1 → 39,
        // clamped; Anger none: counted as one, clamped.
        assert_eq!(w, [1.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0]);
        let few: Vec<LabelSet> = ["Love", "Joy", "Joy", "Love,Joy"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // Love 2 of 4 → 1, Joy 3 of 4 → 1/3 → 1, the rest none → 3/1.
        assert_eq!(
            balanced_pos_weight(&few),
            [1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
        );
    }

    /// Two informative features: label 0 iff f0 > 0, label 1 iff f1 > 0.
    fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<LabelSet>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..n {
            let a: f32 = rng.random_range(-1.0..1.0);
            let b: f32 = rng.random_range(-1.0..1.0);
            let noise: f32 = rng.random_range(-1.0..1.0);
            x.extend([a, b, noise]);
            let mut l = LabelSet::EMPTY;
            if a > 0.0 {
                l.0 |= 1;
            }
            if b > 0.0 {
                l.0 |= 2;
            }
            y.push(l);
        }
        (x, y)
    }

    #[test]
    fn bce_matches_the_formula_and_is_stable() {
        let x = Tensor::new(&[[0.0f32, 100.0, -100.0]], &Device::Cpu).unwrap();
        let t = Tensor::new(&[[1.0f32, 1.0, 0.0]], &Device::Cpu).unwrap();
        let l = bce_with_logits(&x, &t, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // (ln 2 + 0 + 0) / 3
        assert!((l - std::f32::consts::LN_2 / 3.0).abs() < 1e-6, "{l}");
    }

    #[test]
    fn bce_matches_hand_values_and_survives_large_logits() {
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

    /// PyTorch's `BCEWithLogitsLoss` as fine-tuning used to write it:
    /// `(1 − t)·x + w·(log(1 + e^−|x|) + max(−x, 0))`, `w = 1 + (pos_weight − 1)·t`.
    fn bce_pytorch_form(
        logits: &Tensor,
        targets: &Tensor,
        pos_weight: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let e = logits.abs()?.neg()?.exp()?;
        let softplus_neg = ((e + 1.0)?.log()? + logits.neg()?.relu()?)?;
        let one_minus_t = targets.affine(-1.0, 1.0)?;
        let weighted = match pos_weight {
            None => softplus_neg,
            Some(pw) => {
                let w = targets.broadcast_mul(&(pw - 1.0)?)?.affine(1.0, 1.0)?;
                (softplus_neg * w)?
            }
        };
        ((one_minus_t * logits)? + weighted)?.mean_all()
    }

    type BceFn = dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> candle_core::Result<Tensor>;

    /// The two stable forms are the same function (softplus(x) = x + softplus(−x)): loss and
    /// gradient agree to 1e-6 over logits from −60 to 60, hard and soft targets, with and
    /// without `pos_weight` (gradients away from a logit of exactly 0).
    #[test]
    fn bce_equals_the_pytorch_form_in_value_and_gradient() {
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(5);
        let (n, k) = (64, NUM_EMOTIONS);
        let mut xs: Vec<f32> = (0..n * k).map(|_| rng.random_range(-8.0..8.0)).collect();
        for (i, v) in [-60.0f32, -20.0, -1e-3, 0.0, 1e-3, 20.0, 60.0]
            .into_iter()
            .enumerate()
        {
            xs[i * 3] = v;
        }
        let ts: Vec<f32> = (0..n * k)
            .map(|i| match i % 5 {
                0 | 1 => 1.0,
                2 | 3 => 0.0,
                _ => rng.random_range(0.0..1.0),
            })
            .collect();
        let t = Tensor::from_vec(ts, (n, k), &dev).unwrap();
        let pw = Tensor::new(&[1.0f32, 0.3, 2.0, 4.5, 10.0, 1.0, 0.7, 3.0], &dev).unwrap();
        for w in [None, Some(&pw)] {
            let run = |f: &BceFn| {
                let x = Var::from_vec(xs.clone(), (n, k), &dev).unwrap();
                let loss = f(x.as_tensor(), &t, w).unwrap();
                let g = loss.backward().unwrap();
                let grad = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
                (
                    loss.to_scalar::<f32>().unwrap(),
                    grad.to_vec1::<f32>().unwrap(),
                )
            };
            let (l_ours, g_ours) = run(&bce_with_logits);
            let (l_ref, g_ref) = run(&bce_pytorch_form);
            assert!(
                (l_ours - l_ref).abs() <= 1e-6 * l_ref.abs().max(1.0),
                "{l_ours} vs {l_ref}"
            );
            // At a logit of exactly 0 autograd takes a subgradient of |x| and max(x, 0), and
            // the two forms use them differently; a trained logit is never exactly 0.
            let worst = g_ours
                .iter()
                .zip(&g_ref)
                .zip(&xs)
                .filter(|(_, &x)| x != 0.0)
                .map(|((a, b), _)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-6, "gradients differ by {worst}");
        }
    }

    #[test]
    fn learns_a_separable_problem_reproducibly_and_reloads_identically() {
        let (x, y) = data(600, 1);
        let (vx, vy) = data(200, 2);
        let cfg = MlpConfig {
            hidden: 16,
            epochs: 30,
            batch: 32,
            lr: 1e-2,
            dropout: 0.1,
            ..Default::default()
        };
        fn f(d: &[f32]) -> Features<'_> {
            Features { data: d, dim: 3 }
        }
        let mut losses = Vec::new();
        let m = Mlp::train(f(&x), &y, f(&vx), &vy, &cfg, &mut |r| {
            losses.push(r.val_loss)
        })
        .unwrap();
        assert!(losses.last().unwrap() < &(losses[0] * 0.7), "{losses:?}");
        let p = m.predict_proba(f(&vx)).unwrap();
        let correct = p
            .iter()
            .zip(&vy)
            .filter(|(p, g)| (p[0] > 0.5) == g.contains(crate::labels::Emotion::Love))
            .count();
        assert!(correct > 180, "{correct}/200");
        let m2 = Mlp::train(f(&x), &y, f(&vx), &vy, &cfg, &mut |_| {}).unwrap();
        assert_eq!(
            m2.predict_proba(f(&vx)).unwrap(),
            p,
            "same seed, same model"
        );
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), "head").unwrap();
        let back = Mlp::load(dir.path(), "head").unwrap();
        assert_eq!(back.predict_proba(f(&vx)).unwrap(), p);
    }
}
