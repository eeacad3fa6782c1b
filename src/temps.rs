//! Files and directories written beside their final name (a model's staging directory, an
//! export's or an index's temporary file) while they are being written, so that a process
//! stopped at once (the command line's Ctrl-C, [`abort`]) removes them on its way out.
//!
//! Renaming such a path into place runs under [`settle`]: an abort waits for a rename in
//! progress, so it never removes a directory half-way while it is being renamed over a model.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A path registered as temporary while this value lives.
#[derive(Debug)]
pub struct Temp(PathBuf);

/// Registers `path` as temporary until the returned value is dropped.
pub fn register(path: &Path) -> Temp {
    pending().push(path.to_path_buf());
    Temp(path.to_path_buf())
}

impl Drop for Temp {
    fn drop(&mut self) {
        let mut p = pending();
        if let Some(i) = p.iter().rposition(|x| *x == self.0) {
            p.swap_remove(i);
        }
    }
}

/// Runs `f` (a rename into place) so that [`abort`] waits for it to finish.
pub fn settle<T>(f: impl FnOnce() -> T) -> T {
    let _held = pending();
    f()
}

/// Writes `path` through `tmp` beside it: `write` fills `tmp` while it is registered as
/// temporary (an abort removes it), a failed write removes it, and a finished one is renamed
/// into place under [`settle`].
pub fn write_beside<T>(
    tmp: &Path,
    path: &Path,
    write: impl FnOnce() -> crate::error::Result<T>,
) -> crate::error::Result<T> {
    let _pending = register(tmp);
    let out = match write() {
        Ok(out) => out,
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
    };
    settle(|| std::fs::rename(tmp, path)).map_err(|e| crate::error::Error::io(path, e))?;
    Ok(out)
}

/// Removes every registered temporary path and exits the process with `code` (after any
/// [`settle`] in progress).
pub fn abort(code: i32) -> ! {
    let held = pending();
    for p in held.iter() {
        let _ = match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
            Ok(_) => std::fs::remove_file(p),
            Err(_) => Ok(()),
        };
    }
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_paths_are_forgotten_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let t = register(&a);
        assert!(pending().contains(&a));
        drop(t);
        assert!(!pending().contains(&a));
        assert_eq!(settle(|| 7), 7);
    }
}
