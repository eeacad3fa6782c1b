//! Models: classifiers that turn texts (optionally with appended knowledge) into per-label
//! probabilities, and the thresholds that turn probabilities into label sets.
//!
//! Every classifier outputs `[f32; 8]` probabilities in canonical label order; [`thresholds`]
//! is shared by all of them. Reading examples and knowledge from the store is the caller's job.

pub mod linear;
pub mod thresholds;

pub use linear::{HeadConfig, LinearConfig, LinearModel, LinearProgress};
pub use thresholds::{tune, Objective, Thresholds};
