//! `emoknow export`: the store's content for other tools — a LLaMA-Factory dataset of
//! rationales (in `annotate`, beside the import), or Parquet for engines beyond one machine.

use super::{annotate, output, Ctx};
use std::path::PathBuf;
use std::process::ExitCode;

/// Export the store's content for other tools.
///
/// llama-factory: stored rationales as a LLaMA-Factory dataset (fine-tune an LLM to write
/// them). parquet: every example with its knowledge and vectors as one Parquet file, for
/// DuckDB, Spark, Ray or a vector engine; `ingest` reads it back.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(subcommand)]
    target: ExportTarget,
}

#[derive(clap::Subcommand, Debug)]
enum ExportTarget {
    LlamaFactory(annotate::LlamaFactoryArgs),
    Parquet(ParquetArgs),
}

/// Write every example as a row of DIR/examples.parquet (Snappy, row groups of 8,192).
///
/// Columns: id, text, split, labels (list of names), origin_file, origin_line; for each
/// rationale source S: "S.sanitized", "S.raw", "S.asserted" (null where S has nothing); for
/// each neighbours source: "S.neighbour_ids", "S.neighbour_scores" (best first); for each
/// encoder E: "vector.E" (fixed-size list of f32, the text's vector). The file is written
/// beside its name and renamed into place. `emoknow ingest DIR/examples.parquet` reads the
/// ids, texts and labels back.
///
/// Example: emoknow export parquet --out export/ && duckdb -c "SELECT unnest(labels) AS l,
/// count(*) FROM 'export/examples.parquet' GROUP BY l"
#[derive(clap::Args, Debug)]
struct ParquetArgs {
    /// Directory to write examples.parquet into (created if absent).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Overwrite an earlier export in DIR.
    #[arg(long)]
    replace: bool,
}

pub fn run(a: ExportArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match a.target {
        ExportTarget::LlamaFactory(a) => annotate::run_llama_factory(a, ctx),
        ExportTarget::Parquet(a) => {
            let store = ctx.open()?;
            let pb = output::spinner("writing Parquet", ctx.quiet);
            let summary = emoknow::export::export_parquet(&store, &a.out, a.replace)?;
            pb.finish_and_clear();
            if ctx.json {
                output::print_json(&summary)?;
            } else {
                println!(
                    "{} ({} rows, {:.1} MB): rationale sources {}; neighbour sources {}; vectors {}",
                    summary.path.display(),
                    summary.rows,
                    summary.bytes as f64 / 1e6,
                    list(&summary.rationale_sources),
                    list(&summary.neighbour_sources),
                    list(
                        &summary
                            .encoders
                            .iter()
                            .map(|(n, d)| format!("{n} ({d})"))
                            .collect::<Vec<_>>()
                    ),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
