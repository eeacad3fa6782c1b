//! emoknow: an embedded knowledge store and toolkit for LLM-knowledge-augmented, multi-label
//! Chinese emotion classification.
#![warn(missing_docs)]

pub mod corpus;
pub mod error;
pub mod knowledge;
pub mod labels;
pub mod model;
pub mod store;

pub use error::{Error, Result};
