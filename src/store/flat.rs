//! The flat vector files of one (encoder, what): `vectors/<encoder>/<what>.<gen>.f32` (a
//! 16-byte header, then `rows × dim` little-endian f32) and `<what>.<gen>.ids` (a 16-byte
//! header, then one little-endian u64 example id per row).
//!
//! Files only grow by whole batches: rows are written past the committed count, both files are
//! fsynced, and only then does sled's file record ([`FileMeta`], the commit point) count them.
//! Bytes past the committed rows are a batch a crashed process never committed; [`repair`]
//! truncates them. A compaction writes the next generation beside, commits it in sled, then
//! removes the old one; files of any generation sled does not name are such leftovers.
//!
//! This module knows bytes and files; which rows are live (the last of an id, unless a sled
//! tombstone removed it) is decided in `vectors`.

use crate::error::{Error, Result};
use memmap2::{Mmap, MmapOptions};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

// Rows are read in place as f32 and ids as u64: the files are little-endian.
#[cfg(not(target_endian = "little"))]
compile_error!("emoknow's vector files are little-endian and read in place: big-endian targets are not supported");

/// Magic of a vector file.
const MAGIC_F32: &[u8; 8] = b"EMOKVF32";
/// Magic of an id file.
const MAGIC_IDS: &[u8; 8] = b"EMOKVIDS";
/// Version of both files' layout.
const FILE_VERSION: u32 = 1;
/// Header bytes: magic, version (u32 LE), dimension (u32 LE; 0 in the id file). A multiple of
/// 8, so f32 rows and u64 ids after it are aligned in a (page-aligned) mapping.
pub(super) const HEADER: u64 = 16;

/// sled's record of one file pair: the commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileMeta {
    /// Generation: the file names' number; a compaction writes the next one.
    pub gen: u64,
    /// Rows committed (live, superseded and removed alike).
    pub rows: u64,
    /// Dimension.
    pub dim: u32,
}

impl FileMeta {
    fn row_bytes(&self) -> u64 {
        self.dim as u64 * 4
    }

    /// Committed length of the vector file.
    pub fn f32_len(&self) -> u64 {
        HEADER + self.rows * self.row_bytes()
    }

    /// Committed length of the id file.
    pub fn ids_len(&self) -> u64 {
        HEADER + self.rows * 8
    }
}

/// The two files of one generation.
#[derive(Debug, Clone)]
pub(super) struct Pair {
    pub f32: PathBuf,
    pub ids: PathBuf,
}

/// `s` as a file name: ASCII letters, digits, `-` and `_` as they are, any other byte `%XX`
/// (so no `.`, `/` or `:`; and distinct strings get distinct names).
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The vector files' root in the store.
pub(super) fn root(store: &Path) -> PathBuf {
    store.join("vectors")
}

/// The folder of one encoder's files.
pub(super) fn encoder_dir(store: &Path, encoder: &str) -> PathBuf {
    root(store).join(escape(encoder))
}

/// The files of (encoder, what key) in generation `gen`.
pub(super) fn pair(store: &Path, encoder: &str, what: &str, gen: u64) -> Pair {
    let dir = encoder_dir(store, encoder);
    let stem = format!("{}.{gen}", escape(what));
    Pair {
        f32: dir.join(format!("{stem}.f32")),
        ids: dir.join(format!("{stem}.ids")),
    }
}

fn header(magic: &[u8; 8], dim: u32) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&FILE_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&dim.to_le_bytes());
    h
}

/// Checks a header read from `path`; the problem, worded for the user, when it is wrong.
fn header_problem(bytes: &[u8], magic: &[u8; 8], dim: u32, path: &Path) -> Option<String> {
    if bytes.len() < HEADER as usize {
        return Some(format!("{} is shorter than its header", path.display()));
    }
    if &bytes[..8] != magic {
        return Some(format!(
            "{} is not an emoknow vector file (bad magic)",
            path.display()
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FILE_VERSION {
        return Some(format!(
            "{} has file version {version}, expected {FILE_VERSION}",
            path.display()
        ));
    }
    let found = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if found != dim {
        return Some(format!(
            "{} has dimension {found}, its record says {dim}",
            path.display()
        ));
    }
    None
}

fn read_header(file: &mut File, path: &Path) -> Result<Vec<u8>> {
    let mut h = Vec::with_capacity(HEADER as usize);
    Read::by_ref(file)
        .take(HEADER)
        .read_to_end(&mut h)
        .map_err(|e| Error::io(path, e))?;
    Ok(h)
}

/// What is wrong with the committed part of one file (header, length), if anything.
fn file_problem(path: &Path, magic: &[u8; 8], dim: u32, want_len: u64) -> Result<Option<String>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(format!("{} is missing", path.display())))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let h = read_header(&mut f, path)?;
    if let Some(p) = header_problem(&h, magic, dim, path) {
        return Ok(Some(p));
    }
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < want_len {
        return Ok(Some(format!(
            "{} is truncated: {len} bytes, its committed rows need {want_len}",
            path.display()
        )));
    }
    Ok(None)
}

/// What is wrong with the committed part of a pair (missing, foreign or bad header, wrong
/// dimension, truncated), if anything. Bytes past the committed rows are not a problem.
pub(super) fn problem(p: &Pair, meta: &FileMeta) -> Result<Option<String>> {
    if let Some(x) = file_problem(&p.f32, MAGIC_F32, meta.dim, meta.f32_len())? {
        return Ok(Some(x));
    }
    file_problem(&p.ids, MAGIC_IDS, 0, meta.ids_len())
}

fn damaged(why: String) -> Error {
    Error::Corrupt(format!(
        "{why} (run `emoknow check`; `emoknow reindex` keeps the intact rows, then `emoknow embed` recomputes the rest)"
    ))
}

/// Truncates bytes past the committed rows (a batch a crashed writer never committed). Returns
/// whether anything was cut. A missing or short file is left for `check` to report.
pub(super) fn repair(p: &Pair, meta: &FileMeta) -> Result<bool> {
    let mut cut = false;
    for (path, want) in [(&p.f32, meta.f32_len()), (&p.ids, meta.ids_len())] {
        let f = match OpenOptions::new().write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > want {
            f.set_len(want).map_err(|e| Error::io(path, e))?;
            f.sync_all().map_err(|e| Error::io(path, e))?;
            cut = true;
        }
    }
    Ok(cut)
}

/// Opens one file for appending at its committed length `want`, creating it (with its header)
/// when `create`; checks the header and drops any uncommitted tail.
fn open_at(path: &Path, magic: &[u8; 8], dim: u32, want: u64, create: bool) -> Result<File> {
    let mut f = if create {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.write_all(&header(magic, dim))
            .map_err(|e| Error::io(path, e))?;
        f
    } else {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?
    };
    f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    let h = read_header(&mut f, path)?;
    if let Some(p) = header_problem(&h, magic, dim, path) {
        return Err(Error::Corrupt(format!(
            "{p} (run `emoknow check`; `emoknow reindex` drops the damaged file, then `emoknow embed` recomputes it)"
        )));
    }
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < want {
        return Err(Error::Corrupt(format!(
            "{} is truncated: {len} bytes, its committed rows need {want} (run `emoknow check`; `emoknow reindex` keeps the intact rows, then `emoknow embed` recomputes the rest)",
            path.display()
        )));
    }
    if len > want {
        f.set_len(want).map_err(|e| Error::io(path, e))?;
    }
    f.seek(SeekFrom::Start(want))
        .map_err(|e| Error::io(path, e))?;
    Ok(f)
}

/// Writes `ids` and their rows (`data`, `ids.len() × meta.dim`) after the committed rows of
/// `meta` (`meta.rows == 0`: new files) and fsyncs both files (and the folder, for new files).
/// The caller then commits `meta.rows + ids.len()` in sled.
pub(super) fn append(p: &Pair, meta: &FileMeta, ids: &[u64], data: &[f32]) -> Result<()> {
    let create = meta.rows == 0;
    if create {
        if let Some(dir) = p.f32.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    let mut f = open_at(&p.f32, MAGIC_F32, meta.dim, meta.f32_len(), create)?;
    let mut bytes = Vec::with_capacity(data.len() * 4);
    for x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    f.write_all(&bytes).map_err(|e| Error::io(&p.f32, e))?;
    f.sync_data().map_err(|e| Error::io(&p.f32, e))?;
    let mut g = open_at(&p.ids, MAGIC_IDS, 0, meta.ids_len(), create)?;
    let mut bytes = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    g.write_all(&bytes).map_err(|e| Error::io(&p.ids, e))?;
    g.sync_data().map_err(|e| Error::io(&p.ids, e))?;
    if create {
        sync_dir(p.f32.parent())?;
    }
    Ok(())
}

/// Fsyncs a folder, so that files created in it survive a crash (unix; elsewhere a no-op).
pub(super) fn sync_dir(dir: Option<&Path>) -> Result<()> {
    #[cfg(unix)]
    if let Some(dir) = dir {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Maps the committed part of one file after checking its header and length.
fn map(path: &Path, magic: &[u8; 8], dim: u32, len: u64) -> Result<Mmap> {
    let mut f = File::open(path).map_err(|e| damaged(format!("{}: {e}", path.display())))?;
    let h = read_header(&mut f, path)?;
    if let Some(x) = header_problem(&h, magic, dim, path) {
        return Err(damaged(x));
    }
    let have = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if have < len {
        return Err(damaged(format!(
            "{} is truncated: {have} bytes, its committed rows need {len}",
            path.display()
        )));
    }
    let n = usize::try_from(len)
        .map_err(|_| damaged(format!("{} is too large to map", path.display())))?;
    // SAFETY: a mapping is only sound while nobody changes the mapped bytes. Only the
    // committed prefix is mapped, and it is never written again: writers (this process alone,
    // as sled's lock keeps other processes out of the store) only append past the committed
    // rows, cut uncommitted bytes past them, or write a new generation beside and unlink this
    // one (which leaves a mapping intact). A user editing the file by hand is the exception
    // no mapping can rule out.
    let m = unsafe { MmapOptions::new().len(n).map(&f) }.map_err(|e| Error::io(path, e))?;
    Ok(m)
}

/// The committed rows of a pair, mapped: the vector file (rows from byte [`HEADER`]) and
/// the ids.
pub(super) fn open_rows(p: &Pair, meta: &FileMeta) -> Result<(Mmap, Vec<u64>)> {
    let rows = map(&p.f32, MAGIC_F32, meta.dim, meta.f32_len())?;
    let ids = read_ids(p, meta)?;
    Ok((rows, ids))
}

/// The committed ids of a pair, in row order.
pub(super) fn read_ids(p: &Pair, meta: &FileMeta) -> Result<Vec<u64>> {
    if meta.rows == 0 {
        return Ok(Vec::new());
    }
    let m = map(&p.ids, MAGIC_IDS, 0, meta.ids_len())?;
    Ok(m[HEADER as usize..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// The f32s of a mapped vector file (after its header): `None` when the mapping is not
/// 4-byte aligned or its length not a whole number of f32s (never, for a file [`map`] checked:
/// mappings start on a page, the header is 16 bytes).
pub(super) fn floats(m: &Mmap) -> Option<&[f32]> {
    let body = m.get(HEADER as usize..)?;
    bytemuck::try_cast_slice(body).ok()
}

/// How many whole rows each file of a damaged pair still holds (for `reindex`'s repair): the
/// committed rows both files have in full, or `None` when a file is missing or its header is
/// wrong (the pair is lost).
pub(super) fn intact_rows(p: &Pair, meta: &FileMeta) -> Result<Option<u64>> {
    let mut rows = meta.rows;
    for (path, magic, dim, row) in [
        (&p.f32, MAGIC_F32, meta.dim, meta.dim as u64 * 4),
        (&p.ids, MAGIC_IDS, 0, 8),
    ] {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let h = read_header(&mut f, path)?;
        if header_problem(&h, magic, dim, path).is_some() {
            return Ok(None);
        }
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        rows = rows.min((len - HEADER) / row.max(1));
    }
    Ok(Some(rows))
}

/// Removes a pair's files (missing ones are fine).
pub(super) fn remove(p: &Pair) -> Result<()> {
    for path in [&p.f32, &p.ids] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(())
}

/// Files under `vectors/` that look like ours (`<what>.<gen>.f32|ids` in an encoder folder)
/// but are not in `keep`: leftovers of a crashed first write or compaction. Removes them;
/// returns how many.
pub(super) fn remove_leftovers(
    store: &Path,
    keep: &std::collections::HashSet<PathBuf>,
) -> Result<usize> {
    let root = root(store);
    let encoders = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(&root, e)),
    };
    let mut n = 0;
    for enc in encoders.filter_map(|e| e.ok()) {
        let dir = enc.path();
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for f in files.filter_map(|e| e.ok()) {
            let path = f.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".f32") || n.ends_with(".ids"));
            if ours && !keep.contains(&path) {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                n += 1;
            }
        }
    }
    Ok(n)
}
