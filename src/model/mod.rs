//! Models: classifiers that turn texts (optionally with appended knowledge) into per-label
//! probabilities, and the thresholds that turn probabilities into label sets.
//!
//! - [`bert`]: our trainable BERT; [`encoder`]: sentence embeddings for the store;
//!   [`tiny`]: tiny random checkpoints for tests. Inference runs through CPU kernels of our
//!   own (`kernels`: one gemm call per linear layer with bias/GELU/residual fused into a
//!   parallel pass, and a fused multi-head attention); training runs through candle's
//!   differentiable ops. Both give the same numbers (tested).
//! - Classifiers: [`linear`] (TF-IDF + logistic regression), [`mlp`] (a head over stored
//!   embeddings), [`finetune`] (BERT end to end); [`classifier`] puts every kind, kNN and
//!   ensembles behind one interface and reads their inputs from the store.
//! - [`thresholds`]: per-label thresholds shared by all of them; every classifier outputs
//!   `[f32; 8]` probabilities in canonical label order.

pub mod bert;
pub mod classifier;
pub mod encoder;
pub mod finetune;
mod kernels;
pub mod linear;
pub mod mlp;
pub mod thresholds;
pub mod tiny;

pub use bert::Pooling;
pub use encoder::{bench_embed, EmbedBench, Encoder, EncoderOptions};
pub use finetune::{FinetuneConfig, FinetuneEvent, FinetuneModel, HeadKind};
pub use linear::{HeadConfig, LinearConfig, LinearModel, LinearProgress};
pub use thresholds::{tune, Objective, Thresholds};
pub use tiny::{write_random_checkpoint, TinyBertSpec};
