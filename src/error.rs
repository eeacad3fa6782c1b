//! The library's one error type. Variants are what a caller can act on: the CLI tells "store in
//! use" from bad input, the annotator tells a retryable HTTP status from garbage.

use std::path::PathBuf;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the store.
    #[error("store {path} is in use by another process (close it, or pass another --store)")]
    StoreLocked {
        /// The store directory.
        path: PathBuf,
    },

    /// The store was written by an incompatible version of emoknow.
    #[error("store {path} has format version {found}, this emoknow reads version {expected}; re-ingest into a new store")]
    StoreVersion {
        /// The store directory.
        path: PathBuf,
        /// Version written in the store.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },

    /// The path holds no store (and the command does not create one).
    #[error("no store at {path} (run `emoknow ingest FILE` first, or pass --store DIR)")]
    NoStore {
        /// The path that was tried.
        path: PathBuf,
    },

    /// Bad input data, located at `path:line`.
    #[error("{}: {}", location(path, *line), snippet(msg, MAX_MESSAGE_CHARS))]
    Input {
        /// The input file.
        path: PathBuf,
        /// 1-based line number, 0 when the whole file is at fault.
        line: usize,
        /// What is wrong and, where possible, how to fix it.
        msg: String,
    },

    /// Several bad input lines; the batch was not written.
    #[error("{} bad line(s) in {}; nothing was written (fix them, or pass --skip-bad):\n{}", errors.len(), path.display(), render_lines(errors))]
    InputBatch {
        /// The input file.
        path: PathBuf,
        /// (line, message) for every bad line.
        errors: Vec<(usize, String)>,
    },

    /// A request refers to something the store does not hold.
    #[error("{0}")]
    NotFound(String),

    /// An invalid argument or configuration value.
    #[error("{0}")]
    Invalid(String),

    /// An LLM endpoint failed. `retryable` is true for 429, 5xx, timeouts, resets and answers
    /// that are not a well-formed chat completion.
    #[error("LLM endpoint: {msg}")]
    Llm {
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// Human-readable cause (never contains the API key).
        msg: String,
        /// Seconds the server asked us to wait (Retry-After).
        retry_after_secs: Option<f64>,
    },

    /// An LLM endpoint refused one request's content (content inspection, context too long):
    /// asking again is pointless, but other requests may succeed.
    #[error("LLM endpoint: {msg}")]
    LlmRefused {
        /// HTTP status (400 for a refusal, 200 when a content filter withheld the answer).
        status: Option<u16>,
        /// The endpoint's explanation (never contains the API key).
        msg: String,
    },

    /// I/O on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The sled database failed.
    #[error("store database: {0}")]
    Db(#[from] sled::Error),

    /// The tantivy index failed.
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),

    /// A stored record could not be decoded.
    #[error("corrupt record in store: {0}")]
    Corrupt(String),

    /// Model loading, training or inference failed.
    #[error("model: {0}")]
    Model(String),

    /// The operation was interrupted (Ctrl-C); what was done so far is kept.
    #[error("interrupted")]
    Interrupted,
}

fn location(path: &std::path::Path, line: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

/// The longest message about one input line that is printed whole; longer ones (a message
/// quoting a 10 MB line) are cut.
const MAX_MESSAGE_CHARS: usize = 400;

/// `s` cut to at most `max` characters, with what was cut said (`…(+1234 bytes)`), for
/// quoting user input in messages.
pub fn snippet(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}…(+{} bytes)", &s[..at], s.len() - at),
    }
}

fn render_lines(errors: &[(usize, String)]) -> String {
    const SHOW: usize = 20;
    let mut s: Vec<String> = errors
        .iter()
        .take(SHOW)
        .map(|(l, m)| format!("  line {l}: {}", snippet(m, MAX_MESSAGE_CHARS)))
        .collect();
    if errors.len() > SHOW {
        s.push(format!("  … and {} more", errors.len() - SHOW));
    }
    s.join("\n")
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A bad-input error at `path:line`.
    pub fn input(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Error {
        Error::Input {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Model(e.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
