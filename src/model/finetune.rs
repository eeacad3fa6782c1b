//! The `finetune` classifier's network: our BERT, initialised from an encoder directory, plus
//! dropout and a classification head, trained end to end by [`train`].
//!
//! Two heads: `shared` (one linear layer to 8 logits, as the seed's bert-base-chinese model)
//! and `per_label` (the seed's "binary tasks": each emotion gets its own dense+tanh layer and a
//! 1-logit output, so the labels share only the encoder).
//!
//! This file owns the model: its settings ([`FinetuneConfig`], [`HeadKind`]), building it from a
//! pretrained encoder, prediction, and saving and loading a [`FinetuneModel`]. The training loop
//! (optimizer, learning-rate schedule, batching, validation, [`FinetuneEvent`]) is
//! `finetune_train.rs`; its public items are re-exported here, so they are used as
//! `model::finetune::train` and so on.
//!
//! Full fine-tuning on a CPU is slow (docs/benchmarks.md gives the measured examples/s); a
//! CPU-friendly alternative is a head trained on stored embeddings ([`crate::model::mlp`]).
//! Thresholds and metrics beyond a quick validation micro-F1 belong to the caller.

use crate::encoder::bert::{self, BertModel, Pooling};
use crate::encoder::embed::{load_tokenizer, pad_batch, token_ids, weights_builder, ModelFiles};
use crate::labels::NUM_EMOTIONS;
pub use crate::model::finetune_train::{lr_at, train, FinetuneEvent};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
    /// Without `pos_weight`: weigh positives by the training labels' negatives / positives
    /// ([`crate::model::mlp::balanced_pos_weight`]; `train --pos-weight auto`).
    pub pos_weight_auto: bool,
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
            pos_weight_auto: false,
            seed: 42,
            eval_every_steps: 0,
            keep_best: true,
            freeze_embeddings: false,
        }
    }
}

/// Saved alongside the weights (`finetune.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedMeta {
    finetune: FinetuneConfig,
    /// File name of the tokenizer copied into the model directory.
    tokenizer_file: String,
    best_val_micro_f1: Option<f32>,
}

pub(super) const WEIGHTS_FILE: &str = "model.safetensors";

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
        let lin = |i: usize, o: usize, vb: VarBuilder| bert::linear(i, o, 0.02, vb);
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
    /// Every trainable variable (encoder and head).
    pub(super) varmap: VarMap,
    pub(super) tokenizer: Tokenizer,
    tokenizer_file: PathBuf,
    pub(super) cfg: FinetuneConfig,
    pub(super) best_val_micro_f1: Option<f32>,
}

impl FinetuneModel {
    /// Builds the network on `varmap`: its variables are used as they are (the shapes must
    /// match), the missing ones are created with random values (names without prefix, head
    /// under `head.`).
    fn build(
        varmap: VarMap,
        bert_cfg: &bert::Config,
        cfg: &FinetuneConfig,
    ) -> crate::Result<(VarMap, BertModel, Head)> {
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let bert = BertModel::load(vb.clone(), bert_cfg)?;
        let head = Head::load(cfg.head, bert_cfg.hidden_size, vb.pp("head"))?;
        Ok((varmap, bert, head))
    }

    /// The model to fine-tune: the network of `cfg.encoder` with its pretrained weights, a head
    /// initialised from `cfg.seed`, and dropout seeded from it. Its [`FinetuneModel::config`] is
    /// `cfg` with `max_len` clamped to what the encoder's position embeddings allow. Errors as
    /// [`crate::encoder::embed::Encoder::load`].
    pub(super) fn from_pretrained(cfg: &FinetuneConfig) -> crate::Result<FinetuneModel> {
        let files = ModelFiles::find(&cfg.encoder)?;
        let bert_cfg = bert::Config::from_file(&files.config)?;
        let mut cfg = cfg.clone();
        cfg.max_len = cfg.max_len.clamp(2, bert_cfg.max_position_embeddings);
        let tokenizer = load_tokenizer(&files.tokenizer, cfg.max_len)?;
        let dev = Device::Cpu;

        // Fresh variables, then the pretrained values copied in one by one (the head stays random).
        let (mut varmap, bert, head) = FinetuneModel::build(VarMap::new(), &bert_cfg, &cfg)?;
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
                .map_err(|e| crate::Error::model_file(&files.weights, e))?;
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
        Ok(FinetuneModel {
            bert,
            head,
            varmap,
            tokenizer,
            tokenizer_file: files.tokenizer,
            cfg,
            best_val_micro_f1: None,
        })
    }

    /// Probabilities of the 8 emotions (canonical order) for each text, in input order.
    ///
    /// Runs at inference (no dropout, fused ops), in length-sorted batches of 64.
    pub fn predict_proba(&self, texts: &[&str]) -> crate::Result<Vec<[f32; NUM_EMOTIONS]>> {
        let ids = token_ids(&self.tokenizer, texts)?;
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
    /// directory also loads as an [`crate::encoder::embed::Encoder`]), `finetune.json` and the
    /// tokenizer file into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> crate::Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        let wpath = dir.join(WEIGHTS_FILE);
        self.varmap
            .save(&wpath)
            .map_err(|e| crate::Error::model_file(&wpath, e))?;
        let cpath = dir.join("config.json");
        let cjson = serde_json::to_string_pretty(self.bert.config())
            .map_err(|e| crate::Error::model_file(&cpath, e))?;
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
            serde_json::to_string_pretty(&meta).map_err(|e| crate::Error::model_file(&mpath, e))?,
        )
        .map_err(|e| crate::Error::io(&mpath, e))?;
        Ok(())
    }

    /// Loads a directory written by [`FinetuneModel::save`]. Errors: [`crate::Error::Io`],
    /// [`crate::Error::Input`] for a missing or bad file, [`crate::Error::ModelFile`] or
    /// [`crate::Error::ModelDamaged`] for weights that do not match.
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
            return Err(crate::Error::ModelDamaged {
                dir: dir.to_path_buf(),
                msg: format!(
                    "{}: describes a network of at least {need} bytes of weights, but {} has {wlen} bytes: they do not belong together; retrain the model",
                    cpath.display(),
                    wpath.display()
                ),
            });
        }
        // The saved values become the variables the network is built on, so nothing is drawn
        // at random only to be overwritten (that was half of a one-sentence `predict`).
        let model_file = |e: candle_core::Error| crate::Error::model_file(&wpath, e);
        let saved = candle_core::safetensors::load(&wpath, &Device::Cpu).map_err(model_file)?;
        let saved_names: std::collections::HashSet<String> = saved.keys().cloned().collect();
        let varmap = VarMap::new();
        {
            let mut vars =
                (varmap.data().lock()).unwrap_or_else(std::sync::PoisonError::into_inner);
            for (name, t) in saved {
                let var =
                    candle_core::Var::from_tensor(&t.to_dtype(DType::F32).map_err(model_file)?)
                        .map_err(model_file)?;
                vars.insert(name, var);
            }
        }
        let (varmap, bert, head) = FinetuneModel::build(varmap, &bert_cfg, &meta.finetune)
            .map_err(|e| crate::Error::model_file(&wpath, e))?;
        let missing: Vec<String> = bert::var_shapes(&varmap)
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| !saved_names.contains(name))
            .collect();
        if !missing.is_empty() {
            let msg = format!("has no tensor named {}", missing.join(", "));
            return Err(crate::Error::model_file(&wpath, msg));
        }
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

    pub(super) fn pad_id(&self) -> u32 {
        self.tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(self.bert.config().pad_token_id as u32)
    }

    /// (batch, 8) logits; `train` turns on dropout and the differentiable ops.
    pub(super) fn logits(&self, b: &Batch, train: bool) -> crate::Result<Tensor> {
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

    /// Turns on row gradients for the word-embedding table
    /// ([`BertModel::sparse_word_grads`]) and returns the table's tensor id.
    pub(super) fn sparse_word_grads(&self) -> candle_core::TensorId {
        self.bert.sparse_word_grads();
        self.bert.word_embeddings().id()
    }

    /// See [`BertModel::take_word_grads`].
    pub(super) fn take_word_grads(
        &self,
        grads: &candle_core::backprop::GradStore,
    ) -> crate::Result<Option<bert::SparseRows>> {
        self.bert.take_word_grads(grads)
    }
}

/// One padded batch.
pub(super) struct Batch {
    ids: Tensor,
    types: Tensor,
    mask: Tensor,
}

impl Batch {
    /// The rows `chunk` of `ids`, padded with `pad` to the longest of them.
    pub(super) fn new(ids: &[Vec<u32>], chunk: &[usize], pad: u32) -> crate::Result<Batch> {
        let (mut id_buf, mut mask_buf) = (Vec::new(), Vec::new());
        let width = pad_batch(ids, chunk, pad, &mut id_buf, &mut mask_buf);
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(id_buf, (chunk.len(), width), &dev)?;
        let mask = Tensor::from_vec(mask_buf, (chunk.len(), width), &dev)?;
        let types = ids.zeros_like()?;
        Ok(Batch { ids, types, mask })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::labels::LabelSet;
    use crate::metrics;
    use crate::model::thresholds::Thresholds;
    use crate::testkit::tiny::{write_random_checkpoint, TinyBertSpec};

    pub(crate) fn data() -> (Vec<&'static str>, Vec<LabelSet>) {
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

    pub(crate) fn tiny_encoder() -> tempfile::TempDir {
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
            assert!(
                metrics::micro_f1(&labels, &Thresholds::default().apply(&p)) > 0.5,
                "{head:?}: {p:?}"
            );
            let dir = tempfile::tempdir().unwrap();
            model.save(dir.path()).unwrap();
            let back = FinetuneModel::load(dir.path()).unwrap();
            assert_eq!(back.config(), model.config());
            // Same stored f32 weights, same computation: bit-identical.
            assert_eq!(back.predict_proba(&texts).unwrap(), p);
            // The saved directory also works as an embedding encoder.
            let e = crate::encoder::embed::Encoder::load(
                dir.path(),
                crate::encoder::embed::EncoderOptions::default(),
            )
            .unwrap();
            assert_eq!(e.encode(&texts[..2], &mut |_| {}).unwrap().len(), 2);
        }
    }

    /// A model trained one epoch on [`data`], and the directory it was saved to.
    fn one_epoch_model_saved() -> (FinetuneModel, tempfile::TempDir) {
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
        (model, dir)
    }

    #[test]
    fn a_config_larger_than_its_weights_is_refused_before_allocating() {
        let (_, dir) = one_epoch_model_saved();
        let cpath = dir.path().join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
        // 640 MB of embeddings for a file of a few hundred KB.
        c["vocab_size"] = 5_000_000.into();
        std::fs::write(&cpath, c.to_string()).unwrap();
        let err = FinetuneModel::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("do not belong together"), "{err}");
    }

    #[test]
    fn weights_missing_a_tensor_or_of_another_shape_are_refused_naming_the_file() {
        let (model, dir) = one_epoch_model_saved();
        let (texts, _) = data();
        let wpath = dir.path().join(WEIGHTS_FILE);
        let saved = candle_core::safetensors::load(&wpath, &Device::Cpu).unwrap();
        let load_err = |tensors: &std::collections::HashMap<String, Tensor>| {
            candle_core::safetensors::save(tensors, &wpath).unwrap();
            FinetuneModel::load(dir.path())
                .err()
                .unwrap()
                .full_message()
        };
        let name = "encoder.layer.0.attention.output.dense.bias";
        let mut without = saved.clone();
        without.remove(name).unwrap();
        let err = load_err(&without);
        assert!(err.contains(WEIGHTS_FILE) && err.contains(name), "{err}");
        let mut reshaped = saved.clone();
        let bias = &saved[name];
        let longer = Tensor::zeros(bias.dims1().unwrap() + 1, DType::F32, &Device::Cpu).unwrap();
        reshaped.insert(name.to_string(), longer);
        let err = load_err(&reshaped);
        assert!(
            err.contains(WEIGHTS_FILE) && err.contains("shape mismatch"),
            "{err}"
        );
        // Put back whole, it loads and predicts as before.
        candle_core::safetensors::save(&saved, &wpath).unwrap();
        let back = FinetuneModel::load(dir.path()).unwrap();
        let p = model.predict_proba(&texts).unwrap();
        assert_eq!(back.predict_proba(&texts).unwrap(), p);
    }
}
