//! Black-box tests of the emoknow binary, one test binary (`cargo test --test integration`).
//! Each test gets a temporary store; fixtures are written by the tests themselves.

mod util;

mod ann_cli;
mod annotate_cli;
mod context_cli;
mod context_frozen;
mod decisions_cli;
mod docs;
mod errors_cli;
mod export_cli;
mod model_cli;
mod neighbours_cli;
mod packed_cli;
mod reliability3;
mod reliability_fuzz;
mod reliability_index;
mod reliability_llm;
mod reliability_models;
mod reliability_retrieve;
mod reliability_store;
mod retrieval_cli;
mod serve_browser;
mod serve_cli;
mod store_cli;
mod text_style_cli;
mod vector_files_cli;
