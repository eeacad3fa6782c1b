//! Knowledge about examples: LLM rationales (annotated or imported), their sanitizing, and
//! retrieved neighbours. Reads and writes the store; knows nothing of models.
//!
//! - [`llm`]: the OpenAI-compatible client (retries, rate limit, token counts).
//! - [`prompts`]: the seed's two prompts as editable data.
//! - [`annotate`]: the blind → guided annotation engine (no store access).
//! - [`llama_factory`]: dataset export for LLaMA-Factory and its predictions reader.
//! - [`sanitize`]: the reason part of an answer, stripped of emotion words.

pub mod annotate;
pub mod attach;
pub mod import;
pub mod llama_factory;
pub mod llm;
pub mod prompts;
pub mod retrieve;
pub mod sanitize;
