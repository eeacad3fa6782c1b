//! The tantivy index derived from sled: full-text search over example text and knowledge.
//!
//! One document per example (kind 0: its text) and one per knowledge record (kind 1: raw and
//! sanitized text). Both carry the example's id, gold labels and split, so label/split filters
//! apply to either; an example document lists every source holding knowledge about it, a
//! knowledge document its own source, so `--source` filters both. The index is never the source
//! of truth: `Store::reindex` rebuilds it from sled.

use crate::error::Result;
use crate::labels::{Emotion, LabelSet};
use crate::store::records::{Example, ExampleId, Knowledge, KnowledgeKind, Split};
use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STRING,
};
use tantivy::tokenizer::{PreTokenizedStream, PreTokenizedString, Token, TokenStream, Tokenizer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Name the Chinese tokenizer is registered under.
const TOKENIZER: &str = "zh";
const KIND_EXAMPLE: u64 = 0;
const KIND_KNOWLEDGE: u64 = 1;
/// Indexing memory budget (tantivy splits it across its threads).
const WRITER_HEAP_BYTES: usize = 128_000_000;

/// Jieba (search mode, via tantivy-jieba) with whitespace and punctuation dropped and ASCII
/// lower-cased. The corpus text is pre-segmented and rationales are not: jieba treats the
/// spaces as boundaries, so one tokenizer serves both and the user's keywords.
#[derive(Clone, Default)]
pub struct ChineseTokenizer {
    inner: tantivy_jieba::JiebaTokenizer,
}

impl Tokenizer for ChineseTokenizer {
    type TokenStream<'a> = PreTokenizedStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PreTokenizedStream {
        let mut tokens = Vec::new();
        let mut s = self.inner.token_stream(text);
        while s.advance() {
            let t = s.token();
            if !t.text.chars().any(char::is_alphanumeric) {
                continue;
            }
            tokens.push(Token {
                position: tokens.len(),
                text: t.text.to_lowercase(),
                ..t.clone()
            });
        }
        PreTokenizedStream::from(PreTokenizedString {
            text: String::new(),
            tokens,
        })
    }
}

/// Loads jieba's dictionary on a background thread, so a writer can overlap the ~0.15 s load
/// with its sled work.
pub fn warm_up() {
    std::thread::spawn(|| tokenize("预热"));
}

/// Tokenizes `text` the way the index does (distinct tokens, first-seen order).
///
/// The first call loads jieba's dictionary (~0.1 s); later calls reuse it.
pub fn tokenize(text: &str) -> Vec<String> {
    static TOKENIZER_ONCE: OnceLock<ChineseTokenizer> = OnceLock::new();
    let mut tk = TOKENIZER_ONCE
        .get_or_init(ChineseTokenizer::default)
        .clone();
    let mut s = tk.token_stream(text);
    let mut out: Vec<String> = Vec::new();
    while s.advance() {
        let t = &s.token().text;
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

#[derive(Clone, Copy)]
struct Fields {
    kind: Field,
    eid: Field,
    text: Field,
    raw: Field,
    sanitized: Field,
    label: Field,
    split: Field,
    source: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let num = NumericOptions::default().set_indexed().set_fast();
    let text_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let f = Fields {
        kind: b.add_u64_field("kind", num.clone()),
        eid: b.add_u64_field("eid", num),
        text: b.add_text_field("text", text_opts.clone()),
        raw: b.add_text_field("raw", text_opts.clone()),
        sanitized: b.add_text_field("sanitized", text_opts),
        label: b.add_text_field("label", STRING),
        split: b.add_text_field("split", STRING),
        source: b.add_text_field("source", STRING),
    };
    (b.build(), f)
}

/// Which documents a search may return.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Every one of these emotions must be among the example's gold labels.
    pub emotions: LabelSet,
    /// Only this split.
    pub split: Option<Split>,
    /// Only examples with knowledge from this source (and only that source's knowledge).
    pub source: Option<String>,
    /// Never this example.
    pub exclude: Option<ExampleId>,
}

/// Where a keyword hit was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    /// In the example's text.
    Text,
    /// In a knowledge record's raw or sanitized text.
    Knowledge,
}

/// One matching document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DocHit {
    /// The example.
    pub id: ExampleId,
    /// BM25 score.
    pub score: f32,
    /// Which document matched.
    pub kind: HitKind,
}

/// Counts and ids as the index holds them, for `check`.
#[derive(Debug, Clone, Default)]
pub struct IndexCensus {
    /// Example documents.
    pub examples: u64,
    /// Knowledge documents.
    pub knowledge: u64,
    /// Ids of the example documents.
    pub example_ids: HashSet<ExampleId>,
    /// Example ids that have more than one example document.
    pub duplicate_ids: Vec<ExampleId>,
}

/// The search index of a store.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    f: Fields,
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it when absent.
    pub fn open_or_create(dir: &Path) -> Result<SearchIndex> {
        let (schema, f) = schema();
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        let index = if dir.join("meta.json").exists() {
            Index::open_in_dir(dir)?
        } else {
            Index::create_in_dir(dir, schema)?
        };
        index
            .tokenizers()
            .register(TOKENIZER, ChineseTokenizer::default());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SearchIndex { index, reader, f })
    }

    fn writer(&self) -> Result<IndexWriter> {
        Ok(self.index.writer(WRITER_HEAP_BYTES)?)
    }

    fn add_docs(&self, w: &IndexWriter, ex: &Example, knowledge: &[Knowledge]) -> Result<()> {
        let f = self.f;
        let common = |doc: &mut TantivyDocument, kind: u64| {
            doc.add_u64(f.kind, kind);
            doc.add_u64(f.eid, ex.id);
            for e in ex.labels.iter() {
                doc.add_text(f.label, e.name());
            }
            doc.add_text(f.split, ex.split.name());
        };
        let mut doc = TantivyDocument::default();
        common(&mut doc, KIND_EXAMPLE);
        doc.add_text(f.text, &ex.text);
        for k in knowledge {
            doc.add_text(f.source, &k.source);
        }
        w.add_document(doc)?;
        // Neighbour lists are not searchable text (they quote other examples).
        for k in knowledge
            .iter()
            .filter(|k| k.kind == KnowledgeKind::Rationale)
        {
            let mut doc = TantivyDocument::default();
            common(&mut doc, KIND_KNOWLEDGE);
            doc.add_text(f.raw, &k.raw);
            doc.add_text(f.sanitized, &k.sanitized);
            doc.add_text(f.source, &k.source);
            w.add_document(doc)?;
        }
        Ok(())
    }

    /// Replaces the documents of the given examples (an example absent from sled is passed
    /// with `None` and only deleted), then commits. Nothing is visible before the commit.
    pub fn update<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = (ExampleId, Option<(&'a Example, &'a [Knowledge])>)>,
    {
        let mut w = self.writer()?;
        for (id, item) in items {
            w.delete_term(Term::from_field_u64(self.f.eid, id));
            if let Some((ex, kn)) = item {
                self.add_docs(&w, ex, kn)?;
            }
        }
        w.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Drops every document and adds the given ones, in one commit.
    pub fn rebuild<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a Example, &'a [Knowledge])>,
    {
        let mut w = self.writer()?;
        w.delete_all_documents()?;
        for (ex, kn) in items {
            self.add_docs(&w, ex, kn)?;
        }
        w.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    fn filter_clauses(&self, filter: &Filter) -> Vec<(Occur, Box<dyn Query>)> {
        let f = self.f;
        let term = |field: Field, s: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, s),
                IndexRecordOption::Basic,
            ))
        };
        let mut c: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for e in filter.emotions.iter() {
            c.push((Occur::Must, term(f.label, e.name())));
        }
        if let Some(s) = filter.split {
            c.push((Occur::Must, term(f.split, s.name())));
        }
        if let Some(src) = &filter.source {
            c.push((Occur::Must, term(f.source, src)));
        }
        if let Some(id) = filter.exclude {
            c.push((
                Occur::MustNot,
                Box::new(TermQuery::new(
                    Term::from_field_u64(f.eid, id),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        c
    }

    fn all_tokens_in(&self, fields: &[Field], tokens: &[String]) -> Box<dyn Query> {
        let clauses: Vec<(Occur, Box<dyn Query>)> = tokens
            .iter()
            .map(|t| {
                let per_field: Vec<(Occur, Box<dyn Query>)> = fields
                    .iter()
                    .map(|&field| -> (Occur, Box<dyn Query>) {
                        (
                            Occur::Should,
                            Box::new(TermQuery::new(
                                Term::from_field_text(field, t),
                                IndexRecordOption::WithFreqs,
                            )),
                        )
                    })
                    .collect();
                let q: Box<dyn Query> = Box::new(BooleanQuery::new(per_field));
                (Occur::Must, q)
            })
            .collect();
        Box::new(BooleanQuery::new(clauses))
    }

    fn kind_is(&self, kind: u64) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_u64(self.f.kind, kind),
            IndexRecordOption::Basic,
        ))
    }

    /// Examples whose text, or whose knowledge, contains every token (AND), best BM25 first,
    /// at most `limit` distinct examples. `tokens` come from [`tokenize`].
    pub fn search_keyword(
        &self,
        tokens: &[String],
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<DocHit>> {
        if tokens.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.f;
        let in_text: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (Occur::Must, self.kind_is(KIND_EXAMPLE)),
            (Occur::Must, self.all_tokens_in(&[f.text], tokens)),
        ]));
        let in_knowledge: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (Occur::Must, self.kind_is(KIND_KNOWLEDGE)),
            (
                Occur::Must,
                self.all_tokens_in(&[f.raw, f.sanitized], tokens),
            ),
        ]));
        let either: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (Occur::Should, in_text),
            (Occur::Should, in_knowledge),
        ]));
        let mut clauses = self.filter_clauses(filter);
        clauses.push((Occur::Must, either));
        self.top_distinct(&BooleanQuery::new(clauses), limit)
    }

    /// Examples sharing words with `text` (BM25 over example text, any token: OR), best first.
    /// The fallback retrieval when no encoder is available.
    pub fn search_similar(&self, text: &str, filter: &Filter, limit: usize) -> Result<Vec<DocHit>> {
        let tokens = tokenize(text);
        if tokens.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let any: Vec<(Occur, Box<dyn Query>)> = tokens
            .iter()
            .map(|t| -> (Occur, Box<dyn Query>) {
                (
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(self.f.text, t),
                        IndexRecordOption::WithFreqs,
                    )),
                )
            })
            .collect();
        let mut clauses = self.filter_clauses(filter);
        clauses.push((Occur::Must, self.kind_is(KIND_EXAMPLE)));
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        self.top_distinct(&BooleanQuery::new(clauses), limit)
    }

    /// Top documents grouped by example: at most `limit` distinct examples, best score each.
    fn top_distinct(&self, q: &dyn Query, limit: usize) -> Result<Vec<DocHit>> {
        let searcher = self.reader.searcher();
        let mut fetch = limit * 2 + 8;
        loop {
            let (top, total) =
                searcher.search(q, &(TopDocs::with_limit(fetch).order_by_score(), Count))?;
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for (score, addr) in &top {
                let seg = searcher.segment_reader(addr.segment_ord);
                let ff = seg.fast_fields();
                let id = ff.u64("eid")?.first(addr.doc_id).unwrap_or(0);
                let kind = ff.u64("kind")?.first(addr.doc_id).unwrap_or(0);
                if seen.insert(id) {
                    out.push(DocHit {
                        id,
                        score: *score,
                        kind: if kind == KIND_EXAMPLE {
                            HitKind::Text
                        } else {
                            HitKind::Knowledge
                        },
                    });
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if top.len() >= total {
                return Ok(out);
            }
            fetch *= 4;
        }
    }

    /// Counts and example ids as indexed (for `check`).
    pub fn census(&self) -> Result<IndexCensus> {
        let searcher = self.reader.searcher();
        let mut c = IndexCensus::default();
        for seg in searcher.segment_readers() {
            let ff = seg.fast_fields();
            let kind = ff.u64("kind")?;
            let eid = ff.u64("eid")?;
            for doc in seg.doc_ids_alive() {
                if kind.first(doc) == Some(KIND_EXAMPLE) {
                    c.examples += 1;
                    let id = eid.first(doc).unwrap_or(0);
                    if !c.example_ids.insert(id) {
                        c.duplicate_ids.push(id);
                    }
                } else {
                    c.knowledge += 1;
                }
            }
        }
        Ok(c)
    }

    /// Number of example documents carrying `e` (used by tests and stats cross-checks).
    pub fn count_label(&self, e: Emotion) -> Result<usize> {
        let q = BooleanQuery::new(vec![
            (Occur::Must, self.kind_is(KIND_EXAMPLE)),
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.f.label, e.name()),
                    IndexRecordOption::Basic,
                )),
            ),
        ]);
        Ok(self.reader.searcher().search(&q, &Count)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_segments_unsegmented_keywords_and_drops_spaces() {
        assert_eq!(tokenize("担忧未来"), ["担忧", "未来"]);
        assert_eq!(tokenize("担忧 未来 ， 担忧"), ["担忧", "未来"]);
        assert_eq!(tokenize("Love 好"), ["love", "好"]);
    }
}
