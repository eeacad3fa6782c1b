//! Reading labelled sentences from Parquet: `emoknow export parquet`'s files, or any file with a
//! `text` column (Utf8) and a `labels` column (List<Utf8> of emotion names, or one Utf8 string
//! in any format the CSV reader takes), and optionally `id` (an unsigned or signed integer),
//! `doc` (Utf8) and `position` (an integer).
//! Other columns are ignored: they are the export's knowledge and vectors. A row's "line" in
//! messages is its 1-based row number.

use super::read::{check_text, nonempty, Encoding, Format, Parsed, Row};
use crate::error::{Error, Result};
use crate::labels::{Emotion, LabelSet};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// The four bytes every Parquet file starts (and ends) with.
pub const MAGIC: &[u8; 4] = b"PAR1";

fn err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Reads `bytes` (a whole Parquet file) into rows; `path` names it in messages.
pub fn parse_parquet(path: &Path, bytes: Vec<u8>) -> Result<Parsed> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .map_err(|e| err(path, e))?
        .build()
        .map_err(|e| err(path, e))?;
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
    let text = batch
        .column_by_name("text")
        .ok_or_else(|| missing("text"))?;
    let labels = batch
        .column_by_name("labels")
        .ok_or_else(|| missing("labels"))?;
    let ids = batch.column_by_name("id");
    let docs = match batch.column_by_name("doc") {
        None => None,
        Some(c) => Some(c.as_string_opt::<i32>().ok_or_else(|| {
            Error::input(
                path,
                0,
                format!("column `doc` is {}, not Utf8", c.data_type()),
            )
        })?),
    };
    let positions = batch.column_by_name("position");
    let text = text.as_string_opt::<i32>().ok_or_else(|| {
        Error::input(
            path,
            0,
            format!("column `text` is {}, not Utf8", text.data_type()),
        )
    })?;
    for i in 0..batch.num_rows() {
        *row_no += 1;
        let line = *row_no;
        let bad = |out: &mut Parsed, msg: String| out.bad.push((line as usize, msg));
        if text.is_null(i) {
            bad(out, "text is null".into());
            continue;
        }
        let t = match check_text(text.value(i)) {
            Ok(t) => t,
            Err(msg) => {
                bad(out, msg);
                continue;
            }
        };
        let id = match ids {
            None => None,
            Some(col) if col.is_null(i) => None,
            Some(col) => match col.data_type() {
                DataType::UInt64 => Some(col.as_primitive::<UInt64Type>().value(i)),
                DataType::Int64 => match u64::try_from(col.as_primitive::<Int64Type>().value(i)) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        bad(out, "negative id".into());
                        continue;
                    }
                },
                other => {
                    return Err(Error::input(
                        path,
                        0,
                        format!("column `id` is {other}, not an integer"),
                    ))
                }
            },
        };
        let set = match read_labels(labels, i).and_then(|s| nonempty(s, "[]")) {
            Ok(s) => s,
            Err(msg) => {
                bad(out, msg);
                continue;
            }
        };
        let doc = docs
            .filter(|d| !d.is_null(i))
            .map(|d| d.value(i).to_string());
        let position = match positions {
            Some(col) if !col.is_null(i) => {
                let v = match col.data_type() {
                    DataType::UInt32 => Some(u64::from(col.as_primitive::<UInt32Type>().value(i))),
                    DataType::UInt64 => Some(col.as_primitive::<UInt64Type>().value(i)),
                    DataType::Int64 => u64::try_from(col.as_primitive::<Int64Type>().value(i)).ok(),
                    _ => None,
                };
                match v.and_then(|v| u32::try_from(v).ok()) {
                    Some(p) => Some(p),
                    None => {
                        bad(out, "position is not an integer in 0..2^32".into());
                        continue;
                    }
                }
            }
            _ => None,
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

/// Row `i`'s labels: a list of names, or one string (`Love,Joy`, `['Love', 'Joy']`).
fn read_labels(col: &dyn Array, i: usize) -> std::result::Result<LabelSet, String> {
    if col.is_null(i) {
        return Err("labels are null".into());
    }
    match col.data_type() {
        DataType::List(_) => {
            let list = col.as_list::<i32>().value(i);
            let names = list
                .as_string_opt::<i32>()
                .ok_or_else(|| format!("labels are a list of {}, not of Utf8", list.data_type()))?;
            let mut set = LabelSet::EMPTY;
            for j in 0..names.len() {
                if names.is_null(j) {
                    return Err("a label is null".into());
                }
                let e: Emotion = names.value(j).parse().map_err(|e| format!("{e}"))?;
                set.insert(e);
            }
            Ok(set)
        }
        DataType::Utf8 => {
            LabelSet::parse_list(col.as_string::<i32>().value(i)).map_err(|e| format!("{e}"))
        }
        other => Err(format!("labels are {other}, not a list of names")),
    }
}
