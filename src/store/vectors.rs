//! Embedding vectors in the store: one per (encoder id, what, example), f32, in flat
//! memory-mapped files (see `flat`), one pair of files per (encoder, what).
//!
//! sled holds each file pair's commit point (the `vector_files` tree: `f` + encoder id 0
//! `what` → [`flat`]'s `FileMeta`) and tombstones (`t` + encoder id 0 `what` 0 example id (BE
//! u64) → the file's committed row count when the example's vectors were removed: its rows
//! before that are dead). A row is live when it is the last row of its id and no tombstone
//! covers it, so re-embedding appends and supersedes, and removing (a replaced sentence) is a
//! sled write in the same transaction as the record change. `what` is `text` or `k:<source>`
//! (the sanitized knowledge of one source). Encoder descriptions live in the main tree under
//! `c`+encoder id. Nothing here knows how vectors are computed.

use super::flat::{self, FileMeta};
use super::records::ExampleId;
use super::{decode, encode, CheckReport, Store, P_ENCODER};
use crate::corpus::Split;
use crate::error::{Error, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

pub use crate::spec::EncoderInfo;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// What text a vector embeds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum What {
    /// The example's text.
    Text,
    /// The sanitized knowledge of this source.
    Knowledge(String),
}

impl What {
    fn key(&self) -> String {
        match self {
            What::Text => "text".to_string(),
            What::Knowledge(s) => format!("k:{s}"),
        }
    }

    fn from_key(s: &str) -> What {
        match s.strip_prefix("k:") {
            Some(src) => What::Knowledge(src.to_string()),
            None => What::Text,
        }
    }
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// Vector counts of one encoder (for `stats`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EncoderStats {
    /// The encoder.
    pub encoder: Option<EncoderInfo>,
    /// Vectors per `what`.
    pub vectors: BTreeMap<String, usize>,
}

/// Vectors for search: row `i` belongs to `ids[i]`. Read from the store, the rows stay in the
/// memory-mapped file (nothing is copied to the heap but the ids and a row map); built with
/// [`VectorSet::from_rows`], they live in a `Vec`.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    /// Example ids (ascending when read from the store). Row `i` is `ids[i]`'s.
    pub ids: Vec<ExampleId>,
    /// Dimension.
    pub dim: usize,
    /// Row `i`'s row in `data` (`None`: row `i` itself).
    rows: Option<Vec<usize>>,
    data: Rows,
    /// Whether `ids` is strictly ascending (then [`VectorSet::position`] bisects).
    sorted: bool,
}

/// Where a set's rows are.
#[derive(Debug, Clone)]
enum Rows {
    /// Shared: cloning a set does not copy its rows (nor does making one: no `Arc<[f32]>`).
    Heap(Arc<Vec<f32>>),
    /// A vector file's committed rows (its header included).
    Mapped(Arc<Mmap>),
}

impl Default for Rows {
    fn default() -> Rows {
        Rows::Heap(Arc::new(Vec::new()))
    }
}

impl VectorSet {
    /// An in-memory set: row `i` of `data` (row-major, `ids.len() × dim`) is `ids[i]`'s.
    pub fn from_rows(ids: Vec<ExampleId>, dim: usize, data: Vec<f32>) -> Result<VectorSet> {
        if data.len() != ids.len() * dim {
            return Err(Error::Invalid(format!(
                "{} floats for {} vectors of dimension {dim}",
                data.len(),
                ids.len()
            )));
        }
        let sorted = ids.windows(2).all(|w| w[0] < w[1]);
        Ok(VectorSet {
            ids,
            dim,
            rows: None,
            data: Rows::Heap(Arc::new(data)),
            sorted,
        })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether the rows are read in place from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, Rows::Mapped(_))
    }

    fn floats(&self) -> &[f32] {
        match &self.data {
            Rows::Heap(v) => v,
            // Checked when the set was made (`Store::vectors`); empty (and so an
            // out-of-bounds index below) only if that check were skipped.
            Rows::Mapped(m) => flat::floats(m).unwrap_or_default(),
        }
    }

    /// The vector of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let r = self.rows.as_ref().map_or(i, |rows| rows[i]);
        &self.floats()[r * self.dim..(r + 1) * self.dim]
    }

    /// Row index of example `id`.
    pub fn position(&self, id: ExampleId) -> Option<usize> {
        if self.sorted {
            self.ids.binary_search(&id).ok()
        } else {
            self.ids.iter().position(|&x| x == id)
        }
    }
}

/// The `vector_files` key of (encoder, what key): `f` + encoder 0 what.
fn meta_key(encoder: &str, what: &str) -> Vec<u8> {
    let mut k = vec![b'f'];
    k.extend_from_slice(encoder.as_bytes());
    k.push(0);
    k.extend_from_slice(what.as_bytes());
    k
}

/// (encoder, what key) of a meta key.
fn split_meta_key(k: &[u8]) -> Option<(String, String)> {
    let rest = k.strip_prefix(b"f")?;
    let a = rest.iter().position(|&b| b == 0)?;
    Some((
        std::str::from_utf8(&rest[..a]).ok()?.to_string(),
        std::str::from_utf8(&rest[a + 1..]).ok()?.to_string(),
    ))
}

/// The tombstone prefix of the file a meta key names: `t` + encoder 0 what 0.
fn tomb_prefix(meta_key: &[u8]) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(meta_key.get(1..).unwrap_or_default());
    k.push(0);
    k
}

pub(super) fn tomb_key(meta_key: &[u8], id: ExampleId) -> Vec<u8> {
    let mut k = tomb_prefix(meta_key);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn encoder_key(id: &str) -> Vec<u8> {
    let mut k = vec![P_ENCODER];
    k.extend_from_slice(id.as_bytes());
    k
}

fn u64_of(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(bytes) {
        *d = *s;
    }
    u64::from_be_bytes(b)
}

/// The live rows among `ids` (row order): the last row of each id that no tombstone (id → the
/// row count it removed) covers. Returns the ids ascending and, unless it is the identity,
/// each one's row.
fn live(
    ids: &[ExampleId],
    tombs: &HashMap<ExampleId, u64>,
) -> (Vec<ExampleId>, Option<Vec<usize>>) {
    if tombs.is_empty() && ids.windows(2).all(|w| w[0] < w[1]) {
        return (ids.to_vec(), None);
    }
    let mut pairs: Vec<(ExampleId, usize)> =
        ids.iter().enumerate().map(|(r, &id)| (id, r)).collect();
    pairs.sort_unstable();
    let mut out_ids = Vec::with_capacity(pairs.len());
    let mut out_rows = Vec::with_capacity(pairs.len());
    for (i, &(id, row)) in pairs.iter().enumerate() {
        if pairs.get(i + 1).is_some_and(|n| n.0 == id) {
            continue; // superseded by a later row
        }
        if tombs.get(&id).is_some_and(|&t| (row as u64) < t) {
            continue; // removed
        }
        out_ids.push(id);
        out_rows.push(row);
    }
    (out_ids, Some(out_rows))
}

/// Live id → row map of one file (the cache behind `has_vector`).
type LiveMap = HashMap<ExampleId, u64>;

impl Store {
    /// Registers an encoder (idempotent).
    pub fn put_encoder(&self, info: &EncoderInfo) -> Result<()> {
        self.db.insert(encoder_key(&info.id), encode(info))?;
        Ok(())
    }

    /// Encoders the store knows.
    pub fn encoders(&self) -> Result<Vec<EncoderInfo>> {
        self.db
            .scan_prefix([P_ENCODER])
            .values()
            .map(|v| decode(&v?, "encoder"))
            .collect()
    }

    /// Every file pair's (meta key, record).
    pub(super) fn file_metas(&self) -> Result<Vec<(Vec<u8>, FileMeta)>> {
        let mut out = Vec::new();
        for kv in self.vector_files.scan_prefix(b"f") {
            let (k, v) = kv?;
            out.push((k.to_vec(), decode(&v, "vector file record")?));
        }
        Ok(out)
    }

    fn file_meta(&self, key: &[u8]) -> Result<Option<FileMeta>> {
        self.vector_files
            .get(key)?
            .map(|v| decode(&v, "vector file record"))
            .transpose()
    }

    /// The files a meta key and record name.
    pub(super) fn pair_of(&self, key: &[u8], meta: &FileMeta) -> Result<flat::Pair> {
        let (enc, what) = split_meta_key(key).ok_or_else(|| {
            Error::Corrupt("malformed vector file record key (run `emoknow check`)".into())
        })?;
        Ok(flat::pair(&self.path, &enc, &what, meta.gen))
    }

    /// Tombstones of one file: example id → rows removed.
    fn tombstones(&self, key: &[u8]) -> Result<HashMap<ExampleId, u64>> {
        let p = tomb_prefix(key);
        let mut out = HashMap::new();
        for kv in self.vector_files.scan_prefix(&p) {
            let (k, v) = kv?;
            out.insert(u64_of(&k[p.len()..]), u64_of(&v));
        }
        Ok(out)
    }

    /// The live ids (ascending) and their rows of one file.
    fn live_of(&self, key: &[u8], meta: &FileMeta) -> Result<(Vec<ExampleId>, Option<Vec<usize>>)> {
        let ids = flat::read_ids(&self.pair_of(key, meta)?, meta)?;
        Ok(live(&ids, &self.tombstones(key)?))
    }

    /// Runs `f` on the cached live map of the file `key` (loaded on first use).
    fn with_live<T>(&self, key: &[u8], f: impl FnOnce(&mut LiveMap) -> T) -> Result<T> {
        let mut cache = self.vector_live.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(key) {
            let map = match self.file_meta(key)? {
                None => LiveMap::new(),
                Some(meta) => {
                    let (ids, rows) = self.live_of(key, &meta)?;
                    let rows = rows.unwrap_or_else(|| (0..ids.len()).collect());
                    ids.into_iter()
                        .zip(rows.into_iter().map(|r| r as u64))
                        .collect()
                }
            };
            cache.insert(key.to_vec(), map);
        }
        let mut empty = LiveMap::new();
        Ok(f(cache.get_mut(key).unwrap_or(&mut empty)))
    }

    /// At open: cuts bytes past every file's committed rows (a batch a crashed process never
    /// committed) and removes files sled names no more (a crashed first write or compaction).
    pub(super) fn repair_vector_files(&self) -> Result<()> {
        let mut keep = HashSet::new();
        for (key, meta) in self.file_metas()? {
            let p = self.pair_of(&key, &meta)?;
            flat::repair(&p, &meta)?;
            keep.insert(p.f32);
            keep.insert(p.ids);
        }
        flat::remove_leftovers(&self.path, &keep)?;
        Ok(())
    }

    /// Writes vectors as one batch: rows appended to the (encoder, what) files and fsynced,
    /// then committed in sled (flushed). A crash in between leaves rows past the commit point,
    /// cut at the next open. Each must have the encoder's dimension; a later vector of an id
    /// supersedes its earlier one.
    pub fn put_vectors(
        &self,
        encoder: &EncoderInfo,
        what: &What,
        items: &[(ExampleId, Vec<f32>)],
    ) -> Result<()> {
        let mut ids = Vec::with_capacity(items.len());
        let mut data = Vec::with_capacity(items.len() * encoder.dim);
        for (id, v) in items {
            if v.len() != encoder.dim {
                return Err(Error::Invalid(format!(
                    "vector for example {id} has dimension {}, encoder {} has {}",
                    v.len(),
                    encoder.name,
                    encoder.dim
                )));
            }
            ids.push(*id);
            data.extend_from_slice(v);
        }
        self.append_vectors(&encoder.id, encoder.dim, &what.key(), &ids, &data)
    }

    /// [`Store::put_vectors`] on raw rows (`ids.len() × dim` floats).
    pub(super) fn append_vectors(
        &self,
        encoder: &str,
        dim: usize,
        what: &str,
        ids: &[ExampleId],
        data: &[f32],
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = meta_key(encoder, what);
        let dim32 = u32::try_from(dim)
            .map_err(|_| Error::Invalid(format!("dimension {dim} is too large")))?;
        // Writers take the cache lock: one batch (or tombstone write) at a time.
        let mut cache = self.vector_live.lock().unwrap_or_else(|e| e.into_inner());
        let meta = self.file_meta(&key)?.unwrap_or(FileMeta {
            gen: 1,
            rows: 0,
            dim: dim32,
        });
        if meta.dim != dim32 {
            return Err(Error::Corrupt(format!(
                "vector files of encoder {encoder} ({what}) have dimension {}, the encoder {dim} (run `emoknow check`)",
                meta.dim
            )));
        }
        let p = flat::pair(&self.path, encoder, what, meta.gen);
        flat::append(&p, &meta, ids, data).map_err(|e| e.disk_full_at(&self.path))?;
        let next = FileMeta {
            rows: meta.rows + ids.len() as u64,
            ..meta
        };
        self.vector_files.insert(&key, encode(&next))?;
        self.vector_files.flush()?;
        if let Some(map) = cache.get_mut(&key) {
            for (i, &id) in ids.iter().enumerate() {
                map.insert(id, meta.rows + i as u64);
            }
        }
        Ok(())
    }

    /// The live vectors (any encoder, any `what`) of the given examples, as (file key,
    /// example id): the tombstones that remove them.
    pub(super) fn vector_keys_of(
        &self,
        ids: &HashSet<ExampleId>,
    ) -> Result<Vec<(Vec<u8>, ExampleId)>> {
        let mut out = Vec::new();
        if ids.is_empty() {
            return Ok(out);
        }
        for (key, _) in self.file_metas()? {
            let mut hits: Vec<ExampleId> = self.with_live(&key, |m| {
                ids.iter()
                    .filter(|id| m.contains_key(id))
                    .copied()
                    .collect()
            })?;
            hits.sort_unstable();
            out.extend(hits.into_iter().map(|id| (key.clone(), id)));
        }
        Ok(out)
    }

    /// Drops tombstoned ids from the live cache (after their tombstones are committed).
    pub(super) fn forget_live(&self, tombs: &[(Vec<u8>, ExampleId)]) {
        let mut cache = self.vector_live.lock().unwrap_or_else(|e| e.into_inner());
        for (key, id) in tombs {
            if let Some(m) = cache.get_mut(key) {
                m.remove(id);
            }
        }
    }

    /// Whether a vector exists.
    pub fn has_vector(&self, encoder: &str, what: &What, id: ExampleId) -> Result<bool> {
        self.with_live(&meta_key(encoder, &what.key()), |m| m.contains_key(&id))
    }

    /// All vectors of (encoder, what), restricted to `ids` when given. The rows are read in
    /// place from the memory-mapped file.
    pub fn vectors(
        &self,
        encoder: &EncoderInfo,
        what: &What,
        only: Option<&HashSet<ExampleId>>,
    ) -> Result<VectorSet> {
        let key = meta_key(&encoder.id, &what.key());
        let empty = VectorSet {
            dim: encoder.dim,
            sorted: true,
            ..Default::default()
        };
        let Some(meta) = self.file_meta(&key)? else {
            return Ok(empty);
        };
        let p = self.pair_of(&key, &meta)?;
        if meta.dim as usize != encoder.dim {
            return Err(Error::Corrupt(format!(
                "{} holds vectors of dimension {}, encoder {} has {} (run `emoknow check`)",
                p.f32.display(),
                meta.dim,
                encoder.name,
                encoder.dim
            )));
        }
        if meta.rows == 0 {
            return Ok(empty);
        }
        let (map, file_ids) = flat::open_rows(&p, &meta)?;
        if flat::floats(&map).is_none_or(|f| f.len() as u64 != meta.rows * meta.dim as u64)
            || file_ids.len() as u64 != meta.rows
        {
            return Err(Error::Corrupt(format!(
                "{} cannot be read as {} rows of {} f32 (run `emoknow check`)",
                p.f32.display(),
                meta.rows,
                meta.dim
            )));
        }
        let (mut ids, mut rows) = live(&file_ids, &self.tombstones(&key)?);
        if let Some(only) = only {
            let mut r = rows.unwrap_or_else(|| (0..ids.len()).collect());
            let mut kept = 0;
            for i in 0..ids.len() {
                if only.contains(&ids[i]) {
                    ids[kept] = ids[i];
                    r[kept] = r[i];
                    kept += 1;
                }
            }
            ids.truncate(kept);
            r.truncate(kept);
            rows = Some(r);
        }
        Ok(VectorSet {
            ids,
            dim: encoder.dim,
            rows,
            data: Rows::Mapped(Arc::new(map)),
            sorted: true,
        })
    }

    /// Looks an encoder up by id or unique id prefix or name.
    pub fn find_encoder(&self, key: &str) -> Result<EncoderInfo> {
        let all = self.encoders()?;
        let m: Vec<_> = all
            .iter()
            .filter(|e| e.id == key || e.id.starts_with(key) || e.name == key)
            .collect();
        // An encoder directory names the encoder whose vectors were made from it.
        let m = if m.is_empty() {
            match std::fs::canonicalize(key) {
                Ok(dir) => all
                    .iter()
                    .filter(|e| !e.dir.is_empty() && Path::new(&e.dir) == dir)
                    .collect(),
                Err(_) => m,
            }
        } else {
            m
        };
        match m.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NoEmbeddings {
                encoder: Some(key.to_string()),
            }),
            _ => Err(Error::AmbiguousEncoder {
                key: Some(key.to_string()),
                candidates: m.iter().map(|e| e.id.clone()).collect(),
            }),
        }
    }

    pub(super) fn encoder_stats(&self) -> Result<Vec<EncoderStats>> {
        let infos: HashMap<String, EncoderInfo> = self
            .encoders()?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let mut by: BTreeMap<String, EncoderStats> = BTreeMap::new();
        for (key, meta) in self.file_metas()? {
            let Some((enc, what)) = split_meta_key(&key) else {
                continue;
            };
            let n = self.live_of(&key, &meta)?.0.len();
            if n == 0 {
                continue;
            }
            let s = by.entry(enc.clone()).or_insert_with(|| EncoderStats {
                encoder: infos.get(&enc).cloned(),
                ..Default::default()
            });
            *s.vectors.entry(what).or_default() += n;
        }
        Ok(by.into_values().collect())
    }

    /// Checks every vector file (header, dimension, committed length), that every live vector
    /// belongs to a known example, and that each split with any text vector of an encoder has
    /// one for every example.
    pub(super) fn check_vectors(
        &self,
        split_of: &HashMap<ExampleId, Split>,
        r: &mut CheckReport,
    ) -> Result<()> {
        let infos: HashMap<String, EncoderInfo> = self
            .encoders()?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        // (encoder, split) → text vectors present
        let mut present: HashMap<(String, Split), usize> = HashMap::new();
        for (key, meta) in self.file_metas()? {
            let Some((enc, what)) = split_meta_key(&key) else {
                r.problems.push("malformed vector file record".into());
                continue;
            };
            let Some(info) = infos.get(&enc) else {
                r.problems
                    .push(format!("vectors of unregistered encoder {enc}"));
                continue;
            };
            if info.dim != meta.dim as usize {
                r.problems.push(format!(
                    "vector files {enc}/{what} have dimension {}, encoder {} has {} (run `emoknow reindex` to drop them, then `emoknow embed`)",
                    meta.dim, info.name, info.dim
                ));
                continue;
            }
            let p = self.pair_of(&key, &meta)?;
            if let Some(why) = flat::problem(&p, &meta)? {
                r.problems.push(format!(
                    "vector files of encoder {} ({what}): {why} (run `emoknow reindex` to keep the intact rows, then `emoknow embed` to recompute the rest)",
                    info.name
                ));
                continue;
            }
            let set = match self.vectors(info, &What::from_key(&what), None) {
                Ok(set) => set,
                Err(e) => {
                    r.problems.push(e.full_message());
                    continue;
                }
            };
            r.vectors += set.len();
            let mut unknown = Vec::new();
            for &id in &set.ids {
                match split_of.get(&id) {
                    None => unknown.push(id),
                    Some(&sp) if What::from_key(&what) == What::Text => {
                        *present.entry((enc.clone(), sp)).or_default() += 1;
                    }
                    Some(_) => {}
                }
            }
            if !unknown.is_empty() {
                r.problems.push(format!(
                    "{} vector(s) of {enc}/{what} for unknown examples, e.g. {:?}",
                    unknown.len(),
                    &unknown[..unknown.len().min(5)]
                ));
            }
        }
        let mut per_split: HashMap<Split, usize> = HashMap::new();
        for sp in split_of.values() {
            *per_split.entry(*sp).or_default() += 1;
        }
        for ((enc, sp), n) in present {
            let want = per_split.get(&sp).copied().unwrap_or(0);
            if n != want {
                r.problems.push(format!(
                    "encoder {} has text vectors for {n} of {want} {sp} examples (run `emoknow embed` again to finish)",
                    infos.get(&enc).map(|i| i.name.as_str()).unwrap_or(&enc)
                ));
            }
        }
        Ok(())
    }

    /// Repairs damaged vector files (`reindex`): a file pair that lost committed rows keeps
    /// the rows both files still hold whole; one that is missing or has a wrong header is
    /// dropped. Returns what was done, one line per pair (the lost vectors are recomputed by
    /// `embed`).
    pub fn repair_vectors(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let _writer = self.vector_live.lock().unwrap_or_else(|e| e.into_inner());
        for (key, meta) in self.file_metas()? {
            let p = self.pair_of(&key, &meta)?;
            if flat::problem(&p, &meta)?.is_none() {
                continue;
            }
            let name = split_meta_key(&key)
                .map(|(e, w)| format!("{e}/{w}"))
                .unwrap_or_default();
            let tombs = self.tombstones(&key)?;
            let mut batch = sled::Batch::default();
            match flat::intact_rows(&p, &meta)? {
                Some(kept) => {
                    let next = FileMeta { rows: kept, ..meta };
                    flat::repair(&p, &next)?;
                    batch.insert(key.as_slice(), encode(&next));
                    // A tombstone past the kept rows now covers them all.
                    for (id, t) in tombs {
                        if t > kept {
                            batch.insert(tomb_key(&key, id), &kept.to_be_bytes());
                        }
                    }
                    done.push(format!(
                        "vectors {name}: kept {kept} of {} committed rows",
                        meta.rows
                    ));
                }
                None => {
                    batch.remove(key.as_slice());
                    for id in tombs.keys() {
                        batch.remove(tomb_key(&key, *id));
                    }
                    done.push(format!(
                        "vectors {name}: files missing or damaged, dropped {} rows",
                        meta.rows
                    ));
                }
            }
            self.vector_files.apply_batch(batch)?;
            self.vector_files.flush()?;
            if self.file_meta(&key)?.is_none() {
                flat::remove(&p)?;
            }
        }
        drop(_writer);
        self.vector_live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(done)
    }

    /// Rewrites every vector file pair holding superseded or removed rows with its live rows
    /// only (the next generation, written beside and committed in sled, then the old one
    /// removed; a crash leaves one generation committed and the other removed at the next
    /// open). Calls `progress(done, total)` with rows written. Returns the rows dropped.
    ///
    /// `interrupted` is asked before each file pair: when it says yes, the pairs compacted so
    /// far are kept and the call errs with [`Error::Interrupted`] (a later call finishes).
    pub fn compact_vectors(
        &self,
        progress: &mut dyn FnMut(u64, u64),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<u64> {
        let metas = self.file_metas()?;
        let mut plans = Vec::new();
        for (key, meta) in metas {
            let (ids, rows) = self.live_of(&key, &meta)?;
            if ids.len() as u64 != meta.rows {
                plans.push((key, meta, ids, rows));
            }
        }
        let total: u64 = plans.iter().map(|p| p.2.len() as u64).sum();
        let mut done = 0;
        let mut dropped = 0;
        progress(0, total);
        let mut cache = self.vector_live.lock().unwrap_or_else(|e| e.into_inner());
        for (key, meta, ids, rows) in plans {
            if interrupted() {
                return Err(Error::Interrupted);
            }
            let old = self.pair_of(&key, &meta)?;
            let (map, _) = flat::open_rows(&old, &meta)?;
            let floats = flat::floats(&map)
                .ok_or_else(|| Error::Corrupt(format!("{} is not aligned", old.f32.display())))?;
            let (enc, what) = split_meta_key(&key).unwrap_or_default();
            let new = flat::pair(&self.path, &enc, &what, meta.gen + 1);
            let dim = meta.dim as usize;
            let mut next = FileMeta {
                gen: meta.gen + 1,
                rows: 0,
                dim: meta.dim,
            };
            for (i, chunk) in ids.chunks(4096).enumerate() {
                let mut data = Vec::with_capacity(chunk.len() * dim);
                for j in 0..chunk.len() {
                    let k = i * 4096 + j;
                    let r = rows.as_ref().map_or(k, |rows| rows[k]);
                    data.extend_from_slice(&floats[r * dim..(r + 1) * dim]);
                }
                flat::append(&new, &next, chunk, &data)?;
                next.rows += chunk.len() as u64;
                done += chunk.len() as u64;
                progress(done, total);
            }
            let mut batch = sled::Batch::default();
            if next.rows == 0 {
                batch.remove(key.as_slice());
            } else {
                batch.insert(key.as_slice(), encode(&next));
            }
            for t in self.vector_files.scan_prefix(tomb_prefix(&key)).keys() {
                batch.remove(t?);
            }
            self.vector_files.apply_batch(batch)?;
            self.vector_files.flush()?;
            cache.remove(&key);
            flat::remove(&old)?;
            dropped += meta.rows - next.rows;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_rows_take_the_last_row_and_respect_tombstones() {
        let (ids, rows) = live(&[1, 2, 3], &HashMap::new());
        assert_eq!((ids, rows), (vec![1, 2, 3], None));
        // 2 re-embedded (row 3 supersedes row 1); 1 removed after 4 rows, 3 after 2.
        let tombs = HashMap::from([(1, 4), (3, 2)]);
        let (ids, rows) = live(&[1, 2, 3, 2, 5, 1], &tombs);
        assert_eq!(ids, vec![1, 2, 3, 5]);
        assert_eq!(rows, Some(vec![5, 3, 2, 4]));
    }

    #[test]
    fn in_memory_sets_keep_their_order() {
        let s = VectorSet::from_rows(vec![9, 3], 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.row(0), &[1.0, 2.0]);
        assert_eq!(s.position(3), Some(1));
        assert!(VectorSet::from_rows(vec![1], 2, vec![1.0]).is_err());
    }
}
