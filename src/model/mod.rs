//! Models: classifiers that turn texts (optionally with appended knowledge) into per-label
//! probabilities, and the thresholds that turn probabilities into label sets.
//!
//! - [`bert`]: our trainable BERT; [`encoder`]: sentence embeddings for the store;
//!   [`tiny`]: tiny random checkpoints for tests.
//! - Classifiers: [`linear`] (TF-IDF + logistic regression), [`mlp`] (a head over stored
//!   embeddings), [`finetune`] (BERT end to end); [`classifier`] puts every kind, kNN and
//!   ensembles behind one interface and reads their inputs from the store.
//! - [`thresholds`]: per-label thresholds shared by all of them; every classifier outputs
//!   `[f32; 8]` probabilities in canonical label order.

pub mod bert;
pub mod classifier;
pub mod encoder;
pub mod finetune;
pub mod linear;
pub mod mlp;
pub mod thresholds;
pub mod tiny;

pub use linear::{HeadConfig, LinearConfig, LinearModel, LinearProgress};
pub use thresholds::{tune, Objective, Thresholds};
