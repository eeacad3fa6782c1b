//! emoknow: an embedded knowledge store and toolkit for LLM-knowledge-augmented, multi-label
//! Chinese emotion classification.
#![warn(missing_docs)]
// No panic reachable from user input or store contents: library code returns errors. Tests may
// unwrap.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod corpus;
pub mod error;
pub mod knowledge;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod neighbours;
pub mod spec;
pub mod store;
pub mod testkit;

pub use error::{Error, Result};
