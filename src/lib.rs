//! emoknow: an embedded knowledge store and toolkit for LLM-knowledge-augmented, multi-label
//! Chinese emotion classification.
//!
//! Data flows one way, each stage a module that knows only the stages before it:
//!
//! ```text
//! corpus ─▶ store ─▶ knowledge / neighbours ─▶ model ─▶ metrics
//! ```
//!
//! - [`corpus`] reads labelled sentences (three formats, three encodings) and draws splits.
//! - [`store`] keeps examples, knowledge records and neighbours (sled, the source of truth),
//!   vectors (flat memory-mapped files committed through sled) and a full-text index derived
//!   from the records (tantivy).
//! - [`knowledge`] annotates and imports LLM rationales; [`neighbours`] retrieves similar
//!   labelled examples as a typed concept ([`spec::NeighbourSpec`]), storing them as knowledge.
//!   Both it and [`model`] embed with [`encoder`] (our BERT, its CPU kernels and sentence
//!   vectors), a part below them that reads nothing of the store.
//! - [`samples`] builds what a model reads — text, rationale, neighbours, context, vectors —
//!   for stored examples and for new text: the hub that train, eval and predict share.
//! - [`model`] turns samples into probabilities and label sets; it reads nothing but the
//!   samples it is given. [`metrics`] scores label sets.
//! - [`export`] writes the store as Parquet for engines beyond one machine (a sink beside the
//!   flow: it reads the store; `corpus` reads its files back).
//! - [`labels`], [`spec`], [`text`] (how a corpus is written, and the normalizer that brings
//!   new text into that style) and [`error`] are the shared vocabulary; [`testkit`] is test tooling
//!   (a local OpenAI-compatible server, tiny random checkpoints) that the stages never use.
//! - Two front ends sit on top of the flow and nothing in it imports them: the `emoknow`
//!   command line, and [`serve`] (an HTTP API and web pages). [`views`] builds the documents
//!   both show, so `query --json` and `GET /api/query` say the same thing; [`batch`] lets
//!   concurrent callers (requests, Python threads) share one model's passes; [`temps`] removes
//!   half-written files when a command is stopped.
//!
//! A whole round trip — ingest, train the linear classifier, predict a new sentence:
//!
//! ```
//! use emoknow::corpus::{parse_bytes, SplitPlan};
//! use emoknow::samples::{training_examples, SampleBuilder, Selection};
//! use emoknow::model::classifier::{self, KindConfig, Model, TrainConfig, TrainInputs};
//! use emoknow::model::{LinearConfig, Objective};
//! use emoknow::store::Store;
//!
//! # fn main() -> emoknow::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| emoknow::Error::io("tempdir", e))?;
//! let mut csv = String::from("ID,Text,Labels\n");
//! for i in 1..=60 {
//!     let (text, labels) = match i % 3 {
//!         0 => ("我 很 担心 明天 的 考试", "['Anxiety']"),
//!         1 => ("孩子 们 笑 得 很 开心", "\"['Joy', 'Love']\""),
//!         _ => ("这种 行为 令人 厌恶", "\"['Hate', 'Anger']\""),
//!     };
//!     csv.push_str(&format!("{i},{text} {i},{labels}\n"));
//! }
//! let parsed = parse_bytes("c.csv".as_ref(), csv.as_bytes())?;
//! let ids: Vec<u64> = parsed.rows.iter().filter_map(|r| r.id).collect();
//! let plan = SplitPlan { test_rows: 6, val_fraction: 0.2, ..SplitPlan::default() };
//! let store = Store::open_or_create(&dir.path().join("store"))?;
//! store.ingest("c.csv", &parsed.rows, &plan.assign(&ids), false)?;
//!
//! // Train: the knowledge stage builds the samples the model needs, the model trains on them.
//! let cfg = TrainConfig {
//!     kind: KindConfig::Linear(LinearConfig::default()),
//!     attach: Default::default(),
//!     objective: Objective::Micro,
//!     decode_sets: false,
//!     seed: 42,
//! };
//! let out = dir.path().join("linear");
//! let prepared = classifier::prepare(&cfg, &out)?;
//! let (train, val) = training_examples(&store, &cfg.attach, &Selection::default())?;
//! let mut builder = SampleBuilder::new(&store);
//! let inputs = TrainInputs {
//!     train: builder.examples(&cfg.needs(), &train, false)?,
//!     val: builder.examples(&cfg.needs(), &val, true)?,
//!     member_val: Vec::new(),
//!     text: store.normalizer()?,
//!     pool: None,
//! };
//! classifier::train(&cfg, prepared, inputs, &mut |_| {})?;
//!
//! // Predict a sentence the store does not hold.
//! let model = Model::load(&out)?;
//! let inputs = builder.for_model_texts(&model, &["明天 考试 我 很 担心".to_string()], None)?;
//! let (_, labels) = model.predict(&inputs)?;
//! assert_eq!(labels[0].to_string(), "Anxiety");
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
// No panic reachable from user input or store contents: library code returns errors. Tests may
// unwrap.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod batch;
pub mod corpus;
pub mod encoder;
pub mod error;
pub mod export;
pub mod knowledge;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod neighbours;
pub mod samples;
pub mod serve;
pub mod spec;
pub mod store;
pub mod temps;
pub mod testkit;
pub mod text;
pub mod views;

pub use error::{Error, Result};
