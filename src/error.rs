//! The library's one error type. Variants are what a caller can act on: the CLI tells "store in
//! use" from bad input, the annotator tells a retryable HTTP status from garbage.
//!
//! Messages say what is wrong and, in the library's terms, what would fix it; they never name
//! command-line flags (the CLI adds those as a hint). An error that wraps another keeps it as
//! its `source()`, so `{:#}` (anyhow) or [`chain`] prints "what: cause" once.
//!
//! Shared vocabulary: it imports no stage (splits are named by `Split::name`, example ids are
//! plain `u64`), so every stage can use it.

use std::path::{Path, PathBuf};

/// Any error, boxed, as a variant's cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process holds the store.
    #[error("store {path} is in use by another process{} (close it, or use another store)", holder.as_ref().map(|h| format!(": {h}")).unwrap_or_default())]
    StoreLocked {
        /// The store directory.
        path: PathBuf,
        /// What holds it, when a long-lived holder (`emoknow serve`) said so (its command
        /// line and pid).
        holder: Option<String>,
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

    /// The store is of an older format this emoknow migrates (`Store::open_migrating`).
    #[error("store {path} has format version {found} (vectors inside the database); run `emoknow migrate` to move them to flat files (format {expected})")]
    StoreNeedsMigration {
        /// The store directory.
        path: PathBuf,
        /// Version written in the store.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },

    /// The path holds no store (and the command does not create one).
    #[error("no store at {path} (run `emoknow ingest FILE` first)")]
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
    #[error("{} bad line(s) in {}; nothing was written:\n{}", errors.len(), path.display(), render_lines(errors))]
    InputBatch {
        /// The input file.
        path: PathBuf,
        /// (line, message) for every bad line.
        errors: Vec<(usize, String)>,
    },

    /// Rows of an ingested file collide with what the store holds under their ids (another
    /// sentence, or another file's labels), or repeat an id within the file; nothing was
    /// written.
    #[error("{} id conflict(s) in {}; nothing was written:\n{}", errors.len(), path.display(), render_lines(errors))]
    IdConflicts {
        /// The input file.
        path: PathBuf,
        /// (line, message) for every conflicting row.
        errors: Vec<(usize, String)>,
        /// Whether ingesting with `replace` would resolve the conflicts (false when the only
        /// conflicts are ids repeated within the file).
        replaceable: bool,
    },

    /// Knowledge records name examples the store does not hold; nothing was written.
    #[error("{count} example id(s) not in the store (first: {}); ingest the corpus first, or number the records from the right first id", join(first))]
    UnknownExamples {
        /// How many ids are missing.
        count: usize,
        /// The first few of them, ascending.
        first: Vec<u64>,
    },

    /// A request refers to something the store does not hold.
    #[error("{0}")]
    NotFound(String),

    /// A knowledge source the request needs is not given, or the store holds nothing from it.
    #[error("{}", missing_source(*role, name.as_deref(), available))]
    MissingSource {
        /// What the source is for.
        role: SourceRole,
        /// The source named, `None` when none was.
        name: Option<String>,
        /// The sources the store holds.
        available: Vec<String>,
    },

    /// The store holds no vectors (of any encoder, or of the one asked for).
    #[error("{}", match encoder { None => "no stored embeddings: embed the corpus first (`emoknow embed`)".to_string(), Some(k) => format!("no stored vectors for encoder {k:?}: embed the corpus with it first (`emoknow embed`)") })]
    NoEmbeddings {
        /// The encoder asked for (id, id prefix or name), `None` for any.
        encoder: Option<String>,
    },

    /// Texts without stored vectors need the encoder, and the directory its vectors were made
    /// from is gone.
    #[error("{texts} text(s) have no stored vector of encoder {name}, and its directory {dir:?} is gone (give the encoder directory)")]
    EncoderGone {
        /// How many texts need embedding.
        texts: usize,
        /// The encoder's name.
        name: String,
        /// Where its vectors were made from.
        dir: String,
    },

    /// Several stored encoders fit the request; one must be chosen.
    #[error("{}: {}", match key { None => "the store holds vectors of several encoders, choose one".to_string(), Some(k) => format!("encoder {k:?} is ambiguous") }, candidates.join(", "))]
    AmbiguousEncoder {
        /// The key asked for, `None` when none was given.
        key: Option<String>,
        /// The encoders that fit (id, and name when no key was given).
        candidates: Vec<String>,
    },

    /// A stored example has no vector of the encoder a dense retrieval uses.
    #[error("example {example} has no vector of encoder {encoder}: embed the {split} split with it first")]
    MissingVector {
        /// The example id.
        example: u64,
        /// Its split (`Split::name`).
        split: &'static str,
        /// The encoder's name.
        encoder: String,
    },

    /// A split training needs holds no (usable) examples: `train` (nothing to train on) or
    /// `val` (thresholds are tuned on it).
    #[error("no {split} examples: {why}")]
    EmptySplit {
        /// The split (`Split::name`).
        split: &'static str,
        /// What it is needed for, and how to fill it.
        why: String,
    },

    /// An invalid argument or configuration value.
    #[error("{0}")]
    Invalid(String),

    /// A configuration value out of its range. `name` is the config field (`rpm`,
    /// `max_wait_secs`, `timeout_secs`, `endpoint`, `stack_folds`), for a caller to point at
    /// where the value came from.
    #[error("{msg}")]
    Setting {
        /// The config field.
        name: &'static str,
        /// What is wrong with its value.
        msg: String,
    },

    /// The directory a model is to be trained into is refused: training would destroy
    /// something else, or it is no model directory.
    #[error("{}", out_path(path, reason))]
    OutPath {
        /// The output directory.
        path: PathBuf,
        /// Why it is refused.
        reason: OutPathReason,
    },

    /// An ensemble was given fewer than two members.
    #[error("an ensemble needs at least two members ({given} given)")]
    TooFewMembers {
        /// How many were given.
        given: usize,
    },

    /// An ensemble was given the same member twice.
    #[error("member {} is given twice (each member counts once in the average)", member.display())]
    DuplicateMember {
        /// The member, as given.
        member: PathBuf,
    },

    /// The files of a model directory are not what emoknow wrote there (a hand edit, files of
    /// two models, an interrupted copy): retraining into `dir` fixes it.
    #[error("{msg}")]
    ModelDamaged {
        /// The model directory.
        dir: PathBuf,
        /// What is wrong, naming the file.
        msg: String,
    },

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

    /// An LLM endpoint asked to wait longer than the client's longest wait: a quota reset or
    /// maintenance window dooms every request meanwhile, so the run stops (what is done is kept).
    #[error("LLM endpoint: {host} asks to wait {wait_secs:.0} s before retrying (Retry-After{}), longer than the longest wait of {max_wait_secs:.0} s; stopping instead of sleeping. What is done is kept: rerun later. Last answer: {last}", status.map(|s| format!(", HTTP {s}")).unwrap_or_default())]
    LlmWaitTooLong {
        /// The endpoint's host.
        host: String,
        /// HTTP status of the last answer.
        status: Option<u16>,
        /// Seconds the server asked to wait.
        wait_secs: f64,
        /// The client's longest wait, seconds.
        max_wait_secs: f64,
        /// The last answer (never contains the API key).
        last: String,
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

    /// The environment variable named to hold the API key is unset or empty.
    #[error("environment variable {var} is not set (or empty); export it, or read the key from another variable")]
    ApiKeyUnset {
        /// The variable.
        var: String,
    },

    /// No API key is set and the endpoint is not on this machine: every request would be
    /// refused (401), so none is sent.
    #[error("no API key: none of {vars} is set, and {host} is not on this machine")]
    ApiKeyMissing {
        /// The variables read.
        vars: String,
        /// The endpoint's host.
        host: String,
    },

    /// I/O on a named file.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The sled database failed.
    #[error("store database")]
    Db(#[source] sled::Error),

    /// The tantivy index failed.
    #[error("search index")]
    Index(#[source] tantivy::TantivyError),

    /// The search index cannot be read (missing, truncated or corrupted files). It is derived
    /// from the records, so `emoknow reindex` rebuilds it; the records themselves are intact.
    #[error("search index at {} is damaged ({reason}); run `emoknow reindex` to rebuild it from the records", path.display())]
    IndexDamaged {
        /// The index directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An approximate nearest-neighbour index file cannot be built, written or read. It is
    /// derived from the stored vectors, so `emoknow index build` rebuilds it.
    #[error("ANN index {} is unusable ({reason}); run `emoknow index build` to rebuild it from the stored vectors", path.display())]
    AnnIndex {
        /// The index file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The disk holding the store is full (ENOSPC).
    #[error("disk full: no space left on the device holding {}; free some space and run the command again ({cause})", path.as_ref().map_or_else(|| "the store".to_string(), |p| p.display().to_string()))]
    DiskFull {
        /// The store (or index) directory, when known.
        path: Option<PathBuf>,
        /// The underlying error.
        cause: String,
    },

    /// A stored record could not be decoded.
    #[error("corrupt record in store: {0}")]
    Corrupt(String),

    /// A stored record's bytes do not decode as the record they should be.
    #[error("corrupt record in store: {what}")]
    CorruptRecord {
        /// Which kind of record.
        what: String,
        /// The decoder's complaint.
        source: bincode::error::DecodeError,
    },

    /// Model loading, training or inference failed.
    #[error("model: {0}")]
    Model(String),

    /// A model file (weights, JSON, tokenizer) could not be parsed or written.
    #[error("model: {}", path.display())]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// The parser's or writer's error.
        source: BoxError,
    },

    /// A Parquet file could not be written or read.
    #[error("Parquet file {}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet or Arrow library's error.
        source: BoxError,
    },

    /// An export would overwrite an earlier one.
    #[error("{} exists (an earlier export); nothing was written", path.display())]
    ExportExists {
        /// The existing file.
        path: PathBuf,
    },

    /// A tensor operation of the model failed (candle): loading weights into the network, or
    /// computing with them.
    #[error("model")]
    Candle(#[source] candle_core::Error),

    /// The operation was interrupted (Ctrl-C); what was done so far is kept.
    #[error("interrupted")]
    Interrupted,
}

/// What a knowledge source named in a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRole {
    /// The rationales attached to training and prediction inputs.
    Rationale,
    /// The rationales attached when evaluating (instead of [`SourceRole::Rationale`]).
    EvalRationale,
    /// The stored neighbour lists attached to inputs.
    Neighbours,
}

impl std::fmt::Display for SourceRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceRole::Rationale => "rationale",
            SourceRole::EvalRationale => "evaluation rationale",
            SourceRole::Neighbours => "neighbours",
        })
    }
}

/// How a model output directory overlaps an ensemble member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The output is the member.
    Is,
    /// The output lies inside the member.
    IsInside,
    /// The output holds the member.
    Holds,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overlap::Is => "is",
            Overlap::IsInside => "is inside",
            Overlap::Holds => "holds",
        })
    }
}

/// Why a model output directory is refused ([`Error::OutPath`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutPathReason {
    /// It exists and is not a directory.
    NotADirectory,
    /// It is a non-empty directory without `meta.json`: no emoknow model, and training
    /// replaces the whole directory.
    NotAModel,
    /// It has no parent directory or no UTF-8 name.
    NoName,
    /// Training would replace the encoder directory it starts from.
    Encoder {
        /// The encoder directory, as given.
        encoder: PathBuf,
    },
    /// It overlaps an ensemble member.
    Member {
        /// The member, as given.
        member: PathBuf,
        /// How it overlaps.
        overlap: Overlap,
    },
    /// An ensemble member is an ensemble that reads a model the output would overwrite (the
    /// new ensemble would contain itself).
    MemberReads {
        /// The member, as given.
        member: PathBuf,
        /// The model it reads that the output would overwrite.
        reads: PathBuf,
    },
}

fn out_path(path: &Path, reason: &OutPathReason) -> String {
    let p = path.display();
    match reason {
        OutPathReason::NotADirectory => {
            format!("model output {p} exists and is not a directory")
        }
        OutPathReason::NotAModel => format!(
            "model output {p} is a non-empty directory without meta.json, not an emoknow model; training replaces the whole directory, so choose a new one (or remove it yourself)"
        ),
        OutPathReason::NoName => {
            format!("model output {p}: a model directory needs a parent directory and a UTF-8 name")
        }
        OutPathReason::Encoder { encoder } => format!(
            "model output {p} would replace the encoder directory {}",
            encoder.display()
        ),
        OutPathReason::Member { member, overlap } => format!(
            "model output {p} {overlap} the ensemble member {}: training would overwrite the member",
            member.display()
        ),
        OutPathReason::MemberReads { member, reads } => format!(
            "ensemble member {} is an ensemble that reads {}, which the model output {p} would overwrite (the new ensemble would contain itself)",
            member.display(),
            reads.display()
        ),
    }
}

fn missing_source(role: SourceRole, name: Option<&str>, available: &[String]) -> String {
    match name {
        None => format!("knowledge mode needs a {role} source"),
        Some(n) => format!(
            "no knowledge from source {n:?} ({role}); the store has: {}",
            if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            }
        ),
    }
}

fn join(ids: &[u64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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

    /// A model file `path` that could not be parsed or written, because of `source`.
    pub fn model_file(path: impl Into<PathBuf>, source: impl Into<BoxError>) -> Error {
        Error::ModelFile {
            path: path.into(),
            source: source.into(),
        }
    }

    /// A model output directory refused for `reason`.
    pub fn out_path(path: impl Into<PathBuf>, reason: OutPathReason) -> Error {
        Error::OutPath {
            path: path.into(),
            reason,
        }
    }

    /// The message with its causes, as [`chain`] renders it.
    pub fn full_message(&self) -> String {
        chain(self)
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

/// `e` and its causes (its `source()` chain) joined with ": ", as anyhow's `{:#}` prints
/// them, except that a cause whose text the message before it already quotes is left out
/// (some errors of other crates print their cause and return it as the source too).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !t.is_empty() && !s.contains(&t) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Whether `e` (or an error it wraps) is "no space left on device".
///
/// Walks the `source()` chain looking for an `io::Error` of kind `StorageFull` (ENOSPC); sled
/// and tantivy sometimes keep the `io::Error` behind an `Arc` or a string, so their debug
/// rendering is searched as well.
pub fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(libc::ENOSPC)
            {
                return true;
            }
        }
        cur = err.source();
    }
    format!("{e:?}").contains("StorageFull")
}

impl Error {
    /// `e` as [`Error::DiskFull`] naming `path` when it is "no space left on device", else as
    /// it is.
    pub fn disk_full_at(self, path: &std::path::Path) -> Error {
        match self {
            Error::DiskFull { cause, .. } => Error::DiskFull {
                path: Some(path.to_path_buf()),
                cause,
            },
            Error::Io { ref source, .. } if is_disk_full(source) => Error::DiskFull {
                path: Some(path.to_path_buf()),
                cause: self.full_message(),
            },
            e => e,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        if is_disk_full(&e) {
            Error::DiskFull {
                path: None,
                cause: match &e {
                    sled::Error::Io(io) => io.to_string(),
                    e => e.to_string(),
                },
            }
        } else {
            Error::Db(e)
        }
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        if is_disk_full(&e) {
            Error::DiskFull {
                path: None,
                cause: e.to_string(),
            }
        } else {
            Error::Index(e)
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn no_space_left_is_disk_full_from_sled_tantivy_and_io() {
        let e: Error = sled::Error::Io(enospc()).into();
        assert!(matches!(e, Error::DiskFull { path: None, .. }), "{e:?}");
        let e = e.disk_full_at(Path::new("/data/store"));
        let msg = e.to_string();
        assert!(msg.starts_with("disk full"), "{msg}");
        assert!(msg.contains("/data/store"), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");

        let e: Error = tantivy::TantivyError::from(enospc()).into();
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        let e: Error = tantivy::TantivyError::OpenWriteError(
            tantivy::directory::error::OpenWriteError::wrap_io_error(enospc(), "meta.json".into()),
        )
        .into();
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        let kind_only = std::io::Error::new(std::io::ErrorKind::StorageFull, "full");
        assert!(matches!(
            Error::io("/x", kind_only).disk_full_at(Path::new("/x")),
            Error::DiskFull { .. }
        ));

        // Other I/O errors stay what they are.
        let e: Error = sled::Error::Io(std::io::Error::from_raw_os_error(libc::EACCES)).into();
        assert!(matches!(e, Error::Db(_)), "{e:?}");
        let e = Error::io("/x", std::io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e.disk_full_at(Path::new("/x")), Error::Io { .. }));
    }

    #[test]
    fn a_wrapped_error_is_kept_as_the_source_and_printed_once() {
        use std::error::Error as _;
        let e: Error = sled::Error::Io(std::io::Error::from_raw_os_error(libc::EACCES)).into();
        assert_eq!(e.to_string(), "store database");
        assert!(e.source().is_some_and(|s| s.is::<sled::Error>()));
        let chain_of = |e: anyhow::Error| e.chain().map(|c| c.to_string()).collect::<Vec<_>>();
        let msg = chain(&e);
        assert!(msg.starts_with("store database: "), "{msg}");
        assert_eq!(msg.matches("Permission denied").count(), 1, "{msg}");
        assert_eq!(chain_of(e.into()).len(), 2);

        let candle =
            candle_core::Tensor::zeros((2, 3), candle_core::DType::F32, &candle_core::Device::Cpu)
                .and_then(|t| t.matmul(&t))
                .err()
                .map(Error::from)
                .expect("a 2×3 by 2×3 product fails");
        assert!(matches!(candle, Error::Candle(_)), "{candle:?}");
        assert!(candle
            .source()
            .is_some_and(|s| s.is::<candle_core::Error>()));
        assert!(chain(&candle).starts_with("model: "), "{}", chain(&candle));
        let parts = chain_of(candle.into());
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(parts[0], "model");

        // An I/O error names its path, then its cause, once.
        let e = Error::io("/x/y", std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(chain(&e), "/x/y: No such file or directory (os error 2)");
        // tantivy prints its cause and returns it as its source as well: printed once.
        let e: Error =
            tantivy::TantivyError::from(std::io::Error::from_raw_os_error(libc::EACCES)).into();
        assert!(matches!(e, Error::Index(_)), "{e:?}");
        assert_eq!(
            chain(&e).matches("Permission denied").count(),
            1,
            "{}",
            chain(&e)
        );
    }
}
