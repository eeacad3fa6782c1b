//! emoknow: an embedded knowledge store and toolkit for LLM-knowledge-augmented, multi-label
//! Chinese emotion classification.
#![warn(missing_docs)]

pub mod error;
pub mod labels;

pub use error::{Error, Result};
