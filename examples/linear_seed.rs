//! Development harness for the `linear` classifier on the seed split.
//!
//! Reads data/Train.csv (GB18030; columns ID, Text, Labels like "['Love', 'Joy']"), makes the
//! seed split (test = the first 1,000 rows; validation = 2,000 of the other 25,000 drawn with
//! `SplitPlan` seed 42; the rest trains), trains on the training rows, tunes thresholds on the
//! validation rows only, and prints the four metrics on validation and test for the micro and
//! the exact objective, plus the training time.
//!
//! ```text
//! cargo run --release --example linear_seed
//! cargo run --release --example linear_seed -- --config '{"c": 2.0}'   # override fields
//! cargo run --release --example linear_seed -- --data path/to/Train.csv --save /tmp/linear
//! ```

use emoknow::corpus::split::{Split, SplitPlan};
use emoknow::labels::LabelSet;
use emoknow::metrics::{evaluate, Report};
use emoknow::model::linear::{LinearConfig, LinearModel};
use emoknow::model::thresholds::{tune, Objective};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/Train.csv"));
    let mut cfg = LinearConfig::default();
    let mut save: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--data" => data = value()?.into(),
            "--save" => save = Some(value()?.into()),
            "--config" => {
                // Merge the given fields into the defaults.
                let mut base = serde_json::to_value(&cfg)?;
                let patch: serde_json::Value = serde_json::from_str(&value()?)?;
                for (k, v) in patch
                    .as_object()
                    .ok_or_else(|| anyhow::anyhow!("--config wants a JSON object"))?
                {
                    anyhow::ensure!(base.get(k).is_some(), "unknown config field {k:?}");
                    base[k] = v.clone();
                }
                cfg = serde_json::from_value(base)?;
            }
            other => {
                anyhow::bail!("unknown argument {other:?} (expected --data, --config, --save)")
            }
        }
    }

    let bytes = std::fs::read(&data).map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let (text, _, had_errors) = encoding_rs::GB18030.decode(&bytes);
    anyhow::ensure!(!had_errors, "{}: not valid GB18030", data.display());
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let (mut ids, mut texts, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for rec in rdr.records() {
        let rec = rec?;
        ids.push(rec[0].trim().parse::<u64>()?);
        texts.push(rec[1].to_string());
        labels.push(LabelSet::parse_list(&rec[2])?);
    }
    let plan = SplitPlan {
        all: None,
        test_rows: 1000,
        val_fraction: 2000.0 / 25000.0,
        seed: 42,
        ..Default::default()
    };
    let splits = plan.assign(&ids);
    let part = |s: Split| -> (Vec<&str>, Vec<LabelSet>) {
        splits
            .iter()
            .zip(texts.iter().zip(&labels))
            .filter(|(x, _)| **x == s)
            .map(|(_, (t, l))| (t.as_str(), *l))
            .unzip()
    };
    let (train_x, train_y) = part(Split::Train);
    let (val_x, val_y) = part(Split::Val);
    let (test_x, test_y) = part(Split::Test);
    eprintln!(
        "{}: {} train, {} val, {} test",
        data.display(),
        train_x.len(),
        val_x.len(),
        test_x.len()
    );
    eprintln!("config: {}", serde_json::to_string(&cfg)?);

    let start = Instant::now();
    let model = LinearModel::train(&train_x, &train_y, &cfg, &mut |p| {
        eprintln!("  {:6.1} s  {p}", start.elapsed().as_secs_f64())
    })?;
    let train_secs = start.elapsed().as_secs_f64();
    let val_p = model.predict_proba(&val_x);
    let test_p = model.predict_proba(&test_x);

    println!(
        "training: {train_secs:.1} s, {} features",
        model.n_features()
    );
    println!("objective  split  hamming  exact  micro-F1  macro-F1");
    for obj in [Objective::Micro, Objective::Exact, Objective::Macro] {
        let th = tune(&val_p, &val_y, obj);
        let row = |name: &str, r: &Report| {
            println!(
                "{:<9}  {name:<5}  {:.3}    {:.3}  {:.3}     {:.3}",
                obj.name(),
                r.hamming_accuracy,
                r.exact_match,
                r.micro_f1,
                r.macro_f1
            )
        };
        row("val", &evaluate(&val_y, &th.apply(&val_p)));
        row("test", &evaluate(&test_y, &th.apply(&test_p)));
        if obj == Objective::Micro {
            let t: Vec<String> = th.per_label.iter().map(|t| format!("{t:.2}")).collect();
            println!("           thresholds: {}", t.join(" "));
            for (name, gold, probs) in [("val", &val_y, &val_p), ("test", &test_y, &test_p)] {
                let r = evaluate(gold, &th.apply(probs));
                let f: Vec<String> = r
                    .per_label
                    .iter()
                    .map(|l| format!("{} {:.3}", l.label, l.f1))
                    .collect();
                println!("           {name} F1: {}", f.join(", "));
            }
        }
    }
    if let Some(dir) = save {
        model.save(&dir)?;
        eprintln!("saved to {}", dir.display());
    }
    Ok(())
}
