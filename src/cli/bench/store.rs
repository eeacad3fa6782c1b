//! `bench store`: ingest, import and keyword queries against a brute-force scan; with
//! `--retrieve`, dense neighbours for every row through the store.

use super::{bench_keywords, peak_mb, percentile, Input};
use crate::cli::{output, Ctx};
use emoknow::corpus;
use emoknow::knowledge::import::Field;
use emoknow::knowledge::sanitize::Lexicon;
use emoknow::labels::{Emotion, LabelSet};
use emoknow::store::index::tokenize;
use emoknow::store::{Filter, QuerySpec, Store};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Instant;

/// Ingest + index the corpus into a fresh temporary store, then time keyword and
/// label+keyword queries on the store opened again. `--rows 1000000` repeats the corpus to a
/// million sentences (about 2 minutes, 5 GB of memory, 0.5 GB on disk).
///
/// Baselines: parsing the file alone (the floor for ingest), and a brute-force scan of every
/// example's text and knowledge in memory (what a notebook would do) for queries.
///
/// Example: cargo run --release -- bench store
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    #[command(flatten)]
    input: Input,

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
    let interrupted = || crate::cli::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
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
    r.peak_rss_mb_after = peak_mb();
    Ok(r)
}

pub(super) fn run(a: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut b = StoreBench::default();
    let t = Instant::now();
    let mut parsed = corpus::read_file(&a.input.corpus)?;
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
    a.input.ingest(&store, &parsed.rows)?;
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
        b.knowledge_records += a.input.import(&store, source, field, &lex)?;
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
    b.peak_rss_mb = peak_mb();
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
