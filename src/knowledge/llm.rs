//! The OpenAI-compatible chat-completions client: one `POST {endpoint}/chat/completions` per
//! call, retries with exponential backoff and jitter, a shared requests-per-minute limiter, and
//! token accounting.
//!
//! It speaks the protocol of DashScope's compatible mode (the default, for qwen-max), vLLM,
//! LLaMA-Factory's `api`, Ollama and llama.cpp's server. It knows nothing of prompts or labels:
//! [`crate::knowledge::prompts`] builds the messages and [`crate::knowledge::annotate`] decides
//! what an answer is worth.
//!
//! Faults: 429, 408, 5xx, timeouts, connection failures and 2xx answers that are not a
//! well-formed chat completion (HTML, truncated JSON, no choices or content) are retried
//! (Retry-After in seconds or as an HTTP date is honoured, up to
//! [`LlmConfig::max_wait_secs`]; a server asking for longer stops the call with
//! [`crate::Error::LlmWaitTooLong`] instead of sleeping). A refusal of one request's content
//! (content inspection, context too long) is [`crate::Error::LlmRefused`]: other requests may
//! still succeed. A bad key, a missing model, a wrong URL and every other 4xx stop at once
//! with [`crate::Error::Llm`] saying which ([`is_fatal`]). Waits can be watched
//! ([`LlmClient::chat_observed`]) and cut short.
//!
//! Secrets: the API key is an [`ApiKey`] whose `Debug` prints `<redacted>`; credentials inside
//! the endpoint URL (`http://user:pass@host/v1`, sent as Basic auth) are shown as
//! `http://***@host/v1` ([`redact_url`]). Every message that leaves the client is scrubbed of
//! both, in every form the server could echo them.
//!
//! Over 900 lines but one concept, the client: its retry, rate-limit, answer-parsing and
//! secret-scrubbing parts all act on the same call, and almost a third of the file is their
//! tests against the local dev server.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// DashScope's OpenAI-compatible base URL (the seed's qwen-max).
pub const DASHSCOPE_BASE_URL: &str = "https://dashscope.aliyuncs.com/compatible-mode/v1";

/// The seed's annotation model.
pub const DEFAULT_MODEL: &str = "qwen-max";

/// Environment variables tried, in order, when the caller names none.
pub const DEFAULT_KEY_ENV_VARS: [&str; 2] = ["DASHSCOPE_API_KEY", "OPENAI_API_KEY"];

/// Longest server message (in chars) kept in an error.
const MAX_SERVER_MSG_CHARS: usize = 300;

/// The default [`LlmConfig::max_wait_secs`]: five minutes.
pub const DEFAULT_MAX_WAIT_SECS: f64 = 300.0;

/// `url` with the credentials of its authority (`user:password@`) replaced by `***@`, for
/// messages: `http://u:p@host:8000/v1` → `http://***@host:8000/v1`. Anything else is returned
/// as is.
pub fn redact_url(url: &str) -> String {
    match split_userinfo(url) {
        Some((scheme, _, rest)) => format!("{scheme}://***@{rest}"),
        None => url.to_string(),
    }
}

/// `(scheme, userinfo, host-and-rest)` of a URL whose authority has a `userinfo@` part.
fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let i = url.find("://")?;
    let rest = &url[i + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((&url[..i], &rest[..at], &rest[at + 1..]))
}

/// The host (and port) of a URL, without credentials or path: `127.0.0.1:8000`.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string()
}

/// `%XX` escapes decoded (invalid ones kept), lossily as UTF-8.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (what Basic auth carries).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What must never appear in a message: the API key, and the endpoint's credentials as typed,
/// percent-decoded, and as the Basic auth value. Longest first, so a secret containing another
/// is replaced whole.
fn secrets_of(cfg: &LlmConfig) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if let Some(k) = &cfg.api_key {
        v.push(k.expose().to_string());
    }
    if let Some((_, userinfo, _)) = split_userinfo(&cfg.endpoint) {
        v.push(userinfo.to_string());
        let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (user_d, pass_d) = (percent_decode(user), percent_decode(pass));
        v.push(format!("{user_d}:{pass_d}"));
        v.push(base64(format!("{user_d}:{pass_d}").as_bytes()));
        // Short parts would blot out ordinary words; the forms above catch them in context.
        v.extend(
            [user, pass, &user_d, &pass_d]
                .into_iter()
                .filter(|p| p.chars().count() >= 4)
                .map(str::to_string),
        );
    }
    v.retain(|s| !s.is_empty());
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.dedup();
    v
}

/// An API key. `Debug` never shows it; only [`ApiKey::expose`] does, for the header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (surrounding whitespace is trimmed).
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into().trim().to_string())
    }

    /// The key itself, for the `Authorization` header. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A key and the environment variable it came from.
#[derive(Debug, Clone)]
pub struct ResolvedKey {
    /// The key.
    pub key: ApiKey,
    /// The variable that held it (for messages like "using DASHSCOPE_API_KEY").
    pub var: String,
}

/// Reads the API key from the environment: from `var` when given (an error if it is unset or
/// empty, since the user asked for it), else from the first set of [`DEFAULT_KEY_ENV_VARS`].
/// `Ok(None)` means no key: fine for local servers (vLLM, Ollama, llama.cpp).
pub fn resolve_api_key(var: Option<&str>) -> Result<Option<ResolvedKey>> {
    resolve_api_key_with(var, |name| std::env::var(name).ok())
}

/// [`resolve_api_key`] with a custom lookup (tests use a map instead of the process env).
pub fn resolve_api_key_with(
    var: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<ResolvedKey>> {
    let found = |name: &str| {
        lookup(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| ResolvedKey {
                key: ApiKey::new(v),
                var: name.to_string(),
            })
    };
    match var {
        Some(name) => found(name).map(Some).ok_or_else(|| Error::ApiKeyUnset {
            var: name.to_string(),
        }),
        None => Ok(DEFAULT_KEY_ENV_VARS.iter().find_map(|n| found(n))),
    }
}

/// Whether `endpoint` (a URL) is on this machine: `localhost` (and its subdomains), a loopback
/// address, or an unspecified one. Such servers (vLLM, Ollama, llama.cpp) need no API key.
pub fn is_local_endpoint(endpoint: &str) -> bool {
    let host = host_of(endpoint);
    // Drop the port: `[::1]:8000`, `127.0.0.1:8000`, `localhost:8000`.
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
        None => host
            .rsplit_once(':')
            .map_or(host.as_str(), |(h, _)| h)
            .to_string(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Refuses to run without a key against an endpoint that is not on this machine (see
/// [`is_local_endpoint`]): every request would be refused, after retries and backoff.
pub fn require_key_for(endpoint: &str, key: Option<&ResolvedKey>) -> Result<()> {
    if key.is_some() || is_local_endpoint(endpoint) {
        return Ok(());
    }
    Err(Error::ApiKeyMissing {
        vars: DEFAULT_KEY_ENV_VARS.join(" or "),
        host: host_of(endpoint),
    })
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One message of a chat-completions request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// How to reach the model and how hard to try. `Debug` shows neither the key nor the
/// endpoint's credentials.
#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL ending in `/v1` (`{endpoint}/chat/completions` is posted to). A URL that already
    /// ends in `/chat/completions` is used as is. Credentials in it (`http://user:pass@host/v1`)
    /// are sent as Basic auth and never shown.
    pub endpoint: String,
    /// Model name sent in every request.
    pub model: String,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<ApiKey>,
    /// Sampling temperature; `None` leaves the server's default (as the seed did).
    pub temperature: Option<f32>,
    /// Cap on generated tokens; `None` leaves the server's default.
    pub max_tokens: Option<u32>,
    /// Whole-request timeout (connect + response), seconds.
    pub timeout_secs: f64,
    /// Retries after the first try, for retryable faults only.
    pub max_retries: u32,
    /// Requests per minute across all workers sharing the client; `None` = unlimited.
    pub rpm: Option<u32>,
    /// First backoff delay, milliseconds; doubles per retry (with jitter) up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    /// Longest backoff delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Longest wait honoured, seconds: a server whose Retry-After asks for more stops the call
    /// with a fatal [`Error::LlmWaitTooLong`] instead of a long sleep.
    pub max_wait_secs: f64,
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("endpoint", &redact_url(&self.endpoint))
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("rpm", &self.rpm)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("max_wait_secs", &self.max_wait_secs)
            .finish()
    }
}

impl Default for LlmConfig {
    /// qwen-max on DashScope, no key, 60 s timeout, 5 retries, backoff 0.5 s → 30 s, waits up
    /// to [`DEFAULT_MAX_WAIT_SECS`].
    fn default() -> Self {
        LlmConfig::new(DASHSCOPE_BASE_URL, DEFAULT_MODEL)
    }
}

impl LlmConfig {
    /// A config for `model` at `endpoint` with default limits.
    pub fn new(endpoint: impl Into<String>, model: impl Into<String>) -> LlmConfig {
        LlmConfig {
            endpoint: endpoint.into(),
            model: model.into(),
            api_key: None,
            temperature: None,
            max_tokens: None,
            timeout_secs: 60.0,
            max_retries: 5,
            rpm: None,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            max_wait_secs: DEFAULT_MAX_WAIT_SECS,
        }
    }

    /// The URL requests are posted to.
    pub fn url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        }
    }
}

/// One successful completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The assistant message's text.
    pub content: String,
    /// Model name as the server reported it (the configured name when it reported none).
    pub model: String,
    /// Prompt tokens the server counted (0 when it sent no usage).
    pub prompt_tokens: u64,
    /// Completion tokens the server counted.
    pub completion_tokens: u64,
    /// HTTP requests this call took (1 + retries).
    pub requests: u32,
}

/// A wait before a retry, as announced to [`LlmClient::chat_observed`]'s observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Wait {
    /// How long.
    pub delay: Duration,
    /// Whether the server asked for it (Retry-After), rather than the client's own backoff.
    pub retry_after: bool,
    /// HTTP status of the failed attempt; `None` for a timeout or a broken connection.
    pub status: Option<u16>,
    /// The retry the wait precedes (1 = the first retry).
    pub retry: u32,
    /// Retries allowed per call.
    pub max_retries: u32,
}

/// Totals since the client was built. Cheap to take; counters are atomics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Requests that were retries.
    pub retries: u64,
    /// Requests that got no usable answer (errors of any kind).
    pub failed_requests: u64,
    /// Prompt tokens reported by the server.
    pub prompt_tokens: u64,
    /// Completion tokens reported by the server.
    pub completion_tokens: u64,
}

impl Usage {
    /// `self - earlier`, field by field (counts for one run on a shared client).
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            requests: self.requests - earlier.requests,
            retries: self.retries - earlier.retries,
            failed_requests: self.failed_requests - earlier.failed_requests,
            prompt_tokens: self.prompt_tokens - earlier.prompt_tokens,
            completion_tokens: self.completion_tokens - earlier.completion_tokens,
        }
    }
}

#[derive(Default)]
struct UsageCounters {
    requests: AtomicU64,
    retries: AtomicU64,
    failed_requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

/// Spaces requests evenly at `60 / rpm` seconds, across every thread that shares it.
///
/// No bursts: each caller reserves the next free slot and sleeps until it. Retries take
/// slots too, since the server counts them against the same quota.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter for `rpm` requests per minute (`rpm` ≥ 1).
    pub fn per_minute(rpm: u32) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(60.0 / f64::from(rpm.max(1))),
            next: Mutex::new(None),
        }
    }

    /// The gap between two requests.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves the next slot at or after `now` and returns it.
    pub fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match *next {
            Some(n) if n > now => n,
            _ => now,
        };
        *next = Some(slot + self.interval);
        slot
    }

    /// Waits for a slot. Errors with [`Error::Interrupted`] if `cancel` is set meanwhile.
    pub fn acquire(&self, cancel: Option<&AtomicBool>) -> Result<()> {
        self.acquire_until(&|| cancel.is_some_and(|c| c.load(Ordering::Relaxed)))
    }

    /// [`RateLimiter::acquire`] that gives up when `stop()` turns true.
    fn acquire_until(&self, stop: &dyn Fn() -> bool) -> Result<()> {
        let slot = self.reserve(Instant::now());
        sleep_until(slot, stop)
    }
}

/// Sleeps until `deadline`, waking every 50 ms to ask `stop`.
fn sleep_until(deadline: Instant, stop: &dyn Fn() -> bool) -> Result<()> {
    loop {
        if stop() {
            return Err(Error::Interrupted);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

/// A failed attempt, before it becomes an [`Error::Llm`] or [`Error::LlmRefused`].
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    retryable: bool,
    /// The server refused this request's content; others may succeed.
    refused: bool,
    msg: String,
    retry_after_secs: Option<f64>,
}

/// A blocking client, cheap to share by reference across worker threads (one connection pool,
/// one rate limiter, one set of counters).
pub struct LlmClient {
    http: reqwest::blocking::Client,
    /// Where requests go (credentials included: reqwest turns them into Basic auth).
    url: String,
    /// `url` for messages, credentials replaced by `***`.
    shown_url: String,
    /// Strings scrubbed from every message (see [`secrets_of`]).
    secrets: Vec<String>,
    cfg: LlmConfig,
    limiter: Option<RateLimiter>,
    usage: UsageCounters,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("url", &self.shown_url)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    /// Builds the client. Touches no network.
    ///
    /// Errors: [`Error::Setting`] for a non-http(s) endpoint, a negative longest wait, a
    /// non-positive timeout, or an `rpm` of 0.
    pub fn new(cfg: LlmConfig) -> Result<LlmClient> {
        let url = cfg.url();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Setting {
                name: "endpoint",
                msg: format!(
                    "LLM endpoint {:?} must start with http:// or https:// (e.g. {DASHSCOPE_BASE_URL})",
                    redact_url(&cfg.endpoint)
                ),
            });
        }
        if cfg.max_wait_secs.is_nan() || cfg.max_wait_secs < 0.0 {
            return Err(Error::Setting {
                name: "max_wait_secs",
                msg: format!(
                    "the longest wait must be a number of seconds ≥ 0, got {}",
                    cfg.max_wait_secs
                ),
            });
        }
        if !(cfg.timeout_secs > 0.0 && cfg.timeout_secs.is_finite()) {
            return Err(Error::Setting {
                name: "timeout_secs",
                msg: format!(
                    "LLM timeout must be a positive number of seconds, got {}",
                    cfg.timeout_secs
                ),
            });
        }
        if cfg.rpm == Some(0) {
            return Err(Error::Setting {
                name: "rpm",
                msg: "the request rate must be at least 1 request per minute".into(),
            });
        }
        let timeout = Duration::from_secs_f64(cfg.timeout_secs);
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(15)))
            .user_agent(concat!("emoknow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Llm {
                status: None,
                retryable: false,
                msg: format!("cannot build the HTTP client: {}", crate::error::chain(&e)),
                retry_after_secs: None,
            })?;
        Ok(LlmClient {
            http,
            shown_url: redact_url(&url),
            secrets: secrets_of(&cfg),
            url,
            limiter: cfg.rpm.map(RateLimiter::per_minute),
            cfg,
            usage: UsageCounters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// The URL requests go to, credentials shown as `***` (for messages).
    pub fn display_url(&self) -> &str {
        &self.shown_url
    }

    /// The endpoint's host and port, without credentials (`127.0.0.1:8000`).
    pub fn host(&self) -> String {
        host_of(&self.shown_url)
    }

    /// Totals so far.
    pub fn usage(&self) -> Usage {
        let u = &self.usage;
        Usage {
            requests: u.requests.load(Ordering::Relaxed),
            retries: u.retries.load(Ordering::Relaxed),
            failed_requests: u.failed_requests.load(Ordering::Relaxed),
            prompt_tokens: u.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: u.completion_tokens.load(Ordering::Relaxed),
        }
    }

    /// Sends `messages` and returns the answer, retrying retryable faults.
    ///
    /// Errors: [`Error::Llm`] (`retryable` tells a fault that outlived its retries from one
    /// that no retry would fix; [`is_fatal`] tells one that dooms every later request too).
    /// Blocks up to `(1 + max_retries) × timeout` plus backoff.
    pub fn chat(&self, messages: &[ChatMessage]) -> Result<ChatResponse> {
        self.chat_cancellable(messages, None)
    }

    /// [`LlmClient::chat`] that gives up with [`Error::Interrupted`] when `cancel` is set
    /// while it waits (backoff or rate limit). A request already on the wire is not aborted.
    pub fn chat_cancellable(
        &self,
        messages: &[ChatMessage],
        cancel: Option<&AtomicBool>,
    ) -> Result<ChatResponse> {
        self.chat_observed(
            messages,
            &|| cancel.is_some_and(|c| c.load(Ordering::Relaxed)),
            &|_| {},
        )
    }

    /// [`LlmClient::chat`] that tells `on_wait` before each wait for a retry (so a caller can
    /// say what it is waiting for) and gives up with [`Error::Interrupted`] as soon as `stop()`
    /// turns true while it waits (it is asked every 50 ms). A request already on the wire is
    /// not aborted.
    ///
    /// Errors: as [`LlmClient::chat`]; a Retry-After longer than
    /// [`LlmConfig::max_wait_secs`] is a fatal [`Error::LlmWaitTooLong`] at once.
    pub fn chat_observed(
        &self,
        messages: &[ChatMessage],
        stop: &dyn Fn() -> bool,
        on_wait: &dyn Fn(&Wait),
    ) -> Result<ChatResponse> {
        let body = self.request_body(messages);
        let mut attempt: u32 = 0;
        loop {
            if let Some(l) = &self.limiter {
                l.acquire_until(stop)?;
            } else if stop() {
                return Err(Error::Interrupted);
            }
            self.usage.requests.fetch_add(1, Ordering::Relaxed);
            if attempt > 0 {
                self.usage.retries.fetch_add(1, Ordering::Relaxed);
            }
            match self.attempt(&body) {
                Ok(mut r) => {
                    r.requests = attempt + 1;
                    self.usage
                        .prompt_tokens
                        .fetch_add(r.prompt_tokens, Ordering::Relaxed);
                    self.usage
                        .completion_tokens
                        .fetch_add(r.completion_tokens, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(f) => {
                    self.usage.failed_requests.fetch_add(1, Ordering::Relaxed);
                    if f.retryable && attempt < self.cfg.max_retries {
                        if let Some(s) = f.retry_after_secs.filter(|s| *s > self.cfg.max_wait_secs)
                        {
                            return Err(self.too_long_a_wait(&f, s));
                        }
                        let delay = self.delay(attempt, f.retry_after_secs);
                        on_wait(&Wait {
                            delay,
                            retry_after: f.retry_after_secs.is_some(),
                            status: f.status,
                            retry: attempt + 1,
                            max_retries: self.cfg.max_retries,
                        });
                        sleep_until(Instant::now() + delay, stop)?;
                        attempt += 1;
                        continue;
                    }
                    if f.refused {
                        return Err(Error::LlmRefused {
                            status: f.status,
                            msg: self.redact(&f.msg),
                        });
                    }
                    let msg = if f.retryable {
                        format!("{} (gave up after {} attempts)", f.msg, attempt + 1)
                    } else {
                        f.msg
                    };
                    return Err(Error::Llm {
                        status: f.status,
                        retryable: f.retryable,
                        msg: self.redact(&msg),
                        retry_after_secs: f.retry_after_secs,
                    });
                }
            }
        }
    }

    fn request_body(&self, messages: &[ChatMessage]) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.cfg.model,
            "messages": messages,
            "stream": false,
        });
        if let Some(t) = self.cfg.temperature {
            body["temperature"] = serde_json::json!(t);
        }
        if let Some(m) = self.cfg.max_tokens {
            body["max_tokens"] = serde_json::json!(m);
        }
        body
    }

    /// The fatal error for a server that asks to wait `secs` (> `max_wait_secs`): a quota
    /// reset or maintenance window dooms every request meanwhile, so the run should stop.
    fn too_long_a_wait(&self, f: &Failure, secs: f64) -> Error {
        Error::LlmWaitTooLong {
            host: self.redact(&self.host()),
            status: f.status,
            wait_secs: secs,
            max_wait_secs: self.cfg.max_wait_secs,
            last: self.redact(&f.msg),
        }
    }

    /// Backoff before retry number `attempt + 1`: the server's Retry-After when it sent one
    /// (at most `max_wait_secs`, plus up to 10 % jitter), else base × 2^attempt with "equal
    /// jitter" (50–100 %).
    fn delay(&self, attempt: u32, retry_after_secs: Option<f64>) -> Duration {
        use rand::Rng;
        let mut rng = rand::rng();
        if let Some(s) = retry_after_secs {
            let s = s.clamp(0.0, self.cfg.max_wait_secs);
            return Duration::from_secs_f64(s * rng.random_range(1.0..=1.1));
        }
        let exp = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.cfg.backoff_max_ms);
        Duration::from_secs_f64(exp as f64 / 1000.0 * rng.random_range(0.5..=1.0))
    }

    /// `msg` with the key and the endpoint's credentials scrubbed (see [`secrets_of`]).
    fn redact(&self, msg: &str) -> String {
        self.secrets
            .iter()
            .fold(msg.to_string(), |m, s| m.replace(s.as_str(), "<redacted>"))
    }

    fn attempt(&self, body: &serde_json::Value) -> std::result::Result<ChatResponse, Failure> {
        let mut req = self.http.post(&self.url).json(body);
        if let Some(k) = &self.cfg.api_key {
            req = req.bearer_auth(k.expose());
        }
        let resp = req.send().map_err(|e| self.transport_failure(&e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = resp.text().map_err(|e| self.transport_failure(&e))?;
        if (200..300).contains(&status) {
            parse_completion(&text, &self.cfg.model).map_err(|bad| {
                let (refused, msg) = match bad {
                    BadAnswer::Garbage(m) => (false, m),
                    BadAnswer::Refused(m) => (true, m),
                };
                Failure {
                    status: Some(status),
                    // Garbage is a glitch between us and the model (a proxy's error page, a
                    // cut connection): the same request may well be answered next time.
                    retryable: !refused,
                    refused,
                    msg,
                    retry_after_secs: None,
                }
            })
        } else {
            Err(self.classify(status, &text, retry_after))
        }
    }

    fn transport_failure(&self, e: &reqwest::Error) -> Failure {
        let what = if e.is_timeout() {
            format!("no answer within {} s", self.cfg.timeout_secs)
        } else if e.is_connect() {
            format!("cannot connect to {}", self.shown_url)
        } else {
            format!("request to {} failed", self.shown_url)
        };
        Failure {
            status: None,
            // A builder error is ours and would fail again; everything else is the network.
            retryable: !e.is_builder(),
            refused: false,
            msg: format!("{what}: {}", crate::error::chain(e)),
            retry_after_secs: None,
        }
    }

    /// Turns a non-2xx answer into a failure with a message that says what to do.
    fn classify(&self, status: u16, body: &str, retry_after: Option<f64>) -> Failure {
        let server = server_message(body);
        let lower = body.to_lowercase();
        let model = &self.cfg.model;
        let mentions_model = lower.contains("model")
            && (lower.contains("not found")
                || lower.contains("not exist")
                || lower.contains("model_not_found")
                || lower.contains("unknown model")
                || lower.contains("no such model"));
        let refusal = [
            "data_inspection_failed",
            "datainspectionfailed",
            "inappropriate content",
            "content_filter",
            "content_policy",
            "content management policy",
            "context_length_exceeded",
            "maximum context length",
        ]
        .iter()
        .any(|m| lower.contains(m));
        if refusal && matches!(status, 400 | 413 | 422) {
            return Failure {
                status: Some(status),
                retryable: false,
                refused: true,
                msg: format!("the endpoint refused this sentence (HTTP {status}): {server}"),
                retry_after_secs: None,
            };
        }
        let (retryable, msg) = match status {
            429 if lower.contains("insufficient_quota") || lower.contains("arrearage") => (
                false,
                format!("quota exhausted or account in arrears (HTTP 429): {server}"),
            ),
            429 => (true, format!("rate limited (HTTP 429): {server}")),
            408 | 425 => (true, format!("HTTP {status}: {server}")),
            500..=599 => (true, format!("server error (HTTP {status}): {server}")),
            401 if self.cfg.api_key.is_none() => (
                false,
                format!("the endpoint wants an API key and none was sent (HTTP 401); set DASHSCOPE_API_KEY or OPENAI_API_KEY, or read the key from another variable: {server}"),
            ),
            401 => (
                false,
                format!("the endpoint rejected the API key (HTTP 401): check the key's value and that it belongs to this endpoint: {server}"),
            ),
            403 => (
                false,
                format!("access denied (HTTP 403): the key may lack permission for model {model:?}: {server}"),
            ),
            _ if mentions_model && (400..500).contains(&status) => (
                false,
                format!("unknown model {model:?} at {} (HTTP {status}): {server}", self.shown_url),
            ),
            404 => (
                false,
                format!("{} not found (HTTP 404): is the endpoint right? It should be the base URL ending in /v1, e.g. {DASHSCOPE_BASE_URL}: {server}", self.shown_url),
            ),
            _ => (
                false,
                format!("the endpoint rejected a request (HTTP {status}); stopping, since a request it cannot accept fails the same way every time: check the model name, the temperature and what the endpoint accepts. The server said: {server}"),
            ),
        };
        Failure {
            status: Some(status),
            retryable,
            refused: false,
            msg,
            retry_after_secs: if retryable { retry_after } else { None },
        }
    }
}

/// Whether `err` dooms every later request as well (bad key, no such model or URL, quota
/// exhausted, any other refused request, a Retry-After beyond the longest wait), so a batch
/// should stop instead of failing item after item. Every non-retryable [`Error::Llm`] is, and
/// [`Error::LlmWaitTooLong`]: faults of one request alone are retryable, or
/// [`Error::LlmRefused`].
pub fn is_fatal(err: &Error) -> bool {
    matches!(
        err,
        Error::Llm {
            retryable: false,
            ..
        } | Error::LlmWaitTooLong { .. }
    )
}

/// The server's own explanation: `error.message` / `message` / `detail` of a JSON body, else
/// the body's start.
fn server_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let pick = |v: &serde_json::Value| -> Option<String> {
                match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) => o
                        .get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string),
                    _ => None,
                }
            };
            v.get("error")
                .and_then(pick)
                .or_else(|| v.get("message").and_then(pick))
                .or_else(|| v.get("detail").map(|d| d.to_string()))
        });
    let s = from_json.unwrap_or_else(|| body.trim().to_string());
    let s = if s.is_empty() {
        "(empty body)".to_string()
    } else {
        s
    };
    truncate_chars(&s, MAX_SERVER_MSG_CHARS)
}

fn truncate_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// What was wrong with a 2xx body.
#[derive(Debug, PartialEq)]
enum BadAnswer {
    /// Not a well-formed chat completion (not JSON, truncated, no choices, no content): the
    /// answer was lost on the way, worth asking again.
    Garbage(String),
    /// A well-formed completion withheld by the provider's content filter: this request's
    /// content is refused, asking again is pointless.
    Refused(String),
}

impl BadAnswer {
    #[cfg(test)]
    fn msg(&self) -> &str {
        match self {
            BadAnswer::Garbage(m) | BadAnswer::Refused(m) => m,
        }
    }
}

/// Parses a 2xx body; `Err` says what was wrong with it.
fn parse_completion(
    text: &str,
    default_model: &str,
) -> std::result::Result<ChatResponse, BadAnswer> {
    let garbage = |m: String| BadAnswer::Garbage(m);
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        garbage(format!(
            "the answer is not chat-completions JSON ({e}); body starts: {}",
            truncate_chars(text.trim(), 120)
        ))
    })?;
    if v.get("choices").is_none() {
        if let Some(err) = v.get("error") {
            return Err(garbage(format!(
                "the server answered with an error: {}",
                server_message(&err.to_string())
            )));
        }
    }
    let w: WireResponse = serde_json::from_value(v).map_err(|e| {
        garbage(format!(
            "the answer does not have the chat-completions shape: {e}"
        ))
    })?;
    let choice = w
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| garbage("the answer has no choices".to_string()))?;
    let finish = choice
        .finish_reason
        .as_deref()
        .unwrap_or("none")
        .to_string();
    let content = choice
        .message
        .and_then(|m| m.content)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            let msg = format!("the answer has no message content (finish_reason: {finish})");
            if finish == "content_filter" {
                BadAnswer::Refused(format!(
                    "the endpoint's content filter withheld the answer: {msg}"
                ))
            } else {
                garbage(msg)
            }
        })?;
    let (p, c) = w
        .usage
        .map(|u| (u.prompt_tokens, u.completion_tokens))
        .unwrap_or((0, 0));
    Ok(ChatResponse {
        content,
        model: w
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| default_model.to_string()),
        prompt_tokens: p,
        completion_tokens: c,
        requests: 1,
    })
}

/// Seconds to wait from a Retry-After value: delay-seconds (`"2"`, also `"1.5"`) or an HTTP
/// date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, measured from `now`, 0 if past). `None` if it is
/// neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<f64> {
    let v = value.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then_some(s);
    }
    let at = parse_http_date(v)?;
    Some(
        at.duration_since(now)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders
/// to use.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.split_once(", ").map(|(_, r)| r).unwrap_or(s);
    let parts: Vec<&str> = rest.split_whitespace().collect();
    if parts.len() != 5 || parts[4] != "GMT" {
        return None;
    }
    let day: u32 = parts[0].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[1])? as u32
        + 1;
    let year: i64 = parts[2].parse().ok()?;
    let hms: Vec<u32> = parts[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs =
        days * 86_400 + i64::from(hms[0]) * 3600 + i64::from(hms[1]) * 60 + i64::from(hms[2]);
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {

    #[test]
    fn local_endpoints_need_no_key() {
        for local in [
            "http://localhost:8000/v1",
            "http://127.0.0.1:8000/v1",
            "http://127.1.2.3/v1",
            "http://[::1]:8000/v1",
            "http://0.0.0.0:11434/v1",
            "http://user:pw@LOCALHOST./v1",
            "http://api.localhost/v1",
        ] {
            assert!(is_local_endpoint(local), "{local}");
            assert!(require_key_for(local, None).is_ok());
        }
        for remote in [
            DASHSCOPE_BASE_URL,
            "https://api.openai.com/v1",
            "http://10.0.0.5:8000/v1",
            "http://localhost.example.com/v1",
            "http://127.0.0.1.nip.io/v1",
        ] {
            assert!(!is_local_endpoint(remote), "{remote}");
            let e = require_key_for(remote, None).unwrap_err().to_string();
            assert!(e.contains("DASHSCOPE_API_KEY or OPENAI_API_KEY"), "{e}");
        }
        let key = ResolvedKey {
            key: ApiKey::new("sk-x"),
            var: "K".into(),
        };
        assert!(require_key_for(DASHSCOPE_BASE_URL, Some(&key)).is_ok());
    }
    use super::*;
    use crate::testkit::devserver::{Behaviour, DevServer, Fault};
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn fast(server: &DevServer) -> LlmConfig {
        let mut c = LlmConfig::new(server.base_url(), "dev-model");
        c.timeout_secs = 5.0;
        c.max_retries = 3;
        c.backoff_base_ms = 5;
        c.backoff_max_ms = 20;
        c
    }

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::new(Role::User, text)]
    }

    #[test]
    fn api_key_never_in_debug() {
        let c = LlmConfig {
            api_key: Some(ApiKey::new("sk-secret-123456")),
            ..LlmConfig::default()
        };
        let client = LlmClient::new(c.clone()).unwrap();
        for s in [
            format!("{c:?}"),
            format!("{client:?}"),
            format!("{:?}", c.api_key),
        ] {
            assert!(!s.contains("sk-secret"), "{s}");
            assert!(s.contains("<redacted>"), "{s}");
        }
    }

    #[test]
    fn resolves_keys_in_order_and_complains_about_a_named_missing_var() {
        let env: HashMap<&str, &str> = [
            ("OPENAI_API_KEY", "sk-o"),
            ("MY_KEY", " sk-m "),
            ("EMPTY", ""),
        ]
        .into();
        let look = |n: &str| env.get(n).map(|v| v.to_string());
        let r = resolve_api_key_with(None, look).unwrap().unwrap();
        assert_eq!((r.var.as_str(), r.key.expose()), ("OPENAI_API_KEY", "sk-o"));
        let r = resolve_api_key_with(Some("MY_KEY"), look).unwrap().unwrap();
        assert_eq!(r.key.expose(), "sk-m");
        let e = resolve_api_key_with(Some("EMPTY"), look).unwrap_err();
        assert!(e.to_string().contains("EMPTY is not set"), "{e}");
        assert!(resolve_api_key_with(None, |_| None).unwrap().is_none());
        let both: HashMap<&str, &str> =
            [("OPENAI_API_KEY", "o"), ("DASHSCOPE_API_KEY", "d")].into();
        let r = resolve_api_key_with(None, |n| both.get(n).map(|v| v.to_string()));
        assert_eq!(r.unwrap().unwrap().var, "DASHSCOPE_API_KEY");
    }

    #[test]
    fn url_joins_base_and_path() {
        assert_eq!(
            LlmConfig::new("http://h:1/v1/", "m").url(),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            LlmConfig::new("http://h:1/v1/chat/completions", "m").url(),
            "http://h:1/v1/chat/completions"
        );
        assert!(LlmClient::new(LlmConfig::new("ftp://x", "m")).is_err());
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("2", now), Some(2.0));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(1.5));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", now),
            Some(3.0)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(0.0)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn rate_limiter_spaces_slots_evenly() {
        let l = RateLimiter::per_minute(120);
        assert_eq!(l.interval(), Duration::from_millis(500));
        let t0 = Instant::now();
        let slots: Vec<Instant> = (0..4).map(|_| l.reserve(t0)).collect();
        let gaps: Vec<u128> = slots.iter().map(|s| (*s - t0).as_millis()).collect();
        assert_eq!(gaps, [0, 500, 1000, 1500]);
        // After an idle spell the next slot is "now", not in the past.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.reserve(later), later);
    }

    #[test]
    fn delay_honours_retry_after_with_a_cap_and_backs_off_exponentially() {
        let mut c = LlmConfig::new("http://127.0.0.1:9/v1", "m");
        c.backoff_base_ms = 100;
        c.backoff_max_ms = 1000;
        c.max_wait_secs = 5.0;
        let client = LlmClient::new(c).unwrap();
        for _ in 0..20 {
            let d = client.delay(0, Some(2.0)).as_secs_f64();
            assert!((2.0..=2.2).contains(&d), "{d}");
            let d = client.delay(0, Some(5.0)).as_secs_f64();
            assert!((5.0..=5.5).contains(&d), "{d}");
            let d = client.delay(3, None).as_secs_f64(); // 100 ms × 2^3 = 800 ms, 50–100 %
            assert!((0.4..=0.8).contains(&d), "{d}");
            let d = client.delay(10, None).as_secs_f64(); // capped at 1 s
            assert!((0.5..=1.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn parses_answers_and_rejects_garbage() {
        let ok = r#"{"model":"qwen-max","choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let r = parse_completion(ok, "m").unwrap();
        assert_eq!(
            (
                r.content.as_str(),
                r.model.as_str(),
                r.prompt_tokens,
                r.completion_tokens
            ),
            ("hi", "qwen-max", 3, 1)
        );
        let garbage = |body: &str, needle: &str| match parse_completion(body, "m") {
            Err(BadAnswer::Garbage(m)) => assert!(m.contains(needle), "{body}: {m}"),
            r => panic!("{body}: {r:?}"),
        };
        garbage("<html>", "not chat-completions JSON");
        garbage(&ok[..ok.len() / 2], "not chat-completions JSON");
        garbage("", "not chat-completions JSON");
        garbage(r#"{"choices":[]}"#, "no choices");
        garbage(r#"{"object":"chat.completion"}"#, "no choices");
        garbage(
            r#"{"choices":[{"finish_reason":"stop"}]}"#,
            "no message content",
        );
        garbage(r#"{"choices":"x"}"#, "shape");
        garbage(r#"{"error":{"message":"boom"}}"#, "boom");
        let e = parse_completion(
            r#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#,
            "m",
        )
        .unwrap_err();
        assert!(matches!(e, BadAnswer::Refused(_)), "{e:?}");
        assert!(e.msg().contains("content_filter"), "{e:?}");
    }

    #[test]
    fn garbage_answers_are_retried_like_server_errors() {
        let b = Behaviour {
            faults: vec![Fault::NotJson, Fault::Truncated, Fault::NoChoices],
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let client = LlmClient::new(fast(&server)).unwrap();
        let r = client.chat(&user("一 句话")).unwrap();
        assert_eq!(r.requests, 4);
        // Outliving the retries: retryable (a rerun may succeed), not fatal, status 200.
        let b = Behaviour {
            always: Some(Fault::Truncated),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let err = LlmClient::new(fast(&server))
            .unwrap()
            .chat(&user("x"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Llm { status: Some(200), retryable: true, msg, .. } if msg.contains("gave up after 4 attempts")),
            "{err:?}"
        );
        assert!(!is_fatal(&err));
    }

    #[test]
    fn other_4xx_are_fatal_and_content_refusals_are_not() {
        let b = Behaviour {
            fault_for: [
                ("坏".to_string(), Fault::Status(400)),
                ("拒".to_string(), Fault::Refuse),
                ("怪".to_string(), Fault::Status(422)),
            ]
            .into(),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let client = LlmClient::new(fast(&server)).unwrap();
        for s in ["坏", "怪"] {
            let err = client.chat(&user(s)).unwrap_err();
            assert!(is_fatal(&err), "{err:?}");
            assert!(err.to_string().contains("devserver injected HTTP"), "{err}");
        }
        let err = client.chat(&user("拒")).unwrap_err();
        assert!(
            matches!(&err, Error::LlmRefused { status: Some(400), msg } if msg.contains("inappropriate content")),
            "{err:?}"
        );
        assert!(!is_fatal(&err));
        assert_eq!(server.request_count(), 3, "none of them retried");
    }

    #[test]
    fn a_retry_after_beyond_max_wait_stops_and_shorter_waits_are_announced() {
        let b = Behaviour {
            faults: vec![
                Fault::RateLimit {
                    retry_after: Some("0.01".into()),
                },
                Fault::Status(503),
            ],
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let client = LlmClient::new(fast(&server)).unwrap();
        let waits = Mutex::new(Vec::new());
        client
            .chat_observed(&user("x"), &|| false, &|w| waits.lock().unwrap().push(*w))
            .unwrap();
        let waits = waits.into_inner().unwrap();
        assert_eq!(waits.len(), 2);
        assert_eq!(
            (waits[0].retry_after, waits[0].status, waits[0].retry),
            (true, Some(429), 1)
        );
        assert_eq!(
            (waits[1].retry_after, waits[1].status, waits[1].retry),
            (false, Some(503), 2)
        );

        let b = Behaviour {
            always: Some(Fault::RateLimit {
                retry_after: Some("3600".into()),
            }),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let mut cfg = fast(&server);
        cfg.max_wait_secs = 60.0;
        let err = LlmClient::new(cfg).unwrap().chat(&user("x")).unwrap_err();
        assert!(is_fatal(&err), "{err:?}");
        assert!(
            matches!(err, Error::LlmWaitTooLong { max_wait_secs, .. } if max_wait_secs == 60.0),
            "{err:?}"
        );
        let e = err.to_string();
        assert!(
            e.contains("wait 3600 s")
                && e.contains("longest wait of 60 s")
                && e.contains("HTTP 429"),
            "{e}"
        );
        assert_eq!(server.request_count(), 1);
    }

    #[test]
    fn endpoint_credentials_are_redacted_everywhere() {
        assert_eq!(
            redact_url("http://user:pa%40ss@h:8000/v1"),
            "http://***@h:8000/v1"
        );
        assert_eq!(
            redact_url("https://tok@h/v1?a=b@c"),
            "https://***@h/v1?a=b@c"
        );
        assert_eq!(redact_url("http://h:1/v1"), "http://h:1/v1");
        assert_eq!(host_of("http://u:p@h:1/v1/x"), "h:1");
        assert_eq!(percent_decode("pa%40ss%zz%4"), "pa@ss%zz%4");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");

        // A server that echoes the Authorization header (Basic, from the URL) in its 401.
        let b = Behaviour {
            require_key: Some("k".into()),
            echo_key_in_errors: true,
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let endpoint = format!("http://someone:pa%40ssw0rd@{}/v1", server.addr());
        let mut cfg = fast(&server);
        cfg.endpoint = endpoint.clone();
        let client = LlmClient::new(cfg.clone()).unwrap();
        let err = client.chat(&user("x")).unwrap_err();
        let auth = server.requests()[0]
            .header("authorization")
            .unwrap()
            .to_string();
        assert_eq!(auth, format!("Basic {}", base64(b"someone:pa@ssw0rd")));
        for shown in [
            format!("{err} {err:?}"),
            format!("{cfg:?} {client:?}"),
            client.display_url().to_string(),
        ] {
            for secret in ["someone", "pa%40ssw0rd", "pa@ssw0rd", &auth[6..]] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
        assert!(client.display_url().starts_with("http://***@127.0.0.1:"));
        let err = LlmClient::new(LlmConfig::new("ftp://someone:secret@h/v1", "m")).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn sends_model_messages_and_bearer_key() {
        let server = DevServer::start(Behaviour::default()).unwrap();
        let mut cfg = fast(&server);
        cfg.api_key = Some(ApiKey::new("sk-test-abc"));
        cfg.temperature = Some(0.5);
        let client = LlmClient::new(cfg).unwrap();
        let r = client.chat(&user("你好 世界")).unwrap();
        assert!(
            r.content.starts_with("这段评论包含以下分类:\n"),
            "{}",
            r.content
        );
        assert_eq!(r.model, "dev-model");
        assert!(r.prompt_tokens > 0 && r.completion_tokens > 0);
        let log = server.requests();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].header("authorization"), Some("Bearer sk-test-abc"));
        assert_eq!(log[0].path, "/v1/chat/completions");
        let body = log[0].json().unwrap();
        assert_eq!(body["model"], "dev-model");
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["messages"][0]["content"], "你好 世界");
        assert_eq!(body["temperature"], 0.5);
        let u = client.usage();
        assert_eq!(
            (u.requests, u.retries, u.prompt_tokens),
            (1, 0, r.prompt_tokens)
        );
    }

    #[test]
    fn retries_429_500_and_closed_connections_then_succeeds() {
        let b = Behaviour {
            faults: vec![
                Fault::RateLimit {
                    retry_after: Some("0".into()),
                },
                Fault::Status(503),
                Fault::Close,
            ],
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let client = LlmClient::new(fast(&server)).unwrap();
        let r = client.chat(&user("一 句话")).unwrap();
        assert_eq!(r.requests, 4);
        let u = client.usage();
        assert_eq!((u.requests, u.retries, u.failed_requests), (4, 3, 3));
    }

    #[test]
    fn gives_up_after_max_retries_with_retryable_error() {
        let b = Behaviour {
            always: Some(Fault::Status(500)),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let mut cfg = fast(&server);
        cfg.max_retries = 2;
        let client = LlmClient::new(cfg).unwrap();
        match client.chat(&user("x")).unwrap_err() {
            Error::Llm {
                status,
                retryable,
                msg,
                ..
            } => {
                assert_eq!((status, retryable), (Some(500), true));
                assert!(msg.contains("gave up after 3 attempts"), "{msg}");
            }
            e => panic!("{e}"),
        }
        assert_eq!(server.request_count(), 3);
    }

    #[test]
    fn bad_key_stops_at_once_and_hides_the_key() {
        let b = Behaviour {
            require_key: Some("sk-right".into()),
            echo_key_in_errors: true,
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let mut cfg = fast(&server);
        cfg.api_key = Some(ApiKey::new("sk-wrong-key-999"));
        let client = LlmClient::new(cfg).unwrap();
        let err = client.chat(&user("x")).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("sk-wrong-key-999"), "{shown}");
        assert!(shown.contains("rejected the API key"), "{shown}");
        assert!(is_fatal(&err));
        assert_eq!(server.request_count(), 1);
        // No key at all: the message says which variables to set.
        let client = LlmClient::new(fast(&server)).unwrap();
        let err = client.chat(&user("x")).unwrap_err();
        assert!(err.to_string().contains("DASHSCOPE_API_KEY"), "{err}");
    }

    #[test]
    fn unknown_model_and_wrong_url_say_so() {
        let b = Behaviour {
            models: Some(vec!["qwen-max".into()]),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let client = LlmClient::new(fast(&server)).unwrap();
        let err = client.chat(&user("x")).unwrap_err();
        assert!(
            err.to_string().contains("unknown model \"dev-model\""),
            "{err}"
        );
        assert!(is_fatal(&err));
        let mut cfg = fast(&server);
        cfg.endpoint = format!("{}/nope", server.base_url());
        cfg.model = "qwen-max".into();
        let err = LlmClient::new(cfg).unwrap().chat(&user("x")).unwrap_err();
        assert!(err.to_string().contains("is the endpoint right?"), "{err}");
    }

    #[test]
    fn timeout_is_retried() {
        let b = Behaviour {
            faults: vec![Fault::Hang],
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let mut cfg = fast(&server);
        cfg.timeout_secs = 0.3;
        let client = LlmClient::new(cfg).unwrap();
        let r = client.chat(&user("慢 一点")).unwrap();
        assert_eq!(r.requests, 2);
    }

    #[test]
    fn cancel_interrupts_backoff() {
        let b = Behaviour {
            always: Some(Fault::RateLimit {
                retry_after: Some("30".into()),
            }),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let client = LlmClient::new(fast(&server)).unwrap();
        let cancel = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| client.chat_cancellable(&user("x"), Some(&cancel)));
            while server.request_count() == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            cancel.store(true, Ordering::Relaxed);
            assert!(matches!(h.join().unwrap(), Err(Error::Interrupted)));
        });
    }
}
