//! `emoknow train`, `eval` and `predict`.

use super::{output, Ctx};
use anyhow::Context;
use emoknow::corpus::{self, Split};
use emoknow::labels::{Emotion, LabelSet};
use emoknow::metrics::Report;
use emoknow::model::classifier::{self, KindConfig, Model, TrainConfig, TrainEvent, TrainInputs};
use emoknow::model::finetune::{FinetuneConfig, HeadKind};
use emoknow::model::linear::LinearConfig;
use emoknow::model::mlp::MlpConfig;
use emoknow::model::sample::{
    AttachSpec, ContextPool, KnowledgeMode, Sample, DEFAULT_FINETUNE_CONTEXT, DEFAULT_TRAIN_CONTEXT,
};
use emoknow::model::thresholds::Objective;
use emoknow::neighbours::pick_encoder;
use emoknow::neighbours::PackedPool;
use emoknow::samples::{self, SampleBuilder, Selection, TextPlace};
use emoknow::store::Store;
use emoknow::views;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArg {
    Linear,
    Frozen,
    Knn,
    Finetune,
    Ensemble,
}

impl KindArg {
    fn name(self) -> &'static str {
        match self {
            KindArg::Linear => "linear",
            KindArg::Frozen => "frozen",
            KindArg::Knn => "knn",
            KindArg::Finetune => "finetune",
            KindArg::Ensemble => "ensemble",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    None,
    Rationale,
    Neighbours,
    All,
    Context,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolArg {
    Sides,
    Mean,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectiveArg {
    Micro,
    Macro,
    Exact,
}

/// `train --decode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeArg {
    /// One threshold per label.
    Thresholds,
    /// The whole label set.
    Sets,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PosWeight {
    None,
    Auto,
}

/// Train a classifier from the store.
///
/// Kinds: `linear` (TF-IDF words + character 1–3-grams → one-vs-rest logistic regression; no
/// encoder; the default), `frozen` (stored embeddings → MLP head; run `emoknow embed` first),
/// `knn` (score-weighted vote of the k nearest training examples), `finetune` (our BERT trained
/// end to end from --encoder-dir; slow on CPU, use --max-train or the `cuda` feature), and
/// `ensemble` (average of --member models).
///
/// Training reads the train split; thresholds are tuned on the val split for
/// --threshold-objective (micro-F1, macro-F1 or exact match), with the "at least one label"
/// rule. The test split is never read.
///
/// Knowledge: --knowledge rationale appends the sanitized rationale of --source (at eval time
/// of --eval-source, as the seed did: qwen-max rationales to train, the fine-tuned LLM's to
/// test); neighbours appends the labels of stored neighbours (`emoknow knowledge retrieve`);
/// context gives the model the text of the --context sentences before and after each example
/// in its document (`ingest --doc-column`, JSONL `doc`; a file without document ids is one
/// document in row order), whatever their split: text only, never their labels. all is
/// rationale + neighbours, + context for linear. Linear reads the context's words and what a
/// text-only model says of each context sentence (--context-scores; a training sentence is
/// scored by a model that never saw its label); frozen
/// the context sentences' stored vectors, pooled (--context-pool, --context-decay); finetune
/// the sentence pair `text [SEP] before [SEP] after` (raise --max-len to make room: each
/// sentence of context adds ~28 tokens, and the time of a step grows with them); an
/// ensemble gives each member the context it was trained with.
///
/// Examples:
///
///   emoknow train --classifier linear --knowledge context --context 2 --out models/linear-ctx
///
///   emoknow train --classifier linear --out models/linear
///
///   emoknow train --classifier frozen --knowledge context --context 2 --out models/frozen-ctx
///
///   emoknow train --classifier finetune --encoder-dir m3e-small --knowledge context --max-len 96 --out models/ft-ctx
///
///   emoknow train --classifier frozen --knowledge neighbours --neighbours-source knn-m3e-small --out models/frozen
///
///   emoknow train --classifier ensemble --member models/linear --member models/frozen --out models/ens
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Classifier kind.
    #[arg(long, value_enum, default_value = "linear")]
    classifier: KindArg,

    /// Model directory to write: absent, empty, or a model (replaced whole). The new model is
    /// written next to it and swapped in when complete, so the old one stays whole until then.
    #[arg(long)]
    out: PathBuf,

    /// Write no neighbour pool into the model: it then retrieves new text's neighbours from
    /// its store, which predicting needs (saves the pool's size: about 2 KB per training
    /// example of a 512-dimensional encoder). By default a model that retrieves neighbours
    /// densely carries its pool and predicts without its store.
    #[arg(long)]
    no_pack: bool,

    /// What is appended to the text.
    #[arg(long, value_enum, default_value = "none", help_heading = "Knowledge")]
    knowledge: ModeArg,

    /// Rationale source for training examples.
    #[arg(long, value_name = "NAME", help_heading = "Knowledge")]
    source: Option<String>,

    /// Rationale source at evaluation and prediction [default: --source].
    #[arg(long, value_name = "NAME", help_heading = "Knowledge")]
    eval_source: Option<String>,

    /// Neighbours source (from `knowledge retrieve`, e.g. knn-bm25).
    #[arg(long, value_name = "NAME", help_heading = "Knowledge")]
    neighbours_source: Option<String>,

    /// Neighbours whose labels are attached [default: 5].
    #[arg(long, value_name = "K", help_heading = "Knowledge", value_parser = super::bounds::k)]
    neighbours_k: Option<usize>,

    /// Sentences of the same document on each side whose text is attached [default with
    /// --knowledge context: 1 for finetune, 3 for the others (and with all, for linear);
    /// else 0]; combines with any mode.
    #[arg(
        long,
        value_name = "W",
        help_heading = "Knowledge",
        value_parser = super::bounds::context
    )]
    context: Option<usize>,

    /// Frozen: how the context sentences' stored vectors are pooled: sides = the mean of the
    /// sentences before and of those after, two blocks; mean = one mean of all [default: sides].
    #[arg(long, value_enum, help_heading = "Knowledge")]
    context_pool: Option<PoolArg>,

    /// Frozen: a context sentence at distance d weighs DECAY^(d-1) in its pooled mean (1: all
    /// alike) [default: 1].
    #[arg(long, value_name = "DECAY", help_heading = "Knowledge")]
    context_decay: Option<f32>,

    /// Train and validate only on examples that have a rationale of --source (validation:
    /// of --eval-source); with --knowledge none, a text-only baseline on the same rows.
    #[arg(long, help_heading = "Knowledge")]
    only_with_knowledge: bool,

    /// What the per-label thresholds maximize on validation; with --decode sets, what the
    /// chosen set maximizes (exact: the most probable set; micro: micro-F1, the labels whose
    /// probability under the set model exceeds one cut tuned on validation; macro: each
    /// sentence's expected F1).
    #[arg(long, visible_alias = "objective", value_enum, default_value = "micro")]
    threshold_objective: ObjectiveArg,

    /// How probabilities become a label set: `thresholds`, one per label tuned on validation;
    /// or `sets`, the label set chosen for --threshold-objective from the calibrated
    /// probabilities and how labels co-occur in the training labels (never an empty set; its
    /// settings chosen on validation).
    #[arg(long, value_enum, default_value = "thresholds")]
    decode: DecodeArg,

    /// Weigh each label's positives by its negatives / positives in the training set: linear's
    /// balanced class weights; frozen and finetune: the BCE's pos_weight, clamped to 1..10
    /// [default: none].
    #[arg(long, value_enum)]
    pos_weight: Option<PosWeight>,

    /// Train on at most N examples (a seeded random subset).
    #[arg(long, value_name = "N")]
    max_train: Option<usize>,

    /// Seed of --max-train subsets, and of frozen and finetune's initialisation, folds and
    /// shuffling [default: 42].
    #[arg(long)]
    seed: Option<u64>,

    /// Stored encoder (id, prefix or name) whose vectors frozen/knn read.
    #[arg(long, help_heading = "Encoder")]
    encoder: Option<String>,

    /// Encoder directory: finetune starts from it; frozen/knn use it to embed unseen text.
    #[arg(long, value_name = "DIR", help_heading = "Encoder")]
    encoder_dir: Option<PathBuf>,

    /// Linear: inverse regularization strength of every head [default: 1 (NB-scaled) and 2].
    #[arg(long, help_heading = "Linear")]
    c: Option<f64>,

    /// Linear: weight of the context block (with a context) [default: 0.6].
    #[arg(long, value_name = "X", help_heading = "Linear")]
    context_weight: Option<f64>,

    /// Linear: longest word n-gram of the context block [default: 1].
    #[arg(long, value_name = "N", help_heading = "Linear")]
    context_word_ngrams: Option<usize>,

    /// Linear: longest character n-gram of the context block, 0 = none [default: 0].
    #[arg(long, value_name = "N", help_heading = "Linear")]
    context_char_ngrams: Option<usize>,

    /// Linear: weight of the context-score block, a text-only model's probabilities for the
    /// context sentences (held out for training texts), 0 = none [default: 0.5].
    #[arg(long, value_name = "X", help_heading = "Linear")]
    context_scores: Option<f64>,

    /// Frozen: hidden units of the head (0 = logistic regression on the embeddings).
    #[arg(long, help_heading = "Frozen")]
    hidden: Option<usize>,

    /// Frozen: also feed the head the linear model's scores (out-of-fold on training rows from
    /// this many folds, then a linear model on all of them for validation and prediction); 0 = off
    /// [default: 0]. --c and --pos-weight then set that model too (it reads the sentence alone).
    #[arg(long, value_name = "FOLDS", help_heading = "Frozen")]
    stack_linear: Option<usize>,

    /// Frozen/finetune: epochs.
    #[arg(long, help_heading = "Frozen / finetune")]
    epochs: Option<usize>,

    /// Frozen/finetune: learning rate.
    #[arg(long, help_heading = "Frozen / finetune")]
    lr: Option<f64>,

    /// Frozen/finetune: minibatch size.
    #[arg(long, help_heading = "Frozen / finetune")]
    batch: Option<usize>,

    /// Frozen/finetune: dropout.
    #[arg(long, help_heading = "Frozen / finetune")]
    dropout: Option<f64>,

    /// Finetune: longest input in tokens.
    #[arg(long, help_heading = "Frozen / finetune")]
    max_len: Option<usize>,

    /// Finetune: 8 binary heads (the seed's scheme) instead of one shared 8-way head.
    #[arg(long, help_heading = "Frozen / finetune")]
    per_label: bool,

    /// kNN: neighbours voting [default: 10].
    #[arg(short, long = "k", help_heading = "kNN", value_parser = super::bounds::k)]
    k: Option<usize>,

    /// Ensemble: member model directory (repeatable).
    #[arg(long = "member", value_name = "DIR", help_heading = "Ensemble")]
    members: Vec<PathBuf>,
}

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

fn mode(m: ModeArg) -> KnowledgeMode {
    match m {
        ModeArg::None => KnowledgeMode::None,
        ModeArg::Rationale => KnowledgeMode::Rationale,
        ModeArg::Neighbours => KnowledgeMode::Neighbours,
        ModeArg::All => KnowledgeMode::All,
        ModeArg::Context => KnowledgeMode::Context,
    }
}

/// Neighbours voting in `--classifier knn` when `-k` is not given.
const DEFAULT_KNN_K: usize = 10;

/// Neighbours whose labels are attached when `--neighbours-k` is not given.
const DEFAULT_NEIGHBOURS_K: usize = 5;

/// Seed of subsets, initialisation and shuffling when `--seed` is not given.
const DEFAULT_SEED: u64 = 42;

/// Sentences of context on each side the arguments ask for: `--context`, else the default of
/// `--knowledge context` (and of `all` for linear), else none.
fn context_width(a: &TrainArgs) -> anyhow::Result<usize> {
    Ok(match (a.context, a.knowledge) {
        (Some(0), ModeArg::Context) => {
            anyhow::bail!("--knowledge context needs --context 1 or more (sentences on each side)")
        }
        (Some(w), _) => w,
        (None, ModeArg::Context) if a.classifier == KindArg::Finetune => DEFAULT_FINETUNE_CONTEXT,
        (None, ModeArg::Context) => DEFAULT_TRAIN_CONTEXT,
        (None, ModeArg::All) if a.classifier == KindArg::Linear => DEFAULT_TRAIN_CONTEXT,
        (None, _) => 0,
    })
}

/// Refuses options the chosen classifier would ignore, naming the classifiers that read them:
/// `--max-len 96` on a frozen head or `--pos-weight auto` on an ensemble would otherwise train
/// a model that silently differs from what was asked for.
fn check_kind_options(a: &TrainArgs) -> anyhow::Result<()> {
    use KindArg::{Ensemble, Finetune, Frozen, Knn, Linear};
    let stacked = a.stack_linear.is_some_and(|f| f > 0);
    // --c sets the linear model, and the one a frozen head stacks.
    let linear: &[KindArg] = if stacked {
        &[Linear, Frozen]
    } else {
        &[Linear]
    };
    let given: [(&str, bool, &[KindArg]); 22] = [
        ("--c", a.c.is_some(), linear),
        // A stacked linear model reads the sentence alone: the context options are linear's.
        ("--context-weight", a.context_weight.is_some(), &[Linear]),
        (
            "--context-word-ngrams",
            a.context_word_ngrams.is_some(),
            &[Linear],
        ),
        (
            "--context-char-ngrams",
            a.context_char_ngrams.is_some(),
            &[Linear],
        ),
        ("--context-scores", a.context_scores.is_some(), &[Linear]),
        ("--context-pool", a.context_pool.is_some(), &[Frozen]),
        ("--context-decay", a.context_decay.is_some(), &[Frozen]),
        ("--hidden", a.hidden.is_some(), &[Frozen]),
        ("--stack-linear", a.stack_linear.is_some(), &[Frozen]),
        ("--epochs", a.epochs.is_some(), &[Frozen, Finetune]),
        ("--lr", a.lr.is_some(), &[Frozen, Finetune]),
        ("--batch", a.batch.is_some(), &[Frozen, Finetune]),
        ("--dropout", a.dropout.is_some(), &[Frozen, Finetune]),
        ("--max-len", a.max_len.is_some(), &[Finetune]),
        ("--per-label", a.per_label, &[Finetune]),
        ("-k", a.k.is_some(), &[Knn]),
        (
            "--pos-weight",
            a.pos_weight.is_some(),
            &[Linear, Frozen, Finetune],
        ),
        ("--encoder", a.encoder.is_some(), &[Frozen, Knn]),
        (
            "--encoder-dir",
            a.encoder_dir.is_some(),
            &[Frozen, Knn, Finetune],
        ),
        ("--member", !a.members.is_empty(), &[Ensemble]),
        // A kNN vote reads every training example; an ensemble's members were trained already.
        (
            "--max-train",
            a.max_train.is_some(),
            &[Linear, Frozen, Finetune],
        ),
        // A kNN model votes with its own retrieval; ensemble members keep their own knowledge.
        (
            "--knowledge",
            a.knowledge != ModeArg::None,
            &[Linear, Frozen, Finetune],
        ),
    ];
    for (flag, given, readers) in given {
        if given && !readers.contains(&a.classifier) {
            let names: Vec<&str> = readers.iter().map(|k| k.name()).collect();
            let also = if flag == "--c" && a.classifier == Frozen {
                " (and by frozen with --stack-linear)"
            } else {
                ""
            };
            anyhow::bail!(
                "{flag} is not read by --classifier {}: it is for {}{also}; drop it",
                a.classifier.name(),
                names.join(", ")
            );
        }
    }
    // Options read only with the knowledge that uses them.
    let rationale = matches!(a.knowledge, ModeArg::Rationale | ModeArg::All);
    let neighbours = matches!(a.knowledge, ModeArg::Neighbours | ModeArg::All);
    let context = context_width(a)? > 0;
    let with_rationale = "--knowledge rationale or all, or --only-with-knowledge";
    let with_neighbours = "--knowledge neighbours or all";
    let with_context = "a context (--knowledge context, or --context W)";
    let needs: [(&str, bool, bool, &str); 11] = [
        (
            "--seed",
            a.seed.is_some(),
            matches!(a.classifier, Frozen | Finetune) || a.max_train.is_some(),
            "--classifier frozen or finetune, or --max-train",
        ),
        (
            "--source",
            a.source.is_some(),
            rationale || a.only_with_knowledge,
            with_rationale,
        ),
        (
            "--eval-source",
            a.eval_source.is_some(),
            rationale || a.only_with_knowledge,
            with_rationale,
        ),
        (
            "--only-with-knowledge",
            a.only_with_knowledge,
            a.source.is_some(),
            "--source (whose rationales pick the examples)",
        ),
        (
            "--neighbours-source",
            a.neighbours_source.is_some(),
            neighbours,
            with_neighbours,
        ),
        (
            "--neighbours-k",
            a.neighbours_k.is_some(),
            neighbours,
            with_neighbours,
        ),
        (
            "--context-weight",
            a.context_weight.is_some(),
            context,
            with_context,
        ),
        (
            "--context-word-ngrams",
            a.context_word_ngrams.is_some(),
            context,
            with_context,
        ),
        (
            "--context-char-ngrams",
            a.context_char_ngrams.is_some(),
            context,
            with_context,
        ),
        (
            "--context-scores",
            a.context_scores.is_some(),
            context,
            with_context,
        ),
        (
            "--context-pool or --context-decay",
            a.context_pool.is_some() || a.context_decay.is_some(),
            context,
            with_context,
        ),
    ];
    for (flag, given, read, with) in needs {
        if given && !read {
            anyhow::bail!("{flag} is only read with {with}; drop it or add that");
        }
    }
    Ok(())
}

/// The training settings the arguments ask for; encoders and the neighbours' spec are
/// resolved against the store.
fn train_config(a: &TrainArgs, store: &Store) -> anyhow::Result<TrainConfig> {
    let balanced = a.pos_weight == Some(PosWeight::Auto);
    let mut linear = LinearConfig::default();
    if let Some(w) = a.context_weight {
        linear.context_weight = w;
    }
    if let Some(n) = a.context_word_ngrams {
        linear.context_word_ngrams = n;
    }
    if let Some(n) = a.context_char_ngrams {
        linear.context_char_ngram_max = n;
    }
    if let Some(x) = a.context_scores {
        linear.context_scores = x;
    }
    for h in &mut linear.heads {
        if let Some(c) = a.c {
            h.c = c;
        }
        if balanced {
            h.class_balance = 1.0;
        }
    }
    let mut mlp = MlpConfig {
        seed: a.seed.unwrap_or(DEFAULT_SEED),
        pos_weight: balanced,
        ..Default::default()
    };
    if let Some(h) = a.hidden {
        mlp.hidden = h;
    }
    let mut ft = FinetuneConfig {
        seed: a.seed.unwrap_or(DEFAULT_SEED),
        pos_weight_auto: balanced,
        head: if a.per_label {
            HeadKind::PerLabel
        } else {
            HeadKind::Shared
        },
        ..Default::default()
    };
    if let Some(e) = a.epochs {
        mlp.epochs = e;
        ft.epochs = e;
    }
    if let Some(lr) = a.lr {
        mlp.lr = lr;
        ft.lr = lr;
    }
    if let Some(b) = a.batch {
        mlp.batch = b;
        ft.batch = b;
    }
    if let Some(d) = a.dropout {
        mlp.dropout = d as f32;
        ft.dropout = d;
    }
    if let Some(m) = a.max_len {
        ft.max_len = m;
    }
    let kind = match a.classifier {
        KindArg::Linear => KindConfig::Linear(linear),
        KindArg::Frozen => KindConfig::Frozen {
            encoder: pick_encoder(store, a.encoder.as_deref())?,
            encoder_dir: a.encoder_dir.clone(),
            mlp,
            stack_folds: a.stack_linear.unwrap_or(0),
            linear,
        },
        KindArg::Knn => KindConfig::Knn {
            k: a.k.unwrap_or(DEFAULT_KNN_K),
            // Dense when the store holds vectors: the named encoder, else the only one (several
            // are refused as everywhere else); BM25 without vectors, which reads no encoder.
            encoder: match &a.encoder {
                None if store.encoders()?.is_empty() => {
                    if a.encoder_dir.is_some() {
                        anyhow::bail!(
                            "--encoder-dir is not read by a BM25 kNN (the store holds no \
                             vectors): run `emoknow embed` first for a dense one, or drop it"
                        );
                    }
                    None
                }
                key => Some(pick_encoder(store, key.as_deref())?),
            },
            encoder_dir: a.encoder_dir.clone(),
        },
        KindArg::Finetune => KindConfig::Finetune(FinetuneConfig {
            encoder: a.encoder_dir.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "finetune needs --encoder-dir DIR (a BERT checkpoint to start from)"
                )
            })?,
            ..ft
        }),
        KindArg::Ensemble => KindConfig::Ensemble {
            members: a.members.clone(),
        },
    };
    let context = context_width(a)?;
    let mut attach = AttachSpec {
        mode: match mode(a.knowledge) {
            KnowledgeMode::None if context > 0 => KnowledgeMode::Context,
            m => m,
        },
        source: a.source.clone(),
        eval_source: a.eval_source.clone(),
        neighbours_source: a.neighbours_source.clone(),
        neighbours_k: a.neighbours_k.unwrap_or(DEFAULT_NEIGHBOURS_K),
        neighbours: None,
        context,
        context_pool: match a.context_pool {
            None | Some(PoolArg::Sides) => ContextPool::Sides,
            Some(PoolArg::Mean) => ContextPool::Mean,
        },
        context_decay: a.context_decay.unwrap_or(1.0),
    };
    samples::resolve(store, &mut attach)?;
    Ok(TrainConfig {
        kind,
        attach,
        objective: match a.threshold_objective {
            ObjectiveArg::Micro => Objective::Micro,
            ObjectiveArg::Macro => Objective::Macro,
            ObjectiveArg::Exact => Objective::Exact,
        },
        decode_sets: a.decode == DecodeArg::Sets,
        seed: a.seed.unwrap_or(DEFAULT_SEED),
    })
}

pub fn run_train(a: TrainArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    check_kind_options(&a)?;
    let store = ctx.open()?;
    let context = || format!("training {} into {}", a.classifier.name(), a.out.display());
    let cfg = train_config(&a, &store).with_context(context)?;
    let prepared = classifier::prepare(&cfg, &a.out).with_context(context)?;
    let pb = output::spinner("training", ctx.quiet);
    let t0 = Instant::now();
    let selection = Selection {
        only_with_knowledge: a.only_with_knowledge,
        max_train: a.max_train,
        seed: a.seed.unwrap_or(DEFAULT_SEED),
    };
    let (train_ex, val_ex) = samples::training_examples(&store, &cfg.attach, &selection)?;
    pb.set_message("reading samples");
    let mut builder = SampleBuilder::new(&store);
    let needs = cfg.needs();
    let inputs = TrainInputs {
        train: builder.examples(&needs, &train_ex, false)?,
        val: builder.examples(&needs, &val_ex, true)?,
        member_val: prepared
            .member_needs()
            .iter()
            .map(|n| builder.examples(n, &val_ex, true))
            .collect::<emoknow::Result<_>>()?,
        text: store.normalizer()?,
        pool: match cfg.pool_spec().filter(|_| !a.no_pack) {
            Some(spec) => PackedPool::from_store(&store, &spec)?,
            None => None,
        },
    };
    drop(builder);
    let meta = classifier::train(&cfg, prepared, inputs, &mut |e| match e {
        TrainEvent::Phase(p) => pb.set_message(p),
        TrainEvent::Epoch { epoch, loss, val } => {
            // One line per epoch: above the spinner on a terminal, plain on stderr otherwise
            // (a log keeps each epoch's loss and speed); nothing under --quiet.
            let line = format!("epoch {epoch}: loss {loss:.4}, {val}");
            if !pb.is_hidden() {
                pb.println(line);
            } else if !ctx.quiet {
                eprintln!("{line}");
            }
        }
    })
    .with_context(context)?;
    pb.finish_and_clear();
    if ctx.json {
        output::print_json(&meta)?;
    } else {
        println!(
            "trained {} on {} examples in {:.1}s → {}",
            meta.kind.kind().name(),
            meta.n_train,
            t0.elapsed().as_secs_f64(),
            a.out.display()
        );
        println!(
            "validation ({} examples, thresholds tuned for {}):",
            meta.n_val,
            match meta.objective {
                Objective::Exact => "exact match",
                Objective::Micro => "micro-F1",
                Objective::Macro => "macro-F1",
            }
        );
        print_report(&meta.val);
    }
    Ok(ExitCode::SUCCESS)
}

impl TrainArgs {
    /// Whether this run fine-tunes an encoder.
    pub(crate) fn fine_tunes(&self) -> bool {
        self.classifier == KindArg::Finetune
    }
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
