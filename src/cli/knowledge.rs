//! `emoknow knowledge …`: importing and computing knowledge.

use super::{output, Ctx};
use anyhow::Context;
use emoknow::knowledge::import::{import_file, Alignment, Field, ImportConfig};
use emoknow::knowledge::sanitize::Lexicon;
use std::path::PathBuf;
use std::process::ExitCode;

/// Import or compute knowledge about examples.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    Import(ImportArgs),
    Retrieve(super::similar::RetrieveArgs),
}

impl Args {
    /// Whether the command's writes land whole at its end (an import is one atomic batch), so
    /// that one Ctrl-C may stop it at once; a retrieval keeps each batch it finishes.
    pub fn lands_whole(&self) -> bool {
        matches!(self.command, Sub::Import(_))
    }
}

/// Import LLM rationales from a JSON Lines file (LLaMA-Factory's generated_predictions.jsonl).
///
/// Line i (counting non-empty lines from 0) is about example FIRST_ID + i, or about the i-th id
/// of --ids FILE (the `.ids` file `emoknow export llama-factory` writes next to the prediction
/// dataset). The import is refused, writing nothing, if any of those ids is not in the store. Values that are the
/// literal "nan" or empty are recorded as missing, not as knowledge. Each rationale is stored
/// raw and sanitized (reason part only, emotion words removed; see data/lexicon), with the
/// labels it asserts. Re-importing replaces the source's records.
///
/// Examples (the seed's files: rows 1–2000 of Train.csv):
///
///   emoknow knowledge import data/generated_predictions.jsonl --source qwen-max --field label --first-id 1
///
///   emoknow knowledge import data/generated_predictions.jsonl --source chatglm3-lora --field predict --first-id 1
#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// The JSON Lines file.
    file: PathBuf,

    /// Name to store the knowledge under.
    #[arg(long)]
    source: String,

    /// Field holding the rationale: `label` (the dataset's answer) or `predict` (the model's).
    #[arg(long, value_enum, default_value = "predict")]
    field: FieldArg,

    /// Example id of the first line.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "ids",
        conflicts_with = "ids"
    )]
    first_id: Option<u64>,

    /// Example ids of the lines, one per line (from `emoknow export llama-factory`).
    #[arg(long, value_name = "FILE")]
    ids: Option<PathBuf>,

    /// Model name to record [default: the source name].
    #[arg(long)]
    model: Option<String>,

    /// Lexicon file replacing the shipped data/lexicon/emotions.txt.
    #[arg(long, value_name = "FILE")]
    lexicon: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FieldArg {
    Label,
    Predict,
}

/// Loads `--lexicon FILE` or the shipped lexicon.
pub fn load_lexicon(path: Option<&PathBuf>) -> anyhow::Result<Lexicon> {
    match path {
        None => Ok(Lexicon::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading lexicon {}", p.display()))?;
            Lexicon::parse(&text)
                .map_err(|(line, msg)| anyhow::anyhow!("{}:{line}: {msg}", p.display()))
        }
    }
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Import(a) => run_import(a, ctx),
        Sub::Retrieve(a) => super::similar::run_retrieve(a, ctx),
    }
}

fn run_import(a: ImportArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let lexicon = load_lexicon(a.lexicon.as_ref())?;
    let store = ctx.open()?;
    let align = match (&a.ids, a.first_id) {
        (Some(f), _) => Alignment::Ids(emoknow::knowledge::llama_factory::read_ids(f)?),
        (None, Some(first)) => Alignment::FirstId(first),
        (None, None) => unreachable!("clap requires --first-id or --ids"),
    };
    let given_ids = match &align {
        Alignment::Ids(ids) => Some(ids.clone()),
        Alignment::FirstId(_) => None,
    };
    let cfg = ImportConfig {
        source: a.source.clone(),
        field: match a.field {
            FieldArg::Label => Field::Label,
            FieldArg::Predict => Field::Predict,
        },
        align,
        model: a.model.clone(),
    };
    // Errors about the file name it (and its line) already.
    let s = import_file(&store, &a.file, &cfg, &lexicon).map_err(|e| match e {
        emoknow::Error::Input { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("importing {}", a.file.display())),
    })?;
    // The ids the file's lines covered (a prefix of the .ids file's, when it is shorter).
    let (lo, hi) = match (&given_ids, a.first_id) {
        (Some(ids), _) => {
            let covered = &ids[..s.rows.min(ids.len())];
            (
                covered.iter().copied().min().unwrap_or(0),
                covered.iter().copied().max(),
            )
        }
        (None, first) => (first.unwrap_or(0), None),
    };
    if ctx.json {
        output::print_json(&s)?;
    } else {
        println!(
            "{}: {} rows → {} knowledge records for source {} (ids {}–{}), {} missing (nan/empty), {} naming no label",
            a.file.display(),
            s.rows,
            s.imported,
            a.source,
            lo,
            hi.unwrap_or(lo + s.rows.saturating_sub(1) as u64),
            s.missing,
            s.no_labels
        );
        if let Some(n) = s.export_rows.filter(|&n| n > s.rows) {
            println!(
                "the file covers the first {} of the export's {n} rows; import the rest when they are predicted",
                s.rows
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
