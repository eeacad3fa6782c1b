//! `emoknow similar` and `emoknow knowledge retrieve`: nearest labelled examples.

use super::{output, Ctx, INTERRUPTED};
use emoknow::corpus::Split;
use emoknow::labels::{Emotion, LabelSet};
use emoknow::neighbours::{self, Choice, Retriever, SearchMode};
use emoknow::store::Store;
use emoknow::views;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// How neighbours are found.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// Cosine over stored embeddings (needs `emoknow embed` first).
    Dense,
    /// BM25 over the search index: works with no model at all.
    Bm25,
}

/// Retrieval options shared by `similar` and `knowledge retrieve`.
#[derive(clap::Args, Debug, Clone)]
pub struct RetrievalArgs {
    /// Neighbours per query.
    #[arg(short, default_value_t = 10, value_parser = super::bounds::k)]
    k: usize,

    /// Split to retrieve from (trainers attach only neighbours from train).
    #[arg(long = "from", value_name = "SPLIT", default_value = "train")]
    from: Split,

    /// dense (stored embeddings) or bm25 [default: dense when the store holds vectors].
    #[arg(long)]
    by: Option<By>,

    /// Stored encoder (id, id prefix or name) or an encoder directory [default: the only one].
    #[arg(long, value_name = "ENCODER")]
    encoder: Option<String>,

    /// Never return examples whose id is within W of the query's (0: only the query itself).
    /// In a corpus in document order, such as the seed's, nearby ids are the same document;
    /// excluding them makes training examples' neighbours no more telling than a new text's.
    #[arg(long, value_name = "W", default_value_t = 0)]
    exclude_within: u64,

    /// Dense search compares the query with every pool vector (exact; the default below
    /// 200,000 vectors of the encoder).
    #[arg(long, conflicts_with_all = ["ann", "ef"])]
    exact: bool,

    /// Dense search goes through the encoder's ANN index (`emoknow index build`) whatever the
    /// store's size; exact, with a note, when the index is missing or stale. The default from
    /// 200,000 vectors on.
    #[arg(long)]
    ann: bool,

    /// Candidates the ANN search keeps (HNSW ef, 1–4096; implies --ann): more finds more of
    /// the exact neighbours for more time [default: 80 up to 100,000 vectors, 128 above;
    /// docs/retrieval.md has the recall/latency table].
    #[arg(long, value_name = "N", value_parser = super::bounds::ef)]
    ef: Option<usize>,
}

/// Find the labelled examples most similar to a text or a stored example.
///
/// Dense retrieval ranks by cosine similarity of stored embeddings (`emoknow embed`); a query
/// text is embedded by the encoder those vectors were made with, loaded from the directory
/// `embed` read it from. BM25 ranks by shared words and needs no model. A query by `--id`
/// never returns that example, nor any example with the same text.
///
/// Examples:
///
///   emoknow similar --id 4 -k 5
///
///   emoknow similar 我很担心明天的考试。 -k 5
///
///   emoknow similar 我 很 担心 明天 的 考试 --by bm25 --emotion Anxiety
#[derive(clap::Args, Debug)]
pub struct SimilarArgs {
    /// Query text (words may be separate arguments).
    text: Vec<String>,

    /// Query by a stored example instead of text.
    #[arg(long, conflicts_with = "text")]
    id: Option<u64>,

    /// Only neighbours carrying this emotion (repeatable).
    #[arg(long, short)]
    emotion: Vec<Emotion>,

    #[command(flatten)]
    retrieval: RetrievalArgs,
}

/// Store each example's nearest training examples as "neighbours" knowledge.
///
/// For every example of `--split` (default: all), its k nearest examples of the `--from`
/// split (never itself or a same-text duplicate) are stored with their ids, scores and labels,
/// rendered as "相似例句: <text> → Love,Joy; …" for trainers and the annotator.
///
/// Resumable: each batch of 2,048 examples is written atomically, and a rerun of a stopped
/// retrieval (same settings, same pool) fills only what is missing. `check` and `stats` report
/// a retrieval that stopped part-way, and trainers refuse examples without neighbours.
///
/// Example: emoknow knowledge retrieve -k 5 --by bm25
#[derive(clap::Args, Debug)]
pub struct RetrieveArgs {
    /// Only examples of this split get neighbours.
    #[arg(long)]
    split: Option<Split>,

    /// Source name to store under [default: knn-bm25 or knn-<encoder name>].
    #[arg(long)]
    source: Option<String>,

    /// Recompute every example's neighbours. Without it, a run with the same settings over
    /// the same pool as the last one (killed part-way, say) only fills the examples that
    /// have none; other settings always start afresh.
    #[arg(long)]
    fresh: bool,

    #[command(flatten)]
    retrieval: RetrievalArgs,
}

impl RetrievalArgs {
    /// The library's description of this choice.
    pub fn choice(&self) -> Choice {
        Choice {
            k: self.k,
            from: self.from,
            by: self.by.map(|b| match b {
                By::Dense => neighbours::By::Dense,
                By::Bm25 => neighbours::By::Bm25,
            }),
            encoder: self.encoder.clone(),
            exclude_within: self.exclude_within,
            search: if self.exact {
                SearchMode::Exact
            } else if self.ann {
                SearchMode::Ann
            } else {
                SearchMode::Auto
            },
            ef: self.ef,
        }
    }

    /// Opens the retrieval this choice describes, saying on stderr when an ANN index could
    /// not be used.
    pub fn open(&self, store: &Store, ctx: &Ctx) -> anyhow::Result<Retriever> {
        let r = Retriever::choose(store, &self.choice())?;
        if let Some(note) = &r.note {
            ctx.note(note);
        }
        Ok(r)
    }
}

pub fn run_similar(args: SimilarArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if args.id.is_none() && args.retrieval.exclude_within > 0 {
        anyhow::bail!(
            "--exclude-within leaves out ids near a stored example's, and a query text has no \
             id: query by --id, or drop it"
        );
    }
    let store = ctx.open()?;
    let r = args.retrieval.open(&store, ctx)?;
    let emotions: LabelSet = args.emotion.iter().copied().collect();
    let hits = match args.id {
        Some(id) => {
            let ex = store
                .example(id)?
                .ok_or_else(|| anyhow::anyhow!("no example {id} in the store"))?;
            r.for_examples(
                &store,
                std::slice::from_ref(&ex),
                args.retrieval.k,
                emotions,
            )?
            .remove(0)
        }
        None => {
            let text = args.text.join(" ");
            if text.trim().is_empty() {
                anyhow::bail!("give a query TEXT or --id ID");
            }
            // Dense: the text is embedded by the encoder the stored vectors were made with
            // (loaded from where `embed` read it; checked to be the same encoder).
            let mut embedder = r
                .encoder()
                .map(|info| emoknow::neighbours::Embedder::new(info.clone(), None));
            // The query as the store's models read text: in its style.
            let read = match store.normalizer()? {
                Some(n) => n.normalize(&text),
                None => text.clone(),
            };
            if read != text && !ctx.json && !ctx.quiet {
                eprintln!("query read as: {read}");
            }
            r.for_texts(
                Some(&store),
                &[read.as_str()],
                embedder.as_mut(),
                args.retrieval.k,
                emotions,
            )?
            .remove(0)
        }
    };
    let hits = views::similar_hits(&store, hits)?;
    if ctx.json {
        output::print_json(&hits)?;
    } else {
        for views::SimilarHit { hit: h, rationale } in &hits {
            println!(
                "#{:<6} {:.3}  {:<24} {}",
                h.id,
                h.score,
                h.labels.to_string(),
                h.text
            );
            if let Some(r) = rationale {
                println!("        {}", r);
            }
        }
    }
    Ok(if hits.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn run_retrieve(args: RetrieveArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let r = args.retrieval.open(&store, ctx)?;
    let source = args.source.clone().unwrap_or_else(|| r.source_name());
    let pb = output::bar(0, "retrieving", ctx.quiet);
    let s = neighbours::retrieve_into_store(
        &store,
        &r,
        &source,
        args.split,
        args.fresh,
        &|| INTERRUPTED.load(Ordering::SeqCst),
        &mut |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    if ctx.json {
        output::print_json(&s)?;
    } else {
        println!(
            "stored {} neighbours (k = {}) for {} examples as source {}{}",
            args.retrieval.from,
            s.k,
            s.examples,
            s.source,
            if s.already_done > 0 {
                format!(
                    " ({} already had them: resumed; --fresh recomputes all)",
                    s.already_done
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
