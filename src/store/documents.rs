//! Documents: which sentences surround an example. Each example's document and position live
//! in the `docs` tree ([`DocRecord`], written by `ingest`); an example without a record belongs
//! to its file's unnamed stream, in id order. Documents of different files are different
//! documents, even when they share a name.

use super::records::{DocRecord, Example, ExampleId};
use super::{decode, Store};
use crate::error::Result;
use std::collections::HashMap;

/// Sentences of a document: (example id, text), in order.
pub type Sentences = [(ExampleId, String)];

/// A document's key while the index is built: (file, name) and its (position, id, text).
type Members = HashMap<(String, Option<String>), Vec<(u32, ExampleId, String)>>;

/// Every stored example's place in its document, with its text: what context lookups for
/// many examples read (built once by [`Store::documents`]).
#[derive(Debug, Clone, Default)]
pub struct DocIndex {
    /// Per document, its sentences (id, text) in order.
    docs: Vec<Vec<(ExampleId, String)>>,
    /// Example id → (document, index in it).
    at: HashMap<ExampleId, (usize, usize)>,
    /// Per document: (file, name; `None` for the file's stream).
    names: Vec<(String, Option<String>)>,
}

impl DocIndex {
    /// The (up to) `w` sentences before and after example `id` in its document, nearest last
    /// and first respectively, as (id, text); empty for an id the index does not hold.
    pub fn context(&self, id: ExampleId, w: usize) -> (&Sentences, &Sentences) {
        let Some(&(d, i)) = self.at.get(&id) else {
            return (&[], &[]);
        };
        let doc = &self.docs[d];
        let end = i.saturating_add(1).saturating_add(w).min(doc.len());
        (&doc[i.saturating_sub(w)..i], &doc[i + 1..end])
    }

    /// The file and document name of example `id` (`None` name: the file's stream).
    pub fn document_of(&self, id: ExampleId) -> Option<(&str, Option<&str>)> {
        let &(d, _) = self.at.get(&id)?;
        let (file, name) = &self.names[d];
        Some((file.as_str(), name.as_deref()))
    }

    /// Number of documents (a file's stream counts as one).
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether the store holds no example.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

impl Store {
    /// The document record of example `id` (`None`: it is in its file's stream).
    pub fn doc_record(&self, id: ExampleId) -> Result<Option<DocRecord>> {
        self.docs
            .get(id.to_be_bytes())?
            .map(|v| decode(&v, "document record"))
            .transpose()
    }

    /// Every example's place in its document, with its text as given. Reads all examples and
    /// document records once.
    pub fn documents(&self) -> Result<DocIndex> {
        self.documents_with(false)
    }

    /// [`Store::documents`] with each text as models read it ([`Store::read_text`]): the
    /// context a model attaches.
    pub fn documents_as_read(&self) -> Result<DocIndex> {
        self.documents_with(true)
    }

    fn documents_with(&self, as_read: bool) -> Result<DocIndex> {
        let mut records: HashMap<ExampleId, DocRecord> = HashMap::new();
        for kv in self.docs.iter() {
            let (k, v) = kv?;
            let mut id = [0u8; 8];
            for (dst, src) in id.iter_mut().zip(k.iter()) {
                *dst = *src;
            }
            records.insert(u64::from_be_bytes(id), decode(&v, "document record")?);
        }
        let mut by_doc: Members = HashMap::new();
        let examples = self.examples(None)?;
        let examples = if as_read {
            self.as_read(examples)?
        } else {
            examples
        };
        for ex in examples {
            let (name, position) = match records.remove(&ex.id) {
                Some(r) => (Some(r.doc), r.position),
                None => (None, 0),
            };
            by_doc
                .entry((ex.origin.file, name))
                .or_default()
                .push((position, ex.id, ex.text));
        }
        let mut keyed: Vec<_> = by_doc.into_iter().collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut index = DocIndex::default();
        for (name, mut members) in keyed {
            members.sort_by_key(|m| (m.0, m.1));
            let d = index.docs.len();
            for (i, m) in members.iter().enumerate() {
                index.at.insert(m.1, (d, i));
            }
            index
                .docs
                .push(members.into_iter().map(|(_, id, t)| (id, t)).collect());
            index.names.push(name);
        }
        Ok(index)
    }

    /// The (up to) `w` examples before and after example `id` in its document (same document
    /// only; ordered by position, then id), nearest last and first. Empty for an unknown id.
    /// Reads every example: for many lookups build [`Store::documents`] once.
    pub fn context(&self, id: ExampleId, w: usize) -> Result<(Vec<Example>, Vec<Example>)> {
        let index = self.documents()?;
        let (before, after) = index.context(id, w);
        let read = |part: &[(ExampleId, String)]| -> Result<Vec<Example>> {
            let mut out = Vec::with_capacity(part.len());
            for (cid, _) in part {
                if let Some(e) = self.example(*cid)? {
                    out.push(e);
                }
            }
            Ok(out)
        };
        Ok((read(before)?, read(after)?))
    }
}
