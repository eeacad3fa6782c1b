//! `bench annotate`: annotation throughput against a local chat-completions server with
//! simulated latency, per `--jobs`.

use crate::cli::{output, Ctx};
use emoknow::knowledge::annotate::{annotate, AnnotateConfig, Item};
use emoknow::knowledge::llm::{LlmClient, LlmConfig};
use emoknow::knowledge::prompts::Prompts;
use emoknow::labels::{Emotion, LabelSet};
use emoknow::testkit::devserver::{Behaviour, DevServer};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

/// Annotation throughput against a local chat-completions server with simulated latency:
/// items/s with each --jobs value, and the speedup of the largest over --jobs 1 (the
/// baseline, same items, same run).
///
/// Example: cargo run --release -- bench annotate --latency-ms 50 --jobs 1 --jobs 16
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// Items per run.
    #[arg(long, default_value_t = 320)]
    items: usize,

    /// Simulated server latency per request, milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,

    /// Concurrent requests (repeatable; the first is the baseline).
    #[arg(long = "jobs", default_values_t = vec![1, 16])]
    jobs: Vec<usize>,
}

pub(super) fn run(a: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let pb = output::spinner("annotating against the local server", ctx.quiet);
    let r = bench_throughput(a.items, a.latency_ms, &a.jobs)?;
    pb.finish_and_clear();
    let base = a.jobs[0];
    if ctx.json {
        output::print_json(&r)?;
    } else {
        println!(
            "{} items, {} ms simulated latency per request",
            a.items, r.latency_ms
        );
        for run in &r.runs {
            println!(
                "--jobs {:<3} {:>8.1} items/s  ({} requests in {:.2} s)  ×{:.1} vs --jobs {base}",
                run.jobs,
                run.items_per_sec,
                run.requests,
                run.elapsed_secs,
                r.speedup(run.jobs, base).unwrap_or(1.0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One measured run of [`bench_throughput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ThroughputRun {
    /// Worker threads.
    jobs: usize,
    /// Items annotated.
    items: usize,
    /// HTTP requests sent.
    requests: u64,
    /// Wall time, seconds.
    elapsed_secs: f64,
    /// Items per second.
    items_per_sec: f64,
}

/// The result of [`bench_throughput`].
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ThroughputReport {
    /// Simulated server latency per request, milliseconds.
    latency_ms: u64,
    /// One run per `jobs` value, in the order given.
    runs: Vec<ThroughputRun>,
}

impl ThroughputReport {
    /// items/s of the run with `jobs_a` divided by that with `jobs_b`, if both ran.
    fn speedup(&self, jobs_a: usize, jobs_b: usize) -> Option<f64> {
        let rate = |j| {
            self.runs
                .iter()
                .find(|r| r.jobs == j)
                .map(|r| r.items_per_sec)
        };
        Some(rate(jobs_a)? / rate(jobs_b)?)
    }
}

/// Measures annotation throughput against a local [`DevServer`] answering every request
/// after `latency_ms`: the same `n` gold-labelled items are annotated once per entry of
/// `jobs_list` (each with a fresh client), all blind-accepted. With latency-bound requests,
/// items/s should grow almost linearly with jobs.
///
/// Errors: if any item is not accepted (the benchmark would be measuring something else).
fn bench_throughput(
    n: usize,
    latency_ms: u64,
    jobs_list: &[usize],
) -> emoknow::Result<ThroughputReport> {
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            id: i as u64,
            text: format!("基准 句子 第 {i} 条 今天 天气 很 好"),
            gold: Some(LabelSet::from_emotions([Emotion::from_index(i % 8)])),
            shots: Vec::new(),
        })
        .collect();
    let behaviour = Behaviour {
        latency_ms,
        ..Behaviour::default()
    }
    .with_gold(
        items
            .iter()
            .map(|it| (it.text.clone(), it.gold.unwrap_or_default())),
    );
    let server = DevServer::start(behaviour)?;
    let prompts = Prompts::default();
    let mut runs = Vec::new();
    for &jobs in jobs_list {
        let mut llm = LlmConfig::new(server.base_url(), "bench-model");
        llm.timeout_secs = 30.0;
        let client = LlmClient::new(llm)?;
        let cfg = AnnotateConfig {
            jobs,
            ..AnnotateConfig::default()
        };
        let cancel = AtomicBool::new(false);
        let s = annotate(
            &client,
            &prompts,
            items.clone(),
            &cfg,
            &cancel,
            &mut |_| Ok(()),
            &mut |_| {},
        )?;
        if s.accepted != n {
            return Err(emoknow::Error::Invalid(format!(
                "benchmark run with {jobs} jobs accepted {} of {n} items",
                s.accepted
            )));
        }
        runs.push(ThroughputRun {
            jobs,
            items: n,
            requests: s.requests,
            elapsed_secs: s.elapsed_secs,
            items_per_sec: n as f64 / s.elapsed_secs,
        });
    }
    Ok(ThroughputReport { latency_ms, runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The binary warns on unwrap even in tests (main.rs), so these return errors instead.
    #[test]
    fn bench_throughput_runs_every_jobs_value() -> emoknow::Result<()> {
        let r = bench_throughput(6, 0, &[1, 3])?;
        assert_eq!(
            r.runs
                .iter()
                .map(|r| (r.jobs, r.items, r.requests))
                .collect::<Vec<_>>(),
            [(1, 6, 6), (3, 6, 6)]
        );
        assert!(r.speedup(3, 1).is_some_and(|x| x > 0.0));
        Ok(())
    }

    /// The acceptance benchmark (jobs 16 ≥ 12× jobs 1 at 50 ms latency). Timing-dependent, so
    /// not in the default suite: `cargo test --release --bin emoknow bench::annotate::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_report() -> emoknow::Result<()> {
        let r = bench_throughput(320, 50, &[1, 16])?;
        for run in &r.runs {
            println!(
                "jobs {:>2}: {} items in {:.2} s = {:.1} items/s",
                run.jobs, run.items, run.elapsed_secs, run.items_per_sec
            );
        }
        if let Some(x) = r.speedup(16, 1) {
            println!("speedup 16 vs 1: {x:.1}x");
        }
        Ok(())
    }
}
