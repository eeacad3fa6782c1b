//! Test tooling: a local OpenAI-compatible server and tiny random BERT checkpoints.
//!
//! Used by tests (unit and integration), benches, examples and the `dev-server` and
//! `bench annotate` commands; never by the library's pipeline modules (corpus, store,
//! knowledge, model, metrics), which may import it only inside `#[cfg(test)]`. It is public so
//! that integration tests and the binary can reach it.
//!
//! - [`devserver`]: a scriptable chat-completions server on 127.0.0.1 (gold answers, guided
//!   mode, injected faults, request log).
//! - [`tiny`]: tiny seeded random BERT checkpoint directories (config, weights, vocab).
//! - [`vectors`]: seeded synthetic embedding-like vectors (clustered, low-rank) for benches.

pub mod devserver;
pub mod tiny;
pub mod vectors;
