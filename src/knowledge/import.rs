//! Importing rationales written elsewhere (LLaMA-Factory's `generated_predictions.jsonl`) as
//! knowledge: row i of the file is about example `first_id + i`.

use crate::error::{Error, Result};
use crate::knowledge::sanitize::{is_missing_value, sanitize, Lexicon};
use crate::store::records::{now_secs, Knowledge, KnowledgeKind, Missing, PromptKind};
use crate::store::Store;
use serde::Serialize;
use std::path::Path;

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Source name the knowledge is stored under (`qwen-max`, `chatglm3-lora`).
    pub source: String,
    /// JSON field holding the rationale (`label` or `predict` in LLaMA-Factory output).
    pub field: String,
    /// Example id of the file's first row.
    pub first_id: u64,
    /// Model name recorded with each record (defaults to the source name).
    pub model: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    /// Rows read.
    pub rows: usize,
    /// Knowledge records written.
    pub imported: usize,
    /// Rows whose value was missing ("nan", empty), recorded as missing.
    pub missing: usize,
    /// Imported rows whose text names no label (kept as knowledge; their asserted set is empty).
    pub no_labels: usize,
}

/// Reads one string field per line of a JSON Lines file: `(line, value)`, `None` when the
/// value is absent, null, empty or the literal `nan`.
///
/// Errors name the line of invalid JSON or of a non-string value.
pub fn read_jsonl_field(path: &Path, field: &str) -> Result<Vec<(usize, Option<String>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                bad.push((i + 1, format!("invalid JSON: {e}")));
                continue;
            }
        };
        let value = match v.get(field) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if is_missing_value(s) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) if n.as_f64().is_some_and(f64::is_nan) => None,
            Some(other) => {
                bad.push((i + 1, format!("field {field:?} is {other}, expected a string")));
                continue;
            }
        };
        out.push((i + 1, value));
    }
    if !bad.is_empty() {
        return Err(Error::InputBatch {
            path: path.to_path_buf(),
            errors: bad,
        });
    }
    if out.iter().all(|(_, v)| v.is_none()) && !out.is_empty() {
        return Err(Error::input(
            path,
            0,
            format!("no line has a value in field {field:?} (LLaMA-Factory writes `label` and `predict`)"),
        ));
    }
    Ok(out)
}

/// Imports `path` into the store as one atomic batch. Refuses (writes nothing) if any row's
/// example id is not in the store.
pub fn import_file(
    store: &Store,
    path: &Path,
    cfg: &ImportConfig,
    lexicon: &Lexicon,
) -> Result<ImportSummary> {
    let values = read_jsonl_field(path, &cfg.field)?;
    let now = now_secs();
    let mut summary = ImportSummary {
        rows: values.len(),
        ..Default::default()
    };
    let mut knowledge = Vec::new();
    let mut missing = Vec::new();
    for (i, (_, value)) in values.into_iter().enumerate() {
        let example_id = cfg.first_id + i as u64;
        match value {
            None => missing.push(Missing {
                example_id,
                source: cfg.source.clone(),
                reason: format!("{} is missing (nan or empty)", cfg.field),
                created_at: now,
            }),
            Some(raw) => {
                let s = sanitize(&raw, lexicon, false);
                if s.asserted.is_empty() {
                    summary.no_labels += 1;
                }
                knowledge.push(Knowledge {
                    example_id,
                    source: cfg.source.clone(),
                    kind: KnowledgeKind::Rationale,
                    raw,
                    sanitized: s.text,
                    asserted: s.asserted,
                    prompt_kind: PromptKind::Imported,
                    attempts: 0,
                    model: cfg.model.clone().unwrap_or_else(|| cfg.source.clone()),
                    created_at: now,
                    neighbours: Vec::new(),
                });
            }
        }
    }
    summary.imported = knowledge.len();
    summary.missing = missing.len();
    store.put_knowledge(&knowledge, &missing)?;
    Ok(summary)
}
