//! Models: our trainable BERT ([`bert`]), sentence embeddings for the store ([`encoder`]),
//! tiny random checkpoints for tests ([`tiny`]) and the fine-tuned classifier ([`finetune`]).
//!
//! This stage sits last in the flow (labels <- corpus <- store <- knowledge <- model): it reads
//! texts and label sets and knows nothing about the store.

pub mod bert;
pub mod encoder;
pub mod finetune;
mod kernels;
pub mod tiny;
