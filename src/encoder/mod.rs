//! The encoder: a BERT network that turns texts into vectors, below both stages that use it.
//! [`crate::neighbours`] embeds sentences with it for retrieval, [`crate::model`] fine-tunes it
//! and reads its vectors; neither imports the other for it.
//!
//! - [`bert`]: our trainable BERT (Hugging Face tensor names, a real backward pass through
//!   LayerNorm and dropout).
//! - [`embed`]: loading any Hugging Face BERT-family directory, tokenizing, length-sorted
//!   batching, L2-normalized sentence vectors, and the embedding benchmark.
//! - Inference runs through CPU kernels of our own (`kernels`: one gemm call per linear layer
//!   with bias/GELU/residual fused into a parallel pass, and a fused multi-head attention);
//!   training through differentiable ones (`train_kernels`: linear layers, fused attention,
//!   LayerNorm, GELU and dropout as candle custom ops with a one-pass backward each). Both give
//!   candle's numbers (tested).

pub mod bert;
pub mod embed;
mod kernels;
pub(crate) mod train_kernels;

pub use bert::Pooling;
pub use embed::{bench_embed, EmbedBench, Encoder, EncoderOptions};
