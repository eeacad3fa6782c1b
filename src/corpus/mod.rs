//! The corpus: reading labelled sentences from files and splitting them.
//!
//! Readers return plain rows; turning rows into stored examples (ids, origins, idempotence)
//! is the store's job.

pub mod read;
pub mod split;

pub use read::{parse_bytes, read_file, Encoding, Format, Parsed, Row};
pub use split::{Split, SplitPlan};
