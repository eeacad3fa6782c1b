//! `emoknow predict`: a model's labels for sentences as people write them.

use super::{output, Ctx};
use anyhow::Context;
use emoknow::corpus;
use emoknow::labels::Emotion;
use emoknow::model::classifier::Model;
use emoknow::model::sample::KnowledgeMode;
use emoknow::samples::{SampleBuilder, TextPlace};
use emoknow::views;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

/// Predict emotions for a sentence (the arguments), or sentences one per line on stdin or in
/// --file.
///
/// Write sentences as people write them (我很担心明天的考试。): each model brings them into the
/// style of its training text first (for the seed's corpus: segmented with spaces, punctuation
/// and about twenty frequent words such as 的 and 了 removed), as `ingest` learned it.
///
/// Prints each sentence's labels and per-label probabilities. --explain shows the text the
/// model read and the knowledge it used (new text has no rationale; neighbours are retrieved
/// now; a model reading context shows the sentences around). A text with nothing the model
/// knows (no word of its vocabulary) gets a warning: its prediction is the prior.
///
/// Documents (for a model trained with context): --document declares the lines one document,
/// in order; input whose first line starts with `{` is JSON Lines, `{"text": …, "doc": …}`
/// (optional `"position"`), grouped by `doc` (lines without one stand alone, or with
/// --document form one more document). Otherwise each sentence stands alone.
///
/// Example: echo "我很担心明天的考试。" | emoknow predict --model models/linear --explain
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,

    /// One sentence, as written or segmented like the corpus (its words may be separate
    /// arguments); none = read stdin.
    text: Vec<String>,

    /// Read the sentences from this file (one per line, or JSON Lines) instead of stdin.
    #[arg(long, value_name = "PATH", conflicts_with = "text")]
    file: Option<PathBuf>,

    /// The lines are one document, in order (a model reading context sees each line's
    /// neighbours).
    #[arg(long, conflicts_with = "text")]
    document: bool,

    /// Show the attached knowledge.
    #[arg(long)]
    explain: bool,
}

pub fn run_predict(a: PredictArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let model =
        Model::load(&a.model).with_context(|| format!("loading model {}", a.model.display()))?;
    ctx.warn_unverified(&[&model]);
    let store = ctx.open_for(&[&model])?;
    // (where the text came from, text): line numbers count blank lines too.
    let (origins, texts): (Vec<String>, Vec<String>) = if a.text.is_empty() {
        let (name, lines) = match &a.file {
            Some(f) => (
                f.display().to_string(),
                std::fs::read_to_string(f)
                    .map_err(|e| emoknow::Error::io(f, e))?
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            ),
            None => (
                "stdin".to_string(),
                std::io::stdin()
                    .lock()
                    .lines()
                    .collect::<std::io::Result<Vec<_>>>()?,
            ),
        };
        lines
            .into_iter()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (format!("{name} line {}", i + 1), l))
            .unzip()
    } else {
        (vec!["the text".to_string()], vec![a.text.join(" ")])
    };
    let jsonl = a.text.is_empty()
        && texts
            .first()
            .is_some_and(|t| t.trim_start().starts_with('{'));
    let (texts, places): (Vec<String>, Option<Vec<Option<TextPlace>>>) = if jsonl {
        let mut out = Vec::with_capacity(texts.len());
        let mut places = Vec::with_capacity(texts.len());
        for (origin, line) in origins.iter().zip(&texts) {
            let (text, place) = jsonl_line(line).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
            out.push(text);
            places.push(place.or_else(|| a.document.then(|| TextPlace::in_doc(""))));
        }
        let given: Vec<(Option<&str>, Option<u32>)> = (places.iter())
            .map(|p| {
                p.as_ref()
                    .map_or((None, None), |p| (Some(p.doc.as_str()), p.position))
            })
            .collect();
        let conflicts = corpus::position_conflicts(&given, |i| origins[i].clone());
        if let Some((i, msg)) = conflicts.into_iter().next() {
            return Err(emoknow::Error::Invalid(format!("{}: {msg}", origins[i])).into());
        }
        (out, Some(places))
    } else if a.document {
        let places = texts.iter().map(|_| Some(TextPlace::in_doc(""))).collect();
        (texts, Some(places))
    } else {
        (texts, None)
    };
    let pred = views::predict_in(
        &mut SampleBuilder::with_store(store.as_ref()),
        &model,
        &texts,
        places.as_deref(),
    )?;
    for (origin, _) in origins.iter().zip(&pred.unknown).filter(|(_, &u)| u) {
        eprintln!("warning: {origin}: {}", views::UNKNOWN_WARNING);
    }
    if ctx.json {
        output::print_json(&pred.json(a.explain))?;
        return Ok(ExitCode::SUCCESS);
    }
    for (i, (((s, given), p), l)) in pred
        .samples
        .iter()
        .zip(&pred.given)
        .zip(&pred.probs)
        .zip(&pred.labels)
        .enumerate()
    {
        println!("{}\t{}", l, given);
        let ps: Vec<String> = Emotion::ALL
            .iter()
            .map(|e| format!("{} {:.2}", e.name(), p[e.index()]))
            .collect();
        println!("  {}", ps.join("  "));
        if a.explain {
            println!("  read: {}", s.text);
            if let Some(sets) = pred.sets.get(i) {
                let sets: Vec<String> = sets
                    .iter()
                    .map(|(set, q)| format!("{set} {q:.2}"))
                    .collect();
                println!("  most probable sets: {}", sets.join("  "));
            }
            if let Some(Some((q, cut))) = pred.under_sets.get(i) {
                let qs: Vec<String> = Emotion::ALL
                    .iter()
                    .map(|e| format!("{} {:.2}", e.name(), q[e.index()]))
                    .collect();
                println!(
                    "  under the sets (labels: those above {cut:.2}, else the most probable set): {}",
                    qs.join("  ")
                );
            }
            let spec = model.knowledge_spec();
            if spec.mode == KnowledgeMode::None {
                println!("  knowledge: none (the model reads the text only)");
            }
            if matches!(spec.mode, KnowledgeMode::Rationale | KnowledgeMode::All) {
                println!(
                    "  rationale: none (new text is not annotated; `emoknow annotate` stores one)"
                );
            }
            if let Some(c) = &s.context {
                let none = |s: String| {
                    if s.is_empty() {
                        "(none)".to_string()
                    } else {
                        s
                    }
                };
                println!("  context before: {}", none(c.before_text()));
                println!("  context after:  {}", none(c.after_text()));
            }
            for n in &s.neighbours {
                let text = views::neighbour_text(store.as_ref(), &model, n.id)?;
                println!(
                    "  neighbour #{} ({:.3}) {} — {}",
                    n.id, n.score, n.labels, text
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON Lines input line of `predict`: its `text` and, with a `doc`, its place.
fn jsonl_line(line: &str) -> anyhow::Result<(String, Option<TextPlace>)> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| anyhow::anyhow!("invalid JSON ({e}); expected {{\"text\": …, \"doc\": …}}"))?;
    let text = v
        .get("text")
        .and_then(|t| t.as_str())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("missing non-empty string field \"text\""))?;
    let doc = match v.get("doc") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
            Some(corpus::check_doc(s).map_err(anyhow::Error::msg)?)
        }
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => anyhow::bail!("\"doc\" must be a non-empty string or a number"),
    };
    let position = match v.get("position") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(
            p.as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("\"position\" must be an integer in 0..=4294967295")
                })?,
        ),
    };
    if position.is_some() && doc.is_none() {
        anyhow::bail!("\"position\" without \"doc\" (a position is within a document)");
    }
    Ok((text.to_string(), doc.map(|doc| TextPlace { doc, position })))
}
