//! The corpus: reading labelled sentences from files and splitting them.
//!
//! Readers return plain rows; turning rows into stored examples (ids, origins, idempotence)
//! is the store's job.
//!
//! - [`read`]: the three formats (seed list CSV, one-hot CSV, JSON Lines) in UTF-8, UTF-8 with
//!   BOM or GB18030, every bad row located by its line.
//! - [`parquet`]: Parquet files with `text` and `labels` columns (`emoknow export parquet`'s).
//! - [`rows`]: what both return ([`Row`], [`Parsed`]) and the rules of a row's fields.
//! - [`split`]: the test/validation/train assignment (seeded, optionally in blocks).

pub mod parquet;
pub mod read;
pub mod rows;
pub mod split;

pub use read::{
    parse_bytes, parse_bytes_with, position_conflicts, read_file, read_file_with, ReadOptions,
};
pub use rows::{check_doc, Encoding, Format, Parsed, Row};
pub use split::{Split, SplitPlan};
