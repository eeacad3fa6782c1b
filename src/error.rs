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
    Db(sled::Error),

    /// The tantivy index failed.
    #[error("search index: {0}")]
    Index(tantivy::TantivyError),

    /// The search index cannot be read (missing, truncated or corrupted files). It is derived
    /// from the records, so `emoknow reindex` rebuilds it; the records themselves are intact.
    #[error("search index at {} is damaged ({reason}); run `emoknow reindex` to rebuild it from the records", path.display())]
    IndexDamaged {
        /// The index directory.
        path: PathBuf,
        /// What is wrong with it.
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
                cause: self.to_string(),
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
        Error::Model(e.to_string())
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
}
