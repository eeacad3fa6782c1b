//! Neighbours: the labelled examples most similar to a sentence, as a typed concept.
//!
//! A [`NeighbourSpec`](crate::spec::NeighbourSpec) says how they are found (dense with which
//! encoder, or BM25; k; the pool split; what to exclude). A [`Retriever`] opens a spec over the
//! store; [`records`] stores each example's neighbours as knowledge, recording the spec beside
//! them, and reads it back; [`Embedder`] embeds new text with the encoder whose stored vectors
//! it is compared with.
//!
//! - [`search`]: the [`NeighbourSearch`] seam and exact [`BruteForce`] cosine search.
//! - [`ann`]: the approximate index (usearch HNSW) per encoder, persisted beside the store.
//! - [`pool`]: the pool of labelled examples and retrieval over it (dense or BM25).
//! - [`retriever`]: a spec (or a user's [`Choice`]) opened over the store.
//! - [`embed`]: [`Embedder`] and the choice of encoder ([`pick_encoder`]).
//! - [`records`]: neighbours stored as knowledge, resumably; the spec of a stored source.
//! - [`vote`]: what the neighbours say, a similarity-weighted vote of their labels.
//! - [`packed`]: a dense pool packed into a model directory, so that the model retrieves for
//!   new text without the store.

pub mod ann;
pub mod embed;
pub mod packed;
pub mod pool;
pub mod records;
pub mod retriever;
pub mod search;
pub mod vote;

pub use ann::{AnnIndex, AnnParams, AnnSearch, Quantization, SearchMode};
pub use embed::{pick_encoder, Embedder};
pub use packed::PackedPool;
pub use pool::{Hit, Pool, Probe};
pub use records::{neighbours_knowledge, retrieve_into_store, stored_spec, RetrieveSummary};
pub use retriever::{By, Choice, Retriever};
pub use search::{BruteForce, NeighbourSearch};
pub use vote::knn_vote;
