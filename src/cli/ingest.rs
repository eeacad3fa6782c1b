//! `emoknow ingest`: read a corpus file into the store.

use super::{output, Ctx};
use anyhow::Context;
use emoknow::corpus::{self, Format, Split, SplitPlan};
use emoknow::store::StyleChoice;
use emoknow::text::TextStyle;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Read a labelled corpus file into the store (created if absent).
///
/// Formats are detected from the content: the seed's CSV `ID,Text,Labels` with labels like
/// "['Love', 'Joy']"; one-hot CSV `Text,'Love','Joy',…,'Anger'` (columns in any order); JSON
/// Lines `{"text": "…", "labels": ["Love"], "id": 7}` (id optional). Encodings: UTF-8, UTF-8
/// with BOM, or GB18030 (the seed's Train.csv), detected.
///
/// Documents: --doc-column names a CSV column holding each row's document (rows of a document
/// in file order); JSON Lines give `"doc"` (and optionally `"position"`). A file without
/// document ids is one document in row order (the seed's Train.csv is in document order).
/// `show` prints an example's context; `train --knowledge context` reads it.
///
/// Splits: the first `--test-rows` rows are test (default 1000 for a file with an ID column in
/// the seed's layout, else 0), and the last `--test-last` rows too (default 0); `--val-fraction` of the rest is drawn into validation with
/// `--seed`, reproducibly. `--split` puts every row in one split (e.g. held-out data).
///
/// The batch is atomic: a bad row (unknown label, empty text, wrong column count, undecodable
/// bytes) names its line and nothing is written, unless `--skip-bad`. Re-ingesting a file is
/// idempotent.
///
/// Example: emoknow ingest data/Train.csv --val-fraction 0.08 --seed 42
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The corpus file.
    file: PathBuf,

    /// Put every row into this split (train, val or test).
    #[arg(
        long,
        help_heading = "Splits",
        conflicts_with_all = ["test_rows", "test_last", "val_fraction", "val_block", "seed"]
    )]
    split: Option<Split>,

    /// The first N rows are the test split [default: 1000 for the seed layout, else 0].
    #[arg(long, value_name = "N", help_heading = "Splits")]
    test_rows: Option<usize>,

    /// The last N rows are test too (a held-out stretch at the end of a corpus in document
    /// order, never drawn into validation) [default: 0].
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Splits")]
    test_last: usize,

    /// Fraction of the non-test rows drawn into validation.
    #[arg(
        long,
        value_name = "F",
        default_value_t = 0.08,
        help_heading = "Splits"
    )]
    val_fraction: f64,

    /// Draw validation in runs of N consecutive rows instead of single rows (1: single
    /// rows), so that in a corpus in document order (the seed's Train.csv is) validation holds
    /// whole stretches of documents that training never sees, as the test split does.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Splits",
        value_parser = super::bounds::block
    )]
    val_block: usize,

    /// Seed of the validation draw.
    #[arg(long, value_name = "S", default_value_t = 42, help_heading = "Splits")]
    seed: u64,

    /// CSV column naming each row's document (its rows are in file order).
    #[arg(long, value_name = "NAME")]
    doc_column: Option<String>,

    /// Write the good rows and report the bad ones instead of refusing the batch.
    #[arg(long)]
    skip_bad: bool,

    /// How the corpus is written (its text style), which new text is brought into before a
    /// model reads it: `derive` learns it from the corpus on the store's first ingest
    /// (segmented or not, the punctuation kept, Latin letter width, the very frequent words the
    /// corpus's cleaning dropped); `as-written` reads every text as given; a path names a JSON
    /// file declaring it (`{"segmented": true, "punctuation": "removed", "kept_marks": "…",
    /// "width": "full", "dropped": ["的", "了"]}`). A store keeps one style; later ingests bring
    /// their rows into it (the text as given is kept, shown, searched and exported).
    #[arg(long, value_name = "derive|as-written|FILE", default_value = "derive")]
    text_style: String,

    /// Let this file's rows overwrite what the store holds under their ids: another
    /// sentence (from any file), or another file's labels. What was derived from a replaced
    /// sentence (its rationales, vectors and the neighbour lists naming it) is dropped, and
    /// the output counts it.
    #[arg(long)]
    replace: bool,
}

#[derive(Serialize)]
struct Report {
    file: String,
    format: &'static str,
    encoding: &'static str,
    rows: usize,
    skipped: Vec<Skipped>,
    #[serde(flatten)]
    summary: emoknow::store::IngestSummary,
    splits: BTreeMap<String, usize>,
    elapsed_secs: f64,
}

#[derive(Serialize)]
struct Skipped {
    line: usize,
    error: String,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if !(0.0..1.0).contains(&args.val_fraction) {
        anyhow::bail!(
            "--val-fraction must be in [0, 1), got {}",
            args.val_fraction
        );
    }
    let t0 = Instant::now();
    let style = style_choice(&args.text_style)?;
    let parsed = corpus::read_file_with(
        &args.file,
        &corpus::ReadOptions {
            doc_column: args.doc_column.clone(),
        },
    )?;
    if !parsed.bad.is_empty() && !args.skip_bad {
        return Err(emoknow::Error::InputBatch {
            path: args.file.clone(),
            errors: parsed.bad,
        }
        .into());
    }
    let seed_layout =
        parsed.format == Format::SeedList && parsed.rows.iter().all(|r| r.id.is_some());
    let plan = SplitPlan {
        all: args.split,
        test_rows: args.test_rows.unwrap_or(if seed_layout { 1000 } else { 0 }),
        test_last: args.test_last,
        val_fraction: args.val_fraction,
        val_block: args.val_block,
        seed: args.seed,
    };
    let keys: Vec<u64> = parsed
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| r.id.unwrap_or(i as u64 + 1))
        .collect();
    let splits = plan.assign(&keys);
    let store = ctx.open_or_create()?;
    // A file's identity is its canonical path: files that share a name are different files.
    let name = std::fs::canonicalize(&args.file)
        .map_err(|e| emoknow::Error::io(&args.file, e))?
        .to_string_lossy()
        .into_owned();
    let pb = output::spinner(&format!("writing {} rows", parsed.rows.len()), ctx.quiet);
    let summary = store
        .ingest_with(&name, &parsed.rows, &splits, args.replace, &style)
        .with_context(|| format!("ingesting {}", args.file.display()))?;
    pb.finish_and_clear();
    let mut counts = BTreeMap::new();
    for s in &splits {
        *counts.entry(s.name().to_string()).or_insert(0) += 1;
    }
    let report = Report {
        file: args.file.display().to_string(),
        format: parsed.format.name(),
        encoding: parsed.encoding.name(),
        rows: parsed.rows.len(),
        skipped: parsed
            .bad
            .iter()
            .map(|(line, error)| Skipped {
                line: *line,
                error: error.clone(),
            })
            .collect(),
        summary,
        splits: counts,
        elapsed_secs: t0.elapsed().as_secs_f64(),
    };
    if ctx.json {
        output::print_json(&report)?;
    } else {
        for s in &report.skipped {
            eprintln!("skipped {}:{}: {}", report.file, s.line, s.error);
        }
        let splits: Vec<String> = report
            .splits
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "{}: {} ({}), {} rows: {} added, {} updated, {}{} unchanged{} [{}] in {:.2}s",
            report.file,
            report.format,
            report.encoding,
            report.rows,
            report.summary.added,
            report.summary.updated,
            if report.summary.replaced > 0 {
                format!("{} replaced, ", report.summary.replaced)
            } else {
                String::new()
            },
            report.summary.unchanged,
            if report.skipped.is_empty() {
                String::new()
            } else {
                format!(", {} bad lines skipped", report.skipped.len())
            },
            splits.join(", "),
            report.elapsed_secs
        );
        let sm = &report.summary;
        if let Some(style) = &sm.text_style {
            println!("text style: {style}");
        }
        if sm.normalized > 0 {
            println!(
                "{} sentence(s) not written in the store's text style: stored as given, read by models normalized (`emoknow show ID` shows both)",
                sm.normalized
            );
        }
        if sm.dropped_knowledge + sm.dropped_neighbour_lists + sm.dropped_vectors > 0 {
            println!(
                "dropped what was derived from the old sentences and labels: {} knowledge record(s), {} vector(s), {} neighbour list(s) (`emoknow embed` and `emoknow knowledge retrieve` fill them again)",
                sm.dropped_knowledge, sm.dropped_vectors, sm.dropped_neighbour_lists
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--text-style`: derive, as-written, or a JSON file declaring the style.
fn style_choice(arg: &str) -> anyhow::Result<StyleChoice> {
    Ok(match arg {
        "derive" => StyleChoice::Derive,
        "as-written" => StyleChoice::AsWritten,
        path => {
            let p = std::path::Path::new(path);
            let bytes = std::fs::read(p).map_err(|e| {
                anyhow::anyhow!(
                    "--text-style {path}: {e} (give `derive`, `as-written` or a JSON file declaring the style)"
                )
            })?;
            let style: TextStyle = serde_json::from_slice(&bytes).map_err(|e| {
                emoknow::Error::input(
                    p,
                    e.line(),
                    format!(
                        "not a text style ({e}); expected e.g. {{\"segmented\": true, \"punctuation\": \"removed\", \"width\": \"full\", \"dropped\": [\"的\"]}}"
                    ),
                )
            })?;
            style
                .validate()
                .map_err(|m| emoknow::Error::input(p, 0, m))?;
            StyleChoice::Declared {
                style,
                origin: path.to_string(),
            }
        }
    })
}
