//! `emoknow query`, `show` and `stats`: reading the store.

use super::{output, Ctx};
use emoknow::corpus::Split;
use emoknow::labels::{Emotion, LabelSet};
use emoknow::store::index::tokenize;
use emoknow::store::{Filter, QueryHit, QuerySpec};
use emoknow::views;
use std::process::ExitCode;

/// Find examples by emotion, keyword, split and knowledge source.
///
/// Every `--emotion` must be among an example's gold labels. `--keyword` is segmented with the
/// index's jieba tokenizer and every word must occur in the example's text or in one of its
/// rationales (raw or sanitized): `担忧未来` finds text containing 担忧 and 未来. With a
/// keyword, hits are ranked by BM25; without, listed by id. Exit code 1 when nothing matches.
///
/// Example: emoknow query --emotion Anxiety --emotion Sorrow --keyword 担忧未来 --limit 5
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    /// Emotion the example must carry (repeatable; English or Chinese name).
    #[arg(long, short, value_name = "E")]
    emotion: Vec<Emotion>,

    /// Words to find in the text or the rationales (Chinese, segmented or not).
    #[arg(long, short, value_name = "K")]
    keyword: Option<String>,

    /// Only this split.
    #[arg(long, value_name = "S")]
    split: Option<Split>,

    /// Only examples with knowledge from this source, and only that source's knowledge.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,

    /// Maximum examples shown.
    #[arg(long, short = 'n', default_value_t = 10, value_parser = super::bounds::limit)]
    limit: usize,
}

/// Show one example with all its knowledge and its context: the sentences before and after
/// it in its document (a file ingested without document ids is one document in id order).
///
/// Example: emoknow show 4 --json
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Example id.
    id: u64,

    /// Sentences of context shown on each side.
    #[arg(
        long,
        value_name = "W",
        default_value_t = emoknow::model::sample::DEFAULT_CONTEXT,
        value_parser = super::bounds::context
    )]
    context: usize,
}

/// Count examples by split, label, label-set size; knowledge by source; stored vectors.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {}

pub fn run_query(args: QueryArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let spec = QuerySpec {
        filter: Filter {
            emotions: args.emotion.iter().copied().collect::<LabelSet>(),
            split: args.split,
            source: args.source.clone(),
            exclude: None,
        },
        keyword: args.keyword.clone(),
        limit: args.limit,
    };
    let hits = views::query(&store, &spec)?;
    let tokens = args.keyword.as_deref().map(tokenize).unwrap_or_default();
    if ctx.json {
        output::print_json(&hits)?;
    } else {
        for h in &hits {
            print_hit(h, &tokens);
        }
        if hits.is_empty() {
            ctx.note("no match");
        }
    }
    Ok(if hits.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_hit(h: &QueryHit, tokens: &[String]) {
    let ex = &h.entry.example;
    let score = h.score.map(|s| format!("  {s:.2}")).unwrap_or_default();
    println!(
        "#{:<6} {:<5} {:<24}{}",
        ex.id,
        ex.split.name(),
        ex.labels.to_string(),
        score
    );
    println!("    {}", output::highlight(&ex.text, tokens, 80));
    for k in &h.entry.knowledge {
        let body = views::best_knowledge_text(k, tokens);
        println!(
            "    {} [{}] {}",
            k.source,
            k.asserted,
            output::highlight(body, tokens, 70)
        );
    }
}

pub fn run_show(args: ShowArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let Some(shown) = views::show_with_context(&store, args.id, args.context)? else {
        anyhow::bail!(
            "no example {} in {} (see `emoknow query` or `emoknow stats`)",
            args.id,
            ctx.store.display()
        );
    };
    if ctx.json {
        output::print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let views::Show {
        entry,
        missing,
        context,
        read,
    } = shown;
    let ex = &entry.example;
    println!("id       {}", ex.id);
    println!("split    {}", ex.split);
    println!("labels   {}", ex.labels);
    println!("origin   {}:{}", ex.origin.file, ex.origin.line);
    match (&context.doc, context.position) {
        (Some(d), Some(p)) => println!("document {d}, position {p}"),
        _ => println!("document (none: the file is one stream in id order)"),
    }
    println!("text     {}", ex.text);
    if let Some(read) = &read {
        println!("read as  {read}  (normalized into the store's text style for models)");
    }
    if !context.before.is_empty() || !context.after.is_empty() {
        println!();
        println!("context (text only):");
        for c in &context.before {
            println!("  #{:<6} {}", c.id, c.text);
        }
        println!("  #{:<6} ▶ {}", ex.id, ex.text);
        for c in &context.after {
            println!("  #{:<6} {}", c.id, c.text);
        }
    }
    for k in &entry.knowledge {
        println!();
        println!(
            "[{}] {} · {} · {} · model {} · attempts {}",
            k.source,
            k.kind.name(),
            k.prompt_kind.name(),
            if k.asserted.is_empty() {
                "asserts no label".to_string()
            } else {
                format!("asserts {}", k.asserted)
            },
            k.model,
            k.attempts
        );
        if !k.neighbours.is_empty() {
            for n in &k.neighbours {
                println!("  #{:<6} {:.3} {}", n.id, n.score, n.labels);
            }
        }
        if k.kind == emoknow::store::records::KnowledgeKind::Neighbours {
            println!("{}", k.raw);
        } else {
            println!("sanitized: {}", k.sanitized);
            println!("raw:\n{}", k.raw);
        }
    }
    for m in &missing {
        println!();
        println!("[{}] missing: {}", m.source, m.reason);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_stats(_args: StatsArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let s = store.stats()?;
    let ann = emoknow::neighbours::ann::stats(&store)?;
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            stats: &'a emoknow::store::Stats,
            /// The ANN index of each encoder that has one.
            ann: &'a [emoknow::neighbours::ann::AnnStats],
        }
        output::print_json(&Out {
            stats: &s,
            ann: &ann,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let splits: Vec<&str> = Split::ALL
        .iter()
        .map(|s| s.name())
        .filter(|n| s.by_split.contains_key(*n))
        .collect();
    println!("store {}: {} examples", s.path, s.examples);
    print!("{:<10}", "");
    for sp in &splits {
        print!("{sp:>8}");
    }
    println!();
    print!("{:<10}", "examples");
    for sp in &splits {
        print!("{:>8}", s.by_split[*sp]);
    }
    println!();
    for e in Emotion::ALL {
        print!("{:<10}", e.name());
        for sp in &splits {
            let n = s
                .by_label
                .get(e.name())
                .and_then(|m| m.get(*sp))
                .copied()
                .unwrap_or(0);
            print!("{n:>8}");
        }
        println!();
    }
    let sizes: Vec<String> = s
        .label_set_sizes
        .iter()
        .map(|(k, v)| format!("{k} label(s): {v}"))
        .collect();
    println!("label-set sizes: {}", sizes.join(", "));
    match &s.text_style {
        Some(rec) => println!("text style: {}", rec.describe()),
        None => println!(
            "text style: not recorded (a store written before styles were learned): models read new text as given; re-ingest its corpus to learn it"
        ),
    }
    if s.normalized > 0 {
        println!(
            "{} example(s) stored as given and read by models normalized into that style",
            s.normalized
        );
    }
    if !s.sources.is_empty() {
        println!();
        println!(
            "{:<18} {:<10} {:>7} {:>7}  coverage",
            "source", "kind", "records", "missing"
        );
        for (name, src) in &s.sources {
            let cov: Vec<String> = splits
                .iter()
                .map(|sp| format!("{sp} {:.1}%", 100.0 * src.coverage.get(*sp).unwrap_or(&0.0)))
                .collect();
            println!(
                "{:<18} {:<10} {:>7} {:>7}  {}{}",
                name,
                src.kind,
                src.records,
                src.missing,
                cov.join(", "),
                if src.partial {
                    "  (partial: run the same `knowledge retrieve` again to resume)"
                } else {
                    ""
                }
            );
        }
    }
    for enc in &s.encoders {
        println!();
        let name = enc
            .encoder
            .as_ref()
            .map(|e| format!("{} ({}, dim {}, {})", e.name, e.id, e.dim, e.pooling))
            .unwrap_or_else(|| "unregistered encoder".into());
        let v: Vec<String> = enc
            .vectors
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("vectors of {name}: {}", v.join(", "));
    }
    for a in &ann {
        use emoknow::neighbours::ann::Freshness;
        let state = match &a.freshness {
            Freshness::Fresh => "fresh".to_string(),
            Freshness::Absent => "not built (`emoknow index build`)".to_string(),
            Freshness::Stale(r) => format!("stale: {r} (`emoknow index build`)"),
            Freshness::Damaged(r) => format!("damaged: {r} (`emoknow index build`)"),
        };
        println!(
            "ANN index of {}: {} vectors, {:.1} MB, {state}",
            a.encoder,
            a.vectors.unwrap_or(0),
            a.bytes as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}
