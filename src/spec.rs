//! Plain descriptions shared by the store, the neighbours and the models: which encoder made
//! a vector, how neighbours were found, one neighbour, and the clock. They are data only — no
//! stage's logic — so every stage can name them without importing another stage.

use crate::corpus::Split;
use crate::labels::LabelSet;
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch, now (timestamps of records and models).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Example id: the source file's ID column when it has one, else assigned in file order.
pub type ExampleId = u64;

/// An encoder whose vectors the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderInfo {
    /// Stable id derived from the model's identity (config + weights + pooling + max length).
    pub id: String,
    /// Human name (the model directory's name).
    pub name: String,
    /// Vector dimension.
    pub dim: usize,
    /// Pooling (`mean`, `cls`).
    pub pooling: String,
    /// Maximum tokens per sentence.
    pub max_len: usize,
    /// Where the model was loaded from when embedding (to embed new text later).
    pub dir: String,
}

/// One neighbour in a neighbours record (`KnowledgeKind::Neighbours`) and in a classifier's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's example id.
    pub id: ExampleId,
    /// Similarity score (cosine, or BM25 when retrieved by keywords).
    pub score: f32,
    /// The neighbour's gold labels.
    pub labels: LabelSet,
}

/// How neighbours are found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighbourBy {
    /// Cosine over the stored text vectors of this encoder.
    Dense {
        /// The encoder's id (see [`EncoderInfo`]).
        encoder_id: String,
    },
    /// BM25 over the search index.
    Bm25,
}

/// The settings of a neighbours retrieval. Stored with a source's neighbour records, so that
/// whatever uses them knows exactly how they were found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NeighbourSpec {
    /// Dense (which encoder) or BM25.
    pub by: NeighbourBy,
    /// Neighbours per example.
    pub k: usize,
    /// The split neighbours come from (the pool).
    pub from: Split,
    /// Examples whose id is within this distance of the query's are never neighbours.
    pub exclude_within: u64,
}
