//! Models: classifiers that turn texts (optionally with appended knowledge) into per-label
//! probabilities, and the thresholds that turn probabilities into label sets.
//!
//! Every classifier outputs `[f32; 8]` probabilities in canonical label order; [`thresholds`]
//! is shared by all of them.

pub mod linear;
pub mod mlp;
pub mod thresholds;

pub use linear::{LinearConfig, LinearModel};
pub use thresholds::{Objective, Thresholds};
