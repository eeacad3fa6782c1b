//! The embedded store: sled (source of truth) + tantivy (derived search index).

pub mod index;
pub mod records;
