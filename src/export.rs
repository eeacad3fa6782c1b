//! The store as Parquet, for engines beyond one machine (DuckDB, Spark, Ray, LanceDB …).
//!
//! [`export_parquet`] writes one file, `examples.parquet`: one row per example, in id order —
//!
//! | column | type | |
//! |---|---|---|
//! | `id` | UInt64 | |
//! | `text` | Utf8 | as ingested |
//! | `split` | Utf8 | `train`, `val` or `test` |
//! | `labels` | List<Utf8> | gold emotion names, canonical order |
//! | `origin_file`, `origin_line` | Utf8, UInt64 | where it was ingested from |
//! | `doc`, `position` | Utf8, UInt32, null when the file gave no document | its document |
//! | `<source>.sanitized`, `.raw` | Utf8, null when the source has nothing | each rationale source |
//! | `<source>.asserted` | List<Utf8> | the labels that source asserts |
//! | `<source>.neighbour_ids`, `.neighbour_scores` | List<UInt64>, List<Float32> | each neighbours source, best first |
//! | `vector.<encoder name>` | FixedSizeList<Float32, dim> | each encoder's text vector |
//!
//! `ingest` reads the file back (id, text, labels, doc, position; see [`crate::corpus::parquet`]). The file is
//! written beside its final name and renamed into place, so a reader never sees half a file;
//! an existing export is replaced only when asked. Its footer records a CRC-32 of every column
//! chunk ([`crate::corpus::parquet::CHUNK_CRC_KEY`]), checked when it is read back.

use crate::error::{Error, Result};
use crate::labels::LabelSet;
use crate::store::records::{DocRecord, Example, Knowledge, KnowledgeKind};
use crate::store::vectors::{VectorSet, What};
use crate::store::Store;
use arrow_array::builder::{
    FixedSizeListBuilder, Float32Builder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file an export writes in its directory.
pub const EXAMPLES_FILE: &str = "examples.parquet";

/// Rows per Parquet row group (and per Arrow batch built in memory).
const ROW_GROUP: usize = 8192;

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    /// The file written.
    pub path: PathBuf,
    /// Rows (examples).
    pub rows: usize,
    /// Rationale sources, one column group each.
    pub rationale_sources: Vec<String>,
    /// Neighbour sources.
    pub neighbour_sources: Vec<String>,
    /// Encoders whose text vectors were written (name, dimension).
    pub encoders: Vec<(String, usize)>,
    /// Bytes on disk.
    pub bytes: u64,
}

fn parquet_err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// What an export reads from the store, once: the examples and every column's data.
struct Source {
    examples: Vec<Example>,
    docs: HashMap<u64, DocRecord>,
    rationale: BTreeMap<String, HashMap<u64, Knowledge>>,
    neighbours: BTreeMap<String, HashMap<u64, Knowledge>>,
    vectors: Vec<(String, VectorSet)>,
}

impl Source {
    fn read(store: &Store) -> Result<Source> {
        let examples = store.examples(None)?;
        let mut rationale: BTreeMap<String, HashMap<u64, Knowledge>> = BTreeMap::new();
        let mut neighbours: BTreeMap<String, HashMap<u64, Knowledge>> = BTreeMap::new();
        for k in store.all_knowledge(None)? {
            let by = match k.kind {
                KnowledgeKind::Rationale => &mut rationale,
                KnowledgeKind::Neighbours => &mut neighbours,
            };
            by.entry(k.source.clone())
                .or_default()
                .insert(k.example_id, k);
        }
        let mut docs: HashMap<u64, DocRecord> = HashMap::new();
        for ex in &examples {
            if let Some(d) = store.doc_record(ex.id)? {
                docs.insert(ex.id, d);
            }
        }
        let mut encoders = store.encoders()?;
        encoders.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut vectors: Vec<(String, VectorSet)> = Vec::new();
        for enc in &encoders {
            let set = store.vectors(enc, &What::Text, None)?;
            // Two encoders of one name (different settings) get their id prefix appended.
            let dup = encoders.iter().filter(|e| e.name == enc.name).count() > 1;
            let name = if dup {
                format!("{}@{}", enc.name, &enc.id[..enc.id.len().min(8)])
            } else {
                enc.name.clone()
            };
            vectors.push((name, set));
        }
        Ok(Source {
            examples,
            docs,
            rationale,
            neighbours,
            vectors,
        })
    }

    /// One Arrow batch of `chunk`'s rows.
    fn batch(
        &self,
        chunk: &[Example],
    ) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
        batch(
            chunk,
            &self.docs,
            &self.rationale,
            &self.neighbours,
            &self.vectors,
        )
    }
}

/// The store as the export's columns, in Arrow batches of at most 8,192 rows (an empty store:
/// one empty batch, with the schema): what `examples.parquet` holds, for a reader in this
/// process (Python's `Store.to_arrow`).
pub fn record_batches(store: &Store) -> Result<Vec<RecordBatch>> {
    let src = Source::read(store)?;
    let arrow = |e| Error::Invalid(format!("building the export's columns: {e}"));
    if src.examples.is_empty() {
        return Ok(vec![src.batch(&[]).map_err(arrow)?]);
    }
    src.examples
        .chunks(ROW_GROUP)
        .map(|c| src.batch(c).map_err(arrow))
        .collect()
}

/// Writes the store's examples, knowledge and text vectors to `dir/examples.parquet`.
/// `replace` allows overwriting an earlier export there; without it an existing file is
/// refused ([`Error::ExportExists`]).
pub fn export_parquet(store: &Store, dir: &Path, replace: bool) -> Result<ExportSummary> {
    let path = dir.join(EXAMPLES_FILE);
    if path.exists() && !replace {
        return Err(Error::ExportExists { path });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let src = Source::read(store)?;
    let examples = &src.examples;

    let tmp = dir.join(format!(".{EXAMPLES_FILE}.tmp-{}", std::process::id()));
    crate::temps::write_beside(&tmp, &path, || -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .build();
        let make = |chunk: &[Example]| src.batch(chunk).map_err(|e| parquet_err(&tmp, e));
        // The first batch gives the schema; an empty store still gets a file with it.
        let mut chunks = examples.chunks(ROW_GROUP);
        let first = make(chunks.next().unwrap_or(&[]))?;
        let mut writer = ArrowWriter::try_new(file, first.schema(), Some(props))
            .map_err(|e| parquet_err(&tmp, e))?;
        writer.write(&first).map_err(|e| parquet_err(&tmp, e))?;
        for chunk in chunks {
            writer
                .write(&make(chunk)?)
                .map_err(|e| parquet_err(&tmp, e))?;
        }
        // Every row group on disk, then a checksum of each column chunk in the footer.
        writer.flush().map_err(|e| parquet_err(&tmp, e))?;
        writer.sync().map_err(|e| Error::io(&tmp, e))?;
        let data = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let crcs = crate::corpus::parquet::chunk_checksums(&data, writer.flushed_row_groups())
            .ok_or_else(|| Error::Invalid("a column chunk lies past the data written".into()))?;
        drop(data);
        writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            crate::corpus::parquet::CHUNK_CRC_KEY.to_string(),
            crcs.join(","),
        ));
        let f = writer.into_inner().map_err(|e| parquet_err(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        Ok(())
    })?;
    let bytes = std::fs::metadata(&path)
        .map_err(|e| Error::io(&path, e))?
        .len();
    Ok(ExportSummary {
        path,
        rows: examples.len(),
        rationale_sources: src.rationale.keys().cloned().collect(),
        neighbour_sources: src.neighbours.keys().cloned().collect(),
        encoders: src
            .vectors
            .iter()
            .map(|(n, s)| (n.clone(), s.dim))
            .collect(),
        bytes,
    })
}

fn append_labels(b: &mut ListBuilder<StringBuilder>, labels: LabelSet) {
    for e in labels.iter() {
        b.values().append_value(e.name());
    }
    b.append(true);
}

/// One Arrow batch of `chunk`'s rows.
fn batch(
    chunk: &[Example],
    docs: &HashMap<u64, DocRecord>,
    rationale: &BTreeMap<String, HashMap<u64, Knowledge>>,
    neighbours: &BTreeMap<String, HashMap<u64, Knowledge>>,
    vectors: &[(String, VectorSet)],
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let mut cols: Vec<(String, ArrayRef)> = Vec::new();
    let mut id = UInt64Builder::new();
    let mut text = StringBuilder::new();
    let mut split = StringBuilder::new();
    let mut labels = ListBuilder::new(StringBuilder::new());
    let mut file = StringBuilder::new();
    let mut line = UInt64Builder::new();
    let mut doc = StringBuilder::new();
    let mut position = UInt32Builder::new();
    for ex in chunk {
        id.append_value(ex.id);
        text.append_value(&ex.text);
        split.append_value(ex.split.name());
        append_labels(&mut labels, ex.labels);
        file.append_value(&ex.origin.file);
        line.append_value(ex.origin.line);
        match docs.get(&ex.id) {
            Some(d) => {
                doc.append_value(&d.doc);
                position.append_value(d.position);
            }
            None => {
                doc.append_null();
                position.append_null();
            }
        }
    }
    cols.push(("id".into(), Arc::new(id.finish())));
    cols.push(("text".into(), Arc::new(text.finish())));
    cols.push(("split".into(), Arc::new(split.finish())));
    cols.push(("labels".into(), Arc::new(labels.finish())));
    cols.push(("origin_file".into(), Arc::new(file.finish())));
    cols.push(("origin_line".into(), Arc::new(line.finish())));
    cols.push(("doc".into(), Arc::new(doc.finish())));
    cols.push(("position".into(), Arc::new(position.finish())));

    for (source, by_id) in rationale {
        let mut sanitized = StringBuilder::new();
        let mut raw = StringBuilder::new();
        let mut asserted = ListBuilder::new(StringBuilder::new());
        for ex in chunk {
            match by_id.get(&ex.id) {
                Some(k) => {
                    sanitized.append_value(&k.sanitized);
                    raw.append_value(&k.raw);
                    append_labels(&mut asserted, k.asserted);
                }
                None => {
                    sanitized.append_null();
                    raw.append_null();
                    asserted.append(false);
                }
            }
        }
        cols.push((format!("{source}.sanitized"), Arc::new(sanitized.finish())));
        cols.push((format!("{source}.raw"), Arc::new(raw.finish())));
        cols.push((format!("{source}.asserted"), Arc::new(asserted.finish())));
    }

    for (source, by_id) in neighbours {
        let mut ids = ListBuilder::new(UInt64Builder::new());
        let mut scores = ListBuilder::new(Float32Builder::new());
        for ex in chunk {
            match by_id.get(&ex.id) {
                Some(k) => {
                    for n in &k.neighbours {
                        ids.values().append_value(n.id);
                        scores.values().append_value(n.score);
                    }
                    ids.append(true);
                    scores.append(true);
                }
                None => {
                    ids.append(false);
                    scores.append(false);
                }
            }
        }
        cols.push((format!("{source}.neighbour_ids"), Arc::new(ids.finish())));
        cols.push((
            format!("{source}.neighbour_scores"),
            Arc::new(scores.finish()),
        ));
    }

    for (name, set) in vectors {
        let dim = i32::try_from(set.dim).map_err(|_| {
            arrow_schema::ArrowError::InvalidArgumentError(format!(
                "encoder {name}: dimension {} is too large",
                set.dim
            ))
        })?;
        let mut b = FixedSizeListBuilder::with_capacity(
            Float32Builder::with_capacity(chunk.len() * set.dim),
            dim,
            chunk.len(),
        );
        for ex in chunk {
            match set.position(ex.id) {
                Some(i) => {
                    b.values().append_slice(set.row(i));
                    b.append(true);
                }
                None => {
                    // A null entry still occupies `dim` child slots.
                    b.values().append_nulls(set.dim);
                    b.append(false);
                }
            }
        }
        cols.push((format!("vector.{name}"), Arc::new(b.finish())));
    }
    RecordBatch::try_from_iter(cols)
}
