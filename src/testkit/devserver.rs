//! A local chat-completions server on 127.0.0.1 for tests, benchmarks and demos.
//!
//! It speaks just enough HTTP/1.1 (keep-alive, `Content-Length` bodies) over `std::net` to be
//! fully scriptable: it answers in the seed's format from a map of gold labels, or answers wrong
//! until it sees the guided prompt, and it can inject faults per sentence, per request or at a
//! seeded random rate (429 with Retry-After, any status, a content-moderation refusal, a hang,
//! a 200 whose body is HTML, truncated JSON or JSON without choices, an answer naming no label,
//! a connection closed without a response). Every request is logged with its headers and body.
//!
//! One thread accepts; each connection gets its own thread, so `jobs` concurrent clients are
//! served concurrently (a fixed `latency_ms` then behaves like a remote model). It is a test
//! tool, not a production server: no TLS, no chunked request bodies.
//!
//! Over 900 lines but one concept, the server: HTTP parsing, the answering script and the
//! fault injection are each only meaningful together, and a fifth of the file is its tests.
//!
//! ```
//! use emoknow::testkit::devserver::{Behaviour, DevServer};
//! let server = DevServer::start(Behaviour::default().gold_pair("你好 世界", "Joy".parse().unwrap())).unwrap();
//! assert!(server.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.request_count(), 0);
//! ```

use crate::labels::{Emotion, LabelSet};
use crate::{Error, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the guided prompt appends to the sentence (`"<text> ,答案为<labels>"`); the server
/// cuts the sentence there to look it up.
pub const GUIDED_MARKER: &str = ",答案为";

/// How often an idle keep-alive connection looks at the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// How the server answers a well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerMode {
    /// The gold labels, blind or guided.
    #[default]
    Right,
    /// A wrong label to the blind prompt, the gold labels to the guided one (forces prompt 2).
    WrongUnlessGuided,
    /// A wrong label to every prompt (guided retries never converge).
    AlwaysWrong,
}

/// A scripted misbehaviour for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429, with this `Retry-After` header value if given (`"1"`, or an HTTP date).
    RateLimit {
        /// Raw header value.
        retry_after: Option<String>,
    },
    /// This HTTP status with a JSON error body (500, 502, 503, 400, …).
    Status(u16),
    /// Read the request, then send nothing until the client gives up (or `hang_secs` pass).
    Hang,
    /// HTTP 200 with an HTML body.
    NotJson,
    /// HTTP 200 with a chat completion cut off halfway (truncated JSON).
    Truncated,
    /// HTTP 200, valid JSON, but no `choices` (the chat-completions shape is wrong).
    NoChoices,
    /// HTTP 400 refusing the sentence's content, as DashScope's content inspection does
    /// (`data_inspection_failed`): other sentences are answered.
    Refuse,
    /// HTTP 200, valid JSON, an answer that names no label.
    NoLabel,
    /// Read the request, then close the connection without a response.
    Close,
}

/// The server's script. Build with struct-update syntax over `Behaviour::default()`.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Gold labels by sentence (whitespace-trimmed). Unknown sentences get a label derived
    /// from a hash of the text.
    pub gold: HashMap<String, LabelSet>,
    /// How to answer.
    pub answer: AnswerMode,
    /// Delay before every response (faults included), milliseconds.
    pub latency_ms: u64,
    /// Per sentence: its k-th request gets `faults[k]`; later ones are answered normally.
    pub faults: Vec<Fault>,
    /// Server-wide: the k-th request overall gets `global_faults[k]` (checked first).
    pub global_faults: Vec<Fault>,
    /// Every request about this sentence (whitespace-trimmed) gets this fault (checked after
    /// `global_faults`, before `faults`).
    pub fault_for: HashMap<String, Fault>,
    /// Each request not caught above gets, with probability `random_fault_rate`, one of these
    /// (picked by a hash of `random_seed` and the request's arrival number, so a run is
    /// reproducible up to the order in which concurrent requests arrive).
    pub random_faults: Vec<Fault>,
    /// See `random_faults` (0.0–1.0).
    pub random_fault_rate: f64,
    /// See `random_faults`.
    pub random_seed: u64,
    /// Every request not caught above gets this fault.
    pub always: Option<Fault>,
    /// When set, requests without `Authorization: Bearer <key>` get 401.
    pub require_key: Option<String>,
    /// Make the 401 body quote the received Authorization header (as some providers do), so
    /// tests can check the client scrubs it.
    pub echo_key_in_errors: bool,
    /// When set, other model names get 404 `model_not_found`.
    pub models: Option<Vec<String>>,
    /// Longest a [`Fault::Hang`] waits before closing, seconds.
    pub hang_secs: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            gold: HashMap::new(),
            answer: AnswerMode::Right,
            latency_ms: 0,
            faults: Vec::new(),
            global_faults: Vec::new(),
            fault_for: HashMap::new(),
            random_faults: Vec::new(),
            random_fault_rate: 0.0,
            random_seed: 0,
            always: None,
            require_key: None,
            echo_key_in_errors: false,
            models: None,
            hang_secs: 30.0,
        }
    }
}

impl Behaviour {
    /// Adds one gold pair.
    pub fn gold_pair(mut self, text: &str, labels: LabelSet) -> Behaviour {
        self.gold.insert(text.trim().to_string(), labels);
        self
    }

    /// Adds gold pairs.
    pub fn with_gold<I: IntoIterator<Item = (String, LabelSet)>>(mut self, pairs: I) -> Behaviour {
        for (t, l) in pairs {
            self.gold.insert(t.trim().to_string(), l);
        }
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// 0-based arrival order.
    pub seq: u64,
    /// `POST`, `GET`, …
    pub method: String,
    /// Request target (`/v1/chat/completions`).
    pub path: String,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body as text (lossy UTF-8).
    pub body: String,
    /// The sentence it was about (last user message, guided suffix cut), if any.
    pub sentence: Option<String>,
    /// Whether it carried the guided marker.
    pub guided: bool,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// Status sent; `None` when nothing was sent (hang, close).
    pub status: Option<u16>,
}

impl LoggedRequest {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

struct State {
    behaviour: Behaviour,
    log: Mutex<Vec<LoggedRequest>>,
    per_sentence: Mutex<HashMap<String, usize>>,
    seq: AtomicU64,
    stop: AtomicBool,
}

/// A running server. Dropping it stops it.
pub struct DevServer {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

/// Stops a [`DevServer`] from another thread (e.g. a Ctrl-C handler).
#[derive(Clone)]
pub struct StopHandle {
    addr: SocketAddr,
    state: Arc<State>,
}

impl StopHandle {
    /// Asks the server to stop; [`DevServer::join`] then returns.
    pub fn stop(&self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

impl DevServer {
    /// Starts on 127.0.0.1 on a free port.
    ///
    /// Errors: [`Error::Io`] if no port can be bound.
    pub fn start(behaviour: Behaviour) -> Result<DevServer> {
        DevServer::start_on("127.0.0.1:0", behaviour)
    }

    /// Starts on `addr` (`"127.0.0.1:8000"`).
    pub fn start_on(addr: &str, behaviour: Behaviour) -> Result<DevServer> {
        let listener = TcpListener::bind(addr).map_err(|e| Error::io(addr, e))?;
        let local = listener.local_addr().map_err(|e| Error::io(addr, e))?;
        let state = Arc::new(State {
            behaviour,
            log: Mutex::new(Vec::new()),
            per_sentence: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let accept = std::thread::Builder::new()
            .name("devserver-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let st = st.clone();
                    let _ = std::thread::Builder::new()
                        .name("devserver-conn".into())
                        .spawn(move || serve_connection(stream, &st));
                }
            })
            .map_err(|e| Error::io(addr, e))?;
        Ok(DevServer {
            addr: local,
            state,
            accept: Some(accept),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for an OpenAI client: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far.
    pub fn request_count(&self) -> u64 {
        self.state.seq.load(Ordering::SeqCst)
    }

    /// A copy of the request log, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let mut v = self
            .state
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        v.sort_by_key(|r| r.seq);
        v
    }

    /// A handle that can stop the server from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            addr: self.addr,
            state: self.state.clone(),
        }
    }

    /// Blocks until a [`StopHandle`] stops the server (for `emoknow devserver`).
    pub fn join(mut self) {
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop_handle().stop();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A parsed request.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request; `Ok(None)` on a clean close or on stop.
fn read_request(
    r: &mut BufReader<TcpStream>,
    stop: &AtomicBool,
) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    // Idle keep-alive: poll so a stopped server lets its connection threads go.
    loop {
        match r.read_line(&mut line) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
    // The request has begun: give the rest of it time to arrive, then go back to polling.
    let stream = r.get_ref();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let rest = read_head_and_body(r);
    let _ = r.get_ref().set_read_timeout(Some(IDLE_POLL));
    let (headers, body) = match rest? {
        Some(hb) => hb,
        None => return Ok(None),
    };
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

/// Header lines and the `Content-Length` body after a request line.
#[allow(clippy::type_complexity)]
fn read_head_and_body(
    r: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<(Vec<(String, String)>, Vec<u8>)>> {
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some((headers, body)))
}

fn serve_connection(stream: TcpStream, st: &State) {
    let _ = stream.set_read_timeout(Some(IDLE_POLL));
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut out = write_half;
    while let Ok(Some(req)) = read_request(&mut reader, &st.stop) {
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match respond(&req, st) {
            Reply::Send(status, extra, body) => {
                if write_response(&mut out, status, &extra, &body).is_err() || close {
                    return;
                }
            }
            Reply::Hang => {
                hang(reader.get_ref(), st);
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            Reply::Close => {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Waits until the client hangs up, the server stops, or `hang_secs` pass.
fn hang(stream: &TcpStream, st: &State) {
    let deadline = Instant::now() + Duration::from_secs_f64(st.behaviour.hang_secs.max(0.0));
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 1];
    while Instant::now() < deadline && !st.stop.load(Ordering::SeqCst) {
        match stream.peek(&mut buf) {
            Ok(0) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_response(
    out: &mut TcpStream,
    status: u16,
    extra: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut buf = head.into_bytes();
    buf.extend_from_slice(body);
    out.write_all(&buf)?;
    out.flush()
}

enum Reply {
    Send(u16, Vec<(String, String)>, Vec<u8>),
    Hang,
    Close,
}

fn error_body(msg: &str, kind: &str, code: &str) -> Vec<u8> {
    serde_json::json!({"error": {"message": msg, "type": kind, "code": code}})
        .to_string()
        .into_bytes()
}

/// The sentence of a chat request: the last user message, cut at the guided marker.
fn sentence_of(body: &serde_json::Value) -> Option<(String, bool)> {
    let msgs = body.get("messages")?.as_array()?;
    let last = msgs
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))?;
    let content = last.get("content")?.as_str()?;
    Some(match content.rfind(GUIDED_MARKER) {
        Some(i) => (content[..i].trim().to_string(), true),
        None => (content.trim().to_string(), false),
    })
}

fn respond(req: &Request, st: &State) -> Reply {
    let b = &st.behaviour;
    let seq = st.seq.fetch_add(1, Ordering::SeqCst);
    let body_text = String::from_utf8_lossy(&req.body).into_owned();
    let json: Option<serde_json::Value> = serde_json::from_str(&body_text).ok();
    let (sentence, guided) = match json.as_ref().and_then(sentence_of) {
        Some((s, g)) => (Some(s), g),
        None => (None, false),
    };
    let mut entry = LoggedRequest {
        seq,
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        body: body_text,
        sentence: sentence.clone(),
        guided,
        fault: None,
        status: None,
    };
    let reply = decide(
        req,
        st,
        seq,
        json.as_ref(),
        sentence.as_deref(),
        guided,
        &mut entry,
    );
    if b.latency_ms > 0 {
        std::thread::sleep(Duration::from_millis(b.latency_ms));
    }
    if let Reply::Send(s, _, _) = &reply {
        entry.status = Some(*s);
    }
    st.log.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    reply
}

fn decide(
    req: &Request,
    st: &State,
    seq: u64,
    json: Option<&serde_json::Value>,
    sentence: Option<&str>,
    guided: bool,
    entry: &mut LoggedRequest,
) -> Reply {
    let b = &st.behaviour;
    let path = req.path.split('?').next().unwrap_or("");
    if req.method == "GET" && path.ends_with("/models") {
        let ids = b.models.clone().unwrap_or_else(|| vec!["dev-model".into()]);
        let data: Vec<_> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "owned_by": "devserver"}))
            .collect();
        let body = serde_json::json!({"object": "list", "data": data}).to_string();
        return Reply::Send(200, vec![], body.into_bytes());
    }
    if req.method != "POST" || !(path == "/v1/chat/completions" || path == "/chat/completions") {
        let msg = format!("no route for {} {}", req.method, req.path);
        return Reply::Send(
            404,
            vec![],
            error_body(&msg, "invalid_request_error", "no_route"),
        );
    }
    if let Some(key) = &b.require_key {
        let got = req.header("authorization").unwrap_or("");
        if got != format!("Bearer {key}") {
            let msg = if b.echo_key_in_errors {
                format!("Incorrect API key provided: {got}")
            } else {
                "Incorrect API key provided.".to_string()
            };
            return Reply::Send(
                401,
                vec![],
                error_body(&msg, "invalid_request_error", "invalid_api_key"),
            );
        }
    }
    let Some(json) = json else {
        return Reply::Send(
            400,
            vec![],
            error_body("body is not JSON", "invalid_request_error", "bad_json"),
        );
    };
    let model = json
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    if let Some(models) = &b.models {
        if !models.contains(&model) {
            let msg =
                format!("The model `{model}` does not exist or you do not have access to it.");
            return Reply::Send(
                404,
                vec![],
                error_body(&msg, "invalid_request_error", "model_not_found"),
            );
        }
    }
    let Some(sentence) = sentence else {
        return Reply::Send(
            400,
            vec![],
            error_body("no user message", "invalid_request_error", "bad_messages"),
        );
    };
    let nth = {
        let mut m = st.per_sentence.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(sentence.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let fault = b
        .global_faults
        .get(seq as usize)
        .or_else(|| b.fault_for.get(sentence))
        .or_else(|| b.faults.get(nth))
        .or_else(|| random_fault(b, seq))
        .or(b.always.as_ref())
        .cloned();
    entry.fault = fault.clone();
    if let Some(f) = fault {
        return match f {
            Fault::RateLimit { retry_after } => {
                let extra = retry_after
                    .map(|v| vec![("Retry-After".to_string(), v)])
                    .unwrap_or_default();
                Reply::Send(
                    429,
                    extra,
                    error_body(
                        "Requests rate limit exceeded, please try again later.",
                        "rate_limit_error",
                        "rate_limit_exceeded",
                    ),
                )
            }
            Fault::Status(s) => Reply::Send(
                s,
                vec![],
                error_body(
                    &format!("devserver injected HTTP {s}"),
                    "server_error",
                    "injected",
                ),
            ),
            Fault::Hang => Reply::Hang,
            Fault::Close => Reply::Close,
            Fault::NotJson => Reply::Send(
                200,
                vec![("Content-Type".into(), "text/html".into())],
                b"<html><body><h1>502 Bad Gateway</h1> (devserver garbage)</body></html>".to_vec(),
            ),
            Fault::Truncated => {
                let full = completion(json, &model, &seed_answer(sentence, hashed_label(sentence)));
                let text = String::from_utf8_lossy(&full);
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                Reply::Send(200, vec![], text[..cut].as_bytes().to_vec())
            }
            Fault::NoChoices => Reply::Send(
                200,
                vec![],
                br#"{"id":"chatcmpl-devserver","object":"chat.completion","model":"dev"}"#.to_vec(),
            ),
            Fault::Refuse => Reply::Send(
                400,
                vec![],
                error_body(
                    "Input data may contain inappropriate content.",
                    "invalid_request_error",
                    "data_inspection_failed",
                ),
            ),
            Fault::NoLabel => Reply::Send(
                200,
                vec![],
                completion(json, &model, "生活而 带来 生活而 带来 生活而 带来"),
            ),
        };
    }
    let gold = b
        .gold
        .get(sentence)
        .copied()
        .unwrap_or_else(|| hashed_label(sentence));
    let labels = match b.answer {
        AnswerMode::Right => gold,
        AnswerMode::WrongUnlessGuided if guided => gold,
        AnswerMode::WrongUnlessGuided | AnswerMode::AlwaysWrong => wrong_labels(gold),
    };
    Reply::Send(
        200,
        vec![],
        completion(json, &model, &seed_answer(sentence, labels)),
    )
}

/// The seeded random fault for request `seq`, if it draws one.
fn random_fault(b: &Behaviour, seq: u64) -> Option<&Fault> {
    if b.random_faults.is_empty() || b.random_fault_rate <= 0.0 {
        return None;
    }
    // splitmix64 of (seed, seq): well spread, stable across platforms.
    let mut z = b
        .random_seed
        .wrapping_add(seq.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    (u < b.random_fault_rate).then(|| &b.random_faults[(z % b.random_faults.len() as u64) as usize])
}

/// An answer in the seed's format: `这段评论包含以下分类:\n<labels>\n\n理由:\n\n…`.
pub fn seed_answer(sentence: &str, labels: LabelSet) -> String {
    let quoted: String = sentence.chars().filter(|c| !c.is_whitespace()).collect();
    let zh: Vec<&str> = labels.iter().map(Emotion::chinese).collect();
    format!(
        "这段评论包含以下分类:\n{labels}\n\n理由:\n\n\"{quoted}\"表达了{}之情，属于{labels}情绪分类。",
        zh.join("、")
    )
}

/// A label set that differs from `gold`: the first emotion (canonical order) not in it.
pub fn wrong_labels(gold: LabelSet) -> LabelSet {
    Emotion::ALL
        .into_iter()
        .find(|e| !gold.contains(*e))
        .map(|e| LabelSet::from_emotions([e]))
        .unwrap_or(LabelSet::EMPTY)
}

/// A stable single label for a sentence the server has no gold for.
fn hashed_label(s: &str) -> LabelSet {
    // FNV-1a: stable across runs and platforms, unlike std's RandomState.
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    LabelSet::from_emotions([Emotion::from_index((h % 8) as usize)])
}

/// A chat-completions body with usage counted as characters.
fn completion(req: &serde_json::Value, model: &str, content: &str) -> Vec<u8> {
    let prompt_tokens: usize = req
        .get("messages")
        .and_then(|m| m.as_array())
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("content").and_then(|c| c.as_str()))
                .map(|c| c.chars().count())
                .sum()
        })
        .unwrap_or(0);
    let completion_tokens = content.chars().count();
    serde_json::json!({
        "id": "chatcmpl-devserver",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::sanitize::asserted_labels;

    fn post(server: &DevServer, body: &str, extra: &str) -> (u16, String) {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn chat(text: &str) -> String {
        serde_json::json!({"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": text}]}).to_string()
    }

    fn content(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn answers_gold_in_the_seed_format_and_logs() {
        let gold: LabelSet = "Love,Joy".parse().unwrap();
        let server = DevServer::start(Behaviour::default().gold_pair("好 开心", gold)).unwrap();
        let (s, body) = post(&server, &chat("好 开心"), "Authorization: Bearer k\r\n");
        assert_eq!(s, 200);
        let c = content(&body);
        assert!(
            c.starts_with("这段评论包含以下分类:\nLove,Joy\n\n理由:\n\n"),
            "{c}"
        );
        assert_eq!(asserted_labels(&c), gold);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["usage"]["total_tokens"].as_u64().unwrap(),
            v["usage"]["prompt_tokens"].as_u64().unwrap()
                + v["usage"]["completion_tokens"].as_u64().unwrap()
        );
        let log = server.requests();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].header("Authorization"), Some("Bearer k"));
        assert_eq!(log[0].sentence.as_deref(), Some("好 开心"));
        assert_eq!(log[0].status, Some(200));
    }

    #[test]
    fn wrong_unless_guided() {
        let gold: LabelSet = "Anxiety".parse().unwrap();
        let b = Behaviour {
            answer: AnswerMode::WrongUnlessGuided,
            ..Behaviour::default()
        }
        .gold_pair("大雪 回家", gold);
        let server = DevServer::start(b).unwrap();
        let (_, blind) = post(&server, &chat("大雪 回家"), "");
        assert_eq!(asserted_labels(&content(&blind)).to_string(), "Love");
        let (_, guided) = post(&server, &chat("大雪 回家 ,答案为Anxiety"), "");
        assert_eq!(asserted_labels(&content(&guided)), gold);
        assert!(server.requests()[1].guided);
    }

    #[test]
    fn per_sentence_faults_then_success() {
        let b = Behaviour {
            faults: vec![
                Fault::RateLimit {
                    retry_after: Some("3".into()),
                },
                Fault::Status(500),
            ],
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        assert_eq!(post(&server, &chat("a"), "").0, 429);
        assert_eq!(post(&server, &chat("b"), "").0, 429);
        assert_eq!(post(&server, &chat("a"), "").0, 500);
        assert_eq!(post(&server, &chat("a"), "").0, 200);
        let log = server.requests();
        assert_eq!(
            log[0].fault,
            Some(Fault::RateLimit {
                retry_after: Some("3".into())
            })
        );
        assert_eq!(log[3].fault, None);
    }

    #[test]
    fn garbage_close_and_routes() {
        let b = Behaviour {
            global_faults: vec![Fault::NotJson, Fault::NoLabel, Fault::Close],
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let (s, body) = post(&server, &chat("x"), "");
        assert_eq!(s, 200);
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
        let (_, body) = post(&server, &chat("x"), "");
        assert!(asserted_labels(&content(&body)).is_empty());
        assert_eq!(
            post(&server, &chat("x"), "").0,
            0,
            "closed without a response"
        );
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.contains("dev-model"),
            "{out}"
        );
        assert_eq!(server.requests()[2].status, None);
    }

    #[test]
    fn malformed_answers_refusals_per_sentence_and_random_faults() {
        let b = Behaviour {
            global_faults: vec![Fault::Truncated, Fault::NoChoices],
            fault_for: [("坏 句".to_string(), Fault::Refuse)].into(),
            ..Behaviour::default()
        };
        let server = DevServer::start(b).unwrap();
        let (s, body) = post(&server, &chat("x"), "");
        assert_eq!(s, 200);
        assert!(body.starts_with('{') && serde_json::from_str::<serde_json::Value>(&body).is_err());
        let (s, body) = post(&server, &chat("x"), "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(s == 200 && v.get("choices").is_none(), "{body}");
        let (s, body) = post(&server, &chat("坏 句"), "");
        assert!(
            s == 400 && body.contains("data_inspection_failed"),
            "{body}"
        );
        assert_eq!(post(&server, &chat("好 句"), "").0, 200);

        let b = Behaviour {
            random_faults: vec![Fault::Status(503)],
            random_fault_rate: 0.25,
            random_seed: 7,
            ..Behaviour::default()
        };
        let hits = (0..400u64)
            .filter(|&seq| random_fault(&b, seq).is_some())
            .count();
        assert!((60..140).contains(&hits), "{hits} of 400 at rate 0.25");
        let again = (0..400u64)
            .filter(|&seq| random_fault(&b, seq).is_some())
            .count();
        assert_eq!(hits, again, "seeded");
    }

    #[test]
    fn wrong_labels_differ() {
        for g in ["Love", "Love,Joy,Anxiety", "Anger"] {
            let g: LabelSet = g.parse().unwrap();
            let w = wrong_labels(g);
            assert!(!w.is_empty() && w != g);
        }
        assert_eq!(hashed_label("abc"), hashed_label("abc"));
    }
}
