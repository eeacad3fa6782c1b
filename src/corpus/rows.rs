//! The rows a reader returns, whatever the format (the text formats in [`super::read`],
//! Parquet in [`super::parquet`]), and the rules every row's fields follow.

use crate::labels::LabelSet;

/// Layout of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ID,Text,Labels` with labels as a Python list string: `"['Love', 'Joy']"` (the seed).
    SeedList,
    /// `Text,'Love','Joy',…` with one 0/1 column per emotion, in any order.
    OneHot,
    /// One JSON object per line: `{"text": …, "labels": […]}`, optional `"id"`.
    Jsonl,
    /// Parquet with `text` and `labels` columns, optional `id` (see [`super::parquet`]).
    Parquet,
}

impl Format {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Format::SeedList => "seed-list-csv",
            Format::OneHot => "one-hot-csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

/// Text encoding of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 without BOM.
    Utf8,
    /// UTF-8 with a byte-order mark.
    Utf8Bom,
    /// GB18030 (a superset of GBK/GB2312).
    Gb18030,
}

impl Encoding {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Utf8Bom => "utf-8-bom",
            Encoding::Gb18030 => "gb18030",
        }
    }
}

/// One input row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The file's id, when it has an id column/key.
    pub id: Option<u64>,
    /// The sentence.
    pub text: String,
    /// Gold labels.
    pub labels: LabelSet,
    /// 1-based line where the row starts.
    pub line: u64,
    /// The document the sentence belongs to (a CSV's document column, JSONL's `doc`); `None`
    /// when the file gives none (the file is then one stream in row order).
    pub doc: Option<String>,
    /// Its position in the document (JSONL's `position`); `None` keeps file order.
    pub position: Option<u32>,
}

/// A file read into rows.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The detected layout.
    pub format: Format,
    /// The detected encoding.
    pub encoding: Encoding,
    /// Good rows, in file order.
    pub rows: Vec<Row>,
    /// (line, what is wrong) for every bad row.
    pub bad: Vec<(usize, String)>,
}

/// A value from the input, quoted for a message (cut when long).
pub(crate) fn quote(s: &str) -> String {
    format!("{:?}", crate::error::snippet(s, 60))
}

/// Text rule: not empty after trimming, no control characters other than tab and newline
/// (a NUL byte or an escape sequence is damage, not language).
pub(crate) fn check_text(s: &str) -> std::result::Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty text".to_string());
    }
    if let Some((at, c)) = t
        .char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!(
            "text contains the control character U+{:04X} at byte {at} (a NUL byte or other damage); remove it",
            c as u32
        ));
    }
    Ok(t.to_string())
}

/// Document name rule: not empty after trimming, no control characters (a NUL byte in a
/// name is damage, as in text).
pub fn check_doc(s: &str) -> std::result::Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty doc (name the document, or leave the field out)".to_string());
    }
    if let Some((at, c)) = t.char_indices().find(|&(_, c)| c.is_control()) {
        return Err(format!(
            "doc contains the control character U+{:04X} at byte {at} (a NUL byte or other damage); remove it",
            c as u32
        ));
    }
    Ok(t.to_string())
}

/// Labels rule: at least one of the eight emotions (every sentence of this corpus carries
/// one; a row without any is a labelling mistake, not a "neutral" class).
pub(crate) fn nonempty(set: LabelSet, raw: &str) -> std::result::Result<LabelSet, String> {
    if set.is_empty() {
        Err(format!(
            "no label in {} (every row needs at least one of Love, Joy, Anxiety, Sorrow, Expect, Hate, Surprise, Anger)",
            quote(raw)
        ))
    } else {
        Ok(set)
    }
}
