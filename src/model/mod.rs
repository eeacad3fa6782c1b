//! Models: classifiers trained from the store's examples, knowledge and embeddings.

pub mod mlp;
