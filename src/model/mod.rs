//! Models: classifiers that turn texts (optionally with appended knowledge) into per-label
//! probabilities, and the thresholds that turn probabilities into label sets.
//!
//! The BERT network they fine-tune and embed with is [`crate::encoder`]'s, a stage below both
//! this one and [`crate::neighbours`].
//! - [`sample`]: what a classifier consumes ([`Sample`](sample::Sample)) and what a model says
//!   it needs in its samples ([`Needs`](sample::Needs)). Models never read the store: the
//!   knowledge stage builds their samples.
//! - Classifiers: [`linear`] (TF-IDF + logistic regression), [`mlp`] (a head over stored
//!   embeddings), [`finetune`] (BERT end to end; its training loop is the private
//!   `finetune_train`, re-exported by [`finetune`]); [`classifier`] puts every kind, kNN and
//!   ensembles behind one interface; [`modeldir`] writes model directories atomically and
//!   checks them when loading.
//! - [`thresholds`]: per-label thresholds shared by all of them; every classifier outputs
//!   `[f32; 8]` probabilities in canonical label order. [`calibration`]: per-label Platt
//!   scaling fitted on validation, and expected calibration error; [`decode`]: choosing a whole
//!   label set from the calibrated probabilities and the training label sets.

pub mod calibration;
pub mod classifier;
pub mod decode;
pub mod finetune;
mod finetune_train;
pub mod linear;
pub mod mlp;
pub mod modeldir;
pub mod sample;
pub mod thresholds;

pub use finetune::{FinetuneConfig, FinetuneEvent, FinetuneModel, HeadKind};
pub use linear::{ContextInput, HeadConfig, LinearConfig, LinearModel, LinearProgress};
pub use thresholds::{tune, Objective, Thresholds};

/// Keeps freed tensor buffers in the process heap instead of handing them back to the kernel.
///
/// candle allocates a fresh buffer for every op's output; with glibc's defaults each one above
/// 128 KiB is a new `mmap` whose pages are faulted in and zeroed, then `munmap`ed when the
/// tensor drops. Fine-tuning m3e-small spent a third of its time in the kernel that way. Raising
/// the mmap and trim thresholds lets malloc recycle those buffers (docs/benchmarks.md gives the
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

/// Keeps candle's own thread pool from competing with the matrix products for the cores.
///
/// candle 0.11 runs its elementwise ops (≥ 64 Ki elements: the gradient sums of backprop, for
/// one) on a pool of its own beside rayon's, and after each op its workers spin
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` times (25,000 by default) before parking. Fine-tuning runs
/// thousands of such ops a step between rayon's gemm calls: on 2 cores the spinning worker took
/// 9–11% of the CPU (`perf record` of `examples/bench_finetune`), and once it parked at once,
/// the calling thread spent 3% waiting for it to wake. So, on up to 2 cores, candle gets no
/// worker (`CANDLE_NUM_THREADS=1`: its elementwise ops run on the calling thread); on more
/// cores, where a serial op would leave more of the machine idle, its workers park at once
/// (`CANDLE_BARRIER_POOL_SPIN_LIMIT=0`; measured on 2 cores only). docs/benchmarks.md gives
/// the A/B pairs. For fine-tuning only: training the frozen head, whose time goes to candle's
/// elementwise ops, took ×1.11 the wall time without the worker (×1.02 with it parked), so
/// `main` calls this for `train --classifier finetune` alone. Call at start-up, before the
/// first candle op creates the pool; a variable already in the environment wins.
pub fn tune_candle_threads() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (var, value) = candle_thread_setting(cores);
    if std::env::var_os(var).is_none() {
        std::env::set_var(var, value);
    }
}

/// The variable [`tune_candle_threads`] sets (where the environment has none) on `cores` cores.
fn candle_thread_setting(cores: usize) -> (&'static str, &'static str) {
    if cores <= 2 {
        ("CANDLE_NUM_THREADS", "1")
    } else {
        ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0")
    }
}

/// Serves every allocation from the heap, none by `mmap`, for the rest of the process.
///
/// [`tune_allocator`] can only raise the mmap threshold to glibc's maximum, 32 MiB, and
/// fine-tuning allocated buffers above it every step (candle built the 21,128 × 512
/// word-embedding gradient, 43 MB, three times a step before that gradient came as rows): each
/// was a fresh mapping, faulted in page by page and unmapped after, half the page faults of a
/// training run. Training calls this; the freed
/// buffers then stay in the heap for the next step (`examples/bench_finetune`: 214,000 page
/// faults instead of 425,000–462,000 over 480 rows). A no-op where [`tune_allocator`] is, and
/// under `EMOKNOW_DEFAULT_MALLOC`.
pub(crate) fn keep_large_buffers() {
    if std::env::var_os("EMOKNOW_DEFAULT_MALLOC").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (glibc takes its own lock).
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::candle_thread_setting;

    #[test]
    fn candle_gets_no_worker_on_two_cores_and_parked_workers_on_more() {
        for cores in [1, 2] {
            assert_eq!(candle_thread_setting(cores), ("CANDLE_NUM_THREADS", "1"));
        }
        for cores in [3, 64] {
            let want = ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
            assert_eq!(candle_thread_setting(cores), want);
        }
    }
}
