//! Knowledge about examples: LLM rationales, annotated or imported, and their sanitizing.
//! The classifier inputs built from it are [`crate::samples`]'.
//!
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

pub mod annotate;
pub mod import;
pub mod llama_factory;
pub mod llm;
pub mod pipeline;
pub mod prompts;
pub mod sanitize;
pub mod score;
