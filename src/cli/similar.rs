//! `emoknow similar` and `emoknow knowledge retrieve`: nearest labelled examples.

use super::{output, Ctx, INTERRUPTED};
use anyhow::Context;
use emoknow::corpus::Split;
use emoknow::knowledge::retrieve::{neighbours_knowledge, Pool, Probe};
use emoknow::labels::{Emotion, LabelSet};
use emoknow::store::fingerprint;
use emoknow::store::records::{
    now_secs, Example, KnowledgeKind, NeighbourBy, NeighbourRun, NeighbourSpec,
};
use emoknow::store::vectors::{EncoderInfo, VectorSet, What};
use emoknow::store::Store;
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
    #[arg(short, default_value_t = 10)]
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
}

/// Find the labelled examples most similar to a text or a stored example.
///
/// Dense retrieval ranks by cosine similarity of stored embeddings (`emoknow embed`); BM25
/// ranks by shared words and needs no model. A query by `--id` never returns that example, nor
/// any example with the same text.
///
/// Examples:
///
///   emoknow similar --id 4 -k 5
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
    /// Retrieval settings built in code (the annotator's shots).
    pub fn new(k: usize, from: Split, by: Option<By>, encoder: Option<String>) -> RetrievalArgs {
        RetrievalArgs {
            k,
            from,
            by,
            encoder,
            exclude_within: 0,
        }
    }
}

/// The encoder and pool a retrieval uses.
pub struct Retriever {
    pub pool: Pool,
    pub encoder: Option<EncoderInfo>,
    /// All stored text vectors of the encoder (queries by id look theirs up here).
    pub vectors: VectorSet,
}

impl Retriever {
    pub fn open(store: &Store, args: &RetrievalArgs) -> anyhow::Result<Retriever> {
        let pool_examples = store.examples(Some(args.from))?;
        if pool_examples.is_empty() {
            anyhow::bail!("the {} split is empty: nothing to retrieve from", args.from);
        }
        let encoders = store.encoders()?;
        let by = args
            .by
            .unwrap_or(if encoders.is_empty() && args.encoder.is_none() {
                By::Bm25
            } else {
                By::Dense
            });
        if by == By::Bm25 {
            return Ok(Retriever {
                pool: Pool::sparse(pool_examples).exclude_within(args.exclude_within),
                encoder: None,
                vectors: VectorSet::default(),
            });
        }
        let info = match &args.encoder {
            Some(key) => store.find_encoder(key)?,
            None => match encoders.as_slice() {
                [one] => one.clone(),
                [] => anyhow::bail!(
                    "no stored embeddings: run `emoknow embed --encoder DIR` or use --by bm25"
                ),
                _ => anyhow::bail!(
                    "the store holds vectors of several encoders, choose one with --encoder: {}",
                    encoders
                        .iter()
                        .map(|e| format!("{} ({})", e.id, e.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        };
        let vectors = store.vectors(&info, &What::Text, None)?;
        let pool = Pool::dense(pool_examples, &vectors)
            .with_context(|| {
                format!(
                    "the {} split is not fully embedded by {}",
                    args.from, info.name
                )
            })?
            .exclude_within(args.exclude_within);
        Ok(Retriever {
            pool,
            encoder: Some(info),
            vectors,
        })
    }

    /// The settings of this retrieval, as stored with its neighbours.
    pub fn spec(&self, args: &RetrievalArgs) -> NeighbourSpec {
        NeighbourSpec {
            by: match &self.encoder {
                Some(e) => NeighbourBy::Dense {
                    encoder_id: e.id.clone(),
                },
                None => NeighbourBy::Bm25,
            },
            k: args.k,
            from: args.from,
            exclude_within: args.exclude_within,
        }
    }

    /// The source name neighbours knowledge gets by default.
    pub fn source_name(&self) -> String {
        match &self.encoder {
            Some(e) => format!("knn-{}", e.name),
            None => "knn-bm25".to_string(),
        }
    }

    /// Probes for stored examples (their own vectors when dense).
    pub fn probes<'a>(&'a self, examples: &'a [Example]) -> anyhow::Result<Vec<Probe<'a>>> {
        examples
            .iter()
            .map(|e| {
                let vector = match &self.encoder {
                    None => None,
                    Some(info) => Some(
                        self.vectors
                            .position(e.id)
                            .map(|r| self.vectors.row(r))
                            .ok_or_else(|| {
                                anyhow::anyhow!(
                                    "example {} has no vector of encoder {} (run `emoknow embed --split {}`)",
                                    e.id,
                                    info.name,
                                    e.split
                                )
                            })?,
                    ),
                };
                Ok(Probe {
                    id: Some(e.id),
                    text: &e.text,
                    vector,
                })
            })
            .collect()
    }
}

pub fn run_similar(args: SimilarArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let r = Retriever::open(&store, &args.retrieval)?;
    let emotions: LabelSet = args.emotion.iter().copied().collect();
    let hits = match args.id {
        Some(id) => {
            let ex = store
                .example(id)?
                .ok_or_else(|| anyhow::anyhow!("no example {id} in the store"))?;
            let probes = r.probes(std::slice::from_ref(&ex))?;
            r.pool
                .retrieve(&store, &probes, args.retrieval.k, emotions)?
                .remove(0)
        }
        None => {
            let text = args.text.join(" ");
            if text.trim().is_empty() {
                anyhow::bail!("give a query TEXT or --id ID");
            }
            if r.encoder.is_some() {
                anyhow::bail!(
                    "embedding a new text needs the encoder model; query by --id, or use --by bm25"
                );
            }
            let probe = Probe {
                id: None,
                text: &text,
                vector: None,
            };
            r.pool
                .retrieve(&store, &[probe], args.retrieval.k, emotions)?
                .remove(0)
        }
    };
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            hit: &'a emoknow::knowledge::retrieve::Hit,
            rationale: Option<String>,
        }
        let mut out = Vec::new();
        for h in &hits {
            out.push(Out {
                hit: h,
                rationale: best_rationale(&store, h.id)?,
            });
        }
        output::print_json(&out)?;
    } else {
        for h in &hits {
            println!(
                "#{:<6} {:.3}  {:<24} {}",
                h.id,
                h.score,
                h.labels.to_string(),
                h.text
            );
            if let Some(r) = best_rationale(&store, h.id)? {
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

/// The sanitized rationale of an example, if any source has one.
fn best_rationale(store: &Store, id: u64) -> anyhow::Result<Option<String>> {
    Ok(store
        .knowledge(id)?
        .into_iter()
        .find(|k| k.kind == emoknow::store::records::KnowledgeKind::Rationale)
        .map(|k| k.sanitized))
}

pub fn run_retrieve(args: RetrieveArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let r = Retriever::open(&store, &args.retrieval)?;
    let source = args.source.clone().unwrap_or_else(|| r.source_name());
    let mut model = r
        .encoder
        .as_ref()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| "bm25".into());
    if args.retrieval.exclude_within > 0 {
        // Recorded with the neighbours: a model trained on them depends on it.
        model = format!("{model}, exclude-within {}", args.retrieval.exclude_within);
    }
    let mut run = NeighbourRun {
        spec: r.spec(&args.retrieval),
        pool: fingerprint(&r.pool.examples),
        split: args.split,
        complete: false,
        updated_at: now_secs(),
    };
    // The same retrieval over the same pool resumes: examples that have neighbours keep them.
    // Anything else starts afresh, so one source never mixes neighbours of two settings.
    let resume = !args.fresh
        && store
            .neighbour_run(&source)?
            .is_some_and(|prev| prev.spec == run.spec && prev.pool == run.pool);
    if !resume {
        if store
            .all_knowledge(Some(&source))?
            .iter()
            .any(|k| k.kind != KnowledgeKind::Neighbours)
        {
            anyhow::bail!(
                "source {source} holds rationales, not neighbours; store neighbours under another --source"
            );
        }
        store.delete_source(&source)?;
    }
    store.put_neighbour_run(&source, &run)?;
    let mut examples = store.examples(args.split)?;
    let asked = examples.len();
    if resume {
        let mut todo = Vec::with_capacity(examples.len());
        for e in examples {
            if !store.has_attempt(e.id, &source)? {
                todo.push(e);
            }
        }
        examples = todo;
    }
    let pb = output::bar(examples.len() as u64, "retrieving", ctx.quiet);
    let mut stored = 0;
    for chunk in examples.chunks(2048) {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(emoknow::Error::Interrupted.into());
        }
        let probes = r.probes(chunk)?;
        let found = r
            .pool
            .retrieve(&store, &probes, args.retrieval.k, LabelSet::EMPTY)?;
        let records: Vec<_> = chunk
            .iter()
            .zip(&found)
            .map(|(e, hits)| neighbours_knowledge(e.id, &source, &model, hits))
            .collect();
        store.put_knowledge(&records, &[])?;
        stored += records.len();
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    run.complete = true;
    run.updated_at = now_secs();
    store.put_neighbour_run(&source, &run)?;
    let kept = asked - stored;
    if ctx.json {
        output::print_json(&serde_json::json!({
            "source": source, "examples": stored, "already_done": kept, "k": args.retrieval.k
        }))?;
    } else {
        println!(
            "stored {} neighbours (k = {}) for {stored} examples as source {source}{}",
            args.retrieval.from,
            args.retrieval.k,
            if kept > 0 {
                format!(" ({kept} already had them: resumed; --fresh recomputes all)")
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
