//! Importing rationales written elsewhere (LLaMA-Factory's `generated_predictions.jsonl`) as
//! knowledge: line i of the file is about example `first_id + i`, or about the i-th id of the
//! `.ids` file written with the export.

use crate::error::{Error, Result};
use crate::knowledge::llama_factory::read_predictions;
use crate::knowledge::sanitize::{sanitize, Lexicon};
use crate::store::records::{now_secs, Knowledge, KnowledgeKind, Missing, PromptKind};
use crate::store::Store;
use serde::Serialize;
use std::path::Path;

/// Which field of a LLaMA-Factory prediction line holds the rationale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `label`: the dataset's response (for the seed's file: qwen-max's rationale).
    Label,
    /// `predict`: the fine-tuned model's answer.
    Predict,
}

/// Which example each line is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alignment {
    /// Line i (0-based, blank lines skipped) is example `first + i`.
    FirstId(u64),
    /// Line i is `ids[i]` (the `.ids` file `emoknow export llama-factory` writes).
    Ids(Vec<u64>),
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Source name the knowledge is stored under (`qwen-max`, `chatglm3-lora`).
    pub source: String,
    /// Field holding the rationale.
    pub field: Field,
    /// Line → example id.
    pub align: Alignment,
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
    /// With an `.ids` file: the export's rows (the file may cover only its first ones, as
    /// LLaMA-Factory's predict with `max_samples` writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_rows: Option<usize>,
}

/// Imports `path` into the store as one atomic batch. Refuses (writes nothing) if any row's
/// example id is not in the store.
pub fn import_file(
    store: &Store,
    path: &Path,
    cfg: &ImportConfig,
    lexicon: &Lexicon,
) -> Result<ImportSummary> {
    let preds = read_predictions(path)?;
    if let Alignment::Ids(ids) = &cfg.align {
        if preds.len() > ids.len() {
            return Err(Error::input(
                path,
                0,
                format!(
                    "{} prediction lines but only {} ids: the .ids file belongs to another export",
                    preds.len(),
                    ids.len()
                ),
            ));
        }
        // Fewer lines than ids: the first rows of the export (a predict run with
        // `max_samples`). Each line's prompt, where the file has it, must hold its id's
        // sentence.
        for (p, &id) in preds.iter().zip(ids) {
            let Some(prompt) = &p.prompt else { continue };
            let text = store.example(id)?.map(|e| e.text);
            if !text.as_deref().is_some_and(|t| prompt.contains(t)) {
                return Err(Error::input(
                    path,
                    p.line,
                    format!(
                        "this line's prompt does not hold the sentence of example {id}, which the .ids file gives for it: the .ids file belongs to another export"
                    ),
                ));
            }
        }
    }
    let values: Vec<Option<String>> = preds
        .into_iter()
        .map(|p| match cfg.field {
            Field::Label => p.label,
            Field::Predict => p.predict,
        })
        .collect();
    if !values.is_empty() && values.iter().all(Option::is_none) {
        return Err(Error::input(
            path,
            0,
            format!("no line has a value in field {:?}", field_name(cfg.field)),
        ));
    }
    let now = now_secs();
    let mut summary = ImportSummary {
        rows: values.len(),
        export_rows: match &cfg.align {
            Alignment::Ids(ids) => Some(ids.len()),
            Alignment::FirstId(_) => None,
        },
        ..Default::default()
    };
    let mut knowledge = Vec::new();
    let mut missing = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let example_id = match &cfg.align {
            Alignment::FirstId(first) => first + i as u64,
            Alignment::Ids(ids) => ids[i],
        };
        match value {
            None => missing.push(Missing {
                example_id,
                source: cfg.source.clone(),
                reason: format!("{} is missing (nan or empty)", field_name(cfg.field)),
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

fn field_name(f: Field) -> &'static str {
    match f {
        Field::Label => "label",
        Field::Predict => "predict",
    }
}
