//! The annotation engine: asks an LLM about many sentences concurrently and decides, per
//! sentence, whether its answer becomes knowledge.
//!
//! The seed's scheme: send the blind prompt; parse the labels the answer asserts
//! ([`asserted_labels`]); when gold labels are known and the answer disagrees, send the guided
//! prompt (which states the answer) up to `max_guided` times until an answer asserts exactly
//! the gold labels. Training knowledge is then always consistent with gold; items without
//! gold (the caller gives it for training sentences only: [`crate::knowledge::pipeline::items`]),
//! or every item in `blind_only` mode, keep the blind answer. An answer that names no label is
//! never accepted.
//!
//! What a failed item is worth ([`FailKind`]): a well-formed answer that names no label (or
//! never the gold labels), and a sentence the endpoint refuses, are verdicts on the sentence, to
//! be recorded; an endpoint that stayed down or answered garbage through every retry says
//! nothing about the sentence, so a rerun should simply try again ([`Summary::unfinished`]).
//!
//! This module does not touch the store. Each [`Outcome`] goes to a callback on the caller's
//! thread (workers send through a channel), so the caller can write it with one short atomic
//! write; a killed run then loses only the requests in flight, and a rerun can skip what is
//! stored; [`crate::knowledge::pipeline`] is that caller for `emoknow annotate`.
//!
//! Over 900 lines but one concept: about half of the file is the engine's tests against the
//! local dev server, which exercise every failure path above.

use crate::knowledge::llm::{is_fatal, LlmClient, Usage, Wait};
use crate::knowledge::prompts::Prompts;
use crate::knowledge::sanitize::asserted_labels;
use crate::labels::LabelSet;
use crate::store::records::PromptKind;
use crate::{Error, Result};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Waits before a retry at least this long are reported through [`Progress::waiting`]
/// (shorter ones pass unnoticed).
pub const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// One sentence to annotate.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The example's id (echoed in the outcome).
    pub id: u64,
    /// The sentence.
    pub text: String,
    /// Gold labels; `Some` enables the guided prompt.
    pub gold: Option<LabelSet>,
    /// Retrieved examples inserted as extra few-shot turns (may be empty).
    pub shots: Vec<(String, LabelSet)>,
}

/// Why an item produced no knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The endpoint failed through every retry (429, 5xx, timeouts, resets). Says nothing about
    /// the sentence: not worth recording, a rerun tries again.
    Endpoint,
    /// Every answer was garbage, not a well-formed chat completion (HTML, truncated JSON, no
    /// choices or content), through every retry. Like `Endpoint`: a rerun tries again.
    BadResponse,
    /// The endpoint refused this sentence (content inspection, context too long): a verdict on
    /// the sentence, recorded like an unusable answer.
    Refused,
    /// The answer named no label.
    NoLabel,
    /// Guided answers never asserted the gold labels.
    GoldMismatch,
}

impl FailKind {
    /// Whether the failure is a verdict on the sentence (no label, gold never matched,
    /// refused), worth recording so a rerun skips it, rather than the endpoint's trouble.
    pub fn is_verdict(self) -> bool {
        !matches!(self, FailKind::Endpoint | FailKind::BadResponse)
    }

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            FailKind::Endpoint => "endpoint",
            FailKind::BadResponse => "bad_response",
            FailKind::Refused => "refused",
            FailKind::NoLabel => "no_label",
            FailKind::GoldMismatch => "gold_mismatch",
        }
    }
}

/// What became of one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An answer worth keeping.
    Accepted {
        /// The item's id.
        id: u64,
        /// The answer as the model wrote it.
        raw: String,
        /// Labels it asserts (never empty; equal to gold unless blind-only or gold-free).
        asserted: LabelSet,
        /// Which prompt produced it.
        prompt_kind: PromptKind,
        /// Prompts sent for this item (1 = blind only, 1 + k after k guided prompts).
        attempts: u32,
        /// Model name as the server reported it.
        model: String,
    },
    /// No usable answer.
    Failed {
        /// The item's id.
        id: u64,
        /// Why, in words (never contains the API key).
        reason: String,
        /// What kind of failure.
        kind: FailKind,
        /// Prompts sent for this item.
        attempts: u32,
    },
}

impl Outcome {
    /// The item's id.
    pub fn id(&self) -> u64 {
        match self {
            Outcome::Accepted { id, .. } | Outcome::Failed { id, .. } => *id,
        }
    }
}

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct AnnotateConfig {
    /// Worker threads (concurrent requests); at least 1.
    pub jobs: usize,
    /// Guided prompts tried after a blind answer that disagrees with gold.
    pub max_guided: u32,
    /// Keep the blind answer as is (labels parsed, not checked against gold).
    pub blind_only: bool,
    /// Stop the run when this many items in a row failed at the endpoint (0 = never): a dead
    /// server should not cost an hour of retries.
    pub max_consecutive_failures: u32,
}

impl Default for AnnotateConfig {
    /// 4 jobs, 2 guided tries, gold checked, stop after 20 endpoint failures in a row.
    fn default() -> Self {
        AnnotateConfig {
            jobs: 4,
            max_guided: 2,
            blind_only: false,
            max_consecutive_failures: 20,
        }
    }
}

/// A worker about to wait before retrying an item's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WaitNotice {
    /// The item's id.
    pub item: u64,
    /// How long, and why.
    pub wait: Wait,
}

/// Counts so far, for a progress bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// `Some` when this report announces a wait of at least [`ANNOUNCE_WAIT`] (the counts are
    /// unchanged then); `None` when it follows an outcome.
    pub waiting: Option<WaitNotice>,
    /// Items finished (accepted + failed).
    pub done: usize,
    /// Items in the batch, when known.
    pub total: Option<usize>,
    /// Accepted items.
    pub accepted: usize,
    /// Accepted after a guided prompt.
    pub guided: usize,
    /// Failed items.
    pub failed: usize,
    /// HTTP requests sent (retries included).
    pub requests: u64,
}

/// Totals of a finished (or stopped) run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Accepted items.
    pub accepted: usize,
    /// Of those, accepted after a guided prompt.
    pub guided: usize,
    /// Failed items.
    pub failed: usize,
    /// Failed items by kind: endpoint, bad response, refused, no label, gold mismatch.
    pub failed_endpoint: usize,
    /// See `failed_endpoint`.
    pub failed_bad_response: usize,
    /// See `failed_endpoint`.
    pub failed_refused: usize,
    /// See `failed_endpoint`.
    pub failed_no_label: usize,
    /// See `failed_endpoint`.
    pub failed_gold_mismatch: usize,
    /// Answers (blind or guided) that named no label, accepted or not in the end.
    pub unparseable_answers: usize,
    /// Items dropped in flight by a cancel (no outcome; a rerun will redo them).
    pub interrupted: usize,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Of those, retries.
    pub retries: u64,
    /// Prompt tokens the server reported.
    pub prompt_tokens: u64,
    /// Completion tokens the server reported.
    pub completion_tokens: u64,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
    /// Whether the cancel flag stopped the run early.
    pub cancelled: bool,
}

impl Summary {
    /// Failed items a rerun should try again: the endpoint failed or answered garbage through
    /// every retry (`failed_endpoint + failed_bad_response`).
    pub fn unfinished(&self) -> usize {
        self.failed_endpoint + self.failed_bad_response
    }
}

/// Messages from workers to the caller's thread.
enum Msg {
    Outcome(Outcome, usize),
    Waiting(WaitNotice),
    Interrupted,
    Fatal(Error),
}

/// Annotates `items` with `jobs` workers; see the module doc for the scheme.
///
/// `on_outcome` runs on the calling thread once per finished item, in completion order; an
/// error from it (a failed store write) stops the run and is returned. `on_progress` runs after
/// each outcome, and when a worker is about to wait [`ANNOUNCE_WAIT`] or longer before a retry
/// ([`Progress::waiting`]). Setting `cancel` stops handing out items; requests in flight finish
/// (their outcomes are delivered) unless they were waiting to retry, which drops them at once.
///
/// Errors: the first fatal endpoint error ([`is_fatal`]: bad key, unknown model or URL,
/// exhausted quota, any other 4xx, a Retry-After beyond the longest wait), a run of
/// `max_consecutive_failures` items that failed without a verdict or were refused, or
/// `on_outcome`'s error. Outcomes delivered before the error stay delivered; workers waiting to
/// retry stop waiting.
///
/// ```
/// use emoknow::testkit::devserver::{Behaviour, DevServer};
/// use emoknow::knowledge::annotate::{annotate, AnnotateConfig, Item, Outcome};
/// use emoknow::knowledge::llm::{LlmClient, LlmConfig};
/// use emoknow::knowledge::prompts::Prompts;
/// use emoknow::labels::LabelSet;
/// use std::sync::atomic::AtomicBool;
///
/// let gold: LabelSet = "Joy".parse().unwrap();
/// let server = DevServer::start(Behaviour::default().gold_pair("今天 很 开心", gold))?;
/// let client = LlmClient::new(LlmConfig::new(server.base_url(), "dev-model"))?;
/// let items = vec![Item { id: 1, text: "今天 很 开心".into(), gold: Some(gold), shots: vec![] }];
/// let mut stored = Vec::new();
/// let summary = annotate(
///     &client, &Prompts::default(), items, &AnnotateConfig::default(), &AtomicBool::new(false),
///     &mut |o| { stored.push(o); Ok(()) },
///     &mut |_progress| {},
/// )?;
/// assert_eq!((summary.accepted, summary.requests), (1, 1));
/// assert!(matches!(&stored[0], Outcome::Accepted { attempts: 1, .. }));
/// # Ok::<(), emoknow::Error>(())
/// ```
pub fn annotate<I>(
    client: &LlmClient,
    prompts: &Prompts,
    items: I,
    cfg: &AnnotateConfig,
    cancel: &AtomicBool,
    on_outcome: &mut dyn FnMut(Outcome) -> Result<()>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Summary>
where
    I: IntoIterator<Item = Item>,
    I::IntoIter: Send,
{
    let start = Instant::now();
    let usage_before = client.usage();
    let iter = items.into_iter();
    let total = match iter.size_hint() {
        (lo, Some(hi)) if lo == hi => Some(lo),
        _ => None,
    };
    let queue = Mutex::new(iter);
    let abort = AtomicBool::new(false);
    let jobs = cfg.jobs.max(1);
    // Bounded: a worker runs at most one message ahead of the loop below, so a stop decided
    // there (a dead endpoint, a failed store write) is seen before the queue is worked through.
    let (tx, rx) = mpsc::sync_channel::<Msg>(jobs);

    let mut summary = Summary::default();
    let mut progress = Progress {
        total,
        ..Progress::default()
    };
    let mut first_error: Option<Error> = None;
    let mut consecutive = 0u32;
    let mut sink_failed = false;

    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (queue, abort) = (&queue, &abort);
            s.spawn(move || loop {
                if cancel.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(item) = next else { return };
                let stop = || cancel.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed);
                let on_wait = |w: &Wait| {
                    if w.delay >= ANNOUNCE_WAIT {
                        let _ = tx.send(Msg::Waiting(WaitNotice {
                            item: item.id,
                            wait: *w,
                        }));
                    }
                };
                let msg = match annotate_one(client, prompts, &item, cfg, &stop, &on_wait) {
                    Ok(Some(done)) => Msg::Outcome(done.0, done.1),
                    Ok(None) => Msg::Interrupted,
                    Err(e) => {
                        // Stop this worker's siblings now, not when the caller gets to it.
                        abort.store(true, Ordering::Relaxed);
                        Msg::Fatal(e)
                    }
                };
                if tx.send(msg).is_err() {
                    return;
                }
            });
        }
        drop(tx);

        for msg in rx {
            match msg {
                Msg::Interrupted => summary.interrupted += 1,
                Msg::Waiting(w) => {
                    if first_error.is_none() {
                        progress.waiting = Some(w);
                        on_progress(&progress);
                        progress.waiting = None;
                    }
                }
                Msg::Fatal(e) => {
                    abort.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
                Msg::Outcome(o, unparseable) => {
                    summary.unparseable_answers += unparseable;
                    match &o {
                        Outcome::Accepted { prompt_kind, .. } => {
                            summary.accepted += 1;
                            if *prompt_kind == PromptKind::Guided {
                                summary.guided += 1;
                            }
                            consecutive = 0;
                        }
                        Outcome::Failed { kind, reason, .. } => {
                            summary.failed += 1;
                            match kind {
                                FailKind::Endpoint => summary.failed_endpoint += 1,
                                FailKind::BadResponse => summary.failed_bad_response += 1,
                                FailKind::Refused => summary.failed_refused += 1,
                                FailKind::NoLabel => summary.failed_no_label += 1,
                                FailKind::GoldMismatch => summary.failed_gold_mismatch += 1,
                            }
                            if !matches!(kind, FailKind::NoLabel | FailKind::GoldMismatch) {
                                consecutive += 1;
                                let limit = cfg.max_consecutive_failures;
                                if limit > 0 && consecutive >= limit && first_error.is_none() {
                                    abort.store(true, Ordering::Relaxed);
                                    first_error = Some(Error::Llm {
                                        status: None,
                                        retryable: true,
                                        msg: format!("{consecutive} items in a row failed at the endpoint; stopping (is it up?). Last: {reason}"),
                                        retry_after_secs: None,
                                    });
                                }
                            } else {
                                consecutive = 0;
                            }
                        }
                    }
                    // Outcomes in flight when the run stopped are still good knowledge,
                    // unless the sink itself failed.
                    if !sink_failed {
                        if let Err(e) = on_outcome(o) {
                            abort.store(true, Ordering::Relaxed);
                            sink_failed = true;
                            first_error.get_or_insert(e);
                        }
                    }
                    progress.done = summary.accepted + summary.failed;
                    progress.accepted = summary.accepted;
                    progress.guided = summary.guided;
                    progress.failed = summary.failed;
                    progress.requests = client.usage().since(&usage_before).requests;
                    on_progress(&progress);
                }
            }
        }
    });

    if let Some(e) = first_error {
        return Err(e);
    }
    let u: Usage = client.usage().since(&usage_before);
    summary.requests = u.requests;
    summary.retries = u.retries;
    summary.prompt_tokens = u.prompt_tokens;
    summary.completion_tokens = u.completion_tokens;
    summary.elapsed_secs = start.elapsed().as_secs_f64();
    summary.cancelled = cancel.load(Ordering::Relaxed);
    Ok(summary)
}

/// One item through the scheme. `Ok(None)`: interrupted by `stop`. `Err`: fatal for the run.
/// The `usize` counts answers that named no label.
fn annotate_one(
    client: &LlmClient,
    prompts: &Prompts,
    item: &Item,
    cfg: &AnnotateConfig,
    stop: &dyn Fn() -> bool,
    on_wait: &dyn Fn(&Wait),
) -> Result<Option<(Outcome, usize)>> {
    let mut attempts = 0u32;
    let mut unparseable = 0usize;
    let failed = |reason: String, kind: FailKind, attempts: u32| Outcome::Failed {
        id: item.id,
        reason,
        kind,
        attempts,
    };

    let mut kind = PromptKind::Blind;
    let mut messages = prompts.blind(&item.text, &item.shots);
    let check_gold = if cfg.blind_only { None } else { item.gold };
    loop {
        attempts += 1;
        let resp = match client.chat_observed(&messages, stop, on_wait) {
            Ok(r) => r,
            Err(Error::Interrupted) => return Ok(None),
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                let k = match &e {
                    Error::LlmRefused { .. } => FailKind::Refused,
                    Error::Llm {
                        status: Some(s), ..
                    } if (200..300).contains(s) => FailKind::BadResponse,
                    _ => FailKind::Endpoint,
                };
                return Ok(Some((failed(e.full_message(), k, attempts), unparseable)));
            }
        };
        let asserted = asserted_labels(&resp.content);
        if asserted.is_empty() {
            unparseable += 1;
        }
        let accept = !asserted.is_empty()
            && match check_gold {
                None => true,
                Some(g) => asserted == g,
            };
        if accept {
            return Ok(Some((
                Outcome::Accepted {
                    id: item.id,
                    raw: resp.content,
                    asserted,
                    prompt_kind: kind,
                    attempts,
                    model: resp.model,
                },
                unparseable,
            )));
        }
        let last_answer = asserted;
        let guided_so_far = attempts - 1;
        match check_gold {
            Some(g) if guided_so_far < cfg.max_guided => {
                kind = PromptKind::Guided;
                messages = prompts.guided(&item.text, g, &item.shots);
            }
            Some(g) if !last_answer.is_empty() => {
                let reason = format!(
                    "after {attempts} prompt(s) the answer asserted {} but the gold labels are {g}",
                    show(last_answer)
                );
                return Ok(Some((
                    failed(reason, FailKind::GoldMismatch, attempts),
                    unparseable,
                )));
            }
            _ => {
                let reason = format!(
                    "the answer names no label (after {attempts} prompt(s)); it starts: {}",
                    resp.content.chars().take(80).collect::<String>()
                );
                return Ok(Some((
                    failed(reason, FailKind::NoLabel, attempts),
                    unparseable,
                )));
            }
        }
    }
}

fn show(l: LabelSet) -> String {
    if l.is_empty() {
        "no label".into()
    } else {
        l.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::llm::{ApiKey, LlmConfig};
    use crate::testkit::devserver::{AnswerMode, Behaviour, DevServer, Fault};

    fn item(id: u64, text: &str, gold: Option<&str>) -> Item {
        Item {
            id,
            text: text.to_string(),
            gold: gold.map(|g| g.parse().unwrap()),
            shots: Vec::new(),
        }
    }

    fn gold_of(items: &[Item]) -> Vec<(String, LabelSet)> {
        items
            .iter()
            .filter_map(|i| i.gold.map(|g| (i.text.clone(), g)))
            .collect()
    }

    fn client(server: &DevServer, timeout_secs: f64, max_retries: u32) -> LlmClient {
        let mut c = LlmConfig::new(server.base_url(), "dev-model");
        c.timeout_secs = timeout_secs;
        c.max_retries = max_retries;
        c.backoff_base_ms = 5;
        c.backoff_max_ms = 20;
        LlmClient::new(c).unwrap()
    }

    /// Runs a batch; returns outcomes sorted by id, the summary, and the progress trace.
    fn run(
        client: &LlmClient,
        items: Vec<Item>,
        cfg: AnnotateConfig,
    ) -> (Result<Summary>, Vec<Outcome>, Vec<Progress>) {
        let mut outs = Vec::new();
        let mut prog = Vec::new();
        let cancel = AtomicBool::new(false);
        let s = annotate(
            client,
            &Prompts::default(),
            items,
            &cfg,
            &cancel,
            &mut |o| {
                outs.push(o);
                Ok(())
            },
            &mut |p| prog.push(*p),
        );
        outs.sort_by_key(Outcome::id);
        (s, outs, prog)
    }

    fn cfg(jobs: usize) -> AnnotateConfig {
        AnnotateConfig {
            jobs,
            ..AnnotateConfig::default()
        }
    }

    /// Every outcome is either accepted with labels it really asserts, or failed.
    fn assert_valid(outs: &[Outcome], items: &[Item]) {
        assert_eq!(outs.len(), items.len());
        for (o, it) in outs.iter().zip(items) {
            assert_eq!(o.id(), it.id);
            if let Outcome::Accepted { raw, asserted, .. } = o {
                assert!(!asserted.is_empty());
                assert_eq!(asserted_labels(raw), *asserted);
                if let Some(g) = it.gold {
                    assert_eq!(*asserted, g);
                }
            }
        }
    }

    #[test]
    fn right_answers_are_accepted_blind() {
        let items = vec![
            item(1, "好 开心", Some("Joy")),
            item(2, "又 怕 又 气", Some("Anxiety,Anger")),
            item(3, "没有 标签 的 测试 句", None),
        ];
        let server = DevServer::start(Behaviour::default().with_gold(gold_of(&items))).unwrap();
        let c = client(&server, 5.0, 2);
        let (s, outs, prog) = run(&c, items.clone(), cfg(2));
        let s = s.unwrap();
        assert_valid(&outs, &items);
        assert_eq!((s.accepted, s.guided, s.failed, s.requests), (3, 0, 0, 3));
        assert!(s.prompt_tokens > 0 && s.completion_tokens > 0);
        match &outs[1] {
            Outcome::Accepted {
                prompt_kind,
                attempts,
                model,
                asserted,
                ..
            } => {
                assert_eq!(
                    (*prompt_kind, *attempts, model.as_str()),
                    (PromptKind::Blind, 1, "dev-model")
                );
                assert_eq!(asserted.to_string(), "Anxiety,Anger");
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(prog.last().unwrap().done, 3);
        assert_eq!(prog.last().unwrap().total, Some(3));
        // The server saw the seed's blind prompt with the sentence last.
        let body = server.requests()[0].json().unwrap();
        assert_eq!(body["messages"].as_array().unwrap().len(), 4);
        assert!(body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("请对下述评论进行分类"));
    }

    #[test]
    fn wrong_blind_answer_is_fixed_by_the_guided_prompt() {
        let items = vec![item(7, "大雪 回家", Some("Anxiety,Sorrow"))];
        let b = Behaviour {
            answer: AnswerMode::WrongUnlessGuided,
            ..Behaviour::default()
        }
        .with_gold(gold_of(&items));
        let server = DevServer::start(b).unwrap();
        let (s, outs, _) = run(&client(&server, 5.0, 2), items.clone(), cfg(1));
        assert_valid(&outs, &items);
        match &outs[0] {
            Outcome::Accepted {
                prompt_kind,
                attempts,
                ..
            } => {
                assert_eq!((*prompt_kind, *attempts), (PromptKind::Guided, 2));
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(s.unwrap().guided, 1);
        let log = server.requests();
        let last_user = log[1].json().unwrap()["messages"][3]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(last_user, "大雪 回家 ,答案为Anxiety,Sorrow");
    }

    #[test]
    fn blind_only_keeps_the_wrong_answer_and_gold_free_items_are_not_checked() {
        let items = vec![
            item(1, "大雪 回家", Some("Anxiety")),
            item(2, "无 金标", None),
        ];
        let b = Behaviour {
            answer: AnswerMode::AlwaysWrong,
            ..Behaviour::default()
        }
        .with_gold(gold_of(&items));
        let server = DevServer::start(b).unwrap();
        let c = client(&server, 5.0, 0);
        let mut conf = cfg(1);
        conf.blind_only = true;
        let (s, outs, _) = run(&c, items.clone(), conf);
        assert_eq!(s.unwrap().accepted, 2);
        assert!(
            matches!(&outs[0], Outcome::Accepted { asserted, prompt_kind: PromptKind::Blind, .. } if asserted.to_string() == "Love")
        );
        assert_eq!(server.request_count(), 2);
    }

    #[test]
    fn guided_that_never_converges_fails_with_gold_mismatch() {
        let items = vec![item(1, "大雪 回家", Some("Anxiety"))];
        let b = Behaviour {
            answer: AnswerMode::AlwaysWrong,
            ..Behaviour::default()
        }
        .with_gold(gold_of(&items));
        let server = DevServer::start(b).unwrap();
        let (s, outs, _) = run(&client(&server, 5.0, 0), items.clone(), cfg(1));
        let s = s.unwrap();
        assert_eq!((s.failed, s.failed_gold_mismatch), (1, 1));
        match &outs[0] {
            Outcome::Failed {
                attempts,
                kind,
                reason,
                ..
            } => {
                assert_eq!((*attempts, *kind), (3, FailKind::GoldMismatch));
                assert!(
                    reason.contains("asserted Love") && reason.contains("gold labels are Anxiety"),
                    "{reason}"
                );
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn rate_limit_and_server_errors_are_retried() {
        let items = vec![
            item(1, "甲 句", Some("Joy")),
            item(2, "乙 句", Some("Love")),
        ];
        let b = Behaviour {
            faults: vec![
                Fault::RateLimit {
                    retry_after: Some("1".into()),
                },
                Fault::Status(500),
                Fault::Close,
            ],
            ..Behaviour::default()
        }
        .with_gold(gold_of(&items));
        let server = DevServer::start(b).unwrap();
        let (s, outs, _) = run(&client(&server, 5.0, 3), items.clone(), cfg(2));
        let s = s.unwrap();
        assert_valid(&outs, &items);
        assert_eq!((s.accepted, s.requests, s.retries), (2, 8, 6));
        assert!(outs
            .iter()
            .all(|o| matches!(o, Outcome::Accepted { attempts: 1, .. })));
        // Each sentence got its own 429 (Retry-After: 1), 500 and closed connection.
        let log = server.requests();
        assert_eq!(log.iter().filter(|r| r.status == Some(429)).count(), 2);
        assert_eq!(log.iter().filter(|r| r.status == Some(500)).count(), 2);
        assert_eq!(
            log.iter().filter(|r| r.fault == Some(Fault::Close)).count(),
            2
        );
    }

    #[test]
    fn hang_past_timeout_is_retried_then_fails_or_recovers() {
        let items = vec![item(1, "慢 句", Some("Joy"))];
        // Recovers: the first request hangs, the retry is answered.
        let b = Behaviour {
            faults: vec![Fault::Hang],
            ..Behaviour::default()
        }
        .with_gold(gold_of(&items));
        let server = DevServer::start(b).unwrap();
        let (s, outs, _) = run(&client(&server, 0.3, 2), items.clone(), cfg(1));
        assert_valid(&outs, &items);
        assert_eq!(s.unwrap().requests, 2);
        // Never recovers: retried, then failed at the endpoint.
        let b = Behaviour {
            always: Some(Fault::Hang),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let (s, outs, _) = run(&client(&server, 0.3, 1), items.clone(), cfg(1));
        let s = s.unwrap();
        assert_eq!((s.failed_endpoint, s.requests), (1, 2));
        match &outs[0] {
            Outcome::Failed {
                reason,
                kind: FailKind::Endpoint,
                attempts: 1,
                ..
            } => {
                assert!(
                    reason.contains("no answer within 0.3 s")
                        && reason.contains("gave up after 2 attempts"),
                    "{reason}"
                );
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn garbage_is_failed_and_counted() {
        let items = vec![
            item(1, "一", Some("Joy")),
            item(2, "二", None),
            item(3, "三", Some("Love")),
        ];
        let b = Behaviour {
            global_faults: vec![Fault::NotJson],
            always: Some(Fault::NoLabel),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let mut conf = cfg(1);
        conf.max_guided = 1;
        let (s, outs, _) = run(&client(&server, 5.0, 0), items.clone(), conf);
        let s = s.unwrap();
        assert_eq!((s.accepted, s.failed), (0, 3));
        assert_eq!((s.failed_bad_response, s.failed_no_label), (1, 2));
        // Item 1 hit the non-JSON reply; 2 (gold-free) one no-label answer; 3 blind + guided.
        assert_eq!(s.unparseable_answers, 3);
        assert!(outs.iter().all(|o| matches!(o, Outcome::Failed { .. })));
        match &outs[0] {
            Outcome::Failed {
                reason,
                kind: FailKind::BadResponse,
                ..
            } => {
                assert!(reason.contains("not chat-completions JSON"), "{reason}")
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn bad_key_stops_the_run_with_a_clear_error_without_the_key() {
        let items: Vec<Item> = (0..20)
            .map(|i| item(i, &format!("句 {i}"), Some("Joy")))
            .collect();
        let b = Behaviour {
            require_key: Some("sk-right".into()),
            echo_key_in_errors: true,
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let mut c = LlmConfig::new(server.base_url(), "dev-model");
        c.api_key = Some(ApiKey::new("sk-leaky-secret"));
        let client = LlmClient::new(c).unwrap();
        let (s, outs, _) = run(&client, items, cfg(2));
        let err = s.unwrap_err();
        let shown = format!("{err} | {err:?}");
        assert!(
            shown.contains("rejected the API key") && shown.contains("401"),
            "{shown}"
        );
        assert!(!shown.contains("sk-leaky-secret"), "{shown}");
        assert!(outs.is_empty());
        // Stopped early: at most one request per worker.
        assert!(server.request_count() <= 2, "{}", server.request_count());
    }

    #[test]
    fn a_fatal_error_cuts_short_a_siblings_long_wait() {
        let items = vec![item(1, "限 流 句", None), item(2, "坏 请求 句", None)];
        let b = Behaviour {
            fault_for: [
                (
                    "限 流 句".to_string(),
                    Fault::RateLimit {
                        retry_after: Some("250".into()),
                    },
                ),
                ("坏 请求 句".to_string(), Fault::Status(400)),
            ]
            .into(),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        // Without the cut, this call would sleep 250 s before returning.
        let (s, outs, prog) = run(&client(&server, 5.0, 3), items, cfg(2));
        let e = s.unwrap_err().to_string();
        assert!(e.contains("HTTP 400"), "{e}");
        assert!(outs.is_empty(), "{outs:?}");
        assert!(server.request_count() <= 2);
        // The wait, if it began before the stop, was announced with the item's id.
        for p in prog.iter().filter_map(|p| p.waiting) {
            assert_eq!(
                (p.item, p.wait.status, p.wait.retry_after),
                (1, Some(429), true)
            );
        }
    }

    #[test]
    fn a_dead_endpoint_stops_after_consecutive_failures() {
        let items: Vec<Item> = (0..50).map(|i| item(i, &format!("句 {i}"), None)).collect();
        let b = Behaviour {
            always: Some(Fault::Status(503)),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let mut conf = cfg(1);
        conf.max_consecutive_failures = 3;
        let (s, outs, _) = run(&client(&server, 5.0, 0), items, conf);
        let e = s.unwrap_err().to_string();
        assert!(e.contains("3 items in a row failed"), "{e}");
        // It stopped soon after the third failure instead of working through all 50.
        assert!((3..50).contains(&outs.len()), "{}", outs.len());
    }

    #[test]
    fn callback_error_stops_the_run() {
        let items: Vec<Item> = (0..30).map(|i| item(i, &format!("句 {i}"), None)).collect();
        let b = Behaviour {
            latency_ms: 20,
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let c = client(&server, 5.0, 0);
        let cancel = AtomicBool::new(false);
        let mut n = 0;
        let r = annotate(
            &c,
            &Prompts::default(),
            items,
            &cfg(2),
            &cancel,
            &mut |_| {
                n += 1;
                if n == 3 {
                    Err(Error::Invalid("disk full".into()))
                } else {
                    Ok(())
                }
            },
            &mut |_| {},
        );
        assert_eq!(r.unwrap_err().to_string(), "disk full");
        assert!(server.request_count() < 30);
    }

    #[test]
    fn cancel_stops_handing_out_items() {
        let items: Vec<Item> = (0..40).map(|i| item(i, &format!("句 {i}"), None)).collect();
        let b = Behaviour {
            latency_ms: 20,
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let c = client(&server, 5.0, 0);
        let cancel = AtomicBool::new(false);
        let mut seen = 0;
        let s = annotate(
            &c,
            &Prompts::default(),
            items,
            &cfg(2),
            &cancel,
            &mut |_| {
                seen += 1;
                if seen == 4 {
                    cancel.store(true, Ordering::Relaxed);
                }
                Ok(())
            },
            &mut |_| {},
        )
        .unwrap();
        assert!(s.cancelled);
        // The 4th outcome set the flag; what was in flight then finished and was delivered.
        assert!((4..=10).contains(&seen), "{seen}");
        assert_eq!(s.accepted, seen);
        assert_eq!(server.request_count(), seen as u64);
    }

    #[test]
    fn retrieved_shots_reach_the_server() {
        let mut it = item(1, "目标 句", Some("Joy"));
        it.shots = vec![("邻居 句".into(), "Love".parse().unwrap())];
        let server =
            DevServer::start(Behaviour::default().with_gold(gold_of(&[it.clone()]))).unwrap();
        let (s, _, _) = run(&client(&server, 5.0, 0), vec![it], cfg(1));
        assert_eq!(s.unwrap().accepted, 1);
        let body = server.requests()[0].json().unwrap();
        let msgs = body["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 6);
        assert_eq!(msgs[3]["content"], "邻居 句");
        assert_eq!(msgs[4]["content"], "这段评论包含以下分类:\nLove");
        assert_eq!(msgs[5]["content"], "目标 句");
    }
}
