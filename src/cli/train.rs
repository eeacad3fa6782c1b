//! `emoknow train`: its arguments checked, turned into a training configuration, and run.

use super::{output, Ctx};
use anyhow::Context;
use emoknow::model::classifier::{self, KindConfig, TrainConfig, TrainEvent, TrainInputs};
use emoknow::model::finetune::{FinetuneConfig, HeadKind};
use emoknow::model::linear::LinearConfig;
use emoknow::model::mlp::MlpConfig;
use emoknow::model::sample::{
    AttachSpec, ContextPool, KnowledgeMode, DEFAULT_FINETUNE_CONTEXT, DEFAULT_TRAIN_CONTEXT,
};
use emoknow::model::thresholds::Objective;
use emoknow::neighbours::pick_encoder;
use emoknow::neighbours::PackedPool;
use emoknow::samples::{self, SampleBuilder, Selection};
use emoknow::store::Store;
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
        super::eval::print_report(&meta.val);
    }
    Ok(ExitCode::SUCCESS)
}

impl TrainArgs {
    /// Whether this run fine-tunes an encoder.
    pub(crate) fn fine_tunes(&self) -> bool {
        self.classifier == KindArg::Finetune
    }
}
