//! Models: classifiers that turn texts (optionally with appended knowledge) into per-label
//! probabilities, and the thresholds that turn probabilities into label sets.
//!
//! - [`bert`]: our trainable BERT; [`encoder`]: sentence embeddings for the store.
//!   Inference runs through CPU kernels of our
//!   own (`kernels`: one gemm call per linear layer with bias/GELU/residual fused into a
//!   parallel pass, and a fused multi-head attention); training runs through candle's
//!   differentiable ops. Both give the same numbers (tested).
//! - [`sample`]: what a classifier consumes ([`Sample`](sample::Sample)) and what a model says
//!   it needs in its samples ([`Needs`](sample::Needs)). Models never read the store: the
//!   knowledge stage builds their samples.
//! - Classifiers: [`linear`] (TF-IDF + logistic regression), [`mlp`] (a head over stored
//!   embeddings), [`finetune`] (BERT end to end; its training loop is the private
//!   `finetune_train`, re-exported by [`finetune`]); [`classifier`] puts every kind, kNN and
//!   ensembles behind one interface; [`modeldir`] writes model directories atomically and
//!   checks them when loading.
//! - [`thresholds`]: per-label thresholds shared by all of them; every classifier outputs
//!   `[f32; 8]` probabilities in canonical label order.

pub mod bert;
pub mod classifier;
pub mod encoder;
pub mod finetune;
mod finetune_train;
mod kernels;
pub mod linear;
pub mod mlp;
pub mod modeldir;
pub mod sample;
pub mod thresholds;
mod train_kernels;

pub use bert::Pooling;
pub use encoder::{bench_embed, EmbedBench, Encoder, EncoderOptions};
pub use finetune::{FinetuneConfig, FinetuneEvent, FinetuneModel, HeadKind};
pub use linear::{HeadConfig, LinearConfig, LinearModel, LinearProgress};
pub use thresholds::{tune, Objective, Thresholds};

/// Keeps freed tensor buffers in the process heap instead of handing them back to the kernel.
///
/// candle allocates a fresh buffer for every op's output; with glibc's defaults each one above
/// 128 KiB is a new `mmap` whose pages are faulted in and zeroed, then `munmap`ed when the
/// tensor drops. Fine-tuning m3e-small spent a third of its time in the kernel that way. Raising
/// the mmap and trim thresholds lets malloc recycle those buffers (README's benchmarks give the
/// examples/s and system time measured with `examples/bench_finetune.rs` either way). Call once
/// at start-up; a no-op outside Linux with glibc, or when `EMOKNOW_DEFAULT_MALLOC` is set (to
/// measure the difference).
pub fn tune_allocator() {
    if std::env::var_os("EMOKNOW_DEFAULT_MALLOC").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
