//! `emoknow bench`: end-to-end benchmarks, each against a baseline measured in the same run.

use super::{output, Ctx};
use emoknow::corpus;
use emoknow::knowledge::annotate::{annotate, AnnotateConfig, Item};
use emoknow::knowledge::import::{import_file, Alignment, Field, ImportConfig};
use emoknow::knowledge::llm::{LlmClient, LlmConfig};
use emoknow::knowledge::prompts::Prompts;
use emoknow::knowledge::sanitize::Lexicon;
use emoknow::labels::{Emotion, LabelSet};
use emoknow::neighbours::{AnnParams, Quantization};
use emoknow::store::index::tokenize;
use emoknow::store::{Filter, QuerySpec, Store};
use emoknow::testkit::devserver::{Behaviour, DevServer};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The ANN index's parameters, as bench flags.
#[derive(clap::Args, Debug)]
struct AnnArgs {
    /// ANN graph degree (HNSW M).
    #[arg(long = "m", default_value_t = AnnParams::default().connectivity)]
    connectivity: usize,

    /// ANN candidates kept while inserting (ef_construction).
    #[arg(long, default_value_t = AnnParams::default().expansion_add)]
    ef_construction: usize,

    /// ANN candidates kept while searching (ef); repeat to compare several on one index.
    #[arg(long = "ef", default_values_t = [AnnParams::default().expansion_search])]
    ef: Vec<usize>,

    /// Scalar type inside the ANN index (f32, f16, i8); repeat to compare (one build each).
    #[arg(long, default_values_t = [AnnParams::default().quantization])]
    quantization: Vec<Quantization>,

    /// Candidates per neighbour re-ranked by exact cosine (1: none); repeat to compare.
    #[arg(long, default_values_t = [emoknow::neighbours::ann::RERANK_FACTOR])]
    rerank: Vec<usize>,
}

impl AnnArgs {
    /// One parameter set per quantization (the first `ef` as its search setting).
    fn params(&self) -> Vec<AnnParams> {
        self.quantization
            .iter()
            .map(|&quantization| AnnParams {
                connectivity: self.connectivity,
                expansion_add: self.ef_construction,
                expansion_search: self.ef[0],
                quantization,
            })
            .collect()
    }
}

/// Measure emoknow's speed against baselines measured in the same run.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    Store(StoreArgs),
    Annotate(AnnotateArgs),
    Embed(EmbedArgs),
    Similar(SimilarArgs),
    Scale(ScaleArgs),
    Serve(ServeArgs),
}

/// Dense retrieval at scale (vectors part): generates --rows synthetic vectors (seeded
/// clusters with a low-rank spread, like sentence embeddings; not stored), builds the ANN
/// index (time, peak memory), then on --queries queries: recall@k against exact search and
/// query p50 against exact search (one query per matmul) in the same run; then a
/// retrieve-like pass, k neighbours of every one of --retrieve-rows rows through the index on
/// all cores, measured inside the bench (as `knowledge retrieve` would search, without the
/// store writes).
///
/// Example: emoknow bench scale --rows 1000000 --dim 512
#[derive(clap::Args, Debug)]
struct ScaleArgs {
    /// Vectors to generate.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,

    /// Their dimension (m3e-small: 512).
    #[arg(long, default_value_t = 512)]
    dim: usize,

    /// Clusters the vectors are drawn around.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,

    /// Queries for recall and latency (rows of the set; each excludes itself).
    #[arg(long, default_value_t = 1000)]
    queries: usize,

    /// Neighbours per query.
    #[arg(short, default_value_t = 10, value_parser = super::bounds::k)]
    k: usize,

    /// Rows of the retrieve-like pass [default: all].
    #[arg(long)]
    retrieve_rows: Option<usize>,

    #[command(flatten)]
    ann: AnnArgs,
}

/// Latency and throughput of `emoknow serve` on loopback: keyword queries (`GET /api/query`)
/// and one-sentence predictions (`POST /api/predict`) from N concurrent clients (threads with
/// their own HTTP connection), each run bounded by --requests and --seconds.
///
/// The corpus is ingested into a temporary store with its rationales, and a linear model is
/// trained there (about 10 s) unless --model is given. Clients and server share the machine.
///
/// Example: cargo run --release -- bench serve --clients 1 --clients 8 --clients 64
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The corpus (seed layout).
    #[arg(long, default_value = "data/Train.csv")]
    corpus: PathBuf,

    /// Rationales to import (LLaMA-Factory JSONL for ids 1..), as the demo does.
    #[arg(long, default_value = "data/generated_predictions.jsonl")]
    predictions: PathBuf,

    /// Model directory to serve [default: a linear model trained on the corpus here]. It must
    /// not need knowledge the temporary store lacks (stored neighbours).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,

    /// Concurrent clients (repeatable).
    #[arg(long = "clients", default_values_t = vec![1, 8, 64])]
    clients: Vec<usize>,

    /// Requests per run (one endpoint, one number of clients).
    #[arg(long, default_value_t = 2000)]
    requests: usize,

    /// Longest run in seconds: a run stops sending when it is reached.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

/// Dense top-k retrieval over the store's stored text vectors: one query at a time, and
/// batched through one matmul, against a plain loop of dot products (the baseline); then
/// through an ANN index built in memory: recall@k against the exact answers and its p50
/// against one query per matmul, in the same run.
///
/// Needs a store with embeddings (`emoknow embed`).
///
/// Example: emoknow bench similar -k 10 --queries 500
#[derive(clap::Args, Debug)]
struct SimilarArgs {
    /// Neighbours per query.
    #[arg(short, default_value_t = 10, value_parser = super::bounds::k)]
    k: usize,

    /// Queries: the first stored vectors of the encoder, in the store's order.
    #[arg(long, default_value_t = 500)]
    queries: usize,

    /// Stored encoder (id, id prefix or name) [default: the only one].
    #[arg(long)]
    encoder: Option<String>,

    #[command(flatten)]
    ann: AnnArgs,
}

/// Embedding throughput of an encoder on the corpus: (a) corpus order in batches of 32 — the
/// baseline, what a plain loop does — and (b) length-sorted batches of 64, in one run (so
/// --batch is refused).
///
/// scripts/bench_embed_torch.py runs the same two setups in PyTorch (when torch is installed)
/// and prints its ratio to these numbers.
///
/// Example: cargo run --release -- bench embed --encoder ../models/m3e-small --max-len 64
#[derive(clap::Args, Debug)]
struct EmbedArgs {
    #[command(flatten)]
    encoder: super::embed::EncoderArgs,

    /// The corpus (any format `ingest` reads).
    #[arg(long, default_value = "data/Train.csv")]
    corpus: PathBuf,

    /// Sentences to embed (from the start of the corpus; 0 = all).
    #[arg(long, default_value_t = 2000)]
    sentences: usize,
}

/// Annotation throughput against a local chat-completions server with simulated latency:
/// items/s with each --jobs value, and the speedup of the largest over --jobs 1 (the
/// baseline, same items, same run).
///
/// Example: cargo run --release -- bench annotate --latency-ms 50 --jobs 1 --jobs 16
#[derive(clap::Args, Debug)]
struct AnnotateArgs {
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

/// Ingest + index the corpus into a fresh temporary store, then time keyword and
/// label+keyword queries on the store opened again. `--rows 1000000` repeats the corpus to a
/// million sentences (about 2 minutes, 5 GB of memory, 0.5 GB on disk).
///
/// Baselines: parsing the file alone (the floor for ingest), and a brute-force scan of every
/// example's text and knowledge in memory (what a notebook would do) for queries.
///
/// Example: cargo run --release -- bench store
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// The corpus (seed layout).
    #[arg(long, default_value = "data/Train.csv")]
    corpus: PathBuf,

    /// Rationales to import (LLaMA-Factory JSONL for ids 1..), as the demo does.
    #[arg(long, default_value = "data/generated_predictions.jsonl")]
    predictions: PathBuf,

    /// Queries per kind.
    #[arg(long, default_value_t = 300)]
    queries: usize,

    /// Rows to ingest: the corpus is repeated with new ids (1, 2, …) until it has this many
    /// (0: the corpus as it is). `--rows 1000000` is the 1M-sentence scale run.
    #[arg(long, default_value_t = 0)]
    rows: usize,

    /// Then give every row a synthetic vector (clustered, as `bench scale` makes them), build
    /// the ANN index and store k = 10 training neighbours for every row through the code of
    /// `index build` and `knowledge retrieve` (store writes included), timing each step.
    #[arg(long)]
    retrieve: bool,

    /// Dimension of the --retrieve vectors.
    #[arg(long, default_value_t = 512, requires = "retrieve")]
    dim: usize,
}

#[derive(Serialize, Default)]
struct StoreBench {
    rows: usize,
    store_bytes: u64,
    peak_rss_mb: f64,
    parse_secs: f64,
    ingest_secs: f64,
    ingest_vs_parse: f64,
    import_secs: f64,
    knowledge_records: usize,
    queries: usize,
    keyword_p50_ms: f64,
    keyword_p95_ms: f64,
    label_keyword_p50_ms: f64,
    label_keyword_p95_ms: f64,
    scan_keyword_p50_ms: f64,
    speedup_vs_scan: f64,
    mean_hits: f64,
    /// With --retrieve.
    #[serde(skip_serializing_if = "Option::is_none")]
    retrieve: Option<RetrieveBench>,
}

/// `bench store --retrieve`: dense neighbours for every row of the store.
#[derive(Serialize, Default)]
struct RetrieveBench {
    vectors: usize,
    dim: usize,
    vectors_secs: f64,
    index_secs: f64,
    approximate: bool,
    retrieve_examples: usize,
    retrieve_secs: f64,
    retrieve_rows_per_sec: f64,
    store_bytes_after: u64,
    peak_rss_mb_after: f64,
}

/// Stores a synthetic vector for every example, builds the ANN index and retrieves k = 10
/// training neighbours for every example, as `index build` and `knowledge retrieve` do.
fn retrieve_all(
    store: &Store,
    dir: &std::path::Path,
    dim: usize,
    ctx: &Ctx,
) -> anyhow::Result<RetrieveBench> {
    use emoknow::neighbours::{ann, retrieve_into_store, By, Choice, Retriever};
    use emoknow::spec::EncoderInfo;
    use emoknow::store::vectors::What;
    let interrupted = || super::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
    let ids: Vec<u64> = store.examples(None)?.iter().map(|e| e.id).collect();
    let mut r = RetrieveBench {
        vectors: ids.len(),
        dim,
        ..Default::default()
    };
    let info = EncoderInfo {
        id: format!("synthetic-{dim}"),
        name: "synthetic".into(),
        dim,
        pooling: "mean".into(),
        max_len: 0,
        dir: String::new(),
    };
    let t = Instant::now();
    let set = emoknow::testkit::vectors::clustered(ids.len(), dim, 1000, 7)?;
    store.put_encoder(&info)?;
    let pb = output::bar(ids.len() as u64, "storing vectors", ctx.quiet);
    for (c, chunk) in ids.chunks(65_536).enumerate() {
        let items: Vec<(u64, Vec<f32>)> = chunk
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, set.row(c * 65_536 + i).to_vec()))
            .collect();
        store.put_vectors(&info, &What::Text, &items)?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    drop(set);
    r.vectors_secs = t.elapsed().as_secs_f64();

    let pb = output::bar(ids.len() as u64, "indexing", ctx.quiet);
    let t = Instant::now();
    ann::build(
        store,
        &info,
        &|d, _| pb.set_position(d as u64),
        &interrupted,
    )?;
    r.index_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let retriever = Retriever::choose(
        store,
        &Choice {
            by: Some(By::Dense),
            encoder: Some(info.id.clone()),
            ..Choice::nearest(10)
        },
    )?;
    r.approximate = retriever.approximate();
    let pb = output::bar(ids.len() as u64, "retrieving", ctx.quiet);
    let t = Instant::now();
    let s = retrieve_into_store(
        store,
        &retriever,
        "knn-synthetic",
        None,
        true,
        &interrupted,
        &mut |done, _| pb.set_position(done as u64),
    )?;
    r.retrieve_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    r.retrieve_examples = s.examples;
    r.retrieve_rows_per_sec = s.examples as f64 / r.retrieve_secs;
    r.store_bytes_after = dir_bytes(dir)?;
    r.peak_rss_mb_after = peak_rss_mb();
    Ok(r)
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Store(a) => bench_store(a, ctx),
        Sub::Annotate(a) => bench_annotate(a, ctx),
        Sub::Embed(a) => bench_embed(a, ctx),
        Sub::Similar(a) => bench_similar(a, ctx),
        Sub::Scale(a) => bench_scale(a, ctx),
        Sub::Serve(a) => bench_serve(a, ctx),
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn bench_store(a: StoreArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut b = StoreBench::default();
    let t = Instant::now();
    let mut parsed = corpus::read_file(&a.corpus)?;
    b.parse_secs = t.elapsed().as_secs_f64();
    if a.rows > 0 {
        let read = parsed.rows.len().max(1);
        parsed.rows = replicate(&parsed.rows, a.rows);
        // Parsing scales with the rows: the floor for the larger corpus.
        b.parse_secs *= a.rows as f64 / read as f64;
    }
    b.rows = parsed.rows.len();

    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let store = Store::open_or_create(dir.path())?;
    let plan = corpus::SplitPlan {
        test_rows: 1000,
        val_fraction: 0.08,
        ..Default::default()
    };
    let keys: Vec<u64> = parsed.rows.iter().map(|r| r.id.unwrap_or(0)).collect();
    let splits = plan.assign(&keys);
    store.ingest("Train.csv", &parsed.rows, &splits, false)?;
    b.ingest_secs = t.elapsed().as_secs_f64();
    b.ingest_vs_parse = b.ingest_secs / b.parse_secs;
    drop(parsed.rows.split_off(1000.min(parsed.rows.len())));
    b.store_bytes = dir_bytes(dir.path())?;
    ctx.note(format!(
        "ingest + index of {} rows: {:.2}s (parse alone {:.3}s)",
        b.rows, b.ingest_secs, b.parse_secs
    ));

    let t = Instant::now();
    let lex = Lexicon::default();
    for (source, field) in [
        ("qwen-max", Field::Label),
        ("chatglm3-lora", Field::Predict),
    ] {
        let s = import_file(
            &store,
            &a.predictions,
            &ImportConfig {
                source: source.into(),
                field,
                align: Alignment::FirstId(1),
                model: None,
            },
            &lex,
        )?;
        b.knowledge_records += s.imported;
    }
    b.import_secs = t.elapsed().as_secs_f64();
    // Queries run on the store opened again, as a later command finds it (not in the wake of
    // the ingest's writes and the writer's caches).
    drop(store);
    let store = Store::open(dir.path())?;

    let keywords = bench_keywords(
        parsed.rows.iter().take(1000).map(|r| r.text.as_str()),
        a.queries,
    );
    b.queries = keywords.len();
    let pb = output::bar(3 * keywords.len() as u64, "querying", ctx.quiet);
    let mut kw = Vec::new();
    let mut lkw = Vec::new();
    let mut hits = 0usize;
    let _ = store.query(&QuerySpec {
        keyword: Some("预热".into()),
        limit: 10,
        ..Default::default()
    })?; // load jieba outside the timings
    for (i, k) in keywords.iter().enumerate() {
        let spec = QuerySpec {
            keyword: Some(k.clone()),
            limit: 10,
            ..Default::default()
        };
        let t = Instant::now();
        hits += store.query(&spec)?.len();
        kw.push(t.elapsed().as_secs_f64() * 1e3);
        let spec = QuerySpec {
            filter: Filter {
                emotions: LabelSet::from_emotions([Emotion::from_index(i % 8)]),
                ..Default::default()
            },
            ..spec
        };
        let t = Instant::now();
        store.query(&spec)?;
        lkw.push(t.elapsed().as_secs_f64() * 1e3);
        pb.inc(2);
    }
    b.mean_hits = hits as f64 / keywords.len().max(1) as f64;

    // Baseline: everything in memory, substring test of every token over every text.
    let examples = store.examples(None)?;
    let knowledge = store.all_knowledge(None)?;
    let mut scan = Vec::new();
    for k in &keywords {
        let t = Instant::now();
        let toks = tokenize(k);
        let mut n = 0;
        for e in &examples {
            if toks.iter().all(|w| e.text.contains(w.as_str())) {
                n += 1;
            }
        }
        for kn in &knowledge {
            if toks
                .iter()
                .all(|w| kn.raw.contains(w.as_str()) || kn.sanitized.contains(w.as_str()))
            {
                n += 1;
            }
        }
        std::hint::black_box(n);
        scan.push(t.elapsed().as_secs_f64() * 1e3);
        pb.inc(1);
    }
    pb.finish_and_clear();
    b.keyword_p50_ms = percentile(&mut kw, 0.5);
    b.keyword_p95_ms = percentile(&mut kw, 0.95);
    b.label_keyword_p50_ms = percentile(&mut lkw, 0.5);
    b.label_keyword_p95_ms = percentile(&mut lkw, 0.95);
    b.scan_keyword_p50_ms = percentile(&mut scan, 0.5);
    b.speedup_vs_scan = b.scan_keyword_p50_ms / b.keyword_p50_ms;
    b.peak_rss_mb = peak_rss_mb();
    if a.retrieve {
        b.retrieve = Some(retrieve_all(&store, dir.path(), a.dim, ctx)?);
    }
    if ctx.json {
        output::print_json(&b)?;
    } else {
        println!("corpus                  {} rows", b.rows);
        println!(
            "ingest + index          {:.2} s   (parse alone {:.3} s, ×{:.1})",
            b.ingest_secs, b.parse_secs, b.ingest_vs_parse
        );
        println!(
            "store on disk           {:.1} MB  (peak memory of the bench {:.0} MB)",
            b.store_bytes as f64 / 1e6,
            b.peak_rss_mb
        );
        println!(
            "import rationales       {:.2} s   ({} records)",
            b.import_secs, b.knowledge_records
        );
        println!(
            "keyword query           p50 {:.3} ms, p95 {:.3} ms  ({} queries, {:.1} hits each, top 10)",
            b.keyword_p50_ms, b.keyword_p95_ms, b.queries, b.mean_hits
        );
        println!(
            "label + keyword query   p50 {:.3} ms, p95 {:.3} ms",
            b.label_keyword_p50_ms, b.label_keyword_p95_ms
        );
        println!(
            "baseline: in-memory scan p50 {:.3} ms  → index ×{:.1} faster",
            b.scan_keyword_p50_ms, b.speedup_vs_scan
        );
        if let Some(r) = &b.retrieve {
            println!(
                "synthetic vectors       {} × {} stored in {:.1} s",
                r.vectors, r.dim, r.vectors_secs
            );
            println!("ANN index build         {:.1} s", r.index_secs);
            println!(
                "knowledge retrieve      k = 10 for {} examples in {:.1} s ({:.0}/s, {}), store writes included",
                r.retrieve_examples,
                r.retrieve_secs,
                r.retrieve_rows_per_sec,
                if r.approximate { "through the ANN index" } else { "exact search" }
            );
            println!(
                "store on disk after     {:.1} MB  (peak memory {:.0} MB)",
                r.store_bytes_after as f64 / 1e6,
                r.peak_rss_mb_after
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rows` rows: `corpus` repeated, ids 1, 2, … in order (a row keeps its text and labels).
fn replicate(corpus: &[corpus::Row], rows: usize) -> Vec<corpus::Row> {
    corpus
        .iter()
        .cycle()
        .take(if corpus.is_empty() { 0 } else { rows })
        .enumerate()
        .map(|(i, r)| corpus::Row {
            id: Some(i as u64 + 1),
            line: i as u64 + 2,
            ..r.clone()
        })
        .collect()
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// The process's peak resident memory (VmHWM), MB; 0 where /proc is missing.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bench_annotate(a: AnnotateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
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

fn bench_embed(a: EmbedArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if a.encoder.batch != 64 {
        anyhow::bail!(
            "bench embed runs batches of 32 (corpus order) and 64 (length-sorted), the setups \
             of scripts/bench_embed_torch.py: drop --batch {}",
            a.encoder.batch
        );
    }
    let parsed = corpus::read_file(&a.corpus)?;
    let n = if a.sentences == 0 {
        parsed.rows.len()
    } else {
        a.sentences.min(parsed.rows.len())
    };
    let texts: Vec<&str> = parsed.rows[..n].iter().map(|r| r.text.as_str()).collect();
    let pb = output::bar(2 * n as u64, "embedding", ctx.quiet);
    let r = emoknow::encoder::embed::bench_embed(
        &a.encoder.encoder,
        &texts,
        &a.encoder.options(),
        &mut |phase, done| {
            let base = match phase {
                emoknow::encoder::embed::BenchPhase::CorpusOrder => 0,
                emoknow::encoder::embed::BenchPhase::LengthSorted => n as u64,
            };
            pb.set_position(base + done as u64);
        },
    )?;
    pb.finish_and_clear();
    if ctx.json {
        output::print_json(&r)?;
    } else {
        println!(
            "encoder {} (dim {}), {} sentences, ≤{} tokens, {} threads, AVX-512 {}",
            r.encoder_id, r.dim, n, r.max_len, r.effective_threads, r.avx512
        );
        for (name, run) in [
            ("corpus order, batch 32 (baseline)", &r.corpus_order),
            ("length-sorted, batch 64", &r.length_sorted),
        ] {
            println!(
                "  {name:<36} {:>7.1} sentences/s  ({:.1} s; {} real of {} padded tokens)",
                run.sentences_per_sec, run.secs, run.real_tokens, run.padded_tokens
            );
        }
        println!(
            "  length sorting: ×{:.2}; max |difference| between the runs' vectors {:.1e}",
            r.speedup, r.max_abs_diff
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_similar(a: SimilarArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use emoknow::neighbours::{AnnIndex, BruteForce, NeighbourSearch};
    use emoknow::store::vectors::What;
    let store = ctx.open()?;
    let info = emoknow::neighbours::pick_encoder(&store, a.encoder.as_deref())?;
    let t = Instant::now();
    let all = store.vectors(&info, &What::Text, None)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let index = BruteForce::new(&all)?;
    let queries: Vec<&[f32]> = (0..a.queries.min(all.ids.len()))
        .map(|i| all.row(i))
        .collect();
    let allowed = |q: usize, r: usize| q != r;
    let mut one = Vec::new();
    let mut first = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        let hits = index.search(&[*q], a.k, &|_, r| r != i)?;
        one.push(t.elapsed().as_secs_f64() * 1e3);
        first.push(hits[0].clone());
    }
    let t = Instant::now();
    let batched = index.search(&queries, a.k, &allowed)?;
    let batched_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    anyhow::ensure!(batched == first, "batched and single queries disagree");
    // Baseline: a loop of dot products over the normalized rows, then a full sort.
    let norm: Vec<Vec<f32>> = (0..all.ids.len())
        .map(|i| {
            let r = all.row(i);
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter().map(|x| x / n).collect()
        })
        .collect();
    let mut naive = Vec::new();
    for (i, q) in queries.iter().enumerate().take(100) {
        let t = Instant::now();
        let n = q.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        let mut s: Vec<(usize, f32)> = norm
            .iter()
            .enumerate()
            .filter(|(r, _)| *r != i)
            .map(|(r, v)| (r, v.iter().zip(*q).map(|(a, b)| a * b).sum::<f32>() / n))
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1));
        s.truncate(a.k);
        std::hint::black_box(&s);
        naive.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p95, naive50) = (
        percentile(&mut one, 0.5),
        percentile(&mut one, 0.95),
        percentile(&mut naive, 0.5),
    );
    // The ANN index (built here in memory, as `index build` would) on the same queries.
    let qrows: Vec<usize> = (0..queries.len()).collect();
    let reference = Reference {
        queries: &queries,
        exclude: &qrows,
        truth: &first,
        k: a.k,
    };
    let mut runs = Vec::new();
    for params in a.ann.params() {
        let t = Instant::now();
        let index = std::sync::Arc::new(AnnIndex::build(&all, &params, &|_| {}, &|| false)?);
        let build_secs = t.elapsed().as_secs_f64();
        runs.extend(ann_runs(
            &index, &all, &params, build_secs, &a.ann, &reference,
        )?);
    }
    if ctx.json {
        output::print_json(&serde_json::json!({
            "vectors": all.ids.len(), "dim": all.dim, "k": a.k, "queries": queries.len(),
            "single_p50_ms": p50, "single_p95_ms": p95, "batched_ms_per_query": batched_ms,
            "naive_loop_p50_ms": naive50, "load_ms": load_ms,
            "ann": runs,
        }))?;
    } else {
        println!(
            "top-{} over {} vectors of dim {} ({}), {} queries",
            a.k,
            all.ids.len(),
            all.dim,
            info.name,
            queries.len()
        );
        println!("  vectors loaded in {load_ms:.1} ms (read in place from the vector file)");
        println!("  one query per matmul   p50 {p50:.2} ms, p95 {p95:.2} ms");
        println!("  batched (256 per matmul) {batched_ms:.3} ms per query");
        println!("  baseline: loop of dot products + sort, p50 {naive50:.2} ms  (single ×{:.1}, batched ×{:.0})", naive50 / p50, naive50 / batched_ms);
        for r in &runs {
            println!(
                "  ANN index (usearch HNSW, {} M {} ef_construction {}, built in {:.1} s) ef {} rerank ×{}: p50 {:.3} ms, p95 {:.3} ms, recall@{} {:.4} vs exact, ×{:.1} vs one query per matmul",
                r.quantization, r.m, r.ef_construction, r.build_secs, r.ef, r.rerank, r.p50_ms, r.p95_ms, a.k, r.recall_at_k, p50 / r.p50_ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One measured ANN configuration: an index and a search setting.
#[derive(Debug, Serialize)]
struct AnnRun {
    quantization: Quantization,
    rerank: usize,
    m: usize,
    ef_construction: usize,
    ef: usize,
    build_secs: f64,
    p50_ms: f64,
    p95_ms: f64,
    recall_at_k: f64,
}

/// Queries with their exact answers, to score an index against.
struct Reference<'a> {
    queries: &'a [&'a [f32]],
    /// The row query `i` must not return (itself).
    exclude: &'a [usize],
    /// Exact top-k of each query.
    truth: &'a [Vec<(usize, f32)>],
    k: usize,
}

/// Times single queries through `index` (over every row of `vectors`) at each `--ef` and
/// `--rerank` of `sweep`, with recall against the exact answers.
fn ann_runs(
    index: &std::sync::Arc<emoknow::neighbours::AnnIndex>,
    vectors: &emoknow::store::vectors::VectorSet,
    params: &AnnParams,
    build_secs: f64,
    sweep: &AnnArgs,
    reference: &Reference,
) -> anyhow::Result<Vec<AnnRun>> {
    use emoknow::neighbours::{AnnSearch, NeighbourSearch};
    let Reference {
        queries,
        exclude,
        truth,
        k,
    } = *reference;
    let mut runs = Vec::new();
    for (&ef, &rerank) in sweep
        .ef
        .iter()
        .flat_map(|e| sweep.rerank.iter().map(move |r| (e, r)))
    {
        let search = AnnSearch::new(index.clone(), &vectors.ids).reranked(vectors.clone(), rerank);
        index.set_expansion_search(ef);
        let mut ms = Vec::new();
        let mut hit = 0usize;
        for (qi, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let r = search.search(&[*q], k, &|_, r| r != exclude[qi])?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            hit += r[0]
                .iter()
                .filter(|h| truth[qi].iter().any(|e| e.0 == h.0))
                .count();
        }
        runs.push(AnnRun {
            quantization: params.quantization,
            rerank,
            m: params.connectivity,
            ef_construction: params.expansion_add,
            ef,
            build_secs,
            p50_ms: percentile(&mut ms, 0.5),
            p95_ms: percentile(&mut ms, 0.95),
            recall_at_k: hit as f64 / (queries.len() * k).max(1) as f64,
        });
    }
    index.set_expansion_search(params.expansion_search);
    Ok(runs)
}

/// The process's peak resident memory so far (VmHWM), in MB.
fn peak_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// The process's resident memory now (VmRSS), in MB.
fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

/// A memory line of /proc/self/status, in MB (0 where there is none).
fn proc_status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bench_scale(a: ScaleArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use emoknow::neighbours::{AnnIndex, AnnSearch, BruteForce, NeighbourSearch};
    use rayon::prelude::*;
    anyhow::ensure!(a.rows > a.queries, "--rows must exceed --queries");
    let interrupted = || super::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
    let pb = output::spinner(&format!("generating {} × {}", a.rows, a.dim), ctx.quiet);
    let t = Instant::now();
    let set = emoknow::testkit::vectors::clustered(a.rows, a.dim, a.clusters, 7)?;
    let gen_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let peak_data = peak_mb();

    // Queries spread over the set; each excludes itself.
    let step = a.rows / a.queries;
    let qrows: Vec<usize> = (0..a.queries).map(|i| i * step).collect();
    let queries: Vec<&[f32]> = qrows.iter().map(|&r| set.row(r)).collect();
    let pb = output::spinner("exact search", ctx.quiet);
    let exact = BruteForce::new(&set)?;
    let t = Instant::now();
    let truth = exact.search(&queries, a.k, &|qi, r| r != qrows[qi])?;
    let exact_batched_ms = t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64;
    let mut exact_ms = Vec::new();
    for (qi, q) in queries.iter().enumerate().take(50) {
        let t = Instant::now();
        let r = exact.search(&[*q], a.k, &|_, r| r != qrows[qi])?;
        exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            r[0] == truth[qi],
            "batched and single exact queries disagree"
        );
    }
    drop(exact);
    pb.finish_and_clear();
    let peak_exact = peak_mb();
    let reference = Reference {
        queries: &queries,
        exclude: &qrows,
        truth: &truth,
        k: a.k,
    };

    // One index per quantization; the first is kept for the retrieve-like pass.
    let mut runs = Vec::new();
    let mut builds = Vec::new();
    let mut kept = None;
    for params in a.ann.params() {
        let rss_before = rss_mb();
        let pb = output::bar(
            a.rows as u64,
            &format!("indexing ({})", params.quantization),
            ctx.quiet,
        );
        let t = Instant::now();
        let index = AnnIndex::build(&set, &params, &|d| pb.set_position(d as u64), &interrupted)?;
        let build_secs = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let peak_build = peak_mb();
        let index_mb = rss_mb() - rss_before;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bench.usearch");
        let t = Instant::now();
        index.save(&file)?;
        let save_secs = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&file)?.len();
        let t = Instant::now();
        let viewed = AnnIndex::view(&file)?;
        let view_secs = t.elapsed().as_secs_f64();
        drop(viewed);
        // What every open of a stored index adds: its checksum, verified before usearch reads it.
        let t = Instant::now();
        emoknow::store::ann::file_crc32(&file)?;
        let checksum_secs = t.elapsed().as_secs_f64();
        let index = std::sync::Arc::new(index);
        let pb = output::spinner("timing queries", ctx.quiet);
        runs.extend(ann_runs(
            &index, &set, &params, build_secs, &a.ann, &reference,
        )?);
        pb.finish_and_clear();
        builds.push(serde_json::json!({
            "quantization": params.quantization, "build_secs": build_secs,
            "build_vectors_per_sec": a.rows as f64 / build_secs, "peak_mb_after_build": peak_build,
            "index_mb": index_mb, "index_bytes": bytes, "save_secs": save_secs, "view_secs": view_secs,
            "checksum_secs": checksum_secs,
        }));
        if kept.is_none() {
            kept = Some(index);
        }
    }
    let index = kept.ok_or_else(|| anyhow::anyhow!("no --quantization given"))?;
    let ann = AnnSearch::new(index.clone(), &set.ids).reranked(set.clone(), a.ann.rerank[0]);
    let exact50 = percentile(&mut exact_ms, 0.5);

    let n = a.retrieve_rows.unwrap_or(a.rows).min(a.rows);
    let pb = output::bar(n as u64, "retrieving", ctx.quiet);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let found: usize = (0..n)
        .into_par_iter()
        .chunks(1024)
        .map(|rows| {
            let qs: Vec<&[f32]> = rows.iter().map(|&r| set.row(r)).collect();
            let r = ann.search(&qs, a.k, &|qi, row| row != rows[qi]);
            let d = done.fetch_add(rows.len(), std::sync::atomic::Ordering::Relaxed);
            pb.set_position((d + rows.len()) as u64);
            r.map(|hits| hits.iter().map(Vec::len).sum::<usize>())
        })
        .collect::<emoknow::Result<Vec<usize>>>()?
        .into_iter()
        .sum();
    let retrieve_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let report = serde_json::json!({
        "rows": a.rows, "dim": a.dim, "clusters": a.clusters, "k": a.k,
        "generate_secs": gen_secs,
        "peak_mb_after_data": peak_data, "peak_mb_after_exact": peak_exact,
        "builds": builds, "queries": a.queries, "ann": runs,
        "exact_single_p50_ms": exact50, "exact_batched_ms_per_query": exact_batched_ms,
        "retrieve_rows": n, "retrieve_secs": retrieve_secs,
        "retrieve_rows_per_sec": n as f64 / retrieve_secs, "retrieve_neighbours": found,
        "threads": rayon::current_num_threads(),
    });
    if ctx.json {
        output::print_json(&report)?;
    } else {
        println!(
            "{} synthetic vectors of dim {} ({} clusters), generated in {gen_secs:.1} s; peak memory {peak_data:.0} MB with the vectors, {peak_exact:.0} MB after the exact reference",
            a.rows, a.dim, a.clusters
        );
        println!(
            "  exact: p50 {exact50:.1} ms one query per matmul, batched {exact_batched_ms:.2} ms/query ({} threads)",
            rayon::current_num_threads()
        );
        for b in &builds {
            println!(
                "  ANN build ({}) {:.1} s ({:.0} vectors/s); index memory {:.0} MB, peak {:.0} MB; file {:.0} MB, saved in {:.1} s, mapped in {:.3} s, checksum verified in {:.3} s",
                b["quantization"].as_str().unwrap_or("?"),
                b["build_secs"].as_f64().unwrap_or(0.0),
                b["build_vectors_per_sec"].as_f64().unwrap_or(0.0),
                b["index_mb"].as_f64().unwrap_or(0.0),
                b["peak_mb_after_build"].as_f64().unwrap_or(0.0),
                b["index_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                b["save_secs"].as_f64().unwrap_or(0.0),
                b["view_secs"].as_f64().unwrap_or(0.0),
                b["checksum_secs"].as_f64().unwrap_or(0.0),
            );
        }
        for r in &runs {
            println!(
                "  {} M {} ef_construction {} ef {} rerank ×{}: {} queries, recall@{} {:.4} vs exact; p50 {:.3} ms (p95 {:.3}): ×{:.0} vs exact",
                r.quantization, r.m, r.ef_construction, r.ef, r.rerank, a.queries, a.k, r.recall_at_k, r.p50_ms, r.p95_ms, exact50 / r.p50_ms
            );
        }
        println!(
            "  retrieve-like pass ({}, ef {}): k={} for {n} rows in {retrieve_secs:.1} s ({:.0} rows/s, inside the bench, no store writes)",
            a.ann.quantization[0],
            a.ann.ef[0],
            a.k,
            n as f64 / retrieve_secs
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One measured run of [`bench_serve`].
#[derive(Debug, Clone, Serialize)]
struct ServeRun {
    /// `query` or `predict`.
    endpoint: &'static str,
    /// Concurrent clients.
    clients: usize,
    /// Requests answered with 200.
    requests: usize,
    /// Requests answered otherwise, or failed.
    errors: usize,
    /// Wall time of the run, seconds.
    secs: f64,
    /// Median latency, milliseconds.
    p50_ms: f64,
    /// 99th-percentile latency, milliseconds.
    p99_ms: f64,
    /// Answered requests per second.
    requests_per_sec: f64,
}

/// A request of a serve benchmark.
enum Req {
    Get(String),
    Post(String, String),
}

/// Sends up to `max` requests (cycling through `reqs`) from `clients` threads, each with its
/// own connection, for at most `secs` seconds.
fn load(
    reqs: &[Req],
    clients: usize,
    max: usize,
    secs: f64,
) -> anyhow::Result<(Vec<f64>, usize, f64)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let t0 = Instant::now();
    let deadline = t0 + std::time::Duration::from_secs_f64(secs);
    let mut all = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..clients.max(1) {
            let (next, errors) = (&next, &errors);
            handles.push(scope.spawn(move || -> anyhow::Result<Vec<f64>> {
                let client = reqwest::blocking::Client::builder()
                    .timeout(std::time::Duration::from_secs(60))
                    .build()?;
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max || Instant::now() >= deadline || reqs.is_empty() {
                        return Ok(lat);
                    }
                    let t = Instant::now();
                    let r = match &reqs[i % reqs.len()] {
                        Req::Get(url) => client.get(url).send(),
                        Req::Post(url, body) => client
                            .post(url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send(),
                    };
                    let ok = match r {
                        Ok(resp) => resp.status().is_success() && resp.bytes().is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for h in handles {
            let lat = h
                .join()
                .map_err(|_| anyhow::anyhow!("a benchmark client panicked"))??;
            all.extend(lat);
        }
        Ok(())
    })?;
    Ok((
        all,
        errors.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    ))
}

fn bench_serve(a: ServeArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use emoknow::model::classifier::{self, KindConfig, TrainConfig, TrainInputs};
    use emoknow::samples::{training_examples, SampleBuilder, Selection};
    use emoknow::serve::{ServeConfig, Server};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let parsed = corpus::read_file(&a.corpus)?;
    let dir = tempfile::tempdir()?;
    let store = Store::open_or_create(&dir.path().join("store"))?;
    let plan = corpus::SplitPlan {
        test_rows: 1000,
        val_fraction: 0.08,
        ..Default::default()
    };
    let keys: Vec<u64> = parsed.rows.iter().map(|r| r.id.unwrap_or(0)).collect();
    store.ingest("Train.csv", &parsed.rows, &plan.assign(&keys), false)?;
    import_file(
        &store,
        &a.predictions,
        &ImportConfig {
            source: "qwen-max".into(),
            field: Field::Label,
            align: Alignment::FirstId(1),
            model: None,
        },
        &Lexicon::default(),
    )?;
    let model = match &a.model {
        Some(m) => m.clone(),
        None => {
            let pb = output::spinner("training a linear model to serve", ctx.quiet);
            let cfg = TrainConfig {
                kind: KindConfig::Linear(Default::default()),
                attach: Default::default(),
                objective: emoknow::model::Objective::Micro,
                decode_sets: false,
                seed: 42,
            };
            let out = dir.path().join("linear");
            let prepared = classifier::prepare(&cfg, &out)?;
            let (train, val) = training_examples(&store, &cfg.attach, &Selection::default())?;
            let mut builder = SampleBuilder::new(&store);
            let inputs = TrainInputs {
                train: builder.examples(&cfg.needs(), &train, false)?,
                val: builder.examples(&cfg.needs(), &val, true)?,
                member_val: Vec::new(),
                text: store.normalizer()?,
                pool: None,
            };
            drop(builder);
            classifier::train(&cfg, prepared, inputs, &mut |_| {})?;
            pb.finish_and_clear();
            out
        }
    };
    // Requests: keyword queries from the test sentences' words (single words and two words
    // glued together, as `bench store` does), and test sentences to classify.
    let texts: Vec<String> = parsed
        .rows
        .iter()
        .take(1000)
        .map(|r| r.text.clone())
        .collect();
    let keywords = bench_keywords(texts.iter().map(String::as_str), usize::MAX);
    // Baseline: the same library calls in this process, one at a time, without HTTP.
    let spec = |k: &str| QuerySpec {
        keyword: Some(k.to_string()),
        limit: 10,
        ..Default::default()
    };
    let loaded = emoknow::model::classifier::Model::load(&model)?;
    let mut builder = SampleBuilder::new(&store);
    for k in keywords.iter().take(20) {
        emoknow::views::query(&store, &spec(k))?;
    }
    let (mut base_query, mut base_predict) = (Vec::new(), Vec::new());
    for (k, t) in keywords.iter().zip(&texts).take(500) {
        let t0 = Instant::now();
        emoknow::views::query(&store, &spec(k))?;
        base_query.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        emoknow::views::predict(&mut builder, &loaded, std::slice::from_ref(t))?.json(false);
        base_predict.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    drop(builder);
    drop(loaded);
    let baseline = [
        ("query", percentile(&mut base_query, 0.5)),
        ("predict", percentile(&mut base_predict, 0.5)),
    ];
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    let server = Server::bind(store, &ServeConfig::new(addr, vec![model.clone()]))?;
    let base = format!("http://{}", server.local_addr());
    let queries: Vec<Req> = keywords
        .iter()
        .map(|k| {
            let kw: String = form_urlencoded::byte_serialize(k.as_bytes()).collect();
            Req::Get(format!("{base}/api/query?keyword={kw}&limit=10"))
        })
        .collect();
    let predicts: Vec<Req> = texts
        .iter()
        .map(|t| {
            Req::Post(
                format!("{base}/api/predict"),
                serde_json::json!({"texts": [t]}).to_string(),
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        server.run(async move {
            while !flag.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    });
    let mut runs = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        // Warm up: the tokenizer's dictionary, the model's first call, connections.
        load(&queries, 2, 20, 30.0)?;
        load(&predicts, 2, 20, 30.0)?;
        for (endpoint, reqs) in [("query", &queries), ("predict", &predicts)] {
            for &clients in &a.clients {
                let pb = output::spinner(&format!("{endpoint}, {clients} client(s)"), ctx.quiet);
                let (mut lat, errors, secs) = load(reqs, clients, a.requests, a.seconds)?;
                pb.finish_and_clear();
                runs.push(ServeRun {
                    endpoint,
                    clients,
                    requests: lat.len(),
                    errors,
                    secs,
                    p50_ms: percentile(&mut lat, 0.5),
                    p99_ms: percentile(&mut lat, 0.99),
                    requests_per_sec: lat.len() as f64 / secs,
                });
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::SeqCst);
    let served = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))?;
    result?;
    served?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "runs": runs,
            "in_process_p50_ms": {"query": baseline[0].1, "predict": baseline[1].1},
        }))?;
    } else {
        println!(
            "emoknow serve on loopback, {} examples, model {}; clients and server share {} cores",
            parsed.rows.len(),
            model.display(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!(
            "{:<8} {:>7} {:>9} {:>7} {:>9} {:>9} {:>10}",
            "endpoint", "clients", "requests", "errors", "p50 ms", "p99 ms", "req/s"
        );
        for r in &runs {
            println!(
                "{:<8} {:>7} {:>9} {:>7} {:>9.2} {:>9.2} {:>10.1}",
                r.endpoint, r.clients, r.requests, r.errors, r.p50_ms, r.p99_ms, r.requests_per_sec
            );
        }
        for (endpoint, p50) in baseline {
            println!("baseline: {endpoint} as an in-process library call, one at a time: p50 {p50:.2} ms");
        }
    }
    Ok(if runs.iter().any(|r| r.errors > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Up to `n` keyword queries from sentences' words of two or more characters: alternately a
/// single word and two words glued together unsegmented ("担忧未来" style).
fn bench_keywords<'a>(texts: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let mut keywords = Vec::new();
    for t in texts {
        let words: Vec<&str> = t
            .split_whitespace()
            .filter(|w| w.chars().count() >= 2)
            .collect();
        if words.len() >= 2 {
            keywords.push(if keywords.len() % 2 == 0 {
                words[0].to_string()
            } else {
                format!("{}{}", words[0], words[words.len() - 1])
            });
        }
        if keywords.len() == n {
            break;
        }
    }
    keywords
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
    /// not in the default suite: `cargo test --release --bin emoknow bench::tests::throughput -- --ignored --nocapture`.
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
