//! Our own BERT encoder: plain structs whose tensor names are those of Hugging Face checkpoints,
//! trainable end to end.
//!
//! Why not `candle_transformers::models::bert::BertModel`: its LayerNorm is the fused op without
//! a backward pass (the gradient stops at every LayerNorm) and its dropout is a no-op. Here
//! `forward_t(.., train)` switches both: in training the differentiable LayerNorm built from
//! tensor ops and a real (seedable) dropout, at inference the fused LayerNorm and softmax.
//!
//! This module owns the network and pooling only; tokenization and batching live in
//! [`crate::encoder::embed`], heads and the training loop in [`crate::model::finetune`].
//!
//! Mirrors transformers' `modeling_bert.py`
//! (<https://github.com/huggingface/transformers/blob/6eedfa6dd15dc1e22a55ae036f681914e5a0d9a1/src/transformers/models/bert/modeling_bert.py>)
//! and candle-transformers' `models/bert.rs`.

use crate::encoder::kernels::{self, Epilogue};
use crate::encoder::train_kernels;
use candle_core::Var;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The activation of the feed-forward block (`hidden_act` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HiddenAct {
    /// Exact GELU with erf (`"gelu"`), BERT's default.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_approximate"`).
    #[serde(
        rename = "gelu_new",
        alias = "gelu_pytorch_tanh",
        alias = "gelu_approximate",
        alias = "gelu_fast"
    )]
    GeluApproximate,
    /// ReLU (`"relu"`).
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            HiddenAct::Gelu => train_kernels::gelu(xs),
            HiddenAct::GeluApproximate => xs.gelu(),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// A BERT configuration, deserialized straight from a Hugging Face `config.json`.
///
/// Keys that are absent take BERT-base's values; unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must be divisible by it).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    pub hidden_act: HiddenAct,
    /// Dropout on embeddings and sub-layer outputs, used only when training.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities, used only when training.
    pub attention_probs_dropout_prob: f64,
    /// Number of position embeddings (the longest input, in tokens).
    pub max_position_embeddings: usize,
    /// Number of segment (token type) ids.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Id of the padding token.
    pub pad_token_id: usize,
    /// Standard deviation used to initialise new weights.
    pub initializer_range: f64,
    /// `model_type` (informational; `bert`, `roberta`, ...).
    pub model_type: Option<String>,
}

impl Default for Config {
    /// BERT-base's values.
    fn default() -> Self {
        Config {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            initializer_range: 0.02,
            model_type: Some("bert".into()),
        }
    }
}

impl Config {
    /// Reads and checks a `config.json`.
    ///
    /// Errors: [`crate::Error::Io`] if unreadable, [`crate::Error::Input`] if it is not a BERT
    /// config (bad JSON, zero sizes, heads not dividing the hidden size).
    pub fn from_file(path: &std::path::Path) -> crate::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
        let cfg: Config = serde_json::from_str(&text)
            .map_err(|e| crate::Error::input(path, e.line(), e.to_string()))?;
        cfg.check()
            .map_err(|msg| crate::Error::input(path, 0, msg))?;
        Ok(cfg)
    }

    /// Checks the sizes; returns a message naming the bad key.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return Err(format!("{k} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }

    /// The same configuration as candle-transformers' BERT config (for its fused `BertModel`).
    pub fn to_candle(&self) -> candle_transformers::models::bert::Config {
        use candle_transformers::models::bert as cb;
        cb::Config {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: match self.hidden_act {
                HiddenAct::Gelu => cb::HiddenAct::Gelu,
                HiddenAct::GeluApproximate => cb::HiddenAct::GeluApproximate,
                HiddenAct::Relu => cb::HiddenAct::Relu,
            },
            hidden_dropout_prob: self.hidden_dropout_prob,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            initializer_range: self.initializer_range,
            layer_norm_eps: self.layer_norm_eps,
            pad_token_id: self.pad_token_id,
            position_embedding_type: cb::PositionEmbeddingType::Absolute,
            use_cache: false,
            classifier_dropout: None,
            model_type: self.model_type.clone(),
        }
    }
}

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the last hidden states over real (non-padding) tokens (m3e, sentence-transformers).
    #[default]
    Mean,
    /// The last hidden state of the first token, `[CLS]` (without the pooler).
    Cls,
}

impl Pooling {
    /// Lower-case name (`mean`, `cls`).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Pooling> {
        match s.to_ascii_lowercase().as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            _ => Err(crate::Error::Invalid(format!(
                "unknown pooling {s:?} (expected mean or cls)"
            ))),
        }
    }
}

/// Pools `hidden` (batch, seq, hidden) into (batch, hidden).
///
/// `mask` is (batch, seq) with 1 for real tokens and 0 for padding, any dtype. Differentiable.
pub fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> crate::Result<Tensor> {
    Ok(match pooling {
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?; // (b, s, 1)
            let sum = hidden.broadcast_mul(&m)?.sum(1)?; // (b, h)
            let count = m.sum(1)?.clamp(1e-9, f64::MAX)?; // (b, 1)
            sum.broadcast_div(&count)?
        }
    })
}

/// Dropout whose masks come from a seedable generator shared by the model (candle's CPU
/// `Tensor::rand` cannot be seeded, which would make training runs unrepeatable): each call
/// draws a seed, and [`train_kernels::dropout`] hashes it with each element's position.
struct DropoutRng(Mutex<rand::rngs::StdRng>);

impl DropoutRng {
    /// A fresh seed for a kernel that draws its own dropout masks.
    fn seed(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .random()
    }

    fn apply(&self, xs: &Tensor, p: f64, train: bool) -> candle_core::Result<Tensor> {
        if !train || p <= 0.0 {
            return Ok(xs.clone());
        }
        train_kernels::dropout(xs, None, p as f32, self.seed())
    }

    /// `dropout(xs) + res` at training time.
    fn apply_add(&self, xs: &Tensor, res: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        train_kernels::dropout(xs, Some(res), p as f32, self.seed())
    }
}

/// LayerNorm with both forms: candle's fused op (no backward) for inference,
/// [`train_kernels::layer_norm`] for training.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    // Old TF-converted checkpoints name the parameters gamma/beta.
    fn load(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let (w, b) = if !vb.contains_tensor("weight") && vb.contains_tensor("gamma") {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let weight = vb.get_with_hints(size, w, candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, b, candle_nn::Init::Const(0.0))?;
        Ok(LayerNorm { weight, bias, eps })
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train {
            train_kernels::layer_norm(xs, &self.weight, &self.bias, self.eps as f32)
        } else {
            candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// A linear layer `vb.weight` (out × in, N(0, std²) when created) + `vb.bias` (zeros).
pub(crate) fn linear(
    in_dim: usize,
    out_dim: usize,
    std: f64,
    vb: VarBuilder,
) -> candle_core::Result<Linear> {
    let w = vb.get_with_hints(
        (out_dim, in_dim),
        "weight",
        candle_nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?;
    let b = vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// `x·wᵀ + b`: differentiable when `train`, else the inference kernel.
fn dense(x: &Tensor, lin: &Linear, train: bool) -> candle_core::Result<Tensor> {
    if train {
        train_kernels::linear(x, lin)
    } else {
        kernels::linear(x, lin, Epilogue::None)
    }
}

fn embedding(n: usize, dim: usize, std: f64, vb: VarBuilder) -> candle_core::Result<Embedding> {
    let w = vb.get_with_hints(
        (n, dim),
        "weight",
        candle_nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    )?;
    Ok(Embedding::new(w, dim))
}

/// The word-embedding lookups of training forwards since the last
/// [`BertModel::take_word_grads`]: each one's rows (a leaf variable) and token ids. `None`
/// (the default) while the table's gradient goes through candle's autograd.
#[derive(Default)]
struct WordLookups(Mutex<Option<Vec<(Var, Tensor)>>>);

impl WordLookups {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<(Var, Tensor)>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The gradient of the word-embedding table as rows: `grad[i·hidden..]` belongs to token id
/// `ids[i]` (an id may repeat; its rows add up).
pub struct SparseRows {
    /// Token id of each row.
    pub ids: Vec<u32>,
    /// The rows, `ids.len()` × hidden.
    pub grad: Vec<f32>,
}

// modeling_bert.py BertEmbeddings
struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    layer_norm: LayerNorm,
    dropout_p: f64,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let std = cfg.initializer_range;
        Ok(Embeddings {
            word: embedding(
                cfg.vocab_size,
                cfg.hidden_size,
                std,
                vb.pp("word_embeddings"),
            )?,
            position: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                std,
                vb.pp("position_embeddings"),
            )?,
            token_type: embedding(
                cfg.type_vocab_size,
                cfg.hidden_size,
                std,
                vb.pp("token_type_embeddings"),
            )?,
            layer_norm: LayerNorm::load(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            dropout_p: cfg.hidden_dropout_prob,
        })
    }

    fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        rng: &DropoutRng,
        lookups: &WordLookups,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (_b, seq_len) = input_ids.dims2()?;
        let words = match lookups.lock().as_mut() {
            Some(list) if train => {
                // Gathered outside the graph; the rows become a leaf whose gradient the
                // trainer adds into the table itself (see `BertModel::sparse_word_grads`).
                let table = self.word.embeddings().detach();
                let (b, s) = input_ids.dims2()?;
                let ids = input_ids.flatten_all()?;
                let rows = table.index_select(&ids, 0)?.reshape((b, s, ()))?;
                let leaf = Var::from_tensor(&rows)?;
                list.push((leaf.clone(), ids));
                leaf.as_tensor().clone()
            }
            _ => self.word.forward(input_ids)?,
        };
        let types = self.token_type.forward(token_type_ids)?;
        let positions = self
            .position
            .embeddings()
            .narrow(0, 0, seq_len)?
            .unsqueeze(0)?;
        let xs = (words + types)?.broadcast_add(&positions)?;
        let xs = self.layer_norm.forward_t(&xs, train)?;
        rng.apply(&xs, self.dropout_p, train)
    }
}

// modeling_bert.py BertSelfAttention + BertSelfOutput
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    attn_dropout_p: f64,
    hidden_dropout_p: f64,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let std = cfg.initializer_range;
        let sa = vb.pp("self");
        let out = vb.pp("output");
        Ok(Attention {
            query: linear(h, h, std, sa.pp("query"))?,
            key: linear(h, h, std, sa.pp("key"))?,
            value: linear(h, h, std, sa.pp("value"))?,
            output: linear(h, h, std, out.pp("dense"))?,
            layer_norm: LayerNorm::load(h, cfg.layer_norm_eps, out.pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            attn_dropout_p: cfg.attention_probs_dropout_prob,
            hidden_dropout_p: cfg.hidden_dropout_prob,
        })
    }

    fn split_heads(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        xs.reshape((b, s, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        keep: &Tensor,
        rng: &DropoutRng,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        if train {
            // One linear layer with the three weight matrices stacked: one gemm, one read of
            // xs, one gradient for xs instead of three to add.
            let parts = [&self.query, &self.key, &self.value];
            let weight = Tensor::cat(&parts.map(|l| l.weight().clone()), 0)?;
            let bias = match parts.map(|l| l.bias().cloned()) {
                [Some(q), Some(k), Some(v)] => Some(Tensor::cat(&[q, k, v], 0)?),
                _ => None,
            };
            let qkv = Linear::new(weight, bias);
            let qkv = train_kernels::linear(xs, &qkv)?;
            let p = self.attn_dropout_p as f32;
            if let Some(ctx) = train_kernels::attention(&qkv, keep, self.heads, p, rng.seed())? {
                return self.finish(&ctx, xs, rng, train);
            }
        }
        let q = dense(xs, &self.query, train)?;
        let k = dense(xs, &self.key, train)?;
        let v = dense(xs, &self.value, train)?;
        if !train {
            if let Some(ctx) = kernels::attention(&q, &k, &v, keep, self.heads)? {
                return self.finish(&ctx, xs, rng, train);
            }
        }
        let (q, k, v) = (
            self.split_heads(&q)?,
            self.split_heads(&k)?,
            self.split_heads(&v)?,
        );
        let q = (q * (1.0 / (self.head_dim as f64).sqrt()))?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        // Reached in training only for tensors the fused kernel does not take (not CPU f32).
        let probs = if train {
            candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let probs = rng.apply(&probs, self.attn_dropout_p, train)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .flatten_from(2)?;
        self.finish(&ctx, xs, rng, train)
    }

    /// Output projection, dropout, residual and LayerNorm of the attention context.
    fn finish(
        &self,
        ctx: &Tensor,
        xs: &Tensor,
        rng: &DropoutRng,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        if train {
            let out = train_kernels::linear(ctx, &self.output)?;
            let out = rng.apply_add(&out, xs, self.hidden_dropout_p)?;
            self.layer_norm.forward_t(&out, train)
        } else {
            let out = kernels::linear(ctx, &self.output, Epilogue::Residual(xs))?;
            self.layer_norm.forward_t(&out, train)
        }
    }
}

// modeling_bert.py BertLayer (= BertAttention + BertIntermediate + BertOutput)
struct Layer {
    attention: Attention,
    intermediate: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    act: HiddenAct,
    dropout_p: f64,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let std = cfg.initializer_range;
        Ok(Layer {
            attention: Attention::load(vb.pp("attention"), cfg)?,
            intermediate: linear(
                cfg.hidden_size,
                cfg.intermediate_size,
                std,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: linear(
                cfg.intermediate_size,
                cfg.hidden_size,
                std,
                vb.pp("output").pp("dense"),
            )?,
            layer_norm: LayerNorm::load(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
            act: cfg.hidden_act,
            dropout_p: cfg.hidden_dropout_prob,
        })
    }

    fn forward_t(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        keep: &Tensor,
        rng: &DropoutRng,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let a = self.attention.forward_t(xs, mask, keep, rng, train)?;
        if train || self.act != HiddenAct::Gelu {
            let h = self.act.forward(&dense(&a, &self.intermediate, train)?)?;
            let h = dense(&h, &self.output, train)?;
            let h = if train {
                rng.apply_add(&h, &a, self.dropout_p)?
            } else {
                (h + a)?
            };
            self.layer_norm.forward_t(&h, train)
        } else {
            let h = kernels::linear(&a, &self.intermediate, Epilogue::Gelu)?;
            let h = kernels::linear(&h, &self.output, Epilogue::Residual(&a))?;
            self.layer_norm.forward_t(&h, train)
        }
    }
}

/// A BERT encoder (embeddings + layers + optional pooler) with Hugging Face tensor names.
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pooler: Option<Linear>,
    rng: DropoutRng,
    lookups: WordLookups,
    cfg: Config,
    prefix: String,
}

impl BertModel {
    /// Builds the model from `vb`, detecting a `bert.` (or `<model_type>.`) prefix on the
    /// tensor names. The pooler (`pooler.dense`) is loaded when the checkpoint has one.
    ///
    /// With a `VarBuilder::from_varmap` builder, missing tensors are created (normal init with
    /// `initializer_range`, LayerNorm 1/0); that is how a fresh trainable copy is made before
    /// pretrained values are copied in. Errors: a missing or mis-shaped tensor in a checkpoint.
    pub fn load(vb: VarBuilder, cfg: &Config) -> crate::Result<BertModel> {
        cfg.check().map_err(crate::Error::Model)?;
        let prefix = detect_prefix(&vb, cfg);
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        let embeddings = Embeddings::load(vb.pp("embeddings"), cfg)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooler = if vb.contains_tensor("pooler.dense.weight") {
            Some(linear(
                cfg.hidden_size,
                cfg.hidden_size,
                cfg.initializer_range,
                vb.pp("pooler").pp("dense"),
            )?)
        } else {
            None
        };
        Ok(BertModel {
            embeddings,
            layers,
            pooler,
            rng: DropoutRng(Mutex::new(rand::rngs::StdRng::seed_from_u64(0))),
            lookups: WordLookups::default(),
            cfg: cfg.clone(),
            prefix,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The tensor-name prefix found in the checkpoint (`""` or `"bert."`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embeddings.word.embeddings().device()
    }

    /// Reseeds the generator of the dropout masks (it starts at seed 0).
    pub fn set_dropout_seed(&self, seed: u64) {
        *self
            .rng
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            rand::rngs::StdRng::seed_from_u64(seed);
    }

    /// From now on, training forwards leave the word-embedding table out of candle's autograd:
    /// its gradient, 21,128 × 512 floats for m3e-small of which a batch touches a few hundred
    /// rows, was built densely three times a step (zeros, scattered copy, sum). Take it as rows
    /// with [`BertModel::take_word_grads`] after each backward pass.
    pub fn sparse_word_grads(&self) {
        *self.lookups.lock() = Some(Vec::new());
    }

    /// The word-embedding gradient of the training forwards since the last call, as rows (see
    /// [`BertModel::sparse_word_grads`]); `None` when that mode is off.
    pub fn take_word_grads(
        &self,
        grads: &candle_core::backprop::GradStore,
    ) -> crate::Result<Option<SparseRows>> {
        let Some(list) = self.lookups.lock().as_mut().map(std::mem::take) else {
            return Ok(None);
        };
        let mut out = SparseRows {
            ids: Vec::new(),
            grad: Vec::new(),
        };
        for (leaf, ids) in list {
            let ids = ids.to_vec1::<u32>()?;
            let g = match grads.get(leaf.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => continue,
            };
            out.ids.extend(ids);
            out.grad.extend(g);
        }
        Ok(Some(out))
    }

    /// The word-embedding table (vocabulary × hidden).
    pub fn word_embeddings(&self) -> &Tensor {
        self.embeddings.word.embeddings()
    }

    /// Training-time dropout with the model's seeded generator (for heads stacked on top).
    pub(crate) fn dropout(&self, xs: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        self.rng.apply(xs, p, true)
    }

    /// Runs the encoder and returns the last hidden states, (batch, seq, hidden).
    ///
    /// `input_ids`, `token_type_ids`: (batch, seq) u32; `attention_mask`: (batch, seq), 1 for
    /// real tokens and 0 for padding, any dtype. `train` turns on dropout and the
    /// differentiable LayerNorm/softmax (slower, keeps the graph for `backward`).
    /// Errors: a sequence longer than `max_position_embeddings`, or mis-shaped inputs.
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        train: bool,
    ) -> crate::Result<Tensor> {
        let (_, seq) = input_ids.dims2()?;
        if seq > self.cfg.max_position_embeddings {
            return Err(crate::Error::Model(format!(
                "sequence of {seq} tokens is longer than max_position_embeddings {}",
                self.cfg.max_position_embeddings
            )));
        }
        let mask = extended_mask(attention_mask, DType::F32)?;
        let mut xs = self.embeddings.forward_t(
            input_ids,
            token_type_ids,
            &self.rng,
            &self.lookups,
            train,
        )?;
        for layer in &self.layers {
            xs = layer.forward_t(&xs, &mask, attention_mask, &self.rng, train)?;
        }
        Ok(xs)
    }

    /// The pooler output, tanh(dense(h[CLS])), (batch, hidden); `None` when the checkpoint
    /// has no pooler.
    pub fn pooler_output(&self, hidden: &Tensor) -> crate::Result<Option<Tensor>> {
        match &self.pooler {
            None => Ok(None),
            Some(p) => {
                let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                Ok(Some(p.forward(&cls)?.tanh()?))
            }
        }
    }
}

/// Looks for `embeddings.word_embeddings.weight` bare, under `bert.`, or under `<model_type>.`.
pub(crate) fn detect_prefix(vb: &VarBuilder, cfg: &Config) -> String {
    const PROBE: &str = "embeddings.word_embeddings.weight";
    if vb.contains_tensor(PROBE) {
        return String::new();
    }
    let mut candidates = vec!["bert".to_string()];
    if let Some(mt) = &cfg.model_type {
        candidates.push(mt.clone());
    }
    for c in candidates {
        if vb.contains_tensor(&format!("{c}.{PROBE}")) {
            return format!("{c}.");
        }
    }
    // A VarMap-backed builder contains nothing yet: create names without a prefix.
    String::new()
}

/// (batch, seq) 1/0 mask -> (batch, 1, 1, seq) additive mask: 0 for tokens, f32::MIN for padding
/// (as transformers' `get_extended_attention_mask`).
fn extended_mask(mask: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
    let m = mask.to_dtype(dtype)?.unsqueeze(1)?.unsqueeze(1)?;
    (m.ones_like()? - m)? * f32::MIN as f64
}

/// The variables of `vm` (names and shapes), sorted by name: what a model built on it declares.
pub(crate) fn var_shapes(vm: &candle_nn::VarMap) -> Vec<(String, Vec<usize>)> {
    let mut shapes: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    shapes.sort();
    shapes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// A 2-layer, hidden-32 config for tests.
    pub(crate) fn tiny_config() -> Config {
        Config {
            vocab_size: 64,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 48,
            max_position_embeddings: 40,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            initializer_range: 0.2,
            ..Config::default()
        }
    }

    /// Largest absolute difference; tests accept 1e-4 ("equal to 4 places") because rounding
    /// both sides can split a pair that straddles a rounding boundary.
    pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "length differs");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Overwrites every variable with seeded values (candle's own init cannot be seeded):
    /// LayerNorm weights 1 ± 0.1, everything else N(0, 0.2).
    pub(crate) fn reseed(vm: &VarMap, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = vm.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let n = var.elem_count();
            let base = if name.contains("LayerNorm.weight") {
                1.0
            } else {
                0.0
            };
            let vals: Vec<f32> = (0..n)
                .map(|_| {
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (base + if base > 0.0 { 0.1 } else { 0.2 } * z) as f32
                })
                .collect();
            var.set(&Tensor::from_vec(vals, var.shape(), var.device()).unwrap())
                .unwrap();
        }
    }

    fn inputs(dev: &Device) -> (Tensor, Tensor, Tensor) {
        let ids = Tensor::new(&[[2u32, 10, 11, 12, 3, 0], [2, 20, 21, 22, 23, 3]], dev).unwrap();
        let types = ids.zeros_like().unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dev).unwrap();
        (ids, types, mask)
    }

    #[test]
    fn config_reads_hf_json_with_defaults() {
        let cfg: Config = serde_json::from_str(
            r#"{"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
                "hidden_act": "gelu", "vocab_size": 21128, "uniem_embedding_strategy": "last_mean"}"#,
        )
        .unwrap();
        assert_eq!(cfg.hidden_size, 512);
        assert_eq!(cfg.intermediate_size, 3072);
        assert_eq!(cfg.hidden_act, HiddenAct::Gelu);
        let tanh: Config = serde_json::from_str(r#"{"hidden_act": "gelu_pytorch_tanh"}"#).unwrap();
        assert_eq!(tanh.hidden_act, HiddenAct::GeluApproximate);
        let bad = Config {
            num_attention_heads: 5,
            ..tiny_config()
        };
        assert!(bad.check().unwrap_err().contains("divisible"));
    }

    #[test]
    fn matches_candle_transformers_bert_with_and_without_prefix() {
        let dev = Device::Cpu;
        let cfg = tiny_config();
        let vm = VarMap::new();
        let ours = BertModel::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg).unwrap();
        reseed(&vm, 1);
        let (ids, types, mask) = inputs(&dev);
        let a = ours.forward_t(&ids, &types, &mask, false).unwrap();
        // The same weights through candle-transformers' fused model.
        let tensors: std::collections::HashMap<String, Tensor> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
        let theirs =
            candle_transformers::models::bert::BertModel::load(vb, &cfg.to_candle()).unwrap();
        let b = theirs.forward(&ids, &types, Some(&mask)).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(max_abs_diff(&flat(&a), &flat(&b)) < 1e-4);
        // Training-mode ops (no dropout in this config) give the same numbers.
        let t = ours.forward_t(&ids, &types, &mask, true).unwrap();
        assert!(max_abs_diff(&flat(&a), &flat(&t)) < 1e-4);
        // Under a `bert.` prefix.
        let prefixed = tensors
            .into_iter()
            .map(|(k, v)| (format!("bert.{k}"), v))
            .collect();
        let vb = VarBuilder::from_tensors(prefixed, DType::F32, &dev);
        let p = BertModel::load(vb, &cfg).unwrap();
        assert_eq!(p.prefix(), "bert.");
        let c = p.forward_t(&ids, &types, &mask, false).unwrap();
        assert!(max_abs_diff(&flat(&a), &flat(&c)) < 1e-4);
    }

    #[test]
    fn padding_does_not_change_real_tokens() {
        let dev = Device::Cpu;
        let cfg = tiny_config();
        let vm = VarMap::new();
        let m = BertModel::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg).unwrap();
        reseed(&vm, 2);
        let short = Tensor::new(&[[2u32, 10, 11, 3]], &dev).unwrap();
        let long = Tensor::new(&[[2u32, 10, 11, 3, 0, 0]], &dev).unwrap();
        let h1 = m
            .forward_t(
                &short,
                &short.zeros_like().unwrap(),
                &short.ones_like().unwrap(),
                false,
            )
            .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0]], &dev).unwrap();
        let h2 = m
            .forward_t(&long, &long.zeros_like().unwrap(), &mask, false)
            .unwrap();
        let p1 = pool(&h1, &short.ones_like().unwrap(), Pooling::Mean).unwrap();
        let p2 = pool(&h2, &mask, Pooling::Mean).unwrap();
        let v = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(max_abs_diff(&v(p1), &v(p2)) < 1e-4);
    }

    #[test]
    fn sparse_word_grads_equal_autograd_rows() {
        let dev = Device::Cpu;
        let cfg = Config {
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            ..tiny_config()
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let bert = BertModel::load(vb, &cfg).unwrap();
        reseed(&vm, 5);
        // Token 10 twice in one sentence: its rows must add up.
        let ids = Tensor::new(&[[2u32, 10, 11, 10, 3, 0], [2, 20, 21, 22, 23, 3]], &dev).unwrap();
        let (_, types, mask) = inputs(&dev);
        let r = Tensor::randn(0f32, 1.0, (2, 6, cfg.hidden_size), &dev).unwrap();
        let grads = |sparse: bool| {
            bert.set_dropout_seed(9);
            if sparse {
                bert.sparse_word_grads();
            }
            let h = bert.forward_t(&ids, &types, &mask, true).unwrap();
            let g = (h * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let rows = bert.take_word_grads(&g).unwrap();
            (g, rows)
        };
        let table = bert.word_embeddings().clone();
        let (dense, none) = grads(false);
        assert!(none.is_none());
        let want = dense.get(&table).unwrap().to_vec2::<f32>().unwrap();
        let (g, rows) = grads(true);
        assert!(g.get(&table).is_none(), "the table left autograd");
        let rows = rows.unwrap();
        assert_eq!(rows.ids, vec![2, 10, 11, 10, 3, 0, 2, 20, 21, 22, 23, 3]);
        let mut got = vec![vec![0f32; cfg.hidden_size]; cfg.vocab_size];
        for (&id, g) in rows.ids.iter().zip(rows.grad.chunks(cfg.hidden_size)) {
            got[id as usize]
                .iter_mut()
                .zip(g)
                .for_each(|(a, b)| *a += b);
        }
        let flat = |v: &[Vec<f32>]| v.concat();
        assert!(max_abs_diff(&flat(&got), &flat(&want)) < 1e-5);
        assert!(want[10].iter().any(|&x| x != 0.0));
        // Taken once: the next call has nothing new.
        assert!(bert.take_word_grads(&g).unwrap().unwrap().ids.is_empty());
    }

    #[test]
    fn training_lowers_loss_and_moves_lower_layers() {
        let dev = Device::Cpu;
        let cfg = Config {
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            ..tiny_config()
        };
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let bert = BertModel::load(vb.clone(), &cfg).unwrap();
        bert.set_dropout_seed(7);
        let head = candle_nn::linear(cfg.hidden_size, 1, vb.pp("head")).unwrap();
        reseed(&vm, 3);
        let (ids, types, mask) = inputs(&dev);
        let target = Tensor::new(&[[1f32], [0.0]], &dev).unwrap();
        let name = "encoder.layer.0.attention.self.query.weight";
        let before = vm.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut opt = candle_nn::AdamW::new_lr(vm.all_vars(), 3e-3).unwrap();
        use candle_nn::Optimizer;
        // The loss without dropout (inference settings), before and after: a training step's
        // own loss moves with each dropout draw.
        let loss_at = |train: bool| {
            let h = bert.forward_t(&ids, &types, &mask, train).unwrap();
            let logits = head
                .forward(&pool(&h, &mask, Pooling::Cls).unwrap())
                .unwrap();
            candle_nn::loss::mse(&logits, &target).unwrap()
        };
        let first = loss_at(false).to_scalar::<f32>().unwrap();
        for _ in 0..20 {
            opt.backward_step(&loss_at(true)).unwrap();
        }
        let last = loss_at(false).to_scalar::<f32>().unwrap();
        assert!(last < first * 0.5, "loss {first} -> {last}");
        let after = vm.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| (*a - *b).abs() > 1e-4)
            .count();
        assert!(moved > before.len() / 2, "only {moved} weights moved");
    }
}
