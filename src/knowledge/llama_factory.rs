//! The LLaMA-Factory bridge: writes supervised fine-tuning datasets (alpaca or sharegpt) with
//! their `dataset_info.json` entries, and reads back the `generated_predictions.jsonl` that
//! `llamafactory-cli train` with `do_predict` writes.
//!
//! The seed fine-tuned chatglm3-6b with LoRA on the training split's accepted rationales and
//! let it write rationales for the test split. Records here mirror the chat the annotator sent
//! (system prompt, few-shot turns as history, the sentence) with the accepted answer as the
//! response, so the fine-tuned model sees the prompt it will be asked with. Which examples
//! and answers go in is the caller's business; this module touches no store.
//!
//! The round trip is documented in `docs/llama-factory.md`.

use crate::knowledge::llm::{ChatMessage, Role};
use crate::knowledge::sanitize::is_missing_value;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// LLaMA-Factory's dataset layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LfFormat {
    /// `instruction` / `input` / `output` / `system` / `history` columns.
    Alpaca,
    /// `conversations` of `{from, value}` turns, plus `system`.
    Sharegpt,
}

impl LfFormat {
    /// Lower-case name as LLaMA-Factory spells it in `formatting`.
    pub fn name(self) -> &'static str {
        match self {
            LfFormat::Alpaca => "alpaca",
            LfFormat::Sharegpt => "sharegpt",
        }
    }
}

impl std::str::FromStr for LfFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<LfFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "alpaca" => Ok(LfFormat::Alpaca),
            "sharegpt" => Ok(LfFormat::Sharegpt),
            _ => Err(Error::Invalid(format!(
                "unknown LLaMA-Factory format {s:?} (expected alpaca or sharegpt)"
            ))),
        }
    }
}

/// One fine-tuning example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftRecord {
    /// The example's id (written to the `.ids` side file, not into the dataset).
    pub id: u64,
    /// System prompt (may be empty).
    pub system: String,
    /// Earlier (user, assistant) turns: the few-shot pairs.
    pub history: Vec<(String, String)>,
    /// The user turn: the sentence, as the prompt renders it.
    pub instruction: String,
    /// Extra user input appended after a newline by LLaMA-Factory (usually empty).
    pub input: String,
    /// The response to learn: the stored raw answer; empty for a gold-free prediction file.
    pub output: String,
}

impl SftRecord {
    /// Builds a record from a rendered prompt (optional system message, then alternating
    /// user/assistant turns, last a user turn), e.g. `Prompts::blind(text, shots)`.
    ///
    /// Errors: [`Error::Invalid`] if the messages do not have that shape.
    pub fn from_messages(
        id: u64,
        messages: &[ChatMessage],
        output: impl Into<String>,
    ) -> Result<SftRecord> {
        let bad = |why: &str| Error::Invalid(format!("cannot export example {id}: {why}"));
        let (system, rest) = match messages.split_first() {
            Some((m, rest)) if m.role == Role::System => (m.content.clone(), rest),
            _ => (String::new(), messages),
        };
        let (last, turns) = rest.split_last().ok_or_else(|| bad("no user message"))?;
        if last.role != Role::User {
            return Err(bad("the last message is not a user turn"));
        }
        if turns.len() % 2 != 0 {
            return Err(bad("the history is not user/assistant pairs"));
        }
        let mut history = Vec::with_capacity(turns.len() / 2);
        for pair in turns.chunks(2) {
            if pair[0].role != Role::User || pair[1].role != Role::Assistant {
                return Err(bad("the history is not user/assistant pairs"));
            }
            history.push((pair[0].content.clone(), pair[1].content.clone()));
        }
        Ok(SftRecord {
            id,
            system,
            history,
            instruction: last.content.clone(),
            input: String::new(),
            output: output.into(),
        })
    }

    /// The user turn as LLaMA-Factory assembles it: `instruction`, plus `"\n" + input` when
    /// `input` is not empty.
    pub fn user_turn(&self) -> String {
        if self.input.is_empty() {
            self.instruction.clone()
        } else {
            format!("{}\n{}", self.instruction, self.input)
        }
    }
}

/// One row of an alpaca-format file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlpacaRow {
    /// User instruction.
    pub instruction: String,
    /// User input (may be empty).
    pub input: String,
    /// Model response.
    pub output: String,
    /// System prompt.
    pub system: String,
    /// Earlier [user, assistant] turns.
    pub history: Vec<[String; 2]>,
}

/// One turn of a sharegpt conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharegptTurn {
    /// `human` or `gpt`.
    pub from: String,
    /// Text.
    pub value: String,
}

/// One row of a sharegpt-format file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharegptRow {
    /// Alternating human/gpt turns, human first, gpt last.
    pub conversations: Vec<SharegptTurn>,
    /// System prompt.
    pub system: String,
}

impl From<&SftRecord> for AlpacaRow {
    fn from(r: &SftRecord) -> Self {
        AlpacaRow {
            instruction: r.instruction.clone(),
            input: r.input.clone(),
            output: r.output.clone(),
            system: r.system.clone(),
            history: r
                .history
                .iter()
                .map(|(u, a)| [u.clone(), a.clone()])
                .collect(),
        }
    }
}

impl From<&SftRecord> for SharegptRow {
    fn from(r: &SftRecord) -> Self {
        let turn = |from: &str, value: &str| SharegptTurn {
            from: from.to_string(),
            value: value.to_string(),
        };
        let mut conversations = Vec::with_capacity(2 * r.history.len() + 2);
        for (u, a) in &r.history {
            conversations.push(turn("human", u));
            conversations.push(turn("gpt", a));
        }
        conversations.push(turn("human", &r.user_turn()));
        conversations.push(turn("gpt", &r.output));
        SharegptRow {
            conversations,
            system: r.system.clone(),
        }
    }
}

/// The `dataset_info.json` entry for a file in `format`.
pub fn dataset_info_entry(file_name: &str, format: LfFormat) -> serde_json::Value {
    match format {
        LfFormat::Alpaca => serde_json::json!({
            "file_name": file_name,
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
                "history": "history"
            }
        }),
        LfFormat::Sharegpt => serde_json::json!({
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {
                "messages": "conversations",
                "system": "system"
            },
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt"
            }
        }),
    }
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFiles {
    /// `<dir>/<name>_train.json`.
    pub train: PathBuf,
    /// `<dir>/<name>_predict.json`.
    pub predict: PathBuf,
    /// `<dir>/<name>_predict.ids`: the predict file's example ids, one per line, in order
    /// (line i of generated_predictions.jsonl answers id i).
    pub predict_ids: PathBuf,
    /// `<dir>/dataset_info.json` (created, or updated keeping other entries).
    pub dataset_info: PathBuf,
    /// Dataset name for `dataset:` in the training yaml (`<name>_train`).
    pub train_name: String,
    /// Dataset name for `eval_dataset:` in the predict yaml (`<name>_predict`).
    pub predict_name: String,
}

/// Writes a dataset for LLaMA-Factory into `dir` (created if needed): `train` records for
/// fine-tuning, `predict` records for `do_predict` (pass them with an empty `output` to keep
/// the file gold-free), the id side file, and the two `dataset_info.json` entries. Files are
/// JSON lists in UTF-8 with non-ASCII text unescaped, each written to a temporary file and
/// renamed into place.
///
/// Errors: [`Error::Invalid`] for a `name` that is not a plain file stem, [`Error::Input`] if
/// an existing `dataset_info.json` is not a JSON object (it is left alone), [`Error::Io`].
pub fn write_dataset(
    dir: &Path,
    name: &str,
    format: LfFormat,
    train: &[SftRecord],
    predict: &[SftRecord],
) -> Result<ExportFiles> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(Error::Invalid(format!(
            "dataset name {name:?} must be letters, digits, '_', '-' or '.'"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let train_name = format!("{name}_train");
    let predict_name = format!("{name}_predict");
    let train_path = dir.join(format!("{train_name}.json"));
    let predict_path = dir.join(format!("{predict_name}.json"));
    let ids_path = dir.join(format!("{predict_name}.ids"));
    let info_path = dir.join("dataset_info.json");

    // Read the existing registry first, so a bad one stops us before anything is written.
    let mut info = match std::fs::read_to_string(&info_path) {
        Ok(t) => match serde_json::from_str::<serde_json::Value>(&t) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => {
                return Err(Error::input(
                    &info_path,
                    0,
                    "dataset_info.json is not a JSON object; fix or remove it",
                ))
            }
            Err(e) => return Err(Error::input(&info_path, e.line(), e.to_string())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(Error::io(&info_path, e)),
    };

    for (path, records) in [(&train_path, train), (&predict_path, predict)] {
        let bytes = match format {
            LfFormat::Alpaca => to_json(
                path,
                &records.iter().map(AlpacaRow::from).collect::<Vec<_>>(),
            )?,
            LfFormat::Sharegpt => to_json(
                path,
                &records.iter().map(SharegptRow::from).collect::<Vec<_>>(),
            )?,
        };
        write_atomic(path, &bytes)?;
    }
    let ids: String = predict.iter().map(|r| format!("{}\n", r.id)).collect();
    write_atomic(&ids_path, ids.as_bytes())?;

    for (ds, path) in [(&train_name, &train_path), (&predict_name, &predict_path)] {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        info.insert(ds.clone(), dataset_info_entry(file, format));
    }
    write_atomic(
        &info_path,
        &to_json(&info_path, &serde_json::Value::Object(info))?,
    )?;

    Ok(ExportFiles {
        train: train_path,
        predict: predict_path,
        predict_ids: ids_path,
        dataset_info: info_path,
        train_name,
        predict_name,
    })
}

fn to_json<T: Serialize>(path: &Path, v: &T) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    b.push(b'\n');
    Ok(b)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-emoknow");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Parses a dataset file back and checks it the way LLaMA-Factory reads it: every row has
/// exactly the columns of `format`; sharegpt turns alternate human/gpt, human first, gpt
/// last; alpaca `instruction` is not empty. Returns the number of rows.
///
/// Errors: [`Error::Input`] naming the file and the offending row (1-based, as "line").
pub fn validate_file(path: &Path, format: LfFormat) -> Result<usize> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |row: usize, msg: String| Error::input(path, row, format!("row {row}: {msg}"));
    match format {
        LfFormat::Alpaca => {
            let rows: Vec<AlpacaRow> = serde_json::from_str(&text)
                .map_err(|e| Error::input(path, e.line(), e.to_string()))?;
            for (i, r) in rows.iter().enumerate() {
                if r.instruction.is_empty() {
                    return Err(bad(i + 1, "empty instruction".into()));
                }
            }
            Ok(rows.len())
        }
        LfFormat::Sharegpt => {
            let rows: Vec<SharegptRow> = serde_json::from_str(&text)
                .map_err(|e| Error::input(path, e.line(), e.to_string()))?;
            for (i, r) in rows.iter().enumerate() {
                let c = &r.conversations;
                if c.is_empty() || c.len() % 2 != 0 {
                    return Err(bad(
                        i + 1,
                        format!("{} turns; need an even, non-zero number", c.len()),
                    ));
                }
                for (k, t) in c.iter().enumerate() {
                    let want = if k % 2 == 0 { "human" } else { "gpt" };
                    if t.from != want {
                        return Err(bad(
                            i + 1,
                            format!("turn {} is from {:?}, expected {want:?}", k + 1, t.from),
                        ));
                    }
                }
            }
            Ok(rows.len())
        }
    }
}

/// Reads a `.ids` side file written by [`write_dataset`].
pub fn read_ids(path: &Path) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim()
                .parse()
                .map_err(|_| Error::input(path, i + 1, format!("not an example id: {l:?}")))
        })
        .collect()
}

/// One line of `generated_predictions.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// 1-based line in the file.
    pub line: usize,
    /// The prompt LLaMA-Factory rendered, when the file has it (newer versions do).
    pub prompt: Option<String>,
    /// The dataset's response (`label`); `None` for `nan`, empty or missing.
    pub label: Option<String>,
    /// The model's answer (`predict`); `None` for `nan`, empty or missing.
    pub predict: Option<String>,
}

/// Reads LLaMA-Factory's `generated_predictions.jsonl`; see [`parse_predictions`].
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_predictions(&text, path)
}

/// Parses JSON Lines of `{"prompt"?, "label", "predict"}`. Blank lines are skipped (line
/// numbers stay true). Missing values (`"nan"`, empty, JSON `null`, a bare `NaN` as Python
/// writes it) become `None`; numbers become their text.
///
/// Errors: [`Error::Input`] at `path:line` for a line that is not a JSON object.
pub fn parse_predictions(text: &str, path: &Path) -> Result<Vec<Prediction>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                // Python's json.dumps writes float NaN as a bare NaN token.
                let patched = line.replace(": NaN", ": null").replace(":NaN", ":null");
                serde_json::from_str(&patched)
                    .map_err(|_| Error::input(path, line_no, format!("not a JSON object: {e}")))?
            }
        };
        let obj = v.as_object().ok_or_else(|| {
            Error::input(path, line_no, "expected a JSON object with label/predict")
        })?;
        let get = |k: &str| -> Option<String> {
            match obj.get(k)? {
                serde_json::Value::String(s) if !is_missing_value(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        out.push(Prediction {
            line: line_no,
            prompt: get("prompt"),
            label: get("label"),
            predict: get("predict"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::prompts::Prompts;

    fn records() -> (Vec<SftRecord>, Vec<SftRecord>) {
        let p = Prompts::default();
        let train = vec![
            SftRecord::from_messages(
                11,
                &p.blind("今天 很 开心", &[]),
                "这段评论包含以下分类:\nJoy\n\n理由:\n\n开心。",
            )
            .unwrap(),
            SftRecord::from_messages(
                12,
                &p.blind("大雪 回家", &[("好 车".into(), "Love".parse().unwrap())]),
                "这段评论包含以下分类:\nAnxiety\n\n理由:\n\n\"回家\"难。",
            )
            .unwrap(),
        ];
        let predict = vec![SftRecord::from_messages(99, &p.blind("测试 句子", &[]), "").unwrap()];
        (train, predict)
    }

    #[test]
    fn from_messages_splits_system_history_and_sentence() {
        let (train, _) = records();
        let r = &train[1];
        assert!(r.system.starts_with("情绪文本分类任务"));
        assert_eq!(r.history.len(), 2);
        assert!(r.history[0].0.starts_with("５０ 年"));
        assert_eq!(
            r.history[1],
            (
                "好 车".to_string(),
                "这段评论包含以下分类:\nLove".to_string()
            )
        );
        assert_eq!(r.instruction, "大雪 回家");
        let bad = [ChatMessage::new(Role::Assistant, "x")];
        assert!(SftRecord::from_messages(1, &bad, "").is_err());
    }

    #[test]
    fn alpaca_export_parses_back_with_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let (train, predict) = records();
        let f = write_dataset(dir.path(), "emo", LfFormat::Alpaca, &train, &predict).unwrap();
        assert_eq!(validate_file(&f.train, LfFormat::Alpaca).unwrap(), 2);
        assert_eq!(validate_file(&f.predict, LfFormat::Alpaca).unwrap(), 1);
        let text = std::fs::read_to_string(&f.train).unwrap();
        assert!(
            text.contains("情绪文本分类任务") && !text.contains("\\u"),
            "UTF-8, unescaped"
        );
        let rows: Vec<AlpacaRow> = serde_json::from_str(&text).unwrap();
        assert_eq!(rows[0].instruction, "今天 很 开心");
        assert_eq!(rows[0].input, "");
        assert!(rows[0].output.starts_with("这段评论包含以下分类:\nJoy"));
        assert_eq!(rows[1].history.len(), 2);
        let pred: Vec<AlpacaRow> =
            serde_json::from_str(&std::fs::read_to_string(&f.predict).unwrap()).unwrap();
        assert_eq!(pred[0].output, "");
        assert_eq!(read_ids(&f.predict_ids).unwrap(), [99]);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f.dataset_info).unwrap()).unwrap();
        let e = &info["emo_train"];
        assert_eq!(e["file_name"], "emo_train.json");
        assert_eq!(e["formatting"], "alpaca");
        for (k, v) in [
            ("prompt", "instruction"),
            ("query", "input"),
            ("response", "output"),
            ("system", "system"),
            ("history", "history"),
        ] {
            assert_eq!(e["columns"][k], v);
        }
        assert_eq!(info["emo_predict"]["file_name"], "emo_predict.json");
    }

    #[test]
    fn sharegpt_export_alternates_roles_and_keeps_other_registry_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dataset_info.json"),
            r#"{"identity": {"file_name": "identity.json"}}"#,
        )
        .unwrap();
        let (train, predict) = records();
        let f = write_dataset(dir.path(), "emo", LfFormat::Sharegpt, &train, &predict).unwrap();
        assert_eq!(validate_file(&f.train, LfFormat::Sharegpt).unwrap(), 2);
        let rows: Vec<SharegptRow> =
            serde_json::from_str(&std::fs::read_to_string(&f.train).unwrap()).unwrap();
        let froms: Vec<&str> = rows[1]
            .conversations
            .iter()
            .map(|t| t.from.as_str())
            .collect();
        assert_eq!(froms, ["human", "gpt", "human", "gpt", "human", "gpt"]);
        assert_eq!(rows[1].conversations[4].value, "大雪 回家");
        assert!(rows[1].conversations[5].value.contains("Anxiety"));
        assert!(rows[1].system.starts_with("情绪文本分类任务"));
        let pred: Vec<SharegptRow> =
            serde_json::from_str(&std::fs::read_to_string(&f.predict).unwrap()).unwrap();
        assert_eq!(pred[0].conversations.last().unwrap().value, "");
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f.dataset_info).unwrap()).unwrap();
        assert_eq!(info["identity"]["file_name"], "identity.json");
        let e = &info["emo_train"];
        assert_eq!(e["formatting"], "sharegpt");
        assert_eq!(e["columns"]["messages"], "conversations");
        assert_eq!(e["columns"]["system"], "system");
        for (k, v) in [
            ("role_tag", "from"),
            ("content_tag", "value"),
            ("user_tag", "human"),
            ("assistant_tag", "gpt"),
        ] {
            assert_eq!(e["tags"][k], v);
        }
    }

    #[test]
    fn validate_catches_role_order_and_bad_registry_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, r#"[{"conversations":[{"from":"gpt","value":"a"},{"from":"human","value":"b"}],"system":""}]"#).unwrap();
        let e = validate_file(&p, LfFormat::Sharegpt)
            .unwrap_err()
            .to_string();
        assert!(e.contains("turn 1 is from \"gpt\""), "{e}");
        std::fs::write(dir.path().join("dataset_info.json"), "[1,2]").unwrap();
        let (train, predict) = records();
        assert!(write_dataset(dir.path(), "emo", LfFormat::Alpaca, &train, &predict).is_err());
        assert!(!dir.path().join("emo_train.json").exists());
        assert!(write_dataset(dir.path(), "../evil", LfFormat::Alpaca, &train, &predict).is_err());
        assert_eq!("ShareGPT".parse::<LfFormat>().unwrap(), LfFormat::Sharegpt);
    }

    #[test]
    fn predictions_map_missing_values_to_none() {
        let text = "{\"label\": \"这段评论包含以下分类:\\nJoy\", \"predict\": \"nan\"}\n\n{\"prompt\": \"p\", \"label\": \"\", \"predict\": \"Love\"}\n{\"label\": NaN, \"predict\": null}\n";
        let p = parse_predictions(text, Path::new("g.jsonl")).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].line, p[0].predict.as_deref()), (1, None));
        assert_eq!(p[0].label.as_deref(), Some("这段评论包含以下分类:\nJoy"));
        assert_eq!(
            (
                p[1].line,
                p[1].prompt.as_deref(),
                p[1].label.as_deref(),
                p[1].predict.as_deref()
            ),
            (3, Some("p"), None, Some("Love"))
        );
        assert_eq!(
            (p[2].label.as_deref(), p[2].predict.as_deref()),
            (None, None)
        );
        let e = parse_predictions("{\"label\": 1}\n[oops\n", Path::new("g.jsonl")).unwrap_err();
        assert!(e.to_string().starts_with("g.jsonl:2:"), "{e}");
    }

    #[test]
    fn reads_the_seed_predictions_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/generated_predictions.jsonl");
        let p = read_predictions(&path).unwrap();
        assert_eq!(p.len(), 2000);
        // 164 chatglm3 answers are the literal "nan" (counted with a Python one-liner).
        assert_eq!(p.iter().filter(|x| x.predict.is_none()).count(), 164);
        assert!(p.iter().all(|x| x.label.is_some()));
        assert_eq!(p[12].line, 13);
        assert!(p[12].predict.is_none());
        // The annotator accepts only answers whose labels parse. Of qwen-max's real answers
        // 2 do not: lines 577 and 1897 misspell the label ("Anxiey", "Anxious"); of
        // chatglm3's, 9. A parser change may lower these, never raise them.
        let unparsed = |answers: Vec<&str>| {
            answers
                .into_iter()
                .filter(|a| crate::knowledge::sanitize::asserted_labels(a).is_empty())
                .count()
        };
        assert!(unparsed(p.iter().filter_map(|x| x.label.as_deref()).collect()) <= 2);
        assert!(unparsed(p.iter().filter_map(|x| x.predict.as_deref()).collect()) <= 9);
    }
}
