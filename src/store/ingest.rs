//! Examples in the store: [`Store::ingest`] (ids, conflicts, `replace`, and dropping what
//! was derived from a replaced sentence or relabelled example, in the same atomic write) and
//! the example reads.

use super::records::{DocRecord, Example, ExampleId, Knowledge, KnowledgeKind, Origin};
use super::style::{StyleChoice, META_TEXT_STYLE, P_READ};
use super::{decode, encode, id_from_key, index, key_id, origin_key, Store};
use super::{P_EXAMPLE, P_KNOWLEDGE, P_MISSING};
use crate::corpus::{Row, Split};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// How an ingest went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    /// New examples.
    pub added: usize,
    /// Existing examples whose labels or split changed (same sentence).
    pub updated: usize,
    /// Existing examples whose sentence was replaced (`replace`).
    pub replaced: usize,
    /// Rows identical to what the store held.
    pub unchanged: usize,
    /// Knowledge and missing records of replaced sentences, dropped.
    pub dropped_knowledge: usize,
    /// Neighbour lists (of any example) naming a replaced or relabelled example, dropped.
    pub dropped_neighbour_lists: usize,
    /// Vectors of replaced sentences, dropped.
    pub dropped_vectors: usize,
    /// New or replaced sentences not written in the store's text style: stored as given, and
    /// normalized for the models that read them.
    pub normalized: usize,
    /// The text style this ingest recorded (the store's first), described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_style: Option<String>,
}

impl Store {
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
    ///
    /// Documents: a row with a document ([`Row::doc`]) gets a document record (its position:
    /// [`Row::position`], else its ordinal among the file's rows of that document), written in
    /// the same atomic write; a row without one belongs to the file's stream (in id order), and
    /// a record an earlier ingest gave its id is removed. A change of document alone counts as
    /// an update, like a change of split.
    ///
    /// The text style: see [`Store::ingest_with`]; this learns it from the rows when the
    /// store records none.
    pub fn ingest(
        &self,
        file: &str,
        rows: &[Row],
        splits: &[Split],
        replace: bool,
    ) -> Result<IngestSummary> {
        self.ingest_with(file, rows, splits, replace, &StyleChoice::Derive)
    }

    /// [`Store::ingest`], with a choice about the store's text style: learned from the rows
    /// (and the examples already stored) when the store records none, declared, or none (as
    /// written). The style is recorded in the same atomic write; a store keeps one. The texts
    /// a style was learned from define it and are read as given; any other new or replaced
    /// sentence is stored as given and, where its normalization into the style differs, with
    /// that read text for the models ([`Store::read_text`]).
    pub fn ingest_with(
        &self,
        file: &str,
        rows: &[Row],
        splits: &[Split],
        replace: bool,
        style: &StyleChoice,
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
        let mut replaceable = false;
        let mut doc_ops: Vec<(ExampleId, Option<Vec<u8>>)> = Vec::new();
        let mut doc_ordinals: HashMap<&str, u32> = HashMap::new();
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let (record, new_style) = self.style_for_ingest(style, file, &texts)?;
        if new_style {
            batch.insert(META_TEXT_STYLE, Self::style_bytes(&record)?);
            summary.text_style = Some(record.describe());
        }
        // The texts a style is learned from define it: those segmented as it says are read
        // as given; any other text is brought into it.
        let derived_now = new_style && *style == StyleChoice::Derive;
        let train_texts: Vec<&str> = rows
            .iter()
            .zip(splits)
            .filter(|(_, &s)| derived_now && s == Split::Train)
            .map(|(r, _)| r.text.as_str())
            .collect();
        let mut normalizer = None;
        let mut read_of = |text: &str| -> Result<Option<String>> {
            let Some(st) = record.style.as_ref() else {
                return Ok(None);
            };
            if derived_now && st.segments_like(text) {
                return Ok(None);
            }
            if normalizer.is_none() {
                normalizer = Some(crate::text::Normalizer::new(
                    st.clone(),
                    self.vocabulary_with(st, &train_texts)?,
                ));
            }
            Ok(normalizer
                .as_ref()
                .map(|n| n.normalize(text))
                .filter(|read| read != text))
        };
        for (ordinal, (row, &split)) in rows.iter().zip(splits).enumerate() {
            let want_doc = row.doc.as_deref().map(|d| {
                let n = doc_ordinals.entry(d).or_insert(0);
                let position = row.position.unwrap_or(*n);
                *n = n.saturating_add(1);
                DocRecord {
                    doc: d.to_string(),
                    position,
                }
            });
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
            let have_doc = self.doc_record(id)?;
            let doc_op = (have_doc != want_doc).then(|| (id, want_doc.as_ref().map(encode)));
            let Some(old) = self.example(id)? else {
                summary.added += 1;
                if let Some(read) = read_of(&ex.text)? {
                    summary.normalized += 1;
                    batch.insert(&key_id(P_READ, id), read.as_bytes());
                }
                batch.insert(&key_id(P_EXAMPLE, id), encode(&ex));
                changed.push(id);
                doc_ops.extend(doc_op);
                continue;
            };
            if old == ex
                || (old.text == ex.text && old.labels == ex.labels && old.split == ex.split)
            {
                // The same example (from this file, or the same row in another file).
                match doc_op {
                    Some(op) => {
                        summary.updated += 1;
                        doc_ops.push(op);
                    }
                    None => summary.unchanged += 1,
                }
                continue;
            }
            let same_file =
                old.origin.file == file || legacy_name.as_deref() == Some(&old.origin.file);
            if !replace {
                let why = if old.text != ex.text {
                    format!(
                        "ID {id} already holds a different sentence from {}:{} ({}); replacing it drops what was derived from the old sentence (rationales, vectors, neighbour lists)",
                        old.origin.file,
                        old.origin.line,
                        crate::error::snippet(&old.text, 40)
                    )
                } else if !same_file {
                    format!(
                        "ID {id} already holds this sentence from {}:{} with other labels or split (ids must be unique across files)",
                        old.origin.file, old.origin.line
                    )
                } else {
                    String::new()
                };
                if !why.is_empty() {
                    conflicts.push((row.line as usize, why));
                    replaceable = true;
                    continue;
                }
            }
            if old.text != ex.text {
                text_changed.insert(id);
                summary.replaced += 1;
                match read_of(&ex.text)? {
                    Some(read) => {
                        summary.normalized += 1;
                        batch.insert(&key_id(P_READ, id), read.as_bytes());
                    }
                    None => batch.remove(&key_id(P_READ, id)),
                }
            } else {
                summary.updated += 1;
            }
            if old.text != ex.text || old.labels != ex.labels {
                labels_changed.insert(id);
            }
            batch.insert(&key_id(P_EXAMPLE, id), encode(&ex));
            changed.push(id);
            doc_ops.extend(doc_op);
        }
        if !conflicts.is_empty() {
            return Err(Error::IdConflicts {
                path: PathBuf::from(file),
                errors: conflicts,
                replaceable,
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
        self.commit_with(batch, &changed, true, &vector_keys, &doc_ops)?;
        Ok(summary)
    }

    /// Adds to `batch` the removal of what was derived from replaced sentences (`text`: their
    /// knowledge and missing records) and from changed gold labels (`labels`, a superset of
    /// `text`: every neighbour list naming one of them). Returns the vector keys to remove in
    /// the same write (vector file, example id); examples whose knowledge changes join
    /// `changed` (to be reindexed).
    fn drop_derived(
        &self,
        text: &HashSet<ExampleId>,
        labels: &HashSet<ExampleId>,
        batch: &mut sled::Batch,
        changed: &mut Vec<ExampleId>,
        summary: &mut IngestSummary,
    ) -> Result<Vec<(Vec<u8>, ExampleId)>> {
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
}
