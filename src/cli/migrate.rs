//! `emoknow migrate`: brings a store to this build's format and compacts its vector files.

use super::{output, Ctx, INTERRUPTED};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Bring the store to this emoknow's format, then compact its vector files.
///
/// Format 1 stores kept embedding vectors inside the database; format 2 keeps them in flat
/// files under STORE/vectors/ (read in place, memory-mapped). Every command but `serve`
/// migrates an old store when it opens it, and says so; this command does it on its own, and
/// `serve` asks for it. A migration that is
/// interrupted (Ctrl-C, kill, power loss) loses nothing: the old vectors stay until the new
/// files are committed, and the next run starts over.
///
/// Then, on any store, vector files holding superseded rows (re-embedded examples) or removed
/// ones (sentences replaced by `ingest --replace`) are rewritten with their live rows only.
/// Ctrl-C stops after the file pair being rewritten; run it again to finish.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {}

pub fn run(_args: MigrateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let (store, migrated) = ctx.open_migrating(false)?;
    let pb = output::bar(0, "compacting", ctx.quiet);
    let dropped = store.compact_vectors(
        &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        },
        &|| INTERRUPTED.load(Ordering::SeqCst),
    );
    pb.finish_and_clear();
    if let Err(emoknow::Error::Interrupted) = dropped {
        ctx.note(
            "interrupted: the vector files compacted so far are kept; run `emoknow migrate` again to finish",
        );
    }
    let dropped = dropped?;
    let secs = t0.elapsed().as_secs_f64();
    if ctx.json {
        output::print_json(&serde_json::json!({
            "store": store.path().display().to_string(),
            "format": emoknow::store::FORMAT_VERSION,
            "migrated": migrated,
            "compacted_rows_dropped": dropped,
            "elapsed_secs": secs,
        }))?;
    } else {
        match &migrated {
            Some(m) => {
                println!(
                    "migrated store {} from format {} to {}: {} vectors in {} file pairs",
                    store.path().display(),
                    m.from,
                    m.to,
                    m.vectors,
                    m.files
                );
                if m.skipped > 0 {
                    println!(
                        "left behind {} unreadable vectors (malformed, unknown encoder or wrong dimension): run `emoknow check`, then `emoknow embed`",
                        m.skipped
                    );
                }
            }
            None => println!(
                "store {} is at format {} already",
                store.path().display(),
                emoknow::store::FORMAT_VERSION
            ),
        }
        if dropped > 0 {
            println!("compacted vector files: dropped {dropped} superseded or removed rows");
        } else {
            println!("vector files hold no superseded or removed rows");
        }
        println!("done in {secs:.2}s");
    }
    Ok(ExitCode::SUCCESS)
}
