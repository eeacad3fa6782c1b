//! Reading labelled sentences from Parquet: `emoknow export parquet`'s files, or any file with a
//! `text` column and a `labels` column (a list of emotion names, or one string in any format the
//! CSV reader takes), and optionally `id` (an integer; every row has one, or the column is
//! left out), `doc` (text) and `position` (an integer; only with a `doc`). Text is any Arrow
//! string type (Utf8, LargeUtf8 as pandas writes it, Utf8View, dictionary-encoded), a list any
//! list type (List, LargeList, ListView, FixedSizeList), an integer any width and signedness.
//! Other columns are ignored: they are the export's knowledge and vectors. A row's "line" in
//! messages is its 1-based row number.

use super::rows::{check_doc, check_text, nonempty, Encoding, Format, Parsed, Row};
use crate::error::{Error, Result};
use crate::labels::{Emotion, LabelSet};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// The four bytes every Parquet file starts (and ends) with.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// The footer key under which `emoknow export parquet` records a CRC-32 of every column chunk
/// (row groups in order, columns in schema order; 8 hex digits each, comma-separated). The
/// parquet crate writes no page checksums; these catch a changed byte anywhere in the data.
pub const CHUNK_CRC_KEY: &str = "emoknow.chunk_crc32";

/// The CRC-32 of each column chunk of `row_groups` in `bytes` (a whole file, or its data
/// written so far), in [`CHUNK_CRC_KEY`]'s format; `None` when a chunk lies outside `bytes`.
pub fn chunk_checksums(
    bytes: &[u8],
    row_groups: &[parquet::file::metadata::RowGroupMetaData],
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for rg in row_groups {
        for col in rg.columns() {
            let (start, len) = col.byte_range();
            let start = usize::try_from(start).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            out.push(format!("{:08x}", crc32fast::hash(bytes.get(start..end)?)));
        }
    }
    Some(out)
}

/// Checks the chunk checksums a file written by `emoknow export parquet` carries (a file
/// without them, from another writer, is read as it is).
fn verify_chunks(
    path: &Path,
    bytes: &[u8],
    meta: &parquet::file::metadata::ParquetMetaData,
) -> Result<()> {
    let Some(want) = (meta.file_metadata().key_value_metadata())
        .and_then(|kv| kv.iter().find(|k| k.key == CHUNK_CRC_KEY))
        .and_then(|k| k.value.clone())
    else {
        return Ok(());
    };
    let damaged = |what: String| {
        Error::input(
            path,
            0,
            format!(
                "{what} does not match the checksum written with the file: it was changed or damaged since; export it again"
            ),
        )
    };
    let got = chunk_checksums(bytes, meta.row_groups())
        .ok_or_else(|| damaged("a column chunk lies outside the file, which".into()))?;
    let want: Vec<&str> = want.split(',').collect();
    if want.len() != got.len() {
        return Err(damaged("the number of column chunks".into()));
    }
    let mut i = 0;
    for (r, rg) in meta.row_groups().iter().enumerate() {
        for col in rg.columns() {
            if got[i] != want[i] {
                return Err(damaged(format!(
                    "row group {}, column `{}`,",
                    r + 1,
                    col.column_path()
                )));
            }
            i += 1;
        }
    }
    Ok(())
}

fn err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Reads `bytes` (a whole Parquet file) into rows; `path` names it in messages.
pub fn parse_parquet(path: &Path, bytes: Vec<u8>) -> Result<Parsed> {
    let bytes = bytes::Bytes::from(bytes);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(|e| err(path, e))?;
    verify_chunks(path, &bytes, builder.metadata())?;
    let reader = builder.build().map_err(|e| err(path, e))?;
    let mut parsed = Parsed {
        format: Format::Parquet,
        encoding: Encoding::Utf8,
        rows: Vec::new(),
        bad: Vec::new(),
    };
    let mut row_no: u64 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| err(path, e))?;
        read_batch(path, &batch, &mut row_no, &mut parsed)?;
    }
    Ok(parsed)
}

fn read_batch(path: &Path, batch: &RecordBatch, row_no: &mut u64, out: &mut Parsed) -> Result<()> {
    let missing = |what: &str| {
        Error::input(
            path,
            0,
            format!(
                "no `{what}` column (a Parquet corpus needs `text` and `labels`; it has: {})",
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    let wrong = |name: &str, col: &dyn Array, want: &str| {
        Error::input(
            path,
            0,
            format!("column `{name}` is {}, not {want}", col.data_type()),
        )
    };
    let text_col = batch
        .column_by_name("text")
        .ok_or_else(|| missing("text"))?;
    let text = strings(text_col.as_ref()).ok_or_else(|| wrong("text", text_col, "text"))?;
    let labels = batch
        .column_by_name("labels")
        .ok_or_else(|| missing("labels"))?;
    let label_strings = strings(labels.as_ref());
    if label_strings.is_none() && !is_list(labels.data_type()) {
        return Err(wrong("labels", labels, "a list of names or text"));
    }
    let ids = match batch.column_by_name("id") {
        None => None,
        Some(c) => Some(integers(c.as_ref()).ok_or_else(|| wrong("id", c, "an integer"))?),
    };
    let docs = match batch.column_by_name("doc") {
        None => None,
        Some(c) => Some(strings(c.as_ref()).ok_or_else(|| wrong("doc", c, "text"))?),
    };
    let positions = match batch.column_by_name("position") {
        None => None,
        Some(c) => Some(integers(c.as_ref()).ok_or_else(|| wrong("position", c, "an integer"))?),
    };
    for i in 0..batch.num_rows() {
        *row_no += 1;
        let line = *row_no;
        let bad = |out: &mut Parsed, msg: String| out.bad.push((line as usize, msg));
        let Some(raw) = text[i] else {
            bad(out, "text is null".into());
            continue;
        };
        let t = match check_text(raw) {
            Ok(t) => t,
            Err(msg) => {
                bad(out, msg);
                continue;
            }
        };
        let id = match ids.as_ref().map(|ids| ids[i]) {
            None => None,
            Some(None) => {
                bad(
                    out,
                    "id is null (give every row an id, or leave the column out)".into(),
                );
                continue;
            }
            Some(Some(v)) => match u64::try_from(v) {
                Ok(v) => Some(v),
                Err(_) => {
                    bad(out, "negative id".into());
                    continue;
                }
            },
        };
        let set = match label_strings.as_ref() {
            Some(rows) => match rows[i] {
                Some(l) => LabelSet::parse_list(l).map_err(|e| format!("{e}")),
                None => Err("labels are null".into()),
            },
            None => list_labels(labels.as_ref(), i),
        };
        let set = match set.and_then(|s| nonempty(s, "[]")) {
            Ok(s) => s,
            Err(msg) => {
                bad(out, msg);
                continue;
            }
        };
        let doc = match docs.as_ref().and_then(|d| d[i]) {
            Some(d) => match check_doc(d) {
                Ok(d) => Some(d),
                Err(msg) => {
                    bad(out, msg);
                    continue;
                }
            },
            None => None,
        };
        let position = match positions.as_ref().and_then(|p| p[i]) {
            None => None,
            Some(_) if doc.is_none() => {
                bad(
                    out,
                    "position without doc (a position is within a document)".into(),
                );
                continue;
            }
            Some(v) => match u32::try_from(v) {
                Ok(p) => Some(p),
                Err(_) => {
                    bad(out, "position is not an integer in 0..2^32".into());
                    continue;
                }
            },
        };
        out.rows.push(Row {
            id,
            text: t,
            labels: set,
            line,
            doc,
            position,
        });
    }
    Ok(())
}

/// The values of a column of text, whichever Arrow type holds it (Utf8, LargeUtf8, Utf8View,
/// or a dictionary of any of them, as pandas writes categoricals); `None` for another type.
fn strings(col: &dyn Array) -> Option<Vec<Option<&str>>> {
    if let Some(d) = col.as_any_dictionary_opt() {
        let values = strings(d.values().as_ref())?;
        let keys = d.normalized_keys();
        return Some(
            (0..col.len())
                .map(|i| {
                    if col.is_null(i) {
                        None
                    } else {
                        keys.get(i).and_then(|&k| values.get(k).copied().flatten())
                    }
                })
                .collect(),
        );
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().iter().collect()),
        DataType::LargeUtf8 => Some(col.as_string::<i64>().iter().collect()),
        DataType::Utf8View => Some(col.as_string_view().iter().collect()),
        _ => None,
    }
}

/// The values of an integer column of any width and signedness; `None` for another type.
fn integers(col: &dyn Array) -> Option<Vec<Option<i128>>> {
    macro_rules! values {
        ($t:ty) => {
            Some(
                col.as_primitive::<$t>()
                    .iter()
                    .map(|v| v.map(i128::from))
                    .collect(),
            )
        };
    }
    match col.data_type() {
        DataType::Int8 => values!(Int8Type),
        DataType::Int16 => values!(Int16Type),
        DataType::Int32 => values!(Int32Type),
        DataType::Int64 => values!(Int64Type),
        DataType::UInt8 => values!(UInt8Type),
        DataType::UInt16 => values!(UInt16Type),
        DataType::UInt32 => values!(UInt32Type),
        DataType::UInt64 => values!(UInt64Type),
        _ => None,
    }
}

fn is_list(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
    )
}

/// Row `i`'s labels from a list column (List, LargeList, ListView, LargeListView or
/// FixedSizeList) of names of any text type.
fn list_labels(col: &dyn Array, i: usize) -> std::result::Result<LabelSet, String> {
    if col.is_null(i) {
        return Err("labels are null".into());
    }
    let item = match col.data_type() {
        DataType::List(_) => col.as_list::<i32>().value(i),
        DataType::LargeList(_) => col.as_list::<i64>().value(i),
        DataType::ListView(_) => col.as_list_view::<i32>().value(i),
        DataType::LargeListView(_) => col.as_list_view::<i64>().value(i),
        DataType::FixedSizeList(..) => col.as_fixed_size_list().value(i),
        other => return Err(format!("labels are {other}, not a list of names")),
    };
    let names = strings(item.as_ref())
        .ok_or_else(|| format!("labels are a list of {}, not of text", item.data_type()))?;
    let mut set = LabelSet::EMPTY;
    for name in names {
        let name = name.ok_or("a label is null")?;
        let e: Emotion = name.parse().map_err(|e| format!("{e}"))?;
        set.insert(e);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{
        FixedSizeListBuilder, LargeListBuilder, LargeListViewBuilder, LargeStringBuilder,
        ListBuilder, ListViewBuilder, StringBuilder, StringViewBuilder,
    };
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, DictionaryArray, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray,
        PrimitiveArray, StringArray, StringViewArray, UInt16Array, UInt32Array, UInt64Array,
        UInt8Array,
    };
    use std::sync::Arc;

    const TEXTS: [&str; 3] = ["我 很 担心", "开心", "期待 明天"];
    const LABELS: [&[&str]; 3] = [&["Anxiety", "Love"], &["Joy"], &["Expect"]];

    fn parse(columns: Vec<(&str, ArrayRef)>) -> Parsed {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut out = Parsed {
            format: Format::Parquet,
            encoding: Encoding::Utf8,
            rows: Vec::new(),
            bad: Vec::new(),
        };
        read_batch(Path::new("x.parquet"), &batch, &mut 0, &mut out).unwrap();
        out
    }

    /// Every text type: Utf8, LargeUtf8, Utf8View, dictionary-encoded.
    fn texts() -> Vec<ArrayRef> {
        let dict: DictionaryArray<Int32Type> = TEXTS.iter().copied().collect();
        vec![
            Arc::new(StringArray::from(TEXTS.to_vec())),
            Arc::new(LargeStringArray::from(TEXTS.to_vec())),
            Arc::new(StringViewArray::from(TEXTS.to_vec())),
            Arc::new(dict),
        ]
    }

    /// Every list type, of Utf8, LargeUtf8 or Utf8View names; and one string per row.
    fn labels() -> Vec<ArrayRef> {
        macro_rules! list {
            ($b:expr) => {{
                let mut b = $b;
                for set in LABELS {
                    for l in set {
                        b.values().append_value(l);
                    }
                    b.append(true);
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let mut fixed = FixedSizeListBuilder::new(StringBuilder::new(), 1);
        for set in LABELS {
            fixed.values().append_value(set[0]);
            fixed.append(true);
        }
        vec![
            list!(ListBuilder::new(StringBuilder::new())),
            list!(LargeListBuilder::new(LargeStringBuilder::new())),
            list!(ListBuilder::new(StringViewBuilder::new())),
            list!(ListViewBuilder::new(StringBuilder::new())),
            list!(LargeListViewBuilder::new(LargeStringBuilder::new())),
            Arc::new(fixed.finish()),
            Arc::new(LargeStringArray::from(vec![
                "Anxiety,Love",
                "Joy",
                "['Expect']",
            ])),
        ]
    }

    /// Every integer type, holding 7, 8, 9.
    fn integers() -> Vec<ArrayRef> {
        vec![
            Arc::new(Int8Array::from(vec![7, 8, 9])),
            Arc::new(Int16Array::from(vec![7, 8, 9])),
            Arc::new(Int32Array::from(vec![7, 8, 9])),
            Arc::new(Int64Array::from(vec![7, 8, 9])),
            Arc::new(UInt8Array::from(vec![7, 8, 9])),
            Arc::new(UInt16Array::from(vec![7, 8, 9])),
            Arc::new(UInt32Array::from(vec![7, 8, 9])),
            Arc::new(UInt64Array::from(vec![7, 8, 9])),
        ]
    }

    #[test]
    fn every_string_list_and_integer_type_reads_the_same_rows() {
        let want: Vec<(u64, &str)> = (0..3).map(|i| (7 + i as u64, TEXTS[i])).collect();
        for text in texts() {
            for labels in labels() {
                for id in integers() {
                    let p = parse(vec![
                        ("id", id.clone()),
                        ("text", text.clone()),
                        ("labels", labels.clone()),
                        ("doc", text.clone()),
                        ("position", id.clone()),
                    ]);
                    assert!(p.bad.is_empty(), "{:?}: {:?}", labels.data_type(), p.bad);
                    let got: Vec<(u64, &str)> = (p.rows.iter())
                        .map(|r| (r.id.unwrap(), r.text.as_str()))
                        .collect();
                    assert_eq!(got, want);
                    for (r, set) in p.rows.iter().zip(LABELS) {
                        assert!(r.labels.contains(set[0].parse().unwrap()));
                    }
                    assert!(p.rows[0].labels.contains(Emotion::Anxiety));
                    assert_eq!(p.rows[2].position, Some(9));
                    assert_eq!(p.rows[1].doc.as_deref(), Some("开心"));
                }
            }
        }
    }

    #[test]
    fn null_ids_negative_ids_and_positions_without_a_document_are_bad_rows() {
        let text: ArrayRef = Arc::new(StringArray::from(TEXTS.to_vec()));
        let labels: ArrayRef = Arc::new(StringArray::from(vec!["Joy", "Joy", "Joy"]));
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(100), None, Some(-1)]));
        let p = parse(vec![
            ("id", ids),
            ("text", text.clone()),
            ("labels", labels.clone()),
        ]);
        assert_eq!(p.rows.len(), 1);
        assert_eq!(p.bad[0].0, 2);
        assert!(p.bad[0].1.contains("id is null"), "{:?}", p.bad);
        assert!(p.bad[1].1.contains("negative id"), "{:?}", p.bad);
        let pos: ArrayRef = Arc::new(PrimitiveArray::<Int32Type>::from(vec![Some(0), None, None]));
        let docs: ArrayRef = Arc::new(StringArray::from(vec![None, Some("d"), Some("a\0b")]));
        let p = parse(vec![
            ("text", text),
            ("labels", labels),
            ("doc", docs),
            ("position", pos),
        ]);
        assert_eq!(p.rows.len(), 1);
        assert!(p.bad[0].1.contains("position without doc"), "{:?}", p.bad);
        assert!(p.bad[1].1.contains("control character"), "{:?}", p.bad);
    }
}
