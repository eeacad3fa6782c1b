//! `emoknow demo`: the tour README's main command runs. A scripted sequence of ordinary
//! subcommands, each printed before it runs, so the tour also teaches the commands.

use super::{Cli, Ctx};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Ingest the shipped corpus and rationales into the store and show a short tour.
///
/// Runs, printing each command first: ingest data/Train.csv (seed split: rows 1–1000 test,
/// 8% of the rest validation), import the seed's qwen-max and chatglm3 rationales for rows
/// 1–2000, stats, two queries, then train the `linear` classifier (into <store>/models/linear)
/// and evaluate it on the test split, next to the chatglm3 rationales' own labels, then predict
/// a sentence typed as people write it (我很担心明天的考试。), which the model reads in the
/// corpus's style. Idempotent: running it again changes nothing but retrains.
///
/// Example: cargo run --release -- demo
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory holding Train.csv and generated_predictions.jsonl.
    #[arg(long, default_value = "data")]
    data: PathBuf,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let train = args.data.join("Train.csv");
    let preds = args.data.join("generated_predictions.jsonl");
    for f in [&train, &preds] {
        if !f.exists() {
            anyhow::bail!(
                "{} not found: run the demo from the repository root or pass --data DIR",
                f.display()
            );
        }
    }
    let (t, p) = (train.display().to_string(), preds.display().to_string());
    let steps: Vec<Vec<&str>> = vec![
        vec!["ingest", &t],
        vec![
            "knowledge",
            "import",
            &p,
            "--source",
            "qwen-max",
            "--field",
            "label",
            "--first-id",
            "1",
        ],
        vec![
            "knowledge",
            "import",
            &p,
            "--source",
            "chatglm3-lora",
            "--field",
            "predict",
            "--first-id",
            "1",
        ],
        vec!["stats"],
        vec![
            "query",
            "--emotion",
            "Anxiety",
            "--keyword",
            "担忧未来",
            "--limit",
            "3",
        ],
        vec![
            "query",
            "--emotion",
            "Love",
            "--emotion",
            "Joy",
            "--keyword",
            "孩子",
            "--source",
            "qwen-max",
            "--limit",
            "2",
        ],
    ];
    let store = ctx.store.display().to_string();
    let model = ctx
        .store
        .join("models")
        .join("linear")
        .display()
        .to_string();
    let steps: Vec<Vec<&str>> = steps
        .into_iter()
        .chain([
            vec!["train", "--classifier", "linear", "--out", &model],
            vec!["eval", "--model", &model, "--split", "test"],
            vec!["eval", "--source", "chatglm3-lora", "--split", "test"],
            // A sentence as people write it: the model reads it in the corpus's style.
            vec![
                "predict",
                "--model",
                &model,
                "--explain",
                "我很担心明天的考试。",
            ],
        ])
        .collect();
    for step in steps {
        let mut argv = vec!["emoknow", "--store", &store];
        if ctx.quiet {
            argv.push("-q");
        }
        argv.extend(step.iter().copied());
        println!("\n$ emoknow {}", step.join(" "));
        let code = super::run(Cli::try_parse_from(&argv)?)?;
        if code != ExitCode::SUCCESS && step[0] != "query" {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}
