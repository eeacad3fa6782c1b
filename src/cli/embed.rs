//! `emoknow embed`: sentence embeddings into the store.

use super::{output, Ctx, INTERRUPTED};
use anyhow::Context;
use emoknow::corpus::Split;
use emoknow::encoder::bert::Pooling;
use emoknow::encoder::embed::{Encoder, EncoderOptions};
use emoknow::neighbours::ann;
use emoknow::store::records::KnowledgeKind;
use emoknow::store::vectors::{EncoderInfo, What};
use emoknow::store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Texts embedded and stored per batch (a kill loses at most one batch of work).
const CHUNK: usize = 1024;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhatArg {
    Text,
    Knowledge,
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolingArg {
    Mean,
    Cls,
}

/// Encoder options shared by `embed` and `bench embed`.
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    /// A Hugging Face BERT-family directory: config.json, model.safetensors or
    /// pytorch_model.bin, tokenizer.json or vocab.txt.
    #[arg(long, value_name = "DIR")]
    pub encoder: PathBuf,

    /// How token vectors become one sentence vector.
    #[arg(long, value_enum, default_value = "mean")]
    pub pooling: PoolingArg,

    /// Longest input in tokens ([CLS] and [SEP] included).
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,

    /// Sentences per forward pass (length-sorted).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,

    /// Worker threads for the matrix products (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl EncoderArgs {
    pub fn options(&self) -> EncoderOptions {
        EncoderOptions {
            pooling: match self.pooling {
                PoolingArg::Mean => Pooling::Mean,
                PoolingArg::Cls => Pooling::Cls,
            },
            max_len: self.max_len,
            batch_size: self.batch,
            threads: self.threads,
        }
    }
}

/// Embed examples (and their rationales) with a BERT encoder and store the vectors.
///
/// Vectors are stored per (encoder, example, what) as little-endian f32, under an encoder id
/// derived from the model's identity (config and weight file hash, pooling, max length), so a
/// different encoder gets its own vectors. Resumable: vectors already stored are skipped, and
/// each batch is written atomically as it is computed. `check` verifies that every example of
/// an embedded split has a vector. An encoder's ANN index (`emoknow index build`) is extended
/// with the new text vectors at the end of the run; one is built once an encoder has 200,000.
///
/// Example: emoknow embed --encoder ../models/m3e-small --what both
#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    encoder: EncoderArgs,

    /// Only this split [default: all].
    #[arg(long)]
    split: Option<Split>,

    /// Example text, the sanitized rationales, or both.
    #[arg(long, value_enum, default_value = "text")]
    what: WhatArg,

    /// Rationale sources to embed (repeatable) [default: every rationale source].
    #[arg(long, value_name = "NAME")]
    source: Vec<String>,

    /// Name to show for the encoder [default: the directory name].
    #[arg(long)]
    name: Option<String>,
}

/// Loads an encoder and registers it in the store.
pub fn load_encoder(
    store: &Store,
    args: &EncoderArgs,
    name: Option<&str>,
) -> anyhow::Result<(Encoder, EncoderInfo)> {
    let enc = Encoder::load(&args.encoder, args.options())
        .with_context(|| format!("loading encoder {}", args.encoder.display()))?;
    let known = store
        .encoders()?
        .into_iter()
        .find(|e| e.id == enc.encoder_id());
    let info = EncoderInfo {
        id: enc.encoder_id().to_string(),
        // A given name, else the name it was registered with, else the directory's.
        name: name
            .map(str::to_string)
            .or(known.map(|k| k.name))
            .unwrap_or_else(|| dir_name(&args.encoder)),
        dim: enc.dim(),
        pooling: enc.options().pooling.name().to_string(),
        max_len: enc.options().max_len,
        dir: std::fs::canonicalize(&args.encoder)
            .unwrap_or_else(|_| args.encoder.clone())
            .display()
            .to_string(),
    };
    store.put_encoder(&info)?;
    Ok((enc, info))
}

fn dir_name(p: &Path) -> String {
    std::fs::canonicalize(p)
        .ok()
        .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| p.display().to_string())
}

pub fn run_embed(a: EmbedArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if !a.source.is_empty() && a.what == WhatArg::Text {
        anyhow::bail!(
            "--source names rationale sources to embed, and --what text embeds sentences only: \
             add --what knowledge (or both)"
        );
    }
    let store = ctx.open()?;
    let (enc, info) = load_encoder(&store, &a.encoder, a.name.as_deref())?;
    // Sentences as models read them: a text not written in the store's style is embedded
    // normalized, as new text is when a model reads it.
    let examples = store.as_read(store.examples(a.split)?)?;
    // (what, example id, text) still to embed.
    let mut jobs: Vec<(What, Vec<(u64, String)>)> = Vec::new();
    if matches!(a.what, WhatArg::Text | WhatArg::Both) {
        let mut todo = Vec::new();
        for e in &examples {
            if !store.has_vector(&info.id, &What::Text, e.id)? {
                todo.push((e.id, e.text.clone()));
            }
        }
        jobs.push((What::Text, todo));
    }
    if matches!(a.what, WhatArg::Knowledge | WhatArg::Both) {
        let sources: Vec<String> = if a.source.is_empty() {
            let mut s: Vec<String> = store
                .all_knowledge(None)?
                .into_iter()
                .filter(|k| k.kind == KnowledgeKind::Rationale)
                .map(|k| k.source)
                .collect();
            s.sort();
            s.dedup();
            s
        } else {
            a.source.clone()
        };
        let ids: std::collections::HashSet<u64> = examples.iter().map(|e| e.id).collect();
        for src in sources {
            let what = What::Knowledge(src.clone());
            let mut todo = Vec::new();
            for k in store.all_knowledge(Some(&src))? {
                if ids.contains(&k.example_id)
                    && k.kind == KnowledgeKind::Rationale
                    && !k.sanitized.is_empty()
                    && !store.has_vector(&info.id, &what, k.example_id)?
                {
                    todo.push((k.example_id, k.sanitized));
                }
            }
            jobs.push((what, todo));
        }
    }
    let total: usize = jobs.iter().map(|(_, t)| t.len()).sum();
    // New text vectors make the encoder's ANN index stale: its record goes before the first
    // write (a kill part-way leaves no record claiming it is current), and the index is
    // extended (or rebuilt) once the run is through.
    let new_text = jobs
        .iter()
        .any(|(what, todo)| *what == What::Text && !todo.is_empty());
    let had_index = store.ann_record(&info.id)?.is_some();
    let ann_base = if new_text {
        ann::begin_update(&store, &info)?
    } else {
        None
    };
    let t0 = Instant::now();
    let pb = output::bar(total as u64, "embedding", ctx.quiet);
    let mut done = 0usize;
    let mut report = Vec::new();
    for (what, todo) in &jobs {
        for chunk in todo.chunks(CHUNK) {
            if INTERRUPTED.load(Ordering::SeqCst) {
                pb.finish_and_clear();
                ctx.note(format!(
                    "interrupted after {done} of {total} vectors; run again to finish"
                ));
                return Err(emoknow::Error::Interrupted.into());
            }
            let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
            let base = pb.position();
            let vecs = enc.encode(&texts, &mut |n| pb.set_position(base + n as u64))?;
            let items: Vec<(u64, Vec<f32>)> = chunk.iter().map(|(id, _)| *id).zip(vecs).collect();
            store.put_vectors(&info, what, &items)?;
            done += chunk.len();
        }
        report.push(serde_json::json!({"what": what.to_string(), "embedded": todo.len()}));
    }
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let mut ann_refreshed = None;
    if new_text {
        let n = store.vectors(&info, &What::Text, None)?.ids.len();
        if ann::wanted(&store, &info, had_index, n) {
            ann_refreshed = Some(super::index::build_with_bar(
                &store, &info, ann_base, false, ctx,
            )?);
        }
    }
    if ctx.json {
        output::print_json(&serde_json::json!({
            "encoder": info, "embedded": done, "secs": secs,
            "sentences_per_sec": done as f64 / secs.max(1e-9), "by_what": report,
            "ann": ann_refreshed,
        }))?;
    } else {
        println!(
            "encoder {} (id {}, dim {}, {} pooling, ≤{} tokens)",
            info.name, info.id, info.dim, info.pooling, info.max_len
        );
        for (what, todo) in &jobs {
            println!("  {what}: {} new vectors", todo.len());
        }
        if done > 0 {
            println!("{done} vectors in {secs:.1}s ({:.0}/s)", done as f64 / secs);
        } else {
            println!("nothing to do: every vector is stored");
        }
        if let Some(a) = &ann_refreshed {
            println!(
                "ANN index {} ({} vectors, {} added)",
                if a.incremental { "extended" } else { "rebuilt" },
                a.vectors,
                a.added
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
