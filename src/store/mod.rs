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
//! indexing,
//! `c`+encoder id encoder info. Vectors live in the `vectors` tree (see [`vectors`]).

pub mod index;
pub mod records;
mod runs;
pub mod vectors;

use crate::corpus::{Row, Split};
use crate::error::{Error, Result};
use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use records::{Example, ExampleId, Knowledge, KnowledgeKind, Missing, Origin};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use index::{DocHit, Filter, HitKind, SearchIndex};
pub use runs::fingerprint;

/// Version of the on-disk format; bumped on any change to the records or key layout.
pub const FORMAT_VERSION: u32 = 1;

const META_VERSION: &[u8] = b"m/version";
const P_EXAMPLE: u8 = b'e';
const P_KNOWLEDGE: u8 = b'k';
const P_MISSING: u8 = b'x';
const P_ORIGIN: u8 = b'o';
const P_PENDING: u8 = b'p';
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
        .map_err(|e| Error::Corrupt(format!("{what}: {e}")))
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

/// How an ingest went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    /// New examples.
    pub added: usize,
    /// Existing examples whose labels or split changed (same sentence).
    pub updated: usize,
    /// Existing examples whose sentence was replaced (`--replace`).
    pub replaced: usize,
    /// Rows identical to what the store held.
    pub unchanged: usize,
    /// Knowledge and missing records of replaced sentences, dropped.
    pub dropped_knowledge: usize,
    /// Neighbour lists (of any example) naming a replaced or relabelled example, dropped.
    pub dropped_neighbour_lists: usize,
    /// Vectors of replaced sentences, dropped.
    pub dropped_vectors: usize,
}

/// One example with its knowledge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The example.
    #[serde(flatten)]
    pub example: Example,
    /// Its knowledge, by source name.
    pub knowledge: Vec<Knowledge>,
}

/// What `query` asks for.
#[derive(Debug, Clone, Default)]
pub struct QuerySpec {
    /// Filters (emotions, split, source).
    pub filter: Filter,
    /// Keyword; tokenized with the index's tokenizer, every token must match.
    pub keyword: Option<String>,
    /// Maximum examples returned.
    pub limit: usize,
}

/// A query result.
#[derive(Debug, Clone, Serialize)]
pub struct QueryHit {
    /// BM25 score, when a keyword was given.
    pub score: Option<f32>,
    /// Where the keyword matched (`text` or `knowledge`).
    pub matched: Option<&'static str>,
    /// The example and its knowledge.
    #[serde(flatten)]
    pub entry: Entry,
}

/// Counts by split, label, source and label-set size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Store directory.
    pub path: String,
    /// All examples.
    pub examples: usize,
    /// Examples per split.
    pub by_split: BTreeMap<String, usize>,
    /// Examples carrying each label, per split (`label → split → count`).
    pub by_label: BTreeMap<String, BTreeMap<String, usize>>,
    /// Examples by number of labels (`"1"`, `"2"`, …).
    pub label_set_sizes: BTreeMap<String, usize>,
    /// Per knowledge source: records, missing, and coverage per split.
    pub sources: BTreeMap<String, SourceStats>,
    /// Stored vectors per encoder.
    pub encoders: Vec<vectors::EncoderStats>,
}

/// Knowledge counts of one source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStats {
    /// Kind (`rationale`, `neighbours`).
    pub kind: String,
    /// Knowledge records.
    pub records: usize,
    /// Examples recorded as missing (nan, empty, unparseable).
    pub missing: usize,
    /// Records per prompt kind (blind, guided, imported, computed).
    pub by_prompt: BTreeMap<String, usize>,
    /// Fraction of each split's examples with a record.
    pub coverage: BTreeMap<String, f64>,
    /// For neighbours: the last retrieval stopped part-way (rerun it to resume).
    pub partial: bool,
    /// For neighbours: how they were retrieved (absent for neighbours stored before it was
    /// recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<records::NeighbourSpec>,
}

/// The result of `check`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Examples in sled.
    pub examples: usize,
    /// Knowledge records in sled.
    pub knowledge: usize,
    /// Example documents in the index.
    pub indexed_examples: u64,
    /// Rationale documents in the index (neighbour lists are not indexed).
    pub indexed_knowledge: u64,
    /// Vectors verified.
    pub vectors: usize,
    /// Everything found wrong; empty means the store is consistent.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An open store. Holds sled's exclusive lock: one process per store.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    vectors: sled::Tree,
    index: SearchIndex,
}

impl Store {
    /// Opens the store at `path`, creating it if absent. Repairs the index if a previous
    /// process died between writing sled and committing the index.
    ///
    /// Errors: [`Error::StoreLocked`] when another process has it open,
    /// [`Error::StoreVersion`] for a store of another format.
    pub fn open_or_create(path: &Path) -> Result<Store> {
        Store::open_impl(path, true)
    }

    /// Opens an existing store; [`Error::NoStore`] when `path` holds none.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_impl(path, false)
    }

    fn open_impl(path: &Path, create: bool) -> Result<Store> {
        let db_dir = path.join("db");
        if !create && !db_dir.join("conf").exists() {
            return Err(Error::NoStore {
                path: path.to_path_buf(),
            });
        }
        let full = |e: Error| e.disk_full_at(path);
        std::fs::create_dir_all(path).map_err(|e| full(Error::io(path, e)))?;
        remove_partial_snapshots(path, &db_dir)?;
        let db = sled::Config::new()
            .path(&db_dir)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    Error::StoreLocked {
                        path: path.to_path_buf(),
                    }
                }
                e => full(e.into()),
            })?;
        match db.get(META_VERSION)? {
            Some(v) => {
                let found =
                    u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                        Error::Corrupt("format version is not 4 bytes".to_string())
                    })?);
                if found != FORMAT_VERSION {
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
        let vectors = db.open_tree("vectors").map_err(|e| full(e.into()))?;
        // The index is opened on first use; with records in sled, a missing one is damaged.
        let has_examples = db.scan_prefix([P_EXAMPLE]).next().is_some();
        let index = SearchIndex::new(&path.join("index"), has_examples).map_err(full)?;
        let store = Store {
            path: path.to_path_buf(),
            db,
            vectors,
            index,
        };
        match store.repair_pending() {
            // The pending marks stay: `check` reports them, `reindex` clears them, and the
            // commands that need the index say it is damaged.
            Ok(_) | Err(Error::IndexDamaged { .. }) => {}
            Err(e) => return Err(full(e)),
        }
        Ok(store)
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
        let mut items = Vec::with_capacity(ids.len());
        for &id in ids {
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
        self.clear_pending()
    }

    /// Applies `batch` with a pending mark for `ids` atomically, flushes, then indexes `ids`.
    /// Each batch gets its own pending key (`p` + a sled-generated sequence number), so marking
    /// is O(batch) and a crash leaves exactly the unindexed batches behind.
    fn commit(&self, batch: sled::Batch, ids: &[ExampleId]) -> Result<()> {
        self.commit_with(batch, ids, true, &[])
    }

    /// [`Store::commit`], optionally deferring the index, and removing `vector_keys` from the
    /// vectors tree in the same atomic write (a sled transaction over both trees).
    fn commit_with(
        &self,
        mut batch: sled::Batch,
        ids: &[ExampleId],
        index_now: bool,
        vector_keys: &[sled::IVec],
    ) -> Result<()> {
        if !ids.is_empty() {
            batch.insert(&key_id(P_PENDING, self.db.generate_id()?), encode(&ids));
        }
        if vector_keys.is_empty() {
            self.db.apply_batch(batch)?;
        } else {
            use sled::transaction::{ConflictableTransactionError, TransactionError};
            use sled::Transactional;
            let main: &sled::Tree = &self.db;
            (main, &self.vectors)
                .transaction(|(m, v)| {
                    m.apply_batch(&batch)?;
                    for k in vector_keys {
                        v.remove(k.clone())?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => Error::Db(e),
                    TransactionError::Abort(()) => {
                        Error::Corrupt("store transaction aborted".into())
                    }
                })?;
        }
        self.db.flush()?;
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

    // ----- examples -------------------------------------------------------------------------

    /// Writes rows read from the file `file` with their splits, as one atomic batch.
    ///
    /// `file` is the file's identity: the CLI passes its canonical path, so two files that
    /// share a name in different folders are different files. Ids: a row's own id when the
    /// file has an id column, else the id this file's row ordinal got on an earlier ingest,
    /// else the next free id. So re-ingesting a file changes nothing.
    ///
    /// Nothing is overwritten without `replace`: a row whose id holds another sentence (from
    /// any file), or any other example from another file, is refused and nothing is written.
    /// A row from the same file may change its labels or split. When a sentence is replaced,
    /// what was derived from the old text goes in the same atomic write: its knowledge and
    /// missing records, its vectors, and every neighbour list that names it; a label change
    /// drops the neighbour lists that name it (they carry its labels). The summary counts them.
    pub fn ingest(
        &self,
        file: &str,
        rows: &[Row],
        splits: &[Split],
        replace: bool,
    ) -> Result<IngestSummary> {
        if rows.len() != splits.len() {
            return Err(Error::Invalid(format!(
                "{} rows but {} splits",
                rows.len(),
                splits.len()
            )));
        }
        index::warm_up();
        // Stores written before files were told apart by path keyed rows by file name.
        let legacy_name = Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != file);
        let mut next_id = match self.max_example_id()? {
            None => Some(1),
            Some(m) => m.checked_add(1),
        };
        let mut batch = sled::Batch::default();
        let mut changed = Vec::new();
        let mut text_changed: HashSet<ExampleId> = HashSet::new();
        let mut labels_changed: HashSet<ExampleId> = HashSet::new();
        let mut summary = IngestSummary::default();
        let mut seen: HashMap<ExampleId, u64> = HashMap::new();
        let mut conflicts = Vec::new();
        for (ordinal, (row, &split)) in rows.iter().zip(splits).enumerate() {
            let id = match row.id {
                Some(id) => id,
                None => {
                    let ok = origin_key(file, ordinal as u64);
                    let known = match self.db.get(&ok)? {
                        Some(v) => Some(v),
                        None => match &legacy_name {
                            Some(n) => self.db.get(origin_key(n, ordinal as u64))?,
                            None => None,
                        },
                    };
                    match known {
                        Some(v) => decode::<u64>(&v, "origin")?,
                        None => {
                            let Some(id) = next_id else {
                                return Err(Error::input(
                                    file,
                                    row.line as usize,
                                    format!(
                                        "no free example id: the store already holds id {} (the largest); give this file an ID column",
                                        u64::MAX
                                    ),
                                ));
                            };
                            next_id = id.checked_add(1);
                            batch.insert(ok, encode(&id));
                            id
                        }
                    }
                }
            };
            if let Some(first) = seen.insert(id, row.line) {
                conflicts.push((
                    row.line as usize,
                    format!("ID {id} already used at line {first} of this file"),
                ));
                continue;
            }
            let ex = Example {
                id,
                text: row.text.clone(),
                labels: row.labels,
                split,
                origin: Origin {
                    file: file.to_string(),
                    line: row.line,
                },
            };
            let Some(old) = self.example(id)? else {
                summary.added += 1;
                batch.insert(&key_id(P_EXAMPLE, id), encode(&ex));
                changed.push(id);
                continue;
            };
            if old == ex
                || (old.text == ex.text && old.labels == ex.labels && old.split == ex.split)
            {
                // The same example (from this file, or the same row in another file).
                summary.unchanged += 1;
                continue;
            }
            let same_file =
                old.origin.file == file || legacy_name.as_deref() == Some(&old.origin.file);
            if !replace {
                let why = if old.text != ex.text {
                    format!(
                        "ID {id} already holds a different sentence from {}:{} ({}); replacing it drops what was derived from the old sentence (rationales, vectors, neighbour lists): pass --replace to do so",
                        old.origin.file,
                        old.origin.line,
                        crate::error::snippet(&old.text, 40)
                    )
                } else if !same_file {
                    format!(
                        "ID {id} already holds this sentence from {}:{} with other labels or split (ids must be unique across files; pass --replace to overwrite)",
                        old.origin.file, old.origin.line
                    )
                } else {
                    String::new()
                };
                if !why.is_empty() {
                    conflicts.push((row.line as usize, why));
                    continue;
                }
            }
            if old.text != ex.text {
                text_changed.insert(id);
                summary.replaced += 1;
            } else {
                summary.updated += 1;
            }
            if old.text != ex.text || old.labels != ex.labels {
                labels_changed.insert(id);
            }
            batch.insert(&key_id(P_EXAMPLE, id), encode(&ex));
            changed.push(id);
        }
        if !conflicts.is_empty() {
            return Err(Error::InputBatch {
                path: PathBuf::from(file),
                errors: conflicts,
            });
        }
        let vector_keys = self.drop_derived(
            &text_changed,
            &labels_changed,
            &mut batch,
            &mut changed,
            &mut summary,
        )?;
        changed.sort_unstable();
        changed.dedup();
        self.commit_with(batch, &changed, true, &vector_keys)?;
        Ok(summary)
    }

    /// Adds to `batch` the removal of what was derived from replaced sentences (`text`: their
    /// knowledge and missing records) and from changed gold labels (`labels`, a superset of
    /// `text`: every neighbour list naming one of them). Returns the vector keys to remove in
    /// the same write; examples whose knowledge changes join `changed` (to be reindexed).
    fn drop_derived(
        &self,
        text: &HashSet<ExampleId>,
        labels: &HashSet<ExampleId>,
        batch: &mut sled::Batch,
        changed: &mut Vec<ExampleId>,
        summary: &mut IngestSummary,
    ) -> Result<Vec<sled::IVec>> {
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        for &id in text {
            for prefix in [P_KNOWLEDGE, P_MISSING] {
                for k in self.db.scan_prefix(key_id(prefix, id)).keys() {
                    batch.remove(k?);
                    summary.dropped_knowledge += 1;
                }
            }
        }
        for kv in self.db.scan_prefix([P_KNOWLEDGE]) {
            let (k, v) = kv?;
            let owner = id_from_key(&k);
            if text.contains(&owner) {
                continue; // dropped above
            }
            let kn: Knowledge = decode(&v, "knowledge")?;
            if kn.kind == KnowledgeKind::Neighbours
                && kn.neighbours.iter().any(|n| labels.contains(&n.id))
            {
                batch.remove(k);
                summary.dropped_neighbour_lists += 1;
                changed.push(owner);
            }
        }
        let keys = self.vector_keys_of(text)?;
        summary.dropped_vectors = keys.len();
        Ok(keys)
    }

    fn max_example_id(&self) -> Result<Option<ExampleId>> {
        Ok(self
            .db
            .scan_prefix([P_EXAMPLE])
            .keys()
            .next_back()
            .transpose()?
            .map(|k| id_from_key(&k)))
    }

    /// The example with this id.
    pub fn example(&self, id: ExampleId) -> Result<Option<Example>> {
        self.db
            .get(key_id(P_EXAMPLE, id))?
            .map(|v| decode(&v, "example"))
            .transpose()
    }

    /// All examples (of `split`, when given), by id.
    pub fn examples(&self, split: Option<Split>) -> Result<Vec<Example>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([P_EXAMPLE]) {
            let (_, v) = kv?;
            let ex: Example = decode(&v, "example")?;
            if split.is_none_or(|s| s == ex.split) {
                out.push(ex);
            }
        }
        Ok(out)
    }

    /// Number of examples.
    pub fn count_examples(&self) -> usize {
        self.db.scan_prefix([P_EXAMPLE]).count()
    }

    // ----- knowledge ------------------------------------------------------------------------

    /// Writes knowledge and missing records as one atomic batch (each replaces the record of
    /// the same example and source), then indexes. Errors with [`Error::NotFound`] if any
    /// record names an example the store does not hold; nothing is written then.
    pub fn put_knowledge(&self, knowledge: &[Knowledge], missing: &[Missing]) -> Result<()> {
        index::warm_up();
        self.put_knowledge_with(knowledge, missing, true)
    }

    /// [`Store::put_knowledge`] that leaves indexing for a later [`Store::sync_index`] (or the
    /// next open): sled holds the records durably at once, the search index catches up in bulk.
    /// Streams of small writes (annotation) use it, so each answer is on disk when it arrives.
    pub fn put_knowledge_deferred(
        &self,
        knowledge: &[Knowledge],
        missing: &[Missing],
    ) -> Result<()> {
        self.put_knowledge_with(knowledge, missing, false)
    }

    fn put_knowledge_with(
        &self,
        knowledge: &[Knowledge],
        missing: &[Missing],
        index_now: bool,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut ids = Vec::new();
        let mut absent = Vec::new();
        let mut checked: HashSet<ExampleId> = HashSet::new();
        for id in knowledge
            .iter()
            .map(|k| k.example_id)
            .chain(missing.iter().map(|m| m.example_id))
        {
            if checked.insert(id) && !self.db.contains_key(key_id(P_EXAMPLE, id))? {
                absent.push(id);
            }
        }
        if !absent.is_empty() {
            absent.sort_unstable();
            let shown: Vec<String> = absent.iter().take(10).map(|i| i.to_string()).collect();
            return Err(Error::NotFound(format!(
                "{} example id(s) not in the store (first: {}); ingest the corpus first or check --first-id",
                absent.len(),
                shown.join(", ")
            )));
        }
        for k in knowledge {
            batch.insert(
                key_id_source(P_KNOWLEDGE, k.example_id, &k.source),
                encode(k),
            );
            batch.remove(key_id_source(P_MISSING, k.example_id, &k.source));
            ids.push(k.example_id);
        }
        for m in missing {
            batch.insert(key_id_source(P_MISSING, m.example_id, &m.source), encode(m));
            // A missing value replaces older knowledge of that source.
            let kk = key_id_source(P_KNOWLEDGE, m.example_id, &m.source);
            if self.db.contains_key(&kk)? {
                batch.remove(kk);
                ids.push(m.example_id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        self.commit_with(batch, &ids, index_now, &[])
    }

    /// Knowledge about an example, all sources.
    pub fn knowledge(&self, id: ExampleId) -> Result<Vec<Knowledge>> {
        self.db
            .scan_prefix(key_id(P_KNOWLEDGE, id))
            .values()
            .map(|v| decode(&v?, "knowledge"))
            .collect()
    }

    /// Knowledge about an example from one source.
    pub fn knowledge_of(&self, id: ExampleId, source: &str) -> Result<Option<Knowledge>> {
        self.db
            .get(key_id_source(P_KNOWLEDGE, id, source))?
            .map(|v| decode(&v, "knowledge"))
            .transpose()
    }

    /// Whether `source` has already been tried on `id` (knowledge or a missing record).
    pub fn has_attempt(&self, id: ExampleId, source: &str) -> Result<bool> {
        Ok(self
            .db
            .contains_key(key_id_source(P_KNOWLEDGE, id, source))?
            || self.db.contains_key(key_id_source(P_MISSING, id, source))?)
    }

    /// Every knowledge record (of `source`, when given), by example id.
    pub fn all_knowledge(&self, source: Option<&str>) -> Result<Vec<Knowledge>> {
        let mut out = Vec::new();
        for v in self.db.scan_prefix([P_KNOWLEDGE]).values() {
            let k: Knowledge = decode(&v?, "knowledge")?;
            if source.is_none_or(|s| s == k.source) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Every missing record (of `source`, when given).
    pub fn all_missing(&self, source: Option<&str>) -> Result<Vec<Missing>> {
        let mut out = Vec::new();
        for v in self.db.scan_prefix([P_MISSING]).values() {
            let m: Missing = decode(&v?, "missing")?;
            if source.is_none_or(|s| s == m.source) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Deletes every knowledge and missing record of `source`. Returns how many.
    pub fn delete_source(&self, source: &str) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut ids = Vec::new();
        let mut n = 0;
        for prefix in [P_KNOWLEDGE, P_MISSING] {
            for k in self.db.scan_prefix([prefix]).keys() {
                let k = k?;
                if &k[9..] == source.as_bytes() {
                    batch.remove(k.clone());
                    if prefix == P_KNOWLEDGE {
                        ids.push(id_from_key(&k));
                    }
                    n += 1;
                }
            }
        }
        self.commit(batch, &ids)?;
        self.delete_neighbour_run(source)?;
        Ok(n)
    }

    /// An example with its knowledge.
    pub fn entry(&self, id: ExampleId) -> Result<Option<Entry>> {
        Ok(match self.example(id)? {
            Some(example) => Some(Entry {
                knowledge: self.knowledge(id)?,
                example,
            }),
            None => None,
        })
    }

    // ----- query ----------------------------------------------------------------------------

    /// Examples matching the spec: with a keyword, best BM25 first (text or knowledge must
    /// contain every keyword token); without, by id.
    pub fn query(&self, spec: &QuerySpec) -> Result<Vec<QueryHit>> {
        let tokens = spec
            .keyword
            .as_deref()
            .map(index::tokenize)
            .unwrap_or_default();
        if spec.keyword.is_some() {
            if tokens.is_empty() {
                return Ok(Vec::new());
            }
            let hits = self
                .index
                .search_keyword(&tokens, &spec.filter, spec.limit)?;
            let mut out = Vec::with_capacity(hits.len());
            for h in hits {
                if let Some(entry) = self.entry(h.id)? {
                    out.push(QueryHit {
                        score: Some(h.score),
                        matched: Some(match h.kind {
                            HitKind::Text => "text",
                            HitKind::Knowledge => "knowledge",
                        }),
                        entry,
                    });
                }
            }
            return Ok(out);
        }
        let f = &spec.filter;
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([P_EXAMPLE]) {
            if out.len() >= spec.limit {
                break;
            }
            let (_, v) = kv?;
            let ex: Example = decode(&v, "example")?;
            if !ex.labels.is_superset(f.emotions)
                || f.split.is_some_and(|s| s != ex.split)
                || f.exclude == Some(ex.id)
            {
                continue;
            }
            if let Some(src) = &f.source {
                if !self
                    .db
                    .contains_key(key_id_source(P_KNOWLEDGE, ex.id, src))?
                {
                    continue;
                }
            }
            let knowledge = self.knowledge(ex.id)?;
            out.push(QueryHit {
                score: None,
                matched: None,
                entry: Entry {
                    example: ex,
                    knowledge,
                },
            });
        }
        Ok(out)
    }

    // ----- stats, check, reindex ------------------------------------------------------------

    /// Counts by split, label, source and label-set size, knowledge coverage, vectors.
    pub fn stats(&self) -> Result<Stats> {
        let examples = self.examples(None)?;
        let mut s = Stats {
            path: self.path.display().to_string(),
            examples: examples.len(),
            ..Default::default()
        };
        let mut split_of: HashMap<ExampleId, Split> = HashMap::new();
        for ex in &examples {
            *s.by_split.entry(ex.split.name().into()).or_default() += 1;
            for e in ex.labels.iter() {
                *s.by_label
                    .entry(e.name().into())
                    .or_default()
                    .entry(ex.split.name().into())
                    .or_default() += 1;
            }
            *s.label_set_sizes
                .entry(ex.labels.len().to_string())
                .or_default() += 1;
            split_of.insert(ex.id, ex.split);
        }
        let mut covered: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
        for k in self.all_knowledge(None)? {
            let src = s.sources.entry(k.source.clone()).or_default();
            src.kind = k.kind.name().into();
            src.records += 1;
            *src.by_prompt
                .entry(k.prompt_kind.name().into())
                .or_default() += 1;
            if let Some(sp) = split_of.get(&k.example_id) {
                *covered
                    .entry(k.source.clone())
                    .or_default()
                    .entry(sp.name().into())
                    .or_default() += 1;
            }
        }
        for m in self.all_missing(None)? {
            s.sources.entry(m.source.clone()).or_default().missing += 1;
        }
        for (name, src) in s.sources.iter_mut() {
            for (split, n) in &s.by_split {
                let c = covered
                    .get(name)
                    .and_then(|m| m.get(split))
                    .copied()
                    .unwrap_or(0);
                src.coverage.insert(split.clone(), c as f64 / *n as f64);
            }
        }
        for (name, run) in self.neighbour_runs()? {
            if let Some(src) = s.sources.get_mut(&name) {
                src.partial = !run.complete;
                src.retrieval = Some(run.spec);
            }
        }
        s.encoders = self.encoder_stats()?;
        Ok(s)
    }

    /// Verifies that sled decodes and the index agrees with it (counts and ids), and that
    /// every example of an embedded split has a vector of the right dimension.
    pub fn check(&self) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let mut ids = HashSet::new();
        let mut labels_per_emotion = [0usize; NUM_EMOTIONS];
        let mut split_of = HashMap::new();
        for kv in self.db.scan_prefix([P_EXAMPLE]) {
            let (k, v) = kv?;
            match decode::<Example>(&v, "example") {
                Ok(ex) => {
                    if ex.id != id_from_key(&k) {
                        r.problems.push(format!(
                            "example key {} holds id {}",
                            id_from_key(&k),
                            ex.id
                        ));
                    }
                    for e in ex.labels.iter() {
                        labels_per_emotion[e.index()] += 1;
                    }
                    split_of.insert(ex.id, ex.split);
                    ids.insert(ex.id);
                }
                Err(e) => r.problems.push(e.to_string()),
            }
        }
        r.examples = ids.len();
        let mut rationales = 0u64;
        for kv in self.db.scan_prefix([P_KNOWLEDGE]) {
            let (k, v) = kv?;
            match decode::<Knowledge>(&v, "knowledge") {
                Ok(kn) => {
                    if !ids.contains(&kn.example_id) {
                        r.problems.push(format!(
                            "knowledge of {} for example {} which does not exist",
                            kn.source, kn.example_id
                        ));
                    }
                    if kn.example_id != id_from_key(&k) {
                        r.problems.push("knowledge key and record disagree".into());
                    }
                    r.knowledge += 1;
                    if kn.kind == KnowledgeKind::Rationale {
                        rationales += 1;
                    }
                }
                Err(e) => r.problems.push(e.to_string()),
            }
        }
        let pending = self.pending_ids()?;
        if !pending.is_empty() {
            r.problems.push(format!(
                "{} example(s) pending indexing (run `emoknow reindex`)",
                pending.len()
            ));
        }
        match self.check_index(&ids, rationales, &labels_per_emotion, &mut r) {
            Ok(()) => {}
            Err(e @ Error::IndexDamaged { .. }) => r.problems.push(e.to_string()),
            Err(e) => return Err(e),
        }
        self.check_vectors(&split_of, &mut r)?;
        self.check_neighbour_runs(&mut r)?;
        Ok(r)
    }

    /// The index half of [`Store::check`]: reads every segment in full, then compares counts,
    /// ids and labels with sled's. [`Error::IndexDamaged`] when the index cannot be read.
    fn check_index(
        &self,
        ids: &HashSet<ExampleId>,
        rationales: u64,
        labels_per_emotion: &[usize; NUM_EMOTIONS],
        r: &mut CheckReport,
    ) -> Result<()> {
        let census = self.index.verify()?;
        r.indexed_examples = census.examples;
        r.indexed_knowledge = census.knowledge;
        if census.examples != r.examples as u64 {
            r.problems.push(format!(
                "index holds {} example documents, sled {} examples (run `emoknow reindex`)",
                census.examples, r.examples
            ));
        }
        if census.knowledge != rationales {
            r.problems.push(format!(
                "index holds {} rationale documents, sled {} rationales (run `emoknow reindex`)",
                census.knowledge, rationales
            ));
        }
        let missing: Vec<_> = ids.difference(&census.example_ids).take(5).collect();
        let extra: Vec<_> = census.example_ids.difference(ids).take(5).collect();
        if !missing.is_empty() {
            r.problems
                .push(format!("examples not in the index, e.g. {missing:?}"));
        }
        if !extra.is_empty() {
            r.problems.push(format!(
                "index documents for unknown examples, e.g. {extra:?}"
            ));
        }
        if !census.duplicate_ids.is_empty() {
            r.problems.push(format!(
                "examples indexed twice, e.g. {:?}",
                &census.duplicate_ids[..census.duplicate_ids.len().min(5)]
            ));
        }
        for e in Emotion::ALL {
            let n = self.index.count_label(e)?;
            if n != labels_per_emotion[e.index()] {
                r.problems.push(format!(
                    "label {e}: index {n} examples, sled {}",
                    labels_per_emotion[e.index()]
                ));
            }
        }
        Ok(())
    }

    /// Rebuilds the index from sled, whatever state it is in (missing, damaged or fine: it is
    /// derived data), and clears the pending marks. Returns (examples, knowledge) indexed.
    pub fn reindex(&self) -> Result<(usize, usize)> {
        let examples = self.examples(None)?;
        let mut by_id: HashMap<ExampleId, Vec<Knowledge>> = HashMap::new();
        let mut nk = 0;
        for k in self.all_knowledge(None)? {
            nk += 1;
            by_id.entry(k.example_id).or_default().push(k);
        }
        let empty = Vec::new();
        self.index.rebuild(
            examples
                .iter()
                .map(|e| (e, by_id.get(&e.id).unwrap_or(&empty).as_slice())),
        )?;
        self.clear_pending()
            .map_err(|e| e.disk_full_at(&self.path))?;
        Ok((examples.len(), nk))
    }

    /// Flushes sled to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
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
