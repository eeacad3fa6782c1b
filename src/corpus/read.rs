//! Reading labelled sentences from the three text formats, with encoding detection (and
//! Parquet, handed to [`super::parquet`]).
//!
//! Formats are told apart by content, not by file name: Parquet's magic bytes `PAR1` mean
//! Parquet; a first line starting with `{` means
//! JSON Lines; otherwise a CSV header with `Labels` means the seed's list format and a header
//! naming all eight emotions means one-hot. Encodings: UTF-8 (with or without BOM) or GB18030,
//! detected per file; bytes valid in neither are an error at their line.

use super::rows::{check_doc, check_text, nonempty, quote};
pub use super::rows::{Encoding, Format, Parsed, Row};
use crate::error::{Error, Result};
use crate::labels::{Emotion, LabelSet, NUM_EMOTIONS};
use std::collections::HashMap;
use std::path::Path;

/// How to read a file beyond what its content tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// A CSV column naming each row's document (matched like the other headers:
    /// case-insensitive, quotes ignored). The only extra column a CSV may have.
    pub doc_column: Option<String>,
}

/// Decoded text plus the 1-based lines whose bytes could not be decoded.
struct Decoded {
    text: String,
    encoding: Encoding,
    bad_lines: Vec<usize>,
}

fn decode(bytes: &[u8]) -> Decoded {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return decode_lines(rest, Encoding::Utf8Bom);
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Decoded {
            text: s.to_string(),
            encoding: Encoding::Utf8,
            bad_lines: Vec::new(),
        };
    }
    // Not valid UTF-8 as a whole: if most non-ASCII lines are UTF-8 the file is UTF-8 with
    // some bad lines; otherwise GB18030. (GB18030 bytes are almost never valid UTF-8.)
    let (mut utf8, mut other) = (0usize, 0usize);
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_ascii() {
            continue;
        }
        if std::str::from_utf8(line).is_ok() {
            utf8 += 1;
        } else {
            other += 1;
        }
    }
    let enc = if utf8 > other {
        Encoding::Utf8
    } else {
        Encoding::Gb18030
    };
    decode_lines(bytes, enc)
}

/// Decodes line by line so an undecodable byte is pinned to its line. Newline (0x0A) never
/// occurs inside a GB18030 or UTF-8 multi-byte sequence, so splitting first is safe.
fn decode_lines(bytes: &[u8], enc: Encoding) -> Decoded {
    let mut text = String::with_capacity(bytes.len() * 3 / 2);
    let mut bad_lines = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let ok = match enc {
            Encoding::Gb18030 => {
                let (s, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(line);
                text.push_str(&s);
                !had_errors
            }
            _ => match std::str::from_utf8(line) {
                Ok(s) => {
                    text.push_str(s);
                    true
                }
                Err(_) => {
                    text.push_str(&String::from_utf8_lossy(line));
                    false
                }
            },
        };
        if !ok {
            bad_lines.push(i + 1);
        }
    }
    Decoded {
        text,
        encoding: enc,
        bad_lines,
    }
}

/// Reads `path` in whatever supported format and encoding it has.
///
/// Bad rows do not stop the read: they are listed in [`Parsed::bad`], so the caller decides
/// between refusing the batch and skipping them. Errors only when the file cannot be read or
/// its header fits no format.
pub fn read_file(path: &Path) -> Result<Parsed> {
    read_file_with(path, &ReadOptions::default())
}

/// [`read_file`] with options (a CSV's document column).
pub fn read_file_with(path: &Path, opts: &ReadOptions) -> Result<Parsed> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_bytes_with(path, &bytes, opts)
}

/// [`read_file`] on bytes already in memory; `path` is used in messages only.
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    parse_bytes_with(path, bytes, &ReadOptions::default())
}

/// [`parse_bytes`] with options. A document column named in `opts` must exist in a CSV's
/// header, and is refused for JSON Lines and Parquet, which carry `doc` (and optionally
/// `position`) in each row instead.
pub fn parse_bytes_with(path: &Path, bytes: &[u8], opts: &ReadOptions) -> Result<Parsed> {
    let column_of_csv = |format: &str| match &opts.doc_column {
        Some(c) => Err(Error::input(
            path,
            0,
            format!(
                "a document column ({c:?}) is for CSV files, and this is {format}: its rows \
                 carry their document in a `doc` field"
            ),
        )),
        None => Ok(()),
    };
    if bytes.starts_with(super::parquet::MAGIC) {
        column_of_csv("Parquet")?;
        let mut parsed = super::parquet::parse_parquet(path, bytes.to_vec())?;
        refuse_position_conflicts(&mut parsed);
        return Ok(parsed);
    }
    let dec = decode(bytes);
    let first = dec
        .text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut parsed = if first.trim_start().starts_with('{') {
        column_of_csv("JSON Lines")?;
        parse_jsonl(&dec.text)
    } else {
        parse_csv(path, &dec.text, opts.doc_column.as_deref())?
    };
    parsed.encoding = dec.encoding;
    if !dec.bad_lines.is_empty() {
        let msg = format!(
            "bytes that are neither {} nor any other supported encoding (UTF-8, GB18030); re-save the file as UTF-8",
            dec.encoding.name()
        );
        // A row spans lines [row.line, next row's line): drop rows touching a bad line.
        let starts: Vec<u64> = parsed.rows.iter().map(|r| r.line).collect();
        let mut keep = vec![true; parsed.rows.len()];
        for &bl in &dec.bad_lines {
            let bl = bl as u64;
            if let Some(i) = starts.iter().rposition(|&s| s <= bl) {
                keep[i] = false;
            }
            parsed.bad.push((bl as usize, msg.clone()));
        }
        let mut k = keep.into_iter();
        parsed.rows.retain(|_| k.next().unwrap_or(true));
        parsed.bad.sort_by_key(|b| b.0);
        parsed.bad.dedup_by_key(|b| b.0);
    }
    refuse_position_conflicts(&mut parsed);
    Ok(parsed)
}

fn header_key(s: &str) -> String {
    s.trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_ascii_lowercase()
}

enum Columns {
    Seed {
        id: Option<usize>,
        text: usize,
        labels: usize,
    },
    OneHot {
        id: Option<usize>,
        text: usize,
        emotions: [usize; NUM_EMOTIONS],
    },
}

fn parse_csv(path: &Path, text: &str, doc_column: Option<&str>) -> Result<Parsed> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = rdr.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(Error::input(path, 1, format!("unreadable CSV header: {e}"))),
        None => return Err(Error::input(path, 0, "the file is empty")),
    };
    let keys: Vec<String> = header.iter().map(header_key).collect();
    let find = |name: &str| keys.iter().position(|k| k == name);
    let id = find("id");
    let text_col = find("text").ok_or_else(|| {
        Error::input(
            path,
            1,
            format!(
                "header {:?} has no Text column; expected `ID,Text,Labels` (seed), `Text,'Love',…,'Anger'` (one-hot) or JSON Lines",
                header.iter().collect::<Vec<_>>().join(",")
            ),
        )
    })?;
    let cols = if let Some(labels) = find("labels").or_else(|| find("label")) {
        Columns::Seed {
            id,
            text: text_col,
            labels,
        }
    } else {
        let mut emotions = [0usize; NUM_EMOTIONS];
        for e in Emotion::ALL {
            emotions[e.index()] = find(&e.name().to_ascii_lowercase()).ok_or_else(|| {
                Error::input(
                    path,
                    1,
                    format!("header has neither a Labels column nor a column for {e} (one-hot format names all eight emotions)"),
                )
            })?;
        }
        Columns::OneHot {
            id,
            text: text_col,
            emotions,
        }
    };
    let doc_col = match doc_column {
        None => None,
        Some(name) => Some(find(&header_key(name)).ok_or_else(|| {
            Error::input(
                path,
                1,
                format!(
                    "the header {:?} has no document column {}",
                    header.iter().collect::<Vec<_>>().join(","),
                    quote(name)
                ),
            )
        })?),
    };
    let known: Vec<usize> = match &cols {
        Columns::Seed { id, text, labels } => [Some(*text), Some(*labels), *id].to_vec(),
        Columns::OneHot { id, text, emotions } => emotions
            .iter()
            .map(|&c| Some(c))
            .chain([Some(*text), *id])
            .collect(),
    }
    .into_iter()
    .chain([doc_col])
    .flatten()
    .collect();
    if let Some((i, raw)) = header.iter().enumerate().find(|(i, _)| !known.contains(i)) {
        return Err(Error::input(
            path,
            1,
            format!(
                "column {} ({}) is not ID, Text, Labels or one of the eight emotions Love, Joy, Anxiety, Sorrow, Expect, Hate, Surprise, Anger; remove or rename it (its values would be dropped), or read it as the file's document column",
                i + 1,
                quote(raw)
            ),
        ));
    }
    let width = header.len();
    let format = match cols {
        Columns::Seed { .. } => Format::SeedList,
        Columns::OneHot { .. } => Format::OneHot,
    };
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                bad.push((line, format!("unreadable CSV record: {e}")));
                continue;
            }
        };
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.len() == 1 && rec[0].trim().is_empty() {
            continue; // blank line
        }
        match parse_csv_row(&rec, &cols, width, line) {
            Ok(mut r) => {
                if let Some(c) = doc_col {
                    match check_doc(&rec[c]) {
                        Ok(d) => r.doc = Some(d),
                        Err(msg) => {
                            bad.push((line as usize, msg));
                            continue;
                        }
                    }
                }
                rows.push(r)
            }
            Err(msg) => bad.push((line as usize, msg)),
        }
    }
    Ok(Parsed {
        format,
        encoding: Encoding::Utf8,
        rows,
        bad,
    })
}

fn parse_id(s: &str) -> std::result::Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("ID {} is not a non-negative integer", quote(s)))
}

/// Rows whose place in their document conflicts with an earlier row's: a position given twice
/// in one document, or a document giving positions on some rows and not on others (a row
/// without one would take its ordinal, which may be another row's position). `places[i]` is
/// row `i`'s (document, position); `name(i)` names row `i` in messages (its line). Returns
/// each offending row's index with the message.
pub fn position_conflicts(
    places: &[(Option<&str>, Option<u32>)],
    name: impl Fn(usize) -> String,
) -> Vec<(usize, String)> {
    #[derive(Default)]
    struct Seen {
        at: HashMap<u32, usize>,
        with: Option<usize>,
        without: Option<usize>,
    }
    let mut docs: HashMap<&str, Seen> = HashMap::new();
    let mut out = Vec::new();
    for (i, &(doc, position)) in places.iter().enumerate() {
        let Some(doc) = doc else { continue };
        let seen = docs.entry(doc).or_default();
        let mixed = match position {
            Some(p) => {
                if let Some(&j) = seen.at.get(&p) {
                    out.push((
                        i,
                        format!(
                            "document {doc:?} has position {p} twice ({} and here): positions within a document must differ",
                            name(j)
                        ),
                    ));
                    continue;
                }
                seen.at.insert(p, i);
                seen.with.get_or_insert(i);
                seen.without
            }
            None => {
                seen.without.get_or_insert(i);
                seen.with
            }
        };
        if let Some(j) = mixed {
            out.push((
                i,
                format!(
                    "document {doc:?} gives a position on some rows ({}) and not on others: give every row of a document a position, or none",
                    name(if position.is_some() { seen.without.unwrap_or(j) } else { j })
                ),
            ));
        }
    }
    out
}

/// Moves the rows of `parsed` whose place conflicts ([`position_conflicts`]) to its bad rows.
fn refuse_position_conflicts(parsed: &mut Parsed) {
    let places: Vec<(Option<&str>, Option<u32>)> = (parsed.rows.iter())
        .map(|r| (r.doc.as_deref(), r.position))
        .collect();
    let lines: Vec<u64> = parsed.rows.iter().map(|r| r.line).collect();
    let conflicts = position_conflicts(&places, |i| format!("line {}", lines[i]));
    if conflicts.is_empty() {
        return;
    }
    let mut drop = vec![false; parsed.rows.len()];
    for (i, msg) in conflicts {
        drop[i] = true;
        parsed.bad.push((lines[i] as usize, msg));
    }
    let mut d = drop.into_iter();
    parsed.rows.retain(|_| !d.next().unwrap_or(false));
    parsed.bad.sort_by_key(|b| b.0);
    parsed.bad.dedup_by_key(|b| b.0);
}

/// A label list cell as the seed writes it, `['Love', 'Joy']` (brackets and quotes optional,
/// but balanced when present), or a comma-separated list `Love,Joy`.
fn parse_label_cell(raw: &str) -> std::result::Result<LabelSet, String> {
    let t = raw.trim();
    let open = t.starts_with('[');
    let close = t.ends_with(']');
    if open != close || (open && t.len() < 2) {
        return Err(format!(
            "unterminated label list {} (expected e.g. ['Love', 'Joy'])",
            quote(raw)
        ));
    }
    if t.matches('\'').count() % 2 == 1 || t.matches('"').count() % 2 == 1 {
        return Err(format!(
            "unbalanced quotes in label list {} (expected e.g. ['Love', 'Joy'])",
            quote(raw)
        ));
    }
    let set = LabelSet::parse_list(t).map_err(|e| {
        format!(
            "unknown emotion {} in Labels {} (expected Love, Joy, Anxiety, Sorrow, Expect, Hate, Surprise or Anger)",
            quote(&e.0),
            quote(raw)
        )
    })?;
    nonempty(set, raw)
}

fn parse_csv_row(
    rec: &csv::StringRecord,
    cols: &Columns,
    width: usize,
    line: u64,
) -> std::result::Result<Row, String> {
    if rec.len() != width {
        return Err(format!(
            "{} columns, the header has {width} (quote a text containing commas)",
            rec.len()
        ));
    }
    let (id, text, labels) = match cols {
        Columns::Seed { id, text, labels } => (*id, *text, parse_label_cell(&rec[*labels])?),
        Columns::OneHot { id, text, emotions } => {
            let mut set = LabelSet::EMPTY;
            for e in Emotion::ALL {
                match rec[emotions[e.index()]].trim() {
                    "1" | "1.0" => set.insert(e),
                    "0" | "0.0" => {}
                    v => return Err(format!("column {e} is {}, expected 0 or 1", quote(v))),
                }
            }
            (*id, *text, nonempty(set, "all eight columns 0")?)
        }
    };
    Ok(Row {
        id: id.map(|c| parse_id(&rec[c])).transpose()?,
        text: check_text(&rec[text])?,
        labels,
        line,
        doc: None,
        position: None,
    })
}

fn parse_jsonl(text: &str) -> Parsed {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_json_row(line, i as u64 + 1) {
            Ok(r) => rows.push(r),
            Err(msg) => bad.push((i + 1, msg)),
        }
    }
    Parsed {
        format: Format::Jsonl,
        encoding: Encoding::Utf8,
        rows,
        bad,
    }
}

fn parse_json_row(line: &str, lineno: u64) -> std::result::Result<Row, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON ({e}): {}", quote(line)))?;
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let text = obj
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or("missing string field \"text\"")?;
    let labels = match obj.get("labels") {
        Some(serde_json::Value::Array(a)) => {
            let mut set = LabelSet::EMPTY;
            for x in a {
                let name = x.as_str().ok_or("\"labels\" must hold strings")?;
                set.insert(name.parse().map_err(|_| {
                    format!(
                        "unknown emotion {} in \"labels\" (expected Love, Joy, Anxiety, Sorrow, Expect, Hate, Surprise or Anger)",
                        quote(name)
                    )
                })?);
            }
            nonempty(set, "[]")?
        }
        Some(serde_json::Value::String(s)) => parse_label_cell(s)?,
        Some(_) => return Err("\"labels\" must be a list of names".into()),
        None => return Err("missing field \"labels\"".into()),
    };
    let id = match obj.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(n.as_u64().ok_or(format!(
            "id {} is not a non-negative integer",
            quote(&n.to_string())
        ))?),
        Some(serde_json::Value::String(s)) => Some(parse_id(s)?),
        Some(_) => return Err("\"id\" must be an integer".into()),
    };
    let doc = match obj.get("doc") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(check_doc(s)?),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err("\"doc\" must be a non-empty string or a number".into()),
    };
    let position = match obj.get("position") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or(format!(
                    "position {} is not an integer in 0..=4294967295",
                    quote(&n.to_string())
                ))?,
        ),
        Some(_) => return Err("\"position\" must be a non-negative integer".into()),
    };
    if position.is_some() && doc.is_none() {
        return Err("\"position\" without \"doc\" (a position is within a document)".into());
    }
    Ok(Row {
        id,
        text: check_text(text)?,
        labels,
        line: lineno,
        doc,
        position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Parsed {
        parse_bytes(Path::new("x.csv"), bytes).unwrap()
    }

    #[test]
    fn seed_format_utf8() {
        let p = parse(b"ID,Text,Labels\n1,a b,\"['Love', 'Joy']\"\n2,c,['Joy']\n");
        assert_eq!(p.format, Format::SeedList);
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0].id, Some(1));
        assert_eq!(p.rows[0].labels.to_string(), "Love,Joy");
        assert_eq!(p.rows[1].line, 3);
    }

    #[test]
    fn seed_format_gb18030() {
        let text = "ID,Text,Labels\n1,现在 好 终于 如愿以偿,['Joy']\n";
        let (bytes, _, _) = encoding_rs::GB18030.encode(text);
        let p = parse(&bytes);
        assert_eq!(p.encoding, Encoding::Gb18030);
        assert_eq!(p.rows[0].text, "现在 好 终于 如愿以偿");
    }

    #[test]
    fn one_hot_any_column_order_and_bom() {
        let p = parse(
            "\u{feff}Text,'Joy','Love','Anxiety','Sorrow','Expect','Hate','Surprise','Anger'\n好,1,0,0,0,0,0,0,1\n"
                .as_bytes(),
        );
        assert_eq!(p.encoding, Encoding::Utf8Bom);
        assert_eq!(p.format, Format::OneHot);
        assert_eq!(p.rows[0].labels.to_string(), "Joy,Anger");
        assert_eq!(p.rows[0].id, None);
    }

    #[test]
    fn jsonl_rows() {
        let p = parse(
            "{\"text\":\"好\",\"labels\":[\"Joy\"]}\n\n{\"id\":7,\"text\":\"坏\",\"labels\":\"Hate,Anger\"}\n"
                .as_bytes(),
        );
        assert_eq!(p.format, Format::Jsonl);
        assert_eq!(p.rows[1].id, Some(7));
        assert_eq!(p.rows[1].line, 3);
    }

    #[test]
    fn bad_rows_are_located() {
        let p = parse(
            b"ID,Text,Labels\n1,ok,['Joy']\n2,,['Joy']\n3,x,['Happy']\n4,x,['Joy'],extra\nz,x,['Joy']\n",
        );
        assert_eq!(p.rows.len(), 1);
        let lines: Vec<usize> = p.bad.iter().map(|b| b.0).collect();
        assert_eq!(lines, [3, 4, 5, 6]);
        assert!(p.bad[0].1.contains("empty text"));
        assert!(p.bad[1].1.contains("Happy"));
        assert!(p.bad[2].1.contains("4 columns"));
    }

    #[test]
    fn undecodable_line_is_named() {
        let mut bytes = "ID,Text,Labels\n1,好,['Joy']\n2,".as_bytes().to_vec();
        bytes.extend_from_slice(&[0xFF, 0xFF]);
        bytes.extend_from_slice(b",['Joy']\n3,\xe5\x9d\x8f,['Hate']\n");
        let p = parse(&bytes);
        assert_eq!(p.encoding, Encoding::Utf8);
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.bad[0].0, 3);
    }

    #[test]
    fn header_without_text_is_an_error() {
        let e = parse_bytes(Path::new("f.csv"), b"a,b\n1,2\n").unwrap_err();
        assert!(e.to_string().starts_with("f.csv:1:"), "{e}");
    }

    #[test]
    fn label_cells_are_strict_and_never_empty() {
        for ok in ["['Love', 'Joy']", "['Joy']", "Love,Joy", "[\"Hate\"]"] {
            assert!(parse_label_cell(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("['Love'", "unterminated"),
            ("'Love']", "unterminated"),
            ("['Love]", "unbalanced quotes"),
            ("[]", "no label"),
            ("", "no label"),
            ("['Happy']", "unknown emotion"),
        ] {
            let e = parse_label_cell(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn control_characters_and_unknown_columns_are_refused() {
        assert!(check_text("好\0").unwrap_err().contains("U+0000"));
        assert!(check_text("a\u{1b}[31m").is_err());
        assert_eq!(check_text(" 好\t的 ").unwrap(), "好\t的");
        let e = parse_bytes(
            Path::new("f.csv"),
            b"ID,Text,Labels,Source\n1,a,['Joy'],x\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("column 4 (\"Source\")"), "{e}");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(100_000);
        let p = parse(format!("ID,Text,Labels\n{long},a,['Joy']\n").as_bytes());
        assert!(p.bad[0].1.len() < 300, "{}", p.bad[0].1.len());
    }
}
