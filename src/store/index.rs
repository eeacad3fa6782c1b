//! The tantivy index derived from sled: full-text search over example text and knowledge.
//!
//! One document per example (kind 0: its text) and one per knowledge record (kind 1: raw and
//! sanitized text). Both carry the example's id, gold labels and split, so label/split filters
//! apply to either; an example document lists every source holding knowledge about it, a
//! knowledge document its own source, so `--source` filters both. The index is never the source
//! of truth: `Store::reindex` rebuilds it from sled.

use crate::error::{Error, Result};
use crate::labels::{Emotion, LabelSet};
use crate::store::records::{Example, ExampleId, Knowledge, KnowledgeKind, Split};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tantivy::collector::{Count, TopDocs};
use tantivy::index::SegmentComponent;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STRING,
};
use tantivy::tokenizer::{PreTokenizedStream, PreTokenizedString, Token, TokenStream, Tokenizer};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term, TERMINATED,
};

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

/// The search index of a store, at `<store>/index`.
///
/// It is opened on first use, so commands that never search (show, stats, train, …) work
/// whatever state it is in. Opening verifies every segment file's checksum, so a truncated,
/// missing or overwritten file is found before tantivy parses it. A damaged index is remembered
/// (every search then fails with [`Error::IndexDamaged`], naming the fix); [`SearchIndex::rebuild`]
/// replaces it whatever its state.
pub struct SearchIndex {
    dir: PathBuf,
    /// Whether sled held examples when the store was opened: an index directory without
    /// `meta.json` is then missing, not new.
    expect_existing: bool,
    f: Fields,
    state: Mutex<State>,
}

enum State {
    Unopened,
    Open(Arc<Live>),
    Damaged(String),
}

/// An opened, verified index.
struct Live {
    index: Index,
    reader: IndexReader,
}

/// The segment files every segment has (plus its deletes file when it has deletes).
const SEGMENT_COMPONENTS: [SegmentComponent; 6] = [
    SegmentComponent::Postings,
    SegmentComponent::Positions,
    SegmentComponent::FastFields,
    SegmentComponent::FieldNorms,
    SegmentComponent::Terms,
    SegmentComponent::Store,
];

/// A short account of a tantivy error met while reading the index.
fn describe(e: &tantivy::TantivyError) -> String {
    use tantivy::directory::error::OpenReadError;
    use tantivy::TantivyError as T;
    let s = match e {
        T::OpenReadError(OpenReadError::FileDoesNotExist(p)) => {
            format!("{} is missing", file_name(p))
        }
        T::OpenReadError(OpenReadError::IoError { io_error, filepath }) => {
            if io_error.to_string().contains("Footer magic byte mismatch") {
                // tantivy's message goes on to blame an old tantivy version; here the usual
                // cause is a truncated or overwritten file.
                format!(
                    "{} is truncated or corrupted (its footer is wrong)",
                    file_name(filepath)
                )
            } else {
                format!("{}: {io_error}", file_name(filepath))
            }
        }
        // The debug form names the file; drop the file's content tantivy appends.
        T::DataCorruption(c) => {
            let s = format!("{c:?}");
            match s.find(" Content: ") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
        T::IoError(io) => io.to_string(),
        e => e.to_string(),
    };
    shorten(s)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or(p.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// Caps a reason at 300 characters (tantivy quotes whole files in some errors).
fn shorten(s: String) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Opens and verifies the index in `dir` (which has a `meta.json`). `Err` is why it is damaged.
fn open_existing(dir: &Path) -> std::result::Result<Live, String> {
    let index = Index::open_in_dir(dir).map_err(|e| describe(&e))?;
    if index.schema() != schema().0 {
        return Err("its schema is not the one this emoknow writes".into());
    }
    let metas = index.searchable_segment_metas().map_err(|e| describe(&e))?;
    let mut bad = Vec::new();
    for meta in &metas {
        let mut files: Vec<PathBuf> = SEGMENT_COMPONENTS
            .iter()
            .map(|c| meta.relative_path(c.clone()))
            .collect();
        if meta.has_deletes() {
            files.push(meta.relative_path(SegmentComponent::Delete));
        }
        for f in files {
            match index.directory().validate_checksum(f.as_path()) {
                Ok(true) => {}
                Ok(false) => bad.push(format!("{} fails its checksum", file_name(&f))),
                Err(e) => bad.push(describe(&e.into())),
            }
        }
    }
    if !bad.is_empty() {
        let n = bad.len();
        bad.truncate(3);
        let more = if n > 3 {
            format!(" and {} more", n - 3)
        } else {
            String::new()
        };
        return Err(format!("{}{more}", bad.join("; ")));
    }
    index
        .tokenizers()
        .register(TOKENIZER, ChineseTokenizer::default());
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(|e| describe(&e))?;
    Ok(Live { index, reader })
}

/// Creates an empty index in `dir` (which has no `meta.json`).
fn create(dir: &Path) -> Result<Live> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e).disk_full_at(dir))?;
    let index =
        Index::create_in_dir(dir, schema().0).map_err(|e| Error::from(e).disk_full_at(dir))?;
    index
        .tokenizers()
        .register(TOKENIZER, ChineseTokenizer::default());
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    Ok(Live { index, reader })
}

fn writer(index: &Index) -> Result<IndexWriter> {
    let w = index.writer(WRITER_HEAP_BYTES)?;
    // A writer killed during its commit can leave files the last commit does not use, e.g. a
    // segment's `<segment>.<opstamp>.del`; the next commit reuses that opstamp and fails with
    // "file already exists". Remove them before writing anything.
    w.garbage_collect_files().wait()?;
    Ok(w)
}

impl SearchIndex {
    /// The index in `dir`, opened on first use. `expect_existing`: whether the store holds
    /// records, so that a missing index is reported as damaged instead of created empty.
    /// Without records and without an index, the empty index is created at once, so it exists
    /// before the first record is written (a writer killed after sled's commit then leaves
    /// an index to catch up with the pending records, not a missing one).
    pub fn new(dir: &Path, expect_existing: bool) -> Result<SearchIndex> {
        let state = if !expect_existing && !dir.join("meta.json").exists() {
            State::Open(Arc::new(create(dir)?))
        } else {
            State::Unopened
        };
        Ok(SearchIndex {
            dir: dir.to_path_buf(),
            expect_existing,
            f: schema().1,
            state: Mutex::new(state),
        })
    }

    fn damaged(&self, reason: impl Into<String>) -> Error {
        Error::IndexDamaged {
            path: self.dir.clone(),
            reason: reason.into(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that the index is damaged and returns the error saying so.
    fn mark_damaged(&self, reason: String) -> Error {
        *self.state() = State::Damaged(reason.clone());
        self.damaged(reason)
    }

    /// The open index: opened (and verified) or created on first use.
    fn live(&self) -> Result<Arc<Live>> {
        let mut st = self.state();
        match &*st {
            State::Open(l) => return Ok(l.clone()),
            State::Damaged(r) => return Err(self.damaged(r.clone())),
            State::Unopened => {}
        }
        let dir = &self.dir;
        let live = if dir.join("meta.json").exists() {
            // tantivy may panic on garbage; its checksums are verified before anything is
            // parsed, but a panic here must still not take the process down.
            let opened = catch_unwind(AssertUnwindSafe(|| open_existing(dir)))
                .unwrap_or_else(|p| Err(format!("opening it panicked: {}", panic_message(&*p))));
            match opened {
                Ok(l) => l,
                Err(reason) => {
                    *st = State::Damaged(reason.clone());
                    return Err(self.damaged(reason));
                }
            }
        } else if self.expect_existing {
            let reason = if dir.exists() {
                "meta.json is missing"
            } else {
                "the directory is missing"
            };
            *st = State::Damaged(reason.into());
            return Err(self.damaged(reason));
        } else {
            create(dir)?
        };
        let live = Arc::new(live);
        *st = State::Open(live.clone());
        Ok(live)
    }

    /// Runs a read of the index. A panic inside tantivy, or an error from it (the index is
    /// local and already open, so either means damaged files), marks the index damaged and
    /// becomes [`Error::IndexDamaged`].
    fn read<T>(&self, f: impl FnOnce(&Live) -> Result<T>) -> Result<T> {
        let live = self.live()?;
        match catch_unwind(AssertUnwindSafe(|| f(&live))) {
            Ok(Err(Error::Index(e))) => Err(self.mark_damaged(describe(&e))),
            Ok(r) => r,
            Err(p) => {
                Err(self.mark_damaged(format!("reading it panicked: {}", panic_message(&*p))))
            }
        }
    }

    /// Runs a write to the index: a panic marks it damaged; "no space left on device" becomes
    /// [`Error::DiskFull`] naming the index.
    fn write<T>(&self, f: impl FnOnce(&Live) -> Result<T>) -> Result<T> {
        let live = self.live()?;
        match catch_unwind(AssertUnwindSafe(|| f(&live))) {
            Ok(r) => r.map_err(|e| e.disk_full_at(&self.dir)),
            Err(p) => {
                Err(self.mark_damaged(format!("writing it panicked: {}", panic_message(&*p))))
            }
        }
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
        self.write(|live| {
            let mut w = writer(&live.index)?;
            for (id, item) in items {
                w.delete_term(Term::from_field_u64(self.f.eid, id));
                if let Some((ex, kn)) = item {
                    self.add_docs(&w, ex, kn)?;
                }
            }
            w.commit()?;
            live.reader.reload()?;
            Ok(())
        })
    }

    /// Builds a new index of the given documents and puts it in place of the current one,
    /// whatever state that is in (missing, damaged or fine): the new index is written and
    /// committed in `<dir>.rebuilding`, then renamed over. A crash before the rename leaves the
    /// old index; after it, the new one; in between, none (which opening reports as damaged).
    pub fn rebuild<'a, I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a Example, &'a [Knowledge])>,
    {
        let dir = &self.dir;
        let name = file_name(dir);
        let tmp = dir.with_file_name(format!("{name}.rebuilding"));
        let old = dir.with_file_name(format!("{name}.old"));
        let io = |p: &Path, e: std::io::Error| Error::io(p, e).disk_full_at(dir);
        for p in [&tmp, &old] {
            if p.exists() {
                std::fs::remove_dir_all(p).map_err(|e| io(p, e))?;
            }
        }
        let built = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
            let live = create(&tmp)?;
            let mut w = writer(&live.index)?;
            for (ex, kn) in items {
                self.add_docs(&w, ex, kn)?;
            }
            w.commit()?;
            w.wait_merging_threads()?;
            Ok(())
        }));
        let built = match built {
            Ok(r) => r.map_err(|e| e.disk_full_at(dir)),
            Err(p) => Err(Error::Invalid(format!(
                "building the search index in {} panicked: {}",
                tmp.display(),
                panic_message(&*p)
            ))),
        };
        if let Err(e) = built {
            // Give the space back (the disk may be full); the current index is untouched.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Close the current index (its files are about to go), then swap.
        let mut st = self.state();
        *st = State::Unopened;
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| io(&tmp, e))?;
        // Best effort: a leftover is removed by the next rebuild and never read.
        let _ = std::fs::remove_dir_all(&old);
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
        self.read(|live| self.top_distinct_in(live, q, limit))
    }

    fn top_distinct_in(&self, live: &Live, q: &dyn Query, limit: usize) -> Result<Vec<DocHit>> {
        let searcher = live.reader.searcher();
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
        self.read(Self::census_in)
    }

    fn census_in(live: &Live) -> Result<IndexCensus> {
        let searcher = live.reader.searcher();
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

    /// Reads every segment in full (each term dictionary and posting list, field norms, fast
    /// fields, the document store), then counts like [`SearchIndex::census`]. Damage found on
    /// the way (an error, a panic, a posting past the segment's end, a document frequency that
    /// disagrees with its posting list) is [`Error::IndexDamaged`]. Used by `check`.
    pub fn verify(&self) -> Result<IndexCensus> {
        self.read(|live| {
            let searcher = live.reader.searcher();
            let schema = live.index.schema();
            let schema = &schema;
            for seg in searcher.segment_readers() {
                let seg_name = seg.segment_id().uuid_string();
                let max_doc = seg.max_doc();
                let corrupt =
                    |what: String| -> Error { self.damaged(format!("segment {seg_name}: {what}")) };
                for (field, entry) in schema.fields() {
                    if entry.is_indexed() {
                        let inv = seg.inverted_index(field)?;
                        let option = entry
                            .field_type()
                            .index_record_option()
                            .unwrap_or(IndexRecordOption::Basic);
                        let mut terms =
                            inv.terms().stream().map_err(tantivy::TantivyError::from)?;
                        while terms.advance() {
                            let info = terms.value().clone();
                            let mut postings = inv
                                .read_postings_from_terminfo(&info, option)
                                .map_err(tantivy::TantivyError::from)?;
                            let mut n = 0u32;
                            let mut doc = postings.doc();
                            while doc != TERMINATED {
                                if doc >= max_doc {
                                    return Err(corrupt(format!(
                                        "field {} lists document {doc} of {max_doc}",
                                        entry.name()
                                    )));
                                }
                                n += 1;
                                doc = postings.advance();
                            }
                            if n != info.doc_freq {
                                return Err(corrupt(format!(
                                    "field {}: a term lists {n} documents, its dictionary says {}",
                                    entry.name(),
                                    info.doc_freq
                                )));
                            }
                        }
                    }
                    if entry.has_fieldnorms() {
                        let norms = seg.get_fieldnorms_reader(field)?;
                        for doc in 0..max_doc {
                            norms.fieldnorm_id(doc);
                        }
                    }
                }
                let ff = seg.fast_fields();
                for name in ["kind", "eid"] {
                    let col = ff.u64(name)?;
                    for doc in 0..max_doc {
                        col.first(doc);
                    }
                }
                let store = seg
                    .get_store_reader(0)
                    .map_err(tantivy::TantivyError::from)?;
                for doc in store.iter::<TantivyDocument>(seg.alive_bitset()) {
                    doc?;
                }
            }
            Self::census_in(live)
        })
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
        self.read(|live| Ok(live.reader.searcher().search(&q, &Count)?))
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
