//! Knowledge about examples: LLM rationales (annotated or imported), their sanitizing, and
//! retrieved neighbours. Reads and writes the store; knows nothing of models.
//!
//! The rationale side:
//! - [`llm`]: the OpenAI-compatible client (retries, rate limit, token counts).
//! - [`prompts`]: the seed's two prompts as editable data.
//! - [`annotate`]: the blind → guided annotation engine (no store access).
//! - [`pipeline`]: the engine run into the store (pending sentences, sanitized answers saved
//!   as they arrive), and the stored rationales as LLaMA-Factory records.
//! - [`sanitize`]: the reason part of an answer, stripped of emotion words; the labels an
//!   answer asserts.
//! - [`import`]: rationales written elsewhere (LLaMA-Factory predictions) into the store.
//! - [`llama_factory`]: dataset export for LLaMA-Factory and its predictions reader.
//! - [`score`]: an LLM source's asserted labels scored against gold (`eval --source`).
//!
//! Neighbours and classifier inputs:
//! - [`retrieve`]: similar labelled examples (dense cosine or BM25), neighbour knowledge, kNN.
//! - [`attach`]: what is appended to a sentence for classifiers, from the store.

pub mod annotate;
pub mod attach;
pub mod import;
pub mod llama_factory;
pub mod llm;
pub mod pipeline;
pub mod prompts;
pub mod retrieve;
pub mod sanitize;
pub mod score;
