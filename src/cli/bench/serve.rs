//! `bench serve`: latency and throughput of `emoknow serve` on loopback, per number of
//! concurrent clients.

use super::{bench_keywords, percentile, Input};
use crate::cli::{output, Ctx};
use emoknow::corpus;
use emoknow::knowledge::import::Field;
use emoknow::knowledge::sanitize::Lexicon;
use emoknow::store::{QuerySpec, Store};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Latency and throughput of `emoknow serve` on loopback: keyword queries (`GET /api/query`)
/// and one-sentence predictions (`POST /api/predict`) from N concurrent clients (threads with
/// their own HTTP connection), each run bounded by --requests and --seconds.
///
/// The corpus is ingested into a temporary store with its rationales, and a linear model is
/// trained there (about 10 s) unless --model is given. Clients and server share the machine.
///
/// Example: cargo run --release -- bench serve --clients 1 --clients 8 --clients 64
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    #[command(flatten)]
    input: Input,

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

/// One measured run of [`run`].
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

pub(super) fn run(a: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use emoknow::model::classifier::{self, KindConfig, TrainConfig, TrainInputs};
    use emoknow::samples::{training_examples, SampleBuilder, Selection};
    use emoknow::serve::{ServeConfig, Server};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let parsed = corpus::read_file(&a.input.corpus)?;
    let dir = tempfile::tempdir()?;
    let store = Store::open_or_create(&dir.path().join("store"))?;
    a.input.ingest(&store, &parsed.rows)?;
    a.input
        .import(&store, "qwen-max", Field::Label, &Lexicon::default())?;
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
