//! Knowledge and missing records in the store: writing them (indexed now or deferred), reading
//! them, deleting a source, an example with its knowledge ([`Entry`]), and [`Store::query`]
//! (keyword search through the index, or a filtered scan of sled).

use super::records::{Example, ExampleId, Knowledge, Missing};
use super::{decode, encode, id_from_key, index, key_id, key_id_source, Store};
use super::{Filter, HitKind, P_EXAMPLE, P_KNOWLEDGE, P_MISSING};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashSet;

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

impl Store {
    /// Writes knowledge and missing records as one atomic batch (each replaces the record of
    /// the same example and source), then indexes. Errors with [`Error::UnknownExamples`] if any
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
            return Err(Error::UnknownExamples {
                count: absent.len(),
                first: absent.into_iter().take(10).collect(),
            });
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
        self.commit_with(batch, &ids, index_now, &[], &[])
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
}
