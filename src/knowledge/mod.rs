//! Knowledge about examples, and the classifier inputs built from it.
//!
//! The rationale side: LLM rationales, annotated or imported, and their sanitizing. The input
//! side: [`samples`] reads the store (or retrieves and embeds for new text, through
//! [`crate::neighbours`]) and builds the samples a model's needs describe.
//!
//! - [`llm`]: the OpenAI-compatible client (retries, rate limit, token counts).
//! - [`prompts`]: the seed's two prompts as editable data.
//! - [`annotate`]: the blind → guided annotation engine (no store access).
//! - [`import`]: rationales from a prediction file into the store.
//! - [`llama_factory`]: dataset export for LLaMA-Factory and its predictions reader.
//! - [`sanitize`]: the reason part of an answer, stripped of emotion words.
//! - [`samples`]: classifier inputs for stored examples and new text.

pub mod annotate;
pub mod import;
pub mod llama_factory;
pub mod llm;
pub mod prompts;
pub mod samples;
pub mod sanitize;
