//! Knowledge about examples: LLM rationales (annotated or imported), their sanitizing, and
//! retrieved neighbours. Reads and writes the store; knows nothing of models.

pub mod sanitize;
pub mod import;
pub mod retrieve;
pub mod attach;
