//! Models: our trainable BERT ([`bert`]), sentence embeddings for the store ([`encoder`]),
//! tiny random checkpoints for tests ([`tiny`]) and the fine-tuned classifier ([`finetune`]).
//!
//! Inference runs through CPU kernels of our own (`kernels`: one gemm call per linear layer with
//! bias/GELU/residual fused into a parallel pass, and a fused multi-head attention); training
//! runs through candle's differentiable ops. Both give the same numbers (tested).
//!
//! This stage sits last in the flow (labels <- corpus <- store <- knowledge <- model): it reads
//! texts and label sets and knows nothing about the store.

pub use bert::Pooling;
pub use encoder::{bench_embed, EmbedBench, Encoder, EncoderOptions};
pub use finetune::{FinetuneConfig, FinetuneEvent, FinetuneModel, HeadKind};
pub use tiny::{write_random_checkpoint, TinyBertSpec};

pub mod bert;
pub mod encoder;
pub mod finetune;
mod kernels;
pub mod tiny;
