//! `emoknow eval`: a model on a split or a labelled file, or an LLM source's asserted labels.

use super::{output, Ctx};
use anyhow::Context;
use emoknow::corpus::{self, Split};
use emoknow::labels::LabelSet;
use emoknow::metrics::Report;
use emoknow::model::classifier::Model;
use emoknow::model::sample::Sample;
use emoknow::samples::{SampleBuilder, TextPlace};
use emoknow::views;
use std::path::PathBuf;
use std::process::ExitCode;

/// Evaluate a model on a split or a file, or score an LLM source's asserted labels.
///
/// With --model: the four metrics (Hamming accuracy, exact match, micro-F1, macro-F1), per-label
/// precision/recall/F1, and the confusion of label-set sizes. --file reads any format `ingest`
/// reads (held-out data; knowledge attaches only what can be computed for new text; a model
/// reading context gets the file's documents: --doc-column or JSONL `doc`, else the whole file
/// is one document in row order, as `ingest` reads it).
///
/// With --source: the labels an LLM asserted in its stored rationales, scored against gold (an
/// example the source has no usable answer for counts as predicting nothing).
///
/// Examples:
///
///   emoknow eval --model models/linear
///
///   emoknow eval --source chatglm3-lora --split test --json
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model directory.
    #[arg(long, required_unless_present = "source", conflicts_with = "source")]
    model: Option<PathBuf>,

    /// Score this knowledge source's asserted labels instead of a model.
    #[arg(long)]
    source: Option<String>,

    /// Split to evaluate on [default: test; with --source: every split].
    #[arg(long, conflicts_with = "file")]
    split: Option<Split>,

    /// Evaluate on a labelled file instead of a stored split.
    #[arg(long, conflicts_with = "source")]
    file: Option<PathBuf>,

    /// --file's CSV column naming each row's document.
    #[arg(long, value_name = "NAME", requires = "file")]
    doc_column: Option<String>,

    /// Only the split's examples with ids in FIRST-LAST (inclusive), e.g. the rows
    /// `ingest --test-last 2000` held out at the end of the seed's file: --ids 24001-26000.
    #[arg(
        long,
        value_name = "FIRST-LAST",
        value_parser = parse_id_range,
        conflicts_with_all = ["file", "source"]
    )]
    ids: Option<(u64, u64)>,

    /// Also write each example's prediction to FILE as JSON Lines: `id` (stored examples),
    /// `gold`, `labels`, `probabilities` (calibrated) and `scores` (before calibration), for
    /// error analysis. An existing FILE is not overwritten.
    #[arg(long, value_name = "FILE", conflicts_with = "source")]
    predictions: Option<PathBuf>,
}

/// `FIRST-LAST` (inclusive, FIRST <= LAST).
fn parse_id_range(s: &str) -> Result<(u64, u64), String> {
    let bad =
        || format!("expected FIRST-LAST, two ids with FIRST <= LAST (e.g. 24001-26000), got {s:?}");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Prints the four metrics, per-label scores and the label-set size confusion.
pub fn print_report(r: &Report) {
    println!(
        "  hamming {:.3}   exact {:.3}   micro-F1 {:.3}   macro-F1 {:.3}   (n = {})",
        r.hamming_accuracy, r.exact_match, r.micro_f1, r.macro_f1, r.n
    );
    println!(
        "  {:<10} {:>9} {:>7} {:>7} {:>8}",
        "label", "precision", "recall", "F1", "support"
    );
    for l in &r.per_label {
        println!(
            "  {:<10} {:>9.3} {:>7.3} {:>7.3} {:>8}",
            l.label, l.precision, l.recall, l.f1, l.support
        );
    }
    if !r.size_confusion.is_empty() {
        println!("  label-set sizes (rows gold, columns predicted, 0..):");
        for (g, row) in r.size_confusion.iter().enumerate() {
            if row.iter().any(|&n| n > 0) {
                let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
                println!("    {g}: {}", cells.join(""));
            }
        }
    }
}

pub fn run_eval(a: EvalArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if let Some(src) = &a.source {
        return eval_source(&ctx.open()?, src, a.split, ctx);
    }
    let split = a.split.unwrap_or(Split::Test);
    let Some(dir) = a.model.as_ref() else {
        anyhow::bail!("give --model DIR (or --source NAME to score an LLM's answers)");
    };
    let model = Model::load(dir).with_context(|| format!("loading model {}", dir.display()))?;
    ctx.warn_unverified(&[&model]);
    // A file of new sentences needs no store when the model directory holds all it reads.
    let store = match &a.file {
        Some(_) => ctx.open_for(&[&model])?,
        None => Some(ctx.open()?),
    };
    let mut builder = SampleBuilder::with_store(store.as_ref());
    let inputs: Vec<Vec<Sample>> = match &a.file {
        Some(f) => {
            let parsed = corpus::read_file_with(
                f,
                &corpus::ReadOptions {
                    doc_column: a.doc_column.clone(),
                },
            )?;
            if !parsed.bad.is_empty() {
                return Err(emoknow::Error::InputBatch {
                    path: f.clone(),
                    errors: parsed.bad,
                }
                .into());
            }
            let texts: Vec<String> = parsed.rows.iter().map(|r| r.text.clone()).collect();
            let labels: Vec<LabelSet> = parsed.rows.iter().map(|r| r.labels).collect();
            // Rows without a document are the file's stream (the unnamed document).
            let places: Vec<Option<TextPlace>> = parsed
                .rows
                .iter()
                .map(|r| {
                    Some(TextPlace {
                        doc: r.doc.clone().unwrap_or_default(),
                        position: r.position,
                    })
                })
                .collect();
            builder.for_model_texts_in(&model, &texts, Some(&labels), Some(&places))?
        }
        None => {
            let store = store
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("evaluating a split reads the store"))?;
            let mut examples = store.examples(Some(split))?;
            if let Some((first, last)) = a.ids {
                examples.retain(|e| (first..=last).contains(&e.id));
            }
            builder.for_model(&model, &examples)?
        }
    };
    let n = inputs.first().map_or(0, Vec::len);
    if n == 0 {
        match a.ids {
            Some((first, last)) => anyhow::bail!(
                "nothing to evaluate: the {split} split has no example with an id in {first}-{last}"
            ),
            None => anyhow::bail!("nothing to evaluate: the {split} split is empty"),
        }
    }
    let pb = output::spinner(&format!("predicting {n} examples"), ctx.quiet);
    let ev = views::evaluate(&model, &inputs)?;
    pb.finish_and_clear();
    if let Some(path) = &a.predictions {
        let ids: Vec<Option<u64>> = match &a.file {
            Some(_) => vec![None; n],
            None => inputs
                .first()
                .map_or_else(Vec::new, |s| s.iter().map(|s| Some(s.id)).collect()),
        };
        views::write_predictions(path, &ids, &ev)?;
    }
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            report: &'a Report,
            calibration: &'a emoknow::model::calibration::Reliability,
            uncalibrated_ece: f64,
        }
        output::print_json(&Out {
            report: &ev.report,
            calibration: &ev.calibration,
            uncalibrated_ece: ev.uncalibrated_ece,
        })?;
    } else {
        println!(
            "{} model {} on {} ({} examples):",
            model.kind().name(),
            dir.display(),
            a.file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| match a.ids {
                    Some((first, last)) => format!("the {split} split, ids {first}-{last}"),
                    None => format!("the {split} split"),
                }),
            n
        );
        print_report(&ev.report);
        println!(
            "  calibration: ECE {:.3} over the labels' probabilities (10 bins; {:.3} before calibration)",
            ev.calibration.ece, ev.uncalibrated_ece
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_source(
    store: &emoknow::store::Store,
    src: &str,
    split: Option<Split>,
    ctx: &Ctx,
) -> anyhow::Result<ExitCode> {
    let score = emoknow::knowledge::score::score_source(store, src, split)?;
    let split = emoknow::knowledge::score::split_phrase(split);
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            source: &'a str,
            split: String,
            examples: usize,
            answered: usize,
            #[serde(flatten)]
            report: &'a Report,
        }
        output::print_json(&Out {
            source: src,
            split: split.clone(),
            examples: score.examples,
            answered: score.answered,
            report: &score.report,
        })?;
    } else {
        println!(
            "source {src} on {split}: {} examples, {} with a usable answer (missing ones count as predicting nothing)",
            score.examples, score.answered
        );
        print_report(&score.report);
    }
    Ok(ExitCode::SUCCESS)
}
