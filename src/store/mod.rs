//! The embedded store: sled (the source of truth) and a tantivy index derived from it, in one
//! directory (`db/` and `index/`).
//!
//! Write path: every batch is one `sled::Batch` (atomic: all rows or none), flushed to disk,
//! then mirrored into tantivy and committed. The batch also records its example ids as
//! "pending index"; they are cleared once tantivy has committed. A crash between the two leaves
//! pending ids behind, and the next [`Store::open`] reindexes exactly those. So after a kill -9
//! the store opens, `check` passes, and a batch is either whole or absent.
//!
//! Key layout (one sled tree, so one batch is atomic across record kinds):
//! `m/…` meta, `e`+id examples, `k`+id+source knowledge, `x`+id+source missing knowledge,
//! `o`+file+0+row ids of rows from files without an id column, `p`+seq ids of a batch pending
//! indexing, `r`+id the text models read where it differs from the text as given (see
//! [`style`]), `c`+encoder id encoder info, `a`+encoder id the record of its ANN index file (see
//! [`ann`]). Vectors live in flat files under `vectors/`, their commit points and tombstones in
//! the `vector_files` tree (see [`vectors`]); each example's document and position in the `docs`
//! tree (id → [`records::DocRecord`], written in the same transaction as the examples; see
//! `documents`).
//!
//! This file holds the [`Store`] itself: opening and locking, the format version, the key
//! helpers, record encoding, and the write discipline above (commit, pending marks, repair).
//! The rest is split by what it reads and writes:
//!
//! - `check`: `stats`, `check` (sled against the index) and `reindex`.
//! - [`index`]: the tantivy search index derived from sled.
//! - `ingest`: examples: `ingest` (which also drops what replaced sentences had derived) and
//!   the example reads.
//! - `knowledge`: knowledge and missing records, entries, and `query`.
//! - [`records`]: the record types stored in sled.
//! - `runs`: the state of each neighbours source's retrieval.
//! - [`ann`]: the records of the approximate nearest-neighbour index files under `ann/`.
//! - [`vectors`]: embedding vectors, one per encoder, text and example.
//! - `flat`: the vector files themselves (header, rows, ids, append, repair, mapping).
//! - [`migrate`]: format migrations (1 → 2: vectors from sled to flat files).
//! - [`style`]: the corpus's text style (`m/text_style`) and the texts models read where they
//!   differ from the texts as given (`r` + id).

pub mod ann;
mod check;
mod documents;
mod flat;
pub mod index;
mod ingest;
mod knowledge;
pub mod migrate;
pub mod records;
mod runs;
pub mod style;
pub mod vectors;

use crate::error::{Error, Result};
use crate::labels::LabelSet;
use records::{Example, ExampleId};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use check::{CheckReport, SourceStats, Stats};
pub use documents::DocIndex;
pub use index::{DocHit, Filter, HitKind, SearchIndex};
pub use ingest::IngestSummary;
pub use knowledge::{Entry, QueryHit, QuerySpec};
pub use migrate::MigrateSummary;
pub use runs::fingerprint;
pub use style::{StyleChoice, StyleRecord};

/// Version of the on-disk format; bumped on any change to the records or key layout.
/// 2: vectors in flat files (1 kept them in sled; [`Store::open_migrating`] moves them).
pub const FORMAT_VERSION: u32 = 2;

const META_VERSION: &[u8] = b"m/version";
const P_EXAMPLE: u8 = b'e';
const P_KNOWLEDGE: u8 = b'k';
const P_MISSING: u8 = b'x';
const P_ORIGIN: u8 = b'o';
const P_PENDING: u8 = b'p';
/// Examples reindexed per search-index commit when pending examples are indexed in bulk.
const INDEX_CHUNK: usize = 65_536;
pub(crate) const P_ENCODER: u8 = b'c';

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// bincode encodes every record type here (structs, strings, vectors of known length): a
/// failure would be a bug in this module, never a property of the data, so it is not an error
/// callers could handle.
#[allow(clippy::expect_used)]
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode_config()).expect("records always serialize")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    // bincode allocates a string or list of the length a record claims before reading it, so
    // a damaged length could ask for exabytes. A limit proportional to the record's size
    // (a decoded record never takes more than 64 times its encoded bytes) bounds that.
    macro_rules! limited {
        ($limit:expr) => {
            bincode::serde::decode_from_slice(bytes, bincode_config().with_limit::<{ $limit }>())
        };
    }
    let decoded = match bytes.len() {
        0..=1024 => limited!(1 << 16),
        1025..=65_536 => limited!(1 << 22),
        65_537..=1_048_576 => limited!(1 << 26),
        1_048_577..=16_777_216 => limited!(1 << 30),
        _ => limited!(1 << 36),
    };
    decoded
        .map(|(v, _)| v)
        .map_err(|source| Error::CorruptRecord {
            what: what.to_string(),
            source,
        })
}

fn key_id(prefix: u8, id: ExampleId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn key_id_source(prefix: u8, id: ExampleId, source: &str) -> Vec<u8> {
    let mut k = key_id(prefix, id).to_vec();
    k.extend_from_slice(source.as_bytes());
    k
}

/// The id in a `prefix + id` key. A damaged, shorter key gives a wrong id (which `check`
/// reports, as it compares each key with its record), never a panic.
fn id_from_key(k: &[u8]) -> ExampleId {
    let mut id = [0u8; 8];
    for (dst, src) in id.iter_mut().zip(k.iter().skip(1)) {
        *dst = *src;
    }
    u64::from_be_bytes(id)
}

fn origin_key(file: &str, row: u64) -> Vec<u8> {
    let mut k = vec![P_ORIGIN];
    k.extend_from_slice(file.as_bytes());
    k.push(0);
    k.extend_from_slice(&row.to_be_bytes());
    k
}

/// An open store. Holds sled's exclusive lock: one process per store.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    /// Vector file commit points and tombstones (see [`vectors`]).
    vector_files: sled::Tree,
    /// Per vector file (its `vector_files` key): live example id → row, loaded on first use
    /// (`has_vector`, removals). Writers of vectors hold this lock.
    vector_live: std::sync::Mutex<HashMap<Vec<u8>, HashMap<ExampleId, u64>>>,
    /// Example id → its [`records::DocRecord`] (absent: its file's stream, in id order).
    docs: sled::Tree,
    index: SearchIndex,
    /// The holder file this handle wrote ([`Store::open_held`]), removed when it is dropped.
    holder_file: Option<PathBuf>,
}

/// The file in the store directory naming a long-lived holder of the store: its pid on the
/// first line, a description (its command line) on the second. Advisory only: sled's lock is
/// what keeps a second process out; this only lets that process say who holds it.
const HOLDER_FILE: &str = "holder";

impl Store {
    /// Opens the store at `path`, creating it if absent. Repairs the index if a previous
    /// process died between writing sled and committing the index.
    ///
    /// Errors: [`Error::StoreLocked`] when another process has it open,
    /// [`Error::StoreNeedsMigration`] for a store of an older format this build migrates
    /// ([`Store::open_migrating`]), [`Error::StoreVersion`] for one of another format.
    pub fn open_or_create(path: &Path) -> Result<Store> {
        Ok(Store::open_impl(path, true, None)?.0)
    }

    /// Opens an existing store; [`Error::NoStore`] when `path` holds none.
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store::open_impl(path, false, None)?.0)
    }

    /// Opens (or, with `create`, creates) the store, first migrating a store of an older
    /// format (see [`migrate`]): `progress(from_version, done, total)` is called with
    /// `done == 0` before the migration writes anything (to say so), then as vectors move.
    /// Returns what the migration did, if there was one.
    pub fn open_migrating(
        path: &Path,
        create: bool,
        progress: &mut dyn FnMut(u32, u64, u64),
    ) -> Result<(Store, Option<MigrateSummary>)> {
        Store::open_impl(path, create, Some(progress))
    }

    /// Opens an existing store for a long-lived holder (a server), recording `holder` (e.g.
    /// its command line) with this process's pid beside the database, so that another
    /// process refused the store is told what holds it ([`Error::StoreLocked`]'s `holder`).
    /// The record is best-effort: failing to write it never fails the open. It is removed
    /// when the store is dropped or [`Store::release_holder`] is called, and a record left by
    /// a killed holder is ignored (its pid is gone) and removed by the next open.
    pub fn open_held(path: &Path, holder: &str) -> Result<Store> {
        let mut store = Store::open_impl(path, false, None)?.0;
        let file = path.join(HOLDER_FILE);
        let line = holder.replace(['\n', '\r'], " ");
        if std::fs::write(&file, format!("{}\n{line}\n", std::process::id())).is_ok() {
            store.holder_file = Some(file);
        }
        Ok(store)
    }

    /// Removes the holder record [`Store::open_held`] wrote (also done on drop; for a store
    /// that lives as long as the process).
    pub fn release_holder(&self) {
        if let Some(f) = &self.holder_file {
            let _ = std::fs::remove_file(f);
        }
    }

    fn open_impl(
        path: &Path,
        create: bool,
        migrate: Option<&mut dyn FnMut(u32, u64, u64)>,
    ) -> Result<(Store, Option<MigrateSummary>)> {
        let db_dir = path.join("db");
        if !create && !db_dir.join("conf").exists() {
            return Err(Error::NoStore {
                path: path.to_path_buf(),
            });
        }
        let full = |e: Error| e.disk_full_at(path);
        std::fs::create_dir_all(path).map_err(|e| full(Error::io(path, e)))?;
        remove_partial_snapshots(path, &db_dir)?;
        let db = open_sled(path, &db_dir).map_err(|e| match e {
            sled::Error::Io(ref io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                Error::StoreLocked {
                    path: path.to_path_buf(),
                    holder: read_holder(path),
                }
            }
            e => full(e.into()),
        })?;
        let mut migrate_from = None;
        match db.get(META_VERSION)? {
            Some(v) => {
                let found =
                    u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                        Error::Corrupt("format version is not 4 bytes".to_string())
                    })?);
                if found == 1 && migrate.is_some() {
                    migrate_from = Some(found);
                } else if found == 1 {
                    return Err(Error::StoreNeedsMigration {
                        path: path.to_path_buf(),
                        found,
                        expected: FORMAT_VERSION,
                    });
                } else if found != FORMAT_VERSION {
                    return Err(Error::StoreVersion {
                        path: path.to_path_buf(),
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None => {
                db.insert(META_VERSION, &FORMAT_VERSION.to_be_bytes())
                    .map_err(|e| full(e.into()))?;
                db.flush().map_err(|e| full(e.into()))?;
            }
        }
        if migrate_from.is_none()
            && db
                .tree_names()
                .iter()
                .any(|n| n.as_ref() == migrate::OLD_TREE.as_bytes())
        {
            // Format 1's vector tree, left by a migration that died after its commit point.
            db.drop_tree(migrate::OLD_TREE)
                .map_err(|e| full(e.into()))?;
        }
        let vector_files = db.open_tree("vector_files").map_err(|e| full(e.into()))?;
        let docs = db.open_tree("docs").map_err(|e| full(e.into()))?;
        // The index is opened on first use; with records in sled, a missing one is damaged.
        let has_examples = db.scan_prefix([P_EXAMPLE]).next().is_some();
        let index = SearchIndex::new(&path.join("index"), has_examples).map_err(full)?;
        // This process holds sled's lock: a holder record left behind is stale.
        let _ = std::fs::remove_file(path.join(HOLDER_FILE));
        let store = Store {
            path: path.to_path_buf(),
            db,
            vector_files,
            vector_live: Default::default(),
            docs,
            index,
            holder_file: None,
        };
        match store.repair_pending() {
            // The pending marks stay: `check` reports them, `reindex` clears them, and the
            // commands that need the index say it is damaged.
            Ok(_) | Err(Error::IndexDamaged { .. }) => {}
            Err(e) => return Err(full(e)),
        }
        let summary = match (migrate_from, migrate) {
            (Some(from), Some(progress)) => Some(
                store
                    .migrate_v1(&mut |done, total| progress(from, done, total))
                    .map_err(full)?,
            ),
            _ => {
                store.repair_vector_files().map_err(full)?;
                None
            }
        };
        Ok((store, summary))
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The search index (opened on first use; its searches fail with
    /// [`Error::IndexDamaged`] when it is damaged).
    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    /// Ids of every batch written to sled but not yet committed to the index.
    fn pending_ids(&self) -> Result<Vec<ExampleId>> {
        let mut ids = Vec::new();
        for v in self.db.scan_prefix([P_PENDING]).values() {
            ids.extend(decode::<Vec<ExampleId>>(&v?, "pending ids")?);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn clear_pending(&self) -> Result<()> {
        let mut clear = sled::Batch::default();
        for k in self.db.scan_prefix([P_PENDING]).keys() {
            clear.remove(k?);
        }
        self.db.apply_batch(clear)?;
        self.db.flush()?;
        Ok(())
    }

    /// Reindexes examples a crashed writer left pending. Returns how many.
    fn repair_pending(&self) -> Result<usize> {
        let ids = self.pending_ids()?;
        if !ids.is_empty() {
            self.index_ids(&ids)?;
        }
        Ok(ids.len())
    }

    /// Mirrors the given examples (as sled now holds them) into the index, then clears the
    /// pending marks.
    fn index_ids(&self, ids: &[ExampleId]) -> Result<()> {
        // One index commit per chunk: memory stays bounded (an example's knowledge is read
        // for it), and the marks are cleared only once every chunk is in.
        for chunk in ids.chunks(INDEX_CHUNK) {
            let mut items = Vec::with_capacity(chunk.len());
            for &id in chunk {
                let ex = self.example(id)?;
                let kn = match ex {
                    Some(_) => self.knowledge(id)?,
                    None => Vec::new(),
                };
                items.push((id, ex, kn));
            }
            self.index.update(
                items
                    .iter()
                    .map(|(id, ex, kn)| (*id, ex.as_ref().map(|e| (e, kn.as_slice())))),
            )?;
        }
        self.clear_pending()
    }

    /// Applies `batch` with a pending mark for `ids` atomically, flushes, then indexes `ids`.
    /// Each batch gets its own pending key (`p` + a sled-generated sequence number), so marking
    /// is O(batch) and a crash leaves exactly the unindexed batches behind.
    fn commit(&self, batch: sled::Batch, ids: &[ExampleId]) -> Result<()> {
        self.commit_with(batch, ids, true, &[], &[])
    }

    /// [`Store::commit`], optionally deferring the index, removing vectors (`removed`: (vector
    /// file key, example id), as [`Store::vector_keys_of`] gives them) by tombstones and
    /// writing `doc_ops` (example id → document record, `None` to remove) to the docs tree in
    /// the same atomic write (a sled transaction over the three trees).
    fn commit_with(
        &self,
        mut batch: sled::Batch,
        ids: &[ExampleId],
        index_now: bool,
        removed: &[(Vec<u8>, ExampleId)],
        doc_ops: &[(ExampleId, Option<Vec<u8>>)],
    ) -> Result<()> {
        if !ids.is_empty() {
            batch.insert(&key_id(P_PENDING, self.db.generate_id()?), encode(&ids));
        }
        if removed.is_empty() && doc_ops.is_empty() {
            self.db.apply_batch(batch)?;
        } else {
            use sled::transaction::{ConflictableTransactionError, TransactionError};
            use sled::Transactional;
            let main: &sled::Tree = &self.db;
            // No vector batch may commit between reading a file's row count and the tombstone.
            let _writer = (!removed.is_empty())
                .then(|| self.vector_live.lock().unwrap_or_else(|e| e.into_inner()));
            (main, &self.vector_files, &self.docs)
                .transaction(|(m, v, d)| {
                    m.apply_batch(&batch)?;
                    for (file, id) in removed {
                        // The tombstone removes the rows the file holds now.
                        let rows = match v.get(file)? {
                            Some(meta) => decode::<flat::FileMeta>(&meta, "vector file record")
                                .map_err(|_| ConflictableTransactionError::Abort(()))?
                                .rows,
                            None => 0,
                        };
                        v.insert(vectors::tomb_key(file, *id), &rows.to_be_bytes())?;
                    }
                    for (id, rec) in doc_ops {
                        let key = id.to_be_bytes();
                        match rec {
                            Some(bytes) => d.insert(&key, bytes.as_slice())?,
                            None => d.remove(&key)?,
                        };
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => e.into(),
                    TransactionError::Abort(()) => Error::Corrupt(
                        "store transaction aborted: a vector file record does not decode (run `emoknow check`)".into(),
                    ),
                })?;
        }
        self.db.flush()?;
        if !removed.is_empty() {
            // The lock was released with the transaction's scope above; the tombstones are
            // durable, so the cache may forget the ids.
            self.forget_live(removed);
        }
        if index_now && !ids.is_empty() {
            self.index_ids(ids).map_err(|e| match e {
                // The records are durable and pending: say so, with the fix.
                Error::IndexDamaged { path, reason } => Error::IndexDamaged {
                    path,
                    reason: format!(
                        "{reason}; the new records were stored and `reindex` indexes them too"
                    ),
                },
                e => e,
            })?;
        }
        Ok(())
    }

    /// Indexes whatever is pending (see [`Store::put_knowledge_deferred`]). Returns how many
    /// examples were reindexed.
    pub fn sync_index(&self) -> Result<usize> {
        self.repair_pending()
    }

    /// Flushes sled to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.release_holder();
    }
}

/// What the holder record of the store at `store` says holds it (`description (pid N)`), when
/// there is one and its process is alive.
fn read_holder(store: &Path) -> Option<String> {
    let text = std::fs::read_to_string(store.join(HOLDER_FILE)).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let description = lines.next().unwrap_or("").trim();
    if !process_alive(pid) {
        return None;
    }
    Some(if description.is_empty() {
        format!("pid {pid}")
    } else {
        format!("{description} (pid {pid})")
    })
}

/// Whether a process with this pid exists (on other systems: assumed).
#[cfg(unix)]
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: i32) -> bool {
    true
}

/// Removes the partial snapshots (`db/snap.*.generating`) sled leaves when a disk fills, or
/// the process dies, while it writes one.
///
/// sled (0.34) writes a snapshot when it opens a database whose log moved on since the last
/// one: to `snap.<lsn>.generating`, synced, then renamed `snap.<lsn>`. At open it reads the
/// newest `snap.*` file and refuses to start ("Read corrupted data") when that file is short or
/// fails its checksum; a leftover `.generating` file sorts after the finished snapshot it was
/// replacing, so it is the one read. Such a file is never a snapshot sled finished; without it
/// sled starts from the previous snapshot and replays its log from there (the log holds the
/// data; snapshots only shorten recovery), exactly as if the earlier open had died just before
/// it began the snapshot. So removing it loses nothing.
///
/// Only with sled's lock on `db/db` (taken and released here): a process holding the store may
/// be writing a snapshot at this moment.
fn remove_partial_snapshots(store: &Path, db_dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(db_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(db_dir, e)),
    };
    let partial: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
        })
        .collect();
    if partial.is_empty() {
        return Ok(());
    }
    let db_file = db_dir.join("db");
    let _lock = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&db_file)
    {
        Ok(f) => {
            if !try_lock_exclusive(&f).map_err(|e| Error::io(&db_file, e))? {
                return Err(Error::StoreLocked {
                    path: store.to_path_buf(),
                    holder: read_holder(store),
                });
            }
            Some(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&db_file, e)),
    };
    for p in partial {
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// Opens the sled database in `db_dir` of the store at `path`. A lock held by a store just
/// dropped in this process (sled's flusher thread lets go of the file up to half a second after
/// the drop) or by a process just exiting is waited for, a second at most; one held by a
/// recorded long-lived holder (a server) is not.
fn open_sled(path: &Path, db_dir: &Path) -> sled::Result<sled::Db> {
    let locked = |e: &sled::Error| {
        matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("lock"))
    };
    let mut waited = std::time::Duration::ZERO;
    let step = std::time::Duration::from_millis(25);
    loop {
        match sled::Config::new().path(db_dir).open() {
            Err(e)
                if locked(&e)
                    && waited < std::time::Duration::from_secs(1)
                    && read_holder(path).is_none() =>
            {
                std::thread::sleep(step);
                waited += step;
            }
            out => return out,
        }
    }
}

/// Takes the advisory lock sled takes on its data file (`flock(LOCK_EX | LOCK_NB)`, as fs2
/// does); `Ok(false)` when another process holds it. Released when `f` is closed.
#[cfg(unix)]
fn try_lock_exclusive(f: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor owned by `f`, which outlives the call.
    let ret = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if ret == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Elsewhere sled's own lock (taken right after) is the only guard.
#[cfg(not(unix))]
fn try_lock_exclusive(_f: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

/// Ids of `examples` as a label lookup (a helper for trainers and evaluators).
pub fn labels_by_id(examples: &[Example]) -> HashMap<ExampleId, LabelSet> {
    examples.iter().map(|e| (e.id, e.labels)).collect()
}
