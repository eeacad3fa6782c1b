//! Model directories on disk: written whole or not at all, and checked when read.
//!
//! Training writes into a sibling staging directory `<out>.tmp-<pid>` (same parent, so the
//! final rename is atomic), weights first and `meta.json` last, fsyncs everything, then swaps
//! the staging directory into place ([`Staging`]). Whatever moment the process dies at, `<out>`
//! holds either the old model whole or the new one whole; a leftover staging (or, on systems
//! without an atomic directory exchange, `<out>.old-<pid>`) directory is cleaned by the next
//! `train` into the same place.
//!
//! `meta.json` records the size and SHA-256 of every other file of the directory
//! ([`FileSum`]); loading checks them ([`verify`]), so weights that do not belong to the meta
//! (a hand-mixed directory, a partial copy) are refused instead of predicting silently.

use crate::error::{Error, OutPathReason, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Largest `meta.json` a model load reads (real ones are a few KB).
pub const MAX_META_BYTES: u64 = 64 << 20;

/// Size and content hash of one file of a model directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Length in bytes.
    pub bytes: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

/// `p` made absolute with symbolic links and `..` resolved, also when (a tail of) it does not
/// exist yet: the deepest existing ancestor is canonicalized and the rest appended.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(p)
    };
    let mut missing: Vec<std::ffi::OsString> = Vec::new();
    let mut cur = p.clone();
    loop {
        match std::fs::canonicalize(&cur) {
            Ok(mut c) => {
                for part in missing.iter().rev() {
                    if part == ".." {
                        c.pop();
                    } else if part != "." {
                        c.push(part);
                    }
                }
                return Ok(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let name = cur.file_name().map(|n| n.to_os_string());
                match (name, cur.parent()) {
                    (Some(n), Some(parent)) => {
                        missing.push(n);
                        cur = parent.to_path_buf();
                    }
                    _ => {
                        // `..` or `.` as the last component of a missing path.
                        let last = cur.components().next_back();
                        match (last, cur.parent()) {
                            (Some(Component::ParentDir), Some(parent)) => {
                                missing.push("..".into());
                                cur = parent.to_path_buf();
                            }
                            (Some(Component::CurDir), Some(parent)) => cur = parent.to_path_buf(),
                            _ => return Err(Error::io(&p, e)),
                        }
                    }
                }
            }
            Err(e) => return Err(Error::io(&cur, e)),
        }
    }
}

/// Whether one of two absolute paths is the other or inside it.
pub fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Refuses a model output directory that exists and is not a model directory: a file, or a
/// non-empty directory without `meta.json` (retraining replaces the whole directory, so
/// anything else in it would be lost).
pub fn check_out(out: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(out, e)),
    };
    if !meta.is_dir() {
        return Err(Error::out_path(out, OutPathReason::NotADirectory));
    }
    if out.join("meta.json").is_file() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    if entries.next().is_some() {
        return Err(Error::out_path(out, OutPathReason::NotAModel));
    }
    Ok(())
}

fn parent_and_name(out: &Path) -> Result<(PathBuf, String)> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let name = out.file_name().and_then(|n| n.to_str());
    match (parent, name) {
        (Some(p), Some(n)) => Ok((p.to_path_buf(), n.to_string())),
        _ => Err(Error::out_path(out, OutPathReason::NoName)),
    }
}

/// Whether process `pid` is alive (true when unknown: leftovers of a live train are kept).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(p, 0) } == 0 {
            return true;
        }
        std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Leftovers of an interrupted train into `<parent>/<name>`: (path, is staging, writer pid).
fn leftovers(parent: &Path, name: &str) -> Vec<(PathBuf, bool, u32)> {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let file_name = e.file_name();
        let Some(f) = file_name.to_str() else {
            continue;
        };
        let Some(rest) = f.strip_prefix(name) else {
            continue;
        };
        let (staging, pid) = if let Some(pid) = rest.strip_prefix(".tmp-") {
            (true, pid)
        } else if let Some(pid) = rest.strip_prefix(".old-") {
            (false, pid)
        } else {
            continue;
        };
        if let Ok(pid) = pid.parse::<u32>() {
            out.push((e.path(), staging, pid));
        }
    }
    out.sort();
    out
}

/// A hint for a model directory that cannot be read: what an interrupted `train` left next to
/// it, if anything.
pub fn leftover_hint(dir: &Path) -> Option<String> {
    let abs = absolute(dir).ok()?;
    let (parent, name) = parent_and_name(&abs).ok()?;
    let left = leftovers(&parent, &name);
    if left.is_empty() {
        return None;
    }
    let list: Vec<String> = left.iter().map(|(p, ..)| p.display().to_string()).collect();
    Some(format!(
        "an interrupted `emoknow train` left {}; the next train into {} cleans up (or rename the one holding a whole model to {})",
        list.join(" and "),
        dir.display(),
        dir.display()
    ))
}

/// Removes what an interrupted train into `out` left behind (processes that are gone only).
/// A previous model parked as `<out>.old-<pid>` while `<out>` is missing is put back first.
fn clean_leftovers(out: &Path) -> Result<()> {
    let (parent, name) = parent_and_name(out)?;
    for (path, staging, pid) in leftovers(&parent, &name) {
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        if !staging && !out.exists() {
            std::fs::rename(&path, out).map_err(|e| Error::io(&path, e))?;
            continue;
        }
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn sync_path(p: &Path) {
    // Directories cannot be fsynced everywhere; a failure there loses durability, not data.
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.sync_all();
    }
}

/// Fsyncs every file under `dir`, then the directories.
fn sync_tree(dir: &Path) -> Result<()> {
    for (rel, _) in walk(dir)? {
        let p = dir.join(&rel);
        let f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
        f.sync_all().map_err(|e| Error::io(&p, e))?;
    }
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)
            .map_err(|e| Error::io(&d, e))?
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
        sync_path(&d);
    }
    Ok(())
}

/// Files under `dir` (recursively, symbolic links not followed), as '/'-joined relative
/// paths with their sizes, sorted.
fn walk(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let e = e.map_err(|e| Error::io(&d, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let t = e.file_type().map_err(|err| Error::io(e.path(), err))?;
            if t.is_dir() {
                todo.push((e.path(), rel));
            } else if t.is_file() {
                let len = e.metadata().map_err(|err| Error::io(e.path(), err))?.len();
                out.push((rel, len));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Size and hash of every file under `dir` except the top-level `meta.json`.
pub fn checksums(dir: &Path) -> Result<BTreeMap<String, FileSum>> {
    let mut out = BTreeMap::new();
    for (rel, bytes) in walk(dir)? {
        if rel == "meta.json" {
            continue;
        }
        let sha256 = sha256_file(&dir.join(&rel))?;
        out.insert(rel, FileSum { bytes, sha256 });
    }
    Ok(out)
}

/// Checks that the files of `dir` are the ones `meta` (the path of its `meta.json`) records.
/// Errors: [`Error::ModelDamaged`] naming the first file that is missing, of another size or
/// content.
pub fn verify(dir: &Path, meta: &Path, files: &BTreeMap<String, FileSum>) -> Result<()> {
    let mismatch = |rel: &str, what: String| Error::ModelDamaged {
        dir: dir.to_path_buf(),
        msg: format!(
            "{}: {what}, not the file {} records: the directory mixes two models (an \
             interrupted write, a partial copy or a hand edit); retrain it",
            dir.join(rel).display(),
            meta.display(),
        ),
    };
    for (rel, sum) in files {
        let ok = Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !ok || rel.is_empty() {
            return Err(Error::input(
                meta,
                0,
                format!("file entry {rel:?} is not a path inside the model directory"),
            ));
        }
        let p = dir.join(rel);
        let len = match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Err(mismatch(rel, "not a file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(mismatch(rel, "missing".into()))
            }
            Err(e) => return Err(Error::io(&p, e)),
        };
        if len != sum.bytes {
            return Err(mismatch(
                rel,
                format!("{len} bytes where {} were written", sum.bytes),
            ));
        }
        if sha256_file(&p)? != sum.sha256 {
            return Err(mismatch(rel, "other content (SHA-256 differs)".into()));
        }
    }
    Ok(())
}

/// Reads a model's `meta.json`, refusing one larger than [`MAX_META_BYTES`]. A missing file
/// names what an interrupted train left next to the directory, if anything.
pub fn read_meta(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("meta.json");
    let md = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::NotFound {
                let what = if dir.is_dir() {
                    "no meta.json: not an emoknow model directory (or its training never finished)"
                } else {
                    "no such model directory"
                };
                let msg = match leftover_hint(dir) {
                    Some(h) => format!("{what}; {h}"),
                    None => what.to_string(),
                };
                return Err(Error::input(&path, 0, msg));
            }
            return Err(Error::io(&path, e));
        }
    };
    if md.len() > MAX_META_BYTES {
        return Err(Error::input(
            &path,
            0,
            format!(
                "{} bytes; a model's meta.json is a few KB and at most {} MB is read: not an emoknow model",
                md.len(),
                MAX_META_BYTES >> 20
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_META_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::io(&path, e))?;
    if bytes.len() as u64 > MAX_META_BYTES {
        return Err(Error::input(
            &path,
            0,
            "grew past the size limit while read",
        ));
    }
    Ok(bytes)
}

/// A staging directory for a model being written, swapped into place by [`Staging::commit`];
/// removed when dropped uncommitted.
pub struct Staging {
    out: PathBuf,
    tmp: PathBuf,
    committed: bool,
    /// Removed by an abort (Ctrl-C) until committed.
    _temp: crate::temps::Temp,
}

impl Staging {
    /// Prepares to write model directory `out` (absolute, see [`absolute`]; checked with
    /// [`check_out`]): creates its parent, cleans what interrupted trains into it left, and
    /// creates the empty staging directory `<out>.tmp-<pid>`.
    pub fn begin(out: &Path) -> Result<Staging> {
        check_out(out)?;
        let (parent, name) = parent_and_name(out)?;
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        clean_leftovers(out)?;
        let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        let temp = crate::temps::register(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Staging {
            out: out.to_path_buf(),
            _temp: temp,
            tmp,
            committed: false,
        })
    }

    /// The staging directory to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Fsyncs the staging directory and puts it in place of `out` (exchanged atomically where
    /// the system can; else the old one is renamed aside first), then removes the old model.
    pub fn commit(mut self) -> Result<()> {
        sync_tree(&self.tmp)?;
        // An abort (Ctrl-C) waits for the swap: it never removes the staging directory while
        // it is being renamed over the model.
        crate::temps::settle(|| self.swap_in())
    }

    fn swap_in(&mut self) -> Result<()> {
        let parent = self.out.parent().map(Path::to_path_buf).unwrap_or_default();
        if std::fs::symlink_metadata(&self.out).is_ok() {
            check_out(&self.out)?;
            if exchange(&self.tmp, &self.out).is_ok() {
                // The staging path now holds the old model.
                self.committed = true;
                sync_path(&parent);
                std::fs::remove_dir_all(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
                return Ok(());
            }
            let name = self
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let old = parent.join(format!("{name}.old-{}", std::process::id()));
            std::fs::rename(&self.out, &old).map_err(|e| Error::io(&self.out, e))?;
            if let Err(e) = std::fs::rename(&self.tmp, &self.out) {
                // Put the old model back.
                let _ = std::fs::rename(&old, &self.out);
                return Err(Error::io(&self.out, e));
            }
            self.committed = true;
            sync_path(&parent);
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
            return Ok(());
        }
        std::fs::rename(&self.tmp, &self.out).map_err(|e| Error::io(&self.out, e))?;
        self.committed = true;
        sync_path(&parent);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`); an error where the
/// system or file system cannot.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes())?;
        let cb = CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: both are valid NUL-terminated paths; AT_FDCWD is ignored for absolute paths.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Err(std::io::Error::other("no atomic exchange"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_resolves_missing_tails() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(absolute(&d.path().join("a/b")).unwrap(), base.join("a/b"));
        assert_eq!(absolute(&d.path().join("a/../c")).unwrap(), base.join("c"));
        std::fs::create_dir(d.path().join("x")).unwrap();
        assert_eq!(absolute(&d.path().join("x/./y")).unwrap(), base.join("x/y"));
        assert!(overlaps(&base.join("x"), &base.join("x/y")));
        assert!(!overlaps(&base.join("x"), &base.join("xy")));
    }

    #[test]
    fn staging_replaces_whole_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let out = absolute(&d.path().join("m")).unwrap();
        let s = Staging::begin(&out).unwrap();
        std::fs::write(s.path().join("meta.json"), "1").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(out.join("meta.json")).unwrap(), "1");
        let s = Staging::begin(&out).unwrap();
        std::fs::write(s.path().join("meta.json"), "2").unwrap();
        std::fs::write(s.path().join("w"), "x").unwrap();
        drop(s);
        // Dropped uncommitted: the old model stays and no staging dir is left.
        assert_eq!(std::fs::read_to_string(out.join("meta.json")).unwrap(), "1");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let s = Staging::begin(&out).unwrap();
        std::fs::write(s.path().join("meta.json"), "3").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(out.join("meta.json")).unwrap(), "3");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // Leftovers of a dead writer are cleaned; a parked old model is put back.
        let dead = u32::MAX - 1;
        std::fs::create_dir(d.path().join(format!("m.tmp-{dead}"))).unwrap();
        std::fs::rename(&out, d.path().join(format!("m.old-{dead}"))).unwrap();
        assert!(leftover_hint(&out).is_some());
        let s = Staging::begin(&out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("meta.json")).unwrap(), "3");
        drop(s);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn checksums_catch_a_swapped_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("w"), "abc").unwrap();
        std::fs::write(d.path().join("sub/v"), "def").unwrap();
        std::fs::write(d.path().join("meta.json"), "{}").unwrap();
        let sums = checksums(d.path()).unwrap();
        assert_eq!(
            sums.keys().collect::<Vec<_>>(),
            ["sub/v", "w"].iter().collect::<Vec<_>>()
        );
        let meta = d.path().join("meta.json");
        verify(d.path(), &meta, &sums).unwrap();
        std::fs::write(d.path().join("w"), "abd").unwrap();
        assert!(verify(d.path(), &meta, &sums)
            .unwrap_err()
            .to_string()
            .contains("SHA-256"));
        let mut evil = BTreeMap::new();
        evil.insert(
            "../x".to_string(),
            FileSum {
                bytes: 0,
                sha256: String::new(),
            },
        );
        assert!(verify(d.path(), &meta, &evil).is_err());
    }
}
