//! `emoknow annotate`, `emoknow export llama-factory` and `emoknow dev-server`.

use super::{output, Ctx, INTERRUPTED};
use anyhow::Context;
use emoknow::corpus::Split;
use emoknow::knowledge::annotate::{AnnotateConfig, WaitNotice};
use emoknow::knowledge::llama_factory::{write_dataset, LfFormat};
use emoknow::knowledge::llm::{
    redact_url, resolve_api_key, LlmClient, LlmConfig, DASHSCOPE_BASE_URL, DEFAULT_MAX_WAIT_SECS,
};
use emoknow::knowledge::pipeline::{self, StoreConfig};
use emoknow::knowledge::prompts::Prompts;
use emoknow::labels::LabelSet;
use emoknow::store::Store;
use emoknow::testkit::devserver::{AnswerMode, Behaviour, DevServer};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Annotate sentences with an LLM through any OpenAI-compatible endpoint (the seed's scheme).
///
/// Prompt 1 (few-shot, blind) asks for labels and a rationale (理由). For training sentences,
/// an answer whose labels differ from gold is asked again with prompt 2, which gives the
/// answer ("…,答案为<labels>"), up to --max-guided times, so the stored rationale agrees with
/// gold. Validation and test sentences always keep their blind answer: their rationales are
/// features when models are evaluated, and prompt 2 states the answer. --blind-only stores
/// the first answer as is for training sentences too (e.g. with a fine-tuned model). Answers are sanitized (reason part, emotion words removed) and stored as
/// knowledge of --source; an answer naming no label is never stored as knowledge.
///
/// Faults: 429, 5xx, timeouts, resets and garbage answers (HTML, truncated JSON) are retried
/// with backoff, honouring Retry-After up to --max-wait; sentences that still got no answer are
/// not recorded, the run exits 2 and a rerun tries them again. A sentence the endpoint refuses
/// (content inspection) is recorded as missing, like an answer naming no label
/// (--retry-failed asks again). Any other 4xx (bad key, model, URL, request) stops the run.
///
/// Resumable: (sentence, source) pairs already answered are skipped, each answer is on disk as
/// soon as it arrives, and Ctrl-C or a kill loses only the requests in flight. The API key is
/// read from --api-key-env (default DASHSCOPE_API_KEY, then OPENAI_API_KEY) and never stored;
/// credentials in --endpoint (user:pass@host) are sent as Basic auth and shown as ***.
///
/// Examples:
///
///   DASHSCOPE_API_KEY=sk-… emoknow annotate --split train --limit 100
///
///   emoknow annotate --endpoint http://127.0.0.1:8000/v1 --model chatglm3-lora --split test --blind-only
#[derive(clap::Args, Debug)]
pub struct AnnotateArgs {
    /// Split to annotate.
    #[arg(long, default_value = "train")]
    split: Split,

    /// At most N sentences not yet annotated by the source.
    #[arg(long, value_name = "N", value_parser = super::bounds::limit)]
    limit: Option<usize>,

    /// Knowledge source name to store under [default: the model name].
    #[arg(long)]
    source: Option<String>,

    /// Base URL of the OpenAI-compatible API (…/v1).
    #[arg(long, default_value = DASHSCOPE_BASE_URL, help_heading = "Endpoint")]
    endpoint: String,

    /// Model name sent with each request.
    #[arg(long, default_value = "qwen-max", help_heading = "Endpoint")]
    model: String,

    /// Environment variable holding the API key [default: DASHSCOPE_API_KEY, then OPENAI_API_KEY].
    #[arg(long, value_name = "NAME", help_heading = "Endpoint")]
    api_key_env: Option<String>,

    /// Sampling temperature [default: the server's].
    #[arg(long, help_heading = "Endpoint")]
    temperature: Option<f32>,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60.0, help_heading = "Endpoint")]
    timeout: f64,

    /// Retries of a 429/5xx/timeout/reset/garbage answer before the sentence counts as failed.
    #[arg(long, default_value_t = 5, help_heading = "Endpoint")]
    retries: u32,

    /// Longest Retry-After to wait, seconds; a server asking for longer stops the run (what is
    /// done is kept; rerun later).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_WAIT_SECS, help_heading = "Endpoint")]
    max_wait: f64,

    /// Concurrent requests (1 or more).
    #[arg(
        long,
        short,
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Endpoint"
    )]
    jobs: u32,

    /// Requests per minute across all jobs.
    #[arg(long, help_heading = "Endpoint")]
    rpm: Option<u32>,

    /// Guided prompts tried after a blind answer that disagrees with gold (training sentences).
    #[arg(long, default_value_t = 2, conflicts_with = "blind_only")]
    max_guided: u32,

    /// Store blind answers as they are (labels parsed, not checked against gold).
    #[arg(long)]
    blind_only: bool,

    /// Also retry sentences whose earlier answer was unusable (recorded as missing).
    #[arg(long)]
    retry_failed: bool,

    /// Directory with edited blind.json / guided.json [default: data/prompts as shipped].
    #[arg(long, value_name = "DIR")]
    prompts: Option<PathBuf>,

    /// Put the K most similar labelled training examples into the prompt as extra few-shot
    /// turns (the seed's RAG idea; BM25 unless the store holds embeddings).
    #[arg(long, value_name = "K")]
    retrieved: Option<usize>,
}

/// Write a LLaMA-Factory dataset of stored rationales (fine-tune an LLM to write them).
///
/// Writes `<name>_train.json` (the --split examples that have a rationale from --source: the
/// seed's few-shot prompt as system + history, the sentence as instruction, the raw rationale
/// as output), `<name>_predict.json` (the --predict-split sentences with an empty output, for
/// `do_predict`), `<name>_predict.ids` (the example id of each prediction line), and the two
/// entries of `dataset_info.json`. After LLaMA-Factory's predict run, bring the answers back
/// with `emoknow knowledge import generated_predictions.jsonl --ids <name>_predict.ids …`.
///
/// Example: emoknow export llama-factory --out lf_data --source qwen-max --format alpaca
#[derive(clap::Args, Debug)]
pub struct LlamaFactoryArgs {
    /// Directory to write (LLaMA-Factory's `dataset_dir`).
    #[arg(long)]
    out: PathBuf,

    /// Rationale source to learn from.
    #[arg(long, default_value = "qwen-max")]
    source: String,

    /// Split whose rationales form the training file.
    #[arg(long, default_value = "train")]
    split: Split,

    /// Split whose sentences form the prediction file.
    #[arg(long, default_value = "test")]
    predict_split: Split,

    /// Dataset file format.
    #[arg(long, value_enum, default_value = "alpaca")]
    format: FormatArg,

    /// Dataset name (file stem and dataset_info.json key prefix).
    #[arg(long, default_value = "emoknow")]
    name: String,

    /// Directory with edited prompts [default: the shipped ones].
    #[arg(long, value_name = "DIR")]
    prompts: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Alpaca,
    Sharegpt,
}

/// Run a local OpenAI-compatible server that answers like the seed's LLM (no key needed).
///
/// For trying `annotate` without an API key (the tests start the same server in-process). It
/// knows the store's gold labels and answers in the seed's format. --wrong-first answers
/// the blind prompt wrongly so the guided prompt is exercised.
///
/// Example: emoknow dev-server --port 8000 & emoknow annotate --endpoint http://127.0.0.1:8000/v1 --limit 20
#[derive(clap::Args, Debug)]
pub struct DevServerArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8000)]
    port: u16,

    /// Delay before each response, milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,

    /// Answer the blind prompt wrongly, the guided one rightly.
    #[arg(long)]
    wrong_first: bool,
}

fn load_prompts(dir: Option<&PathBuf>) -> anyhow::Result<Prompts> {
    Ok(match dir {
        Some(d) => {
            Prompts::load_dir(d).with_context(|| format!("loading prompts from {}", d.display()))?
        }
        None => Prompts::default(),
    })
}

pub fn run_annotate(a: AnnotateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let prompts = load_prompts(a.prompts.as_ref())?;
    let source = a.source.clone().unwrap_or_else(|| a.model.clone());
    let key = resolve_api_key(a.api_key_env.as_deref())?;
    emoknow::knowledge::llm::require_key_for(&a.endpoint, key.as_ref())?;
    if let Some(k) = &key {
        ctx.note(format!("using the API key in ${}", k.var));
    }
    let client = LlmClient::new(LlmConfig {
        api_key: key.map(|k| k.key),
        temperature: a.temperature,
        timeout_secs: a.timeout,
        max_retries: a.retries,
        rpm: a.rpm,
        max_wait_secs: a.max_wait,
        ..LlmConfig::new(a.endpoint.clone(), a.model.clone())
    })?;
    let host = client.host();
    let shown_endpoint = redact_url(&a.endpoint);

    let todo = pipeline::pending(&store, a.split, &source, a.limit, a.retry_failed)?;
    if todo.is_empty() {
        ctx.note(format!(
            "nothing to do: every {} sentence has an answer from {source}",
            a.split
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let shots = match a.retrieved {
        None | Some(0) => Vec::new(),
        Some(k) => pipeline::retrieved_shots(&store, &todo, k)?,
    };
    let items = pipeline::items(&todo, shots, a.blind_only);
    let pb = output::bar(items.len() as u64, "annotating", ctx.quiet);
    let cfg = StoreConfig {
        source: source.clone(),
        engine: AnnotateConfig {
            jobs: a.jobs as usize,
            max_guided: a.max_guided,
            blind_only: a.blind_only,
            ..Default::default()
        },
    };
    let mut last_wait_note: Option<Instant> = None;
    let run = pipeline::annotate_into_store(
        &store,
        &client,
        &prompts,
        items,
        &cfg,
        &INTERRUPTED,
        &mut |p| {
            if let Some(w) = &p.waiting {
                // One line a second at most: with many jobs a rate limit hits them all at once.
                if !ctx.quiet
                    && last_wait_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    pb.suspend(|| eprintln!("{}", wait_message(w, &host)));
                    last_wait_note = Some(Instant::now());
                }
                return;
            }
            pb.set_position(p.done as u64);
            pb.set_prefix(format!(
                "accepted {} (guided {}), failed {}, requests {}",
                p.accepted, p.guided, p.failed, p.requests
            ));
        },
    );
    pb.finish_and_clear();
    let run = run?;
    let summary = run.result.with_context(|| {
        format!(
            "annotating with {} at {shown_endpoint} ({} answers kept)",
            a.model, run.handled,
        )
    })?;
    if ctx.json {
        output::print_json(&summary)?;
    } else {
        println!(
            "{}: accepted {} ({} after the guided prompt), failed {} (endpoint {}, garbage answers {}, refused {}, no label {}, gold never matched {}), in {:.1}s",
            source,
            summary.accepted,
            summary.guided,
            summary.failed,
            summary.failed_endpoint,
            summary.failed_bad_response,
            summary.failed_refused,
            summary.failed_no_label,
            summary.failed_gold_mismatch,
            summary.elapsed_secs
        );
        println!(
            "requests {} (retries {}), tokens: prompt {}, completion {}",
            summary.requests, summary.retries, summary.prompt_tokens, summary.completion_tokens
        );
    }
    if summary.cancelled {
        return Err(emoknow::Error::Interrupted.into());
    }
    let unfinished = summary.unfinished();
    if unfinished > 0 {
        anyhow::bail!(
            "{unfinished} sentence(s) got no usable answer from {shown_endpoint} after {} retries ({} endpoint failures, {} garbage answers); they are not recorded: rerun the same command to try them again. Last: {}",
            a.retries,
            summary.failed_endpoint,
            summary.failed_bad_response,
            run.last_unfinished.as_deref().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// "waiting 30 s (Retry-After from HOST, HTTP 429) before retrying item 17; …".
fn wait_message(w: &WaitNotice, host: &str) -> String {
    let cause = match (w.wait.retry_after, w.wait.status) {
        (true, Some(s)) => format!("Retry-After from {host}, HTTP {s}"),
        (true, None) => format!("Retry-After from {host}"),
        (false, Some(s)) => format!("backoff after HTTP {s} from {host}"),
        (false, None) => format!("backoff after no answer from {host}"),
    };
    format!(
        "waiting {:.0} s ({cause}) before retrying item {} (retry {} of {}); Ctrl-C stops, rerun resumes",
        w.wait.delay.as_secs_f64(),
        w.item,
        w.wait.retry,
        w.wait.max_retries
    )
}

pub fn run_llama_factory(a: LlamaFactoryArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let prompts = load_prompts(a.prompts.as_ref())?;
    let records = pipeline::export_records(&store, &prompts, &a.source, a.split, a.predict_split)?;
    let (train, predict) = (records.train, records.predict);
    let format = match a.format {
        FormatArg::Alpaca => LfFormat::Alpaca,
        FormatArg::Sharegpt => LfFormat::Sharegpt,
    };
    let files = write_dataset(&a.out, &a.name, format, &train, &predict)?;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "train": files.train, "predict": files.predict, "predict_ids": files.predict_ids,
            "dataset_info": files.dataset_info, "train_name": files.train_name,
            "predict_name": files.predict_name, "train_rows": train.len(), "predict_rows": predict.len(),
        }))?;
    } else {
        println!(
            "{} ({} rows: {} rationales of {})",
            files.train.display(),
            train.len(),
            a.split,
            a.source
        );
        println!(
            "{} ({} rows: {} sentences, empty output)",
            files.predict.display(),
            predict.len(),
            a.predict_split
        );
        println!(
            "{} (example id of each prediction line)",
            files.predict_ids.display()
        );
        println!(
            "{} (entries {:?} and {:?}, format {})",
            files.dataset_info.display(),
            files.train_name,
            files.predict_name,
            format.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_dev_server(a: DevServerArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // The store's gold labels, when there is a store (the server works without one).
    let gold: Vec<(String, LabelSet)> = match Store::open(&ctx.store) {
        Ok(s) => s
            .examples(None)?
            .into_iter()
            .map(|e| (e.text, e.labels))
            .collect(),
        Err(emoknow::Error::NoStore { .. }) => Vec::new(),
        Err(e) => {
            // A store that exists but cannot be read (locked, an older format, damaged): say
            // so instead of serving answers without gold as if there were no store.
            eprintln!(
                "warning: dev server without gold labels: store {} not read: {e}",
                ctx.store.display()
            );
            Vec::new()
        }
    };
    let n = gold.len();
    let server = DevServer::start_on(
        &format!("127.0.0.1:{}", a.port),
        Behaviour {
            answer: if a.wrong_first {
                AnswerMode::WrongUnlessGuided
            } else {
                AnswerMode::Right
            },
            latency_ms: a.latency_ms,
            ..Behaviour::default()
        }
        .with_gold(gold),
    )?;
    ctx.note(format!(
        "dev server on {} ({n} gold sentences); Ctrl-C stops it",
        server.base_url()
    ));
    while !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}
